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
    #[error("data directory {} holds a copy that --bootstrap-from did not finish (its file {} says so): start with --bootstrap-from to copy again, or empty the directory", .0.display(), crate::dbfiles::INCOMPLETE_MARKER)]
    IncompleteCopy(PathBuf),
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

/// The writes of one batch of events, applied atomically by the generation
/// (`Reader::commit`): each key gets a new value, or `None` to remove it.
#[derive(Default)]
pub struct Writes {
    writes: Vec<Write>,
    /// The write of the key every batch writes (the checkpoint), kept apart:
    /// a small batch leaves it in its pending value (`Reader::commit`).
    every_batch: Option<(Vec<u8>, Bytes)>,
}

/// A key and its new value, or `None` to remove it.
pub(crate) type Write = (Vec<u8>, Option<Bytes>);

/// The key, outside every read model's prefix, of the last batch's writes
/// as one value (see `Reader::commit`).
pub(crate) const PENDING_KEY: &[u8] = b"\xffpending";
/// Batches whose writes encode larger than this are applied with `apply_batch`.
const PENDING_MAX_BYTES: usize = 32 * 1024;

impl Reader {
    pub(crate) fn new(tree: sled::Tree) -> Self {
        Reader { tree }
    }

    /// The tree itself, for a transaction with the parking trees (`store.rs`).
    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
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

    /// Applies `writes` atomically across a crash, without `Tree::apply_batch`.
    ///
    /// `apply_batch` seals one of sled's log buffers per call, and sled's IO
    /// pool then wakes all of its idle threads: at a few events per batch that
    /// was half of query-service's CPU. Instead the batch's writes are first
    /// stored as one value under `PENDING_KEY` (one insert: atomic), then
    /// applied key by key. sled recovers a prefix of its log, so after a crash
    /// either the pending value is the previous batch's (and none of this
    /// batch's writes are there), or it is this batch's, and `settle` applies
    /// it again: every write sets an absolute value, so applying it twice is
    /// the same as once. The checkpoint is one of the writes, so it never
    /// moves without the changes it covers.
    ///
    /// The checkpoint (`Writes::put_every_batch`) is written only inside the
    /// pending value: every batch moves it, so the newest pending value
    /// always holds the newest one, and inserting it under its own key too
    /// would be one more sled insert per batch for nothing. It reaches its
    /// key with a large batch or `settle` (at open, before a copy); read it with
    /// `get_every_batch`. A small batch without it settles the previous one
    /// first, so no pending value ever drops a checkpoint not yet written out.
    ///
    /// A large batch (catching up) is one `apply_batch` after all: one sealed
    /// buffer is nothing for hundreds of events, and a pending value over
    /// sled's blob threshold would be a file of its own. That batch also
    /// removes the pending value, so no older batch is ever applied over it.
    pub(crate) fn commit(&self, writes: Writes) -> Result<(), StoreError> {
        // Sized before encoding: a large batch is never encoded at all.
        let every_batch_len = writes
            .every_batch
            .as_ref()
            .map_or(0, |(k, v)| write_len(k, Some(v.as_ref())));
        if encoded_len(&writes.writes) + every_batch_len > PENDING_MAX_BYTES {
            let mut batch = sled::Batch::default();
            for (key, value) in self.replacing_pending(writes)? {
                match value {
                    Some(value) => batch.insert(key, value),
                    None => batch.remove(key),
                }
            }
            batch.remove(PENDING_KEY);
            self.tree.apply_batch(batch)?;
            return Ok(());
        }
        let Writes {
            writes,
            every_batch,
        } = writes;
        let mut pending = Vec::with_capacity(encoded_len(&writes) + every_batch_len);
        encode_writes_into(&writes, &mut pending);
        match every_batch {
            Some((key, value)) => encode_writes_into(&[(key, Some(value))], &mut pending),
            // The pending value about to be replaced may hold a checkpoint
            // that only it holds.
            None => self.settle()?,
        }
        self.tree.insert(PENDING_KEY, pending)?;
        apply_writes(&self.tree, writes)
    }

    /// `writes`, the every-batch one last, for something that applies them
    /// and removes the pending value in one step (a large batch here, the
    /// parking transaction in `store.rs`). Unless they carry a checkpoint,
    /// the pending value is settled first: it may hold the only copy of the
    /// current one.
    pub(crate) fn replacing_pending(&self, writes: Writes) -> Result<Vec<Write>, StoreError> {
        if writes.every_batch.is_none() {
            self.settle()?;
        }
        let Writes {
            mut writes,
            every_batch,
        } = writes;
        writes.extend(every_batch.map(|(k, v)| (k, Some(v))));
        Ok(writes)
    }

    /// Writes the last small batch's pending value out again, its
    /// checkpoint included: afterwards the tree's keys alone hold everything
    /// committed. At open this completes the last batch a crash may have cut
    /// short (see `commit`); before a copy of the tree (`snapshot.rs`) it
    /// brings the checkpoint's own key up to date. Applying it again is
    /// harmless: every write sets an absolute value.
    pub(crate) fn settle(&self) -> Result<(), StoreError> {
        if let Some(pending) = self.tree.get(PENDING_KEY)? {
            apply_writes(&self.tree, decode_writes(&pending)?)?;
        }
        Ok(())
    }

    /// The value of a key written with `Writes::put_every_batch`: the last
    /// small batch's pending value holds the newest one, else the key itself.
    pub fn get_every_batch<T: DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        if let Some(pending) = self.tree.get(PENDING_KEY)? {
            let writes = decode_writes(&pending)?;
            if let Some((_, value)) = writes.into_iter().rev().find(|(k, _)| k == key) {
                return Ok(match value {
                    Some(bytes) => Some(decode_snapshot(&bytes)?),
                    None => None,
                });
            }
        }
        self.get(key)
    }
}

impl Writes {
    pub fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.writes.push((key, Some(encode_snapshot(value).into())));
    }

    /// Stores bytes already encoded with `encode`, e.g. one value under several keys.
    pub fn put_encoded(&mut self, key: Vec<u8>, value: Bytes) {
        self.writes.push((key, Some(value)));
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.writes.push((key, None));
    }

    /// The write of the one key every batch writes, the checkpoint: see
    /// `Reader::commit`. Read it back with `Reader::get_every_batch`.
    pub fn put_every_batch<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.every_batch = Some((key, encode_snapshot(value).into()));
    }
}

fn apply_writes(tree: &sled::Tree, writes: Vec<Write>) -> Result<(), StoreError> {
    for (key, value) in writes {
        match value {
            Some(value) => tree.insert(key, value)?,
            None => tree.remove(key)?,
        };
    }
    Ok(())
}

/// `[key length u32 LE][key][0 = remove | 1 = put][value length u32 LE][value]`...
/// The length of `encode_writes(writes)`, without encoding.
fn encoded_len(writes: &[Write]) -> usize {
    writes.iter().map(|(k, v)| write_len(k, v.as_deref())).sum()
}

/// The length of one write in that encoding.
fn write_len(key: &[u8], value: Option<&[u8]>) -> usize {
    5 + key.len() + value.map_or(0, |v| 4 + v.len())
}

#[cfg(test)]
fn encode_writes(writes: &[Write]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(writes));
    encode_writes_into(writes, &mut out);
    out
}

/// Appends `writes` to `out` (in `encode_writes`' format).
fn encode_writes_into(writes: &[Write], out: &mut Vec<u8>) {
    for (key, value) in writes {
        out.extend_from_slice(
            &u32::try_from(key.len())
                .expect("a key under 4 GiB")
                .to_le_bytes(),
        );
        out.extend_from_slice(key);
        match value {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                out.extend_from_slice(
                    &u32::try_from(value.len())
                        .expect("a value under 4 GiB")
                        .to_le_bytes(),
                );
                out.extend_from_slice(value);
            }
        }
    }
}

fn decode_writes(mut bytes: &[u8]) -> Result<Vec<Write>, StoreError> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], StoreError> {
        if bytes.len() < n {
            return Err(CodecError::Empty.into());
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    fn length(bytes: &mut &[u8]) -> Result<usize, StoreError> {
        let raw: [u8; 4] = take(bytes, 4)?.try_into().expect("4 bytes");
        Ok(u32::from_le_bytes(raw) as usize)
    }
    let mut writes = Vec::new();
    while !bytes.is_empty() {
        let len = length(&mut bytes)?;
        let key = take(&mut bytes, len)?.to_vec();
        let value = match take(&mut bytes, 1)?[0] {
            0 => None,
            _ => {
                let len = length(&mut bytes)?;
                Some(Bytes::from(take(&mut bytes, len)?))
            }
        };
        writes.push((key, value));
    }
    Ok(writes)
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

#[cfg(test)]
mod pending_tests {
    use super::*;

    fn writes(pairs: &[(&str, Option<&str>)]) -> Writes {
        let mut writes = Writes::default();
        for (key, value) in pairs {
            match value {
                Some(v) => writes.put_encoded(key.as_bytes().to_vec(), Bytes::from(v.as_bytes())),
                None => writes.remove(key.as_bytes().to_vec()),
            }
        }
        writes
    }

    fn value(reader: &Reader, key: &str) -> Option<Vec<u8>> {
        reader.tree.get(key).unwrap().map(|v| v.to_vec())
    }

    #[test]
    fn a_batch_cut_short_after_its_pending_value_is_completed_by_settle() {
        let (_dir, reader) = temporary();
        reader
            .commit(writes(&[
                ("a", Some("1")),
                ("b", Some("1")),
                ("gone", Some("x")),
            ]))
            .unwrap();
        // The next batch: its pending value stored, then a crash after only
        // one of its writes reached the tree.
        let next = [("a", Some("2")), ("gone", None), ("c", Some("2"))];
        reader
            .tree
            .insert(PENDING_KEY, encode_writes(&writes(&next).writes))
            .unwrap();
        reader.tree.insert("a", "2").unwrap();
        reader.settle().unwrap();
        assert_eq!(value(&reader, "a").as_deref(), Some(&b"2"[..]));
        assert_eq!(value(&reader, "b").as_deref(), Some(&b"1"[..]));
        assert_eq!(value(&reader, "c").as_deref(), Some(&b"2"[..]));
        assert_eq!(value(&reader, "gone"), None);
        // Recovering again changes nothing.
        reader.settle().unwrap();
        assert_eq!(value(&reader, "c").as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn a_large_batch_is_atomic_and_clears_the_pending_value() {
        let (_dir, reader) = temporary();
        reader.commit(writes(&[("a", Some("small"))])).unwrap();
        assert!(reader.tree.get(PENDING_KEY).unwrap().is_some());
        let big = "x".repeat(PENDING_MAX_BYTES);
        reader
            .commit(writes(&[("a", Some(big.as_str())), ("b", Some("1"))]))
            .unwrap();
        assert_eq!(reader.tree.get(PENDING_KEY).unwrap(), None);
        // Nothing older is applied over it at recovery.
        reader.settle().unwrap();
        assert_eq!(value(&reader, "a").map(|v| v.len()), Some(big.len()));
    }

    fn with_checkpoint(pairs: &[(&str, Option<&str>)], checkpoint: u64) -> Writes {
        let mut w = writes(pairs);
        w.put_every_batch(b"p".to_vec(), &checkpoint);
        w
    }

    #[test]
    fn a_small_batch_keeps_its_checkpoint_in_the_pending_value_until_settled() {
        let (_dir, reader) = temporary();
        reader
            .commit(with_checkpoint(&[("a", Some("1"))], 1))
            .unwrap();
        reader
            .commit(with_checkpoint(&[("a", Some("2"))], 2))
            .unwrap();
        // Not inserted under its own key: only the pending value holds it.
        assert_eq!(value(&reader, "p"), None);
        assert_eq!(value(&reader, "a").as_deref(), Some(&b"2"[..]));
        assert_eq!(reader.get_every_batch::<u64>(b"p").unwrap(), Some(2));
        // Written out by recovery (at open) and by `settle` (before a copy).
        reader.settle().unwrap();
        assert_eq!(reader.get::<u64>(b"p").unwrap(), Some(2));
        reader
            .commit(with_checkpoint(&[("a", Some("3"))], 3))
            .unwrap();
        assert_eq!(reader.get::<u64>(b"p").unwrap(), Some(2));
        reader.settle().unwrap();
        assert_eq!(reader.get::<u64>(b"p").unwrap(), Some(3));
    }

    #[test]
    fn a_batch_without_a_checkpoint_never_drops_the_pending_one() {
        let (_dir, reader) = temporary();
        reader
            .commit(with_checkpoint(&[("a", Some("1"))], 7))
            .unwrap();
        // A small batch without one replaces the pending value.
        reader.commit(writes(&[("b", Some("1"))])).unwrap();
        assert_eq!(reader.get_every_batch::<u64>(b"p").unwrap(), Some(7));
        reader
            .commit(with_checkpoint(&[("a", Some("2"))], 8))
            .unwrap();
        // So does a large one (it removes the pending value).
        let big = "x".repeat(PENDING_MAX_BYTES);
        reader.commit(writes(&[("c", Some(big.as_str()))])).unwrap();
        assert_eq!(reader.tree.get(PENDING_KEY).unwrap(), None);
        assert_eq!(reader.get_every_batch::<u64>(b"p").unwrap(), Some(8));
        // A large batch with one writes it under its key.
        reader
            .commit(with_checkpoint(&[("c", Some(big.as_str()))], 9))
            .unwrap();
        assert_eq!(reader.get::<u64>(b"p").unwrap(), Some(9));
    }

    #[test]
    fn writes_round_trip_through_their_encoding() {
        let w = writes(&[("k1", Some("v1")), ("k2", None), ("", Some(""))]).writes;
        assert_eq!(encode_writes(&w).len(), encoded_len(&w));
        assert_eq!(decode_writes(&encode_writes(&w)).unwrap(), w);
        assert!(decode_writes(&[5, 0, 0, 0, b'a']).is_err());
    }
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
