//! One uncompressed tar of a volume's tree at a backup of a chain, read from the chain's archives
//! in turn (the full one first): from each archive, exactly the entries whose origin in the
//! backup's manifest is that archive. Each path of the tree is so taken once, from the archive
//! that holds it as it was at that backup; an entry gone by then is in no archive's share. GNU
//! dumpdir records become plain folder entries. Every archive's size and SHA-256 are checked
//! against its row as it is read, and a mismatch ends the stream with an error, never a clean end.
//!
//! The entries are written again (headers as stored, paths and link names re-encoded by the `tar`
//! crate), so a tar of a chain is the same kind of GNU tar the host-folder read writes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;

use tar::EntryType;
use tokio::runtime::Handle;

use super::manifest::normalize;
use crate::codec::{self, Digest, Payload};
use crate::model::Compression;
use crate::storage::TargetStorage;
use crate::stream::ByteStream;

/// One archive of a chain.
#[derive(Debug, Clone)]
pub struct Part {
    pub key: String,
    pub compression: Compression,
    pub expected: Digest,
}

/// The tree at the last of `parts`, whose manifest gave `origins` (path → chain position); part
/// `i` is the archive at chain position `i`.
pub fn tree(
    storage: TargetStorage,
    parts: Vec<Part>,
    origins: HashMap<Vec<u8>, u32>,
) -> ByteStream {
    let handle = Handle::current();
    codec::blocking_source(move |out| {
        let mut builder = tar::Builder::new(out);
        for (position, part) in parts.iter().enumerate() {
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            let download = handle
                .block_on(storage.download(&part.key))
                .map_err(|e| io::Error::other(format!("{}: {e}", part.key)))?;
            let (decoded, _) = codec::unpack(
                download,
                part.compression,
                Payload::Raw,
                part.expected.clone(),
            );
            let mut reader = codec::blocking_reader(decoded);
            share(&mut reader, &mut builder, &origins, position)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", part.key)))?;
            // To the end of the stream, where its checksum is checked.
            io::copy(&mut reader, &mut io::sink())?;
        }
        builder.finish()?;
        Ok(())
    })
    .0
}

/// Copies the entries of one archive whose origin is `position`.
pub fn share<W: Write>(
    input: &mut dyn BufRead,
    builder: &mut tar::Builder<W>,
    origins: &HashMap<Vec<u8>, u32>,
    position: u32,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(input as &mut dyn Read);
    // An archive read through Docker lists a folder twice: where Docker lists it, and as a
    // dumpdir at the end. The first one is taken.
    let mut folders = std::collections::HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let key = normalize(&raw);
        if origins.get(key) != Some(&position) {
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
        if key.is_empty() {
            let name = &mut head.as_old_mut().name;
            name.fill(0);
            name[..2].copy_from_slice(b"./");
            head.set_cksum();
            builder.append(&head, io::empty())?;
            continue;
        }
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
    Ok(())
}
