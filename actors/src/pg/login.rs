//! Logging in to the database of a container made from a Postgres image, and the sessions the
//! engine starts there (`pg_dump`, `psql`), ended by name when a run gives up.

use crate::docker::{ContainerRef, DockerClient};

/// A `psql` or `pg_dump` session the engine started in a database container, by its
/// `application_name`.
pub struct PgSession {
    pub container: String,
    pub login: PgLogin,
    pub name: String,
}

impl PgSession {
    /// Ends the session on the server (`pg_terminate_backend`): Docker cannot kill an exec'd
    /// process, and one blocked on a lock never notices that nobody reads its output any more.
    /// Its open transaction, if any, is rolled back. Failures are logged: the caller already
    /// reports another error.
    pub async fn end(&self, docker: &DockerClient) {
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = '{}' AND pid <> pg_backend_pid()",
            self.name.replace('\'', "''")
        );
        let cmd = self.login.command(&["psql", "-X", "-tA", "-c", &sql]);
        match docker
            .exec_collect(&self.container, cmd, self.login.env())
            .await
        {
            Ok(out) if out.exit_code == 0 => {
                tracing::info!(session = %self.name, ended = out.stdout.trim(), "ended the database session of a stopped run");
            }
            Ok(out) => {
                tracing::warn!(session = %self.name, stderr = out.stderr.trim(), "could not end the database session of a stopped run");
            }
            Err(e) => {
                tracing::warn!(session = %self.name, error = %e, "could not end the database session of a stopped run");
            }
        }
    }
}

/// How to log in to the database of a container made from a Postgres image: the user and database
/// of its `POSTGRES_USER` / `POSTGRES_DB` (default `postgres`), its `POSTGRES_PASSWORD` if any.
pub struct PgLogin {
    pub user: String,
    pub database: String,
    password: Option<String>,
}

impl PgLogin {
    pub fn of(container: &ContainerRef) -> Self {
        let user = container
            .env
            .get("POSTGRES_USER")
            .cloned()
            .unwrap_or_else(|| "postgres".to_owned());
        Self {
            database: container
                .env
                .get("POSTGRES_DB")
                .cloned()
                .unwrap_or_else(|| user.clone()),
            password: container.env.get("POSTGRES_PASSWORD").cloned(),
            user,
        }
    }

    /// `program args… --no-password -U user -d database` (the login database).
    pub fn command(&self, program_and_args: &[&str]) -> Vec<String> {
        self.command_on(&self.database, program_and_args)
    }

    /// `program args… --no-password -U user -d dbname='database'`: any name, as a connection
    /// string (a bare `-d` would read a name holding `=` as one).
    pub fn command_on(&self, database: &str, program_and_args: &[&str]) -> Vec<String> {
        let mut cmd: Vec<String> = program_and_args.iter().map(|s| (*s).to_owned()).collect();
        cmd.extend(["--no-password", "-U", &self.user, "-d"].map(str::to_owned));
        cmd.push(conninfo_dbname(database));
        cmd
    }

    /// The exec's environment: the password, when the container has one.
    pub fn env(&self) -> Vec<String> {
        self.password
            .iter()
            .map(|pw| format!("PGPASSWORD={pw}"))
            .collect()
    }
}

/// `dbname='…'` for libpq, quoted as its connection strings are (`\\` and `\'` escaped).
pub fn conninfo_dbname(database: &str) -> String {
    format!(
        "dbname='{}'",
        database.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// psql's `\connect` to `database`, for a dump's by-hand replay (as `pg_dumpall` writes it: the
/// connection string in a double-quoted argument, `"` doubled). None for a name holding a line
/// break, which no psql meta-command can carry.
pub fn psql_connect(database: &str) -> Option<String> {
    if database.contains(['\n', '\r']) {
        return None;
    }
    Some(format!(
        "\\connect -reuse-previous=on \"{}\"\n",
        conninfo_dbname(database).replace('"', "\"\"")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_for_libpq_and_psql() {
        assert_eq!(conninfo_dbname("a"), "dbname='a'");
        assert_eq!(conninfo_dbname(r"it's \ =x"), r"dbname='it\'s \\ =x'");
        assert_eq!(
            psql_connect("say \"hi\"").as_deref(),
            Some("\\connect -reuse-previous=on \"dbname='say \"\"hi\"\"'\"\n")
        );
        assert_eq!(psql_connect("two\nlines"), None);
    }
}
