//! Reading a file volume straight from its folder on the Docker host, for an engine that runs on
//! that host with the right to read it (`read_volumes_from_host`). The tar has the shape of the
//! one Docker's archive API writes — a root entry `./` first, then every entry with its mode,
//! numeric owner and mtime; symlinks stored, not followed; hard links as links; empty folders,
//! FIFOs and device nodes; long or non-UTF-8 names (GNU long-name records) — at a fraction of its
//! CPU cost (BENCHMARKS.md). Sockets are skipped, as Docker skips them.
//!
//! A volume is live while it is read: an entry that disappears between listing and reading is
//! left out, and a file that shrinks is padded with zeros to the size its header announced (as
//! GNU tar does), so the archive always stays well-formed.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};
use walkdir::WalkDir;

use crate::codec;
use crate::stream::ByteStream;

/// The volume folder's contents as an uncompressed tar stream, produced on a blocking thread.
pub fn archive(root: PathBuf) -> ByteStream {
    codec::blocking_source(move |out| write_tar(&root, out).map(drop))
}

/// What a read of a live volume met on its way.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TarReport {
    pub entries: u64,
    /// Entries gone between listing and reading.
    pub vanished: u64,
    /// Files whose size changed while they were read.
    pub changed: u64,
    pub sockets_skipped: u64,
}

/// Writes a tar of `root` to `out`.
pub fn write_tar(root: &Path, out: &mut dyn Write) -> io::Result<TarReport> {
    let mut builder = tar::Builder::new(out);
    let mut report = TarReport::default();
    let mut root_header = header(&fs::symlink_metadata(root)?, EntryType::Directory);
    root_header.as_old_mut().name[..2].copy_from_slice(b"./");
    root_header.set_cksum();
    builder.append(&root_header, io::empty())?;

    // The first path seen of each multiply-linked file, by (device, inode).
    let mut linked: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let walk = WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    for item in walk {
        let entry = match item {
            Ok(entry) => entry,
            Err(e) if is_vanished(e.io_error()) => {
                report.vanished += 1;
                continue;
            }
            Err(e) => return Err(io::Error::other(e)),
        };
        let path = entry.path();
        let name = path.strip_prefix(root).map_err(io::Error::other)?;
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if is_vanished(e.io_error()) => {
                report.vanished += 1;
                continue;
            }
            Err(e) => return Err(io::Error::other(e)),
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            builder.append_data(&mut header(&meta, EntryType::Directory), name, io::empty())?;
        } else if kind.is_symlink() {
            let target = match fs::read_link(path) {
                Ok(target) => target,
                Err(e) if is_vanished(Some(&e)) => {
                    report.vanished += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            builder.append_link(&mut header(&meta, EntryType::Symlink), name, target)?;
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = linked.get(&key) {
                    builder.append_link(&mut header(&meta, EntryType::Link), name, first)?;
                    report.entries += 1;
                    continue;
                }
                linked.insert(key, name.to_path_buf());
            }
            let file = match File::open(path) {
                Ok(file) => file,
                Err(e) if is_vanished(Some(&e)) => {
                    report.vanished += 1;
                    continue;
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            };
            let mut head = header(&meta, EntryType::Regular);
            head.set_size(meta.len());
            let mut body = ExactLength::new(file, meta.len());
            builder.append_data(&mut head, name, &mut body)?;
            if body.changed() {
                report.changed += 1;
                tracing::warn!(path = %path.display(), "the file changed while it was read");
            }
        } else if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
            let entry_type = if kind.is_fifo() {
                EntryType::Fifo
            } else if kind.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            let mut head = header(&meta, entry_type);
            if !kind.is_fifo() {
                let (major, minor) = device_numbers(meta.rdev());
                head.set_device_major(major)?;
                head.set_device_minor(minor)?;
            }
            builder.append_data(&mut head, name, io::empty())?;
        } else {
            report.sockets_skipped += 1;
            continue;
        }
        report.entries += 1;
    }
    builder.finish()?;
    Ok(report)
}

fn is_vanished(e: Option<&io::Error>) -> bool {
    e.is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
}

fn header(meta: &Metadata, kind: EntryType) -> Header {
    let mut head = Header::new_gnu();
    head.set_entry_type(kind);
    head.set_mode(meta.mode() & 0o7777);
    head.set_uid(u64::from(meta.uid()));
    head.set_gid(u64::from(meta.gid()));
    head.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
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
        fs::create_dir_all(root.join("a/empty")).expect("mkdir");
        fs::write(root.join("a/file.txt"), b"hello").expect("write");
        fs::set_permissions(root.join("a/file.txt"), fs::Permissions::from_mode(0o640))
            .expect("chmod");
        fs::hard_link(root.join("a/file.txt"), root.join("hard")).expect("link");
        symlink("../../outside", root.join("a/up")).expect("symlink");
        let long = "n".repeat(180);
        fs::write(root.join(&long), b"long").expect("write");

        let mut tar = Vec::new();
        let report = write_tar(root, &mut tar).expect("tar");
        assert_eq!(report.entries, 6);
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
}
