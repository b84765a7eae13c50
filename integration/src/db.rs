//! A database per test, named by a UUID, dropped at the end.

use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::setting;

pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

async fn admin() -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(&setting("VARDO_TEST_PG_URL"), NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

impl TestDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let name = format!("vardo_test_{}", Uuid::new_v4().simple());
        admin()
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let base = setting("VARDO_TEST_PG_URL");
        let url = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => anyhow::bail!("VARDO_TEST_PG_URL has no database part: {base}"),
        };
        Ok(Self { name, url })
    }

    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    pub async fn drop_database(self) -> anyhow::Result<()> {
        admin()
            .await?
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await?;
        Ok(())
    }
}
