//! One uncompressed tar of a volume's tree at a backup of a chain, read from the chain's archives
//! in turn (the full one first): from each archive, exactly the entries whose origin in the
//! backup's manifest is that archive. Each path of the tree is so taken once, from the archive
//! that holds it as it was at that backup; an entry gone by then is in no archive's share. GNU
//! dumpdir records become plain folder entries. Every archive's size and SHA-256 are checked
//! against its row as it is read, and a mismatch ends the stream with an error, never a clean end.
//!
//! The entries are written again (headers as stored, paths and link names re-encoded by the `tar`
//! crate), so a tar of a chain is the same kind of GNU tar the host-folder read writes.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt as _;
use tar::EntryType;
use tokio::runtime::Handle;

use super::manifest::{normalize, Entry};
use crate::codec::{self, Digest, Payload};
use crate::storage::TargetStorage;
use crate::stream::ByteStream;

/// One archive of a chain.
#[derive(Debug, Clone)]
pub struct Part {
    pub key: String,
    pub format: codec::Format,
    pub expected: Digest,
}

/// How a read of a chain is watched: the bytes downloaded are counted on `meter` (entries of an
/// archive that a later archive supersedes are read and skipped, so the output alone would look
/// stalled), and `cut` is set when a download itself failed (then an error says nothing about the
/// archives).
#[derive(Clone, Default)]
pub struct ReadWatch {
    pub meter: Option<crate::progress::Meter>,
    pub cut: Arc<AtomicBool>,
}

/// The tree at the last of `parts`, whose manifest gave `origins` (path → chain position) and the
/// root folder's record `root`; part `i` is the archive at chain position `i`. The root entry
/// comes first: a restore takes the root's owner, mode and time from the first entry only. Each
/// archive must hold exactly the entries the manifest takes from it.
pub fn tree(
    storage: TargetStorage,
    parts: Vec<Part>,
    origins: HashMap<Vec<u8>, u32>,
    root: Option<Entry>,
    watch: ReadWatch,
) -> ByteStream {
    let handle = Handle::current();
    codec::blocking_source(move |out| {
        let wanted = wanted(&origins);
        let mut builder = tar::Builder::new(out);
        if let Some(root) = &root {
            builder.append(&root_header(root), io::empty())?;
        }
        for (position, part) in parts.iter().enumerate() {
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            let download = match handle.block_on(storage.download(&part.key)) {
                Ok(download) => download,
                Err(e) => {
                    watch.cut.store(true, Ordering::Relaxed);
                    return Err(io::Error::other(format!("{}: {e}", part.key)));
                }
            };
            let (meter, cut) = (watch.meter.clone(), Arc::clone(&watch.cut));
            let download: ByteStream = Box::pin(download.inspect(move |chunk| match chunk {
                Ok(c) => {
                    if let Some(m) = &meter {
                        m.add(c.len() as u64);
                    }
                }
                Err(_) => cut.store(true, Ordering::Relaxed),
            }));
            let (decoded, _) = codec::unpack(
                download,
                part.format.clone(),
                Payload::Raw,
                part.expected.clone(),
            );
            let mut reader = codec::blocking_reader(decoded);
            let copied = share(&mut reader, &mut builder, &origins, position)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", part.key)))?;
            // To the end of the stream, where its checksum is checked.
            io::copy(&mut reader, &mut io::sink())?;
            let wanted = wanted.get(&position).copied().unwrap_or(0);
            if copied != wanted {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: the archive holds {copied} of the {wanted} entries the backup's \
                         manifest takes from it",
                        part.key
                    ),
                ));
            }
        }
        builder.finish()?;
        Ok(())
    })
    .0
}

/// How many entries (the root aside) the tree takes from each archive.
pub(super) fn wanted(origins: &HashMap<Vec<u8>, u32>) -> HashMap<u32, u64> {
    let mut wanted: HashMap<u32, u64> = HashMap::new();
    for (path, origin) in origins {
        if !path.is_empty() {
            *wanted.entry(*origin).or_default() += 1;
        }
    }
    wanted
}

/// The root folder's entry, from its manifest record.
pub(super) fn root_header(root: &Entry) -> tar::Header {
    let mut head = tar::Header::new_gnu();
    head.set_entry_type(EntryType::Directory);
    head.set_mode(root.mode);
    head.set_uid(u64::from(root.uid));
    head.set_gid(u64::from(root.gid));
    head.set_mtime(u64::try_from(root.mtime).unwrap_or(0));
    head.set_size(0);
    head.as_old_mut().name[..2].copy_from_slice(b"./");
    head.set_cksum();
    head
}

/// Copies the entries of one archive whose origin is `position`, but the root (which [`tree`]
/// writes first); returns how many.
pub fn share<W: Write>(
    input: &mut dyn BufRead,
    builder: &mut tar::Builder<W>,
    origins: &HashMap<Vec<u8>, u32>,
    position: u32,
) -> io::Result<u64> {
    let mut archive = tar::Archive::new(input as &mut dyn Read);
    // An archive read through Docker lists a folder twice: where Docker lists it, and as a
    // dumpdir at the end. The first one is taken.
    let mut folders = HashSet::new();
    let mut copied = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let key = normalize(&raw);
        if key.is_empty() || origins.get(key) != Some(&position) {
            continue;
        }
        let mut head = entry.header().clone();
        let kind = head.entry_type();
        let folder = kind == EntryType::Directory || kind.as_byte() == b'D';
        if folder {
            if !folders.insert(key.to_vec()) {
                continue;
            }
            head.set_entry_type(EntryType::Directory);
            head.set_size(0);
        }
        copied += 1;
        let path = OsStr::from_bytes(key);
        match kind {
            _ if folder => builder.append_data(&mut head, path, io::empty())?,
            EntryType::Link | EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "a link entry without a target")
                    })?;
                builder.append_link(&mut head, path, OsStr::from_bytes(&target))?;
            }
            _ => builder.append_data(&mut head, path, &mut entry)?,
        }
    }
    Ok(copied)
}
