//! Notification channels: where an organization's notices go (email, a signed webhook, Slack).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Email,
    Webhook,
    Slack,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Webhook => "webhook",
            Self::Slack => "slack",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "email" => Self::Email,
            "webhook" => Self::Webhook,
            "slack" => Self::Slack,
            _ => return None,
        })
    }
}

/// The config fields stored encrypted: a webhook's signing secret, and URLs, since webhook and
/// Slack incoming-webhook URLs carry tokens in their path.
pub fn secret_fields(kind: ChannelKind) -> &'static [&'static str] {
    match kind {
        ChannelKind::Email => &[],
        ChannelKind::Webhook => &["url", "secret"],
        ChannelKind::Slack => &["url"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_text_and_serde() {
        for kind in [ChannelKind::Email, ChannelKind::Webhook, ChannelKind::Slack] {
            assert_eq!(ChannelKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).expect("serializes");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(ChannelKind::parse("sms"), None);
    }
}
