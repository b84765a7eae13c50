//! age decryption on the way back: before decompression, on the thread that hashes the download,
//! so that the decompressing thread, a restore's bottleneck, does no more work. (Encryption runs
//! on the compressing thread, see [`super::pack`].)

use std::io::{self, BufRead, Read};

use sha2::{Digest as _, Sha256};

use super::{mismatch, pump, ChannelWriter, Digest};
use crate::encryption::Keyring;

/// Hashes the bytes its reader hands out (read or consumed).
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: BufRead> Hashing<R> {
    fn digest(self) -> Digest {
        Digest {
            size: self.size,
            sha256_hex: hex::encode(self.hasher.finalize()),
        }
    }
}

impl<R: BufRead> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Hashing<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        // The buffered bytes are still there: a second fill_buf does no I/O.
        if let Ok(buf) = self.inner.fill_buf() {
            let n = amt.min(buf.len());
            self.hasher.update(&buf[..n]);
            self.size += n as u64;
        }
        self.inner.consume(amt);
    }
}

/// Checks the encrypted `source` against `expected` while decrypting it into `writer` with
/// `keyring`. A checksum mismatch is reported before a failed decryption (a changed byte fails
/// both; the mismatch says what happened).
pub(super) fn verify_and_decrypt(
    source: &mut dyn BufRead,
    writer: &mut ChannelWriter,
    expected: &Digest,
    keyring: &Keyring,
) -> io::Result<()> {
    let mut hashed = Hashing {
        inner: source,
        hasher: Sha256::new(),
        size: 0,
    };
    let opened = decrypt(&mut hashed, writer, keyring);
    let drained = io::copy(&mut hashed, &mut io::sink());
    let actual = hashed.digest();
    if &actual != expected {
        return Err(mismatch(&actual, expected));
    }
    opened?;
    drained?;
    Ok(())
}

fn decrypt(
    source: &mut dyn BufRead,
    writer: &mut ChannelWriter,
    keyring: &Keyring,
) -> io::Result<()> {
    let decryptor = age::Decryptor::new_buffered(source).map_err(|e| failed(&e, keyring))?;
    let mut plain = decryptor
        .decrypt(keyring.identities())
        .map_err(|e| failed(&e, keyring))?;
    pump(&mut plain, writer)
}

fn failed(e: &age::DecryptError, keyring: &Keyring) -> io::Error {
    let why = match e {
        age::DecryptError::NoMatchingKeys => format!(
            "no identity of this engine opens the archive{}",
            if keyring.is_empty() {
                " (it holds none: set VARDO_AGE_IDENTITY_FILE or add one with `vardo-backup \
                 identity`)"
            } else {
                ""
            }
        ),
        age::DecryptError::Io(io) => return io::Error::new(io.kind(), io.to_string()),
        other => format!("the archive does not decrypt: {other}"),
    };
    io::Error::new(io::ErrorKind::InvalidData, why)
}
