//! The replay of a verified dump into the database container, part by part.
//!
//! A cluster dump ([`crate::pg::format`]) is replayed section by section, each in its own psql
//! session: the roles in one transaction in the login database; each database first created if it
//! is missing (`CREATE DATABASE` cannot run in a transaction), then its dump in one transaction
//! connected to it. A transaction gets `COMMIT` only once the next section's marker arrived through
//! the block-by-block check against the verified archive — and the last one only once the whole
//! archive is verified to its end — so each database is restored whole or not at all. A database
//! that had to be created is dropped again when its replay fails. The first section that fails
//! stops the replay; the log says which sections were committed before it.
//!
//! A dump of one database (written before cluster dumps) is replayed whole in the login database,
//! framed the same way.

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use tokio::sync::{mpsc, oneshot};

use super::sql::{framed, COMMITTED};
use crate::docker::{DockerClient, DockerError, ExecOutcome};
use crate::pg::format::{self, Piece, Section};
use crate::pg::PgSession;
use crate::stream::ByteStream;
use crate::tar_guard::HeldSymlink;

/// A section being replayed: its SQL, and the signal that it arrived whole.
type Part = (Section, ByteStream, oneshot::Receiver<Vec<HeldSymlink>>);

/// What the replay did, for the restore's log.
#[derive(Default)]
pub struct Replayed {
    /// The parts committed, in order ("roles", "database x").
    pub committed: Vec<String>,
}

/// Replays `sql` (the decompressed, block-checked dump; `verified` fires once the whole archive
/// matched its record) through `session`'s container. Err is the reason for the log; `replayed`
/// holds what was committed before, either way.
pub async fn replay(
    docker: &DockerClient,
    session: &PgSession,
    sql: ByteStream,
    verified: oneshot::Receiver<Vec<HeldSymlink>>,
    replayed: &mut Replayed,
) -> Result<(), String> {
    let mut pieces = Box::pin(format::pieces(sql));
    let layout = match pieces.next().await {
        Some(Ok(layout)) => layout,
        Some(Err(e)) => return Err(did_not_arrive(&e)),
        None => return Err("the dump is empty".to_owned()),
    };
    if layout == Piece::Single {
        let sql = pieces
            .filter_map(|p| async move {
                match p {
                    Ok(Piece::Sql(b)) => Some(Ok(b)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .boxed();
        let database = session.login.database.clone();
        transaction(docker, session, &database, framed(sql, verified)).await?;
        replayed.committed.push(format!("database {database}"));
        return Ok(());
    }
    let (parts_tx, mut parts_rx) = mpsc::channel::<Part>(1);
    let split = split(pieces, verified, parts_tx);
    let apply = async {
        // A database the replay created, so that a failed replay of it drops it again.
        let mut created: Option<String> = None;
        while let Some((section, sql, done)) = parts_rx.recv().await {
            match section {
                Section::Roles => {
                    let login = session.login.database.clone();
                    transaction(docker, session, &login, framed(sql, done))
                        .await
                        .map_err(|e| format!("the roles: {e}"))?;
                    replayed.committed.push("roles".to_owned());
                }
                Section::Create(name) => {
                    let existed = exists(docker, session, &name).await?;
                    created = (!existed).then(|| name.clone());
                    if let Err(mut why) = create(docker, session, &name, whole(sql, done)).await {
                        if created.is_some() {
                            why.push_str(&drop_created(docker, session, &name).await);
                        }
                        return Err(why);
                    }
                }
                Section::Database(name) => {
                    let result = transaction(docker, session, &name, framed(sql, done)).await;
                    if let Err(e) = result {
                        let mut why = format!("database {name}: {e}");
                        if created.as_deref() == Some(name.as_str()) {
                            why.push_str(&drop_created(docker, session, &name).await);
                        }
                        return Err(why);
                    }
                    replayed.committed.push(format!("database {name}"));
                    created = None;
                }
                Section::End => {}
            }
        }
        // Created, but its dump never came (the archive ended first): not left behind.
        if let Some(name) = created {
            let dropped = drop_created(docker, session, &name).await;
            return Err(format!(
                "database {name}: the dump ended before its part{dropped}"
            ));
        }
        Ok(())
    };
    let (apply, split) = (std::pin::pin!(apply), std::pin::pin!(split));
    match futures::future::select(apply, split).await {
        futures::future::Either::Left((result, _)) => result,
        futures::future::Either::Right((split_result, apply)) => {
            let applied = apply.await;
            applied.and(split_result)
        }
    }
}

/// Hands each section to `parts` with its own channel of SQL. Ends with an error for a dump that
/// stops before its end marker (the section then being replayed gets the error, so no `COMMIT`).
async fn split(
    pieces: impl Stream<Item = std::io::Result<Piece>>,
    verified: oneshot::Receiver<Vec<HeldSymlink>>,
    parts: mpsc::Sender<Part>,
) -> Result<(), String> {
    let mut pieces = std::pin::pin!(pieces);
    let mut current: Option<(mpsc::Sender<std::io::Result<Bytes>>, oneshot::Sender<_>)> = None;
    let mut ended = false;
    let fail = |current: Option<(mpsc::Sender<_>, oneshot::Sender<_>)>, e: std::io::Error| async {
        let why = did_not_arrive(&e);
        if let Some((tx, _)) = current {
            let _ = tx.send(Err(e)).await;
        }
        Err(why)
    };
    while let Some(piece) = pieces.next().await {
        match piece {
            Err(e) => return fail(current, e).await,
            Ok(Piece::Start(Section::End)) => ended = true,
            Ok(Piece::Start(section)) => {
                if let Some((tx, done)) = current.take() {
                    let _ = done.send(Vec::new());
                    drop(tx);
                }
                let (tx, rx) = mpsc::channel(4);
                let (done_tx, done_rx) = oneshot::channel();
                let sql = tokio_stream::wrappers::ReceiverStream::new(rx).boxed();
                if parts.send((section, sql, done_rx)).await.is_err() {
                    return Ok(());
                }
                current = Some((tx, done_tx));
            }
            Ok(Piece::Sql(bytes)) => {
                if let Some((tx, _)) = &current {
                    if tx.send(Ok(bytes)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(Piece::Single | Piece::Cluster) => {}
        }
    }
    if !ended {
        let cut = std::io::Error::other("the dump ends before its end marker");
        return fail(current, cut).await;
    }
    match verified.await {
        Ok(held) => {
            if let Some((_, done)) = current {
                let _ = done.send(held);
            }
            Ok(())
        }
        Err(_) => {
            let e = std::io::Error::other("the archive could not be verified to its end");
            fail(current, e).await
        }
    }
}

/// `sql` as it is, ending with an error unless `done` says it arrived whole.
fn whole(sql: ByteStream, done: oneshot::Receiver<Vec<HeldSymlink>>) -> ByteStream {
    async_stream::stream! {
        let mut sql = sql;
        while let Some(item) = sql.next().await {
            let failed = item.is_err();
            yield item;
            if failed {
                return;
            }
        }
        if done.await.is_err() {
            yield Err(std::io::Error::other("the section did not arrive whole"));
        }
    }
    .boxed()
}

/// Replays framed SQL in one transaction connected to `database`.
async fn transaction(
    docker: &DockerClient,
    session: &PgSession,
    database: &str,
    input: ByteStream,
) -> Result<(), String> {
    let login = &session.login;
    let cmd = login.command_on(
        database,
        &["psql", "-X", "-v", "ON_ERROR_STOP=1", "--quiet"],
    );
    let outcome = docker
        .exec_write(&session.container, cmd, env(session), input)
        .await;
    judge(outcome)
}

/// Runs a section's `CREATE DATABASE … \gexec` and `\connect` (autocommit).
async fn create(
    docker: &DockerClient,
    session: &PgSession,
    name: &str,
    input: ByteStream,
) -> Result<(), String> {
    let cmd = session
        .login
        .command(&["psql", "-X", "-v", "ON_ERROR_STOP=1", "--quiet"]);
    match docker
        .exec_write(&session.container, cmd, env(session), input)
        .await
    {
        Ok(out) if out.exit_code == 0 => Ok(()),
        Ok(out) => Err(format!(
            "database {name} could not be created (psql exited with status {}): {}",
            out.exit_code,
            out.stderr.trim()
        )),
        Err(e) => Err(format!("database {name} could not be created: {e}")),
    }
}

/// Whether `name` exists in the container's cluster.
async fn exists(docker: &DockerClient, session: &PgSession, name: &str) -> Result<bool, String> {
    let sql = "SELECT count(*) FROM pg_database WHERE datname = :'name';\n";
    let out = psql_with_name(docker, session, name, sql).await;
    match out {
        Ok(out) if out.exit_code == 0 => Ok(out.stdout.trim() != "0"),
        Ok(out) => Err(format!(
            "could not look for database {name}: {}",
            out.stderr.trim()
        )),
        Err(e) => Err(format!("could not look for database {name}: {e}")),
    }
}

/// Drops a database this replay created; what the log should add.
async fn drop_created(docker: &DockerClient, session: &PgSession, name: &str) -> String {
    let sql = "DROP DATABASE IF EXISTS :\"name\" WITH (FORCE);\n";
    match psql_with_name(docker, session, name, sql).await {
        Ok(out) if out.exit_code == 0 => {
            "; the database did not exist before this restore and was dropped again".to_owned()
        }
        Ok(out) => format!(
            "; the database did not exist before this restore, and dropping it again failed: {}",
            out.stderr.trim()
        ),
        Err(e) => format!(
            "; the database did not exist before this restore, and dropping it again failed: {e}"
        ),
    }
}

/// psql in the login database with `name` as the variable `:name` (psql quotes it).
async fn psql_with_name(
    docker: &DockerClient,
    session: &PgSession,
    name: &str,
    sql: &'static str,
) -> Result<ExecOutcome, DockerError> {
    let var = format!("name={name}");
    let cmd = session
        .login
        .command(&["psql", "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-v", &var]);
    let input = futures::stream::iter([Ok(Bytes::from_static(sql.as_bytes()))]).boxed();
    docker
        .exec_write(&session.container, cmd, env(session), input)
        .await
}

fn env(session: &PgSession) -> Vec<String> {
    let mut env = session.login.env();
    env.push(format!("PGAPPNAME={}", session.name));
    env
}

fn did_not_arrive(e: &std::io::Error) -> String {
    format!(
        "the archive did not arrive whole and unchanged ({e}); psql received only bytes verified \
         before and never COMMIT, so its transaction was rolled back and the database is as it was"
    )
}

/// What a framed replay's psql outcome means.
fn judge(outcome: Result<ExecOutcome, DockerError>) -> Result<(), String> {
    match outcome {
        Err(DockerError::Input(e)) => Err(did_not_arrive(&e)),
        Err(e) => Err(format!(
            "the replay was interrupted ({e}); psql never received COMMIT, so its transaction \
             was rolled back and the database is as it was"
        )),
        Ok(out) if out.exit_code == 0 && out.stdout.contains(COMMITTED) => Ok(()),
        Ok(out) if out.exit_code == 0 => Err(format!(
            "psql ended without confirming the commit; the transaction was rolled back: {}",
            out.stderr.trim()
        )),
        Ok(out) => Err(format!(
            "psql exited with status {}; its transaction was rolled back and the database is \
             as it was: {}",
            out.exit_code,
            out.stderr.trim()
        )),
    }
}
