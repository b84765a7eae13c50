//! Reading a file volume straight from its folder on the Docker host, for an engine that runs on
//! that host with the right to read it (`read_volumes_from_host`). The tar has the shape of the
//! one Docker's archive API writes — a root entry `./` first, then every entry with its mode,
//! numeric owner and mtime; symlinks stored, not followed; hard links as links; empty folders,
//! FIFOs and device nodes; long or non-UTF-8 names (GNU long-name records) — at a fraction of its
//! CPU cost (BENCHMARKS.md). Sockets are skipped, as Docker skips them.
//!
//! A volume is live while it is read: an entry that disappears (or is replaced) between listing
//! and reading is left out, and a file that shrinks is padded with zeros to the size its header
//! announced (as GNU tar does), so the archive always stays well-formed.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as fs, AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use tar::{EntryType, Header};
use tokio::sync::oneshot;

use crate::codec;
use crate::stream::ByteStream;

/// The volume folder's contents as an uncompressed tar stream, produced on a blocking thread; the
/// receiver yields what the read met once the whole tar was handed on.
pub fn archive(root: PathBuf) -> (ByteStream, oneshot::Receiver<TarReport>) {
    codec::blocking_source(move |out| write_tar(&root, out))
}

/// What a read of a live volume met on its way.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TarReport {
    pub entries: u64,
    /// Entries gone (or replaced) between listing and reading.
    pub vanished: u64,
    /// Files whose size changed while they were read.
    pub changed: u64,
    pub sockets_skipped: u64,
}

impl TarReport {
    /// A line for the backup's log when the volume changed while it was read, else `None`.
    pub fn changes(&self) -> Option<String> {
        if self.vanished == 0 && self.changed == 0 && self.sockets_skipped == 0 {
            return None;
        }
        Some(format!(
            "read {} entries; the volume changed while it was read: {} entries vanished (left out), \
             {} files changed size (stored cut or zero-padded to the size first seen), {} sockets skipped",
            self.entries, self.vanished, self.changed, self.sockets_skipped
        ))
    }
}

/// Writes a tar of `root` to `out`.
///
/// Every step is taken relative to an open folder with `O_NOFOLLOW`, never through a path: a
/// container that swaps a folder of its volume for a symlink while the volume is read cannot make
/// this (root) process read anything outside the volume.
pub fn write_tar(root: &Path, out: &mut dyn Write) -> io::Result<TarReport> {
    let root_fd = fs::open(root, DIR_FLAGS, Mode::empty())?;
    let mut walk = Walk {
        builder: tar::Builder::new(out),
        report: TarReport::default(),
        linked: HashMap::new(),
    };
    let mut root_header = header(&fs::fstat(&root_fd)?, EntryType::Directory);
    root_header.as_old_mut().name[..2].copy_from_slice(b"./");
    root_header.set_cksum();
    walk.builder.append(&root_header, io::empty())?;
    walk.folder(&root_fd, Path::new(""))?;
    walk.builder.finish()?;
    Ok(walk.report)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
/// `O_NONBLOCK` so that opening a FIFO swapped in for a file cannot hang the read.
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY)
    .union(OFlags::NONBLOCK);

struct Walk<W: Write> {
    builder: tar::Builder<W>,
    report: TarReport,
    /// The first path seen of each multiply-linked file, by (device, inode).
    linked: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> Walk<W> {
    /// Appends the entries of the open folder `dir` (whose path in the archive is `at`), sorted by
    /// name, each folder before its contents.
    fn folder(&mut self, dir: &OwnedFd, at: &Path) -> io::Result<()> {
        let mut names: Vec<CString> = Vec::new();
        for entry in Dir::read_from(dir)? {
            let name = entry?.file_name().to_owned();
            if name.as_bytes() != b"." && name.as_bytes() != b".." {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let path = at.join(OsStr::from_bytes(name.as_bytes()));
            let stat = match fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::NOENT) => {
                    self.report.vanished += 1;
                    continue;
                }
                Err(e) => return Err(at_path(e, &path)),
            };
            self.entry(dir, &name, &path, &stat)?;
        }
        Ok(())
    }

    fn entry(&mut self, dir: &OwnedFd, name: &CString, path: &Path, stat: &Stat) -> io::Result<()> {
        let kind = FileType::from_raw_mode(stat.st_mode);
        match kind {
            FileType::Directory => {
                let sub = match open_same(dir, name, DIR_FLAGS, stat) {
                    Ok(Some(sub)) => sub,
                    Ok(None) => {
                        self.report.vanished += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(at_path(e, path)),
                };
                let mut head = header(stat, EntryType::Directory);
                self.builder.append_data(&mut head, path, io::empty())?;
                self.report.entries += 1;
                return self.folder(&sub, path);
            }
            FileType::Symlink => {
                let target = match fs::readlinkat(dir, name.as_c_str(), Vec::new()) {
                    Ok(target) => target,
                    Err(Errno::NOENT | Errno::INVAL) => {
                        self.report.vanished += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(at_path(e, path)),
                };
                let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                let mut head = header(stat, EntryType::Symlink);
                self.builder.append_link(&mut head, path, target)?;
            }
            FileType::RegularFile => {
                #[allow(clippy::useless_conversion)]
                let key = (u64::from(stat.st_dev), u64::from(stat.st_ino));
                let linked = stat.st_nlink > 1;
                if linked {
                    if let Some(first) = self.linked.get(&key) {
                        let mut head = header(stat, EntryType::Link);
                        self.builder.append_link(&mut head, path, first)?;
                        self.report.entries += 1;
                        return Ok(());
                    }
                }
                let file = match open_same(dir, name, FILE_FLAGS, stat) {
                    Ok(Some(fd)) => File::from(fd),
                    Ok(None) => {
                        self.report.vanished += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(at_path(e, path)),
                };
                if linked {
                    self.linked.insert(key, path.to_path_buf());
                }
                let size = u64::try_from(stat.st_size).unwrap_or(0);
                let mut head = header(stat, EntryType::Regular);
                head.set_size(size);
                let mut body = ExactLength::new(file, size);
                self.builder.append_data(&mut head, path, &mut body)?;
                if body.changed() {
                    self.report.changed += 1;
                    tracing::warn!(path = %path.display(), "the file changed while it was read");
                }
            }
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                let entry_type = match kind {
                    FileType::Fifo => EntryType::Fifo,
                    FileType::CharacterDevice => EntryType::Char,
                    _ => EntryType::Block,
                };
                let mut head = header(stat, entry_type);
                if kind != FileType::Fifo {
                    #[allow(clippy::useless_conversion)]
                    let (major, minor) = device_numbers(u64::from(stat.st_rdev));
                    head.set_device_major(major)?;
                    head.set_device_minor(minor)?;
                }
                self.builder.append_data(&mut head, path, io::empty())?;
            }
            _ => {
                self.report.sockets_skipped += 1;
                return Ok(());
            }
        }
        self.report.entries += 1;
        Ok(())
    }
}

/// Opens `name` in `dir` without following a symlink, and only if it is still the entry that was
/// listed (same device and inode); `None` if it is gone or was replaced meanwhile.
fn open_same(
    dir: &OwnedFd,
    name: &CString,
    flags: OFlags,
    listed: &Stat,
) -> Result<Option<OwnedFd>, Errno> {
    let fd = match fs::openat(dir, name.as_c_str(), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR | Errno::NXIO) => return Ok(None),
        Err(e) => return Err(e),
    };
    let opened = fs::fstat(&fd)?;
    let same = opened.st_dev == listed.st_dev && opened.st_ino == listed.st_ino;
    Ok(same.then_some(fd))
}

fn at_path(e: Errno, path: &Path) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn header(stat: &Stat, kind: EntryType) -> Header {
    let mut head = Header::new_gnu();
    head.set_entry_type(kind);
    head.set_mode(stat.st_mode & 0o7777);
    head.set_uid(u64::from(stat.st_uid));
    head.set_gid(u64::from(stat.st_gid));
    head.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
    head.set_size(0);
    head
}

/// Linux's encoding of a device number (`major()` / `minor()` of glibc).
fn device_numbers(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & 0xffff_f000);
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xffff_ff00);
    (
        u32::try_from(major).unwrap_or(u32::MAX),
        u32::try_from(minor).unwrap_or(u32::MAX),
    )
}

/// Exactly `len` bytes of a file whatever happens to it meanwhile: cut if it grew, padded with
/// zeros if it shrank.
struct ExactLength<R> {
    inner: R,
    left: u64,
    padding: bool,
    grew: bool,
}

impl<R: Read> ExactLength<R> {
    fn new(inner: R, len: u64) -> Self {
        Self {
            inner,
            left: len,
            padding: false,
            grew: false,
        }
    }

    fn changed(&mut self) -> bool {
        if !self.padding && !self.grew {
            let mut probe = [0u8; 1];
            self.grew = matches!(self.inner.read(&mut probe), Ok(1));
        }
        self.padding || self.grew
    }
}

impl<R: Read> Read for ExactLength<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = if self.padding {
            buf[..want].fill(0);
            want
        } else {
            match self.inner.read(&mut buf[..want])? {
                0 => {
                    self.padding = true;
                    buf[..want].fill(0);
                    want
                }
                n => n,
            }
        };
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
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

        let _socket =
            std::os::unix::net::UnixListener::bind(root.join("app.sock")).expect("socket");

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
}
