//! The manifest of a backup in a chain: every entry of the volume's tree at that backup, with what
//! change detection compares (type, size, times, inode, mode, owner) and the chain position of the
//! archive that holds the entry's contents. Stored beside the archive as JSON lines (compressed
//! like the archive), a header line first:
//!
//! ```text
//! {"format":"vardo-manifest/1","backup":"…","position":2}
//! {"p":"uploads/a.jpg","t":"0","s":1234,"m":1700000000,"mn":5,"c":1700000000,"cn":5,"i":42,"mo":420,"u":0,"g":0,"o":1}
//! ```
//!
//! A path that is not UTF-8 is stored as hex in `px` instead of `p`. Paths are relative to the
//! volume root, without `./`; the root itself is the empty path.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

const FORMAT: &str = "vardo-manifest/1";

/// What a manifest records of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(skip)]
    pub path: Vec<u8>,
    /// The tar entry type (`0` file, `5` folder, `2` symlink, `1` hard link, `3`/`4` devices,
    /// `6` FIFO).
    #[serde(rename = "t")]
    pub kind: char,
    #[serde(rename = "s")]
    pub size: u64,
    #[serde(rename = "m")]
    pub mtime: i64,
    #[serde(rename = "mn")]
    pub mtime_ns: u32,
    #[serde(rename = "c")]
    pub ctime: i64,
    #[serde(rename = "cn")]
    pub ctime_ns: u32,
    #[serde(rename = "i")]
    pub inode: u64,
    #[serde(rename = "mo")]
    pub mode: u32,
    #[serde(rename = "u")]
    pub uid: u32,
    #[serde(rename = "g")]
    pub gid: u32,
    /// Chain position of the archive that holds this entry as it is here.
    #[serde(rename = "o")]
    pub origin: u32,
    /// Changed (by its ctime) within a second of the read that recorded it: a change in the same
    /// clock tick would leave every compared field as it is, so the next backup reads it again
    /// (what git calls a racy entry).
    #[serde(rename = "r", default, skip_serializing_if = "std::ops::Not::not")]
    pub racy: bool,
    /// For an entry stored as a hard link, the path it links to in its archive; for a symlink,
    /// its target (when known).
    #[serde(skip)]
    pub link: Option<Vec<u8>>,
}

impl Entry {
    /// Whether the entry is as `earlier` recorded it, by everything but its origin: then its
    /// contents are not read again.
    pub fn unchanged_since(&self, earlier: &Entry) -> bool {
        !earlier.racy
            && self.kind == earlier.kind
            && self.size == earlier.size
            && (self.mtime, self.mtime_ns) == (earlier.mtime, earlier.mtime_ns)
            && (self.ctime, self.ctime_ns) == (earlier.ctime, earlier.ctime_ns)
            && self.inode == earlier.inode
            && self.mode == earlier.mode
            && (self.uid, self.gid) == (earlier.uid, earlier.gid)
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    backup: Uuid,
    position: u32,
}

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    px: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lx: Option<String>,
    #[serde(flatten)]
    entry: Entry,
}

/// A name as JSON: the text when it is UTF-8, else hex in the second field.
fn as_text(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Some(s.to_owned()), None),
        Err(_) => (None, Some(hex::encode(bytes))),
    }
}

/// A backup's whole tree, in archive order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub backup_id: Uuid,
    pub position: u32,
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest could not be read: {0}")]
    Io(#[from] io::Error),
    #[error("the manifest is damaged at line {line}: {why}")]
    Damaged { line: usize, why: String },
}

impl Manifest {
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer(
            &mut *out,
            &Header {
                format: FORMAT.to_owned(),
                backup: self.backup_id,
                position: self.position,
            },
        )?;
        out.write_all(b"\n")?;
        for e in &self.entries {
            let (p, px) = as_text(&e.path);
            let (l, lx) = e.link.as_deref().map_or((None, None), as_text);
            serde_json::to_writer(
                &mut *out,
                &Line {
                    p,
                    px,
                    l,
                    lx,
                    entry: e.clone(),
                },
            )?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write(&mut out);
        out
    }

    pub fn read(input: impl BufRead) -> Result<Self, ManifestError> {
        let mut lines = BoundedLines { input, number: 0 };
        let damaged = |line: usize, why: String| ManifestError::Damaged { line, why };
        let first = lines
            .next()
            .ok_or_else(|| damaged(1, "it is empty".into()))??;
        let header: Header = serde_json::from_str(&first).map_err(|e| damaged(1, e.to_string()))?;
        if header.format != FORMAT {
            return Err(damaged(1, format!("unknown format {:?}", header.format)));
        }
        let mut entries = Vec::new();
        for (i, line) in lines.enumerate() {
            let line = line?;
            let parsed: Line =
                serde_json::from_str(&line).map_err(|e| damaged(i + 2, e.to_string()))?;
            let path = match (parsed.p, parsed.px) {
                (Some(p), None) => p.into_bytes(),
                (None, Some(px)) => hex::decode(px).map_err(|e| damaged(i + 2, e.to_string()))?,
                _ => {
                    return Err(damaged(
                        i + 2,
                        "an entry needs exactly one of p and px".into(),
                    ))
                }
            };
            let link = match (parsed.l, parsed.lx) {
                (Some(l), None) => Some(l.into_bytes()),
                (None, Some(lx)) => {
                    Some(hex::decode(lx).map_err(|e| damaged(i + 2, e.to_string()))?)
                }
                (None, None) => None,
                _ => return Err(damaged(i + 2, "an entry has both l and lx".into())),
            };
            entries.push(Entry {
                path,
                link,
                ..parsed.entry
            });
        }
        Ok(Self {
            backup_id: header.backup,
            position: header.position,
            entries,
        })
    }

    /// The entries by path, for change detection against this manifest.
    pub fn by_path(self) -> HashMap<Vec<u8>, Entry> {
        self.entries
            .into_iter()
            .map(|e| (e.path.clone(), e))
            .collect()
    }

    /// Each path's origin: which archive of the chain a restore takes it from.
    pub fn origins(&self) -> HashMap<Vec<u8>, u32> {
        self.entries
            .iter()
            .map(|e| (e.path.clone(), e.origin))
            .collect()
    }
}

/// The longest line a manifest holds: a path and a link target of 4096 bytes each, hex-encoded,
/// and the fields, fit with room to spare. A longer line is damage, and is not read into memory
/// whole (a manifest is parsed as it streams, before its sha256 is known at its end).
const MAX_LINE: usize = 64 * 1024;

/// Lines of at most [`MAX_LINE`] bytes.
struct BoundedLines<R> {
    input: R,
    number: usize,
}

impl<R: BufRead> Iterator for BoundedLines<R> {
    type Item = Result<String, ManifestError>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::io::Read as _;
        self.number += 1;
        let mut line = Vec::new();
        let read = (&mut self.input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line);
        match read {
            Err(e) => Some(Err(e.into())),
            Ok(0) => None,
            Ok(_) if line.len() > MAX_LINE => Some(Err(ManifestError::Damaged {
                line: self.number,
                why: format!("a line longer than {MAX_LINE} bytes"),
            })),
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Some(String::from_utf8(line).map_err(|e| ManifestError::Damaged {
                    line: self.number,
                    why: e.to_string(),
                }))
            }
        }
    }
}

/// A tar entry's path as a manifest keys it: without `./` in front or `/` behind; the root is
/// empty.
pub fn normalize(path: &[u8]) -> &[u8] {
    let mut p = path;
    while let Some(rest) = p.strip_prefix(b"./") {
        p = rest;
    }
    if p == b"." {
        return b"";
    }
    while let Some(rest) = p.strip_suffix(b"/") {
        p = rest;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &[u8], origin: u32) -> Entry {
        Entry {
            path: path.to_vec(),
            kind: '0',
            size: 3,
            mtime: 1_700_000_000,
            mtime_ns: 7,
            ctime: 1_700_000_001,
            ctime_ns: 9,
            inode: 42,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            origin,
            racy: false,
            link: None,
        }
    }

    #[test]
    fn a_manifest_reads_back_what_was_written_with_any_name() {
        let m = Manifest {
            backup_id: Uuid::new_v4(),
            position: 3,
            entries: vec![
                entry(b"", 3),
                entry(b"plain.txt", 0),
                entry(b"-rf $(x)\n\"q\"*?[", 1),
                entry(b"\xff\xfebin", 2),
                Entry {
                    link: Some(b"\xfetarget".to_vec()),
                    ..entry(b"hard", 1)
                },
                Entry {
                    link: Some(b"plain.txt".to_vec()),
                    ..entry(b"soft", 1)
                },
            ],
        };
        let bytes = m.to_bytes();
        assert_eq!(Manifest::read(&bytes[..]).expect("read"), m);
    }

    #[test]
    fn a_damaged_manifest_is_refused_with_its_line() {
        let m = Manifest {
            backup_id: Uuid::nil(),
            position: 0,
            entries: vec![entry(b"a", 0)],
        };
        let mut bytes = m.to_bytes();
        bytes.truncate(bytes.len() - 10);
        let e = Manifest::read(&bytes[..]).expect_err("damaged");
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(Manifest::read(&b""[..]).is_err());
        let mut long = m.to_bytes();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        let e = Manifest::read(&long[..]).expect_err("a line too long");
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[test]
    fn changes_are_what_detection_compares() {
        let a = entry(b"f", 0);
        let mut b = entry(b"f", 5);
        assert!(b.unchanged_since(&a), "origin is not compared");
        b.ctime_ns += 1;
        assert!(!b.unchanged_since(&a), "a changed ctime is a change");
        let mut c = entry(b"f", 0);
        c.inode = 43;
        assert!(!c.unchanged_since(&a));
        let racy = Entry {
            racy: true,
            ..entry(b"f", 0)
        };
        assert!(
            !entry(b"f", 0).unchanged_since(&racy),
            "a racy entry is read again"
        );
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize(b"./"), b"");
        assert_eq!(normalize(b"."), b"");
        assert_eq!(normalize(b"./a/b/"), b"a/b");
        assert_eq!(normalize(b"a"), b"a");
    }
}
