//! `docker exec` with streams: stdout as a `ByteStream` (e.g. `pg_dump`), stdin fed from a
//! `ByteStream` (e.g. `psql`), captured output capped at 64 KiB per stream, and the exit code.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::error::{status_code, DockerError};
use super::DockerClient;
use crate::stream::ByteStream;

/// At most this much of each captured stream (stdout of `exec_write`, stderr) is kept: its first
/// and last halves, so both the start of a failure and its final error line survive.
pub const OUTPUT_CAP: usize = 64 * 1024;

/// How long `finish` waits for Docker to report the exit code once the output has ended; the
/// process may outlive its output briefly (the engine records the exit asynchronously).
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit_code: i64,
    /// Captured stdout (capped); empty when stdout was handed out as a stream.
    pub stdout: String,
    /// Captured stderr (capped).
    pub stderr: String,
}

impl ExecOutcome {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// The rest of an `exec_read`: call [`ExecHandle::finish`] once its stdout stream has ended.
#[derive(Debug)]
pub struct ExecHandle {
    docker: Docker,
    container: String,
    exec_id: String,
    stderr: Arc<Mutex<CappedBuffer>>,
}

impl ExecHandle {
    /// The exit code and the captured stderr. Call it after the stdout stream ended; called earlier
    /// it waits (up to 30 s) for the process to exit, and stderr may miss what was not read yet.
    #[tracing::instrument(skip(self), fields(container = %self.container, exec = %self.exec_id))]
    pub async fn finish(self) -> Result<ExecOutcome, DockerError> {
        let exit_code = wait_exit(&self.docker, &self.container, &self.exec_id).await?;
        let stderr = lock(&self.stderr).to_string_lossy();
        Ok(ExecOutcome {
            exit_code,
            stdout: String::new(),
            stderr,
        })
    }
}

type Output =
    std::pin::Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
type Input = std::pin::Pin<Box<dyn AsyncWrite + Send>>;

impl DockerClient {
    /// `docker exec` of `cmd` with extra `env` ("K=V"; use it for secrets, it is never logged).
    /// Returns stdout as a stream, and a handle whose `finish()` gives exit code and stderr.
    #[tracing::instrument(skip(self, cmd, env), fields(program = cmd.first().map(String::as_str)))]
    pub async fn exec_read(
        &self,
        container: &str,
        cmd: Vec<String>,
        env: Vec<String>,
    ) -> Result<(ByteStream, ExecHandle), DockerError> {
        let (exec_id, output, _stdin) = self.start_exec(container, cmd, env, false).await?;
        let stderr = Arc::new(Mutex::new(CappedBuffer::new(OUTPUT_CAP)));
        let stdout = stdout_stream(output, Arc::clone(&stderr));
        let handle = ExecHandle {
            docker: self.docker.clone(),
            container: container.to_owned(),
            exec_id,
            stderr,
        };
        Ok((stdout, handle))
    }

    /// `docker exec -i`: streams `input` into the process's stdin and closes it at the end, while
    /// collecting stdout and stderr (each capped at 64 KiB); then the exit code. A process that
    /// exits without reading all its input is not an error here: its exit code tells. If `input`
    /// fails, feeding stops, the process gets EOF (it is not killed: Docker has no API for that),
    /// its output is read until it ends (at most 30 s more), and `DockerError::Input` is returned.
    #[tracing::instrument(skip(self, cmd, env, input), fields(program = cmd.first().map(String::as_str)))]
    pub async fn exec_write(
        &self,
        container: &str,
        cmd: Vec<String>,
        env: Vec<String>,
        input: ByteStream,
    ) -> Result<ExecOutcome, DockerError> {
        let (exec_id, output, stdin) = self.start_exec(container, cmd, env, true).await?;
        let mut stdout = CappedBuffer::new(OUTPUT_CAP);
        let mut stderr = CappedBuffer::new(OUTPUT_CAP);

        {
            let feed = feed_stdin(input, stdin);
            let collect = collect_output(output, &mut stdout, &mut stderr);
            tokio::pin!(feed, collect);
            let mut fed = false;
            let failed_input = loop {
                tokio::select! {
                    fed_result = &mut feed, if !fed => {
                        if let Err(e) = fed_result {
                            break Some(e);
                        }
                        fed = true;
                    }
                    collected = &mut collect => {
                        // Output ended: the process is done, fed or not.
                        collected?;
                        break None;
                    }
                }
            };
            if let Some(e) = failed_input {
                // Its stdin is closed: let the process take that end and exit (psql ending its
                // session, so that the server rolls back) before the caller hears of the failure
                // and, say, releases the volume's lock. Bounded: a process that ignores the end
                // of its input is the caller's to report.
                if tokio::time::timeout(EXIT_WAIT, &mut collect).await.is_err() {
                    tracing::warn!(
                        "the command was still running {EXIT_WAIT:?} after its input failed"
                    );
                }
                return Err(e);
            }
        }

        let exit_code = wait_exit(&self.docker, container, &exec_id).await?;
        Ok(ExecOutcome {
            exit_code,
            stdout: stdout.to_string_lossy(),
            stderr: stderr.to_string_lossy(),
        })
    }

    /// Runs `cmd` without stdin and collects stdout and stderr (capped) and the exit code.
    pub(crate) async fn exec_collect(
        &self,
        container: &str,
        cmd: Vec<String>,
        env: Vec<String>,
    ) -> Result<ExecOutcome, DockerError> {
        let (exec_id, output, _stdin) = self.start_exec(container, cmd, env, false).await?;
        let mut stdout = CappedBuffer::new(OUTPUT_CAP);
        let mut stderr = CappedBuffer::new(OUTPUT_CAP);
        collect_output(output, &mut stdout, &mut stderr).await?;
        let exit_code = wait_exit(&self.docker, container, &exec_id).await?;
        Ok(ExecOutcome {
            exit_code,
            stdout: stdout.to_string_lossy(),
            stderr: stderr.to_string_lossy(),
        })
    }

    /// Creates and starts an attached, non-TTY exec (so stdout and stderr arrive multiplexed and
    /// stay apart).
    async fn start_exec(
        &self,
        container: &str,
        cmd: Vec<String>,
        env: Vec<String>,
        with_stdin: bool,
    ) -> Result<(String, Output, Input), DockerError> {
        let options = CreateExecOptions {
            attach_stdin: Some(with_stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: (!env.is_empty()).then_some(env),
            cmd: Some(cmd),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(container, options)
            .await
            .map_err(|e| match status_code(&e) {
                Some(404) => DockerError::ContainerNotFound {
                    container: container.to_owned(),
                },
                Some(409) => DockerError::ContainerNotRunning {
                    container: container.to_owned(),
                },
                _ => DockerError::api(format!("create a command in container {container}"), e),
            })?;
        match self.docker.start_exec(&created.id, None).await {
            Ok(StartExecResults::Attached { output, input }) => Ok((created.id, output, input)),
            Ok(StartExecResults::Detached) => Err(DockerError::Exec {
                container: container.to_owned(),
                detail: "Docker started the command detached; its output is lost".to_owned(),
            }),
            Err(e) => Err(DockerError::api(
                format!("start a command in container {container}"),
                e,
            )),
        }
    }
}

/// Stdout as a `ByteStream`; stderr frames go to `stderr` as they pass by.
fn stdout_stream(output: Output, stderr: Arc<Mutex<CappedBuffer>>) -> ByteStream {
    output
        .filter_map(move |frame| {
            let item = match frame {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    (!message.is_empty()).then_some(Ok(message))
                }
                Ok(LogOutput::StdErr { message }) => {
                    lock(&stderr).push(&message);
                    None
                }
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(std::io::Error::other(DockerError::api(
                    "read the output of a command",
                    e,
                )))),
            };
            futures::future::ready(item)
        })
        .boxed()
}

/// Writes `input` into the process's stdin, then closes it (half-close: the process sees EOF).
async fn feed_stdin(mut input: ByteStream, mut stdin: Input) -> Result<(), DockerError> {
    while let Some(chunk) = input.next().await {
        let bytes: Bytes = match chunk {
            Ok(bytes) => bytes,
            Err(e) => {
                close_stdin(&mut stdin).await;
                return Err(DockerError::Input(e));
            }
        };
        if let Err(e) = stdin.write_all(&bytes).await {
            // The process closed its stdin or exited; its exit code will say whether that was
            // fine. Keep reading its output.
            tracing::debug!(error = %e, "the command stopped reading its input");
            return Ok(());
        }
    }
    close_stdin(&mut stdin).await;
    Ok(())
}

async fn close_stdin(stdin: &mut Input) {
    if let Err(e) = stdin.shutdown().await {
        tracing::debug!(error = %e, "closing the command's stdin failed (it has exited?)");
    }
}

async fn collect_output(
    mut output: Output,
    stdout: &mut CappedBuffer,
    stderr: &mut CappedBuffer,
) -> Result<(), DockerError> {
    while let Some(frame) = output.next().await {
        match frame {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                stdout.push(&message)
            }
            Ok(LogOutput::StdErr { message }) => stderr.push(&message),
            Ok(LogOutput::StdIn { .. }) => {}
            Err(e) => return Err(DockerError::api("read the output of a command", e)),
        }
    }
    Ok(())
}

/// Polls the exec until Docker reports it finished; returns its exit code.
async fn wait_exit(docker: &Docker, container: &str, exec_id: &str) -> Result<i64, DockerError> {
    let deadline = tokio::time::Instant::now() + EXIT_WAIT;
    let mut pause = Duration::from_millis(2);
    loop {
        let state = docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| DockerError::api("inspect a finished command", e))?;
        if state.running != Some(true) {
            return state.exit_code.ok_or_else(|| DockerError::Exec {
                container: container.to_owned(),
                detail: "Docker reported no exit code".to_owned(),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(DockerError::Exec {
                container: container.to_owned(),
                detail: format!(
                    "still running {} s after its output ended",
                    EXIT_WAIT.as_secs()
                ),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

fn lock(buffer: &Mutex<CappedBuffer>) -> std::sync::MutexGuard<'_, CappedBuffer> {
    // A panic while pushing bytes cannot leave the buffer inconsistent; keep using it.
    buffer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps the first and the last `cap / 2` bytes of what is pushed, and counts what it drops.
#[derive(Debug)]
pub(crate) struct CappedBuffer {
    half: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
    dropped: u64,
}

impl CappedBuffer {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            half: cap / 2,
            head: Vec::new(),
            tail: Vec::new(),
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        let room = self.half.saturating_sub(self.head.len());
        if room > 0 {
            let take = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        self.tail.extend_from_slice(bytes);
        // Trim lazily (at twice the size) so that pushing stays amortized O(n).
        if self.tail.len() > 2 * self.half.max(1) {
            self.trim_tail();
        }
    }

    fn trim_tail(&mut self) {
        let excess = self.tail.len().saturating_sub(self.half);
        if excess > 0 {
            self.tail.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    pub(crate) fn to_string_lossy(&self) -> String {
        let mut tail = self.tail.as_slice();
        let mut dropped = self.dropped;
        if tail.len() > self.half {
            dropped += (tail.len() - self.half) as u64;
            tail = &tail[tail.len() - self.half..];
        }
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if dropped > 0 {
            text.push_str(&format!("\n[… {dropped} bytes omitted …]\n"));
        }
        text.push_str(&String::from_utf8_lossy(tail));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut buffer = CappedBuffer::new(8);
        buffer.push(b"ab");
        buffer.push(b"cdef");
        buffer.push(b"gh");
        assert_eq!(buffer.to_string_lossy(), "abcdefgh");
    }

    #[test]
    fn large_output_keeps_head_and_tail() {
        let mut buffer = CappedBuffer::new(8);
        for chunk in [b"0123".as_slice(), b"456789", b"abcdefghij", b"XYZW"] {
            buffer.push(chunk);
        }
        assert_eq!(
            buffer.to_string_lossy(),
            "0123\n[… 16 bytes omitted …]\nXYZW"
        );
    }
}
