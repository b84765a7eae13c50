//! The SSH private key of an `ssh` target as a 0600 temporary file, because the `ssh` binary that
//! opendal's SFTP service drives (openssh crate, `ssh -i FILE -o IdentitiesOnly=yes`) only takes a
//! path. The file is removed when the value is dropped; `TargetStorage` holds it in an `Arc` so it
//! lives as long as any clone of the storage (the SFTP pool opens new `ssh` sessions lazily).

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use tempfile::TempPath;

use super::StorageError;

pub(crate) struct KeyFile {
    path: TempPath,
}

impl KeyFile {
    /// Writes `key` to a new file readable by this user only (ssh refuses group/world readable keys).
    pub(crate) fn write(key: &SecretString) -> Result<Self, StorageError> {
        let mut file = tempfile::Builder::new()
            .prefix("vardo-ssh-key-")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile()
            .map_err(StorageError::KeyFile)?;
        let key = key.expose_secret();
        file.write_all(key.as_bytes())
            .map_err(StorageError::KeyFile)?;
        // OpenSSH rejects a key file whose last line has no newline ("invalid format").
        if !key.ends_with('\n') {
            file.write_all(b"\n").map_err(StorageError::KeyFile)?;
        }
        file.as_file().sync_all().map_err(StorageError::KeyFile)?;
        Ok(Self {
            path: file.into_temp_path(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_private_newline_terminated_and_removed_on_drop() -> std::io::Result<()> {
        let key = SecretString::from(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----",
        );
        let Ok(file) = KeyFile::write(&key) else {
            panic!("key file written")
        };
        let path = file.path().to_path_buf();
        let meta = std::fs::metadata(&path)?;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path)?;
        assert_eq!(text, format!("{}\n", key.expose_secret()));
        drop(file);
        assert!(!path.exists());
        Ok(())
    }
}
