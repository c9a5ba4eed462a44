//! The store's side of backup and restore: its entries as of one position,
//! read while commands go on being written (`Store::backup`), and a new store
//! written from such entries (`Store::restore_into`).
//!
//! Consistency without stopping the writer: the position `P` is a published
//! head, so every group up to `P` is in sled before the scan starts, and the
//! scan keeps of what it meets only what belongs to the state at `P`:
//! - log blocks are written once and never changed, and a group's blocks end
//!   at its last position, so the blocks up to `P` are exactly events `1..=P`;
//! - idempotency records are written once and never changed either; those
//!   whose position is at most `P` are kept (every successful command has
//!   exactly one event, and its record holds that event's position);
//! - history runs (`history.rs`) are taken from memory first, then from
//!   sled (a run a checkpoint moves meanwhile is in sled before it leaves
//!   memory), one per key, each cut after its last position at or before
//!   `P`: every event up to `P` had its entry in one or the other before the
//!   scan started;
//! - an order snapshot may be newer than `P`: it is kept when the event of
//!   its version is at or before `P`, and otherwise rebuilt from the order's
//!   events up to `P` (`Order::apply`), or left out when there were none.

use std::collections::BTreeMap;
use std::path::Path;

use shared::codec;
use shared::domain::{Order, OrderId, RecordedEvent};

use super::history::Run;
use super::{
    check_format, decode_event, history_key, key, lock, log_key, open_sled, position_of, OpenError,
    Store, StoredCommand, CHECKPOINT_KEY, COMMAND, FORMAT, FORMAT_KEY, HISTORY,
    HISTORY_INDEXED_KEY, LOG, LOG_ID_KEY, ORDER,
};
use crate::error::StoreError;
use crate::wal;

/// How many entries of each kind a backup holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryCounts {
    pub orders: u64,
    pub log_blocks: u64,
    pub commands: u64,
    pub history: u64,
}

impl EntryCounts {
    /// Counts the entry with `key`; `false` for a key of no known kind.
    pub fn add(&mut self, key: &[u8]) -> bool {
        let count = match key.first() {
            Some(&ORDER) => &mut self.orders,
            Some(&LOG) => &mut self.log_blocks,
            Some(&COMMAND) => &mut self.commands,
            Some(&HISTORY) => &mut self.history,
            _ => return false,
        };
        *count += 1;
        true
    }

    pub fn total(&self) -> u64 {
        self.orders + self.log_blocks + self.commands + self.history
    }
}

/// What `Store::backup` passed on.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupRead {
    pub counts: EntryCounts,
    /// Order snapshots newer than the position, rebuilt from their events.
    pub rebuilt_orders: u64,
}

impl Store {
    /// Passes every entry of the state at `position` (a published head) to
    /// `sink`, which returns `false` to stop early (then `Ok(None)`).
    /// Commands committed meanwhile are not waited for and not included.
    pub fn backup(
        &self,
        position: u64,
        sink: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<Option<BackupRead>, StoreError> {
        let mut counts = EntryCounts::default();
        let mut rebuilt_orders = 0;
        let mut emit = |key: &[u8], value: &[u8]| {
            counts.add(key);
            sink(key, value)
        };
        // The log: gap-free from 1, ending exactly at `position`.
        let mut next = 1;
        for entry in self.data.range(log_key(0)..=log_key(position)) {
            let (key, block) = entry?;
            let first = position_of(&key)?;
            let events = codec::log_block_frames(&block)?.len() as u64;
            if first != next || events == 0 || first + events - 1 > position {
                return Err(StoreError::MissingEvent(next));
            }
            next = first + events;
            if !emit(&key, &block) {
                return Ok(None);
            }
        }
        if next != position + 1 {
            return Err(StoreError::MissingEvent(next));
        }
        let mut in_memory: BTreeMap<Vec<u8>, Run> = lock(&self.recent)
            .all()
            .into_iter()
            .map(|(id, run)| (history_key(&id, run.first), run))
            .collect();
        // A run cut after its last position at or before `position`; one
        // with nothing left is not passed on.
        let mut emit_run = |key: &[u8], run: Run| match run.up_to(position) {
            Some(run) => emit(key, &run.encode()),
            None => true,
        };
        for entry in self.data.scan_prefix([HISTORY]) {
            let (key, value) = entry?;
            let mut run = Run::decode(&key, &value)?;
            // The same run in both (a checkpoint wrote it meanwhile): one of them.
            if let Some(same) = in_memory.remove(&key[..]) {
                if same.positions.len() > run.positions.len() {
                    run = same;
                }
            }
            if !emit_run(&key, run) {
                return Ok(None);
            }
        }
        for (key, run) in in_memory {
            if !emit_run(&key, run) {
                return Ok(None);
            }
        }
        for entry in self.data.scan_prefix([COMMAND]) {
            let (key, value) = entry?;
            let stored: StoredCommand = codec::decode_snapshot(&value)?;
            if stored.result.position <= position && !emit(&key, &value) {
                return Ok(None);
            }
        }
        for entry in self.data.scan_prefix([ORDER]) {
            let (key, value) = entry?;
            let order: Order = codec::decode_snapshot(&value)?;
            let id = String::from_utf8_lossy(&key[1..]).into_owned();
            // The event that made the snapshot's version; not found when its
            // group is being applied right now (history after the snapshot).
            let made_at = self.position_of_version(&id, order.version)?;
            let kept = match made_at {
                Some(at) if at <= position => emit(&key, &value),
                _ => match self.order_as_of(&id, position)? {
                    Some(order) => {
                        rebuilt_orders += 1;
                        emit(&key, &codec::encode_snapshot(&order))
                    }
                    None => true,
                },
            };
            if !kept {
                return Ok(None);
            }
        }
        Ok(Some(BackupRead {
            counts,
            rebuilt_orders,
        }))
    }

    /// The position of version `version` of order `id`, if its history
    /// entry is written: in memory first, then in sled (see `order_history`),
    /// in one lookup of the run that starts at or before it.
    fn position_of_version(&self, id: &str, version: u64) -> Result<Option<u64>, StoreError> {
        if let Some(position) = lock(&self.recent).position_of(id, version) {
            return Ok(Some(position));
        }
        Ok(self
            .run_at_or_before(id, version)?
            .and_then(|run| run.position_of(version)))
    }

    /// The order `id` as its events up to `position` made it; `None` when it
    /// had none.
    fn order_as_of(&self, id: &str, position: u64) -> Result<Option<Order>, StoreError> {
        let order_id = OrderId::parse("order_id", id)
            .map_err(|_| StoreError::LogKey(key(ORDER, id.as_bytes())))?;
        let positions: Vec<u64> = self
            .order_history(&order_id, 0, usize::MAX)?
            .into_iter()
            .map(|(_, at)| at)
            .take_while(|&at| at <= position)
            .collect();
        if positions.is_empty() {
            return Ok(None);
        }
        let mut order = Order::default();
        for (message, &at) in self.events_at(&positions)?.into_iter().zip(&positions) {
            let envelope = decode_event(at, message)?;
            let recorded = RecordedEvent::try_from(&envelope)
                .map_err(|e| StoreError::UnreadableEvent(at, e.to_string()))?;
            order.apply(&recorded.event);
        }
        Ok(Some(order))
    }

    /// Starts a store in `dir` (new or empty) for the log `log_id`, to be
    /// filled with a backup's entries up to `position` and then finished
    /// (`Restoring::finish`). Until then the directory holds no format
    /// version, so that `Store::open` refuses a restore cut short.
    pub fn restore_into(
        dir: &Path,
        cache_bytes: u64,
        log_id: &str,
        position: u64,
    ) -> Result<Restoring, OpenError> {
        let db = open_sled(dir, cache_bytes)?;
        let other = |source: StoreError| OpenError::Other {
            dir: dir.display().to_string(),
            source,
        };
        if db.get(FORMAT_KEY).map_err(|e| other(e.into()))?.is_some() {
            return Err(other(StoreError::Failed(
                "the directory already holds a store".into(),
            )));
        }
        let data = db.open_tree("data").map_err(|e| other(e.into()))?;
        Ok(Restoring {
            db,
            data,
            dir: dir.to_owned(),
            log_id: log_id.to_owned(),
            position,
        })
    }
}

/// A store being restored (`Store::restore_into`).
pub struct Restoring {
    db: sled::Db,
    data: sled::Tree,
    dir: std::path::PathBuf,
    log_id: String,
    position: u64,
}

impl Restoring {
    /// Writes one entry of the backup, as it was stored.
    pub fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.data.insert(key, value)?;
        Ok(())
    }

    /// Marks the store as the log `log_id` at `position` with nothing in its
    /// write-ahead log, makes it durable, and opens it: the log must end
    /// exactly at `position`.
    pub fn finish(self) -> Result<Store, OpenError> {
        let Restoring {
            db,
            data,
            dir,
            log_id,
            position,
        } = self;
        let other = |source: StoreError| OpenError::Other {
            dir: dir.display().to_string(),
            source,
        };
        drop(data);
        let at = position.to_be_bytes();
        let marks: [(&[u8], &[u8]); 3] = [
            (LOG_ID_KEY, log_id.as_bytes()),
            (CHECKPOINT_KEY, &at),
            (HISTORY_INDEXED_KEY, &at),
        ];
        for (key, value) in marks {
            db.insert(key, value).map_err(|e| other(e.into()))?;
        }
        // The data first, then the format version: a directory with a version
        // holds a whole restore.
        db.flush().map_err(|e| other(e.into()))?;
        db.insert(FORMAT_KEY, &FORMAT.to_be_bytes())
            .map_err(|e| other(e.into()))?;
        db.flush().map_err(|e| other(e.into()))?;
        check_format(&db).map_err(|_| other(StoreError::NoLogId))?;
        let store = Store::recover(db, &dir, wal::SEGMENT_BYTES, &log_id)?;
        let head = store.head().map_err(other)?;
        if head != position {
            return Err(other(StoreError::MissingEvent(head.min(position) + 1)));
        }
        // Gap-free from 1 (the head alone could hide a missing block).
        let mut next = 1;
        while next <= position {
            let events = store.read_events(next, position, 4096).map_err(other)?;
            for &(at, _) in &events {
                if at != next {
                    return Err(other(StoreError::MissingEvent(next)));
                }
                next += 1;
            }
            if events.is_empty() {
                return Err(other(StoreError::MissingEvent(next)));
            }
        }
        for path in [dir.clone(), dir.join("wal")] {
            std::fs::File::open(&path)
                .and_then(|d| d.sync_all())
                .map_err(|e| other(sled::Error::Io(e).into()))?;
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use shared::domain::{Submission, Timestamp};
    use shared::proto as pb;

    use super::*;
    use crate::decide::Group;
    use crate::store::GroupRecord;

    fn line(sku: &str, quantity: u32) -> Option<pb::LineItem> {
        Some(pb::LineItem {
            sku: sku.into(),
            quantity,
            unit_price_cents: 25,
        })
    }

    /// `groups` group commits of three commands each on eleven orders
    /// (created, then added to), each with a command id, decided against
    /// `store` and committed there. Returns the records, in order.
    fn write_groups(store: &Store, groups: usize) -> Vec<GroupRecord> {
        let mut created = HashSet::new();
        let mut records = Vec::new();
        for g in 0..groups {
            let mut group = Group::new(store.head().unwrap() + 1);
            for j in 0..3 {
                let order = format!("o-{}", (g * 3 + j) % 11);
                let key = format!("k-{g}-{j}");
                let submission = if created.insert(order.clone()) {
                    Submission::try_from(&pb::CreateOrderRequest {
                        order_id: order,
                        customer_id: "cust".into(),
                        items: line("a", 1).into_iter().collect(),
                        currency: String::new(),
                        command_id: key,
                    })
                } else {
                    Submission::try_from(&pb::AddItemRequest {
                        order_id: order,
                        item: line("b", 2),
                        expected_version: None,
                        command_id: key,
                    })
                };
                group
                    .decide(store, submission.unwrap(), Timestamp::from_micros(1), None)
                    .unwrap();
            }
            let decided = group.finish().unwrap();
            let record =
                Store::record(decided.batch, decided.first_position, decided.last_position);
            store.commit(&record).unwrap();
            records.push(record);
        }
        records
    }

    fn backup(store: &Store, position: u64) -> (BTreeMap<Vec<u8>, Vec<u8>>, BackupRead) {
        let mut entries = BTreeMap::new();
        let read = store
            .backup(position, &mut |key, value| {
                assert!(entries.insert(key.to_vec(), value.to_vec()).is_none());
                true
            })
            .unwrap()
            .expect("not stopped");
        assert_eq!(read.counts.total(), entries.len() as u64);
        (entries, read)
    }

    /// `entries` with each history run as one entry per event, as format 3
    /// stored them: equal for any two ways of cutting the same history.
    fn by_event(entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut out = BTreeMap::new();
        for (key, value) in entries {
            if key[0] != HISTORY {
                out.insert(key.clone(), value.clone());
                continue;
            }
            let order = &key[1..key.len() - 9];
            let order = std::str::from_utf8(order).unwrap();
            for (version, position) in Run::decode(key, value).unwrap().entries() {
                out.insert(history_key(order, version), position.to_be_bytes().to_vec());
            }
        }
        out
    }

    fn commit_all(store: &Store, records: &[GroupRecord]) {
        for record in records {
            store.commit(record).unwrap();
        }
    }

    /// A store that went on past `P` backs up at `P` exactly what a store
    /// that stopped at `P` holds: the later commits' events, keys and order
    /// versions are left out, also while they are being written.
    #[test]
    fn a_backup_at_a_position_holds_the_state_at_it_whatever_was_written_since() {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let live = Store::open(dirs[0].path(), 1 << 20).unwrap();
        let records = write_groups(&live, 40);
        let cut = 20;
        let position = records[cut - 1].record.last_position();

        let stopped = Store::open(dirs[1].path(), 1 << 20).unwrap();
        commit_all(&stopped, &records[..cut]);
        let (expected, _) = backup(&stopped, position);
        assert_eq!(expected.keys().filter(|k| k[0] == COMMAND).count(), cut * 3);

        let (entries, read) = backup(&live, position);
        assert!(read.rebuilt_orders > 0, "orders changed after the position");
        assert_eq!(entries, expected);

        // While a writer commits the rest and checkpoints move the history
        // from memory to sled: its runs are cut at other versions, the
        // positions they give each version are the same.
        let racing = Store::open(dirs[2].path(), 1 << 20).unwrap();
        commit_all(&racing, &records[..cut / 2]);
        racing.checkpoint().unwrap();
        commit_all(&racing, &records[cut / 2..cut]);
        let writer = {
            let (store, rest) = (racing.clone(), records[cut..].to_vec());
            std::thread::spawn(move || {
                for (n, record) in rest.iter().enumerate() {
                    store.commit(record).unwrap();
                    if n % 3 == 0 {
                        store.checkpoint().unwrap();
                    }
                    std::thread::yield_now();
                }
            })
        };
        let mut rounds = 0;
        while !writer.is_finished() || rounds == 0 {
            assert_eq!(
                by_event(&backup(&racing, position).0),
                by_event(&expected),
                "round {rounds}"
            );
            rounds += 1;
        }
        writer.join().unwrap();

        // Restored: the stopped store's state, the same log, writing goes on.
        let restoring =
            Store::restore_into(dirs[3].path(), 1 << 20, live.log_id(), position).unwrap();
        for (key, value) in &expected {
            restoring.insert(key, value).unwrap();
        }
        let restored = restoring.finish().unwrap();
        assert_eq!(restored.log_id(), live.log_id());
        assert_eq!(restored.head().unwrap(), position);
        assert_eq!(backup(&restored, position).0, expected);
        for n in 0..11 {
            let id = OrderId::parse("order_id", &format!("o-{n}")).unwrap();
            assert_eq!(
                restored.load_order(&id).unwrap(),
                stopped.load_order(&id).unwrap()
            );
        }
        restored.commit(&records[cut]).unwrap();
        assert_eq!(
            restored.head().unwrap(),
            records[cut].record.last_position()
        );
    }

    #[test]
    fn a_restore_whose_log_does_not_reach_its_position_is_refused() {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let live = Store::open(dirs[0].path(), 1 << 20).unwrap();
        let records = write_groups(&live, 5);
        let position = records[4].record.last_position();
        let (entries, _) = backup(&live, position);
        let restoring =
            Store::restore_into(dirs[1].path(), 1 << 20, live.log_id(), position + 1).unwrap();
        for (key, value) in &entries {
            restoring.insert(key, value).unwrap();
        }
        let Err(error) = restoring.finish() else {
            panic!("a log one event short was accepted");
        };
        assert!(error.to_string().contains("missing"), "{error}");
    }
}
