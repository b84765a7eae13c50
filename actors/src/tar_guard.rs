//! Checks a tar stream entry by entry and lets through only what stays inside the folder it is
//! extracted into: no absolute paths, no `..`, no entry below a symlink the archive made, no hard
//! link to something outside the archive. The bytes let through are the archive's own, unchanged
//! (PAX records, long names, owners and times stay exactly as the backup wrote them), and each
//! header is let through only after its entry passed.
//!
//! Symlinks whose relative target climbs above the volume root (`docs -> ../../share/doc`) are
//! legitimate volume contents, but Docker's archive API refuses to extract them ("invalid
//! symlink"). They are held back from the stream and returned, to be created after extraction.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

/// Records every byte read through it, for forwarding once the entry they belong to is checked.
struct Recorder<'a> {
    inner: &'a mut dyn Read,
    pending: Rc<RefCell<Vec<u8>>>,
}

impl Read for Recorder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pending.borrow_mut().extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "unsafe archive entry {:?}: {why}; nothing was restored",
            path
        ),
    )
}

/// The entry's path relative to the extraction root, or an error if it could leave it.
fn contained(path: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::Normal(p) => out.push(p),
            Component::ParentDir => return Err(refused(path, "it climbs out with `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(path, "it is an absolute path"))
            }
        }
    }
    Ok(out)
}

/// A symlink held back from the stream, to be created once the rest is extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSymlink {
    /// Path relative to the extraction root.
    pub path: String,
    /// The link's target, as stored.
    pub target: String,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

/// Whether a relative symlink target, resolved lexically from the link's folder, climbs above the
/// extraction root at any point.
fn climbs_out(path: &Path, target: &Path) -> bool {
    if target.has_root() {
        return false;
    }
    let mut depth = path.components().count().saturating_sub(1);
    for part in target.components() {
        match part {
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

fn utf8(path: &Path, raw: &Path, what: &str) -> io::Result<String> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        refused(
            raw,
            &format!("its {what} is not UTF-8 and its target lies outside the volume"),
        )
    })
}

fn held_symlink(
    entry: &tar::Entry<'_, impl Read>,
    raw: &Path,
    path: &Path,
) -> io::Result<Option<HeldSymlink>> {
    let Some(target) = entry.link_name()? else {
        return Err(refused(raw, "symlink without a target"));
    };
    if !climbs_out(path, &target) {
        return Ok(None);
    }
    let header = entry.header();
    Ok(Some(HeldSymlink {
        path: utf8(path, raw, "name")?,
        target: utf8(&target, raw, "target")?,
        uid: header.uid()?,
        gid: header.gid()?,
        mtime: header.mtime()?,
    }))
}

/// The bytes read but not yet passed on, and where they start in the archive.
struct Pending {
    buf: Rc<RefCell<Vec<u8>>>,
    start: u64,
}

impl Pending {
    /// Passes on everything read so far.
    fn flush(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let mut buf = self.buf.borrow_mut();
        out.write_all(&buf)?;
        self.start += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    /// Passes on what was read before archive offset `end`, and drops the rest.
    fn flush_until(&mut self, end: u64, out: &mut dyn Write) -> io::Result<()> {
        let mut buf = self.buf.borrow_mut();
        let keep = usize::try_from(end.saturating_sub(self.start))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        out.write_all(&buf[..keep])?;
        self.start += buf.len() as u64;
        buf.clear();
        Ok(())
    }
}

/// Reads a tar from `input` and writes the same bytes to `out`, failing at the first unsafe entry
/// before any of its bytes are written. Symlinks that point above the root are not written; they
/// are returned instead.
pub fn check_and_forward(
    input: &mut dyn Read,
    out: &mut dyn Write,
) -> io::Result<Vec<HeldSymlink>> {
    let buffer = Rc::new(RefCell::new(Vec::new()));
    let mut pending = Pending {
        buf: Rc::clone(&buffer),
        start: 0,
    };
    let mut archive = tar::Archive::new(Recorder {
        inner: input,
        pending: buffer,
    });
    let mut symlinks: HashSet<PathBuf> = HashSet::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut held = Vec::new();
    // Where the previous entry's data, padded to a whole block, ends in the archive.
    let mut previous_end = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let path = contained(&raw)?;
        if path.ancestors().skip(1).any(|a| symlinks.contains(a)) {
            return Err(refused(&raw, "it lies below a symlink of the archive"));
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            symlinks.insert(path.clone());
            if let Some(link) = held_symlink(&entry, &raw, &path)? {
                if entry.size() != 0 {
                    return Err(refused(&raw, "a symlink with data"));
                }
                // The previous entry's padding goes on; this entry's header (and any PAX
                // records before it) do not.
                pending.flush_until(previous_end, out)?;
                previous_end = entry.raw_file_position();
                held.push(link);
                continue;
            }
        } else if kind.is_hard_link() {
            let target = entry
                .link_name()?
                .ok_or_else(|| refused(&raw, "hard link without a target"))?;
            let target = contained(&target)?;
            if !seen.contains(&target) {
                return Err(refused(&raw, "hard link to a file outside the archive"));
            }
        }
        pending.flush(out)?;
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            pending.flush(out)?;
        }
        previous_end = entry.raw_file_position() + entry.size().next_multiple_of(BLOCK);
        seen.insert(path);
    }
    // The end-of-archive blocks, and any padding after them (readers stop before it).
    pending.flush(out)?;
    drop(archive);
    io::copy(input, out)?;
    Ok(held)
}

/// A tar block.
const BLOCK: u64 = 512;

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().expect("tar")
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_uid(1234);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).expect("append");
    }

    /// Writes a raw header with any name, bypassing the builder's own path checks.
    fn raw_entry(name: &str, kind: tar::EntryType, link: &str) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_size(0);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn run(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let held = check_and_forward(&mut &data[..], &mut out)?;
        assert!(held.is_empty(), "{held:?}");
        Ok(out)
    }

    fn symlink(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_uid(7);
        h.set_gid(8);
        h.set_mtime(1_577_934_245);
        b.append_link(&mut h, name, target).expect("link");
    }

    #[test]
    fn symlinks_climbing_above_the_root_are_held_back_and_returned() {
        let long_target = format!("../{}", "t".repeat(150));
        let data = archive(|b| {
            file(b, "./a.txt", b"hello");
            symlink(b, "./dir/inside", "../a.txt");
            file(b, "./odd.bin", &[9u8; 1000]);
            symlink(b, "./dir/out", "../../share/doc");
            symlink(b, "./long", &long_target);
            symlink(b, "./abs", "/etc/hostname");
            file(b, "./z.txt", b"after");
        });
        let mut out = Vec::new();
        let held = check_and_forward(&mut &data[..], &mut out).expect("safe");
        let held_paths: Vec<(&str, &str)> = held
            .iter()
            .map(|h| (h.path.as_str(), h.target.as_str()))
            .collect();
        assert_eq!(
            held_paths,
            [
                ("dir/out", "../../share/doc"),
                ("long", long_target.as_str())
            ]
        );
        assert_eq!(
            (held[0].uid, held[0].gid, held[0].mtime),
            (7, 8, 1_577_934_245)
        );
        // What was let through is a valid tar of every other entry.
        let mut rest = tar::Archive::new(&out[..]);
        let entries: Vec<(String, Vec<u8>)> = rest
            .entries()
            .expect("entries")
            .map(|e| {
                let mut e = e.expect("entry");
                let mut data = Vec::new();
                e.read_to_end(&mut data).expect("data");
                (e.path().expect("path").display().to_string(), data)
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.txt", "dir/inside", "odd.bin", "abs", "z.txt"]);
        assert_eq!(entries[2].1, vec![9u8; 1000]);
        assert_eq!(entries[4].1, b"after");
    }

    #[test]
    fn climbing_out_is_judged_from_the_links_folder() {
        for (path, target, out) in [
            ("a/b/l", "../../x", false),
            ("a/b/l", "../../../x", true),
            ("l", "..", true),
            ("l", "./x/../y", false),
            ("a/l", "x/../../..", true),
            ("l", "/abs/../../..", false),
        ] {
            assert_eq!(
                climbs_out(Path::new(path), Path::new(target)),
                out,
                "{path} -> {target}"
            );
        }
    }

    #[test]
    fn a_safe_archive_passes_byte_for_byte() {
        let long = format!("dir/{}", "é".repeat(90));
        let data = archive(|b| {
            file(b, "./a.txt", b"hello");
            file(b, &long, &vec![7u8; 100_000]);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "link", "/etc/passwd").expect("link");
        });
        assert_eq!(run(&data).expect("safe"), data);
    }

    #[test]
    fn parent_and_absolute_paths_are_refused_before_any_byte_is_written() {
        for (name, why) in [
            ("../evil", ".."),
            ("/etc/evil", "absolute"),
            ("a/../../x", ".."),
        ] {
            let mut data = raw_entry(name, tar::EntryType::Regular, "");
            data.extend_from_slice(&[0u8; 1024]);
            let mut out = Vec::new();
            let err = check_and_forward(&mut &data[..], &mut out).expect_err(name);
            assert!(err.to_string().contains(why), "{err}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn entries_below_a_symlink_are_refused() {
        let mut data = raw_entry("escape", tar::EntryType::Symlink, "/etc");
        data.extend(raw_entry("escape/passwd", tar::EntryType::Regular, ""));
        data.extend_from_slice(&[0u8; 1024]);
        let err = run(&data).expect_err("through symlink");
        assert!(err.to_string().contains("below a symlink"), "{err}");
    }

    #[test]
    fn hard_links_must_point_inside_the_archive() {
        let mut data = raw_entry("h", tar::EntryType::Link, "/etc/shadow");
        data.extend_from_slice(&[0u8; 1024]);
        assert!(run(&data).is_err());
        let mut data = raw_entry("h", tar::EntryType::Link, "not-there");
        data.extend_from_slice(&[0u8; 1024]);
        assert!(run(&data).is_err());
    }
}
