//! The storage key layout, pure and I/O-free: `{prefix/}{orgSlug}/{appName}/{volumeName}/{timestamp}.{ext}`
//! with a timestamp like `2024-01-15T02-00-00-000Z` (RFC 3339 UTC, dashes for the colons and the dot,
//! so the key is safe on every backend and sorts in time order).

use chrono::{DateTime, NaiveDateTime, Utc};

/// The `chrono` format of [`archive_timestamp`]; `%3f` is the milliseconds without the dot.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H-%M-%S-%3fZ";

/// `2024-01-15T02-00-00-000Z`: an RFC 3339 UTC time, millisecond precision, with dashes instead of the
/// colons and the dot.
pub fn archive_timestamp(t: DateTime<Utc>) -> String {
    t.format(TIMESTAMP_FORMAT).to_string()
}

/// The inverse of [`archive_timestamp`] (milliseconds kept); `None` if `s` is not in that shape.
pub fn parse_archive_timestamp(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, TIMESTAMP_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// `{orgSlug}/{appName}/{volumeName}/{timestamp}.{ext}` (ext like `tar.gz`, `sql.gz`, `tar.zst`).
///
/// The parts are slugs and Docker names, which hold no `/`; the key is relative: a target's prefix is
/// added by `TargetStorage::object_key`.
pub fn archive_relative_key(
    org_slug: &str,
    app_name: &str,
    volume_name: &str,
    timestamp: &str,
    ext: &str,
) -> String {
    format!("{org_slug}/{app_name}/{volume_name}/{timestamp}.{ext}")
}

/// `{prefix/}{relative}`: the prefix trimmed of slashes (an empty one is none), `relative` of leading
/// slashes, so `backups/`, `/backups` and `backups` all give `backups/{relative}`.
pub fn prefixed_key(prefix: Option<&str>, relative: &str) -> String {
    let relative = relative.trim_start_matches('/');
    match normalize_prefix(prefix) {
        Some(prefix) => format!("{prefix}/{relative}"),
        None => relative.to_owned(),
    }
}

/// A prefix without its leading and trailing slashes; `None` when nothing is left.
pub fn normalize_prefix(prefix: Option<&str>) -> Option<&str> {
    prefix
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
}

/// The folder a listing of `prefix` starts from: everything up to and including its last `/`, or the
/// root (`/`) when it has none. Keys under that folder are then kept if they start with `prefix`.
pub fn list_root(prefix: &str) -> &str {
    match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamp_matches_the_seed_example() {
        let t = Utc.with_ymd_and_hms(2024, 1, 15, 2, 0, 0).single();
        assert_eq!(
            t.map(archive_timestamp).as_deref(),
            Some("2024-01-15T02-00-00-000Z")
        );
    }

    #[test]
    fn timestamp_keeps_milliseconds_and_pads() {
        let t = Utc.timestamp_millis_opt(1_709_254_861_007).single();
        assert_eq!(
            t.map(archive_timestamp).as_deref(),
            Some("2024-03-01T01-01-01-007Z")
        );
    }

    #[test]
    fn timestamp_drops_sub_millisecond_digits() {
        let t = Utc.timestamp_opt(1_705_284_000, 123_456_789).single();
        assert_eq!(
            t.map(archive_timestamp).as_deref(),
            Some("2024-01-15T02-00-00-123Z")
        );
    }

    #[test]
    fn timestamp_round_trips_and_sorts_like_time() {
        let mut previous: Option<String> = None;
        // A spread of instants across years, months and the millisecond field.
        for i in 0..500_i64 {
            let millis = 946_684_800_000 + i * 7_919_993_173 + i % 1000;
            let t = Utc.timestamp_millis_opt(millis).single();
            let Some(t) = t else {
                panic!("{millis} is a valid instant")
            };
            let s = archive_timestamp(t);
            assert_eq!(s.len(), 24, "{s}");
            assert!(!s.contains(':') && !s.contains('.'), "{s}");
            assert_eq!(parse_archive_timestamp(&s), Some(t), "{s}");
            if let Some(p) = &previous {
                assert!(p < &s, "{p} sorts before {s}");
            }
            previous = Some(s);
        }
    }

    #[test]
    fn parse_rejects_other_shapes() {
        assert_eq!(parse_archive_timestamp("2024-01-15T02:00:00.000Z"), None);
        assert_eq!(parse_archive_timestamp("2024-01-15"), None);
        assert_eq!(parse_archive_timestamp(""), None);
    }

    #[test]
    fn relative_key_layout() {
        assert_eq!(
            archive_relative_key(
                "acme",
                "shop",
                "pgdata",
                "2024-01-15T02-00-00-000Z",
                "sql.gz"
            ),
            "acme/shop/pgdata/2024-01-15T02-00-00-000Z.sql.gz"
        );
        assert_eq!(
            archive_relative_key(
                "acme",
                "shop",
                "uploads",
                "2024-01-15T02-00-00-000Z",
                "tar.zst"
            ),
            "acme/shop/uploads/2024-01-15T02-00-00-000Z.tar.zst"
        );
    }

    #[test]
    fn prefix_is_trimmed_of_slashes() {
        let rel = "acme/shop/data/t.tar.gz";
        for p in ["backups", "/backups", "backups/", "//backups//"] {
            assert_eq!(
                prefixed_key(Some(p), rel),
                "backups/acme/shop/data/t.tar.gz",
                "{p}"
            );
        }
        assert_eq!(
            prefixed_key(Some("a/b/"), rel),
            "a/b/acme/shop/data/t.tar.gz"
        );
    }

    #[test]
    fn empty_or_absent_prefix_leaves_the_key() {
        let rel = "acme/shop/data/t.tar.gz";
        assert_eq!(prefixed_key(None, rel), rel);
        assert_eq!(prefixed_key(Some(""), rel), rel);
        assert_eq!(prefixed_key(Some("/"), rel), rel);
        assert_eq!(prefixed_key(None, "/acme/x"), "acme/x");
    }

    #[test]
    fn list_root_is_the_last_folder() {
        assert_eq!(list_root("acme/shop/"), "acme/shop/");
        assert_eq!(list_root("acme/shop/2024-"), "acme/shop/");
        assert_eq!(list_root("acme"), "/");
        assert_eq!(list_root(""), "/");
    }
}
