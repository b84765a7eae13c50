//! File trees for tests that touch user data: generated hostile trees (names with glob characters,
//! leading dashes, newlines, quotes, shell syntax, backslashes, non-UTF-8 bytes, 255-byte names;
//! symlinks, hard links, empty folders, 0-byte files), written into a Docker volume through
//! Docker's archive API, and read back exactly — every name as raw bytes — from the volume's tar.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;

use futures::StreamExt as _;
use proptest::prelude::*;
use sha2::{Digest as _, Sha256};
use vardo_actors::docker::DockerClient;

/// One entry of a tree, by its path relative to the volume root (components joined by `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File {
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// A hard link to an earlier file of the tree.
    HardLink {
        to: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

/// A tree: path → entry. Every path's parents are `Dir` entries of the tree.
pub type Tree = BTreeMap<Vec<u8>, Entry>;

/// Names that have broken shell-based file handling, and then some.
const HOSTILE: &[&[u8]] = &[
    b"*",
    b"?",
    b"a?",
    b"ab",
    b"[ab]",
    b"-n",
    b"-e",
    b"--",
    b"-rf",
    b"-",
    b" ",
    b"a b",
    b"new\nline",
    b"\n",
    b"back\\slash",
    b"'single'",
    b"\"double\"",
    b"$(touch pwned)",
    b"`id`",
    b";rm",
    b"&&",
    b"|",
    b".hidden",
    b"..x",
    b"...",
    b"~",
    b"tab\there",
    b"\xc3\xa9t\xc3\xa9",
    b"\xff\xfe",
    b"a\x80b",
    b"*.txt",
    b"{a,b}",
    b"%s%n",
];

/// One path component: a hostile name, a generated one, or a 255-byte one.
pub fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::sample::select(HOSTILE).prop_map(|n| n.to_vec()),
        3 => "[a-z*?\\[\\] \n'\"$()\\\\;&|-]{1,12}".prop_map(String::into_bytes),
        1 => (1usize..4, any::<u8>()).prop_map(|(n, b)| {
            let mut v = vec![b'L'; 255 - n];
            v.extend(std::iter::repeat_n(b'a' + b % 26, n));
            v
        }),
        1 => proptest::collection::vec(1u8..=255, 1..16),
    ]
    .prop_filter("a valid file name", |n| {
        let path = std::path::Path::new(OsStr::from_bytes(n));
        let mut parts = path.components();
        n.len() <= 255
            && !n.contains(&b'/')
            && matches!(parts.next(), Some(std::path::Component::Normal(_)))
            && parts.next().is_none()
    })
}

fn kind_seed() -> impl Strategy<Value = (u8, Vec<u8>, u32)> {
    (
        0u8..6,
        proptest::collection::vec(any::<u8>(), 0..3000),
        proptest::sample::select(&[0o644u32, 0o600, 0o755, 0o400, 0o1777][..]),
    )
}

/// A generated tree of up to `max` entries, at most three levels deep.
pub fn tree(max: usize) -> impl Strategy<Value = Tree> {
    let entry = (
        proptest::collection::vec(name(), 1..4),
        kind_seed(),
        proptest::sample::select(&[0u64, 1000, 1234][..]),
        1_500_000_000u64..1_800_000_000,
    );
    proptest::collection::vec(entry, 1..max).prop_map(build)
}

/// One generated entry: path components, (kind, contents, mode), owner, mtime.
type Seed = (Vec<Vec<u8>>, (u8, Vec<u8>, u32), u64, u64);

/// The tar crate cannot shorten a long name that starts with a non-UTF-8 byte into its header (it
/// needs a UTF-8 prefix); such paths are left out (with everything below them), shorter
/// non-UTF-8 names stay.
fn unwritable(p: &[u8]) -> bool {
    p.len() > 100 && std::str::from_utf8(&p[..100]).is_err_and(|e| e.valid_up_to() == 0)
}

fn build(seeds: Vec<Seed>) -> Tree {
    let mut tree = Tree::new();
    let mut files: Vec<Vec<u8>> = Vec::new();
    'entries: for (parts, (kind, data, mode), owner, mtime) in seeds {
        let mut path = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(part);
            let last = i + 1 == parts.len();
            match tree.get(&path) {
                Some(Entry {
                    kind: Kind::Dir { .. },
                    ..
                }) if !last => continue,
                Some(_) => continue 'entries,
                None if !last => {
                    tree.insert(path.clone(), dir(owner, mtime));
                }
                None => {}
            }
        }
        let kind = match kind {
            0 | 1 => Kind::File {
                data: if kind == 0 { Vec::new() } else { data },
                mode,
            },
            2 => Kind::Dir { mode: 0o755 },
            3 => Kind::Symlink {
                target: files
                    .first()
                    .cloned()
                    .unwrap_or_else(|| b"nowhere".to_vec()),
            },
            4 => Kind::Symlink {
                target: b"/etc/$(id)".to_vec(),
            },
            // The link's target comes first in the archive (which is in path order).
            _ => match files.iter().rev().find(|f| **f < path) {
                Some(to) => Kind::HardLink { to: to.clone() },
                None => Kind::File { data, mode },
            },
        };
        let target_unwritable = match &kind {
            Kind::Symlink { target } => unwritable(target),
            Kind::HardLink { to } => unwritable(to),
            _ => false,
        };
        if unwritable(&path) || target_unwritable {
            continue;
        }
        if matches!(kind, Kind::File { .. }) {
            files.push(path.clone());
        }
        tree.insert(
            path,
            Entry {
                kind,
                uid: owner,
                gid: owner,
                mtime,
            },
        );
    }
    tree.retain(|p, _| !unwritable(p));
    tree
}

fn dir(owner: u64, mtime: u64) -> Entry {
    Entry {
        kind: Kind::Dir { mode: 0o755 },
        uid: owner,
        gid: owner,
        mtime,
    }
}

/// The tree as an uncompressed tar (parents before children, GNU long names where needed).
pub fn to_tar(tree: &Tree) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in tree {
        let mut header = tar::Header::new_gnu();
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mtime(entry.mtime);
        let p = OsStr::from_bytes(path);
        let appended = match &entry.kind {
            Kind::File { data, mode } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, p, data.as_slice())
            }
            Kind::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder.append_data(&mut header, p, std::io::empty())
            }
            Kind::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, p, OsStr::from_bytes(target))
            }
            Kind::HardLink { to } => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_mode(0o644);
                header.set_size(0);
                builder.append_link(&mut header, p, OsStr::from_bytes(to))
            }
        };
        appended.expect("tar entry");
    }
    builder.into_inner().expect("tar")
}

/// Writes `tree` into `path` (absolute, inside the helper's `/volume`) of the volume.
pub async fn put(docker: &DockerClient, volume: &str, path: &str, tree: &Tree) {
    let helper = docker.start_helper(volume, false).await.expect("helper");
    let tar = bytes::Bytes::from(to_tar(tree));
    let stream = futures::stream::once(async move { Ok(tar) }).boxed();
    let put = helper.put_archive(path, stream).await;
    helper.remove().await.expect("remove helper");
    put.expect("put the tree into the volume");
}

/// What a volume holds, read from Docker's archive of it: path → description (type, mode, owner,
/// size, mtime for non-directories, content hash or link target), plus the root's mode and owner.
/// Names are kept as raw bytes, so two volumes compare exactly.
pub async fn read(docker: &DockerClient, volume: &str) -> BTreeMap<Vec<u8>, String> {
    let mut stream = docker.export_volume(volume).await.expect("export");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut out = BTreeMap::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let raw = entry.path_bytes().into_owned();
        let path = raw
            .strip_prefix(b"./")
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| raw.clone());
        let path = path.strip_suffix(b"/").map(<[u8]>::to_vec).unwrap_or(path);
        let h = entry.header().clone();
        let mode = h.mode().expect("mode") & 0o7777;
        let owner = format!("{}:{}", h.uid().expect("uid"), h.gid().expect("gid"));
        let mtime = h.mtime().expect("mtime");
        let kind = h.entry_type();
        let what = if path.is_empty() || path == b"." {
            out.insert(b".".to_vec(), format!("root {mode:o} {owner}"));
            continue;
        } else if kind.is_dir() {
            format!("dir {mode:o} {owner}")
        } else if kind.is_symlink() {
            let target = entry.link_name_bytes().expect("link").into_owned();
            format!(
                "link {owner} {mtime} -> {}",
                String::from_utf8_lossy(&target).escape_debug()
            )
        } else if kind.is_hard_link() {
            let target = entry.link_name_bytes().expect("link").into_owned();
            format!(
                "hardlink -> {}",
                String::from_utf8_lossy(&target).escape_debug()
            )
        } else {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("data");
            format!(
                "file {mode:o} {owner} {} {mtime} {}",
                data.len(),
                hex::encode(Sha256::digest(&data))
            )
        };
        out.insert(path, what);
    }
    out
}

/// [`read`] as text for assertion messages.
pub fn show(listing: &BTreeMap<Vec<u8>, String>) -> String {
    listing
        .iter()
        .map(|(k, v)| format!("{:?} {v}\n", String::from_utf8_lossy(k)))
        .collect()
}

/// A valid gzip'd tar whose second entry climbs out of the volume with `../escaped.txt`: what a
/// restore (and a verification) must refuse before it writes anything.
pub fn parent_entry_tar_gz() -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, data) in [("./ok.txt", &b"fine"[..]), ("../escaped.txt", &b"evil"[..])] {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).expect("gzip");
    gz.finish().expect("gzip")
}
