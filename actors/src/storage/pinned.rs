//! Reading one object again as the same object. A restore that verifies an archive in one download
//! and replays it in a second needs the second to read what the first verified; [`ObjectPin`] is
//! what a target says identifies the object, and [`TargetStorage::download_pinned`] refuses to read
//! an object that no longer matches it.
//!
//! What a pin can prove depends on the backend. S3 kinds report an ETag (and a version id on a
//! versioned bucket): the read is conditional (`If-Match`), so a server that honours it refuses a
//! replaced object with 412 before sending a byte. SFTP and local folders report only a size and a
//! last-modified time (SFTP: to the second); a replacement of the same size within that second,
//! or one that lands between the check and the read, is not seen here. Callers that must never
//! act on a replaced byte check the content as well (see `codec::blocks`).

use super::target_storage::TargetStorage;
use super::StorageError;
use crate::stream::ByteStream;
use opendal::ErrorKind;

/// What a stat of an object says about which object it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPin {
    pub size: u64,
    /// S3 kinds: the ETag as the server sent it, quotes included.
    pub etag: Option<String>,
    /// S3 kinds on a versioned bucket: the version id.
    pub version: Option<String>,
    /// As the backend reports it (S3 and SFTP: to the second).
    pub last_modified: Option<String>,
}

impl ObjectPin {
    /// How `now` differs from this pin, for an error message; `None` if it does not.
    pub fn difference(&self, now: &ObjectPin) -> Option<String> {
        let mut changes = Vec::new();
        if self.size != now.size {
            changes.push(format!("size {} → {}", self.size, now.size));
        }
        let mut compare = |what: &str, was: &Option<String>, is: &Option<String>| {
            if was != is {
                let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
                changes.push(format!("{what} {} → {}", show(was), show(is)));
            }
        };
        compare("ETag", &self.etag, &now.etag);
        compare("version", &self.version, &now.version);
        compare("last-modified", &self.last_modified, &now.last_modified);
        (!changes.is_empty()).then(|| changes.join(", "))
    }
}

impl TargetStorage {
    /// The pin of the object at `key` as it is now; an absent object is [`StorageError::NotFound`].
    #[tracing::instrument(skip(self), fields(kind = self.kind.as_str()))]
    pub async fn pin(&self, key: &str) -> Result<ObjectPin, StorageError> {
        let meta = self
            .op
            .stat(key)
            .await
            .map_err(|e| self.read_error(key, e))?;
        if meta.is_dir() {
            return Err(StorageError::NotFound {
                kind: self.kind.as_str(),
                key: key.to_owned(),
            });
        }
        Ok(ObjectPin {
            size: meta.content_length(),
            etag: meta.etag().map(str::to_owned),
            version: meta.version().map(str::to_owned),
            last_modified: meta.last_modified().map(|t| t.to_string()),
        })
    }

    /// [`StorageError::Changed`] unless the object at `key` still has the pin `pin`.
    pub async fn check_pin(&self, key: &str, pin: &ObjectPin) -> Result<(), StorageError> {
        let now = match self.pin(key).await {
            Err(StorageError::NotFound { .. }) => {
                return Err(self.changed(key, "it was removed".into()));
            }
            other => other?,
        };
        match pin.difference(&now) {
            None => Ok(()),
            Some(what) => Err(self.changed(key, what)),
        }
    }

    /// Streams the object at `key` if it still has the pin `pin`: the pin is checked first, the read
    /// covers exactly `pin.size` bytes (no second stat by opendal), and on S3 kinds it is
    /// conditional on the pinned ETag, so a server that honours `If-Match` refuses a replaced
    /// object ([`StorageError::Changed`]) — also when a cut read is resumed.
    #[tracing::instrument(skip(self, pin), fields(kind = self.kind.as_str()))]
    pub async fn download_pinned(
        &self,
        key: &str,
        pin: &ObjectPin,
    ) -> Result<ByteStream, StorageError> {
        self.check_pin(key, pin).await?;
        if pin.size == 0 {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let mut read = self.op.reader_with(key);
        if let (super::StorageKind::S3, Some(etag)) = (self.kind, pin.etag.as_deref()) {
            read = read.if_match(etag);
        }
        let reader = read.await.map_err(|e| match e.kind() {
            ErrorKind::NotFound => self.changed(key, "it was removed".into()),
            _ => self.read_error(key, e),
        })?;
        self.stream(key, reader, 0..pin.size).await
    }

    fn changed(&self, key: &str, what: String) -> StorageError {
        StorageError::Changed {
            kind: self.kind.as_str(),
            key: key.to_owned(),
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin() -> ObjectPin {
        ObjectPin {
            size: 10,
            etag: Some("\"abc\"".into()),
            version: None,
            last_modified: Some("2026-01-01T00:00:00Z".into()),
        }
    }

    #[test]
    fn the_same_pin_has_no_difference() {
        assert_eq!(pin().difference(&pin()), None);
    }

    #[test]
    fn a_difference_names_every_field_that_changed() {
        let now = ObjectPin {
            size: 11,
            etag: Some("\"def\"".into()),
            version: Some("v2".into()),
            ..pin()
        };
        assert_eq!(
            pin().difference(&now).as_deref(),
            Some("size 10 → 11, ETag \"abc\" → \"def\", version none → v2")
        );
    }
}
