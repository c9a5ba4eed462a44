//! All of command-service's sled calls: aggregate snapshots, the event log and
//! idempotency keys, kept in one tree and written together by one
//! `Tree::apply_batch` per group (atomic, across a crash too, and much cheaper
//! than a multi-tree transaction, which stages every write and reads each
//! key's old value).
//!
//! The first key byte says what an entry is:
//!
//! | entry | key | value |
//! |---|---|---|
//! | order | `o`, order id | bincode `Order` snapshot (rebuildable from the log) |
//! | log block | `l`, position of the block's first event (u64 BE) | log block: format byte, then consecutive events, each an encoded `SubscribeEventsResponse` carrying its `EventEnvelope` (`shared::codec`) |
//! | command | `c`, command id | bincode `StoredCommand` |
//!
//! A group commit writes its events as blocks of up to `BLOCK_BYTES`, so a
//! subscriber's read costs one sled lookup per block, not per event, and the
//! bytes go to the client as stored. A directory of the first layout (trees
//! `orders`, `events` with one envelope per position, `commands`) is converted
//! once at open.

use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shared::codec::{self, position_from_key, position_key};
use shared::domain::{CommandId, Order, OrderId};
use shared::proto as pb;

use crate::error::StoreError;

/// The outcome of a command, as remembered for idempotent retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub order_id: OrderId,
    /// The aggregate's version after the command.
    pub version: u64,
    /// Log position of the command's last event.
    pub position: u64,
}

/// An idempotency key's record: what the request was, and what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCommand {
    /// The encoded `CommandRequest`: a repeat must match it byte for byte.
    pub fingerprint: Vec<u8>,
    pub result: CommandResult,
}

/// A log block is closed once it holds this many bytes. sled rewrites a leaf
/// node (up to 16 entries) whole, and writes one over 128 KiB as a file of
/// its own, so blocks stay well below 8 KiB.
pub const BLOCK_BYTES: usize = 6 * 1024;

/// Everything one group commit writes.
#[derive(Debug, Default)]
pub struct WriteBatch {
    pub orders: Vec<(OrderId, Order)>,
    /// (position of the first event, log block), ascending positions.
    pub blocks: Vec<(u64, Vec<u8>)>,
    pub commands: Vec<(CommandId, StoredCommand)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Adds the event at `position`, the one after the last added.
    pub fn push_event(&mut self, position: u64, event: &pb::EventEnvelope) {
        match self.blocks.last_mut() {
            Some((_, block)) if block.len() < BLOCK_BYTES => codec::push_log_event(block, event),
            _ => {
                let mut block = codec::new_log_block();
                codec::push_log_event(&mut block, event);
                self.blocks.push((position, block));
            }
        }
    }
}

/// Writes for one tree, applied in sled batches of bounded size.
struct Batch<'a> {
    tree: &'a sled::Tree,
    writes: sled::Batch,
    count: usize,
}

impl<'a> Batch<'a> {
    fn new(tree: &'a sled::Tree) -> Self {
        Batch {
            tree,
            writes: sled::Batch::default(),
            count: 0,
        }
    }

    fn insert(&mut self, key: Vec<u8>, value: sled::IVec) -> Result<(), StoreError> {
        self.writes.insert(key, value);
        self.count += 1;
        if self.count == 4096 {
            self.finish()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        self.tree.apply_batch(std::mem::take(&mut self.writes))?;
        self.count = 0;
        Ok(())
    }
}

/// The command side's database. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// Orders, log blocks and commands, by key prefix.
    data: sled::Tree,
}

const ORDER: u8 = b'o';
const LOG: u8 = b'l';
const COMMAND: u8 = b'c';

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rest.len());
    key.push(prefix);
    key.extend_from_slice(rest);
    key
}

fn log_key(position: u64) -> [u8; 9] {
    let mut key = [LOG; 9];
    key[1..].copy_from_slice(&position_key(position));
    key
}

fn position_of(log_key: &[u8]) -> Result<u64, StoreError> {
    log_key
        .strip_prefix(&[LOG])
        .and_then(position_from_key)
        .ok_or_else(|| StoreError::LogKey(log_key.to_vec()))
}

/// Why the database could not be opened, in words for the one-line start-up error.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {0} is locked by another process (is another command-service running on it?)")]
    Locked(String),
    #[error("cannot open data directory {dir}: {source}")]
    Other { dir: String, source: sled::Error },
    #[error("cannot convert the data in {dir} to the current layout: {source}")]
    Convert { dir: String, source: StoreError },
}

impl Store {
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, OpenError> {
        let shown = dir.display().to_string();
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    OpenError::Locked(shown.clone())
                }
                source => OpenError::Other {
                    dir: shown.clone(),
                    source,
                },
            })?;
        let data = db.open_tree("data").map_err(|source| OpenError::Other {
            dir: shown.clone(),
            source,
        })?;
        let store = Store { db, data };
        store
            .convert_first_layout()
            .map_err(|e| OpenError::Convert {
                dir: shown.clone(),
                source: e,
            })?;
        Ok(store)
    }

    /// Moves the first layout's trees (`orders`, `events`: position ->
    /// envelope, `commands`) into `data`, then drops them. Keys, values and
    /// block boundaries depend only on the old trees, so a conversion cut
    /// short by a crash is simply done again at the next open.
    fn convert_first_layout(&self) -> Result<(), StoreError> {
        let names = self.db.tree_names();
        let present = |name: &str| names.iter().any(|n| n.as_ref() == name.as_bytes());
        if !["orders", "events", "commands"].iter().any(|n| present(n)) {
            return Ok(());
        }
        tracing::info!("converting the data directory to the single-tree layout (once)");
        let mut batch = Batch::new(&self.data);
        for (name, prefix) in [("orders", ORDER), ("commands", COMMAND)] {
            if present(name) {
                for entry in self.db.open_tree(name)?.iter() {
                    let (id, value) = entry?;
                    batch.insert(key(prefix, &id), value)?;
                }
            }
        }
        if present("events") {
            let mut open: Option<(u64, Vec<u8>)> = None;
            for entry in self.db.open_tree("events")?.iter() {
                let (position_bytes, envelope) = entry?;
                let position = position_from_key(&position_bytes)
                    .ok_or_else(|| StoreError::LogKey(position_bytes.to_vec()))?;
                let (_, block) = open.get_or_insert_with(|| (position, codec::new_log_block()));
                codec::push_encoded_log_event(block, &envelope);
                if block.len() >= BLOCK_BYTES {
                    let (first, block) = open.take().expect("a block is open");
                    batch.insert(log_key(first).to_vec(), block.into())?;
                }
            }
            if let Some((first, block)) = open {
                batch.insert(log_key(first).to_vec(), block.into())?;
            }
        }
        batch.finish()?;
        self.db.flush()?;
        for name in ["orders", "events", "commands"] {
            if present(name) {
                self.db.drop_tree(name)?;
            }
        }
        self.db.flush()?;
        Ok(())
    }

    /// The last position in the log (0 when empty).
    pub fn head(&self) -> Result<u64, StoreError> {
        match self.data.scan_prefix([LOG]).next_back() {
            None => Ok(0),
            Some(entry) => {
                let (key, block) = entry?;
                let events = codec::log_block_frames(&block)?.len() as u64;
                Ok(position_of(&key)? + events - 1)
            }
        }
    }

    /// The current state of an order; `Order::default()` when it does not exist.
    pub fn load_order(&self, id: &OrderId) -> Result<Order, StoreError> {
        match self.data.get(key(ORDER, id.as_str().as_bytes()))? {
            Some(bytes) => Ok(codec::decode_snapshot(&bytes)?),
            None => Ok(Order::default()),
        }
    }

    pub fn load_command(&self, id: &CommandId) -> Result<Option<StoredCommand>, StoreError> {
        match self.data.get(key(COMMAND, id.as_str().as_bytes()))? {
            Some(bytes) => Ok(Some(codec::decode_snapshot(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The stored events from position `from` on, up to `to`, in order: each
    /// with its position and as an encoded `SubscribeEventsResponse`. Stops
    /// after the block in which `limit` events are reached. Positions are those
    /// the blocks say; checking that they are gap-free is the caller's.
    pub fn read_events(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>, StoreError> {
        // The block holding `from` starts at or before it.
        let start = match self.data.range(log_key(0)..=log_key(from)).next_back() {
            Some(entry) => position_of(&entry?.0)?,
            None => return Ok(Vec::new()),
        };
        let mut events = Vec::new();
        for entry in self.data.range(log_key(start)..=log_key(to)) {
            let (key, block) = entry?;
            let first = position_of(&key)?;
            let frames = codec::log_block_frames(&block)?;
            let block = Bytes::from_owner(block);
            for (position, frame) in (first..).zip(frames) {
                if position > to {
                    return Ok(events);
                }
                if position >= from {
                    events.push((position, block.slice(frame)));
                }
            }
            if events.len() >= limit {
                break;
            }
        }
        Ok(events)
    }

    /// Writes a batch atomically: snapshots, events and keys all, or none.
    /// Not durable until `flush`.
    pub fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let mut writes = sled::Batch::default();
        for (id, order) in &batch.orders {
            writes.insert(
                key(ORDER, id.as_str().as_bytes()),
                codec::encode_snapshot(order),
            );
        }
        for (first, block) in &batch.blocks {
            writes.insert(&log_key(*first), block.as_slice());
        }
        for (id, stored) in &batch.commands {
            writes.insert(
                key(COMMAND, id.as_str().as_bytes()),
                codec::encode_snapshot(stored),
            );
        }
        self.data.apply_batch(writes)?;
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Opens the store on a directory whose previous handle was just dropped.
    /// sled's IO threads can hold the directory lock for a moment after the
    /// last handle goes, so `Locked` is retried for a while; any other
    /// outcome is returned as it is.
    fn reopen(dir: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir, 1 << 20) {
                Err(OpenError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                opened => return opened.unwrap(),
            }
        }
    }

    fn event(position: u64) -> pb::EventEnvelope {
        pb::EventEnvelope {
            position,
            event_id: format!("event-{position}"),
            order_id: "o-1".into(),
            version: position,
            // About 1 KiB: a block holds 6 or 7 events.
            command_id: "c".repeat(1000),
            ..Default::default()
        }
    }

    fn positions(events: &[(u64, Bytes)]) -> Vec<u64> {
        events
            .iter()
            .map(|(position, message)| {
                let response = pb::SubscribeEventsResponse::decode(message.clone()).unwrap();
                let Some(pb::subscribe_events_response::Kind::Event(event)) = response.kind else {
                    panic!("not an event");
                };
                assert_eq!(event.position, *position);
                event.position
            })
            .collect()
    }

    #[test]
    fn events_read_back_from_any_position_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.head().unwrap(), 0);
        assert!(store.read_events(1, 10, 100).unwrap().is_empty());
        for group in [1..=1u64, 2..=40, 41..=41, 42..=60] {
            let mut batch = WriteBatch::default();
            for position in group {
                batch.push_event(position, &event(position));
            }
            store.write(&batch).unwrap();
        }
        let blocks = store.data.scan_prefix([LOG]).count();
        assert!(blocks > 4, "a big group is cut into blocks: {blocks}");
        assert_eq!(store.head().unwrap(), 60);
        let all = store.read_events(1, 60, 1000).unwrap();
        assert_eq!(positions(&all), (1..=60).collect::<Vec<_>>());
        let middle = store.read_events(17, 43, 1000).unwrap();
        assert_eq!(positions(&middle), (17..=43).collect::<Vec<_>>());
        let limited = store.read_events(5, 60, 3).unwrap();
        assert!(
            limited.len() >= 3 && limited.len() < 10,
            "{}",
            limited.len()
        );
        assert_eq!(positions(&limited)[0], 5);
        assert!(store.read_events(61, 70, 10).unwrap().is_empty());
    }

    #[test]
    fn a_directory_of_the_first_layout_is_converted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let order_id = OrderId::parse("order_id", "o-1").unwrap();
        let command_id = CommandId::parse("command_id", "k-1").unwrap();
        let order = Order {
            version: 25,
            ..Order::default()
        };
        let stored = StoredCommand {
            fingerprint: vec![1, 2, 3],
            result: CommandResult {
                order_id: order_id.clone(),
                version: 25,
                position: 25,
            },
        };
        {
            let db = sled::open(dir.path()).unwrap();
            let events = db.open_tree("events").unwrap();
            for position in 1..=25u64 {
                events
                    .insert(position_key(position), event(position).encode_to_vec())
                    .unwrap();
            }
            db.open_tree("orders")
                .unwrap()
                .insert(order_id.as_str(), codec::encode_snapshot(&order))
                .unwrap();
            db.open_tree("commands")
                .unwrap()
                .insert(command_id.as_str(), codec::encode_snapshot(&stored))
                .unwrap();
            db.flush().unwrap();
        }
        let store = reopen(dir.path());
        assert_eq!(store.head().unwrap(), 25);
        let all = store.read_events(1, 25, 1000).unwrap();
        assert_eq!(positions(&all), (1..=25).collect::<Vec<_>>());
        assert_eq!(store.load_order(&order_id).unwrap(), order);
        assert_eq!(store.load_command(&command_id).unwrap(), Some(stored));
        let names = store.db.tree_names();
        for old in ["orders", "events", "commands"] {
            assert!(!names.iter().any(|n| n.as_ref() == old.as_bytes()), "{old}");
        }
        drop(store);
        // Opening again finds nothing left to convert and the same data.
        let store = reopen(dir.path());
        assert_eq!(store.head().unwrap(), 25);
        assert_eq!(store.load_order(&order_id).unwrap().version, 25);
    }
}
