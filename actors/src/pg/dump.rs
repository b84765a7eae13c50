//! The backup of a Postgres volume: a dump of its whole cluster, as `pg_dumpall` would cover it —
//! the roles (`pg_dumpall --roles-only`) and every database that is not a template (`pg_dump
//! --clean --if-exists` each) — in the layout of [`super::format`], streamed.
//!
//! Each `CREATE ROLE x;` is made idempotent (a `DO` block that ignores `duplicate_object`), so that
//! the roles replay in one transaction on a server where some of them exist, as `ALTER ROLE` then
//! sets their attributes. Tablespaces are not in the dump (their folders belong to the host): the
//! log names any the cluster has.

use std::io;

use bytes::Bytes;
use futures::StreamExt as _;

use super::format::{self, Section};
use super::login::{psql_connect, PgLogin};
use crate::docker::DockerClient;
use crate::stream::ByteStream;

/// The roles' dump is read whole before the stream starts; it is small (one line per role and
/// setting), and this bounds it.
const ROLES_CAP: usize = 16 << 20;

/// A database of the cluster, as the dump needs it.
#[derive(Debug, Clone)]
pub struct Database {
    pub name: String,
    /// `SELECT 'CREATE DATABASE …' WHERE NOT EXISTS (…)`, written by the server's `format()`.
    create: String,
}

/// What the dump will hold, learnt before its stream starts.
pub struct Plan {
    pub databases: Vec<Database>,
    pub tablespaces: Vec<String>,
    roles: Bytes,
}

impl Plan {
    /// What the backup's log says about the source.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.databases.iter().map(|d| d.name.as_str()).collect();
        let mut text = format!(
            "the cluster's roles and its {} database{} ({})",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        );
        if !self.tablespaces.is_empty() {
            text.push_str(&format!(
                "; warning: tablespaces ({}) are not in this backup (their folders are the host's): \
                 create them before a restore",
                self.tablespaces.join(", ")
            ));
        }
        text
    }
}

/// Lists the cluster's databases and tablespaces and dumps its roles. Any failure fails the
/// backup before anything is uploaded.
pub async fn plan(docker: &DockerClient, container: &str, login: &PgLogin) -> Result<Plan, String> {
    // Hex, so that any name (a space, a quote, a line break) comes back whole.
    let list = "SELECT encode(convert_to(datname, 'UTF8'), 'hex') || ' ' || \
        encode(convert_to(format('SELECT %L WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = %L)', \
          format('CREATE DATABASE %I WITH TEMPLATE = template0 OWNER = %I ENCODING = %L LC_COLLATE = %L LC_CTYPE = %L', \
            datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype), \
          datname), 'UTF8'), 'hex') \
        FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname";
    let mut databases = Vec::new();
    for line in query(docker, container, login, list).await?.lines() {
        let decode = |h: &str| {
            hex::decode(h)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| format!("the list of databases could not be read: {line}"))
        };
        let (name, create) = line
            .split_once(' ')
            .ok_or_else(|| format!("the list of databases could not be read: {line}"))?;
        let name = decode(name)?;
        if psql_connect(&name).is_none() {
            return Err(format!(
                "database {name:?} has a line break in its name: psql cannot connect to it by \
                 name, so it cannot be dumped"
            ));
        }
        databases.push(Database {
            name,
            create: decode(create)?,
        });
    }
    let spaces = "SELECT spcname FROM pg_tablespace \
        WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY spcname";
    let tablespaces = query(docker, container, login, spaces)
        .await?
        .lines()
        .map(str::to_owned)
        .collect();
    let roles = dump_roles(docker, container, login).await?;
    Ok(Plan {
        databases,
        tablespaces,
        roles,
    })
}

async fn query(
    docker: &DockerClient,
    container: &str,
    login: &PgLogin,
    sql: &str,
) -> Result<String, String> {
    let cmd = login.command(&["psql", "-X", "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql]);
    let out = docker
        .exec_collect(container, cmd, login.env())
        .await
        .map_err(|e| format!("could not query the cluster: {e}"))?;
    if out.exit_code != 0 {
        return Err(format!(
            "could not query the cluster (psql exited with status {}): {}",
            out.exit_code,
            out.stderr.trim()
        ));
    }
    Ok(out.stdout)
}

async fn dump_roles(
    docker: &DockerClient,
    container: &str,
    login: &PgLogin,
) -> Result<Bytes, String> {
    let cmd = login.command(&["pg_dumpall", "--roles-only"]);
    let failed = |e: String| format!("pg_dumpall --roles-only failed: {e}");
    let (mut stdout, handle) = docker
        .exec_read(container, cmd, login.env())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut roles = Vec::new();
    while let Some(chunk) = stdout.next().await {
        roles.extend_from_slice(&chunk.map_err(|e| failed(e.to_string()))?);
        if roles.len() > ROLES_CAP {
            return Err(failed(format!("its output is over {ROLES_CAP} bytes")));
        }
    }
    let outcome = handle.finish().await.map_err(|e| failed(e.to_string()))?;
    if outcome.exit_code != 0 {
        return Err(failed(format!(
            "exited with status {}: {}",
            outcome.exit_code,
            outcome.stderr.trim()
        )));
    }
    let roles = String::from_utf8(roles).map_err(|_| failed("its output is not UTF-8".into()))?;
    idempotent_roles(&roles).map(Bytes::from)
}

/// `CREATE ROLE x;` → a `DO` block that creates it unless it exists; every other line unchanged.
fn idempotent_roles(roles: &str) -> Result<String, String> {
    const TAG: &str = "$vardo_role$";
    let mut out = String::with_capacity(roles.len() + 1024);
    for line in roles.split_inclusive('\n') {
        let Some(rest) = line.strip_prefix("CREATE ROLE ") else {
            out.push_str(line);
            continue;
        };
        let ident = rest
            .trim_end_matches('\n')
            .strip_suffix(';')
            .filter(|i| is_identifier(i) && !i.contains(TAG))
            .ok_or_else(|| {
                format!(
                    "a role's name cannot be restored safely: {}",
                    line.trim_end()
                )
            })?;
        out.push_str(&format!(
            "DO {TAG}BEGIN CREATE ROLE {ident}; EXCEPTION WHEN duplicate_object THEN NULL; END{TAG};\n"
        ));
    }
    Ok(out)
}

/// A whole SQL identifier as Postgres quotes one: lowercase bare word, or `"…"` with `""` inside.
fn is_identifier(ident: &str) -> bool {
    if let Some(inner) = ident.strip_prefix('"').and_then(|i| i.strip_suffix('"')) {
        return !inner.is_empty() && !inner.replace("\"\"", "").contains('"');
    }
    let mut chars = ident.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
}

/// The dump's stream: header and roles, then for each database its creation and its `pg_dump`,
/// then the end marker. A `pg_dump` that fails ends the stream with its error (and no end marker).
pub fn stream(
    docker: DockerClient,
    container: String,
    login: PgLogin,
    env: Vec<String>,
    pg_dump_args: Vec<String>,
    plan: Plan,
) -> ByteStream {
    let nonce = format::nonce();
    Box::pin(async_stream::stream! {
        let mut head = format::header(&nonce);
        head.push_str(&format::marker(&nonce, &Section::Roles));
        yield Ok(Bytes::from(head));
        yield Ok(plan.roles.clone());
        for db in &plan.databases {
            let mut create = format::marker(&nonce, &Section::Create(db.name.clone()));
            create.push_str(&db.create);
            create.push_str("\\gexec\n");
            create.push_str(&psql_connect(&db.name).unwrap_or_default());
            create.push_str(&format::marker(&nonce, &Section::Database(db.name.clone())));
            yield Ok(Bytes::from(create));
            let args: Vec<&str> = pg_dump_args.iter().map(String::as_str).collect();
            let cmd = login.command_on(&db.name, &args);
            let (mut stdout, handle) = match docker.exec_read(&container, cmd, env.clone()).await {
                Ok(started) => started,
                Err(e) => {
                    yield Err(io::Error::other(format!("pg_dump of database {}: {e}", db.name)));
                    return;
                }
            };
            // The dump is only whole if pg_dump says so: its exit status ends its part, and a
            // failure becomes the stream's error, which aborts the upload.
            while let Some(chunk) = stdout.next().await {
                let failed = chunk.is_err();
                yield chunk;
                if failed {
                    return;
                }
            }
            match handle.finish().await {
                Ok(outcome) if outcome.exit_code == 0 => {}
                Ok(outcome) => {
                    yield Err(io::Error::other(format!(
                        "pg_dump of database {} exited with status {}: {}",
                        db.name,
                        outcome.exit_code,
                        outcome.stderr.trim()
                    )));
                    return;
                }
                Err(e) => {
                    yield Err(io::Error::other(format!("pg_dump of database {}: {e}", db.name)));
                    return;
                }
            }
        }
        yield Ok(Bytes::from(format::marker(&nonce, &Section::End)));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_role_becomes_idempotent_and_odd_names_stay_whole() {
        let dump = "SET x = 1;\nCREATE ROLE app;\nCREATE ROLE \"we\"\"ird $x\";\nALTER ROLE app WITH LOGIN;\n";
        let out = idempotent_roles(dump).expect("roles");
        assert!(out.contains(
            "DO $vardo_role$BEGIN CREATE ROLE app; EXCEPTION WHEN duplicate_object THEN NULL; END$vardo_role$;\n"
        ));
        assert!(out.contains("CREATE ROLE \"we\"\"ird $x\"; EXCEPTION"));
        assert!(out.starts_with("SET x = 1;\n") && out.ends_with("ALTER ROLE app WITH LOGIN;\n"));
        assert!(!out.contains("\nCREATE ROLE"));
    }

    #[test]
    fn a_role_name_that_is_not_one_identifier_fails_the_dump() {
        for bad in [
            "CREATE ROLE \"two\n",
            "CREATE ROLE a; DROP TABLE t;\n",
            "CREATE ROLE \"x\"\"$vardo_role$\";\n",
            "CREATE ROLE \"a\"b\";\n",
        ] {
            assert!(idempotent_roles(bad).is_err(), "{bad:?}");
        }
    }
}
