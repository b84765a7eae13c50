//! Helpers of the notification tests: HTTP receivers with scripted answers, the engine's
//! environment and jobs, the outbox and its attempts, and the SMTP sink's Maildir.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;
use vardo_actors::model::{Backup, ChannelKind, Compression, Organization, TargetKind, VolumeKind};
use vardo_integration::process;
use vardo_integration::{eventually, setting, volumes, TestBed};

// ---------------------------------------------------------------------------------------------
// An HTTP receiver: answers from a script (then 200), records every request.

#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// Reads the request and never answers.
    Hold,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub answered: Option<u16>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    requests: Vec<Received>,
}

pub struct Receiver {
    base: String,
    state: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(replies: &[Reply]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a receiver");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let state = Arc::new(Mutex::new(Script {
            replies: replies.iter().copied().collect(),
            requests: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| answer(Arc::clone(&shared), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { base, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn requests(&self, path: &str) -> Vec<Received> {
        let state = self.state.lock().expect("not poisoned");
        state
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    state: Arc<Mutex<Script>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let reply = {
        let mut s = state.lock().expect("not poisoned");
        let reply = s.replies.pop_front().unwrap_or(Reply::Status(200));
        let answered = match reply {
            Reply::Status(code) => Some(code),
            Reply::Hold => None,
        };
        s.requests.push(Received {
            path,
            headers,
            body,
            answered,
        });
        reply
    };
    match reply {
        Reply::Status(code) => Ok(Response::builder()
            .status(code)
            .body(Full::new(Bytes::from_static(b"ok")))
            .expect("a response")),
        Reply::Hold => std::future::pending().await,
    }
}

/// A loopback URL where nothing listens.
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/gone")
}

// ---------------------------------------------------------------------------------------------
// The engine, its jobs, and what it recorded.

/// The test bed's environment plus SMTP, loopback receivers allowed, and a fast retry schedule
/// (3 attempts, 200 ms then 600 ms apart).
pub fn engine_env(bed: &TestBed) -> Vec<(String, String)> {
    let mut env = bed.env();
    for (k, v) in [
        ("VARDO_SMTP_URL", setting("VARDO_TEST_SMTP_URL")),
        (
            "VARDO_SMTP_FROM",
            "Vardo Backups <vardo@example.com>".to_owned(),
        ),
        ("VARDO_ALLOW_PRIVATE_WEBHOOKS", "true".to_owned()),
        ("VARDO_NOTIFY_RETRY_BASE_MS", "200".to_owned()),
        ("VARDO_NOTIFY_MAX_ATTEMPTS", "3".to_owned()),
    ] {
        env.push((k.to_owned(), v));
    }
    env
}

/// `vardo-backup backup --job` (off the async threads, so the receivers keep answering).
pub async fn run_job(
    bed: &TestBed,
    env: &[(String, String)],
    job: Uuid,
) -> (std::process::Output, Vec<Backup>) {
    let (env, job) = (env.to_vec(), job.to_string());
    let out = tokio::task::spawn_blocking(move || process::run(&["backup", "--job", &job], &env))
        .await
        .expect("the command ran");
    let mut rows = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Ok(id) = Uuid::parse_str(line.split_whitespace().next().unwrap_or_default()) {
            rows.push(bed.store.backup(id).await.expect("printed row"));
        }
    }
    (out, rows)
}

pub struct Setup {
    pub org: Organization,
    pub job: Uuid,
    pub job_name: String,
}

/// A job over one app whose `volumes` exist with a small file each, and whose `missing` volumes
/// do not (so they fail with "volume not found"), to a local target. Its schedule never fires
/// during a test, so a spawned server does not run it.
pub async fn setup(bed: &TestBed, present: &[&str], missing: &[&str]) -> Setup {
    let org = bed.organization().await;
    let all: Vec<(&str, VolumeKind)> = present
        .iter()
        .chain(missing)
        .map(|v| (*v, VolumeKind::Generic))
        .collect();
    let app = bed.app(&org, "notes", &all).await;
    for v in present {
        let volume = bed.blue(&app, v);
        bed.docker.create_volume(&volume).await.expect("volume");
        volumes::sh(
            &bed.docker,
            &volume,
            "head -c 70000 /dev/urandom > /volume/blob",
        )
        .await
        .expect("populate");
    }
    let target = bed
        .target(Some(org.id), TargetKind::Local, bed.local_config())
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;
    let db = bed.db.client().await.expect("db");
    db.execute(
        "UPDATE backup_job SET schedule = '0 3 29 2 *' WHERE id = $1",
        &[&job],
    )
    .await
    .expect("schedule");
    let job_name = bed.store.job(job).await.expect("job").name;
    Setup { org, job, job_name }
}

pub async fn channel(bed: &TestBed, org: &Organization, kind: ChannelKind, config: Value) -> Uuid {
    bed.store
        .insert_channel(org.id, kind, config)
        .await
        .expect("channel")
}

/// (attempt, outcome, status code) of every attempt at one notice.
pub async fn attempts(bed: &TestBed, outbox_id: Uuid) -> Vec<(i32, String, Option<i32>)> {
    let db = bed.db.client().await.expect("db");
    db.query(
        "SELECT attempt, outcome, status_code FROM notification_attempt
         WHERE outbox_id = $1 ORDER BY attempt",
        &[&outbox_id],
    )
    .await
    .expect("attempts")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// Waits until no notice of the run is pending any more.
pub async fn settled(bed: &TestBed, run_id: Uuid) -> Vec<vardo_actors::store::OutboxRow> {
    eventually(
        Duration::from_secs(20),
        "the run's notices to settle",
        || async {
            let rows = bed.store.run_notices(run_id).await.expect("outbox");
            rows.iter().all(|r| r.status != "pending").then_some(rows)
        },
    )
    .await
}

pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

// ---------------------------------------------------------------------------------------------
// The SMTP sink's Maildir.

pub struct Mail {
    pub subject: String,
    pub to: String,
    pub text: String,
    pub html: String,
}

/// Every message in the sink addressed to `recipient` (unique per test).
pub fn mails_to(recipient: &str) -> Vec<Mail> {
    let root = std::path::PathBuf::from(setting("VARDO_TEST_MAILDIR"));
    let mut found = Vec::new();
    for dir in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(raw) = std::fs::read(entry.path()) else {
                continue;
            };
            let Ok(mail) = mailparse::parse_mail(&raw) else {
                continue;
            };
            let header = |name: &str| {
                mailparse::MailHeaderMap::get_first_value(mail.headers.as_slice(), name)
                    .unwrap_or_default()
            };
            let to = header("To");
            if !to.contains(recipient) {
                continue;
            }
            let part = |mime: &str| {
                mail.subparts
                    .iter()
                    .find(|p| p.ctype.mimetype == mime)
                    .map(|p| p.get_body().expect("a decodable part"))
                    .unwrap_or_default()
            };
            found.push(Mail {
                subject: header("Subject"),
                to,
                text: part("text/plain"),
                html: part("text/html"),
            });
        }
    }
    found
}

pub async fn one_mail_to(recipient: &str) -> Mail {
    let mut mails = eventually(Duration::from_secs(10), "the email in the sink", || async {
        let mails = mails_to(recipient);
        (!mails.is_empty()).then_some(mails)
    })
    .await;
    assert_eq!(mails.len(), 1, "exactly one email to {recipient}");
    mails.remove(0)
}
