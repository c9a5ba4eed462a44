//! All of command-service's sled calls: aggregate snapshots, the event log and
//! idempotency keys, written together in one multi-tree transaction.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `orders` | order id | bincode `Order` snapshot (rebuildable from the log) |
//! | `log` | position of the block's first event (u64 BE) | log block: format byte, then consecutive events, each an encoded `SubscribeEventsResponse` carrying its `EventEnvelope` (`shared::codec`) |
//! | `commands` | command id | bincode `StoredCommand` |
//!
//! A group commit writes its events as blocks of up to `BLOCK_BYTES`, so a
//! subscriber's read costs one sled lookup per block, not per event, and the
//! bytes go to the client as stored. Directories written before log blocks
//! (tree `events`, one envelope per position) are converted once at open.

use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shared::codec::{self, position_from_key, position_key};
use shared::domain::{CommandId, Order, OrderId};
use shared::proto as pb;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

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

/// The command side's database. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// order_id -> snapshot of the `Order` aggregate (rebuildable from the log).
    orders: sled::Tree,
    /// position of a block's first event (8 bytes big-endian) -> log block.
    log: sled::Tree,
    /// command_id -> `StoredCommand`.
    commands: sled::Tree,
}

/// Why the database could not be opened, in words for the one-line start-up error.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {0} is locked by another process (is another command-service running on it?)")]
    Locked(String),
    #[error("cannot open data directory {dir}: {source}")]
    Other { dir: String, source: sled::Error },
    #[error("cannot convert the event log in {dir} to log blocks: {source}")]
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
        let open_tree = |name: &str| {
            db.open_tree(name).map_err(|source| OpenError::Other {
                dir: shown.clone(),
                source,
            })
        };
        let store = Store {
            orders: open_tree("orders")?,
            log: open_tree("log")?,
            commands: open_tree("commands")?,
            db,
        };
        store
            .convert_per_event_log()
            .map_err(|e| OpenError::Convert {
                dir: shown.clone(),
                source: e,
            })?;
        Ok(store)
    }

    /// Moves a log written before log blocks (tree `events`: position ->
    /// envelope) into `log`. Block boundaries depend only on the old log, so a
    /// conversion cut short by a crash is simply done again at the next open.
    fn convert_per_event_log(&self) -> Result<(), StoreError> {
        const OLD_TREE: &str = "events";
        if !self
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == OLD_TREE.as_bytes())
        {
            return Ok(());
        }
        let old = self.db.open_tree(OLD_TREE)?;
        if !old.is_empty() {
            tracing::info!(
                events = old.len(),
                "converting the event log to log blocks (once)"
            );
        }
        let mut batch = sled::Batch::default();
        let mut blocks_in_batch = 0;
        let mut open: Option<(u64, Vec<u8>)> = None;
        for entry in old.iter() {
            let (key, envelope) = entry?;
            let position =
                position_from_key(&key).ok_or_else(|| StoreError::LogKey(key.to_vec()))?;
            let (_, block) = open.get_or_insert_with(|| (position, codec::new_log_block()));
            codec::push_encoded_log_event(block, &envelope);
            if block.len() >= BLOCK_BYTES {
                let (first, block) = open.take().expect("a block is open");
                batch.insert(&position_key(first), block);
                blocks_in_batch += 1;
                if blocks_in_batch == 1024 {
                    self.log.apply_batch(std::mem::take(&mut batch))?;
                    blocks_in_batch = 0;
                }
            }
        }
        if let Some((first, block)) = open {
            batch.insert(&position_key(first), block);
        }
        self.log.apply_batch(batch)?;
        self.db.flush()?;
        self.db.drop_tree(OLD_TREE)?;
        self.db.flush()?;
        Ok(())
    }

    /// The last position in the log (0 when empty).
    pub fn head(&self) -> Result<u64, StoreError> {
        match self.log.last()? {
            None => Ok(0),
            Some((key, block)) => {
                let first =
                    position_from_key(&key).ok_or_else(|| StoreError::LogKey(key.to_vec()))?;
                let events = codec::log_block_frames(&block)?.len() as u64;
                Ok(first + events - 1)
            }
        }
    }

    /// The current state of an order; `Order::default()` when it does not exist.
    pub fn load_order(&self, id: &OrderId) -> Result<Order, StoreError> {
        match self.orders.get(id.as_str())? {
            Some(bytes) => Ok(codec::decode_snapshot(&bytes)?),
            None => Ok(Order::default()),
        }
    }

    pub fn load_command(&self, id: &CommandId) -> Result<Option<StoredCommand>, StoreError> {
        match self.commands.get(id.as_str())? {
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
        let start = match self.log.range(..=position_key(from)).next_back() {
            Some(entry) => {
                let key = entry?.0;
                position_from_key(&key).ok_or_else(|| StoreError::LogKey(key.to_vec()))?
            }
            None => return Ok(Vec::new()),
        };
        let mut events = Vec::new();
        for entry in self.log.range(position_key(start)..=position_key(to)) {
            let (key, block) = entry?;
            let first = position_from_key(&key).ok_or_else(|| StoreError::LogKey(key.to_vec()))?;
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
        let orders: Vec<(&OrderId, Vec<u8>)> = batch
            .orders
            .iter()
            .map(|(id, order)| (id, codec::encode_snapshot(order)))
            .collect();
        let commands: Vec<(&CommandId, Vec<u8>)> = batch
            .commands
            .iter()
            .map(|(id, stored)| (id, codec::encode_snapshot(stored)))
            .collect();
        (&self.orders, &self.log, &self.commands)
            .transaction(|(tx_orders, tx_log, tx_commands)| {
                for (id, bytes) in &orders {
                    tx_orders.insert(id.as_str(), bytes.as_slice())?;
                }
                for (first, block) in &batch.blocks {
                    tx_log.insert(&position_key(*first), block.as_slice())?;
                }
                for (id, bytes) in &commands {
                    tx_commands.insert(id.as_str(), bytes.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<sled::Error>>(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) | TransactionError::Storage(e) => StoreError::Sled(e),
            })
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
        assert!(store.log.len() > 4, "a big group is cut into blocks");
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
    fn a_log_written_one_event_per_key_is_converted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let old = db.open_tree("events").unwrap();
            for position in 1..=25u64 {
                old.insert(position_key(position), event(position).encode_to_vec())
                    .unwrap();
            }
            db.flush().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.head().unwrap(), 25);
        let all = store.read_events(1, 25, 1000).unwrap();
        assert_eq!(positions(&all), (1..=25).collect::<Vec<_>>());
        assert!(!store
            .db
            .tree_names()
            .iter()
            .any(|name| name.as_ref() == b"events"));
        drop(store);
        // Opening again finds nothing left to convert and the same log.
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.head().unwrap(), 25);
    }
}
