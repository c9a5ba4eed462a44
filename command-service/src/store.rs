//! All of command-service's sled calls: aggregate snapshots, the event log and
//! idempotency keys, kept in one tree, behind the write-ahead log (`wal.rs`).
//!
//! The first key byte says what an entry is:
//!
//! | entry | key | value |
//! |---|---|---|
//! | order | `o`, order id | bincode `Order` snapshot (rebuildable from the log) |
//! | log block | `l`, position of the block's first event (u64 BE) | log block: format byte, then consecutive events, each an encoded `SubscribeEventsResponse` carrying its `EventEnvelope` (`shared::codec`) |
//! | command | `c`, command id | bincode `StoredCommand` |
//! | history run | `e`, order id, `0x00`, the run's first version (u64 BE) | the positions of that version and the next ones (u64 BE each) |
//!
//! A group commit writes its events as blocks of up to `BLOCK_BYTES`, so a
//! subscriber's read costs one sled lookup per block, not per event, and the
//! bytes go to the client as stored. History runs index the log by order and
//! version (`ListOrderEvents`). They are not part of a group's record: the
//! writer keeps them in memory and each checkpoint writes one run per order
//! touched since the last (`history.rs`), so an order whose events come
//! together costs one sled insert for all of them, off the acknowledgement
//! path. The default tree holds the store's format version, the log's
//! identity, the last checkpoint's position and the position the history
//! index is complete up to in sled; the events after it are indexed again
//! from the log at open (`Store::index_history`).
//!
//! Durability comes from the write-ahead log, not from sled: a group's writes
//! are encoded once as a log record, appended and fdatasynced, and only then
//! inserted into sled from the same bytes, without a flush (`Store::commit`).
//! So sled never holds a write the log could lose, and a crash can leave sled
//! with any part of the last groups: at open, every record after the last
//! checkpoint is applied again, in order (the same keys get the same values).
//! `Store::checkpoint` makes sled durable (flush, then fdatasync of its file)
//! and drops the log segments it covers.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shared::codec::{self, position_from_key, position_key, CodecError};
use shared::domain::{CommandId, Order, OrderId};
use shared::proto as pb;

use crate::error::StoreError;
use crate::wal::{self, Record, Ticket, Wal};

mod backup;
mod history;
mod tail;
pub use backup::{BackupRead, EntryCounts, Restoring};

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
    /// One per event, for the history index (`history.rs`).
    pub history: Vec<Indexed>,
}

/// An event's place in its order's history.
#[derive(Debug, Clone)]
pub struct Indexed {
    pub order_id: String,
    pub version: u64,
    pub position: u64,
}

/// A group's log record, and the history entries of its events: those are
/// not in the record but kept in memory until a checkpoint writes them
/// (`history.rs`).
#[derive(Debug, Clone)]
pub struct GroupRecord {
    pub record: Record,
    pub history: Vec<Indexed>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Adds the event at `position`, the one after the last added.
    pub fn push_event(&mut self, position: u64, event: &pb::EventEnvelope) {
        self.history.push(Indexed {
            order_id: event.order_id.clone(),
            version: event.version,
            position,
        });
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

/// The events a `read_events_within` has taken so far, and its bounds.
struct Taking {
    events: Vec<(u64, Bytes)>,
    bytes: usize,
    from: u64,
    to: u64,
    limit: usize,
    max_bytes: usize,
}

impl Taking {
    /// Takes the events of `block` (first position `first`, frames `frames`)
    /// from `from` to `to`; true when the read is done after this block: it
    /// reaches past `to`, or the limits are reached.
    fn done_after(&mut self, first: u64, block: &Bytes, frames: &[std::ops::Range<usize>]) -> bool {
        for (position, frame) in (first..).zip(frames) {
            if position > self.to {
                return true;
            }
            if position >= self.from {
                self.bytes += frame.len();
                self.events.push((position, block.slice(frame.clone())));
            }
        }
        self.events.len() >= self.limit || self.bytes >= self.max_bytes
    }
}

/// The command side's database: sled plus its write-ahead log. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// Orders, log blocks and commands, by key prefix.
    data: sled::Tree,
    wal: Arc<Wal>,
    /// sled's one data file, for the fdatasync that `sled::Db::flush` lacks.
    db_file: Arc<File>,
    /// The last position applied to sled, whether or not it is durable yet.
    written: Arc<AtomicU64>,
    log_id: Arc<str>,
    /// The newest log blocks applied, for reads of the live tail.
    tail: Arc<Mutex<tail::Tail>>,
    /// The history not yet written to sled (`history.rs`). `written` moves
    /// only while this is held, after the group's entries were added.
    recent: Arc<Mutex<history::Recent>>,
}

const ORDER: u8 = b'o';
const LOG: u8 = b'l';
const COMMAND: u8 = b'c';
const HISTORY: u8 = b'e';

/// Keys of the default tree.
const FORMAT_KEY: &[u8] = b"format";
const LOG_ID_KEY: &[u8] = b"log_id";
/// The position sled was made durable up to by the last checkpoint.
const CHECKPOINT_KEY: &[u8] = b"checkpoint";
/// The position up to which every event has its history entry in sled, as of
/// the last checkpoint. A build without the index leaves it behind the log.
const HISTORY_INDEXED_KEY: &[u8] = b"history_indexed";
/// The layout this code writes. It also opens (and then marks as its own)
/// and restores `EARLIER_FORMAT`; any other is refused.
pub const FORMAT: u32 = 4;
/// Format 3: history entries of one event each, which format 4 reads as
/// runs of one (`history.rs`).
pub const EARLIER_FORMAT: u32 = 3;

/// Whether this code reads a store of format `version`.
pub fn reads_format(version: u32) -> bool {
    version == FORMAT || version == EARLIER_FORMAT
}

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

/// `e`, order id, `0x00`, first version (u64 BE): an order's runs are
/// contiguous and in version order (ids never hold a `0x00`).
fn history_key(order_id: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + order_id.len() + 8);
    key.push(HISTORY);
    key.extend_from_slice(order_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn u64_value(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
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
    Other { dir: String, source: StoreError },
    #[error("data directory {dir} holds store format {found}, this command-service reads formats {EARLIER_FORMAT} and {FORMAT} only; restore a backup made by a matching version or use an empty directory")]
    Format { dir: String, found: String },
    #[error("cannot recover data directory {dir}: {source}")]
    Recover { dir: String, source: StoreError },
}

impl Store {
    /// Opens (or creates) the store in `dir` and brings sled up to date with
    /// the write-ahead log.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, OpenError> {
        Self::open_with(dir, cache_bytes, wal::SEGMENT_BYTES)
    }

    pub fn open_with(dir: &Path, cache_bytes: u64, segment_bytes: u64) -> Result<Self, OpenError> {
        let db = open_sled(dir, cache_bytes)?;
        let shown = dir.display().to_string();
        let log_id = check_format(&db).map_err(|e| match e {
            FormatCheck::Other(found) => OpenError::Format {
                dir: shown.clone(),
                found,
            },
            FormatCheck::Store(source) => OpenError::Other { dir: shown, source },
        })?;
        let store = Self::recover(db, dir, segment_bytes, &log_id)?;
        store.mark_format().map_err(|source| OpenError::Other {
            dir: dir.display().to_string(),
            source,
        })?;
        Ok(store)
    }

    /// Marks a store of `EARLIER_FORMAT` as this format once it is open:
    /// recovery has indexed and checkpointed it, and what this code writes
    /// from now on an earlier build would misread.
    fn mark_format(&self) -> Result<(), StoreError> {
        if self.db.get(FORMAT_KEY)?.as_deref() != Some(&FORMAT.to_be_bytes()[..]) {
            self.db.insert(FORMAT_KEY, &FORMAT.to_be_bytes())?;
            self.sync_sled()?;
            tracing::info!(format = FORMAT, "store format marked");
        }
        Ok(())
    }

    /// The rest of opening, once sled is open and its format checked: the
    /// log replayed into sled, the history indexed, a checkpoint.
    fn recover(
        db: sled::Db,
        dir: &Path,
        segment_bytes: u64,
        log_id: &str,
    ) -> Result<Self, OpenError> {
        let shown = dir.display().to_string();
        let other = |source: StoreError| OpenError::Other {
            dir: shown.clone(),
            source,
        };
        let data = db.open_tree("data").map_err(|e| other(e.into()))?;
        let db_file = File::open(dir.join("db")).map_err(|e| other(sled::Error::Io(e).into()))?;
        let opened = Wal::open(&dir.join("wal"), segment_bytes).map_err(|e| other(e.into()))?;
        let store = Store {
            db,
            data,
            wal: Arc::new(opened.wal),
            db_file: Arc::new(db_file),
            written: Arc::new(AtomicU64::new(0)),
            log_id: log_id.into(),
            tail: Arc::default(),
            recent: Arc::default(),
        };
        let recover = |source| OpenError::Recover {
            dir: shown.clone(),
            source,
        };
        store.replay(opened.records).map_err(recover)?;
        store.index_history().map_err(recover)?;
        store.checkpoint().map_err(recover)?;
        Ok(store)
    }

    /// Applies, in order, every record of the log beyond the last
    /// checkpoint: sled may hold any part of them (its writes are not atomic
    /// across keys), and applying a record again writes the same values.
    fn replay(&self, records: Vec<Record>) -> Result<(), StoreError> {
        let checkpointed = self.checkpointed()?;
        let mut head = checkpointed;
        let mut replayed = 0usize;
        for record in records {
            if record.last_position() <= checkpointed {
                continue;
            }
            if record.first_position() != head + 1 {
                return Err(StoreError::WalGap {
                    head,
                    first: record.first_position(),
                });
            }
            self.apply_record(&record, &[])?;
            head = record.last_position();
            replayed += 1;
        }
        self.written
            .store(head.max(checkpointed), Ordering::Release);
        if replayed > 0 {
            tracing::info!(
                groups = replayed,
                head,
                "replayed the write-ahead log into sled"
            );
        }
        Ok(())
    }

    /// The position up to which sled was durable at the last checkpoint.
    fn checkpointed(&self) -> Result<u64, StoreError> {
        Ok(self
            .db
            .get(CHECKPOINT_KEY)?
            .and_then(|v| u64_value(&v))
            .unwrap_or(0))
    }

    /// Indexes again the events past `HISTORY_INDEXED_KEY`: those whose
    /// history was in memory only when the process stopped (or all of them,
    /// on a directory written before the index). They go where the writer
    /// puts a group's, and the checkpoint that follows at open writes them
    /// and moves `HISTORY_INDEXED_KEY` to the head. A run written again
    /// over one sled kept gives each version the same position.
    fn index_history(&self) -> Result<(), StoreError> {
        let indexed = self
            .db
            .get(HISTORY_INDEXED_KEY)?
            .and_then(|v| u64_value(&v))
            .unwrap_or(0);
        let head = self.head()?;
        let mut from = indexed + 1;
        while from <= head {
            let events = self.read_events(from, head, 4096)?;
            let Some(&(last, _)) = events.last() else {
                break;
            };
            let mut recent = lock(&self.recent);
            for (position, message) in events {
                let event = decode_event(position, message)?;
                recent.push(&event.order_id, event.version, position);
            }
            drop(recent);
            from = last + 1;
        }
        if head > indexed {
            tracing::info!(
                from = indexed + 1,
                to = head,
                "indexed the history of each order"
            );
        }
        Ok(())
    }

    /// The log's identity, created with the store and never changed.
    pub fn log_id(&self) -> &str {
        &self.log_id
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
        self.read_events_within(from, to, limit, usize::MAX)
    }

    /// `read_events`, also stopping after the block in which the events read
    /// reach `max_bytes`.
    pub fn read_events_within(
        &self,
        from: u64,
        to: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, StoreError> {
        let mut taking = Taking {
            events: Vec::new(),
            bytes: 0,
            from,
            to,
            limit,
            max_bytes,
        };
        // The live tail is in memory (`tail.rs`); older events are read from sled.
        let tail = lock(&self.tail);
        let in_tail = tail.from(from).map(|mut blocks| {
            blocks.any(|block| taking.done_after(block.first, &block.bytes, &block.frames))
        });
        drop(tail);
        if in_tail.is_some() {
            return Ok(taking.events);
        }
        // The block holding `from` starts at or before it.
        let start = match self.data.range(log_key(0)..=log_key(from)).next_back() {
            Some(entry) => position_of(&entry?.0)?,
            None => return Ok(Vec::new()),
        };
        for entry in self.data.range(log_key(start)..=log_key(to)) {
            let (key, block) = entry?;
            let frames = codec::log_block_frames(&block)?;
            if taking.done_after(position_of(&key)?, &Bytes::from_owner(block), &frames) {
                break;
            }
        }
        Ok(taking.events)
    }

    /// The (version, position) of `order_id`'s events after `after_version`,
    /// in version order, at most `limit`.
    pub fn order_history(
        &self,
        order_id: &OrderId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        let Some(first) = after_version.checked_add(1) else {
            return Ok(Vec::new());
        };
        let id = order_id.as_str();
        // Memory first: a run a checkpoint moves meanwhile is in sled before
        // it leaves memory.
        let recent = lock(&self.recent).runs_of(id);
        let mut entries = Vec::new();
        // The next version to take: each once, in order, however runs overlap.
        let mut next = first;
        let mut take = |run: &history::Run, entries: &mut Vec<(u64, u64)>| {
            for (version, position) in run.entries() {
                if entries.len() >= limit {
                    break;
                }
                if version >= next {
                    entries.push((version, position));
                    next = version + 1;
                }
            }
        };
        // The run holding `first` starts at or before it.
        let start = self
            .run_at_or_before(id, first)?
            .map_or(first, |run| run.first);
        for entry in self
            .data
            .range(history_key(id, start)..=history_key(id, u64::MAX))
        {
            if entries.len() >= limit {
                return Ok(entries);
            }
            let (key, value) = entry?;
            take(&history::Run::decode(&key, &value)?, &mut entries);
        }
        for run in &recent {
            take(run, &mut entries);
        }
        Ok(entries)
    }

    /// The run in sled of order `id` that starts at `version` or is the
    /// last to start before it (it may end before `version`).
    fn run_at_or_before(&self, id: &str, version: u64) -> Result<Option<history::Run>, StoreError> {
        match self
            .data
            .range(history_key(id, 0)..=history_key(id, version))
            .next_back()
        {
            Some(entry) => {
                let (key, value) = entry?;
                Ok(Some(history::Run::decode(&key, &value)?))
            }
            None => Ok(None),
        }
    }

    /// The stored events at `positions` (ascending), each as an encoded
    /// `SubscribeEventsResponse`; events that share a block cost one lookup.
    pub fn events_at(&self, positions: &[u64]) -> Result<Vec<Bytes>, StoreError> {
        let mut events = Vec::with_capacity(positions.len());
        // The current block: its first position, its bytes and its frames.
        let mut block: Option<(u64, Bytes, Vec<std::ops::Range<usize>>)> = None;
        for &position in positions {
            let in_block = |(first, _, frames): &(u64, Bytes, Vec<std::ops::Range<usize>>)| {
                position >= *first && position - first < frames.len() as u64
            };
            if !block.as_ref().is_some_and(in_block) {
                let (key, bytes) = self
                    .data
                    .range(log_key(0)..=log_key(position))
                    .next_back()
                    .ok_or(StoreError::MissingEvent(position))??;
                let frames = codec::log_block_frames(&bytes)?;
                block = Some((position_of(&key)?, Bytes::from_owner(bytes), frames));
            }
            match &block {
                Some(found @ (first, bytes, frames)) if in_block(found) => {
                    events.push(bytes.slice(frames[(position - first) as usize].clone()));
                }
                _ => return Err(StoreError::MissingEvent(position)),
            }
        }
        Ok(events)
    }

    /// Encodes a group's writes (events `first..=last`) as one log record,
    /// with the history entries of its events beside it.
    pub fn record(batch: WriteBatch, first: u64, last: u64) -> GroupRecord {
        let mut record = Record::new(first, last);
        for (id, order) in &batch.orders {
            record.push(
                &key(ORDER, id.as_str().as_bytes()),
                &codec::encode_snapshot(order),
            );
        }
        for (first, block) in &batch.blocks {
            record.push(&log_key(*first), block);
        }
        for (id, stored) in &batch.commands {
            record.push(
                &key(COMMAND, id.as_str().as_bytes()),
                &codec::encode_snapshot(stored),
            );
        }
        GroupRecord {
            record,
            history: batch.history,
        }
    }

    /// Commits a group: appends its record to the write-ahead log, waits
    /// for an fdatasync of the log file (started after the append) to
    /// complete, then applies the record to sled. When this returns, the
    /// group is on stable storage and visible to `load_*` and `read_events`.
    ///
    /// sled is written only after the sync, so it never holds anything the
    /// log could lose; its writes need neither a flush nor atomicity here
    /// (`Tree::apply_batch` would seal a sled log buffer per group, waking
    /// sled's IO threads every time): recovery re-applies whole records.
    pub fn commit(&self, group: &GroupRecord) -> Result<(), StoreError> {
        self.append(&group.record)?.sync()?;
        self.apply(group)
    }

    /// The first step of `commit`: the record appended, not yet synced.
    pub fn append(&self, record: &Record) -> Result<Ticket, StoreError> {
        Ok(self.wal.append(record)?)
    }

    /// The last step of `commit`: the record's writes applied to sled, its
    /// history entries added to those in memory.
    pub fn apply(&self, group: &GroupRecord) -> Result<(), StoreError> {
        self.apply_record(&group.record, &group.history)
    }

    fn apply_record(&self, record: &Record, history: &[Indexed]) -> Result<(), StoreError> {
        let mut blocks = Vec::new();
        for (key, value) in record.writes() {
            self.data.insert(key, value)?;
            if key.first() == Some(&LOG) {
                blocks.push(tail::Block {
                    first: position_of(key)?,
                    frames: codec::log_block_frames(value)?,
                    bytes: Bytes::copy_from_slice(value),
                });
            }
        }
        let mut tail = lock(&self.tail);
        for block in blocks {
            tail.push(block);
        }
        drop(tail);
        // After every write of the group: an entry found leads to its event
        // and its order's snapshot.
        let mut recent = lock(&self.recent);
        for entry in history {
            recent.push(&entry.order_id, entry.version, entry.position);
        }
        self.written
            .store(record.last_position(), Ordering::Release);
        Ok(())
    }

    /// Makes everything applied to sled so far durable in sled itself (flush,
    /// then fdatasync of its file, with the position it covers), then
    /// removes the log segments that only hold what sled now has. Off the
    /// acknowledgement path.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        // Every event up to `covered` has its history entry in sled or in
        // what this flush takes (`written` moves under the same lock).
        let (covered, flushing) = {
            let mut recent = lock(&self.recent);
            (self.written.load(Ordering::Acquire), recent.start_flush())
        };
        for (order_id, runs) in flushing.iter() {
            for run in runs {
                self.data
                    .insert(history_key(order_id, run.first), run.encode())?;
            }
        }
        self.db.insert(CHECKPOINT_KEY, &covered.to_be_bytes())?;
        self.db
            .insert(HISTORY_INDEXED_KEY, &covered.to_be_bytes())?;
        self.sync_sled()?;
        lock(&self.recent).end_flush();
        let removed = self.wal.release(covered)?;
        if removed > 0 {
            tracing::debug!(removed, covered, "write-ahead log segments released");
        }
        Ok(())
    }

    /// Makes what sled holds durable: its flush, then the fdatasync of its
    /// file that `sled::Db::flush` lacks.
    fn sync_sled(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.db_file
            .sync_data()
            .map_err(|e| StoreError::Sled(sled::Error::Io(e)))
    }

    /// The last position applied to sled (durable or not).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }
}

/// `mutex`, locked; a panic elsewhere while it was held leaves nothing half
/// done in the structures it guards (each change is one call).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `EventEnvelope` in a stored log frame (an encoded
/// `SubscribeEventsResponse`) at `position`.
pub fn decode_event(position: u64, message: Bytes) -> Result<pb::EventEnvelope, StoreError> {
    use prost::Message;
    let response = pb::SubscribeEventsResponse::decode(message).map_err(CodecError::Protobuf)?;
    match response.kind {
        Some(pb::subscribe_events_response::Kind::Event(event)) => Ok(event),
        _ => Err(StoreError::MissingEvent(position)),
    }
}

/// sled on `dir`, with the settings of this store.
fn open_sled(dir: &Path, cache_bytes: u64) -> Result<sled::Db, OpenError> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        // Checkpoints (`Store::checkpoint`) flush instead, when they are
        // needed, not every 500 ms.
        .flush_every_ms(None)
        .open()
        .map_err(|e| match e {
            sled::Error::Io(ref io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("could not acquire lock") =>
            {
                OpenError::Locked(dir.display().to_string())
            }
            source => OpenError::Other {
                dir: dir.display().to_string(),
                source: source.into(),
            },
        })
}

enum FormatCheck {
    Other(String),
    Store(StoreError),
}

/// Checks the store's format version (writing it, and a new log identity,
/// into a new store) and returns the log identity.
fn check_format(db: &sled::Db) -> Result<String, FormatCheck> {
    let store = |e: sled::Error| FormatCheck::Store(e.into());
    match db.get(FORMAT_KEY).map_err(store)? {
        Some(found) => {
            let version = <[u8; 4]>::try_from(found.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| FormatCheck::Other(format!("{:02x?}", found.as_ref())))?;
            if !reads_format(version) {
                return Err(FormatCheck::Other(version.to_string()));
            }
            let id = db
                .get(LOG_ID_KEY)
                .map_err(store)?
                .ok_or(FormatCheck::Store(StoreError::NoLogId))?;
            Ok(String::from_utf8_lossy(&id).into_owned())
        }
        None => {
            let names = db.tree_names();
            // sled always has its default tree; anything else is data of a
            // layout from before format versions.
            if names.len() > 1 || !db.is_empty() {
                return Err(FormatCheck::Other(
                    "an earlier layout without a version".into(),
                ));
            }
            let id = uuid::Uuid::now_v7().hyphenated().to_string();
            db.insert(LOG_ID_KEY, id.as_bytes()).map_err(store)?;
            db.insert(FORMAT_KEY, &FORMAT.to_be_bytes())
                .map_err(store)?;
            db.flush().map_err(store)?;
            Ok(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ops::RangeInclusive;

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
            for position in group.clone() {
                batch.push_event(position, &event(position));
            }
            let record = Store::record(batch, *group.start(), *group.end());
            store.commit(&record).unwrap();
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
        // A byte budget ends the read after the block that reaches it.
        let budgeted = store.read_events_within(1, 60, 1000, 2000).unwrap();
        assert!(
            budgeted.len() >= 2 && budgeted.len() < 10,
            "{}",
            budgeted.len()
        );
        assert_eq!(positions(&budgeted)[0], 1);

        // Those reads came from the in-memory tail; sled answers the same.
        assert!(store.tail.lock().unwrap().from(1).is_some());
        let reads = [
            (1, 60, 1000, usize::MAX),
            (17, 43, 1000, usize::MAX),
            (5, 60, 3, usize::MAX),
            (1, 60, 1000, 2000),
            (41, 41, 1, usize::MAX),
            (60, 60, 5, usize::MAX),
            (61, 70, 10, usize::MAX),
        ];
        let from_tail: Vec<_> = reads
            .iter()
            .map(|&(f, t, l, b)| store.read_events_within(f, t, l, b).unwrap())
            .collect();
        *store.tail.lock().unwrap() = tail::Tail::default();
        let from_sled: Vec<_> = reads
            .iter()
            .map(|&(f, t, l, b)| store.read_events_within(f, t, l, b).unwrap())
            .collect();
        assert_eq!(from_tail, from_sled);
    }

    /// Events of two orders, interleaved: odd positions are `a`'s, even `b`'s.
    fn interleaved(position: u64) -> pb::EventEnvelope {
        pb::EventEnvelope {
            order_id: if position % 2 == 1 { "a" } else { "b" }.into(),
            version: position.div_ceil(2),
            ..event(position)
        }
    }

    fn history_positions(store: &Store, order: &str, after: u64, limit: usize) -> Vec<u64> {
        let id = OrderId::parse("order_id", order).unwrap();
        let entries = store.order_history(&id, after, limit).unwrap();
        let versions: Vec<u64> = entries.iter().map(|&(v, _)| v).collect();
        assert_eq!(
            versions,
            (after.saturating_add(1)..)
                .take(entries.len())
                .collect::<Vec<_>>()
        );
        let positions: Vec<u64> = entries.iter().map(|&(_, p)| p).collect();
        let events = store.events_at(&positions).unwrap();
        for (message, &position) in events.into_iter().zip(&positions) {
            let event = decode_event(position, message).unwrap();
            assert_eq!((event.position, event.order_id.as_str()), (position, order));
        }
        positions
    }

    /// Commits each group of `interleaved` events.
    fn commit_interleaved<const N: usize>(store: &Store, groups: [RangeInclusive<u64>; N]) {
        for group in groups {
            let mut batch = WriteBatch::default();
            for position in group.clone() {
                batch.push_event(position, &interleaved(position));
            }
            store
                .commit(&Store::record(batch, *group.start(), *group.end()))
                .unwrap();
        }
    }

    #[test]
    fn each_orders_history_is_indexed_with_its_events_and_rebuilt_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        commit_interleaved(&store, [1..=1, 2..=40, 41..=60]);
        let odd: Vec<u64> = (1..=60).step_by(2).collect();
        assert_eq!(history_positions(&store, "a", 0, 100), odd);
        assert_eq!(
            history_positions(&store, "b", 25, 100),
            (52..=60).step_by(2).collect::<Vec<_>>()
        );
        assert_eq!(history_positions(&store, "a", 3, 4), vec![7, 9, 11, 13]);
        assert!(history_positions(&store, "a", u64::MAX, 10).is_empty());
        assert!(history_positions(&store, "ab", 0, 10).is_empty());
        // So far all in memory; a checkpoint writes one run per order.
        assert_eq!(store.data.scan_prefix([HISTORY]).count(), 0);
        store.checkpoint().unwrap();
        assert_eq!(store.data.scan_prefix([HISTORY]).count(), 2);
        assert_eq!(history_positions(&store, "a", 0, 100), odd);
        assert_eq!(history_positions(&store, "a", 3, 4), vec![7, 9, 11, 13]);

        // Groups after it, then a crash (no checkpoint): the history that
        // was in memory only is indexed again from the log at open.
        commit_interleaved(&store, [61..=61, 62..=70]);
        let odd: Vec<u64> = (1..=70).step_by(2).collect();
        assert_eq!(history_positions(&store, "a", 0, 100), odd);
        assert_eq!(
            history_positions(&store, "a", 29, 100),
            vec![59, 61, 63, 65, 67, 69]
        );
        drop(store);
        let store = reopen(dir.path());
        assert_eq!(history_positions(&store, "a", 0, 100), odd);
        assert_eq!(history_positions(&store, "b", 0, 100).len(), 35);

        // Overlapping runs (one sled kept of an interrupted checkpoint, one
        // indexed again): each version once, at its one position.
        let overlap = history::Run {
            first: 10,
            positions: vec![19, 21, 23, 25],
        };
        store
            .data
            .insert(history_key("a", 10), overlap.encode())
            .unwrap();
        assert_eq!(history_positions(&store, "a", 0, 100), odd);
        assert_eq!(history_positions(&store, "a", 10, 3), vec![21, 23, 25]);

        // A directory written by a build without the index: indexed at open.
        for entry in store.data.scan_prefix([HISTORY]) {
            store.data.remove(entry.unwrap().0).unwrap();
        }
        store.db.remove(HISTORY_INDEXED_KEY).unwrap();
        store.db.flush().unwrap();
        assert!(history_positions(&store, "a", 0, 100).is_empty());
        drop(store);
        let store = reopen(dir.path());
        assert_eq!(history_positions(&store, "a", 0, 100), odd);
        assert_eq!(history_positions(&store, "b", 0, 100).len(), 35);
    }

    #[test]
    fn a_store_of_the_earlier_format_opens_and_is_marked_as_this_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut batch = WriteBatch::default();
        for position in 1..=6 {
            batch.push_event(position, &interleaved(position));
        }
        store.commit(&Store::record(batch, 1, 6)).unwrap();
        store.checkpoint().unwrap();
        // Format 3 wrote one entry per event.
        for entry in store.data.scan_prefix([HISTORY]) {
            store.data.remove(entry.unwrap().0).unwrap();
        }
        for position in 1..=6u64 {
            let event = interleaved(position);
            store
                .data
                .insert(
                    history_key(&event.order_id, event.version),
                    &position.to_be_bytes(),
                )
                .unwrap();
        }
        store
            .db
            .insert(FORMAT_KEY, &EARLIER_FORMAT.to_be_bytes())
            .unwrap();
        store.db.flush().unwrap();
        drop(store);
        let store = reopen(dir.path());
        assert_eq!(history_positions(&store, "a", 0, 100), vec![1, 3, 5]);
        assert_eq!(history_positions(&store, "b", 1, 100), vec![4, 6]);
        assert_eq!(
            store.db.get(FORMAT_KEY).unwrap().as_deref(),
            Some(&FORMAT.to_be_bytes()[..])
        );
    }

    fn command_id(group: u64) -> CommandId {
        CommandId::parse("command_id", &format!("k-{group}")).unwrap()
    }

    fn order_id(group: u64) -> OrderId {
        OrderId::parse("order_id", &format!("o-{group}")).unwrap()
    }

    fn result(group: u64, last: u64) -> CommandResult {
        CommandResult {
            order_id: order_id(group),
            version: group,
            position: last,
        }
    }

    /// Group `group` writes the events `first..=last`, an order and a key.
    fn group_record(group: u64, first: u64, last: u64) -> GroupRecord {
        let mut batch = WriteBatch::default();
        for position in first..=last {
            batch.push_event(position, &event(position));
        }
        let order = Order {
            version: group,
            ..Order::default()
        };
        batch.orders.push((order_id(group), order));
        batch.commands.push((
            command_id(group),
            StoredCommand {
                fingerprint: vec![1, 2, 3],
                result: result(group, last),
            },
        ));
        Store::record(batch, first, last)
    }

    /// Copies the files of `from` whose path (relative) satisfies `keep`.
    fn copy_dir(from: &Path, to: &Path, keep: &dyn Fn(&Path) -> bool) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&target).unwrap();
                copy_dir(&entry.path(), &target, keep);
            } else if keep(&entry.path()) {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    fn is_wal(path: &Path) -> bool {
        path.extension().is_some_and(|e| e == "wal")
    }

    /// Power cuts at random points, the last group's commit possibly cut
    /// short. What survives a cut is modelled as: each log segment as of its
    /// last completed sync, plus a random part of what was appended after it
    /// (possibly with a garbled byte: a torn record); sled as of its last
    /// checkpoint, or with whatever it wrote since. After
    /// reopening: every acknowledged group is there, nothing unacknowledged is
    /// half there (a group's events, order and key together or not at all),
    /// positions are gap-free, and writing goes on from the head.
    #[test]
    fn power_cuts_lose_nothing_acknowledged_and_leave_nothing_half_there() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("WAL_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for round in 0..16 {
            let live = tempfile::tempdir().unwrap();
            // Small segments, so groups cross segment boundaries.
            let store = Store::open_with(live.path(), 1 << 20, 8 * 1024).unwrap();
            let sled_image = tempfile::tempdir().unwrap();
            copy_dir(live.path(), sled_image.path(), &|p| !is_wal(p));
            // Per segment file: its content at its last completed sync.
            let mut synced: HashMap<std::path::PathBuf, Vec<u8>> = HashMap::new();
            let note_sync = |synced: &mut HashMap<_, _>| {
                for entry in std::fs::read_dir(live.path().join("wal")).unwrap() {
                    let path = entry.unwrap().path();
                    let content = std::fs::read(&path).unwrap();
                    synced.insert(path, content);
                }
            };
            let (mut groups, mut acked, mut next) = (Vec::new(), 0u64, 1u64);
            let count = rng.random_range(1..40u64);
            for group in 1..=count {
                let last = next + rng.random_range(0..12u64);
                let record = group_record(group, next, last);
                groups.push((group, next, last));
                next = last + 1;
                // The steps of `Store::commit`, with the cut possibly inside
                // the last group's: before its sync completed, after it, or
                // with only some of its writes in sled.
                let ticket = store.append(&record.record).unwrap();
                let cut_inside = group == count && rng.random_bool(0.7);
                if cut_inside && rng.random_bool(0.4) {
                    break;
                }
                ticket.sync().unwrap();
                note_sync(&mut synced);
                if cut_inside {
                    let writes: Vec<_> = record.record.writes().collect();
                    for (key, value) in &writes[..rng.random_range(0..=writes.len())] {
                        store.data.insert(key, *value).unwrap();
                    }
                    break;
                }
                store.apply(&record).unwrap();
                acked = last;
                if rng.random_bool(0.15) {
                    store.checkpoint().unwrap();
                    std::fs::remove_dir_all(sled_image.path()).unwrap();
                    std::fs::create_dir_all(sled_image.path()).unwrap();
                    copy_dir(live.path(), sled_image.path(), &|p| !is_wal(p));
                }
            }
            // The cut.
            let crashed = tempfile::tempdir().unwrap();
            let sled_from = if rng.random_bool(0.5) {
                sled_image.path()
            } else {
                live.path()
            };
            copy_dir(sled_from, crashed.path(), &|p| !is_wal(p));
            let wal_dir = crashed.path().join("wal");
            std::fs::create_dir_all(&wal_dir).unwrap();
            for entry in std::fs::read_dir(live.path().join("wal")).unwrap() {
                let path = entry.unwrap().path();
                let now = std::fs::read(&path).unwrap();
                let durable = synced.get(&path).cloned().unwrap_or_default();
                // The bytes written since the sync: a prefix of them persisted.
                let changed = (0..now.len())
                    .find(|&i| durable.get(i) != Some(&now[i]))
                    .unwrap_or(now.len());
                let kept = rng.random_range(changed..=now.len());
                let mut image = now[..kept].to_vec();
                if durable.len() > kept {
                    image.extend_from_slice(&durable[kept..]);
                }
                if kept > changed && rng.random_bool(0.5) {
                    let at = rng.random_range(changed..kept);
                    image[at] ^= 0x5a;
                }
                std::fs::write(wal_dir.join(path.file_name().unwrap()), image).unwrap();
            }
            drop(store);

            let recovered = reopen(crashed.path());
            let head = recovered.head().unwrap();
            assert!(
                head >= acked,
                "round {round} (seed {seed}): head {head} < acknowledged {acked}"
            );
            assert!(
                head == 0 || groups.iter().any(|&(_, _, last)| last == head),
                "round {round}: head {head} is not a group boundary"
            );
            let events = recovered.read_events(1, head, usize::MAX).unwrap();
            assert_eq!(
                positions(&events),
                (1..=head).collect::<Vec<_>>(),
                "round {round}"
            );
            for &(group, _, last) in &groups {
                let there = last <= head;
                let stored = recovered.load_command(&command_id(group)).unwrap();
                let order = recovered.load_order(&order_id(group)).unwrap();
                if there {
                    assert_eq!(
                        stored.map(|s| s.result),
                        Some(result(group, last)),
                        "round {round}"
                    );
                    assert_eq!(order.version, group, "round {round}");
                } else {
                    assert_eq!(stored, None, "round {round}: group {group} is half there");
                    assert_eq!(order, Order::default(), "round {round}: group {group}");
                }
            }
            // The history index (in memory until a checkpoint, so partly
            // lost with the cut) holds exactly the log: every event is
            // version = position of order `o-1`.
            let o1 = OrderId::parse("order_id", "o-1").unwrap();
            let whole = |upto: u64| (1..=upto).map(|p| (p, p)).collect::<Vec<_>>();
            assert_eq!(
                recovered.order_history(&o1, 0, usize::MAX).unwrap(),
                whole(head),
                "round {round}: history"
            );
            // Writing goes on from the head, and survives a clean reopen.
            recovered
                .commit(&group_record(1000, head + 1, head + 2))
                .unwrap();
            drop(recovered);
            let again = reopen(crashed.path());
            assert_eq!(again.head().unwrap(), head + 2, "round {round}");
            let all = again.read_events(1, head + 2, usize::MAX).unwrap();
            assert_eq!(positions(&all), (1..=head + 2).collect::<Vec<_>>());
            assert_eq!(
                again.order_history(&o1, 0, usize::MAX).unwrap(),
                whole(head + 2),
                "round {round}: history after the reopen"
            );
        }
    }

    #[test]
    fn a_directory_of_an_earlier_layout_is_refused_naming_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("data").unwrap().insert("o-1", "x").unwrap();
            db.flush().unwrap();
        }
        let Err(error) = Store::open(dir.path(), 1 << 20) else {
            panic!("an unversioned directory with data was opened");
        };
        let message = error.to_string();
        assert!(message.contains("earlier layout"), "{message}");
        assert!(
            message.contains(&format!("formats {EARLIER_FORMAT} and {FORMAT}")),
            "{message}"
        );
    }

    #[test]
    fn another_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let id = Store::open(dir.path(), 1 << 20)
            .unwrap()
            .log_id()
            .to_owned();
        assert_eq!(reopen(dir.path()).log_id(), id, "the identity is durable");
        {
            let store = reopen(dir.path());
            store.db.insert(FORMAT_KEY, &2u32.to_be_bytes()).unwrap();
            store.db.flush().unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let message = loop {
            match Store::open(dir.path(), 1 << 20) {
                Err(OpenError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => break e.to_string(),
                Ok(_) => panic!("format 2 was opened"),
            }
        };
        assert!(message.contains("format 2"), "{message}");
        assert!(
            message.contains(&format!("formats {EARLIER_FORMAT} and {FORMAT}")),
            "{message}"
        );
    }
}
