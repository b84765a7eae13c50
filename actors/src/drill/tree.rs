//! A tree's listing read from a tar stream — names, types, sizes, modes, owners, link targets —
//! and the differences between two listings: what a file drill compares between the archive and
//! the scratch volume it was restored into.

use std::collections::BTreeMap;
use std::io::Read;

use futures::TryStreamExt as _;

use crate::stream::ByteStream;

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `file`, `dir`, `symlink`, `fifo`, `char`, `block`.
    pub kind: &'static str,
    /// Regular files only (a hard link's size is its target's).
    pub size: Option<u64>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub link: Option<Vec<u8>>,
}

/// A tree by path relative to its root (`a/b`, no `./`, no trailing `/`); the root is left out.
pub type Tree = BTreeMap<Vec<u8>, Entry>;

/// Lists a tar stream (on a blocking thread).
pub async fn list(tar: ByteStream) -> std::io::Result<Tree> {
    let reader = tokio_util::io::StreamReader::new(tar.map_err(std::io::Error::other));
    let reader = tokio_util::io::SyncIoBridge::new(reader);
    tokio::task::spawn_blocking(move || list_sync(reader))
        .await
        .map_err(std::io::Error::other)?
}

fn list_sync(reader: impl Read) -> std::io::Result<Tree> {
    let mut archive = tar::Archive::new(reader);
    let mut tree = Tree::new();
    // Hard links take the size of what they link to, once it is known.
    let mut hard: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let header = entry.header();
        let path = normalize(&entry.path_bytes());
        if path.is_empty() {
            continue;
        }
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let (kind, size) = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => ("file", Some(header.size()?)),
            tar::EntryType::Link => {
                if let Some(target) = &link {
                    hard.push((path.clone(), normalize(target)));
                }
                ("file", None)
            }
            tar::EntryType::Directory => ("dir", None),
            tar::EntryType::Symlink => ("symlink", None),
            tar::EntryType::Fifo => ("fifo", None),
            tar::EntryType::Char => ("char", None),
            tar::EntryType::Block => ("block", None),
            _ => continue,
        };
        let entry = Entry {
            kind,
            size,
            mode: header.mode()? & 0o7777,
            uid: header.uid()?,
            gid: header.gid()?,
            link: if kind == "symlink" { link } else { None },
        };
        tree.insert(path, entry);
    }
    for (path, target) in hard {
        let size = tree.get(&target).and_then(|t| t.size);
        if let Some(entry) = tree.get_mut(&path) {
            entry.size = size;
        }
    }
    Ok(tree)
}

fn normalize(path: &[u8]) -> Vec<u8> {
    let mut p = path;
    while let Some(rest) = p.strip_prefix(b"./") {
        p = rest;
    }
    if p == b"." {
        return Vec::new();
    }
    p.strip_suffix(b"/").unwrap_or(p).to_vec()
}

/// The differences between the archive's tree and the restored one, at most `limit` of them
/// described (and how many there are).
pub fn compare(archive: &Tree, restored: &Tree, limit: usize) -> (usize, Vec<String>) {
    let mut found = Vec::new();
    let mut count = 0;
    let mut note = |line: String| {
        count += 1;
        if found.len() < limit {
            found.push(line);
        }
    };
    for (path, want) in archive {
        let name = String::from_utf8_lossy(path);
        match restored.get(path) {
            None => note(format!("{name}: missing")),
            Some(got) if got != want => note(format!(
                "{name}: {} in the restore, {} in the archive",
                describe(got),
                describe(want)
            )),
            Some(_) => {}
        }
    }
    for path in restored.keys().filter(|p| !archive.contains_key(*p)) {
        note(format!(
            "{}: not in the archive",
            String::from_utf8_lossy(path)
        ));
    }
    (count, found)
}

fn describe(e: &Entry) -> String {
    let size = e.size.map(|s| format!(" {s} bytes")).unwrap_or_default();
    let link = e
        .link
        .as_ref()
        .map(|l| format!(" -> {}", String::from_utf8_lossy(l)))
        .unwrap_or_default();
    format!(
        "{}{size} mode {:o} owner {}:{}{link}",
        e.kind, e.mode, e.uid, e.gid
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, name, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn the_same_tree_under_other_prefixes_has_no_differences() {
        let a = list_sync(&tar_of(&[("./x/a", b"12", 0o644), ("./b", b"", 0o600)])[..]).expect("a");
        let b = list_sync(&tar_of(&[("x/a", b"12", 0o644), ("b", b"", 0o600)])[..]).expect("b");
        assert_eq!(compare(&a, &b, 10), (0, vec![]));
    }

    #[test]
    fn sizes_modes_and_missing_or_extra_entries_are_differences() {
        let a =
            list_sync(&tar_of(&[("a", b"12", 0o644), ("b", b"", 0o600), ("c", b"", 0o600)])[..])
                .expect("a");
        let b = list_sync(&tar_of(&[("a", b"1", 0o644), ("b", b"", 0o640), ("d", b"", 0o600)])[..])
            .expect("b");
        let (count, found) = compare(&a, &b, 2);
        assert_eq!(count, 4);
        assert_eq!(found.len(), 2);
        assert!(found[0].starts_with("a: file 1 bytes"), "{found:?}");
    }
}
