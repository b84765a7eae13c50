//! `vardo-backup restore-self --backup ID --to DATABASE_URL`: a backup of the engine's own database
//! replayed into an empty database, with the guarantees of a database restore — the archive is
//! verified against its row before psql starts, replayed from a second download checked block by
//! block, and committed as one transaction only once it is verified to its end — by `psql` on this
//! host. A database that holds any table already is refused: nothing is written into it.

use std::process::Stdio;

use futures::StreamExt as _;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

use crate::codec::{self, Payload};
use crate::engine::Engine;
use crate::model::{Status, VolumeKind};
use crate::storage::TargetStorage;

/// Restores backup `backup_id` (of the engine's database) into the empty database at `to`;
/// the lines for the user, or why not.
pub async fn restore_self(
    engine: &Engine,
    backup_id: Uuid,
    to: &SecretString,
) -> Result<Vec<String>, String> {
    let store = engine.store();
    let backup = store.backup(backup_id).await.map_err(|e| e.to_string())?;
    if backup.volume_kind != VolumeKind::Engine {
        return Err(format!(
            "backup {backup_id} is not a backup of the engine's database (restore it with \
             `vardo-backup restore --backup {backup_id}`)"
        ));
    }
    if backup.status != Status::Success {
        return Err(format!(
            "backup {backup_id} is {}, not success",
            backup.status.as_str()
        ));
    }
    let archive = crate::restore::archive_of(&backup)?;
    let target = store
        .target(archive.target_id)
        .await
        .map_err(|e| e.to_string())?;
    let settings = engine.settings();
    let storage = TargetStorage::open_with_step_limit(
        &target.config,
        settings.allow_local_backups,
        settings.stall_deadline,
    )
    .map_err(|e| e.to_string())?;
    let storage = engine
        .equip(storage, &target)
        .await
        .map_err(|e| e.to_string())?;
    storage.opens(backup.encrypted_to.as_deref())?;
    let mut lines = vec![format!(
        "restoring {} ({} bytes, sha256:{}) from target {}",
        archive.key, archive.expected.size, archive.expected.sha256_hex, target.name
    )];
    let tables = tables_in(to).await?;
    if tables > 0 {
        return Err(format!(
            "the database at --to holds {tables} relations already: restore-self replays only \
             into an empty database (create one with `createdb`), nothing was changed"
        ));
    }
    let progress = engine.board().start();
    progress.describe(
        "restoring the engine's database",
        Some(archive.expected.size),
    );
    let pin = storage.pin(&archive.key).await.map_err(|e| e.to_string())?;
    let verified = crate::restore::sql::verify_first(
        &storage,
        &archive.key,
        &pin,
        &archive.expected,
        &progress,
    )
    .await
    .map_err(|e| e.to_string())?;
    lines.push("the archive matches the backup's size and SHA-256; replaying it with psql".into());
    let download = storage
        .download_pinned(&archive.key, &pin)
        .await
        .map_err(|e| e.to_string())?;
    let (sql, done) = codec::unpack(
        codec::same_blocks(download, verified),
        storage.format(&archive.key)?,
        Payload::Sql,
        archive.expected,
    );
    let checked = futures::stream::iter([Ok(still_empty())])
        .chain(sql)
        .boxed();
    psql(to, crate::restore::sql::framed(checked, done)).await?;
    lines.push("replayed and committed in one transaction".into());
    Ok(lines)
}

/// Relations (tables, views, sequences, …) outside the system schemas.
const RELATIONS: &str =
    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'";

/// The same check inside the replay's transaction, right after its `BEGIN`: a database that
/// filled up since the first check stops the replay before it drops anything.
fn still_empty() -> bytes::Bytes {
    bytes::Bytes::from(format!(
        "DO $vardo_empty$BEGIN IF ({RELATIONS}) > 0 THEN \
         RAISE EXCEPTION 'the database is not empty any more: nothing was changed'; END IF; \
         END$vardo_empty$;\n"
    ))
}

/// Relations outside the system schemas of the database at `url`, reached as psql reaches it.
async fn tables_in(url: &SecretString) -> Result<i64, String> {
    let mut config: tokio_postgres::Config = url
        .expose_secret()
        .parse()
        .map_err(|e| format!("--to cannot be read: {e}"))?;
    // As psql will resolve it: the database defaults to the user's name.
    if config.get_dbname().is_none() {
        let user = config.get_user().unwrap_or("postgres").to_owned();
        config.dbname(&user);
    }
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to the database at --to: {e}"))?;
    let conn = tokio::spawn(connection);
    let row = client
        .query_one(RELATIONS, &[])
        .await
        .map_err(|e| format!("cannot read the database at --to: {e}"))?;
    drop(client);
    let _ = conn.await;
    Ok(row.get(0))
}

/// Feeds `input` to `psql -d url` on this host; Ok once psql confirmed the commit.
async fn psql(url: &SecretString, mut input: crate::stream::ByteStream) -> Result<(), String> {
    let libpq = crate::self_backup::libpq(url.expose_secret())?;
    let mut cmd = crate::self_backup::command("psql", &libpq);
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "--quiet"])
        .env("PGOPTIONS", "-c client_min_messages=warning")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start psql on this host: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("psql has no stdin")?;
    let output = tokio::spawn(child.wait_with_output());
    let mut fed = Ok(());
    while let Some(chunk) = input.next().await {
        match chunk {
            Ok(bytes) => {
                if let Err(e) = stdin.write_all(&bytes).await {
                    fed = Err(format!("psql stopped reading: {e}"));
                    break;
                }
            }
            Err(e) => {
                fed = Err(format!(
                    "the archive did not arrive whole and unchanged ({e}); psql never received \
                     COMMIT, so nothing was committed"
                ));
                break;
            }
        }
    }
    drop(stdin);
    let out = output
        .await
        .map_err(|e| format!("psql: {e}"))?
        .map_err(|e| format!("psql: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "psql exited with {}; nothing was committed: {}",
            out.status,
            stderr.trim()
        ));
    }
    fed?;
    if !String::from_utf8_lossy(&out.stdout).contains(crate::restore::sql::COMMITTED) {
        return Err(format!(
            "psql ended without confirming the commit: {}",
            stderr.trim()
        ));
    }
    Ok(())
}
