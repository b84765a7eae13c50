//! The backup of a Postgres volume: a dump of its whole cluster, as `pg_dumpall` would cover it —
//! the roles (`pg_dumpall --roles-only`) and every database that is not a template (`pg_dump
//! --clean --if-exists` each) — in the layout of [`super::format`], streamed.
//!
//! Each `CREATE ROLE x;` line of a role the cluster has is made idempotent (a `DO` block that
//! ignores `duplicate_object`), so that the roles replay in one transaction on a server where some
//! of them exist, as `ALTER ROLE` then sets their attributes. Only lines equal to the server's own
//! `format('CREATE ROLE %I;', rolname)` are rewritten: a role setting whose value holds a line
//! break and "CREATE ROLE" is left as it is. The roles are listed again after the last database:
//! a backup during which a role was created, dropped or renamed fails (its databases may use a
//! role its roles section lacks). Tablespaces are not in the dump (their folders belong to the host): the
//! log names any the cluster has.

use std::io;

use bytes::{Bytes, BytesMut};
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
    /// The cluster's roles (their `CREATE ROLE`s) when the plan was made.
    role_names: Vec<String>,
    /// Roles whose `CREATE ROLE` could not be made idempotent (a line break in the name).
    odd_roles: Vec<String>,
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
        if !self.odd_roles.is_empty() {
            text.push_str(&format!(
                "; warning: the CREATE ROLE of {} is kept as pg_dumpall wrote it (a line break \
                 in the name): a restore onto a server that has that role fails",
                self.odd_roles.join(", ")
            ));
        }
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
    let role_names = role_names(docker, container, login).await?;
    let known = role_names.iter().cloned().collect();
    let raw = dump_roles(docker, container, login).await?;
    let (roles, odd_roles) = idempotent_roles(&raw, &known);
    Ok(Plan {
        databases,
        tablespaces,
        roles: Bytes::from(roles),
        role_names,
        odd_roles,
    })
}

/// The server's own `CREATE ROLE <ident>;` for each role `pg_dumpall` dumps, sorted.
async fn role_names(
    docker: &DockerClient,
    container: &str,
    login: &PgLogin,
) -> Result<Vec<String>, String> {
    let creates = "SELECT encode(convert_to(format('CREATE ROLE %I;', rolname), 'UTF8'), 'hex') \
        FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1";
    let mut names = Vec::new();
    for line in query(docker, container, login, creates).await?.lines() {
        let create = hex::decode(line)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| format!("the list of roles could not be read: {line}"))?;
        names.push(create);
    }
    Ok(names)
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
) -> Result<String, String> {
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
    String::from_utf8(roles).map_err(|_| failed("its output is not UTF-8".into()))
}

const TAG: &str = "$vardo_role$";

/// Each line equal to one of `known` (the server's `CREATE ROLE <ident>;` of its roles) becomes a
/// `DO` block that creates the role unless it exists; every other line is unchanged. Answers the
/// result and the roles whose statement cannot be rewritten (a line break in the name, or the tag).
fn idempotent_roles(
    roles: &str,
    known: &std::collections::HashSet<String>,
) -> (String, Vec<String>) {
    let mut out = String::with_capacity(roles.len() + 1024);
    for line in roles.split_inclusive('\n') {
        let statement = line.trim_end_matches('\n');
        match statement
            .strip_prefix("CREATE ROLE ")
            .and_then(|r| r.strip_suffix(';'))
        {
            Some(ident) if known.contains(statement) && !ident.contains(TAG) => {
                out.push_str(&format!(
                    "DO {TAG}BEGIN CREATE ROLE {ident}; EXCEPTION WHEN duplicate_object THEN NULL; END{TAG};\n"
                ));
            }
            _ => out.push_str(line),
        }
    }
    let mut odd: Vec<String> = known
        .iter()
        .filter(|c| c.contains('\n') || c.contains(TAG))
        .map(|c| {
            c.trim_start_matches("CREATE ROLE ")
                .trim_end_matches(';')
                .to_owned()
        })
        .collect();
    odd.sort();
    (out, odd)
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
        // The engine's own bytes (header, roles, markers) go out with pg_dump's next output, so
        // that a pg_dump that never answers is the stage that shows no progress (not the
        // compressor holding a few hundred bytes it has not compressed yet).
        let mut pending = BytesMut::new();
        pending.extend_from_slice(format::header(&nonce).as_bytes());
        pending.extend_from_slice(format::marker(&nonce, &Section::Roles).as_bytes());
        pending.extend_from_slice(&plan.roles);
        for db in &plan.databases {
            let mut create = format::marker(&nonce, &Section::Create(db.name.clone()));
            create.push_str(&db.create);
            create.push_str("\\gexec\n");
            create.push_str(&psql_connect(&db.name).unwrap_or_default());
            create.push_str(&format::marker(&nonce, &Section::Database(db.name.clone())));
            pending.extend_from_slice(create.as_bytes());
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
                match chunk {
                    Ok(chunk) if pending.is_empty() => yield Ok(chunk),
                    Ok(chunk) => {
                        pending.extend_from_slice(&chunk);
                        yield Ok(pending.split().freeze());
                    }
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
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
        // A role made (or renamed) while the databases were dumped would be missing from the
        // roles section, and the databases' replay could fail on it: such a backup is not whole.
        match role_names(&docker, &container, &login).await {
            Ok(now) if now == plan.role_names => {}
            Ok(_) => {
                yield Err(io::Error::other(
                    "a role of the cluster was created, dropped or renamed while its databases \
                     were dumped; this backup is not whole (the next run takes a new one)",
                ));
                return;
            }
            Err(e) => {
                yield Err(io::Error::other(e));
                return;
            }
        }
        pending.extend_from_slice(format::marker(&nonce, &Section::End).as_bytes());
        yield Ok(pending.freeze());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(lines: &[&str]) -> std::collections::HashSet<String> {
        lines.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn create_role_of_known_roles_becomes_idempotent_and_odd_names_stay_whole() {
        let dump = "SET x = 1;\nCREATE ROLE app;\nCREATE ROLE \"we\"\"ird $x\";\nALTER ROLE app WITH LOGIN;\n";
        let (out, odd) = idempotent_roles(
            dump,
            &known(&["CREATE ROLE app;", "CREATE ROLE \"we\"\"ird $x\";"]),
        );
        assert!(out.contains(
            "DO $vardo_role$BEGIN CREATE ROLE app; EXCEPTION WHEN duplicate_object THEN NULL; END$vardo_role$;\n"
        ));
        assert!(out.contains("CREATE ROLE \"we\"\"ird $x\"; EXCEPTION"));
        assert!(out.starts_with("SET x = 1;\n") && out.ends_with("ALTER ROLE app WITH LOGIN;\n"));
        assert!(!out.contains("\nCREATE ROLE"));
        assert!(odd.is_empty());
    }

    #[test]
    fn lines_that_are_not_a_known_roles_create_stay_as_they_are() {
        // A role setting whose value holds line breaks that read like CREATE ROLE statements.
        let dump = "ALTER ROLE app SET search_path = E'x\nCREATE ROLE a b;\nCREATE ROLE app2;';\nCREATE ROLE \"two\nlines\";\n";
        let (out, odd) = idempotent_roles(
            dump,
            &known(&[
                "CREATE ROLE \"two\nlines\";",
                "CREATE ROLE \"x$vardo_role$\";",
            ]),
        );
        assert_eq!(out, dump);
        assert_eq!(
            odd,
            vec!["\"two\nlines\"".to_owned(), "\"x$vardo_role$\"".to_owned()]
        );
    }
}
