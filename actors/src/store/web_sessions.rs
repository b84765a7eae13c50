//! web_session: sessions of the Backups page (see `schema.sql`). The cookie's value is never
//! stored, only its SHA-256; a session ends when it expires, on sign-out, or with the token (or
//! organization) it was opened with.

use std::time::Duration;

use uuid::Uuid;

use super::{Store, StoreError};

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    pub admin: bool,
    /// The organization shown: the session's own, or the one the admin picked (None: not yet).
    pub organization_id: Option<Uuid>,
    /// The CSRF token its forms carry.
    pub csrf: String,
    /// An admin session's fingerprint of the admin token it signed in with.
    pub admin_token: Option<String>,
}

impl Store {
    /// Opens an admin session (`admin_token`: a fingerprint of the admin token signed in with);
    /// forgets expired sessions on the way.
    #[tracing::instrument(skip_all)]
    pub async fn open_admin_session(
        &self,
        id_hash: &str,
        admin_token: &str,
        csrf: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute("DELETE FROM web_session WHERE expires_at < now()", &[])
            .await?;
        client
            .execute(
                "INSERT INTO web_session (id_hash, admin, admin_token, csrf, expires_at)
                 VALUES ($1, true, $2, $3, now() + make_interval(secs => $4))",
                &[&id_hash, &admin_token, &csrf, &ttl.as_secs_f64()],
            )
            .await?;
        Ok(())
    }

    /// Opens a session for the organization whose API token has `token_hash`; None when no token
    /// has it.
    #[tracing::instrument(skip_all)]
    pub async fn open_token_session(
        &self,
        id_hash: &str,
        token_hash: &str,
        csrf: &str,
        ttl: Duration,
    ) -> Result<Option<Uuid>, StoreError> {
        let client = self.pool().get().await?;
        client
            .execute("DELETE FROM web_session WHERE expires_at < now()", &[])
            .await?;
        let row = client
            .query_opt(
                "INSERT INTO web_session (id_hash, admin, api_token_id, organization_id, csrf, expires_at)
                 SELECT $1, false, id, organization_id, $3, now() + make_interval(secs => $4)
                 FROM api_token WHERE token_hash = $2
                 RETURNING organization_id",
                &[&id_hash, &token_hash, &csrf, &ttl.as_secs_f64()],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The live session whose cookie has this hash.
    #[tracing::instrument(skip_all)]
    pub async fn web_session(&self, id_hash: &str) -> Result<Option<WebSession>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT admin, organization_id, csrf, admin_token FROM web_session
                 WHERE id_hash = $1 AND expires_at > now()",
                &[&id_hash],
            )
            .await?;
        Ok(row.map(|r| WebSession {
            admin: r.get(0),
            organization_id: r.get(1),
            csrf: r.get(2),
            admin_token: r.get(3),
        }))
    }

    /// The admin's session now shows `organization_id`. False when the session is not an
    /// admin's (or gone).
    #[tracing::instrument(skip(self, id_hash))]
    pub async fn show_organization(
        &self,
        id_hash: &str,
        organization_id: Uuid,
    ) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "UPDATE web_session SET organization_id = $2
                 WHERE id_hash = $1 AND admin AND expires_at > now()",
                &[&id_hash, &organization_id],
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends a session.
    #[tracing::instrument(skip_all)]
    pub async fn close_web_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute("DELETE FROM web_session WHERE id_hash = $1", &[&id_hash])
            .await?;
        Ok(())
    }
}
