//! Parked events and the record of skips, in trees of their own beside the
//! generations (`parked`, `skips`, `stops`), so a rebuild keeps them.
//!
//! An event is parked when the operator skips the event applying is stopped at
//! (`ProjectionAdminService.SkipEvent`), or automatically after it has stopped
//! the projection `--park-after-stops` times. Parking it and moving the
//! checkpoint past it are one sled transaction (`store::Generation::skip`):
//! after a crash either both happened or neither. Nothing is skipped silently:
//! every skip is kept in `skips`, counted in `GetProjectionStatus` and in the
//! metrics, and logged.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use shared::codec::{decode_snapshot, encode_snapshot};
use shared::domain::Timestamp;

use crate::storage::StoreError;

const PARKED_TREE: &str = "parked";
const SKIPS_TREE: &str = "skips";
const STOPS_TREE: &str = "stops";

/// An event taken out of the projection, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedEvent {
    pub position: u64,
    /// The event as received: a prost-encoded `EventEnvelope`.
    pub envelope: Vec<u8>,
    /// Empty when the event could not be read.
    pub order_id: String,
    pub event_type: String,
    pub reason: String,
    /// Why it could not be applied; the latest error after a retry.
    pub error: String,
    pub parked_at: Timestamp,
    /// Parked by `--park-after-stops`, not by an operator.
    pub auto: bool,
    pub retries: u32,
    pub last_retry_at: Option<Timestamp>,
}

/// Who skipped an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipKind {
    /// `SkipEvent`.
    Operator,
    /// `--park-after-stops`.
    Auto,
    /// A rebuild replaying the log met an event that is parked.
    Rebuild,
}

/// One skip: the checkpoint moved past `position` without applying it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipRecord {
    pub position: u64,
    pub kind: SkipKind,
    pub reason: String,
    pub skipped_at: Timestamp,
}

/// The parking trees of one database.
pub struct Parking {
    pub(crate) parked: sled::Tree,
    pub(crate) skips: sled::Tree,
    stops: sled::Tree,
    db: sled::Db,
}

pub(crate) fn key(position: u64) -> [u8; 8] {
    position.to_be_bytes()
}

fn position_of(key: &[u8]) -> u64 {
    key.try_into().map_or(0, u64::from_be_bytes)
}

impl Parking {
    pub(crate) fn open(db: &sled::Db) -> Result<Parking, StoreError> {
        Ok(Parking {
            parked: db.open_tree(PARKED_TREE)?,
            skips: db.open_tree(SKIPS_TREE)?,
            stops: db.open_tree(STOPS_TREE)?,
            db: db.clone(),
        })
    }

    /// The positions parked now.
    pub fn parked_positions(&self) -> Result<BTreeSet<u64>, StoreError> {
        self.parked
            .iter()
            .keys()
            .map(|k| Ok(position_of(&k?)))
            .collect()
    }

    pub fn parked_count(&self) -> u64 {
        self.parked.len() as u64
    }

    pub fn skipped_count(&self) -> u64 {
        self.skips.len() as u64
    }

    pub fn get(&self, position: u64) -> Result<Option<ParkedEvent>, StoreError> {
        match self.parked.get(key(position))? {
            Some(bytes) => Ok(Some(decode_snapshot(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` parked events after `after`, oldest first, and whether
    /// more follow.
    pub fn list(&self, after: u64, limit: usize) -> Result<(Vec<ParkedEvent>, bool), StoreError> {
        let mut out = Vec::new();
        for entry in self.parked.range(key(after.saturating_add(1))..) {
            let (_, value) = entry?;
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(decode_snapshot(&value)?);
        }
        Ok((out, false))
    }

    /// Stores `event` again after a retry that failed (new error, one more retry).
    pub fn update(&self, event: &ParkedEvent) -> Result<(), StoreError> {
        self.parked
            .insert(key(event.position), encode_snapshot(event))?;
        Ok(())
    }

    /// Counts, durably, one more stop of the projection at `position`: how
    /// many times it has stopped there, across restarts.
    pub async fn count_stop(&self, position: u64) -> Result<u32, StoreError> {
        let count = match self.stops.get(key(position))? {
            Some(bytes) => decode_snapshot::<u32>(&bytes)?.saturating_add(1),
            None => 1,
        };
        self.stops.insert(key(position), encode_snapshot(&count))?;
        self.db.flush_async().await?;
        Ok(count)
    }

    /// Forgets the stops counted at `position` (it was skipped).
    pub fn clear_stops(&self, position: u64) -> Result<(), StoreError> {
        self.stops.remove(key(position))?;
        Ok(())
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}
