//! Helpers of the deploy events tests: the test's own streams on the shared Redis, and what the
//! database says about auto jobs and lock waits.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_redis::redis::{self, aio::MultiplexedConnection, Value};
use serde_json::{json, Value as Json};
use vardo_integration::process::Server;
use vardo_integration::{eventually, setting, TestBed};

pub const GROUP: &str = "vardo-backup";
pub const WAIT: Duration = Duration::from_secs(30);

/// The test's streams on the shared Redis.
pub struct Streams {
    conn: MultiplexedConnection,
    pub events: String,
    pub dead: String,
    pub results: String,
}

pub type Entry = (String, HashMap<String, String>);

impl Streams {
    pub async fn new(bed: &TestBed) -> Self {
        let client = redis::Client::open(setting("REDIS_URL")).expect("REDIS_URL");
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis answers (run scripts/services)");
        Self {
            conn,
            events: format!("vardo:events:{}", bed.id),
            dead: format!("vardo:events:{}:dead", bed.id),
            results: format!("vardo:backup-events:{}", bed.id),
        }
    }

    /// The engine's environment: the bed's, these streams, and `extra`.
    pub fn env(&self, bed: &TestBed, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = bed.env();
        env.push(("VARDO_EVENTS_STREAM".into(), self.events.clone()));
        env.push(("VARDO_BACKUP_EVENTS_STREAM".into(), self.results.clone()));
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env
    }

    /// `XADD` of a message with the given fields; returns its id.
    pub async fn send_fields(&self, fields: &[(&str, &str)]) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.events).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.query_async(&mut self.conn.clone()).await.expect("XADD")
    }

    pub async fn send(&self, kind: &str, payload: &Json) -> String {
        self.send_fields(&[("type", kind), ("payload", &payload.to_string())])
            .await
    }

    pub async fn range(&self, key: &str) -> Vec<Entry> {
        redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query_async(&mut self.conn.clone())
            .await
            .expect("XRANGE")
    }

    /// `(last delivered id, pending count)` of the group; None before it exists.
    pub async fn group_state(&self) -> Option<(String, i64)> {
        let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.events)
            .query_async(&mut self.conn.clone())
            .await
            .ok()?;
        let g = groups.iter().find(|g| text(g.get("name")) == GROUP)?;
        let pending = match g.get("pending") {
            Some(Value::Int(n)) => *n,
            _ => return None,
        };
        Some((text(g.get("last-delivered-id")), pending))
    }

    /// Waits until every message up to `id` was delivered and none is pending: each was
    /// acknowledged after its effect, or dead-lettered.
    pub async fn settled(&self, id: &str) {
        eventually(
            WAIT,
            &format!("messages up to {id} handled"),
            || async move {
                let (last, pending) = self.group_state().await?;
                (stream_id(&last) >= stream_id(id) && pending == 0).then_some(())
            },
        )
        .await;
    }

    /// Pending messages per consumer (none before the group exists).
    pub async fn pending_by_consumer(&self) -> Vec<(String, i64)> {
        let Ok(reply) = redis::cmd("XPENDING")
            .arg(&self.events)
            .arg(GROUP)
            .query_async::<Value>(&mut self.conn.clone())
            .await
        else {
            return Vec::new();
        };
        let Value::Array(parts) = reply else {
            return Vec::new();
        };
        match parts.get(3) {
            Some(Value::Array(consumers)) => consumers
                .iter()
                .filter_map(|c| match c {
                    Value::Array(kv) if kv.len() == 2 => {
                        Some((text(kv.first()), text(kv.get(1)).parse().ok()?))
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Stops the engines (so that none creates the stream again), then deletes the streams.
    pub async fn cleanup(self, engines: Vec<Server>) {
        drop(engines);
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(&self.events)
            .arg(&self.dead)
            .arg(&self.results)
            .query_async(&mut self.conn.clone())
            .await;
    }
}

pub fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        Some(Value::Int(n)) => n.to_string(),
        _ => String::new(),
    }
}

pub fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

pub fn deployed(slug: &str, app_id: &str, app_name: &str, volumes: Json) -> Json {
    json!({"orgSlug": slug, "orgName": "Deployed org", "appId": app_id, "appName": app_name, "volumes": volumes})
}

/// The auto jobs that cover `app_id`, with their settings, as the jobs table has them.
pub async fn auto_jobs(bed: &TestBed, app_id: &str) -> Vec<tokio_postgres::Row> {
    bed.db
        .client()
        .await
        .expect("db")
        .query(
            "SELECT j.id, j.name, j.schedule, j.timezone, j.enabled, j.target_id, j.keep_all,
                    j.keep_last, j.keep_hourly, j.keep_daily, j.keep_weekly, j.keep_monthly,
                    j.keep_yearly, j.notify_on_success, j.notify_on_failure,
                    (SELECT array_agg(app_id) FROM backup_job_app WHERE job_id = j.id) AS apps
             FROM backup_job j
             WHERE j.auto_for_app_id = $1
                OR j.id IN (SELECT job_id FROM backup_job_app WHERE app_id = $1)",
            &[&app_id],
        )
        .await
        .expect("jobs")
}

pub async fn jobs_in_org(bed: &TestBed, slug: &str) -> i64 {
    bed.db
        .client()
        .await
        .expect("db")
        .query_one(
            "SELECT count(*) FROM backup_job j JOIN organization o ON o.id = j.organization_id
             WHERE o.slug = $1",
            &[&slug],
        )
        .await
        .expect("count")
        .get(0)
}

/// Holds the organization's row locked, so that an engine handling a message for it waits in
/// the database until the returned transaction ends.
pub async fn lock_org(bed: &TestBed, slug: &str) -> tokio_postgres::Client {
    let client = bed.db.client().await.expect("db");
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .query_one(
            "SELECT id FROM organization WHERE slug = $1 FOR UPDATE",
            &[&slug],
        )
        .await
        .expect("the organization exists");
    client
}

/// Sessions of the test's database waiting for a lock.
pub async fn waiting_on_locks(bed: &TestBed) -> i64 {
    bed.db
        .client()
        .await
        .expect("db")
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}
