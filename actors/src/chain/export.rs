//! A chain's archive from Docker's archive API, for volumes not read from their host folder: the
//! whole volume still streams through Docker (the read costs what it costs), but each entry's
//! header — type, size, mtime, mode, owner — is compared with the parent backup's manifest, and
//! only changed entries are stored: the upload and the storage are what changed. Folders are
//! stored where Docker lists them, and, in an incremental archive, once more at the end as GNU
//! dumpdir records (a folder's full listing is known only once its last entry has passed), so that
//! GNU tar's `--listed-incremental` extraction removes what is gone.
//!
//! Headers carry whole seconds and no ctime or inode, so a change that keeps a file's size and
//! mtime (a `touch -r` after an edit) is not seen here; the host-folder read compares ctime and
//! inode too. Entries are written again by the `tar` crate: PAX records (extended attributes) of
//! Docker's stream are not kept, as the host-folder read does not keep them either.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

use tar::{EntryType, Header};
use tokio::sync::oneshot;

use super::manifest::{normalize, Entry};
use crate::codec;
use crate::host_volume::{ChainWalk, TarReport};
use crate::stream::ByteStream;

/// Docker's export of a volume turned into an archive of the chain `walk` describes; the receiver
/// yields the manifest of the whole tree once everything was handed on.
pub fn from_export(
    export: ByteStream,
    walk: ChainWalk,
) -> (ByteStream, oneshot::Receiver<(TarReport, Vec<Entry>)>) {
    codec::blocking_source(move |out| {
        let mut input = codec::blocking_reader(export);
        let read = rewrite(&mut input, out, &walk)?;
        io::copy(&mut input, &mut io::sink())?;
        Ok(read)
    })
}

/// A folder seen in the stream: its header, and its dumpdir so far.
struct Folder {
    key: Vec<u8>,
    header: Header,
    dumpdir: Vec<u8>,
}

/// Copies the changed entries of `input` (a tar of the whole volume) to `out`.
pub fn rewrite(
    input: &mut dyn Read,
    out: &mut dyn Write,
    walk: &ChainWalk,
) -> io::Result<(TarReport, Vec<Entry>)> {
    let racy_from = super::racy_from();
    let mut builder = tar::Builder::new(out);
    let mut archive = tar::Archive::new(input);
    let mut report = TarReport::default();
    let mut entries = Vec::new();
    let mut folders: Vec<Folder> = Vec::new();
    let mut folder_at: HashMap<Vec<u8>, usize> = HashMap::new();
    // The origin of every entry recorded so far, by path.
    let mut current: HashMap<Vec<u8>, u32> = HashMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let key = normalize(&raw).to_vec();
        let mut head = gnu(entry.header(), entry.size())?;
        let kind = head.entry_type();
        let mut record = Entry {
            path: key.clone(),
            kind: char::from(kind.as_byte()),
            size: if kind.is_file() { entry.size() } else { 0 },
            mtime: i64::try_from(head.mtime()?).unwrap_or(i64::MAX),
            mtime_ns: 0,
            ctime: 0,
            ctime_ns: 0,
            inode: 0,
            mode: head.mode()? & 0o7777,
            uid: u32::try_from(head.uid()?).unwrap_or(u32::MAX),
            gid: u32::try_from(head.gid()?).unwrap_or(u32::MAX),
            origin: walk.position,
            racy: false,
            link: match entry.link_name_bytes() {
                Some(l) if kind.is_hard_link() => Some(normalize(&l).to_vec()),
                Some(l) if kind.is_symlink() => Some(l.into_owned()),
                _ => None,
            },
        };
        record.racy = record.mtime >= racy_from;
        if record.kind == '\0' {
            record.kind = '0';
        }
        let folder = kind.is_dir();
        let name = key.rsplit(|b| *b == b'/').next().unwrap_or(&key).to_vec();
        let parent = match key.iter().rposition(|b| *b == b'/') {
            Some(i) => key[..i].to_vec(),
            None => Vec::new(),
        };
        let unchanged = walk
            .previous
            .as_ref()
            .filter(|_| !folder)
            .and_then(|p| p.get(&key))
            .filter(|before| record.unchanged_since(before) && before.link == record.link)
            // A hard link stays only while what it links to is in the tree from the same archive.
            .filter(|before| match (&before.link, before.kind) {
                (Some(target), '1') => current.get(target) == Some(&before.origin),
                _ => true,
            })
            .map(|before| before.origin);
        let code = match (folder, unchanged) {
            (true, _) => b'D',
            (false, Some(origin)) => {
                record.origin = origin;
                b'N'
            }
            (false, None) => b'Y',
        };
        if !key.is_empty() {
            if let Some(&at) = folder_at.get(&parent) {
                let d = &mut folders[at].dumpdir;
                d.push(code);
                d.extend_from_slice(&name);
                d.push(0);
            }
        }
        if folder {
            folder_at.insert(key.clone(), folders.len());
            folders.push(Folder {
                key: key.clone(),
                header: head.clone(),
                dumpdir: Vec::new(),
            });
        }
        current.insert(key.clone(), record.origin);
        if code != b'N' {
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            append(&mut builder, &mut head, &key, link.as_deref(), &mut entry)?;
            report.entries += 1;
        }
        entries.push(record);
    }
    if walk.previous.is_some() {
        for f in folders {
            let mut head = f.header;
            let mut dumpdir = f.dumpdir;
            dumpdir.push(0);
            head.set_entry_type(EntryType::new(b'D'));
            head.set_size(dumpdir.len() as u64);
            append(
                &mut builder,
                &mut head,
                &f.key,
                None,
                &mut dumpdir.as_slice(),
            )?;
        }
    }
    builder.finish()?;
    Ok((report, entries))
}

/// The same entry in a GNU header: Docker writes POSIX (ustar/PAX) headers, and GNU tar reads
/// dumpdir records only in archives of its own format.
fn gnu(from: &Header, size: u64) -> io::Result<Header> {
    let mut head = Header::new_gnu();
    head.set_entry_type(from.entry_type());
    head.set_mode(from.mode()?);
    head.set_uid(from.uid()?);
    head.set_gid(from.gid()?);
    head.set_mtime(from.mtime()?);
    head.set_size(size);
    if let (Ok(Some(major)), Ok(Some(minor))) = (from.device_major(), from.device_minor()) {
        head.set_device_major(major)?;
        head.set_device_minor(minor)?;
    }
    Ok(head)
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    head: &mut Header,
    key: &[u8],
    link: Option<&[u8]>,
    data: &mut dyn Read,
) -> io::Result<()> {
    if key.is_empty() {
        let name = &mut head.as_old_mut().name;
        name.fill(0);
        name[..2].copy_from_slice(b"./");
        head.set_cksum();
        return builder.append(head, data);
    }
    let path = OsStr::from_bytes(key);
    let kind = head.entry_type();
    match link {
        // The header's own link name field may be cut; the entry's is whole (GNU or PAX).
        Some(target) if kind.is_hard_link() || kind.is_symlink() => {
            builder.append_link(head, path, OsStr::from_bytes(target))
        }
        _ => builder.append_data(head, path, data),
    }
}
