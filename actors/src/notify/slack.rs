//! The Slack incoming-webhook body: `text` for notifications and old clients, and `blocks` (a
//! title, the summary, one line per volume) within Slack's size limits.

use serde_json::{json, Value};

use crate::notice::{truncate, Notice, NoticeKind};

/// Slack's limits: header text 150 characters, section text 3000.
const MAX_HEADER: usize = 150;
const MAX_SECTION: usize = 3000;

pub fn body(notice: &Notice) -> Value {
    let icon = match notice.kind {
        NoticeKind::Failed => ":x:",
        NoticeKind::Succeeded => ":white_check_mark:",
        NoticeKind::Overdue => ":warning:",
        NoticeKind::DrillFailed => ":rotating_light:",
        NoticeKind::Test => ":bell:",
    };
    let title = notice.title();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&title, MAX_HEADER - 1)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": escape(&notice.summary())}}),
    ];
    if !notice.volumes.is_empty() {
        let lines: Vec<String> = notice
            .volumes
            .iter()
            .map(|v| {
                let mark = if v.error.is_some() { "✗" } else { "✓" };
                format!("{mark} {}", escape(&v.line()))
            })
            .collect();
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(&lines.join("\n"), MAX_SECTION - 1)},
        }));
    }
    if let Some(when) = notice.when() {
        blocks.push(
            json!({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(&when)}]}),
        );
    }
    json!({
        "text": format!("{icon} {} — {}", escape(&title), escape(&notice.summary())),
        "blocks": blocks,
    })
}

/// Slack's mrkdwn control characters.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use crate::notice::VolumeNotice;
    use uuid::Uuid;

    #[test]
    fn text_and_blocks_name_the_job_and_each_volume() {
        let notice = Notice {
            kind: NoticeKind::Failed,
            organization_id: Uuid::nil(),
            job_id: Uuid::nil(),
            job_name: "nightly <prod>".into(),
            failed_count: 1,
            total_count: 1,
            total_size_bytes: 0,
            started_at: None,
            finished_at: None,
            volumes: vec![VolumeNotice {
                app_name: "shop".into(),
                volume_name: "data".into(),
                status: Status::Failed,
                size_bytes: None,
                storage_path: None,
                error: Some("volume not found".into()),
            }],
            last_run_at: None,
            reason: None,
            error: None,
        };
        let b = body(&notice);
        let text = b["text"].as_str().expect("text");
        assert!(
            text.contains("Backup failed: nightly &lt;prod&gt;"),
            "{text}"
        );
        assert_eq!(b["blocks"][0]["type"], "header");
        let lines = b["blocks"][2]["text"]["text"].as_str().expect("lines");
        assert!(
            lines.contains("shop/data: failed — volume not found"),
            "{lines}"
        );
    }
}
