//! All of command-service's sled calls: aggregate snapshots, the event log and
//! idempotency keys, written together in one multi-tree transaction.

use std::path::Path;

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

/// Everything one group commit writes.
#[derive(Debug, Default)]
pub struct WriteBatch {
    pub orders: Vec<(OrderId, Order)>,
    /// (position, encoded `EventEnvelope`), ascending positions.
    pub events: Vec<(u64, Vec<u8>)>,
    pub commands: Vec<(CommandId, StoredCommand)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// The command side's database. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// order_id -> snapshot of the `Order` aggregate (rebuildable from the log).
    orders: sled::Tree,
    /// position (8 bytes big-endian) -> protobuf `EventEnvelope`.
    events: sled::Tree,
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
        Ok(Store {
            orders: open_tree("orders")?,
            events: open_tree("events")?,
            commands: open_tree("commands")?,
            db,
        })
    }

    /// The last position in the log (0 when empty).
    pub fn head(&self) -> Result<u64, StoreError> {
        Ok(self
            .events
            .last()?
            .and_then(|(key, _)| position_from_key(&key))
            .unwrap_or(0))
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

    /// Up to `limit` events with positions in `from..=to`, in order.
    pub fn read_events(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<pb::EventEnvelope>, StoreError> {
        self.events
            .range(position_key(from)..=position_key(to))
            .take(limit)
            .map(|entry| {
                let (_, bytes) = entry?;
                Ok(codec::decode_event(&bytes)?)
            })
            .collect()
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
        (&self.orders, &self.events, &self.commands)
            .transaction(|(tx_orders, tx_events, tx_commands)| {
                for (id, bytes) in &orders {
                    tx_orders.insert(id.as_str(), bytes.as_slice())?;
                }
                for (position, bytes) in &batch.events {
                    tx_events.insert(&position_key(*position), bytes.as_slice())?;
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
