//! Layout 1 of the read models, only read: six trees per generation
//! (`g{N}/views`, `recent`, `by_status`, `by_customer`, `analytics`,
//! `progress`), the list indexes holding order ids. A directory written by an
//! older build is answered from these while its read models are rebuilt in the
//! current layout; nothing here writes a read model.

use serde::{Deserialize, Serialize};
use shared::codec::decode_snapshot;
use shared::domain::OrderStatus;
use sled::{Batch, IVec, Tree};

use super::{customer_part, page, status_byte, Page, StoreError};
use crate::order_row::{OrderRow, SummaryRow};

pub(super) const LAYOUT: u8 = 1;
/// Default-tree key of layout 1's record of its generations.
const GENERATIONS_KEY: &[u8] = b"generations";
const TREES: [&str; 6] = [
    "views",
    "recent",
    "by_status",
    "by_customer",
    "analytics",
    "progress",
];

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Generations {
    active: u64,
    rebuilding: Option<u64>,
}

/// The generation layout 1 served, if the database was written in it.
pub(super) fn active(db: &sled::Db) -> Result<Option<u64>, StoreError> {
    match db.get(GENERATIONS_KEY)? {
        Some(bytes) => Ok(Some(decode_snapshot::<Generations>(&bytes)?.active)),
        None => Ok(None),
    }
}

/// Removes layout 1's record, in the batch that writes the catalog replacing it.
pub(super) fn forget(batch: &mut Batch) {
    batch.remove(GENERATIONS_KEY);
}

pub(super) fn tree_names(generation: u64) -> impl Iterator<Item = String> {
    TREES.into_iter().map(move |t| format!("g{generation}/{t}"))
}

pub(super) struct Trees {
    views: Tree,
    recent: Tree,
    by_status: Tree,
    by_customer: Tree,
    analytics: Tree,
    progress: Tree,
}

impl Trees {
    pub(super) fn open(db: &sled::Db, generation: u64) -> Result<Trees, StoreError> {
        let tree = |name: &str| db.open_tree(format!("g{generation}/{name}"));
        Ok(Trees {
            views: tree("views")?,
            recent: tree("recent")?,
            by_status: tree("by_status")?,
            by_customer: tree("by_customer")?,
            analytics: tree("analytics")?,
            progress: tree("progress")?,
        })
    }

    pub(super) fn checkpoint(&self) -> Result<Option<IVec>, StoreError> {
        Ok(self.progress.get(b"checkpoint")?)
    }

    pub(super) fn analytics(&self) -> Result<Option<IVec>, StoreError> {
        Ok(self.analytics.get(b"analytics")?)
    }

    pub(super) fn view(&self, order_id: &str) -> Result<Option<IVec>, StoreError> {
        Ok(self.views.get(order_id.as_bytes())?)
    }

    /// The summary of the order an index entry names, from its view.
    fn summary(&self, order_id: &[u8]) -> Result<Option<SummaryRow>, StoreError> {
        match self.views.get(order_id)? {
            Some(bytes) => Ok(Some(SummaryRow::from(&decode_snapshot::<OrderRow>(
                &bytes,
            )?))),
            None => Ok(None),
        }
    }

    pub(super) fn recent_page(
        &self,
        status: Option<OrderStatus>,
        cursor: Option<u64>,
        size: usize,
    ) -> Result<Page, StoreError> {
        // Index and view are read one after the other, so a status that changed
        // in between is filtered by `page`.
        let summary = |order_id: &[u8]| self.summary(order_id);
        match status {
            Some(s) => page(
                &self.by_status,
                &[status_byte(s)],
                cursor,
                size,
                status,
                summary,
            ),
            None => page(&self.recent, &[], cursor, size, None, summary),
        }
    }

    pub(super) fn customer_page(
        &self,
        customer_id: &str,
        cursor: Option<u64>,
        size: usize,
    ) -> Result<Page, StoreError> {
        // Layout 1 keys have no read-model byte in front.
        let prefix = &customer_part(customer_id)[1..];
        page(&self.by_customer, prefix, cursor, size, None, |order_id| {
            self.summary(order_id)
        })
    }
}
