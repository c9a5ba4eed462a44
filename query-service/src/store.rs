//! The query side's own sled database. Every sled call of query-service is in
//! this file.
//!
//! Read models live in *generations* of trees named `g{N}/{tree}`; the default
//! tree records which generation is served (`active`) and which one a rebuild is
//! filling (`rebuilding`). Per generation:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `views` | order id | `OrderRow` |
//! | `recent` | `!created_position` (u64 BE, so newest first) | order id |
//! | `by_status` | status byte, `!created_position` | order id |
//! | `by_customer` | customer id, `0x00`, `!created_position` | order id |
//! | `analytics` | `analytics` | `AnalyticsRow` |
//! | `progress` | `checkpoint` | `Checkpoint` |
//!
//! A batch of events and the checkpoint after it are one multi-tree transaction.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use shared::codec::{decode_snapshot, encode_snapshot, CodecError};
use shared::domain::{OrderStatus, RecordedEvent, Timestamp};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::Tree;

use crate::analytics::AnalyticsRow;
use crate::checkpoint::Checkpoint;
use crate::order_row::OrderRow;
use crate::projection::{self, ProjectionError};

const GENERATIONS_KEY: &[u8] = b"generations";
const CHECKPOINT_KEY: &[u8] = b"checkpoint";
const ANALYTICS_KEY: &[u8] = b"analytics";
const TREES: [&str; 6] = [
    "views",
    "recent",
    "by_status",
    "by_customer",
    "analytics",
    "progress",
];

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

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Generations {
    active: u64,
    rebuilding: Option<u64>,
}

/// The database and the generation queries are answered from.
pub struct Store {
    db: sled::Db,
    active: RwLock<Arc<Generation>>,
}

/// One complete set of read-model trees.
pub struct Generation {
    number: u64,
    views: Tree,
    recent: Tree,
    by_status: Tree,
    by_customer: Tree,
    analytics: Tree,
    progress: Tree,
}

/// One page of an order list.
#[derive(Debug, Default)]
pub struct Page {
    pub rows: Vec<OrderRow>,
    /// The sort key of the last order examined, when more may follow.
    pub next_cursor: Option<u64>,
}

fn tree_name(generation: u64, tree: &str) -> String {
    format!("g{generation}/{tree}")
}

/// The generation a tree belongs to, for names written by `tree_name`.
fn generation_of(name: &[u8]) -> Option<u64> {
    let name = std::str::from_utf8(name).ok()?;
    name.strip_prefix('g')?.split_once('/')?.0.parse().ok()
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
    /// crash is resumed either way). Returns the generation to apply events to.
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
        let mut generations = match db.get(GENERATIONS_KEY)? {
            Some(bytes) => decode_snapshot(&bytes)?,
            None => Generations {
                active: 1,
                rebuilding: None,
            },
        };
        if rebuild && generations.rebuilding.is_none() {
            generations.rebuilding = Some(generations.active + 1);
        }
        db.insert(GENERATIONS_KEY, encode_snapshot(&generations))?;
        // Trees of any other generation are leftovers of a switch or a rebuild
        // interrupted by a crash.
        for name in db.tree_names() {
            if let Some(n) = generation_of(&name) {
                if n != generations.active && Some(n) != generations.rebuilding {
                    db.drop_tree(&name)?;
                }
            }
        }
        db.flush()?;
        let active = Arc::new(Generation::open(&db, generations.active)?);
        let target = match generations.rebuilding {
            Some(n) => Arc::new(Generation::open(&db, n)?),
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
        let generations = Generations {
            active: target.number,
            rebuilding: None,
        };
        self.db
            .insert(GENERATIONS_KEY, encode_snapshot(&generations))?;
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
        let number = match Arc::try_unwrap(retired) {
            Ok(generation) => generation.number,
            Err(still_read) => return Ok(Some(still_read)),
        };
        for tree in TREES {
            self.db.drop_tree(tree_name(number, tree))?;
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

fn status_key(status: OrderStatus, created_position: u64) -> Vec<u8> {
    let mut key = vec![status_byte(status)];
    key.extend_from_slice(&inverted(created_position));
    key
}

fn customer_prefix(customer_id: &str) -> Vec<u8> {
    // Ids never contain 0x00, so "c" never prefixes the entries of "c1".
    let mut key = customer_id.as_bytes().to_vec();
    key.push(0);
    key
}

fn customer_key(customer_id: &str, created_position: u64) -> Vec<u8> {
    let mut key = customer_prefix(customer_id);
    key.extend_from_slice(&inverted(created_position));
    key
}

impl Generation {
    fn open(db: &sled::Db, number: u64) -> Result<Generation, StoreError> {
        let tree = |name: &str| db.open_tree(tree_name(number, name));
        Ok(Generation {
            number,
            views: tree("views")?,
            recent: tree("recent")?,
            by_status: tree("by_status")?,
            by_customer: tree("by_customer")?,
            analytics: tree("analytics")?,
            progress: tree("progress")?,
        })
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        Ok(match self.progress.get(CHECKPOINT_KEY)? {
            Some(bytes) => decode_snapshot(&bytes)?,
            None => Checkpoint::default(),
        })
    }

    pub fn order(&self, order_id: &str) -> Result<Option<OrderRow>, StoreError> {
        match self.views.get(order_id.as_bytes())? {
            Some(bytes) => Ok(Some(decode_snapshot(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn analytics(&self) -> Result<AnalyticsRow, StoreError> {
        Ok(match self.analytics.get(ANALYTICS_KEY)? {
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
        match status {
            Some(status) => self.page(
                &self.by_status,
                &[status_byte(status)],
                cursor,
                size,
                Some(status),
            ),
            None => self.page(&self.recent, &[], cursor, size, None),
        }
    }

    /// One customer's orders, newest created first, starting after `cursor`.
    pub fn customer_page(
        &self,
        customer_id: &str,
        cursor: Option<u64>,
        size: usize,
    ) -> Result<Page, StoreError> {
        self.page(
            &self.by_customer,
            &customer_prefix(customer_id),
            cursor,
            size,
            None,
        )
    }

    fn page(
        &self,
        index: &Tree,
        prefix: &[u8],
        cursor: Option<u64>,
        size: usize,
        status: Option<OrderStatus>,
    ) -> Result<Page, StoreError> {
        let start = match cursor {
            Some(cursor) => {
                let mut key = prefix.to_vec();
                key.extend_from_slice(&inverted(cursor));
                Bound::Excluded(key)
            }
            None => Bound::Included(prefix.to_vec()),
        };
        let mut page = Page::default();
        let mut last = None;
        let entries = index.range::<Vec<u8>, _>((start, Bound::Unbounded));
        for (examined, entry) in entries.enumerate() {
            let (key, order_id) = entry?;
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
            let order_id = String::from_utf8_lossy(&order_id);
            // Index and view are written together; the view is read after the
            // index, so a status that changed in between is filtered here.
            if let Some(row) = self.order(&order_id)? {
                if status.is_none_or(|s| row.status == s) {
                    page.rows.push(row);
                }
            }
        }
        Ok(page)
    }

    /// Applies `events` (consecutive positions) and moves the checkpoint to the
    /// last one, in one transaction. Returns the row after each event.
    pub fn apply(
        &self,
        events: &[RecordedEvent],
        applied_at: Option<Timestamp>,
    ) -> Result<Vec<OrderRow>, ApplyError> {
        let Some(last) = events.last() else {
            return Ok(Vec::new());
        };
        let trees = (
            &self.views,
            &self.recent,
            &self.by_status,
            &self.by_customer,
            &self.analytics,
            &self.progress,
        );
        let result = trees.transaction(
            |(views, recent, by_status, by_customer, analytics, progress)| {
                let corrupt = |e: CodecError| {
                    ConflictableTransactionError::Abort(ApplyError::Store(e.into()))
                };
                let mut stats: AnalyticsRow = match analytics.get(ANALYTICS_KEY)? {
                    Some(bytes) => decode_snapshot(&bytes).map_err(corrupt)?,
                    None => AnalyticsRow::default(),
                };
                let mut rows: Vec<OrderRow> = Vec::with_capacity(events.len());
                // Each order this batch touches: its status before the batch
                // (`None`: created in it) and the index in `rows` of its latest
                // row. Rows and indexes are written once per order, not once per
                // event; the transaction makes the result the same.
                let mut touched: HashMap<&str, (Option<OrderStatus>, usize)> = HashMap::new();
                for (index, event) in events.iter().enumerate() {
                    let key = event.order_id.as_str();
                    let current: Option<OrderRow> = match touched.get(key) {
                        Some(&(_, latest)) => Some(rows[latest].clone()),
                        None => match views.get(key.as_bytes())? {
                            Some(bytes) => Some(decode_snapshot(&bytes).map_err(corrupt)?),
                            None => None,
                        },
                    };
                    let applied =
                        projection::apply(current, event, &mut stats).map_err(|error| {
                            ConflictableTransactionError::Abort(ApplyError::Projection {
                                index,
                                error,
                            })
                        })?;
                    touched
                        .entry(key)
                        .and_modify(|(_, latest)| *latest = rows.len())
                        .or_insert((applied.previous_status, rows.len()));
                    rows.push(applied.row);
                }
                for (key, &(before, latest)) in &touched {
                    let row = &rows[latest];
                    let key = key.as_bytes();
                    match before {
                        None => {
                            recent.insert(&inverted(row.created_position), key)?;
                            by_customer.insert(
                                customer_key(&row.customer_id, row.created_position),
                                key,
                            )?;
                            by_status.insert(status_key(row.status, row.created_position), key)?;
                        }
                        Some(previous) if previous != row.status => {
                            by_status.remove(status_key(previous, row.created_position))?;
                            by_status.insert(status_key(row.status, row.created_position), key)?;
                        }
                        Some(_) => {}
                    }
                    views.insert(key, encode_snapshot(row))?;
                }
                analytics.insert(ANALYTICS_KEY, encode_snapshot(&stats))?;
                let checkpoint = Checkpoint {
                    position: last.position,
                    applied_at,
                };
                progress.insert(CHECKPOINT_KEY, encode_snapshot(&checkpoint))?;
                Ok(rows)
            },
        );
        result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => ApplyError::Store(e.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use shared::domain::{Currency, CustomerId, Event, Line, OrderId, Sku};

    use super::*;

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
        active
            .apply(
                &[created(1, "o1", "c1"), created(2, "o2", "c2")],
                Some(Timestamp(9)),
            )
            .unwrap();
        assert_eq!(target.checkpoint().unwrap().position, 2);
        // The second event repeats o1: the whole batch is refused, checkpoint unchanged.
        let err = active
            .apply(
                &[created(3, "o3", "c1"), created(4, "o1", "c1")],
                Some(Timestamp(9)),
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
        g.apply(&events, None).unwrap();
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
            target.apply(&[created(1, "o1", "c1")], None).unwrap();
            assert_eq!(store.active().number(), 1);
        }
        let (store, target) = Store::open(dir.path(), 8 << 20, true).unwrap();
        assert_eq!(target.number(), 2);
        assert_eq!(target.checkpoint().unwrap().position, 0);
        assert!(store.active().order("o1").unwrap().is_some());
        target.apply(&[created(1, "o1", "c1")], None).unwrap();
        let old = store.switch_to(&target).unwrap();
        assert!(store.drop_retired(old).unwrap().is_none());
        drop((store, target));
        let (store, target) = Store::open(dir.path(), 8 << 20, false).unwrap();
        assert_eq!((store.active().number(), target.number()), (2, 2));
        assert!(store.active().order("o1").unwrap().is_some());
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
