//! The storage layer under the read models: a generation's tree to read, a batch of writes to fill, key helpers and the storage error.
//!
//! Read models see only these handles, never sled itself; values go through
//! `shared::codec` (bincode behind a format byte), keys are plain bytes whose
//! first byte is the prefix of the read model that owns them.

use std::ops::Bound;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use shared::codec::{decode_snapshot, encode_snapshot, CodecError};

/// Stored bytes (a key or a value), shared rather than copied.
pub type Bytes = sled::IVec;

/// A failure of the sled database underneath.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {} is locked by another process (is another query-service using it?)", .0.display())]
    Locked(PathBuf),
    #[error("cannot open data directory {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt stored value: {0}")]
    Codec(#[from] CodecError),
    /// The served generation does not hold this read model (or holds another
    /// version of it): it is being rebuilt from the log.
    #[error("the {0} read model is being rebuilt from the event log")]
    Rebuilding(&'static str),
}

/// Read access to one generation's tree.
#[derive(Clone)]
pub struct Reader {
    tree: sled::Tree,
}

/// The writes of one batch of events, applied atomically by the generation.
#[derive(Default)]
pub struct Writes {
    batch: sled::Batch,
}

impl Reader {
    pub(crate) fn new(tree: sled::Tree) -> Self {
        Reader { tree }
    }

    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(decode_snapshot(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Entries whose key starts with `prefix`, in key order, from the first
    /// key after `after` (a whole key) or from the start of the prefix.
    pub fn scan<'a>(
        &'a self,
        prefix: &'a [u8],
        after: Option<Vec<u8>>,
    ) -> impl Iterator<Item = Result<(Bytes, Bytes), StoreError>> + 'a {
        let start = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Included(prefix.to_vec()),
        };
        self.tree
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take_while(move |entry| entry.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .map(|entry| entry.map_err(StoreError::from))
    }

    /// Applies `writes` in one atomic sled batch (across a crash too).
    pub(crate) fn commit(&self, writes: Writes) -> Result<(), StoreError> {
        self.tree.apply_batch(writes.batch)?;
        Ok(())
    }
}

impl Writes {
    pub fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.batch.insert(key, encode_snapshot(value));
    }

    /// Stores bytes already encoded with `encode`, e.g. one value under several keys.
    pub fn put_encoded(&mut self, key: Vec<u8>, value: Bytes) {
        self.batch.insert(key, value);
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.batch.remove(key);
    }
}

/// A value encoded once, to be stored under several keys.
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(encode_snapshot(value))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(decode_snapshot(bytes)?)
}

/// The parts one after the other: a key.
pub fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

/// `u64::MAX - n`, big-endian: keys that sort largest `n` first.
pub fn descending(n: u64) -> [u8; 8] {
    (u64::MAX - n).to_be_bytes()
}

/// The inverse of `descending`, for a key part of 8 bytes.
pub fn from_descending(part: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = part.try_into().map_err(|_| CodecError::Empty)?;
    Ok(u64::MAX - u64::from_be_bytes(bytes))
}

/// A tree of its own in a temporary directory, for the read models' unit tests.
#[cfg(test)]
pub(crate) fn temporary() -> (tempfile::TempDir, Reader) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = sled::Config::new()
        .path(dir.path())
        .open()
        .expect("sled opens in a temporary directory");
    let tree = db.open_tree("test").expect("a tree");
    (dir, Reader::new(tree))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_stays_in_its_prefix_and_starts_after_the_cursor() {
        let (_dir, reader) = temporary();
        let mut writes = Writes::default();
        for k in [&b"a1"[..], b"b1", b"b2", b"b3", b"c1"] {
            writes.put(k.to_vec(), &k.len());
        }
        writes.remove(b"b3".to_vec());
        reader.commit(writes).unwrap();
        let keys = |after: Option<Vec<u8>>| -> Vec<Bytes> {
            reader.scan(b"b", after).map(|e| e.unwrap().0).collect()
        };
        assert_eq!(keys(None), [Bytes::from(b"b1"), Bytes::from(b"b2")]);
        assert_eq!(keys(Some(b"b1".to_vec())), [Bytes::from(b"b2")]);
        assert_eq!(reader.get::<usize>(b"c1").unwrap(), Some(2));
        assert_eq!(reader.get::<usize>(b"b3").unwrap(), None);
    }

    #[test]
    fn descending_keys_sort_largest_first_and_read_back() {
        assert!(descending(7) < descending(3));
        assert_eq!(from_descending(&descending(42)).unwrap(), 42);
        assert!(from_descending(b"short").is_err());
    }
}
