//! api_token: organization API tokens. Only the SHA-256 (hex) of a token is stored; the token
//! itself is shown to its creator once and never again.

use uuid::Uuid;

use super::{Store, StoreError};

impl Store {
    /// Stores the hash of a new token of `organization_id`; returns the token's id.
    #[tracing::instrument(skip(self, token_hash))]
    pub async fn insert_api_token(
        &self,
        organization_id: Uuid,
        token_hash: &str,
    ) -> Result<Uuid, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "INSERT INTO api_token (organization_id, token_hash) VALUES ($1, $2) RETURNING id",
                &[&organization_id, &token_hash],
            )
            .await?;
        Ok(row.get(0))
    }

    /// The organization whose token has this hash, if any; records the token's use.
    #[tracing::instrument(skip_all)]
    pub async fn organization_for_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        let client = self.pool().get().await?;
        // Refreshing last_used_at at most once a minute keeps reads from turning into writes.
        let row = client
            .query_opt(
                "WITH t AS (SELECT id, organization_id, last_used_at FROM api_token WHERE token_hash = $1),
                      touched AS (UPDATE api_token SET last_used_at = now()
                                  WHERE id IN (SELECT id FROM t WHERE last_used_at IS NULL
                                               OR last_used_at < now() - interval '1 minute'))
                 SELECT organization_id FROM t",
                &[&token_hash],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }
}
