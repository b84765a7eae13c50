//! Client-side encryption of archives with [age](https://age-encryption.org): a target that has
//! it on stores every new archive (and every manifest of a chain) encrypted to its recipients,
//! after compression and before hashing, so that the storage provider holds only ciphertext and
//! a verification of the stored object needs no private key. The engine decrypts with the
//! identities of its [`Keyring`] (an identity file, or identities sealed in the database).
//!
//! The objects are standard age files (`….tar.gz.age`): `age -d -i key.txt x.tar.gz.age | tar xz`
//! opens one by hand.

pub mod keyring;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use keyring::Keyring;

/// The suffix of an encrypted object's key.
pub const SUFFIX: &str = ".age";

/// How many recipients a target may name.
pub const MAX_RECIPIENTS: usize = 32;

/// A target's encryption setting, as the API and `vardo.yml` write it: `{"type": "none"}` (the
/// default) or `{"type": "age", "recipients": ["age1…", "ssh-ed25519 AAAA…"]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Encryption {
    #[default]
    None,
    Age {
        recipients: Vec<String>,
    },
}

impl Encryption {
    /// The stored form (`None` in the column for no encryption).
    pub fn to_column(&self) -> Option<serde_json::Value> {
        match self {
            Self::None => None,
            Self::Age { .. } => serde_json::to_value(self).ok(),
        }
    }

    /// Reads the stored form.
    pub fn from_column(value: Option<serde_json::Value>) -> Result<Self, String> {
        match value {
            None | Some(serde_json::Value::Null) => Ok(Self::None),
            Some(v) => serde_json::from_value(v).map_err(|e| e.to_string()),
        }
    }

    /// The recipients, parsed and in their canonical form (`None` without encryption); an
    /// unreadable recipient, a duplicate, none or too many is an error naming the recipient.
    pub fn recipients(&self) -> Result<Option<Recipients>, String> {
        let Self::Age { recipients } = self else {
            return Ok(None);
        };
        if recipients.is_empty() {
            return Err("age encryption needs at least one recipient".to_owned());
        }
        if recipients.len() > MAX_RECIPIENTS {
            return Err(format!(
                "age encryption takes at most {MAX_RECIPIENTS} recipients, {} were given",
                recipients.len()
            ));
        }
        let mut parsed: Vec<Recipient> = Vec::with_capacity(recipients.len());
        for (i, text) in recipients.iter().enumerate() {
            let r = Recipient::parse(text).map_err(|why| format!("recipients[{i}]: {why}"))?;
            if parsed.iter().any(|p| p.text == r.text) {
                return Err(format!("recipients[{i}]: {} is named twice", r.text));
            }
            parsed.push(r);
        }
        Ok(Some(Recipients { list: parsed }))
    }

    /// The setting with every recipient in its canonical form (what is stored), or why it is not
    /// valid.
    pub fn canonical(&self) -> Result<Self, String> {
        Ok(match self.recipients()? {
            None => Self::None,
            Some(r) => Self::Age {
                recipients: r.texts(),
            },
        })
    }
}

/// The short, public name of a recipient (and of the identity that opens what is encrypted to
/// it): the first 16 hex digits of the SHA-256 of its canonical text.
pub fn fingerprint(recipient: &str) -> String {
    let digest = Sha256::digest(recipient.trim().as_bytes());
    hex::encode(&digest[..8])
}

/// One parsed recipient.
#[derive(Clone)]
pub struct Recipient {
    /// Canonical text: `age1…`, or `ssh-ed25519 AAAA…` / `ssh-rsa AAAA…` without a comment.
    pub text: String,
    key: Key,
}

#[derive(Clone)]
enum Key {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

impl Recipient {
    /// Parses an age X25519 recipient or an ssh-ed25519 / ssh-rsa public key (a comment after
    /// the key is allowed and dropped).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.starts_with("age1") {
            let key: age::x25519::Recipient = text
                .parse()
                .map_err(|e: &str| format!("{} is not an age recipient: {e}", shown(text)))?;
            return Ok(Self {
                text: key.to_string(),
                key: Key::X25519(key),
            });
        }
        if text.starts_with("ssh-") {
            if text.contains('\n') || text.contains('\r') {
                return Err(
                    "an ssh recipient is one line: name each key as a recipient of its own"
                        .to_owned(),
                );
            }
            let mut words = text.split_whitespace();
            let key_text = match (words.next(), words.next()) {
                (Some(kind), Some(data)) => format!("{kind} {data}"),
                _ => return Err(format!("{} is not an ssh public key", shown(text))),
            };
            if words.any(|w| w.starts_with("ssh-") || w.starts_with("age1")) {
                return Err(format!(
                    "{} holds more than one key: name each key as a recipient of its own",
                    shown(text)
                ));
            }
            let key: age::ssh::Recipient = key_text.parse().map_err(|e| {
                format!(
                    "{} is not an ssh public key age can use: {e:?}",
                    shown(&key_text)
                )
            })?;
            return Ok(Self {
                text: key.to_string(),
                key: Key::Ssh(key),
            });
        }
        Err(format!(
            "{} is neither an age recipient (age1…) nor an ssh public key (ssh-ed25519 / ssh-rsa)",
            shown(text)
        ))
    }

    fn as_dyn(&self) -> &dyn age::Recipient {
        match &self.key {
            Key::X25519(k) => k,
            Key::Ssh(k) => k,
        }
    }
}

/// A recipient as an error quotes it: at most 80 characters.
fn shown(text: &str) -> String {
    let mut s: String = text.chars().take(80).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// The recipients an archive is encrypted to.
#[derive(Clone)]
pub struct Recipients {
    list: Vec<Recipient>,
}

impl Recipients {
    /// Their canonical texts, in order.
    pub fn texts(&self) -> Vec<String> {
        self.list.iter().map(|r| r.text.clone()).collect()
    }

    /// Parses recipients recorded on a backup row.
    pub fn from_texts(texts: &[String]) -> Result<Self, String> {
        Encryption::Age {
            recipients: texts.to_vec(),
        }
        .recipients()?
        .ok_or_else(|| "no recipients".to_owned())
    }

    /// An age encryptor to all of them.
    pub fn encryptor(&self) -> Result<age::Encryptor, age::EncryptError> {
        age::Encryptor::with_recipients(self.list.iter().map(Recipient::as_dyn))
    }
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.texts()).finish()
    }
}

#[cfg(test)]
mod tests;
