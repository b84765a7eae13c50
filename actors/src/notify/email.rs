//! Email delivery through the configured SMTP server (lettre, pooled connections): subject
//! `Backup failed: {job}` (or succeeded / overdue), and a plain-text and an HTML body listing each
//! volume with its status, size and error.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use super::SendError;
use crate::notice::{human_size, Notice};

/// The limit of each SMTP command.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks an `smtp.url` without connecting; the error never repeats the URL (it may hold a password).
pub fn check_smtp_url(url: &str) -> Result<(), String> {
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map(drop)
        .map_err(|e| format!("not a valid SMTP URL ({e}); expected smtp://user:pass@host:port?tls=required or smtps://…"))
}

/// Checks an `smtp.from` mailbox (`backups@example.com` or `Vardo <backups@example.com>`).
pub fn check_mailbox(from: &str) -> Result<(), String> {
    from.parse::<Mailbox>()
        .map(drop)
        .map_err(|e| format!("not a valid mailbox ({e})"))
}

/// The SMTP transport, when `smtp.url` is set.
pub struct EmailSender {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
}

impl std::fmt::Debug for EmailSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSender")
            .field("configured", &self.transport.is_some())
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl EmailSender {
    /// Builds the pool (no connection yet); must run inside the Tokio runtime.
    pub fn new(url: Option<&SecretString>, from: &str) -> Result<Self, SendError> {
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| SendError::Config(format!("smtp.from is not a valid mailbox ({e})")))?;
        let transport = match url {
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|e| SendError::Config(format!("smtp.url: {e}")))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build(),
            ),
            None => None,
        };
        Ok(Self { transport, from })
    }

    /// Sends one message to all the channel's recipients.
    #[tracing::instrument(skip_all, fields(event = notice.kind.as_str(), recipients = to.len()))]
    pub async fn send(&self, notice: &Notice, to: &[String]) -> Result<(), SendError> {
        let transport = self.transport.as_ref().ok_or_else(|| {
            SendError::Config("no SMTP server is configured (smtp.url / VARDO_SMTP_URL)".to_owned())
        })?;
        let message = message(&self.from, notice, to)?;
        match transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) => Err(SendError::Smtp {
                permanent: e.is_permanent(),
                code: e.status().and_then(|c| c.to_string().parse().ok()),
                message: e.to_string(),
            }),
        }
    }
}

/// The whole message.
pub fn message(from: &Mailbox, notice: &Notice, to: &[String]) -> Result<Message, SendError> {
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(notice.title());
    if to.is_empty() {
        return Err(SendError::Config(
            "the email channel has no recipient".into(),
        ));
    }
    for address in to {
        let mailbox = address
            .parse::<Mailbox>()
            .map_err(|e| SendError::Config(format!("recipient {address}: {e}")))?;
        builder = builder.to(mailbox);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            text(notice),
            html(notice),
        ))
        .map_err(|e| SendError::Config(format!("message: {e}")))
}

/// The plain-text body.
pub fn text(notice: &Notice) -> String {
    let mut out = format!("{}\n\n{}\n", notice.title(), notice.summary());
    if !notice.volumes.is_empty() {
        out.push('\n');
        for v in &notice.volumes {
            out.push_str("- ");
            out.push_str(&v.line());
            out.push('\n');
        }
    }
    if let Some(when) = notice.when() {
        out.push('\n');
        out.push_str(&when);
        out.push('\n');
    }
    out.push_str(&format!("\nJob {}\n", notice.job_id));
    out
}

/// The HTML body: the same content as a table.
pub fn html(notice: &Notice) -> String {
    let mut rows = String::new();
    for v in &notice.volumes {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&v.app_name),
            escape(&v.volume_name),
            escape(v.status.as_str()),
            v.size_bytes.map(human_size).unwrap_or_else(|| "–".into()),
            escape(v.error.as_deref().unwrap_or("")),
        ));
    }
    let table = if rows.is_empty() {
        String::new()
    } else {
        format!(
            "<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\n\
             <tr><th>App</th><th>Volume</th><th>Status</th><th>Size</th><th>Error</th></tr>\n{rows}</table>\n"
        )
    };
    format!(
        "<!doctype html>\n<html><body>\n<h2>{}</h2>\n<p>{}</p>\n{table}<p>{}</p>\n<p style=\"color:#666\">Job {}</p>\n</body></html>\n",
        escape(&notice.title()),
        escape(&notice.summary()),
        escape(&notice.when().unwrap_or_default()),
        notice.job_id,
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use crate::notice::{NoticeKind, VolumeNotice};
    use uuid::Uuid;

    fn notice() -> Notice {
        Notice {
            kind: NoticeKind::Failed,
            organization_id: Uuid::nil(),
            job_id: Uuid::nil(),
            job_name: "nightly".into(),
            failed_count: 1,
            total_count: 2,
            total_size_bytes: 10,
            started_at: None,
            finished_at: None,
            volumes: vec![
                VolumeNotice {
                    app_name: "shop".into(),
                    volume_name: "db".into(),
                    status: Status::Success,
                    size_bytes: Some(10),
                    storage_path: Some("k".into()),
                    error: None,
                },
                VolumeNotice {
                    app_name: "shop".into(),
                    volume_name: "files".into(),
                    status: Status::Failed,
                    size_bytes: None,
                    storage_path: None,
                    error: Some("disk <full>".into()),
                },
            ],
            last_run_at: None,
            reason: None,
            error: None,
        }
    }

    #[test]
    fn bodies_list_every_volume_and_escape_html() {
        let n = notice();
        let t = text(&n);
        assert!(t.contains("- shop/files: failed — disk <full>"), "{t}");
        assert!(t.contains("- shop/db: success, 10 bytes"), "{t}");
        let h = html(&n);
        assert!(
            h.contains("disk &lt;full&gt;") && !h.contains("<full>"),
            "{h}"
        );
    }

    #[test]
    fn the_message_has_the_subject_and_every_recipient() {
        let from: Mailbox = "Vardo <vardo@example.com>".parse().expect("mailbox");
        let m = message(
            &from,
            &notice(),
            &["a@example.com".into(), "b@example.com".into()],
        )
        .expect("message");
        let raw = String::from_utf8(m.formatted()).expect("utf-8");
        assert!(raw.contains("Subject: Backup failed: nightly"), "{raw}");
        assert!(raw.contains("a@example.com") && raw.contains("b@example.com"));
        assert!(message(&from, &notice(), &["not an address".into()]).is_err());
        assert!(check_smtp_url("smtp://u:p@127.0.0.1:25?tls=required").is_ok());
        assert!(check_smtp_url("http://x").is_err());
    }
}
