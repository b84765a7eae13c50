//! A Postgres volume's drill: a scratch container from the same image as the app's database (or
//! `drill.postgres_image`), with the same `POSTGRES_USER` / `POSTGRES_PASSWORD` / `POSTGRES_DB`,
//! on the scratch volume; the dump verified and replayed into it the way a restore replays it
//! (`ON_ERROR_STOP`, one transaction per database); then each database's tables counted.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;

use super::scratch::Scratch;
use super::{Ctx, Source};
use crate::codec::{self, Payload};
use crate::docker::{ContainerRef, DockerClient};
use crate::pg::{PgLogin, PgSession};
use crate::progress::stage;
use crate::restore::sql_replay::{self, Replayed};

/// How long a scratch server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(120);
const DATA: &str = "/var/lib/postgresql/data";

pub async fn drill(
    ctx: &Ctx<'_>,
    source: &Source,
    scratch: &mut Scratch,
) -> Result<String, String> {
    let docker = ctx.docker;
    let live = match &source.live_volume {
        Some(volume) => docker
            .container_using_volume(volume)
            .await
            .map_err(|e| e.to_string())?,
        None => None,
    };
    let (image, env, mount_path) = match (&live, &ctx.engine.settings().drill_postgres_image) {
        (Some(c), _) => (c.image.clone(), login_env(c), c.mount_path.clone()),
        (None, Some(image)) => (
            image.clone(),
            vec![
                "POSTGRES_USER=postgres".to_owned(),
                format!("POSTGRES_PASSWORD={}", uuid::Uuid::new_v4().simple()),
            ],
            DATA.to_owned(),
        ),
        (None, None) => {
            return Err(
                "no running container mounts the app's volume, so its image is unknown; \
                 start the database, or set drill.postgres_image (VARDO_DRILL_POSTGRES_IMAGE)"
                    .to_owned(),
            )
        }
    };
    let name = format!("{}-db", scratch.volume);
    let id = docker
        .start_scratch_container(
            &ctx.drill_id.to_string(),
            &name,
            &image,
            env.clone(),
            &scratch.volume,
            &mount_path,
        )
        .await
        .map_err(|e| e.to_string())?;
    scratch.container = Some(id.clone());
    let container = ContainerRef {
        id: id.clone(),
        name: name.clone(),
        env: env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        image: image.clone(),
        mount_path,
    };
    let session = PgSession {
        container: id.clone(),
        login: PgLogin::of(&container),
        name: format!("vardo-backup drill {}", ctx.drill_id),
    };
    wait_ready(docker, &session).await?;
    ctx.log(&format!(
        "{}: scratch container {name} from image {image} is up; replaying the dump",
        source.name
    ))
    .await?;

    let mut replayed = Replayed::default();
    let replay = async {
        let pin = source
            .storage
            .pin(&source.key)
            .await
            .map_err(|e| e.to_string())?;
        let verified = crate::restore::sql::verify_first(
            &source.storage,
            &source.key,
            &pin,
            &source.expected,
            ctx.progress,
        )
        .await
        .map_err(|e| e.to_string())?;
        let download = source
            .storage
            .download_pinned(&source.key, &pin)
            .await
            .map_err(|e| e.to_string())?;
        let (sql, done) = codec::unpack(
            ctx.progress
                .meter(stage::DOWNLOAD)
                .stream(codec::same_blocks(download, verified)),
            source.format.clone(),
            Payload::Sql,
            source.expected.clone(),
        );
        let sql = ctx.progress.meter(stage::REPLAY).stream(sql);
        sql_replay::replay(docker, &session, sql, done, &mut replayed).await
    };
    let replayed_ok = ctx
        .progress
        .deadline(ctx.deadline, &[stage::DOWNLOAD, stage::REPLAY], replay)
        .await;
    match replayed_ok {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Err(format!("the dump did not replay: {why}")),
        Err(stalled) => return Err(stalled.to_string()),
    }
    let mut counted = Vec::new();
    for part in &replayed.committed {
        let Some(database) = part.strip_prefix("database ") else {
            continue;
        };
        let rows = tokio::time::timeout(ctx.deadline, count_rows(docker, &session, database))
            .await
            .map_err(|_| {
                format!(
                    "counting the rows of {database} took longer than {}s",
                    ctx.deadline.as_secs()
                )
            })??;
        counted.push(format!("{database} ({rows})"));
    }
    Ok(format!(
        "{}: the dump replayed with ON_ERROR_STOP ({}); rows per table: {}",
        source.name,
        replayed.committed.join(", "),
        counted.join("; ")
    ))
}

/// The app container's login, for the scratch server (its superuser and database). A password
/// kept in a file of the app's container (`POSTGRES_PASSWORD_FILE`) is not there: the scratch
/// server gets a random one instead.
fn login_env(c: &ContainerRef) -> Vec<String> {
    let mut env: Vec<String> = [
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
        "POSTGRES_HOST_AUTH_METHOD",
        "POSTGRES_INITDB_ARGS",
    ]
    .iter()
    .filter_map(|k| c.env.get(*k).map(|v| format!("{k}={v}")))
    .collect();
    if !c.env.contains_key("POSTGRES_PASSWORD") {
        env.push(format!(
            "POSTGRES_PASSWORD={}",
            uuid::Uuid::new_v4().simple()
        ));
    }
    env
}

/// One command in the scratch container, bounded: a server that stops answering ends the wait.
async fn exec_bounded(
    docker: &DockerClient,
    container: &str,
    cmd: Vec<String>,
    env: Vec<String>,
) -> Result<crate::docker::ExecOutcome, crate::docker::DockerError> {
    match tokio::time::timeout(
        Duration::from_secs(10),
        docker.exec_collect(container, cmd, env),
    )
    .await
    {
        Ok(done) => done,
        Err(_) => Err(crate::docker::DockerError::Failed(
            "the command did not answer within 10 s".to_owned(),
        )),
    }
}

/// Waits until the scratch server takes connections over TCP (the real server: an image's
/// first-start server listens on a socket only) and answers a query.
async fn wait_ready(docker: &DockerClient, session: &PgSession) -> Result<(), String> {
    let started = Instant::now();
    let login = &session.login;
    let mut last = String::new();
    while started.elapsed() < READY_WITHIN {
        let tcp = ["pg_isready", "-q", "-h", "127.0.0.1"]
            .map(str::to_owned)
            .to_vec();
        let ready = exec_bounded(docker, &session.container, tcp, vec![]).await;
        if let Err(
            e @ (crate::docker::DockerError::ContainerNotFound { .. }
            | crate::docker::DockerError::ContainerNotRunning { .. }),
        ) = &ready
        {
            return Err(format!("the scratch database server stopped: {e}"));
        }
        if matches!(&ready, Ok(o) if o.exit_code == 0) {
            let cmd = login.command(&["psql", "-X", "-tA", "-c", "SELECT 1"]);
            match exec_bounded(docker, &session.container, cmd, login.env()).await {
                Ok(o) if o.exit_code == 0 && o.stdout.trim() == "1" => return Ok(()),
                Ok(o) => last = o.stderr.trim().to_owned(),
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "the scratch database server did not accept connections within {}s{}",
        READY_WITHIN.as_secs(),
        if last.is_empty() {
            String::new()
        } else {
            format!(": {last}")
        }
    ))
}

/// `schema.table rows, …` for every table of `database`.
async fn count_rows(
    docker: &DockerClient,
    session: &PgSession,
    database: &str,
) -> Result<String, String> {
    const COUNT: &str = "SELECT format('SELECT %L || '' '' || count(*) FROM %I.%I', \
        schemaname || '.' || tablename, schemaname, tablename) FROM pg_tables \
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1 \\gexec\n";
    let cmd = session
        .login
        .command_on(database, &["psql", "-X", "-tA", "-v", "ON_ERROR_STOP=1"]);
    let input = futures::stream::iter([Ok(Bytes::from_static(COUNT.as_bytes()))]).boxed();
    let out = docker
        .exec_write(&session.container, cmd, session.login.env(), input)
        .await
        .map_err(|e| format!("counting the rows of {database}: {e}"))?;
    if out.exit_code != 0 {
        return Err(format!(
            "counting the rows of {database} failed: {}",
            out.stderr.trim()
        ));
    }
    let tables: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
    Ok(if tables.is_empty() {
        "no tables".to_owned()
    } else {
        tables.join(", ")
    })
}
