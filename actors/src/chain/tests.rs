//! A chain written from a real folder, read back two ways: by [`super::tree::share`] (what a
//! restore and a download read) and by GNU tar's own incremental extraction (the by-hand path of
//! the README). Both must give exactly the folder at each backup.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use sha2::Digest as _;

use super::manifest::{Entry, Manifest};
use super::tree::share;
use crate::host_volume::{write_tar_chain, ChainWalk};

/// What a tree holds, path by path: type, mode, owner, and contents or link target.
fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    let meta = std::fs::metadata(root).expect("stat root");
    out.insert(
        Vec::new(),
        format!(
            "root mode {:o} owner {}:{}",
            meta.permissions().mode() & 0o7777,
            meta.uid(),
            meta.gid()
        ),
    );
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, String>) {
    for e in std::fs::read_dir(dir).expect("read dir") {
        let e = e.expect("entry");
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let rel = path
            .strip_prefix(root)
            .expect("below root")
            .as_os_str()
            .as_bytes()
            .to_vec();
        let what = if meta.file_type().is_symlink() {
            format!("link -> {:?}", std::fs::read_link(&path).expect("link"))
        } else if meta.is_dir() {
            walk(root, &path, out);
            "dir".to_owned()
        } else {
            let data = std::fs::read(&path).expect("read");
            format!("file {}", hex::encode(sha2::Sha256::digest(&data)))
        };
        let mode = meta.permissions().mode() & 0o7777;
        let mode = if meta.file_type().is_symlink() {
            0
        } else {
            mode
        };
        out.insert(
            rel,
            format!("{what} mode {mode:o} owner {}:{}", meta.uid(), meta.gid()),
        );
    }
}

fn backup(root: &Path, position: u32, previous: Option<&Manifest>) -> (Vec<u8>, Manifest) {
    let mut tar = Vec::new();
    let walk = ChainWalk {
        position,
        previous: previous.map(|m| Arc::new(m.clone().by_path())),
    };
    let (_, entries) = write_tar_chain(root, &mut tar, walk).expect("tar");
    let manifest = Manifest {
        backup_id: uuid::Uuid::new_v4(),
        position,
        entries,
    };
    (tar, manifest)
}

/// The tree at the last of `archives`, as one tar as [`super::tree::tree`] writes it (the root
/// first, each archive's share counted), through the restore's guard, extracted with `tar -x`.
fn restore_merged(archives: &[&[u8]], manifest: &Manifest, into: &Path) {
    let origins = manifest.origins();
    let wanted = super::tree::wanted(&origins);
    let mut builder = tar::Builder::new(Vec::new());
    let root = manifest
        .entries
        .iter()
        .find(|e| e.path.is_empty())
        .expect("root");
    builder
        .append(&super::tree::root_header(root), std::io::empty())
        .expect("root");
    for (i, archive) in archives.iter().enumerate() {
        let mut input = *archive;
        let copied = share(&mut input, &mut builder, &origins, i as u32).expect("share");
        assert_eq!(
            copied,
            wanted.get(&(i as u32)).copied().unwrap_or(0),
            "archive {i}"
        );
    }
    let merged = builder.into_inner().expect("tar");
    let mut guarded = Vec::new();
    crate::tar_guard::check_and_forward(&mut &merged[..], &mut guarded)
        .expect("the guard passes it");
    extract(&guarded, into, &[]);
}

fn extract(tar: &[u8], into: &Path, flags: &[&str]) {
    let file = into.with_extension("tar");
    std::fs::write(&file, tar).expect("write tar");
    let out = Command::new("tar")
        .args(flags)
        .arg("-xpf")
        .arg(&file)
        .arg("-C")
        .arg(into)
        .output()
        .expect("GNU tar runs");
    assert!(
        out.status.success(),
        "tar {flags:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn names_in(tar: &[u8]) -> Vec<(Vec<u8>, u8)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.path_bytes().into_owned(),
                e.header().entry_type().as_byte(),
            )
        })
        .collect()
}

fn stored(m: &Manifest, position: u32) -> Vec<&[u8]> {
    m.entries
        .iter()
        .filter(|e: &&Entry| e.origin == position && e.kind != '5')
        .map(|e| e.path.as_slice())
        .collect()
}

/// The same chain through Docker's path: the whole tree as Docker's export has it (the host
/// read writes the same tar), rewritten to hold only the entries whose headers changed.
fn backup_from_export(
    root: &Path,
    position: u32,
    previous: Option<&Manifest>,
) -> (Vec<u8>, Manifest) {
    let mut export = Vec::new();
    crate::host_volume::write_tar(root, &mut export).expect("tar");
    let walk = ChainWalk {
        position,
        previous: previous.map(|m| Arc::new(m.clone().by_path())),
    };
    let mut tar = Vec::new();
    let (_, entries) = super::export::rewrite(&mut &export[..], &mut tar, &walk).expect("rewrite");
    let manifest = Manifest {
        backup_id: uuid::Uuid::new_v4(),
        position,
        entries,
    };
    (tar, manifest)
}

#[test]
fn every_backup_of_a_chain_reads_back_exactly_both_ways() {
    scenario(backup);
}

#[test]
fn a_chain_read_through_docker_reads_back_exactly_both_ways() {
    scenario(backup_from_export);
}

type Backup = fn(&Path, u32, Option<&Manifest>) -> (Vec<u8>, Manifest);

fn scenario(backup: Backup) {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("volume");
    let p = |rel: &str| root.join(rel);
    std::fs::create_dir_all(p("uploads/deep/er")).expect("mkdir");
    std::fs::create_dir_all(p("gone/inner")).expect("mkdir");
    std::fs::create_dir_all(p("emptied/tmp")).expect("mkdir");
    std::fs::write(p("emptied/tmp/a"), b"a").expect("write");
    std::fs::write(p("keep.txt"), b"unchanged").expect("write");
    std::fs::write(p("edit.txt"), b"version 1").expect("write");
    std::fs::write(p("uploads/deep/er/a.bin"), vec![7u8; 70_000]).expect("write");
    std::fs::write(p("gone/inner/x"), b"x").expect("write");
    std::fs::write(p("becomes-dir"), b"file first").expect("write");
    std::fs::write(p("-rf $(x) \"q\" *?["), b"hostile").expect("write");
    std::fs::write(root.join(OsStr::from_bytes(b"bin\xff\xfe")), b"not utf-8").expect("write");
    std::fs::write(p(&"n".repeat(200)), b"long").expect("write");
    std::os::unix::fs::symlink("keep.txt", p("link")).expect("symlink");
    std::fs::hard_link(p("keep.txt"), p("uploads/hard")).expect("hard link");
    // A hard link whose first path moves with its folder (which leaves the file's ctime alone).
    std::fs::create_dir(p("linked")).expect("mkdir");
    std::fs::write(p("linked/first"), b"linked twice").expect("write");
    std::fs::hard_link(p("linked/first"), p("zz-second")).expect("hard link");
    std::os::unix::fs::chown(&root, Some(999), Some(998)).expect("chown root");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o750)).expect("chmod root");
    // Older than the racy window, so that unchanged entries are not read again.
    std::thread::sleep(std::time::Duration::from_millis(2100));

    let (tar0, m0) = backup(&root, 0, None);
    let at0 = snapshot(&root);
    assert!(
        !names_in(&tar0).iter().any(|(_, t)| *t == b'D'),
        "the full archive is a plain tar"
    );

    std::fs::write(p("edit.txt"), b"version 2").expect("edit, same size");
    std::fs::remove_dir_all(p("gone")).expect("delete a folder");
    std::fs::remove_dir_all(p("emptied/tmp")).expect("empty a folder");
    std::fs::remove_file(p("becomes-dir")).expect("rm");
    std::fs::create_dir(p("becomes-dir")).expect("mkdir");
    std::fs::write(p("becomes-dir/inside"), b"new").expect("write");
    std::fs::write(p("uploads/new.txt"), b"added").expect("write");
    std::fs::rename(p("linked"), p("linked-moved")).expect("move the folder");
    std::fs::set_permissions(
        p("uploads/deep/er/a.bin"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let (tar1, m1) = backup(&root, 1, Some(&m0));
    let at1 = snapshot(&root);

    let in1: Vec<Vec<u8>> = names_in(&tar1)
        .into_iter()
        .filter(|(_, t)| *t != b'D' && *t != b'5')
        .map(|(n, _)| n)
        .collect();
    let mut in1: Vec<&[u8]> = in1.iter().map(Vec::as_slice).collect();
    in1.sort();
    assert_eq!(
        in1,
        [
            &b"becomes-dir/inside"[..],
            b"edit.txt",
            // A moved folder's files are new paths; the hard link to one of them is stored
            // again, as the path it linked to in the full archive is gone.
            b"linked-moved/first",
            b"uploads/deep/er/a.bin",
            b"uploads/new.txt",
            b"zz-second",
        ],
        "the incremental archive holds only what changed (and a listing of every folder)"
    );
    let mut s1 = stored(&m1, 1);
    s1.sort();
    assert_eq!(
        s1, in1,
        "the manifest says which entries this archive holds"
    );
    assert!(m1
        .entries
        .iter()
        .any(|e| e.path == b"keep.txt" && e.origin == 0));
    assert!(!m1.entries.iter().any(|e| e.path.starts_with(b"gone")));

    std::fs::remove_file(p("edit.txt")).expect("rm");
    std::fs::write(p("keep.txt"), b"changed at last").expect("write");
    let (tar2, m2) = backup(&root, 2, Some(&m1));
    let at2 = snapshot(&root);

    let chain: [&[u8]; 3] = [&tar0, &tar1, &tar2];
    for (n, (manifest, expected)) in [(&m0, &at0), (&m1, &at1), (&m2, &at2)]
        .into_iter()
        .enumerate()
    {
        let merged = dir.path().join(format!("merged{n}"));
        std::fs::create_dir(&merged).expect("mkdir");
        restore_merged(&chain[..=n], manifest, &merged);
        assert_eq!(&snapshot(&merged), expected, "backup {n} read as one tree");

        let by_hand = dir.path().join(format!("by-hand{n}"));
        std::fs::create_dir(&by_hand).expect("mkdir");
        for archive in &chain[..=n] {
            extract(archive, &by_hand, &["--listed-incremental=/dev/null"]);
        }
        assert_eq!(
            &snapshot(&by_hand),
            expected,
            "backup {n} by hand with GNU tar"
        );
    }
}
