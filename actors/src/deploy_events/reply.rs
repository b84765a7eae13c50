//! Redis stream replies read by hand (the redis crate's `streams` feature is not enabled in this
//! workspace): `XREADGROUP`, `XAUTOCLAIM`, `XPENDING` and `XINFO CONSUMERS`, in RESP2 or RESP3.

use std::collections::HashMap;

use deadpool_redis::redis::Value;

/// One message as read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub fields: Vec<(String, Vec<u8>)>,
}

pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// A flat `[k1, v1, k2, v2, …]` array or a map, as name → value.
pub fn pairs(v: &Value) -> HashMap<String, &Value> {
    match v {
        Value::Array(items) => items
            .chunks_exact(2)
            .filter_map(|kv| Some((text(&kv[0])?, &kv[1])))
            .collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v)))
            .collect(),
        _ => HashMap::new(),
    }
}

/// `[[id, [field, value, …]], …]`; entries deleted from the stream (nil) are left out.
pub fn entries(v: &Value) -> Option<Vec<Entry>> {
    let Value::Array(items) = v else {
        return matches!(v, Value::Nil).then(Vec::new);
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else { continue };
        let [id, fields] = parts.as_slice() else {
            continue;
        };
        let fields = match fields {
            Value::Array(f) => f
                .chunks_exact(2)
                .filter_map(|kv| {
                    let value = match &kv[1] {
                        Value::BulkString(b) => b.clone(),
                        other => text(other)?.into_bytes(),
                    };
                    Some((text(&kv[0])?, value))
                })
                .collect(),
            Value::Nil => continue,
            _ => return None,
        };
        out.push(Entry {
            id: text(id)?,
            fields,
        });
    }
    Some(out)
}

/// `XREADGROUP` of one stream: nil (timeout), `[[key, entries]]` or `{key: entries}`.
pub fn read_reply(v: &Value) -> Option<Vec<Entry>> {
    match v {
        Value::Nil => Some(Vec::new()),
        Value::Array(streams) => {
            let mut out = Vec::new();
            for s in streams {
                let Value::Array(kv) = s else { return None };
                out.extend(entries(kv.get(1)?)?);
            }
            Some(out)
        }
        Value::Map(streams) => {
            let mut out = Vec::new();
            for (_, e) in streams {
                out.extend(entries(e)?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// `XAUTOCLAIM`: `[next-cursor, entries, deleted-ids]`.
pub fn autoclaim_reply(v: &Value) -> Option<(String, Vec<Entry>)> {
    let Value::Array(parts) = v else { return None };
    Some((text(parts.first()?)?, entries(parts.get(1)?)?))
}

/// `XPENDING … consumer`: `[[id, consumer, idle-ms, deliveries], …]` as id → deliveries.
pub fn pending_counts(v: &Value) -> Option<HashMap<String, u64>> {
    let Value::Array(rows) = v else { return None };
    rows.iter()
        .map(|row| {
            let Value::Array(cols) = row else { return None };
            let n = u64::try_from(int(cols.get(3)?)?).ok()?;
            Some((text(cols.first()?)?, n))
        })
        .collect()
}
