//! The query side's own sled database. Every sled call of query-service is in
//! this file (and in `store/legacy.rs`, the reader of the previous layout).
//!
//! Read models live in *generations*, one tree `g{N}` each; the default tree
//! records which generation is served (`active`) and which one a rebuild is
//! filling (`rebuilding`), each with its layout version. In a generation's tree
//! the first key byte says which read model an entry belongs to:
//!
//! | read model | key | value |
//! |---|---|---|
//! | views | `v`, order id | `OrderRow` |
//! | recent | `r`, `!created_position` (u64 BE, so newest first) | `SummaryRow` |
//! | by status | `s`, status byte, `!created_position` | `SummaryRow` |
//! | by customer | `c`, customer id, `0x00`, `!created_position` | `SummaryRow` |
//! | analytics | `a` | `AnalyticsRow` |
//! | progress | `p` (the checkpoint) | `Checkpoint` |
//!
//! The list indexes hold the summary the lists answer with, so a page never
//! reads the (larger) views. A batch of events and the checkpoint after it are
//! one `Tree::apply_batch`, which sled applies atomically, across a crash too.
//!
//! Layout 1 kept six trees per generation (`g{N}/views`, ...) written by one
//! multi-tree transaction. A directory still holding that layout is answered
//! from it, read-only (`legacy.rs`), while a new generation is built from
//! position 0 exactly like a rebuild; the old trees are dropped once the new
//! generation is served.

mod legacy;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use shared::codec::{decode_snapshot, encode_snapshot, CodecError};
use shared::domain::{OrderStatus, RecordedEvent, Timestamp};
use sled::{Batch, IVec, Tree};

use crate::analytics::AnalyticsRow;
use crate::checkpoint::Checkpoint;
use crate::order_row::{OrderRow, SummaryRow};
use crate::projection::{self, ProjectionError};

/// The layout this build writes.
const LAYOUT: u8 = 2;
/// Default-tree key of the `Catalog`.
const CATALOG_KEY: &[u8] = b"catalog";

const VIEW: u8 = b'v';
const RECENT: u8 = b'r';
const BY_STATUS: u8 = b's';
const BY_CUSTOMER: u8 = b'c';
const ANALYTICS_KEY: &[u8] = b"a";
const CHECKPOINT_KEY: &[u8] = b"p";

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
    #[error("read models in layout {0} are only read by this build, never written")]
    OldLayout(u8),
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

/// A generation's number and the layout of its trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct GenerationId {
    number: u64,
    layout: u8,
}

/// Which generations exist: the one served and the one a rebuild is filling.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Catalog {
    active: GenerationId,
    rebuilding: Option<GenerationId>,
}

/// The database and the generation queries are answered from.
pub struct Store {
    db: sled::Db,
    active: RwLock<Arc<Generation>>,
}

/// One complete set of read models.
pub struct Generation {
    number: u64,
    trees: Trees,
}

enum Trees {
    Current(Tree),
    Legacy(legacy::Trees),
}

/// An order a batch touches while `Generation::apply` runs.
struct Touched {
    /// Its status before the batch; `None`: created in it.
    before: Option<OrderStatus>,
    /// The latest row (only taken out while an event is applied to it).
    row: Option<OrderRow>,
    /// Whether the row after each event is handed back.
    keep: bool,
}

/// One page of an order list.
#[derive(Debug, Default)]
pub struct Page {
    pub rows: Vec<SummaryRow>,
    /// The sort key of the last order examined, when more may follow.
    pub next_cursor: Option<u64>,
}

fn tree_name(generation: u64) -> String {
    format!("g{generation}")
}

/// The generation a tree belongs to, for names of either layout.
fn generation_of(name: &[u8]) -> Option<GenerationId> {
    let rest = std::str::from_utf8(name).ok()?.strip_prefix('g')?;
    let (number, layout) = match rest.split_once('/') {
        Some((number, _)) => (number, legacy::LAYOUT),
        None => (rest, LAYOUT),
    };
    Some(GenerationId {
        number: number.parse().ok()?,
        layout,
    })
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
    /// Opens (or creates) the database. With `rebuild`, starts a fresh generation
    /// that the applier fills from position 0 (a rebuild left unfinished by a
    /// crash is resumed either way); so does finding read models in an older
    /// layout. Returns the generation to apply events to.
    pub fn open(
        path: &Path,
        cache_bytes: u64,
        rebuild: bool,
    ) -> Result<(Store, Arc<Generation>), StoreError> {
        std::fs::create_dir_all(path).map_err(|e| StoreError::Open {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| open_error(path, e))?;
        let names = db.tree_names();
        let mut catalog = match db.get(CATALOG_KEY)? {
            Some(bytes) => decode_snapshot(&bytes)?,
            None => match legacy::active(&db)? {
                Some(number) => Catalog {
                    active: GenerationId {
                        number,
                        layout: legacy::LAYOUT,
                    },
                    rebuilding: None,
                },
                None => Catalog {
                    active: GenerationId {
                        number: 1,
                        layout: LAYOUT,
                    },
                    rebuilding: None,
                },
            },
        };
        // A rebuild some other build left unfinished, in another layout, starts over.
        if catalog.rebuilding.is_some_and(|r| r.layout != LAYOUT) {
            catalog.rebuilding = None;
        }
        let old_layout = catalog.active.layout != LAYOUT;
        if catalog.rebuilding.is_none() && (rebuild || old_layout) {
            let highest = names
                .iter()
                .filter_map(|name| generation_of(name))
                .map(|g| g.number)
                .chain([catalog.active.number])
                .max()
                .unwrap_or(0);
            catalog.rebuilding = Some(GenerationId {
                number: highest + 1,
                layout: LAYOUT,
            });
        }
        if old_layout {
            tracing::warn!(
                layout = catalog.active.layout,
                current_layout = LAYOUT,
                "the read models on disk are in an older layout: building them anew from position 0 in the current one; queries are answered from the old ones until then, and the old trees are dropped after the switch"
            );
        }
        let mut batch = Batch::default();
        batch.insert(CATALOG_KEY, encode_snapshot(&catalog));
        legacy::forget(&mut batch);
        db.apply_batch(batch)?;
        // Trees of any other generation are leftovers of a switch or a rebuild
        // interrupted by a crash.
        for name in names {
            if let Some(g) = generation_of(&name) {
                if g != catalog.active && Some(g) != catalog.rebuilding {
                    db.drop_tree(&name)?;
                }
            }
        }
        db.flush()?;
        let active = Arc::new(Generation::open(&db, catalog.active)?);
        let target = match catalog.rebuilding {
            Some(g) => Arc::new(Generation::open(&db, g)?),
            None => Arc::clone(&active),
        };
        let store = Store {
            db,
            active: RwLock::new(active),
        };
        Ok((store, target))
    }

    /// The generation queries are answered from.
    pub fn active(&self) -> Arc<Generation> {
        Arc::clone(&self.active.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Makes a rebuilt generation the served one (durably). Returns the old one,
    /// to be dropped with `drop_retired` once no query holds it any more.
    pub fn switch_to(&self, target: &Arc<Generation>) -> Result<Arc<Generation>, StoreError> {
        let catalog = Catalog {
            active: target.id(),
            rebuilding: None,
        };
        self.db.insert(CATALOG_KEY, encode_snapshot(&catalog))?;
        self.db.flush()?;
        let mut active = self.active.write().unwrap_or_else(PoisonError::into_inner);
        Ok(std::mem::replace(&mut *active, Arc::clone(target)))
    }

    /// Drops the trees of a generation no longer served, unless a query still
    /// reads it; then it is handed back to retry later. (Trees left behind by a
    /// crash are dropped by the next `open`.)
    pub fn drop_retired(
        &self,
        retired: Arc<Generation>,
    ) -> Result<Option<Arc<Generation>>, StoreError> {
        let generation = match Arc::try_unwrap(retired) {
            Ok(generation) => generation,
            Err(still_read) => return Ok(Some(still_read)),
        };
        match generation.trees {
            Trees::Current(_) => {
                self.db.drop_tree(tree_name(generation.number))?;
            }
            Trees::Legacy(_) => {
                for name in legacy::tree_names(generation.number) {
                    self.db.drop_tree(name)?;
                }
                tracing::info!(
                    generation = generation.number,
                    layout = legacy::LAYOUT,
                    "dropped the read models of the older layout"
                );
            }
        }
        Ok(None)
    }

    /// Writes everything to disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

fn inverted(position: u64) -> [u8; 8] {
    (u64::MAX - position).to_be_bytes()
}

fn status_byte(status: OrderStatus) -> u8 {
    match status {
        OrderStatus::Draft => 1,
        OrderStatus::Placed => 2,
        OrderStatus::Shipped => 3,
        OrderStatus::Cancelled => 4,
    }
}

/// The customer's part of a by-customer key, without the read-model byte.
fn customer_part(customer_id: &str) -> Vec<u8> {
    // Ids never contain 0x00, so "c" never prefixes the entries of "c1".
    let mut key = Vec::with_capacity(1 + customer_id.len() + 1 + 8);
    key.push(BY_CUSTOMER);
    key.extend_from_slice(customer_id.as_bytes());
    key.push(0);
    key
}

fn view_key(order_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + order_id.len());
    key.push(VIEW);
    key.extend_from_slice(order_id.as_bytes());
    key
}

fn recent_key(created_position: u64) -> Vec<u8> {
    let mut key = vec![RECENT];
    key.extend_from_slice(&inverted(created_position));
    key
}

fn status_key(status: OrderStatus, created_position: u64) -> Vec<u8> {
    let mut key = vec![BY_STATUS, status_byte(status)];
    key.extend_from_slice(&inverted(created_position));
    key
}

fn customer_key(customer_id: &str, created_position: u64) -> Vec<u8> {
    let mut key = customer_part(customer_id);
    key.extend_from_slice(&inverted(created_position));
    key
}

/// Walks `index` from the key after `cursor` (or from `prefix`), newest created
/// first, while keys start with `prefix`; `summary` turns an entry's value into
/// the order's summary. Entries whose order is (no longer) in `status` are
/// skipped but count as examined, which keeps page tokens stable.
fn page(
    index: &Tree,
    prefix: &[u8],
    cursor: Option<u64>,
    size: usize,
    status: Option<OrderStatus>,
    mut summary: impl FnMut(&[u8]) -> Result<Option<SummaryRow>, StoreError>,
) -> Result<Page, StoreError> {
    let start = match cursor {
        Some(cursor) => {
            let mut key = prefix.to_vec();
            key.extend_from_slice(&inverted(cursor));
            Bound::Excluded(key)
        }
        None => Bound::Included(prefix.to_vec()),
    };
    let mut page = Page {
        rows: Vec::with_capacity(size.min(64)),
        next_cursor: None,
    };
    let mut last = None;
    let entries = index.range::<Vec<u8>, _>((start, Bound::Unbounded));
    for (examined, entry) in entries.enumerate() {
        let (key, value) = entry?;
        if !key.starts_with(prefix) {
            break;
        }
        if examined == size {
            page.next_cursor = last;
            break;
        }
        let sort_key: [u8; 8] = key[prefix.len()..]
            .try_into()
            .map_err(|_| CodecError::Empty)?;
        last = Some(u64::MAX - u64::from_be_bytes(sort_key));
        if let Some(row) = summary(&value)? {
            if status.is_none_or(|s| row.status == s) {
                page.rows.push(row);
            }
        }
    }
    Ok(page)
}

impl Generation {
    fn open(db: &sled::Db, id: GenerationId) -> Result<Generation, StoreError> {
        let trees = if id.layout == LAYOUT {
            Trees::Current(db.open_tree(tree_name(id.number))?)
        } else if id.layout == legacy::LAYOUT {
            Trees::Legacy(legacy::Trees::open(db, id.number)?)
        } else {
            return Err(CodecError::UnknownFormat(id.layout).into());
        };
        Ok(Generation {
            number: id.number,
            trees,
        })
    }

    fn id(&self) -> GenerationId {
        GenerationId {
            number: self.number,
            layout: match self.trees {
                Trees::Current(_) => LAYOUT,
                Trees::Legacy(_) => legacy::LAYOUT,
            },
        }
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let bytes = match &self.trees {
            Trees::Current(tree) => tree.get(CHECKPOINT_KEY)?,
            Trees::Legacy(trees) => trees.checkpoint()?,
        };
        Ok(match bytes {
            Some(bytes) => decode_snapshot(&bytes)?,
            None => Checkpoint::default(),
        })
    }

    pub fn order(&self, order_id: &str) -> Result<Option<OrderRow>, StoreError> {
        let bytes = match &self.trees {
            Trees::Current(tree) => tree.get(view_key(order_id))?,
            Trees::Legacy(trees) => trees.view(order_id)?,
        };
        match bytes {
            Some(bytes) => Ok(Some(decode_snapshot(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn analytics(&self) -> Result<AnalyticsRow, StoreError> {
        let bytes = match &self.trees {
            Trees::Current(tree) => tree.get(ANALYTICS_KEY)?,
            Trees::Legacy(trees) => trees.analytics()?,
        };
        Ok(match bytes {
            Some(bytes) => decode_snapshot(&bytes)?,
            None => AnalyticsRow::default(),
        })
    }

    /// Newest created first, optionally only orders in `status`, starting after `cursor`.
    pub fn recent_page(
        &self,
        status: Option<OrderStatus>,
        cursor: Option<u64>,
        size: usize,
    ) -> Result<Page, StoreError> {
        let tree = match &self.trees {
            Trees::Current(tree) => tree,
            Trees::Legacy(trees) => return trees.recent_page(status, cursor, size),
        };
        let prefix = match status {
            Some(status) => vec![BY_STATUS, status_byte(status)],
            None => vec![RECENT],
        };
        page(tree, &prefix, cursor, size, status, |value| {
            Ok(Some(decode_snapshot(value)?))
        })
    }

    /// One customer's orders, newest created first, starting after `cursor`.
    pub fn customer_page(
        &self,
        customer_id: &str,
        cursor: Option<u64>,
        size: usize,
    ) -> Result<Page, StoreError> {
        let tree = match &self.trees {
            Trees::Current(tree) => tree,
            Trees::Legacy(trees) => return trees.customer_page(customer_id, cursor, size),
        };
        page(
            tree,
            &customer_part(customer_id),
            cursor,
            size,
            None,
            |value| Ok(Some(decode_snapshot(value)?)),
        )
    }

    /// Applies `events` (consecutive positions) and moves the checkpoint to the
    /// last one, in one atomic batch. Returns the row after each event of the
    /// orders `keep` selects (asked once per order).
    pub fn apply(
        &self,
        events: &[RecordedEvent],
        applied_at: Option<Timestamp>,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<OrderRow>, ApplyError> {
        let Trees::Current(tree) = &self.trees else {
            return Err(StoreError::OldLayout(legacy::LAYOUT).into());
        };
        let Some(last) = events.last() else {
            return Ok(Vec::new());
        };
        // The applier is the only writer of a generation, so nothing read here
        // changes before the batch is applied.
        let mut stats = self.analytics()?;
        let mut kept: Vec<OrderRow> = Vec::new();
        // Each order this batch touches. Rows and indexes are written once per
        // order, not once per event; the batch is atomic, so the result is the same.
        let mut touched: HashMap<&str, Touched> = HashMap::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let key = event.order_id.as_str();
            let (current, keeps) = match touched.get_mut(key) {
                Some(t) => (t.row.take(), t.keep),
                None => (self.order(key)?, keep(key)),
            };
            let applied = projection::apply(current, event, &mut stats)
                .map_err(|error| ApplyError::Projection { index, error })?;
            if keeps {
                kept.push(applied.row.clone());
            }
            match touched.get_mut(key) {
                Some(t) => t.row = Some(applied.row),
                None => {
                    touched.insert(
                        key,
                        Touched {
                            before: applied.previous_status,
                            row: Some(applied.row),
                            keep: keeps,
                        },
                    );
                }
            }
        }
        let mut batch = Batch::default();
        for (key, t) in &touched {
            let (before, Some(row)) = (t.before, &t.row) else {
                continue;
            };
            let created = row.created_position;
            if let Some(previous) = before.filter(|&previous| previous != row.status) {
                batch.remove(status_key(previous, created));
            }
            // The summary changes with every event (status, total or items),
            // so all three list entries are written.
            let summary = IVec::from(encode_snapshot(&SummaryRow::from(row)));
            batch.insert(recent_key(created), summary.clone());
            batch.insert(status_key(row.status, created), summary.clone());
            batch.insert(customer_key(&row.customer_id, created), summary);
            batch.insert(view_key(key), encode_snapshot(row));
        }
        batch.insert(ANALYTICS_KEY, encode_snapshot(&stats));
        let checkpoint = Checkpoint {
            position: last.position,
            applied_at,
        };
        batch.insert(CHECKPOINT_KEY, encode_snapshot(&checkpoint));
        tree.apply_batch(batch).map_err(StoreError::from)?;
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use shared::domain::{Currency, CustomerId, Event, Line, OrderId, Sku};

    use super::*;

    /// Opens the store on a directory whose previous handle was just dropped.
    /// sled's IO threads can hold the directory lock for a moment after the
    /// last handle goes, so `Locked` is retried for a while; any other
    /// outcome is returned as it is.
    fn reopen(path: &Path, rebuild: bool) -> (Store, Arc<Generation>) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(path, 8 << 20, rebuild) {
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                opened => return opened.unwrap(),
            }
        }
    }

    fn created(position: u64, order: &str, customer: &str) -> RecordedEvent {
        RecordedEvent {
            position,
            event_id: format!("e{position}"),
            order_id: OrderId::parse("order_id", order).unwrap(),
            version: 1,
            occurred_at: Timestamp(position as i64),
            command_id: None,
            event: Event::OrderCreated {
                customer_id: CustomerId::parse("customer_id", customer).unwrap(),
                currency: Currency::parse("currency", "").unwrap(),
                items: vec![Line {
                    sku: Sku::parse("sku", "a").unwrap(),
                    quantity: 1,
                    unit_price_cents: 5,
                }],
                total_cents: 5,
                item_count: 1,
            },
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
        assert!(active.order("o3").unwrap().is_none());
        assert_eq!(active.analytics().unwrap().draft, 2);
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
        let first = g.recent_page(None, None, 2).unwrap();
        let ids: Vec<_> = first.rows.iter().map(|r| r.order_id.as_str()).collect();
        assert_eq!(ids, ["o5", "o4"]);
        let second = g.recent_page(None, first.next_cursor, 10).unwrap();
        assert_eq!(second.rows.len(), 3);
        assert_eq!(second.next_cursor, None);
        let c = g.customer_page("c", None, 10).unwrap();
        let ids: Vec<_> = c.rows.iter().map(|r| r.order_id.as_str()).collect();
        assert_eq!(ids, ["o4", "o2"]);
        let drafts = g.recent_page(Some(OrderStatus::Draft), None, 10).unwrap();
        assert_eq!(drafts.rows.len(), 5);
        assert!(g
            .recent_page(Some(OrderStatus::Placed), None, 10)
            .unwrap()
            .rows
            .is_empty());
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
        }
        let (store, target) = reopen(dir.path(), true);
        assert_eq!(target.number(), 2);
        assert_eq!(target.checkpoint().unwrap().position, 0);
        assert!(store.active().order("o1").unwrap().is_some());
        target
            .apply(&[created(1, "o1", "c1")], None, |_| true)
            .unwrap();
        let old = store.switch_to(&target).unwrap();
        assert!(store.drop_retired(old).unwrap().is_none());
        drop((store, target));
        let (store, target) = reopen(dir.path(), false);
        assert_eq!((store.active().number(), target.number()), (2, 2));
        assert!(store.active().order("o1").unwrap().is_some());
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
        let mut placed = created(3, "o1", "c1");
        placed.version = 2;
        placed.event = Event::OrderPlaced {
            customer_id: CustomerId::parse("customer_id", "c1").unwrap(),
            currency: Currency::parse("currency", "").unwrap(),
            lines: Vec::new(),
            total_cents: 5,
            item_count: 1,
            placed_at: Timestamp(3),
        };
        g.apply(&[placed], None, |_| true).unwrap();
        let ids = |page: Page| -> Vec<(String, OrderStatus)> {
            page.rows
                .into_iter()
                .map(|r| (r.order_id, r.status))
                .collect()
        };
        let placed_page = g.recent_page(Some(OrderStatus::Placed), None, 10).unwrap();
        assert_eq!(ids(placed_page), [("o1".to_owned(), OrderStatus::Placed)]);
        let drafts = g.recent_page(Some(OrderStatus::Draft), None, 10).unwrap();
        assert_eq!(ids(drafts), [("o2".to_owned(), OrderStatus::Draft)]);
        // Every list answers with the summary as of the last event.
        let all = g.recent_page(None, None, 10).unwrap();
        assert_eq!(all.rows[1].status, OrderStatus::Placed);
        let customer = g.customer_page("c1", None, 10).unwrap();
        assert_eq!(customer.rows[1].status, OrderStatus::Placed);
    }

    /// Writes read models the way layout 1 did: six trees, indexes of ids.
    fn write_layout_1(path: &Path, events: &[RecordedEvent]) {
        let db = sled::open(path).unwrap();
        let tree = |name: &str| db.open_tree(format!("g3/{name}")).unwrap();
        let mut stats = AnalyticsRow::default();
        for event in events {
            let row = projection::apply(None, event, &mut stats).unwrap().row;
            let id = row.order_id.as_bytes();
            tree("views").insert(id, encode_snapshot(&row)).unwrap();
            tree("recent")
                .insert(inverted(row.created_position), id)
                .unwrap();
            let mut by_status = vec![status_byte(row.status)];
            by_status.extend_from_slice(&inverted(row.created_position));
            tree("by_status").insert(by_status, id).unwrap();
            let mut by_customer = customer_part(&row.customer_id)[1..].to_vec();
            by_customer.extend_from_slice(&inverted(row.created_position));
            tree("by_customer").insert(by_customer, id).unwrap();
        }
        tree("analytics")
            .insert(b"analytics", encode_snapshot(&stats))
            .unwrap();
        let checkpoint = Checkpoint {
            position: events.len() as u64,
            applied_at: None,
        };
        tree("progress")
            .insert(b"checkpoint", encode_snapshot(&checkpoint))
            .unwrap();
        let generations = (3u64, Option::<u64>::None);
        db.insert(b"generations", encode_snapshot(&generations))
            .unwrap();
        db.flush().unwrap();
    }

    #[test]
    fn an_older_layout_is_served_until_rebuilt_then_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let events: Vec<_> = (1..=3)
            .map(|p| created(p, &format!("o{p}"), "c1"))
            .collect();
        write_layout_1(dir.path(), &events);
        let (store, target) = reopen(dir.path(), false);
        let old = store.active();
        assert_eq!((old.number(), target.number()), (3, 4));
        assert_eq!(old.checkpoint().unwrap().position, 3);
        assert_eq!(target.checkpoint().unwrap().position, 0);
        let served = old.recent_page(None, None, 2).unwrap();
        assert_eq!(served.rows.len(), 2);
        assert_eq!(served.rows[0].order_id, "o3");
        let rest = old.customer_page("c1", served.next_cursor, 10).unwrap();
        assert_eq!(rest.rows[0].order_id, "o1");
        assert_eq!(old.analytics().unwrap().draft, 3);
        assert!(
            old.apply(&events, None, |_| true).is_err(),
            "layout 1 is never written"
        );
        drop(old);

        // A crash before the switch resumes the same rebuild.
        target.apply(&events[..1], None, |_| true).unwrap();
        drop((store, target));
        let (store, target) = reopen(dir.path(), false);
        assert_eq!((store.active().number(), target.number()), (3, 4));
        assert_eq!(target.checkpoint().unwrap().position, 1);

        target.apply(&events[1..], None, |_| true).unwrap();
        let retired = store.switch_to(&target).unwrap();
        assert!(store.drop_retired(retired).unwrap().is_none());
        let names: Vec<_> = store.db.tree_names().into_iter().collect();
        assert!(
            !names.iter().any(|n| n.starts_with(b"g3")),
            "layout 1 trees are dropped"
        );
        drop((store, target));
        let (store, target) = reopen(dir.path(), false);
        assert_eq!((store.active().number(), target.number()), (4, 4));
        let page = store.active().recent_page(None, None, 10).unwrap();
        assert_eq!(page.rows.len(), 3);
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
