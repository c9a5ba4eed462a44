//! The read models and their registry: each module owns its key prefix, its update from (row before, row after) and its readers.
//!
//! A generation's tree holds every registered read model, each under its own
//! first key byte(s):
//!
//! | read model | module | prefixes |
//! |---|---|---|
//! | order views | `order_view` | `v` |
//! | order lists (recent, by status, by customer) | `order_lists` | `r`, `s`, `c` |
//! | analytics | `analytics` | `a` |
//! | checkpoint | `checkpoint` | `p` |
//!
//! Applying a batch of events: `project` runs the projection over the order
//! rows the events touch (read from `order_view`, the state every update starts
//! from), then each registered model turns the changes into writes
//! (`Descriptor::update`), and the generation commits those writes and the
//! checkpoint as one atomic batch. The catalog (`store.rs`) records which
//! models, at which versions, a generation holds; a generation that lacks one
//! is rebuilt from position 0.

pub mod analytics;
pub mod checkpoint;
pub mod order_lists;
pub mod order_view;

use std::collections::HashMap;

use shared::domain::RecordedEvent;

use crate::projection::{self, ProjectionError};
use crate::storage::{Reader, StoreError, Writes};
use checkpoint::Checkpoint;
use order_view::OrderRow;

/// Every read model this build keeps. Adding one is one line here.
pub static REGISTRY: &[&Descriptor] = &[
    &order_view::MODEL,
    &order_lists::MODEL,
    &analytics::MODEL,
    &checkpoint::MODEL,
];

/// What the catalog and the generations know of a read model.
#[derive(Debug)]
pub struct Descriptor {
    /// Unique; recorded in the catalog with `version`.
    pub name: &'static str,
    /// The first key bytes its entries use; no two models share one.
    pub prefixes: &'static [u8],
    /// Raised whenever what the model stores changes: a generation holding
    /// another version is rebuilt, never read with this build's code.
    pub version: u32,
    /// The writes that bring the model from before the batch to after it.
    pub update: fn(&Batch<'_>, &Reader, &mut Writes) -> Result<(), StoreError>,
}

/// One order a batch touched: its row before the batch and after it. Every
/// model's state is a function of the rows, so a batch is written as one change
/// per order, not one per event, and a rebuild in batches of any size ends in
/// the same state.
#[derive(Debug)]
pub struct Change {
    /// `None`: created in this batch.
    pub before: Option<OrderRow>,
    pub after: OrderRow,
}

/// A batch of events as the read models see it.
pub struct Batch<'a> {
    /// Each order the events touched, once.
    pub changes: &'a [Change],
    /// The progress after the batch.
    pub checkpoint: Checkpoint,
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
pub fn project(
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
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
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
    use super::*;

    #[test]
    fn models_have_unique_names_and_prefixes() {
        let mut names = std::collections::HashSet::new();
        let mut prefixes = std::collections::HashSet::new();
        for model in REGISTRY {
            assert!(names.insert(model.name), "{} twice", model.name);
            for prefix in model.prefixes {
                assert!(prefixes.insert(*prefix), "prefix {prefix} twice");
            }
        }
        assert!(names.contains(order_view::MODEL.name));
        assert!(names.contains(checkpoint::MODEL.name));
    }
}
