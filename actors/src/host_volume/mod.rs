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

use crate::chain::manifest::Entry;
use crate::codec;
use crate::stream::ByteStream;

/// The volume folder's contents as an uncompressed tar stream, produced on a blocking thread; the
/// receiver yields what the read met once the whole tar was handed on.
pub fn archive(root: PathBuf) -> (ByteStream, oneshot::Receiver<TarReport>) {
    codec::blocking_source(move |out| write_tar(&root, out))
}

/// [`archive`] for a backup in a chain: a full archive (no `previous`), or an incremental one in
/// GNU tar's incremental format that holds only the entries changed since `previous` (compared
/// by [`Entry::unchanged_since`], without reading unchanged files) and a dumpdir record for every
/// folder. The receiver also yields the manifest of the whole tree.
pub fn archive_chain(
    root: PathBuf,
    chain: ChainWalk,
) -> (ByteStream, oneshot::Receiver<(TarReport, Vec<Entry>)>) {
    codec::blocking_source(move |out| write_tar_chain(&root, out, chain))
}

/// What a read for a chain compares with, and where the archive sits in the chain.
#[derive(Clone)]
pub struct ChainWalk {
    pub position: u32,
    /// The parent backup's manifest, by path; `None` for the full archive of a chain.
    pub previous: Option<std::sync::Arc<HashMap<Vec<u8>, Entry>>>,
}

impl std::fmt::Debug for ChainWalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainWalk")
            .field("position", &self.position)
            .field("previous", &self.previous.as_ref().map(|p| p.len()))
            .finish()
    }
}

struct ChainState {
    walk: ChainWalk,
    entries: Vec<Entry>,
    /// The volume's root folder, for looking up the path a hard link links to.
    root: Option<OwnedFd>,
    /// Entries changed at or after this second (Unix time) are racy (see [`Entry::racy`]).
    racy_from: i64,
}

impl ChainState {
    fn new(walk: ChainWalk) -> Self {
        Self {
            walk,
            entries: Vec::new(),
            root: None,
            racy_from: crate::chain::racy_from(),
        }
    }

    fn record(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    fn entry(&self, path: &Path, stat: &Stat) -> Entry {
        let mut entry = manifest_entry(path, stat, self.walk.position);
        entry.racy = entry.ctime >= self.racy_from || entry.mtime >= self.racy_from;
        entry
    }

    /// The earlier record of an entry that did not change, or `None` if it must be stored. A
    /// file stored as a hard link is unchanged only while the path it links to is still the same
    /// file, unchanged, from the same archive (a renamed folder leaves its files' ctimes as they
    /// were); that is looked up by path, so the answer does not depend on the order of the walk.
    fn unchanged(&self, path: &Path, stat: &Stat) -> Option<&Entry> {
        let previous = self.walk.previous.as_ref()?;
        let now = self.entry(path, stat);
        let before = previous
            .get(&now.path)
            .filter(|before| now.unchanged_since(before))?;
        let (Some(target), '0') = (&before.link, before.kind) else {
            return Some(before);
        };
        let linked = previous.get(target)?;
        let root = self.root.as_ref()?;
        let found = fs::statat(root, OsStr::from_bytes(target), AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let same = found.st_ino == stat.st_ino
            && found.st_dev == stat.st_dev
            && linked.origin == before.origin
            && self
                .entry(Path::new(OsStr::from_bytes(target)), &found)
                .unchanged_since(linked);
        same.then_some(before)
    }
}

/// [`write_tar`] for a backup in a chain (see [`archive_chain`]).
pub fn write_tar_chain(
    root: &Path,
    out: &mut dyn Write,
    chain: ChainWalk,
) -> io::Result<(TarReport, Vec<Entry>)> {
    let mut walk = Walk {
        builder: tar::Builder::new(out),
        report: TarReport::default(),
        linked: HashMap::new(),
        chain: Some(ChainState::new(chain)),
        link: None,
    };
    walk.root(root)?;
    let entries = walk.chain.take().map(|c| c.entries).unwrap_or_default();
    Ok((walk.report, entries))
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
    let mut walk = Walk {
        builder: tar::Builder::new(out),
        report: TarReport::default(),
        linked: HashMap::new(),
        chain: None,
        link: None,
    };
    walk.root(root)?;
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
    /// For a backup in a chain: what it compares with, and the manifest being recorded.
    chain: Option<ChainState>,
    /// The link target of the entry just stored, for its manifest record.
    link: Option<Vec<u8>>,
}

impl<W: Write> Walk<W> {
    /// The whole tree: the root entry `./`, then everything in it; then the end of the archive.
    fn root(&mut self, root: &Path) -> io::Result<()> {
        let root_fd = fs::open(root, DIR_FLAGS, Mode::empty())?;
        let stat = fs::fstat(&root_fd)?;
        if let Some(chain) = &mut self.chain {
            chain.root = Some(root_fd.try_clone()?);
        }
        self.folder(&root_fd, Path::new(""), &stat)?;
        self.builder.finish()
    }

    /// Appends the folder `dir` (whose path in the archive is `at`, empty for the root) and its
    /// entries, sorted by name, each folder before its contents. In an incremental archive the
    /// folder's entry is a GNU dumpdir: the name of each entry in it, marked `Y` (stored here),
    /// `N` (unchanged, in an earlier archive of the chain) or `D` (a folder), so that GNU tar's
    /// `--listed-incremental` extraction removes what is gone.
    fn folder(&mut self, dir: &OwnedFd, at: &Path, stat: &Stat) -> io::Result<()> {
        let mut names: Vec<CString> = Vec::new();
        for entry in Dir::read_from(dir)? {
            let name = entry?.file_name().to_owned();
            if name.as_bytes() != b"." && name.as_bytes() != b".." {
                names.push(name);
            }
        }
        names.sort();
        let mut listed = Vec::with_capacity(names.len());
        for name in names {
            let path = at.join(OsStr::from_bytes(name.as_bytes()));
            match fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => listed.push((name, path, stat)),
                Err(Errno::NOENT) => self.report.vanished += 1,
                Err(e) => return Err(at_path(e, &path)),
            }
        }
        let mut head = header(stat, EntryType::Directory);
        let mut dumpdir = Vec::new();
        // Decided once, here: what the dumpdir says is what is stored.
        let mut kept: Vec<Option<Entry>> = Vec::with_capacity(listed.len());
        if let Some(chain) = &mut self.chain {
            for (_, path, stat) in &listed {
                let folder = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
                kept.push(
                    (!folder)
                        .then(|| chain.unchanged(path, stat).cloned())
                        .flatten(),
                );
            }
            if chain.walk.previous.is_some() {
                for ((name, _, stat), kept) in listed.iter().zip(&kept) {
                    let code = if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                        b'D'
                    } else if kept.is_some() {
                        b'N'
                    } else {
                        b'Y'
                    };
                    dumpdir.push(code);
                    dumpdir.extend_from_slice(name.as_bytes());
                    dumpdir.push(0);
                }
                dumpdir.push(0);
                head.set_entry_type(EntryType::new(b'D'));
                head.set_size(dumpdir.len() as u64);
            }
            let entry = chain.entry(at, stat);
            chain.record(entry);
        }
        if at.as_os_str().is_empty() {
            head.as_old_mut().name[..2].copy_from_slice(b"./");
            head.set_cksum();
            self.builder.append(&head, dumpdir.as_slice())?;
        } else {
            self.builder
                .append_data(&mut head, at, dumpdir.as_slice())?;
            self.report.entries += 1;
        }
        let mut kept = kept.into_iter();
        for (name, path, stat) in listed {
            let kept = kept.next().flatten();
            self.entry(dir, &name, &path, &stat, kept)?;
        }
        Ok(())
    }

    /// One entry of a folder; `kept` is its record in the parent backup's manifest when it did
    /// not change since.
    fn entry(
        &mut self,
        dir: &OwnedFd,
        name: &CString,
        path: &Path,
        stat: &Stat,
        kept: Option<Entry>,
    ) -> io::Result<()> {
        let kind = FileType::from_raw_mode(stat.st_mode);
        if let (Some(before), Some(chain)) = (kept, &mut self.chain) {
            // In an earlier archive of the chain as it is now: recorded, not read.
            let mut entry = chain.entry(path, stat);
            entry.origin = before.origin;
            entry.link = before.link;
            chain.record(entry);
            return Ok(());
        }
        self.link = None;
        let stored = self.store(dir, name, path, stat, kind)?;
        if let (true, Some(chain)) = (stored, &mut self.chain) {
            let mut entry = chain.entry(path, stat);
            entry.link = self.link.take();
            chain.record(entry);
        }
        Ok(())
    }

    /// Appends one entry (a folder with everything in it); false if it was left out (vanished, a
    /// socket).
    fn store(
        &mut self,
        dir: &OwnedFd,
        name: &CString,
        path: &Path,
        stat: &Stat,
        kind: FileType,
    ) -> io::Result<bool> {
        match kind {
            FileType::Directory => {
                let sub = match open_same(dir, name, DIR_FLAGS, stat) {
                    Ok(Some(sub)) => sub,
                    Ok(None) => {
                        self.report.vanished += 1;
                        return Ok(false);
                    }
                    Err(e) => return Err(at_path(e, path)),
                };
                self.folder(&sub, path, stat)?;
                // The folder recorded itself before its contents.
                return Ok(false);
            }
            FileType::Symlink => {
                let target = match fs::readlinkat(dir, name.as_c_str(), Vec::new()) {
                    Ok(target) => target,
                    Err(Errno::NOENT | Errno::INVAL) => {
                        self.report.vanished += 1;
                        return Ok(false);
                    }
                    Err(e) => return Err(at_path(e, path)),
                };
                self.link = Some(target.as_bytes().to_vec());
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
                        self.link = Some(first.as_os_str().as_bytes().to_vec());
                        let mut head = header(stat, EntryType::Link);
                        self.builder.append_link(&mut head, path, first)?;
                        self.report.entries += 1;
                        return Ok(true);
                    }
                }
                let file = match open_same(dir, name, FILE_FLAGS, stat) {
                    Ok(Some(fd)) => File::from(fd),
                    Ok(None) => {
                        self.report.vanished += 1;
                        return Ok(false);
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
                return Ok(false);
            }
        }
        self.report.entries += 1;
        Ok(true)
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

/// The manifest's record of an entry as listed.
fn manifest_entry(path: &Path, stat: &Stat, origin: u32) -> Entry {
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::Directory => '5',
        FileType::Symlink => '2',
        FileType::CharacterDevice => '3',
        FileType::BlockDevice => '4',
        FileType::Fifo => '6',
        _ => '0',
    };
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    Entry {
        path: path.as_os_str().as_bytes().to_vec(),
        kind,
        size: if kind == '0' {
            u64::try_from(stat.st_size).unwrap_or(0)
        } else {
            0
        },
        mtime: stat.st_mtime as i64,
        mtime_ns: u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
        ctime: stat.st_ctime as i64,
        ctime_ns: u32::try_from(stat.st_ctime_nsec).unwrap_or(0),
        inode: u64::from(stat.st_ino),
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        origin,
        racy: false,
        link: None,
    }
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
mod tests;
