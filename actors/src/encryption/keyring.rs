//! The identities an engine decrypts with: from `VARDO_AGE_IDENTITY_FILE` (age's identity file
//! format: `AGE-SECRET-KEY-1…` lines and `#` comments, or one unencrypted OpenSSH private key) and
//! sealed in the database (`vardo-backup identity`). Never written to a target, a log or a
//! response: only their recipients and fingerprints are shown.

use secrecy::ExposeSecret as _;

use super::fingerprint;

/// An identity with the public recipient it opens.
#[derive(Clone)]
struct Held {
    recipient: String,
    /// The identity as an identity file holds it (what the database seals).
    text: secrecy::SecretString,
    key: Key,
}

#[derive(Clone)]
enum Key {
    X25519(age::x25519::Identity),
    Ssh(age::ssh::Identity),
}

/// The engine's identities; empty when it has none.
#[derive(Clone, Default)]
pub struct Keyring {
    held: Vec<Held>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.fingerprints()).finish()
    }
}

impl Keyring {
    /// Reads identities from the text of an identity file; `source` names it in errors (which
    /// never quote the key).
    pub fn parse(text: &str, source: &str) -> Result<Self, String> {
        if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            let identity = age::ssh::Identity::from_buffer(text.as_bytes(), None)
                .map_err(|e| format!("{source}: not an OpenSSH private key age can use: {e}"))?;
            let key = match &identity {
                age::ssh::Identity::Unencrypted(_) => identity.clone(),
                age::ssh::Identity::Encrypted(_) => {
                    return Err(format!(
                        "{source}: the ssh private key is passphrase-protected; the engine needs \
                         an unencrypted key (or an age identity)"
                    ))
                }
                age::ssh::Identity::Unsupported(k) => {
                    return Err(format!("{source}: unsupported ssh key: {k:?}"))
                }
            };
            let recipient = age::ssh::Recipient::try_from(identity)
                .map_err(|e| format!("{source}: no public key in the ssh key: {e:?}"))?;
            return Ok(Self {
                held: vec![Held {
                    recipient: recipient.to_string(),
                    text: text.to_owned().into(),
                    key: Key::Ssh(key),
                }],
            });
        }
        let mut held = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let identity: age::x25519::Identity = line.parse().map_err(|_| {
                format!(
                    "{source}, line {}: not an age identity (AGE-SECRET-KEY-1…)",
                    n + 1
                )
            })?;
            held.push(Held {
                recipient: identity.to_public().to_string(),
                text: line.to_owned().into(),
                key: Key::X25519(identity),
            });
        }
        if held.is_empty() {
            return Err(format!("{source}: holds no identity"));
        }
        Ok(Self { held })
    }

    /// Reads an identity file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("identity file {}: {e}", path.display()))?;
        Self::parse(&text, &format!("identity file {}", path.display()))
    }

    /// A new X25519 identity: its identity-file text and its recipient.
    pub fn generate() -> (secrecy::SecretString, String) {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        let text = format!(
            "# recipient: {recipient}\n{}\n",
            identity.to_string().expose_secret()
        );
        (text.into(), recipient)
    }

    /// Both sets of identities (a recipient held twice is kept once).
    pub fn merged(mut self, other: &Keyring) -> Self {
        for h in &other.held {
            if !self.held.iter().any(|m| m.recipient == h.recipient) {
                self.held.push(h.clone());
            }
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The recipients this keyring opens archives of.
    pub fn recipients(&self) -> Vec<String> {
        self.held.iter().map(|h| h.recipient.clone()).collect()
    }

    /// Each identity's recipient and identity-file text.
    pub fn texts(&self) -> Vec<(String, secrecy::SecretString)> {
        self.held
            .iter()
            .map(|h| (h.recipient.clone(), h.text.clone()))
            .collect()
    }

    pub fn fingerprints(&self) -> Vec<String> {
        self.held
            .iter()
            .map(|h| fingerprint(&h.recipient))
            .collect()
    }

    /// Whether an archive encrypted to `recipients` can be opened; if not, why, naming the
    /// fingerprints of the identities it would need.
    pub fn opens(&self, recipients: &[String]) -> Result<(), String> {
        if recipients
            .iter()
            .any(|r| self.held.iter().any(|h| h.recipient == r.trim()))
        {
            return Ok(());
        }
        // Only what the archive needs is named: which identities the engine holds (those of
        // other organizations' targets too) is not told to whoever asked for this restore.
        let needed: Vec<String> = recipients.iter().map(|r| fingerprint(r)).collect();
        Err(format!(
            "the archive is encrypted with age to recipients with fingerprints {}, and this \
             engine holds no identity for any of them (add one to VARDO_AGE_IDENTITY_FILE or \
             with `vardo-backup identity import`)",
            needed.join(", ")
        ))
    }

    /// The identities, for age's decryptor.
    pub fn identities(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.held.iter().map(|h| match &h.key {
            Key::X25519(k) => k as &dyn age::Identity,
            Key::Ssh(k) => k as &dyn age::Identity,
        })
    }
}
