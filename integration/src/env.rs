//! The test bed's connection settings, written by `scripts/services` to `.vardo-dev/services.env`.
//! A missing file or key is a test failure that says to run `scripts/services`, never a skip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The checkout's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn settings() -> &'static HashMap<String, String> {
    static SETTINGS: OnceLock<HashMap<String, String>> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let path = repo_root().join(".vardo-dev/services.env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}; start the test bed with scripts/services",
                path.display()
            )
        });
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    })
}

/// One setting of the test bed, e.g. `setting("VARDO_TEST_S3_ENDPOINT")`; panics if absent.
pub fn setting(key: &str) -> String {
    settings().get(key).cloned().unwrap_or_else(|| {
        panic!("{key} is missing from .vardo-dev/services.env; rerun scripts/services")
    })
}
