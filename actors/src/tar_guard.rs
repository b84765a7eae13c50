//! Checks a tar stream entry by entry and lets through only what stays inside the folder it is
//! extracted into: no absolute paths, no `..`, no entry below a symlink the archive made, no hard
//! link to something outside the archive. The bytes let through are the archive's own, unchanged
//! (PAX records, long names, owners and times stay exactly as the backup wrote them), and each
//! header is let through only after its entry passed.

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

fn flush(pending: &Rc<RefCell<Vec<u8>>>, out: &mut dyn Write) -> io::Result<()> {
    let mut buf = pending.borrow_mut();
    out.write_all(&buf)?;
    buf.clear();
    Ok(())
}

/// Reads a tar from `input` and writes the same bytes to `out`, failing at the first unsafe entry
/// before any of its bytes are written.
pub fn check_and_forward(input: &mut dyn Read, out: &mut dyn Write) -> io::Result<()> {
    let pending = Rc::new(RefCell::new(Vec::new()));
    let mut archive = tar::Archive::new(Recorder {
        inner: input,
        pending: Rc::clone(&pending),
    });
    let mut symlinks: HashSet<PathBuf> = HashSet::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
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
        } else if kind.is_hard_link() {
            let target = entry
                .link_name()?
                .ok_or_else(|| refused(&raw, "hard link without a target"))?;
            let target = contained(&target)?;
            if !seen.contains(&target) {
                return Err(refused(&raw, "hard link to a file outside the archive"));
            }
        }
        flush(&pending, out)?;
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            flush(&pending, out)?;
        }
        seen.insert(path);
    }
    // The end-of-archive blocks, and any padding after them (readers stop before it).
    flush(&pending, out)?;
    drop(archive);
    io::copy(input, out)?;
    Ok(())
}

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
        check_and_forward(&mut &data[..], &mut out)?;
        Ok(out)
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
