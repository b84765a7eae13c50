//! A client for the control plane's end-to-end tests: a server spawned per test with its own
//! admin token, organizations made through the API, and a scan of every response (body and
//! headers) for the secrets the suite has stored — a stored secret in any response fails the test.

use std::sync::Mutex;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::process::Server;
use crate::TestBed;

/// Every secret any test in this process has sent to the API.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Remembers a secret that must never appear in a response.
pub fn stored_secret(secret: &str) {
    let mut all = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    if !all.iter().any(|s| s == secret) {
        all.push(secret.to_owned());
    }
}

/// Every response the suite has seen, checked against every stored secret.
fn scan(what: &str, text: &str) {
    let all = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    for secret in all.iter() {
        assert!(
            !text.contains(secret.as_str()),
            "a stored secret appears in the response to {what}"
        );
    }
}

/// One response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// `Value::Null` when the body is not JSON.
    pub body: Value,
}

impl Reply {
    /// The `error.field` of an error body.
    pub fn field(&self) -> Option<&str> {
        self.body["error"]["field"].as_str()
    }

    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    pub fn id(&self) -> Uuid {
        self.body["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no id in {}", self.text))
    }

    /// Panics with the body unless the status is `status`.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }
}

/// A client with (or without) a bearer token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
        }
    }

    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self::new(&self.base, token)
    }

    /// Sends raw bytes (for malformed and oversized bodies).
    pub async fn raw(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Reply {
        let url = format!("{}{path}", self.base);
        let mut req = self.client.request(method.clone(), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let what = format!("{method} {path}");
        scan(&what, &text);
        for (name, value) in &headers {
            scan(
                &what,
                &format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())),
            );
        }
        assert!(status < 500, "{what} answered {status}: {text}");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.raw(Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.raw(Method::DELETE, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.raw(Method::POST, path, Some(body.to_string().into_bytes()))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.raw(Method::PUT, path, Some(body.to_string().into_bytes()))
            .await
    }

    /// POST without a body.
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.raw(Method::POST, path, None).await
    }
}

/// A test bed with a spawned server and its admin client.
pub struct ApiBed {
    pub bed: TestBed,
    pub server: Server,
    pub admin: Api,
    pub admin_token: String,
}

/// An organization made through the API, with a client holding its token.
pub struct Org {
    pub id: Uuid,
    pub slug: String,
    pub api: Api,
    pub token: String,
}

impl Org {
    /// `/api/v1/organizations/{id}{rest}`
    pub fn path(&self, rest: &str) -> String {
        format!("/api/v1/organizations/{}{rest}", self.id)
    }
}

impl ApiBed {
    /// A new test bed and `vardo-backup serve --role <role>` with an admin token.
    pub async fn start(role: &str) -> Self {
        Self::start_with(role, &[]).await
    }

    pub async fn start_with(role: &str, extra_env: &[(&str, &str)]) -> Self {
        let bed = TestBed::new().await;
        let admin_token = format!("admin-{}", Uuid::new_v4());
        let mut env = bed.env();
        env.push(("VARDO_ADMIN_TOKEN".into(), admin_token.clone()));
        for (k, v) in extra_env {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        let server = Server::spawn(&["--role", role], &env).expect("server starts");
        let admin = Api::new(&server.base_url, Some(&admin_token));
        stored_secret(&admin_token);
        // Ready once the schema is applied (the server migrates in the background).
        let probe = admin.clone();
        crate::eventually(
            std::time::Duration::from_secs(30),
            "the API answers",
            || {
                let probe = probe.clone();
                async move {
                    let url = format!("{}/readyz", probe.base);
                    let ok = reqwest::get(&url).await.ok()?.status().is_success();
                    let listed = probe.get("/api/v1/organizations?limit=1").await.status == 200;
                    (ok && listed).then_some(())
                }
            },
        )
        .await;
        Self {
            bed,
            server,
            admin,
            admin_token,
        }
    }

    /// Creates an organization (slug from the bed's id and `name`) and a token for it.
    pub async fn org(&self, name: &str) -> Org {
        let slug = format!("{name}-{}", self.bed.id);
        let created = self
            .admin
            .post(
                "/api/v1/organizations",
                &serde_json::json!({ "slug": slug, "name": format!("Org {name}") }),
            )
            .await
            .expect(201);
        let id = created.id();
        let token = self
            .admin
            .post_empty(&format!("/api/v1/organizations/{id}/tokens"))
            .await
            .expect(201);
        let token = token.body["token"].as_str().expect("a token").to_owned();
        stored_secret(&token);
        Org {
            id,
            slug,
            api: self.admin.with_token(Some(&token)),
            token,
        }
    }

    pub async fn cleanup(self) {
        drop(self.server);
        self.bed.cleanup().await;
    }
}

/// A job of an organization, made through the API, and one finished run of it.
pub struct BackedUp {
    pub app_id: String,
    pub app_name: String,
    pub target: Uuid,
    pub job: Uuid,
    pub rows: Vec<vardo_actors::model::Backup>,
}

impl ApiBed {
    /// Through the API: an app `{name}` with one persistent volume `files` (1 MB of random
    /// bytes in its blue Docker volume), a target of `kind` (`s3` or `local`), a job; then one run
    /// with `vardo-backup backup --job`, which must succeed.
    pub async fn backed_up(&self, org: &Org, name: &str, kind: &str) -> BackedUp {
        let app_id = format!("{name}-{}", self.bed.id);
        let app_name = format!("{name}{}", self.bed.id);
        org.api
            .put(
                &org.path(&format!("/apps/{app_id}")),
                &serde_json::json!({"name": app_name, "volumes": [{"name": "files", "persistent": true, "kind": "generic"}]}),
            )
            .await
            .expect(201);
        let volume = self.bed.track_volume(&format!("{app_name}-blue_files"));
        self.bed
            .docker
            .create_volume(&volume)
            .await
            .expect("volume");
        crate::volumes::sh(
            &self.bed.docker,
            &volume,
            "head -c 1000000 /dev/urandom > /volume/r",
        )
        .await
        .expect("populate");
        let config = match kind {
            "local" => self.bed.local_config(),
            _ => self.bed.bucket.target_json(None),
        };
        let target = org
            .api
            .post(
                &org.path("/backups/targets"),
                &serde_json::json!({"name": format!("{name}-{kind}"), "type": kind, "config": config}),
            )
            .await
            .expect(201)
            .id();
        let job = org
            .api
            .post(
                &org.path("/backups/jobs"),
                &serde_json::json!({"name": format!("{name} job"), "schedule": "0 2 * * *",
                    "targetId": target, "appIds": [app_id], "keepAll": true}),
            )
            .await
            .expect(201)
            .id();
        let (out, rows) = self.bed.run_job(job).await;
        assert!(out.status.success(), "{}", crate::describe(&out));
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].status,
            vardo_actors::model::Status::Success,
            "{}",
            rows[0].log
        );
        BackedUp {
            app_id,
            app_name,
            target,
            job,
            rows,
        }
    }
}
