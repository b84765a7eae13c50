//! age_identity: identities the engine decrypts archives with, sealed with VARDO_SECRET_KEY
//! (`vardo-backup identity generate|import|list|remove`). Only the recipient is stored in clear.

use secrecy::ExposeSecret as _;

use super::{Store, StoreError};
use crate::encryption::{fingerprint, Keyring};

/// A stored identity as listed: its public recipient and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIdentity {
    pub recipient: String,
    pub fingerprint: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl Store {
    /// Seals and stores every identity of `keyring`; answers the recipients added (one already
    /// stored is kept as it is).
    pub async fn add_identities(&self, keyring: &Keyring) -> Result<Vec<String>, StoreError> {
        let client = self.pool().get().await?;
        let mut added = Vec::new();
        for (recipient, text) in keyring.texts() {
            let sealed = self.secrets().encrypt(text.expose_secret());
            let n = client
                .execute(
                    "INSERT INTO age_identity (recipient, sealed) VALUES ($1, $2)
                     ON CONFLICT (recipient) DO NOTHING",
                    &[&recipient, &sealed],
                )
                .await?;
            if n > 0 {
                added.push(recipient);
            }
        }
        Ok(added)
    }

    pub async fn list_identities(&self) -> Result<Vec<StoredIdentity>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT recipient, created_at FROM age_identity ORDER BY created_at, recipient",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let recipient: String = r.get("recipient");
                StoredIdentity {
                    fingerprint: fingerprint(&recipient),
                    recipient,
                    created_at: r.get("created_at"),
                }
            })
            .collect())
    }

    /// How many targets and successful backups are encrypted to the stored identity with this
    /// recipient or fingerprint (0 when none is stored).
    pub async fn identity_users(&self, which: &str) -> Result<i64, StoreError> {
        let stored = self.list_identities().await?;
        let Some(found) = stored
            .iter()
            .find(|s| s.recipient == which.trim() || s.fingerprint == which.trim())
        else {
            return Ok(0);
        };
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM backup_target
                          WHERE encryption->'recipients' ? $1)
                      + (SELECT count(*) FROM backup
                          WHERE status = 'success' AND $1 = ANY (encrypted_to))",
                &[&found.recipient],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Removes the identity with this recipient or fingerprint; true if one was removed.
    pub async fn remove_identity(&self, which: &str) -> Result<bool, StoreError> {
        let stored = self.list_identities().await?;
        let Some(found) = stored
            .iter()
            .find(|s| s.recipient == which.trim() || s.fingerprint == which.trim())
        else {
            return Ok(false);
        };
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "DELETE FROM age_identity WHERE recipient = $1",
                &[&found.recipient],
            )
            .await?;
        Ok(n > 0)
    }

    /// The stored identities, opened. One that no longer opens (another VARDO_SECRET_KEY) or
    /// parses is left out and logged, so that it does not keep the others from being used.
    pub async fn sealed_keyring(&self) -> Result<Keyring, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query("SELECT recipient, sealed FROM age_identity", &[])
            .await?;
        let mut keyring = Keyring::default();
        for row in rows {
            let recipient: String = row.get("recipient");
            let sealed: String = row.get("sealed");
            let opened = self
                .secrets()
                .decrypt(&sealed)
                .map_err(|e| e.to_string())
                .and_then(|text| Keyring::parse(text.expose_secret(), "a stored identity"));
            match opened {
                Ok(k) => keyring = keyring.merged(&k),
                Err(e) => tracing::warn!(
                    fingerprint = %fingerprint(&recipient),
                    error = %e,
                    "a stored age identity cannot be used"
                ),
            }
        }
        Ok(keyring)
    }
}
