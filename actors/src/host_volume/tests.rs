use super::*;

#[test]
fn a_file_is_cut_or_padded_to_its_announced_length() {
    let mut grown = ExactLength::new(&b"abcdef"[..], 4);
    let mut out = Vec::new();
    grown.read_to_end(&mut out).expect("read");
    assert_eq!(out, b"abcd");
    assert!(grown.changed());

    let mut shrunk = ExactLength::new(&b"ab"[..], 5);
    let mut out = Vec::new();
    shrunk.read_to_end(&mut out).expect("read");
    assert_eq!(out, b"ab\0\0\0");
    assert!(shrunk.changed());

    let mut same = ExactLength::new(&b"abc"[..], 3);
    let mut out = Vec::new();
    same.read_to_end(&mut out).expect("read");
    assert_eq!(out, b"abc");
    assert!(!same.changed());
}

/// glibc's `makedev`.
fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
}

#[test]
fn device_numbers_follow_glibc() {
    assert_eq!(device_numbers(0x801), (8, 1));
    assert_eq!(device_numbers(makedev(4097, 70000)), (4097, 70000));
}

struct Listed {
    name: String,
    kind: EntryType,
    mode: u32,
    data: Vec<u8>,
    link: Option<String>,
}

fn entries(tar: &[u8]) -> Vec<Listed> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .expect("entries")
        .map(|e| {
            let mut e = e.expect("entry");
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("data");
            Listed {
                name: e.path().expect("path").display().to_string(),
                kind: e.header().entry_type(),
                mode: e.header().mode().expect("mode"),
                link: e
                    .link_name()
                    .expect("link")
                    .map(|l| l.display().to_string()),
                data,
            }
        })
        .collect()
}

#[test]
fn a_folder_becomes_a_tar_with_its_root_links_and_long_names() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("a/empty")).expect("mkdir");
    std::fs::write(root.join("a/file.txt"), b"hello").expect("write");
    std::fs::set_permissions(
        root.join("a/file.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    std::fs::hard_link(root.join("a/file.txt"), root.join("hard")).expect("link");
    symlink("../../outside", root.join("a/up")).expect("symlink");
    let long = "n".repeat(180);
    std::fs::write(root.join(&long), b"long").expect("write");

    let _socket = std::os::unix::net::UnixListener::bind(root.join("app.sock")).expect("socket");

    let mut tar = Vec::new();
    let report = write_tar(root, &mut tar).expect("tar");
    assert_eq!(report.entries, 6);
    assert_eq!(report.sockets_skipped, 1);
    let line = report.changes().expect("the socket is reported");
    assert!(line.contains("1 sockets skipped"), "{line}");
    assert_eq!(TarReport::default().changes(), None);
    let got = entries(&tar);
    let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["./", "a", "a/empty", "a/file.txt", "a/up", "hard", &long]
    );
    assert_eq!(got[0].kind, EntryType::Directory);
    assert_eq!(
        (got[3].kind, got[3].mode, got[3].data.as_slice()),
        (EntryType::Regular, 0o640, &b"hello"[..])
    );
    assert_eq!(
        (got[4].kind, got[4].link.as_deref()),
        (EntryType::Symlink, Some("../../outside"))
    );
    assert_eq!(
        (got[5].kind, got[5].link.as_deref()),
        (EntryType::Link, Some("a/file.txt"))
    );
    assert_eq!(got[6].data, b"long");
}

#[test]
fn an_entry_replaced_after_listing_is_not_opened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outside = tempfile::tempdir().expect("temp dir");
    std::fs::write(outside.path().join("secret"), b"host only").expect("write");
    let root = dir.path();
    std::fs::create_dir(root.join("a")).expect("mkdir");
    std::fs::write(root.join("f"), b"f").expect("write");
    std::fs::write(root.join("g"), b"g").expect("write");
    let root_fd = fs::open(root, DIR_FLAGS, Mode::empty()).expect("open root");
    let name = |n: &str| CString::new(n).expect("name");
    let listed_a = fs::statat(&root_fd, "a", AtFlags::SYMLINK_NOFOLLOW).expect("stat");
    let listed_f = fs::statat(&root_fd, "f", AtFlags::SYMLINK_NOFOLLOW).expect("stat");
    assert!(open_same(&root_fd, &name("a"), DIR_FLAGS, &listed_a)
        .expect("open")
        .is_some());

    // A folder swapped for a symlink to elsewhere, a file swapped for another one.
    std::fs::remove_dir(root.join("a")).expect("rmdir");
    std::os::unix::fs::symlink(outside.path(), root.join("a")).expect("symlink");
    std::fs::rename(root.join("g"), root.join("f")).expect("rename");
    assert!(open_same(&root_fd, &name("a"), DIR_FLAGS, &listed_a)
        .expect("open")
        .is_none());
    assert!(open_same(&root_fd, &name("f"), FILE_FLAGS, &listed_f)
        .expect("open")
        .is_none());
}
