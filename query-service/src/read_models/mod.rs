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
//! Applying a batch of events (`store::Generation::apply`): the projection
//! runs over the order rows the events touch (read from `order_view`, the
//! state every update starts from), then each registered model turns the
//! changes into writes (`Descriptor::update`), and the generation commits
//! those writes and the checkpoint as one atomic batch. The catalog
//! (`store.rs`) records which models, at which versions, a generation holds;
//! a generation that lacks one is rebuilt from position 0.
//!
//! Nothing here imports `store`: the catalog depends on this registry, never
//! the reverse.

pub mod analytics;
pub mod checkpoint;
pub mod order_lists;
pub mod order_view;

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
