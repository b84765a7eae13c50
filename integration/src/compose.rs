//! The stack of compose.yaml (the engine's image, Postgres, Redis), started by the
//! `docker-compose` on this machine under a project name of its own, with the test images that
//! stand in for the registry's, and removed with its volumes when dropped.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use uuid::Uuid;

use crate::env::{repo_root, setting};

/// The tag `scripts/image` gives the image built from the binary under test.
pub const IMAGE: &str = "vardo-backup:e2e";

/// Builds [`IMAGE`] with `scripts/image` from the binary the tests run (layers cached by Docker).
pub fn build_image() {
    let out = Command::new(repo_root().join("scripts/image"))
        .current_dir(repo_root())
        .args(["--tag", IMAGE, "--binary"])
        .arg(crate::process::binary())
        .output()
        .expect("scripts/image runs");
    assert!(out.status.success(), "{}", crate::describe(&out));
}

pub struct Stack {
    pub project: String,
    env_file: PathBuf,
    /// `http://127.0.0.1:<published port>`
    pub base: String,
    pub admin_token: String,
    pub secret_key: String,
}

impl Stack {
    /// `docker-compose up -d` of compose.yaml with a fresh `.env` holding every secret it asks
    /// for; returns once the engine's port is published (not yet ready).
    pub fn up() -> Self {
        let project = format!("vardo-e2e-{}", &Uuid::new_v4().simple().to_string()[..10]);
        let dir = repo_root().join(".vardo-dev/compose").join(&project);
        std::fs::create_dir_all(&dir).expect("compose dir");
        let admin_token = format!("admin-{}", Uuid::new_v4().simple());
        let secret_key = vardo_actors::secrets::SecretBox::generate_key();
        let env = [
            ("POSTGRES_PASSWORD", Uuid::new_v4().simple().to_string()),
            ("REDIS_PASSWORD", Uuid::new_v4().simple().to_string()),
            ("VARDO_SECRET_KEY", secret_key.clone()),
            ("VARDO_ADMIN_TOKEN", admin_token.clone()),
            ("DOCKER_GID", socket_gid()),
            ("VARDO_IMAGE", IMAGE.to_owned()),
            ("VARDO_POSTGRES_IMAGE", setting("VARDO_TEST_POSTGRES_IMAGE")),
            ("VARDO_REDIS_IMAGE", setting("VARDO_TEST_REDIS_IMAGE")),
            ("VARDO_HELPER_IMAGE", setting("VARDO_HELPER_IMAGE")),
            ("VARDO_PUBLISH", "127.0.0.1:".to_owned()),
            ("ALLOW_LOCAL_BACKUPS", "true".to_owned()),
        ];
        let env_file = dir.join(".env");
        let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(&env_file, text).expect("write .env");
        crate::http::stored_secret(&admin_token);
        let mut stack = Self {
            project,
            env_file,
            base: String::new(),
            admin_token,
            secret_key,
        };
        let out = stack.compose(&["up", "-d"]);
        assert!(
            out.status.success(),
            "compose up: {}",
            crate::describe(&out)
        );
        let port = stack.compose(&["port", "vardo", "8080"]);
        let published = String::from_utf8_lossy(&port.stdout).trim().to_owned();
        assert!(
            port.status.success() && published.starts_with("127.0.0.1:"),
            "compose port: {}",
            crate::describe(&port)
        );
        stack.base = format!("http://{published}");
        stack
    }

    /// `docker-compose -f compose.yaml -p <project> --env-file <.env> <args>`
    pub fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .current_dir(repo_root())
            .arg("-f")
            .arg(repo_root().join("compose.yaml"))
            .args(["-p", &self.project, "--env-file"])
            .arg(&self.env_file)
            .args(args)
            .output()
            .expect("docker-compose runs")
    }

    /// One SQL query in the stack's own database (psql in its postgres container); the output,
    /// trimmed.
    pub fn sql(&self, query: &str) -> String {
        let out = self.compose(&[
            "exec",
            "-T",
            "postgres",
            "psql",
            "-X",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "vardo",
            "-d",
            "vardo",
            "-c",
            query,
        ]);
        assert!(out.status.success(), "psql: {}", crate::describe(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn ready(&self, limit: Duration) {
        let url = format!("{}/readyz", self.base);
        crate::eventually(limit, "the containerised engine is ready", || {
            let url = url.clone();
            async move {
                let r = reqwest::get(&url).await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
    }

    /// `docker inspect` of the service's one container: `{{.State.Status}} {{.State.ExitCode}}
    /// {{if .State.Health}}{{.State.Health.Status}}{{end}}`.
    pub fn state(&self, service: &str) -> String {
        let id = self.compose(&["ps", "-q", service]);
        let id = String::from_utf8_lossy(&id.stdout).trim().to_owned();
        assert!(!id.is_empty(), "no container for {service}");
        let out = Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                &id,
            ])
            .output()
            .expect("docker inspect runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// What Docker still holds of the project: containers, volumes and networks by its label.
    pub fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut left = Vec::new();
        for what in [
            &["ps", "-a", "-q", "--filter"][..],
            &["volume", "ls", "-q", "--filter"],
            &["network", "ls", "-q", "--filter"],
        ] {
            let out = Command::new("docker")
                .args(what)
                .arg(&label)
                .output()
                .expect("docker runs");
            left.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| format!("{} {l}", what[0])),
            );
        }
        left
    }

    /// `docker-compose down -v`: containers (the scheduler replicas' too), network and volumes of
    /// the project.
    pub fn down(&self) -> Output {
        self.compose(&[
            "--profile",
            "replicas",
            "down",
            "-v",
            "--remove-orphans",
            "--timeout",
            "30",
        ])
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let out = self.down();
        if !out.status.success() {
            eprintln!("compose down: {}", crate::describe(&out));
        }
        if let Some(dir) = self.env_file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The group of the Docker socket, which compose.yaml adds the engine's user to.
fn socket_gid() -> String {
    use std::os::unix::fs::MetadataExt as _;
    let path = setting("DOCKER_HOST");
    let path = path
        .strip_prefix("unix://")
        .unwrap_or("/var/run/docker.sock");
    std::fs::metadata(path)
        .expect("the Docker socket")
        .gid()
        .to_string()
}
