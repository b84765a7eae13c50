//! Unit tests of the deploy events consumer: message parsing and Redis reply reading.

use deadpool_redis::redis::Value;
use uuid::Uuid;

use super::reply::{autoclaim_reply, pending_counts, read_reply};
use super::{parse_event, DeployEvent};
use crate::model::VolumeKind;

type Fields = Vec<(String, Vec<u8>)>;

fn msg(kind: &str, payload: &str) -> Fields {
    vec![
        ("type".to_owned(), kind.as_bytes().to_vec()),
        ("payload".to_owned(), payload.as_bytes().to_vec()),
    ]
}

fn rejected(fields: &[(String, Vec<u8>)]) -> String {
    match parse_event(fields) {
        Ok(e) => panic!("accepted: {e:?}"),
        Err(why) => why,
    }
}

#[test]
fn app_deployed_reads_the_issue_shape() {
    let ev = parse_event(&msg(
        "app.deployed",
        r#"{"orgSlug":"acme","orgName":"Acme","appId":"a1","appName":"shop","volumes":[
            {"name":"data","persistent":true,"kind":"postgres"},
            {"name":"cache","persistent":false,"kind":"generic"},
            {"name":"uploads"}],"extra":"ignored"}"#,
    ))
    .expect("valid");
    let DeployEvent::AppDeployed(app) = ev else {
        panic!("not app.deployed: {ev:?}")
    };
    assert_eq!(
        (app.org_slug.as_str(), app.org_name.as_deref()),
        ("acme", Some("Acme"))
    );
    assert_eq!((app.app_id.as_str(), app.app_name.as_str()), ("a1", "shop"));
    let vols: Vec<(&str, bool, VolumeKind)> = app
        .volumes
        .iter()
        .map(|v| (v.name.as_str(), v.persistent, v.kind))
        .collect();
    assert_eq!(
        vols,
        [
            ("data", true, VolumeKind::Postgres),
            ("cache", false, VolumeKind::Generic),
            ("uploads", true, VolumeKind::Generic)
        ]
    );
}

#[test]
fn the_other_types_parse() {
    let ev = parse_event(&msg("app.deleted", r#"{"orgSlug":"acme","appId":"a1"}"#)).expect("valid");
    assert!(matches!(ev, DeployEvent::AppDeleted { ref app_id, .. } if app_id == "a1"));
    let job = Uuid::new_v4();
    let ev = parse_event(&msg(
        "backup.requested",
        &format!(r#"{{"orgSlug":"acme","jobId":"{job}","requestId":"r-1"}}"#),
    ))
    .expect("valid");
    assert!(
        matches!(ev, DeployEvent::BackupRequested { job_id: Some(j), app_id: None, ref request_id, .. } if j == job && request_id == "r-1")
    );
}

#[test]
fn malformed_messages_get_a_reason_naming_the_problem() {
    let cases: Vec<(Fields, &str)> = vec![
        (vec![("payload".into(), b"{}".to_vec())], "no `type` field"),
        (
            vec![("type".into(), b"app.deployed".to_vec())],
            "no `payload` field",
        ),
        (msg("app.deployed", "{not json"), "not valid JSON"),
        (
            msg("app.exploded", "{}"),
            "unknown event type \"app.exploded\"",
        ),
        (
            msg(
                "app.deployed",
                r#"{"orgSlug":"acme","appName":"x","volumes":[]}"#,
            ),
            "missing field `appId`",
        ),
        (
            msg(
                "app.deployed",
                r#"{"orgSlug":"acme","appId":7,"appName":"x","volumes":[]}"#,
            ),
            "invalid type: integer `7`",
        ),
        (
            msg(
                "app.deployed",
                r#"{"orgSlug":"Acme!","appId":"a","appName":"x","volumes":[]}"#,
            ),
            "orgSlug \"Acme!\"",
        ),
        (
            msg(
                "app.deployed",
                r#"{"orgSlug":"acme","appId":"a","appName":"x","volumes":[{"name":"d","kind":"mysql"}]}"#,
            ),
            "unknown variant `mysql`",
        ),
        (
            msg(
                "app.deployed",
                r#"{"orgSlug":"acme","appId":"a","appName":"x","volumes":[{"name":"d"},{"name":"d"}]}"#,
            ),
            "appears twice",
        ),
        (
            msg(
                "app.deployed",
                r#"{"orgSlug":"acme","appId":"a","appName":"../x","volumes":[]}"#,
            ),
            "appName \"../x\"",
        ),
        (
            msg("app.deleted", r#"{"orgSlug":"acme"}"#),
            "missing field `appId`",
        ),
        (
            msg("backup.requested", r#"{"orgSlug":"acme","requestId":"r"}"#),
            "neither appId nor jobId",
        ),
        (
            msg(
                "backup.requested",
                r#"{"orgSlug":"acme","jobId":"nope","requestId":"r"}"#,
            ),
            "jobId \"nope\" is not a UUID",
        ),
        (
            msg("backup.requested", r#"{"orgSlug":"acme","appId":"a"}"#),
            "missing field `requestId`",
        ),
        (msg("app.deleted", "[]"), "invalid payload"),
    ];
    for (fields, expected) in cases {
        let why = rejected(&fields);
        assert!(
            why.contains(expected),
            "{why:?} should contain {expected:?}"
        );
    }
    let not_utf8 = vec![
        ("type".to_owned(), b"app.deleted".to_vec()),
        ("payload".to_owned(), vec![0xff, 0xfe]),
    ];
    assert!(rejected(&not_utf8).contains("not UTF-8"));
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn entry(id: &str, kv: &[&str]) -> Value {
    Value::Array(vec![
        bulk(id),
        Value::Array(kv.iter().map(|s| bulk(s)).collect()),
    ])
}

#[test]
fn stream_replies_are_read_in_both_protocols() {
    assert_eq!(read_reply(&Value::Nil), Some(Vec::new()));
    let resp2 = Value::Array(vec![Value::Array(vec![
        bulk("vardo:events"),
        Value::Array(vec![
            entry("1-0", &["type", "t", "payload", "{}"]),
            entry("2-0", &["type", "u"]),
        ]),
    ])]);
    let read = read_reply(&resp2).expect("readable");
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].id, "1-0");
    assert_eq!(read[0].fields[1], ("payload".to_owned(), b"{}".to_vec()));
    let resp3 = Value::Map(vec![(
        bulk("vardo:events"),
        Value::Array(vec![entry("3-0", &["type", "t"])]),
    )]);
    assert_eq!(read_reply(&resp3).expect("readable")[0].id, "3-0");
    assert_eq!(read_reply(&Value::Int(3)), None);
}

#[test]
fn autoclaim_skips_deleted_entries_and_pending_counts_are_read() {
    let reply = Value::Array(vec![
        bulk("0-0"),
        Value::Array(vec![
            entry("5-0", &["type", "t"]),
            Value::Array(vec![bulk("6-0"), Value::Nil]),
            Value::Nil,
        ]),
        Value::Array(vec![bulk("7-0")]),
    ]);
    let (cursor, claimed) = autoclaim_reply(&reply).expect("readable");
    assert_eq!(cursor, "0-0");
    assert_eq!(
        claimed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["5-0"]
    );
    let pending = Value::Array(vec![Value::Array(vec![
        bulk("5-0"),
        bulk("me"),
        Value::Int(1200),
        Value::Int(3),
    ])]);
    assert_eq!(
        pending_counts(&pending).expect("readable").get("5-0"),
        Some(&3)
    );
}

#[test]
fn the_pipeline_can_neither_take_the_system_slug_nor_name_the_engine_kind() {
    let why = rejected(&msg(
        "app.deployed",
        r#"{"orgSlug":"vardo-system","appId":"a1","appName":"shop","volumes":[]}"#,
    ));
    assert!(why.contains("reserved"), "{why}");
    let why = rejected(&msg(
        "app.deployed",
        r#"{"orgSlug":"acme","appId":"a1","appName":"shop","volumes":[{"name":"db","kind":"engine"}]}"#,
    ));
    assert!(why.contains("invalid payload"), "{why}");
}

#[test]
fn the_pipeline_cannot_register_the_engines_app() {
    let why = rejected(&msg(
        "app.deployed",
        r#"{"orgSlug":"acme","appId":"vardo-engine","appName":"shop","volumes":[]}"#,
    ));
    assert!(why.contains("reserved"), "{why}");
}
