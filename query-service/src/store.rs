//! The query side's sled database: the catalog of generations of read models, opening, rebuilding and switching them.
//!
//! Read models live in *generations*, one tree `g{N}` each; what is inside a
//! generation's tree belongs to the read models (`read_models/`, each owning
//! its key prefixes). The default tree's catalog says which generation is
//! served (`active`) and which one a rebuild is filling (`rebuilding`), and
//! for each, which read models it holds at which versions.
//!
//! When the served generation's record differs from this build's registry (a
//! model missing, another version, one no longer kept), a new generation is
//! built from position 0, exactly like a rebuild on request: queries are
//! answered from the old one meanwhile, for the models it holds at this
//! build's versions (the others answer UNAVAILABLE until the switch), and the
//! old tree is dropped after the switch. Nothing older is ever converted: a
//! directory without a catalog this build reads is built anew.

use std::collections::hash_map::{Entry, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock as Gate};

use serde::{Deserialize, Serialize};
use shared::codec::{decode_snapshot, encode_snapshot};
use shared::domain::{RecordedEvent, Timestamp};

use crate::dbfiles::{self, Receiving, INCOMPLETE_MARKER};
use crate::parking::{self, ParkedEvent, Parking, SkipRecord};
use crate::projection::{self, ProjectionError};
use crate::read_models::checkpoint::{self, Checkpoint};
use crate::read_models::order_view::OrderRow;
use crate::read_models::{order_view, Batch, Change, Descriptor, REGISTRY};
use crate::storage::{Bytes, Reader, StoreError, Writes, PENDING_KEY};

/// Default-tree key of the `Catalog`.
const CATALOG_KEY: &[u8] = b"read_models";
/// Default-tree key of the command log's identity (`Store::log_id`).
const LOG_ID_KEY: &[u8] = b"command_log_id";

/// The read models a store keeps: `REGISTRY`, or another list in tests.
type Registry = &'static [&'static Descriptor];

/// A read model as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ModelRecord {
    name: String,
    version: u32,
}

/// A generation's number and the read models it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct GenerationRecord {
    number: u64,
    models: Vec<ModelRecord>,
}

/// Which generations exist: the one served and the one a rebuild is filling.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Catalog {
    active: GenerationRecord,
    rebuilding: Option<GenerationRecord>,
}

/// The database and the generation queries are answered from.
pub struct Store {
    db: sled::Db,
    /// The data directory (its files are what `StreamSnapshot` copies).
    dir: PathBuf,
    active: RwLock<Arc<Generation>>,
    rebuilding: AtomicBool,
    registry: Registry,
    /// Parked events and skips, outside every generation.
    parking: Parking,
    /// The applier writes a batch (and switches generations) under it
    /// exclusively; a snapshot being copied holds it shared, so that the
    /// generation it copies stays at one checkpoint (`hold_writes`).
    writes: Arc<Gate<()>>,
}

/// One set of read models in one tree.
pub struct Generation {
    record: GenerationRecord,
    reader: Reader,
    /// The registered models this generation holds at this build's versions.
    holds: Vec<&'static Descriptor>,
}

fn tree_name(generation: u64) -> String {
    format!("g{generation}")
}

/// The generation a tree belongs to, for names of any build (`g3`, `g3/views`).
fn generation_of(name: &[u8]) -> Option<u64> {
    let rest = std::str::from_utf8(name).ok()?.strip_prefix('g')?;
    let number = rest.split_once('/').map_or(rest, |(number, _)| number);
    number.parse().ok()
}

fn records(registry: Registry) -> Vec<ModelRecord> {
    registry
        .iter()
        .map(|m| ModelRecord {
            name: m.name.to_owned(),
            version: m.version,
        })
        .collect()
}

/// What `held` lacks, or holds otherwise, compared with `wanted`; empty when
/// they are the same set.
fn differences(held: &[ModelRecord], wanted: &[ModelRecord]) -> Vec<String> {
    let mut out = Vec::new();
    for w in wanted {
        match held.iter().find(|h| h.name == w.name) {
            None => out.push(format!("{} missing", w.name)),
            Some(h) if h.version != w.version => out.push(format!(
                "{} at version {} (this build: {})",
                w.name, h.version, w.version
            )),
            Some(_) => {}
        }
    }
    for h in held {
        if !wanted.iter().any(|w| w.name == h.name) {
            out.push(format!("{} no longer kept", h.name));
        }
    }
    out
}

/// sled on `path`, without sled's flusher thread: the applier's
/// once-a-second flush (`applier::check_flushes`), the shutdown and the
/// copies flush instead. sled's flusher also cleans segments, spending up to
/// half of each 500 ms interval rewriting pages: following the log at 500
/// events/s that cost about 20 µs of CPU per applied event (15%), for 5%
/// less disk (BENCHMARKS.md).
fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .flush_every_ms(None)
        .open()
        .map_err(|e| open_error(path, e))
}

fn open_error(path: &Path, error: sled::Error) -> StoreError {
    let text = error.to_string();
    if text.contains("could not acquire lock") {
        StoreError::Locked(path.to_owned())
    } else {
        StoreError::Open {
            path: path.to_owned(),
            source: Box::new(error),
        }
    }
}

impl Store {
    /// Opens (or creates) the database. With `rebuild`, starts a fresh
    /// generation that the applier fills from position 0 (a rebuild left
    /// unfinished by a crash is resumed either way); so does finding read
    /// models other than this build's. Returns the generation to apply events to.
    /// A directory holding a copy `--bootstrap-from` did not finish is refused.
    pub fn open(
        path: &Path,
        cache_bytes: u64,
        rebuild: bool,
    ) -> Result<(Store, Arc<Generation>), StoreError> {
        if path.join(INCOMPLETE_MARKER).exists() {
            return Err(StoreError::IncompleteCopy(path.to_owned()));
        }
        Store::open_with(path, cache_bytes, rebuild, REGISTRY)
    }

    /// Opens a copy of another replica's database just written by
    /// `--bootstrap-from`, to check it before its marker is removed.
    pub fn open_copy(
        path: &Path,
        cache_bytes: u64,
    ) -> Result<(Store, Arc<Generation>), StoreError> {
        Store::open_with(path, cache_bytes, false, REGISTRY)
    }

    /// `open`, keeping the read models of `registry`.
    fn open_with(
        path: &Path,
        cache_bytes: u64,
        rebuild: bool,
        registry: Registry,
    ) -> Result<(Store, Arc<Generation>), StoreError> {
        std::fs::create_dir_all(path).map_err(|e| StoreError::Open {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        let db = open_sled(path, cache_bytes)?;
        let names = db.tree_names();
        let highest = names.iter().filter_map(|n| generation_of(n)).max();
        let wanted = records(registry);
        let stored = match db.get(CATALOG_KEY)? {
            Some(bytes) => match decode_snapshot::<Catalog>(&bytes) {
                Ok(catalog) => Some(catalog),
                Err(error) => {
                    tracing::warn!(%error, "the catalog of read models does not decode; building them anew from position 0");
                    None
                }
            },
            None => None,
        };
        let mut catalog = stored.unwrap_or_else(|| {
            if highest.is_some() {
                tracing::warn!("read models written by another build, with no catalog this build reads: dropping them and building them anew from position 0");
            }
            Catalog {
                active: GenerationRecord {
                    number: highest.unwrap_or(0) + 1,
                    models: wanted.clone(),
                },
                rebuilding: None,
            }
        });
        // A rebuild another build left unfinished starts over.
        if let Some(r) = &catalog.rebuilding {
            if !differences(&r.models, &wanted).is_empty() {
                catalog.rebuilding = None;
            }
        }
        let stale = differences(&catalog.active.models, &wanted);
        if catalog.rebuilding.is_none() && (rebuild || !stale.is_empty()) {
            catalog.rebuilding = Some(GenerationRecord {
                number: highest.unwrap_or(0).max(catalog.active.number) + 1,
                models: wanted,
            });
        }
        if !stale.is_empty() {
            tracing::warn!(
                generation = catalog.active.number,
                differences = %stale.join(", "),
                "the served read models are not this build's: rebuilding them from position 0; until the switch, queries are answered from the models the old generation holds at this build's versions, the others are unavailable"
            );
        }
        db.insert(CATALOG_KEY, encode_snapshot(&catalog))?;
        // Trees of any other generation are leftovers of a switch or a rebuild
        // interrupted by a crash, or of another build.
        let kept = [Some(&catalog.active), catalog.rebuilding.as_ref()];
        for name in names {
            if let Some(number) = generation_of(&name) {
                if !kept.iter().flatten().any(|g| g.number == number) {
                    db.drop_tree(&name)?;
                }
            }
        }
        db.flush()?;
        let active = Arc::new(Generation::open(&db, &catalog.active, registry)?);
        let target = match &catalog.rebuilding {
            Some(record) => Arc::new(Generation::open(&db, record, registry)?),
            None => Arc::clone(&active),
        };
        let store = Store {
            parking: Parking::open(&db)?,
            db,
            dir: path.to_owned(),
            active: RwLock::new(active),
            rebuilding: AtomicBool::new(catalog.rebuilding.is_some()),
            registry,
            writes: Arc::new(Gate::new(())),
        };
        Ok((store, target))
    }

    /// Prepares `path` for `--bootstrap-from`: `None` when it already holds
    /// read models (a catalog) of its own; otherwise the copy to write into
    /// it (the directory locked; the marker is written with the first file).
    /// The database files of a copy that did not finish, or of a database
    /// without a catalog, are removed first.
    pub fn begin_bootstrap(path: &Path, cache_bytes: u64) -> Result<Option<Receiving>, StoreError> {
        let io = |e: std::io::Error| StoreError::Open {
            path: path.to_owned(),
            source: Box::new(e),
        };
        std::fs::create_dir_all(path).map_err(io)?;
        let receiving = Receiving::begin(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => StoreError::Locked(path.to_owned()),
            _ => io(e),
        })?;
        if path.join(INCOMPLETE_MARKER).exists() {
            tracing::warn!(
                data_dir = %path.display(),
                "an earlier copy into this directory did not finish: removing it and copying again"
            );
        } else if !dbfiles::list(path).map_err(io)?.is_empty() {
            let db = open_sled(path, cache_bytes)?;
            if db.get(CATALOG_KEY)?.is_some() {
                return Ok(None);
            }
        }
        // The marker, if any, stays until the copy's first file rewrites it.
        dbfiles::remove(path).map_err(io)?;
        Ok(Some(receiving))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes everything buffered to the database file (no sync): its files
    /// then hold everything applied so far, and `generation`'s entries
    /// (`Generation::settle`) everything committed to it, its checkpoint
    /// included, as a copy of the files holds them once opened.
    pub fn write_out(&self, generation: &Generation) -> Result<(), StoreError> {
        generation.settle()?;
        self.db.flush()?;
        Ok(())
    }

    /// Waits for the batch being applied, then keeps the applier from writing
    /// until the guard is dropped: what is served stays at one checkpoint.
    /// Queries are not held (they never take it).
    pub async fn hold_writes(&self) -> OwnedRwLockReadGuard<()> {
        Arc::clone(&self.writes).read_owned().await
    }

    /// Taken by the applier around each batch it applies (see `hold_writes`).
    pub async fn writing(&self) -> OwnedRwLockWriteGuard<()> {
        Arc::clone(&self.writes).write_owned().await
    }

    /// The generation queries are answered from.
    pub fn active(&self) -> Arc<Generation> {
        Arc::clone(&self.active.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether a generation is being built from position 0 while the served
    /// one answers (on request, or because the served one is not this build's).
    pub fn is_rebuilding(&self) -> bool {
        self.rebuilding.load(Ordering::Acquire)
    }

    /// The parked events and the record of skips.
    pub fn parking(&self) -> &Parking {
        &self.parking
    }

    /// Starts a rebuild while serving (`StartRebuild`): records, durably, a
    /// fresh generation to fill from position 0, as `--rebuild` does at start,
    /// and returns it. The served generation keeps answering until the
    /// applier switches to the new one (`switch_to`). `None` when a rebuild
    /// is already running.
    pub fn start_rebuild(&self) -> Result<Option<Arc<Generation>>, StoreError> {
        if self.is_rebuilding() {
            return Ok(None);
        }
        let active = self.active();
        let highest = self
            .db
            .tree_names()
            .iter()
            .filter_map(|n| generation_of(n))
            .max()
            .unwrap_or(0)
            .max(active.number());
        let record = GenerationRecord {
            number: highest + 1,
            models: records(self.registry),
        };
        let generation = Arc::new(Generation::open(&self.db, &record, self.registry)?);
        let catalog = Catalog {
            active: active.record.clone(),
            rebuilding: Some(record),
        };
        self.db.insert(CATALOG_KEY, encode_snapshot(&catalog))?;
        self.db.flush()?;
        self.rebuilding.store(true, Ordering::Release);
        Ok(Some(generation))
    }

    /// Makes a rebuilt generation the served one (durably). Returns the old one,
    /// to be dropped with `drop_retired` once no query holds it any more.
    pub fn switch_to(&self, target: &Arc<Generation>) -> Result<Arc<Generation>, StoreError> {
        let catalog = Catalog {
            active: target.record.clone(),
            rebuilding: None,
        };
        self.db.insert(CATALOG_KEY, encode_snapshot(&catalog))?;
        self.db.flush()?;
        let mut active = self.active.write().unwrap_or_else(PoisonError::into_inner);
        self.rebuilding.store(false, Ordering::Release);
        Ok(std::mem::replace(&mut *active, Arc::clone(target)))
    }

    /// Drops the tree of a generation no longer served, unless a query still
    /// reads it; then it is handed back to retry later. (Trees left behind by a
    /// crash are dropped by the next `open`.)
    pub fn drop_retired(
        &self,
        retired: Arc<Generation>,
    ) -> Result<Option<Arc<Generation>>, StoreError> {
        match Arc::try_unwrap(retired) {
            Ok(generation) => {
                self.db.drop_tree(tree_name(generation.number()))?;
                Ok(None)
            }
            Err(still_read) => Ok(Some(still_read)),
        }
    }

    /// Writes everything to disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// The identity of the command log the read models were built from, once
    /// a subscription has told it.
    pub fn log_id(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .get(LOG_ID_KEY)?
            .map(|id| String::from_utf8_lossy(&id).into_owned()))
    }

    /// Records the command log's identity, durably, before any of its events
    /// are applied.
    pub async fn set_log_id(&self, id: &str) -> Result<(), StoreError> {
        self.db.insert(LOG_ID_KEY, id.as_bytes())?;
        self.flush().await
    }
}

/// What `models` (name, version) lack or hold otherwise than this build's
/// read models; empty when they are the same.
pub fn model_differences(models: &[(String, u32)]) -> Vec<String> {
    let held: Vec<ModelRecord> = models
        .iter()
        .map(|(name, version)| ModelRecord {
            name: name.clone(),
            version: *version,
        })
        .collect();
    differences(&held, &records(REGISTRY))
}

impl Generation {
    /// The read models this generation holds (name, version), if it holds
    /// every one of this build's; `None` while a model is being rebuilt.
    pub fn complete_models(&self) -> Option<Vec<(String, u32)>> {
        if !differences(&self.record.models, &records(REGISTRY)).is_empty() {
            return None;
        }
        Some(
            self.record
                .models
                .iter()
                .map(|m| (m.name.clone(), m.version))
                .collect(),
        )
    }

    /// The entries with keys from `low` up to `high` (excluded; `None`: to
    /// the end), in key order (not the storage layer's pending batch). The
    /// checkpoint's entry is current only after `settle` (`Store::write_out`
    /// settles before a copy is counted).
    pub fn entries_between(
        &self,
        low: &[u8],
        high: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(Bytes, Bytes), StoreError>> + '_ {
        let range = (
            std::ops::Bound::Included(low.to_vec()),
            high.map_or(std::ops::Bound::Unbounded, |h| {
                std::ops::Bound::Excluded(h.to_vec())
            }),
        );
        self.reader
            .tree()
            .range::<Vec<u8>, _>(range)
            .map(|e| e.map_err(StoreError::from))
            .filter(|e| !matches!(e, Ok((k, _)) if k == crate::storage::PENDING_KEY))
    }

    /// Keys that split the entries into ranges of about one key prefix each
    /// (each read model's prefixes), in order: for scanning them in parallel.
    pub fn split_keys(&self) -> Vec<Vec<u8>> {
        let mut prefixes: Vec<u8> = self
            .holds
            .iter()
            .flat_map(|m| m.prefixes.iter().copied())
            .collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        prefixes.into_iter().map(|p| vec![p]).collect()
    }

    /// Writes the last batch's pending value out (`Reader::settle`): the
    /// tree's entries then hold everything committed, for a copy of them.
    pub fn settle(&self) -> Result<(), StoreError> {
        self.reader.settle()
    }

    fn open(
        db: &sled::Db,
        record: &GenerationRecord,
        registry: Registry,
    ) -> Result<Generation, StoreError> {
        let holds = registry
            .iter()
            .copied()
            .filter(|m| {
                record
                    .models
                    .iter()
                    .any(|r| r.name == m.name && r.version == m.version)
            })
            .collect();
        let reader = Reader::new(db.open_tree(tree_name(record.number))?);
        // A batch a crash cut short is completed before anything reads it.
        reader.settle()?;
        Ok(Generation {
            record: record.clone(),
            reader,
            holds,
        })
    }

    pub fn number(&self) -> u64 {
        self.record.number
    }

    /// The tree to read `model` from, if this generation holds it at this
    /// build's version.
    pub fn read(&self, model: &Descriptor) -> Result<&Reader, StoreError> {
        if self
            .holds
            .iter()
            .any(|m| m.name == model.name && m.version == model.version)
        {
            Ok(&self.reader)
        } else {
            Err(StoreError::Rebuilding(model.name))
        }
    }

    /// How far this generation has got; position 0 if it holds no checkpoint
    /// this build reads (it is then being replaced by a rebuild).
    pub fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        match self.read(&checkpoint::MODEL) {
            Ok(reader) => checkpoint::get(reader),
            Err(_) => Ok(Checkpoint::default()),
        }
    }

    /// Applies `events` (consecutive positions) and moves the checkpoint to the
    /// last one, in one atomic batch. Returns the row after each event of the
    /// orders `keep` selects (asked once per order). Only ever called on a
    /// generation holding every registered read model (the applier's target).
    pub fn apply(
        &self,
        events: &[RecordedEvent],
        applied_at: Option<Timestamp>,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<OrderRow>, ApplyError> {
        let Some(last) = events.last() else {
            return Ok(Vec::new());
        };
        // The applier is the only writer of a generation, so nothing read here
        // changes before the batch is applied.
        let (changes, kept) = project(&self.reader, events, keep)?;
        let batch = Batch {
            changes: &changes,
            checkpoint: Checkpoint {
                position: last.position,
                applied_at,
            },
        };
        let mut writes = Writes::default();
        for model in &self.holds {
            (model.update)(&batch, &self.reader, &mut writes)?;
        }
        self.reader.commit(writes)?;
        Ok(kept)
    }
}

impl Generation {
    /// The writes of `events` (consecutive positions, none if empty) and of
    /// the checkpoint moving to `checkpoint`, and the kept rows.
    fn writes(
        &self,
        events: &[RecordedEvent],
        checkpoint: Checkpoint,
        keep: impl Fn(&str) -> bool,
    ) -> Result<(Writes, Vec<OrderRow>), ApplyError> {
        let (changes, kept) = project(&self.reader, events, keep)?;
        let batch = Batch {
            changes: &changes,
            checkpoint,
        };
        let mut writes = Writes::default();
        for model in &self.holds {
            (model.update)(&batch, &self.reader, &mut writes)?;
        }
        Ok((writes, kept))
    }

    /// Commits `writes` to this generation and `side` to the parking trees
    /// in one sled transaction (the pending batch of `Reader::commit` is
    /// dropped in it, so a restart cannot replay an older one over it).
    fn commit_parking(
        &self,
        writes: Writes,
        parking: &Parking,
        side: impl Fn(
            &sled::transaction::TransactionalTree,
            &sled::transaction::TransactionalTree,
        ) -> Result<(), sled::transaction::UnabortableTransactionError>,
    ) -> Result<(), StoreError> {
        use sled::Transactional;
        // The transaction drops the pending value (`Reader::commit`).
        let writes = self.reader.replacing_pending(writes)?;
        let tree = self.reader.tree();
        let result = (tree, &parking.parked, &parking.skips).transaction(|(g, parked, skips)| {
            for (key, value) in &writes {
                match value {
                    Some(value) => g.insert(key.as_slice(), value.clone())?,
                    None => g.remove(key.as_slice())?,
                };
            }
            g.remove(PENDING_KEY)?;
            side(parked, skips)?;
            Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
        });
        result.map_err(|e| match e {
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
            sled::transaction::TransactionError::Abort(()) => {
                StoreError::Sled(sled::Error::Unsupported("aborted".to_owned()))
            }
        })
    }

    /// Moves the checkpoint past the event at `checkpoint.position` without
    /// applying it, parking it (`parked`, unless it is parked already) and
    /// recording the skip, in one transaction: a crash leaves both or neither.
    pub fn skip(
        &self,
        checkpoint: Checkpoint,
        parking: &Parking,
        parked: Option<&ParkedEvent>,
        skip: &SkipRecord,
    ) -> Result<(), StoreError> {
        let writes = match self.writes(&[], checkpoint, |_| false) {
            Ok((writes, _)) => writes,
            Err(ApplyError::Store(e)) => return Err(e),
            Err(ApplyError::Projection { .. }) => unreachable!("no event is projected"),
        };
        let parked = parked.map(encode_snapshot);
        let skip = encode_snapshot(skip);
        let position = checkpoint.position;
        self.commit_parking(writes, parking, |p, s| {
            if let Some(parked) = &parked {
                p.insert(&parking::key(position), parked.as_slice())?;
            }
            let id = s.generate_id()?;
            s.insert(&id.to_be_bytes(), skip.as_slice())?;
            Ok(())
        })
    }

    /// Applies the parked `event` now, un-parking it in the same transaction;
    /// the checkpoint stays where it is (`checkpoint`, this generation's).
    pub fn apply_parked(
        &self,
        event: &RecordedEvent,
        checkpoint: Checkpoint,
        parking: &Parking,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<OrderRow>, ApplyError> {
        let (writes, kept) = self.writes(std::slice::from_ref(event), checkpoint, keep)?;
        let position = event.position;
        self.commit_parking(writes, parking, |p, _| {
            p.remove(&parking::key(position))?;
            Ok(())
        })?;
        Ok(kept)
    }
}

/// Why a batch was not applied. Nothing of the batch is stored in either case.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// `events[index]` does not fit the read models: a poison event.
    #[error("event {index} of the batch: {error}")]
    Projection {
        index: usize,
        error: ProjectionError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs the projection over `events` (consecutive positions): each touched
/// order's row before and after the batch, and the row after each event of
/// the orders `keep` selects (asked once per order).
fn project(
    view: &Reader,
    events: &[RecordedEvent],
    keep: impl Fn(&str) -> bool,
) -> Result<(Vec<Change>, Vec<OrderRow>), ApplyError> {
    struct Touched {
        before: Option<OrderRow>,
        /// The latest row (only taken out while an event is applied to it).
        row: Option<OrderRow>,
        keep: bool,
    }
    let mut kept = Vec::new();
    let mut touched: HashMap<&str, Touched> = HashMap::with_capacity(events.len());
    let mut order: Vec<&str> = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let id = event.order_id.as_str();
        let entry = match touched.entry(id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                order.push(id);
                let before = order_view::get(view, id)?;
                entry.insert(Touched {
                    row: before.clone(),
                    before,
                    keep: keep(id),
                })
            }
        };
        let row = projection::apply(entry.row.take(), event)
            .map_err(|error| ApplyError::Projection { index, error })?;
        if entry.keep {
            kept.push(row.clone());
        }
        entry.row = Some(row);
    }
    let changes = order
        .into_iter()
        .filter_map(|id| {
            let t = touched.remove(id)?;
            Some(Change {
                before: t.before,
                after: t.row?,
            })
        })
        .collect();
    Ok((changes, kept))
}

#[cfg(test)]
mod tests {
    use shared::domain::{Currency, CustomerId, Event, Line, OrderId, OrderStatus, Sku, Text};

    use super::*;
    use crate::read_models::{analytics, order_lists};

    /// Opens the store on a directory whose previous handle was just dropped.
    /// sled's IO threads can hold the directory lock for a moment after the
    /// last handle goes, so `Locked` is retried for a while; any other
    /// outcome is returned as it is.
    fn reopen(path: &Path, rebuild: bool, registry: Registry) -> (Store, Arc<Generation>) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open_with(path, 8 << 20, rebuild, registry) {
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                opened => return opened.unwrap(),
            }
        }
    }

    fn event(position: u64, order: &str, version: u64, event: Event) -> RecordedEvent {
        RecordedEvent {
            position,
            event_id: format!("e{position}"),
            order_id: OrderId::parse("order_id", order).unwrap(),
            version,
            occurred_at: Timestamp(position as i64 * 3_600_000_000),
            command_id: None,
            event,
        }
    }

    fn customer(id: &str) -> CustomerId {
        CustomerId::parse("customer_id", id).unwrap()
    }

    fn line(sku: &str, quantity: u32) -> Line {
        Line {
            sku: Sku::parse("sku", sku).unwrap(),
            quantity,
            unit_price_cents: 5,
        }
    }

    fn created(position: u64, order: &str, customer_id: &str) -> RecordedEvent {
        let created = Event::OrderCreated {
            customer_id: customer(customer_id),
            currency: Currency::parse("currency", "").unwrap(),
            items: vec![line("a", 1)],
            total_cents: 5,
            item_count: 1,
        };
        event(position, order, 1, created)
    }

    fn placed(position: u64, order: &str, version: u64, lines: Vec<Line>) -> RecordedEvent {
        let total: i128 = lines.iter().map(Line::total_cents).sum();
        let placed = Event::OrderPlaced {
            customer_id: customer("c1"),
            currency: Currency::parse("currency", "").unwrap(),
            item_count: lines.iter().map(|l| u64::from(l.quantity)).sum(),
            total_cents: total as i64,
            lines,
            placed_at: Timestamp(position as i64 * 3_600_000_000),
        };
        event(position, order, version, placed)
    }

    /// A log of a few hundred events over many orders, days and skus: orders
    /// created, changed, placed, shipped or cancelled (some while Placed).
    fn history() -> Vec<RecordedEvent> {
        let mut events = Vec::new();
        for n in 0..60u32 {
            let order = format!("o{n}");
            let sku = |k: u32| format!("s{}", (n * 7 + k) % 9);
            let p = events.len() as u64 + 1;
            events.push(created(p, &order, "c1"));
            let added = Event::ItemAdded {
                customer_id: customer("c1"),
                item: line(&sku(1), 1 + n % 4),
                line_quantity: 1 + n % 4,
                total_cents: 5 + 5 * i64::from(1 + n % 4),
                item_count: 1 + u64::from(1 + n % 4),
            };
            events.push(event(p + 1, &order, 2, added));
            if n % 5 == 4 {
                continue; // stays Draft
            }
            let lines = vec![line("a", 1), line(&sku(1), 1 + n % 4)];
            events.push(placed(p + 2, &order, 3, lines.clone()));
            let last = match n % 5 {
                0 => Event::OrderShipped {
                    customer_id: customer("c1"),
                    carrier: Text::default(),
                    tracking_number: Text::default(),
                    total_cents: 0,
                },
                1 => Event::OrderCancelled {
                    customer_id: customer("c1"),
                    reason: Text::default(),
                    previous_status: OrderStatus::Placed,
                    total_cents: lines.iter().map(Line::total_cents).sum::<i128>() as i64,
                    lines,
                    placed_at: Some(Timestamp((p as i64 + 2) * 3_600_000_000)),
                },
                _ => continue,
            };
            events.push(event(p + 3, &order, 4, last));
        }
        events
    }

    /// Every entry of a generation's tree.
    /// The read models' entries (not the storage layer's pending batch).
    fn entries(generation: &Generation) -> Vec<(Vec<u8>, Vec<u8>)> {
        generation.settle().unwrap();
        generation
            .reader
            .scan(b"", None)
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .filter(|(k, _)| k != crate::storage::PENDING_KEY)
            .collect()
    }

    fn views(generation: &Generation) -> &Reader {
        generation.read(&order_view::MODEL).unwrap()
    }

    /// `--bootstrap-from`'s receiving end, without the network: the source's
    /// files written into a new directory with `Receiving`.
    fn receive_copy(source: &Store, target: &Path) -> (Receiving, dbfiles::FileDigest) {
        let mut receiving = Store::begin_bootstrap(target, 8 << 20).unwrap().unwrap();
        let mut files = dbfiles::FileDigest::default();
        for (name, _) in dbfiles::list(source.dir()).unwrap() {
            let data = std::fs::read(source.dir().join(&name)).unwrap();
            files.add(&name, 0, &data);
            receiving.write(&name, 0, &data).unwrap();
        }
        (receiving, files)
    }

    #[tokio::test]
    async fn a_copy_of_the_files_is_served_only_once_opened_and_checked() {
        use crate::bootstrap::open_and_check;
        use crate::snapshot::Digest;
        let source_dir = tempfile::tempdir().unwrap();
        let (source, _) = Store::open(source_dir.path(), 8 << 20, false).unwrap();
        source.set_log_id("log-1").await.unwrap();
        let active = source.active();
        active
            .apply(
                &[created(1, "o1", "c1"), created(2, "o2", "c2")],
                Some(Timestamp(9)),
                |_| false,
            )
            .unwrap();
        source.write_out(&active).unwrap();
        let digest = Digest::of(&active, 1, &std::sync::atomic::AtomicBool::new(false)).unwrap();
        let header = shared::proto::SnapshotHeader {
            format_version: crate::snapshot::FORMAT_VERSION,
            log_id: "log-1".into(),
            position: 2,
            models: Vec::new(),
        };
        let target = tempfile::tempdir().unwrap();
        let target = target.path().join("b");

        // Entries other than the trailer's: refused, and the directory is not served.
        let (receiving, files) = receive_copy(&source, &target);
        let mut other = digest.clone();
        other.add(b"v-missing", b"row");
        let error = open_and_check(receiving, &target, 8 << 20, &header, &other.trailer(&files))
            .err()
            .unwrap();
        assert!(error.contains("do not match the trailer"), "{error}");
        let refused = Store::open(&target, 8 << 20, false).err().unwrap();
        assert!(
            matches!(refused, StoreError::IncompleteCopy(_)),
            "{refused}"
        );
        // Another position than the header's: refused too.
        let (receiving, files) = receive_copy(&source, &target);
        let ahead = shared::proto::SnapshotHeader {
            position: 3,
            ..header.clone()
        };
        let error = open_and_check(receiving, &target, 8 << 20, &ahead, &digest.trailer(&files))
            .err()
            .unwrap();
        assert!(error.contains("not 3"), "{error}");

        // The copy as sent: opened, checked, the marker removed.
        let (receiving, files) = receive_copy(&source, &target);
        let checked = open_and_check(
            receiving,
            &target,
            8 << 20,
            &header,
            &digest.trailer(&files),
        )
        .unwrap();
        assert_eq!((checked.position, checked.entries), (2, digest.entries()));
        assert!(!target.join(INCOMPLETE_MARKER).exists());
        let (copy, target_generation) = checked.opened;
        assert_eq!(entries(&copy.active()), entries(&active));
        assert_eq!(copy.log_id().unwrap().as_deref(), Some("log-1"));
        // A directory holding read models is not copied into again.
        drop((copy, target_generation));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Store::begin_bootstrap(&target, 8 << 20) {
                Ok(receiving) => {
                    assert!(receiving.is_none());
                    break;
                }
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn a_batch_and_its_checkpoint_commit_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (store, target) = Store::open(dir.path(), 8 << 20, false).unwrap();
        let active = store.active();
        let rows = active
            .apply(
                &[created(1, "o1", "c1"), created(2, "o2", "c2")],
                Some(Timestamp(9)),
                |order_id| order_id == "o2",
            )
            .unwrap();
        assert_eq!(target.checkpoint().unwrap().position, 2);
        // Rows are handed back only for the orders asked for.
        let kept: Vec<_> = rows.iter().map(|r| r.order_id.as_str()).collect();
        assert_eq!(kept, ["o2"]);
        // The second event repeats o1: the whole batch is refused, checkpoint unchanged.
        let err = active
            .apply(
                &[created(3, "o3", "c1"), created(4, "o1", "c1")],
                Some(Timestamp(9)),
                |_| true,
            )
            .unwrap_err();
        assert!(matches!(err, ApplyError::Projection { index: 1, .. }));
        assert_eq!(active.checkpoint().unwrap().position, 2);
        assert!(order_view::get(views(&active), "o3").unwrap().is_none());
        let stats = active.read(&analytics::MODEL).unwrap();
        assert_eq!(analytics::report(stats, 10).unwrap().draft_orders, 2);
    }

    #[test]
    fn pages_walk_newest_first_and_stop_at_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), 8 << 20, false).unwrap();
        let g = store.active();
        let events: Vec<_> = (1..=5)
            .map(|p| created(p, &format!("o{p}"), if p % 2 == 0 { "c" } else { "c1" }))
            .collect();
        g.apply(&events, None, |_| true).unwrap();
        let lists = g.read(&order_lists::MODEL).unwrap();
        let first = order_lists::recent_page(lists, None, None, 2).unwrap();
        let ids: Vec<_> = first.rows.iter().map(|r| r.order_id.as_str()).collect();
        assert_eq!(ids, ["o5", "o4"]);
        let second = order_lists::recent_page(lists, None, first.next_cursor, 10).unwrap();
        assert_eq!(second.rows.len(), 3);
        assert_eq!(second.next_cursor, None);
        let c = order_lists::customer_page(lists, "c", None, 10).unwrap();
        let ids: Vec<_> = c.rows.iter().map(|r| r.order_id.as_str()).collect();
        assert_eq!(ids, ["o4", "o2"]);
        let drafts = order_lists::recent_page(lists, Some(OrderStatus::Draft), None, 10).unwrap();
        assert_eq!(drafts.rows.len(), 5);
        let placed = order_lists::recent_page(lists, Some(OrderStatus::Placed), None, 10).unwrap();
        assert!(placed.rows.is_empty());
    }

    #[test]
    fn a_status_change_moves_the_order_between_status_pages() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), 8 << 20, false).unwrap();
        let g = store.active();
        g.apply(
            &[created(1, "o1", "c1"), created(2, "o2", "c1")],
            None,
            |_| true,
        )
        .unwrap();
        g.apply(&[placed(3, "o1", 2, vec![line("a", 1)])], None, |_| true)
            .unwrap();
        let lists = g.read(&order_lists::MODEL).unwrap();
        let ids = |status: Option<OrderStatus>| -> Vec<(String, OrderStatus)> {
            order_lists::recent_page(lists, status, None, 10)
                .unwrap()
                .rows
                .into_iter()
                .map(|r| (r.order_id, r.status))
                .collect()
        };
        let o1 = ("o1".to_owned(), OrderStatus::Placed);
        let o2 = ("o2".to_owned(), OrderStatus::Draft);
        assert_eq!(ids(Some(OrderStatus::Placed)), std::slice::from_ref(&o1));
        assert_eq!(ids(Some(OrderStatus::Draft)), std::slice::from_ref(&o2));
        // Every list answers with the summary as of the last event.
        assert_eq!(ids(None), [o2, o1]);
        let customer = order_lists::customer_page(lists, "c1", None, 10).unwrap();
        assert_eq!(customer.rows[1].status, OrderStatus::Placed);
    }

    #[test]
    fn a_rebuild_starts_empty_and_replaces_the_old_generation() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, target) = Store::open(dir.path(), 8 << 20, false).unwrap();
            target
                .apply(&[created(1, "o1", "c1")], None, |_| true)
                .unwrap();
            assert_eq!(store.active().number(), 1);
            assert!(!store.is_rebuilding());
        }
        let (store, target) = reopen(dir.path(), true, REGISTRY);
        assert!(store.is_rebuilding());
        assert_eq!(target.number(), 2);
        assert_eq!(target.checkpoint().unwrap().position, 0);
        assert!(order_view::get(views(&store.active()), "o1")
            .unwrap()
            .is_some());
        target
            .apply(&[created(1, "o1", "c1")], None, |_| true)
            .unwrap();
        let old = store.switch_to(&target).unwrap();
        assert!(!store.is_rebuilding());
        assert!(store.drop_retired(old).unwrap().is_none());
        drop((store, target));
        let (store, target) = reopen(dir.path(), false, REGISTRY);
        assert_eq!((store.active().number(), target.number()), (2, 2));
        assert!(order_view::get(views(&store.active()), "o1")
            .unwrap()
            .is_some());
    }

    /// Opens with `registry`, applies `events`, closes.
    fn written_with(path: &Path, registry: Registry, events: &[RecordedEvent]) {
        let (store, target) = reopen(path, false, registry);
        assert_eq!(store.active().number(), target.number());
        target.apply(events, None, |_| true).unwrap();
    }

    #[test]
    fn a_generation_lacking_a_model_is_rebuilt_and_then_answers() {
        static WITHOUT_ANALYTICS: &[&Descriptor] =
            &[&order_view::MODEL, &order_lists::MODEL, &checkpoint::MODEL];
        let dir = tempfile::tempdir().unwrap();
        let log = history();
        written_with(dir.path(), WITHOUT_ANALYTICS, &log);

        let (store, target) = reopen(dir.path(), false, REGISTRY);
        assert!(store.is_rebuilding());
        let old = store.active();
        assert_eq!((old.number(), target.number()), (1, 2));
        // The old generation answers what it holds, and only that.
        assert_eq!(old.checkpoint().unwrap().position, log.len() as u64);
        assert!(order_view::get(views(&old), "o0").unwrap().is_some());
        assert!(matches!(
            old.read(&analytics::MODEL),
            Err(StoreError::Rebuilding("analytics"))
        ));
        drop(old);

        // A crash before the switch resumes the same rebuild.
        target.apply(&log[..10], None, |_| true).unwrap();
        drop((store, target));
        let (store, target) = reopen(dir.path(), false, REGISTRY);
        assert_eq!((store.active().number(), target.number()), (1, 2));
        assert_eq!(target.checkpoint().unwrap().position, 10);

        target.apply(&log[10..], None, |_| true).unwrap();
        let retired = store.switch_to(&target).unwrap();
        assert!(store.drop_retired(retired).unwrap().is_none());
        let served = store.active();
        let report = analytics::report(served.read(&analytics::MODEL).unwrap(), 3).unwrap();
        assert_eq!(report.total_orders, 60);
        assert_eq!(report.draft_orders, 12);
        assert_eq!(report.shipped_orders, 12);
        assert_eq!(report.cancelled_orders, 12);
        assert_eq!(report.placed_orders, 24);
        assert_eq!(report.top_products.len(), 3);
        assert_eq!(report.top_products[0].0, "a");
        assert_eq!(report.top_products[0].1, 36);
        drop(served);
        let names: Vec<_> = store.db.tree_names();
        assert!(!names.iter().any(|n| n == b"g1"), "the old tree is dropped");
        drop((store, target));
        let (store, target) = reopen(dir.path(), false, REGISTRY);
        assert_eq!((store.active().number(), target.number()), (2, 2));
        assert!(!store.is_rebuilding());
    }

    #[test]
    fn a_generation_holding_another_version_is_rebuilt() {
        static LISTS_V0: Descriptor = Descriptor {
            version: 0,
            ..order_lists::MODEL
        };
        static OLDER: &[&Descriptor] = &[
            &order_view::MODEL,
            &LISTS_V0,
            &analytics::MODEL,
            &checkpoint::MODEL,
        ];
        let dir = tempfile::tempdir().unwrap();
        written_with(dir.path(), OLDER, &[created(1, "o1", "c1")]);
        let (store, target) = reopen(dir.path(), false, REGISTRY);
        assert_eq!((store.active().number(), target.number()), (1, 2));
        let old = store.active();
        assert!(old.read(&order_lists::MODEL).is_err());
        assert!(old.read(&analytics::MODEL).is_ok());
        target
            .apply(&[created(1, "o1", "c1")], None, |_| true)
            .unwrap();
        store.switch_to(&target).unwrap();
        let lists = target.read(&order_lists::MODEL).unwrap();
        let page = order_lists::recent_page(lists, None, None, 10).unwrap();
        assert_eq!(page.rows[0].order_id, "o1");
    }

    #[test]
    fn read_models_built_in_any_batches_are_the_same() {
        let log = history();
        let dir = tempfile::tempdir().unwrap();
        let (store, one_by_one) = Store::open(dir.path(), 8 << 20, false).unwrap();
        for event in &log {
            one_by_one
                .apply(std::slice::from_ref(event), None, |_| false)
                .unwrap();
        }
        let incremental = entries(&one_by_one);
        drop((store, one_by_one));
        let (store, rebuilt) = reopen(dir.path(), true, REGISTRY);
        for chunk in log.chunks(37) {
            rebuilt.apply(chunk, None, |_| false).unwrap();
        }
        assert_eq!(entries(&rebuilt), incremental);
        assert_eq!(entries(&store.active()), incremental);
        // Every entry is under the prefix of a registered model.
        let prefixes: Vec<u8> = REGISTRY.iter().flat_map(|m| m.prefixes).copied().collect();
        assert!(incremental.iter().all(|(k, _)| prefixes.contains(&k[0])));
        let stats = rebuilt.read(&analytics::MODEL).unwrap();
        assert!(analytics::report(stats, 10).unwrap().daily.len() > 1);
    }

    #[test]
    fn a_directory_without_a_catalog_this_build_reads_is_built_anew() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("g3/views")
                .unwrap()
                .insert(b"o1", b"x")
                .unwrap();
            db.open_tree("g4").unwrap().insert(b"vo1", b"x").unwrap();
            db.flush().unwrap();
        }
        let (store, target) = reopen(dir.path(), false, REGISTRY);
        assert_eq!((store.active().number(), target.number()), (5, 5));
        assert_eq!(target.checkpoint().unwrap().position, 0);
        let names: Vec<_> = store.db.tree_names();
        assert!(!names.iter().any(|n| n.starts_with(b"g3") || n == b"g4"));
    }

    fn parked(position: u64) -> ParkedEvent {
        ParkedEvent {
            position,
            envelope: vec![1, 2, 3],
            order_id: "o9".to_owned(),
            event_type: "unknown".to_owned(),
            reason: "newer build".to_owned(),
            error: "cannot be read".to_owned(),
            parked_at: Timestamp(7),
            auto: false,
            retries: 0,
            last_retry_at: None,
        }
    }

    fn skip_record(position: u64) -> SkipRecord {
        SkipRecord {
            position,
            kind: crate::parking::SkipKind::Operator,
            reason: "newer build".to_owned(),
            skipped_at: Timestamp(7),
        }
    }

    #[test]
    fn a_skip_moves_the_checkpoint_with_its_park_record_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, target) = Store::open(dir.path(), 8 << 20, false).unwrap();
            // A small batch leaves its writes pending (storage.rs): a reopen
            // must not replay them over the skip's checkpoint.
            target
                .apply(&[created(1, "o1", "c1")], None, |_| true)
                .unwrap();
            let checkpoint = Checkpoint {
                position: 2,
                applied_at: Some(Timestamp(7)),
            };
            target
                .skip(
                    checkpoint,
                    store.parking(),
                    Some(&parked(2)),
                    &skip_record(2),
                )
                .unwrap();
            store.db.flush().unwrap();
        }
        let (store, target) = reopen(dir.path(), false, REGISTRY);
        assert_eq!(target.checkpoint().unwrap().position, 2);
        assert_eq!(store.parking().get(2).unwrap(), Some(parked(2)));
        assert_eq!(
            (
                store.parking().parked_count(),
                store.parking().skipped_count()
            ),
            (1, 1)
        );
        // The read models are untouched by the skip.
        assert!(order_view::get(views(&target), "o1").unwrap().is_some());

        // A rebuild keeps the parking trees, and re-applying a parked event
        // un-parks it in the same transaction as its changes.
        drop((store, target));
        let (store, target) = reopen(dir.path(), true, REGISTRY);
        assert_eq!(store.parking().parked_count(), 1);
        target
            .apply(&[created(1, "o1", "c1")], None, |_| true)
            .unwrap();
        let checkpoint = target.checkpoint().unwrap();
        let late = created(2, "o2", "c2");
        target
            .apply_parked(&late, checkpoint, store.parking(), |_| false)
            .unwrap();
        assert_eq!(store.parking().parked_count(), 0);
        assert_eq!(target.checkpoint().unwrap().position, 1);
        assert!(order_view::get(views(&target), "o2").unwrap().is_some());
        // An event that does not fit is refused and stays parked.
        store.parking().update(&parked(3)).unwrap();
        let misfit = created(3, "o2", "c2");
        assert!(matches!(
            target.apply_parked(&misfit, checkpoint, store.parking(), |_| false),
            Err(ApplyError::Projection { .. })
        ));
        assert_eq!(store.parking().parked_count(), 1);
    }

    #[test]
    fn a_rebuild_started_at_runtime_is_recorded_and_not_started_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (store, target) = Store::open(dir.path(), 8 << 20, false).unwrap();
        target
            .apply(&[created(1, "o1", "c1")], None, |_| true)
            .unwrap();
        let rebuilt = store.start_rebuild().unwrap().expect("a new generation");
        assert_eq!((store.active().number(), rebuilt.number()), (1, 2));
        assert!(store.is_rebuilding());
        assert!(store.start_rebuild().unwrap().is_none());
        assert_eq!(rebuilt.checkpoint().unwrap().position, 0);
        drop((store, target, rebuilt));
        // A crash before the switch resumes the same rebuild.
        let (store, target) = reopen(dir.path(), false, REGISTRY);
        assert_eq!((store.active().number(), target.number()), (1, 2));
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), 8 << 20, false).unwrap();
        let Err(err) = Store::open(dir.path(), 8 << 20, false) else {
            panic!("a second open of a locked directory succeeded");
        };
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        assert!(err.to_string().contains("locked by another process"));
    }
}
