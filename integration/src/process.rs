//! The real `vardo-backup` binary, run as a command or spawned as a server.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::io::{BufRead, BufReader};

/// `target/<profile>/vardo-backup`, next to the test executable's `deps/` folder.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let bin = dir.join("vardo-backup");
    assert!(
        bin.exists(),
        "{} is missing: build it first (scripts/test does: cargo build --bin vardo-backup)",
        bin.display()
    );
    bin
}

/// Runs the binary with exactly `env` (plus PATH and HOME) and waits.
pub fn run(args: &[&str], env: &[(String, String)]) -> Output {
    command(args, env)
        .output()
        .expect("the vardo-backup binary runs")
}

/// Starts the binary with exactly `env` (plus PATH and HOME), output discarded, without waiting:
/// for tests that kill it at a moment they choose.
pub fn start(args: &[&str], env: &[(String, String)]) -> Child {
    command(args, env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the vardo-backup binary starts")
}

fn command(args: &[&str], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env_clear()
        .envs(
            ["PATH", "HOME"]
                .iter()
                .filter_map(|k| Some((*k, std::env::var(k).ok()?))),
        )
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(crate::repo_root().join("integration"));
    cmd
}

/// A running `vardo-backup serve`; killed when dropped.
pub struct Server {
    child: Child,
    pub base_url: String,
}

impl Server {
    /// Starts `serve --listen 127.0.0.1:0 <extra>` and waits for its `listening on` line.
    pub fn spawn(extra: &[&str], env: &[(String, String)]) -> anyhow::Result<Self> {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = command(&args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(200)) {
                return Ok(Self {
                    child,
                    base_url: format!("http://{addr}"),
                });
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("vardo-backup serve exited with {status} before listening");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "vardo-backup serve did not listen within 60 s"
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`) with `kill -<signal> <pid>`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Polls until the process has exited, at most `limit`; its status, or None if still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
