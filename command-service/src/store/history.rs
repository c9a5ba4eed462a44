//! The history index (`ListOrderEvents`): each order's events by version.
//!
//! An entry is a run: key `e`, order id, `0x00`, the run's first version
//! (u64 BE); value the positions of that version and the ones after it, in
//! order (u64 BE each). A directory of format 3 holds runs of one event.
//!
//! A group's events do not go into sled with the group. The writer adds
//! them to `Recent` in memory, and the checkpointer (about once a second)
//! writes one run per order touched since the last checkpoint, before it
//! moves `HISTORY_INDEXED_KEY` to the position it covers. An order whose
//! commands come seconds apart costs one insert per event as before; one
//! whose events come together (an order created, filled and placed) costs
//! one insert for all of them instead of one each, and none of them on the
//! acknowledgement path. After a crash, the events past
//! `HISTORY_INDEXED_KEY` are indexed again from the log at open.
//!
//! Readers take what is in memory first, then read sled: a run the
//! checkpointer moves meanwhile was inserted into sled before it left
//! memory. Runs may overlap (a run indexed again after a crash, over one
//! that sled kept of an interrupted checkpoint); a version's position is the
//! same in all of them, and readers take each version once.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::StoreError;

/// Consecutive versions of one order, from `first`, and their positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Run {
    pub first: u64,
    pub positions: Vec<u64>,
}

impl Run {
    /// A stored run: its key ends with the first version, its value holds
    /// the positions.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Run, StoreError> {
        let bad = || StoreError::HistoryEntry(key.to_vec());
        let first = first_version(key)?;
        if value.is_empty() || !value.len().is_multiple_of(8) {
            return Err(bad());
        }
        let positions = value
            .chunks_exact(8)
            .map(|p| u64::from_be_bytes(p.try_into().expect("chunks of 8")))
            .collect();
        Ok(Run { first, positions })
    }

    pub fn encode(&self) -> Vec<u8> {
        self.positions
            .iter()
            .flat_map(|p| p.to_be_bytes())
            .collect()
    }

    /// (version, position) of each event of the run.
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (self.first..).zip(self.positions.iter().copied())
    }

    /// The position of `version`, when the run holds it.
    pub fn position_of(&self, version: u64) -> Option<u64> {
        let index = usize::try_from(version.checked_sub(self.first)?).ok()?;
        self.positions.get(index).copied()
    }

    /// The version after the run's last.
    fn end(&self) -> u64 {
        self.first + self.positions.len() as u64
    }

    /// The run cut after its last position at or before `position`; `None`
    /// when nothing is left (positions rise with versions).
    pub fn up_to(mut self, position: u64) -> Option<Run> {
        let keep = self.positions.partition_point(|&p| p <= position);
        self.positions.truncate(keep);
        (keep > 0).then_some(self)
    }
}

/// The first version of the run stored under `key`.
fn first_version(key: &[u8]) -> Result<u64, StoreError> {
    key.len()
        .checked_sub(8)
        .and_then(|at| <[u8; 8]>::try_from(&key[at..]).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::HistoryEntry(key.to_vec()))
}

/// Runs by order id.
pub(super) type Runs = HashMap<String, Vec<Run>>;

/// The history not yet in sled.
#[derive(Default)]
pub(super) struct Recent {
    /// Added since the last checkpoint started.
    pending: Runs,
    /// Being written to sled by a checkpoint.
    flushing: Arc<Runs>,
}

impl Recent {
    /// Adds an event; an order's events come in version order.
    pub fn push(&mut self, order_id: &str, version: u64, position: u64) {
        match self.pending.get_mut(order_id) {
            Some(runs) => match runs.last_mut() {
                Some(run) if run.end() == version => run.positions.push(position),
                _ => runs.push(Run {
                    first: version,
                    positions: vec![position],
                }),
            },
            None => {
                let run = Run {
                    first: version,
                    positions: vec![position],
                };
                self.pending.insert(order_id.to_owned(), vec![run]);
            }
        }
    }

    /// The runs of `order_id` in memory, older first.
    pub fn runs_of(&self, order_id: &str) -> Vec<Run> {
        let flushing = self.flushing.get(order_id).into_iter().flatten();
        let pending = self.pending.get(order_id).into_iter().flatten();
        flushing.chain(pending).cloned().collect()
    }

    /// The position of `order_id`'s `version`, when it is in memory.
    pub fn position_of(&self, order_id: &str, version: u64) -> Option<u64> {
        let flushing = self.flushing.get(order_id).into_iter().flatten();
        let pending = self.pending.get(order_id).into_iter().flatten();
        flushing
            .chain(pending)
            .find_map(|run| run.position_of(version))
    }

    /// Every run in memory, with its order id.
    pub fn all(&self) -> Vec<(String, Run)> {
        let flushing = self.flushing.iter();
        let pending = self.pending.iter();
        flushing
            .chain(pending)
            .flat_map(|(id, runs)| runs.iter().map(move |run| (id.clone(), run.clone())))
            .collect()
    }

    /// Starts a checkpoint's write: what was pending is now being flushed
    /// (added to what an unfinished earlier one left) and returned.
    pub fn start_flush(&mut self) -> Arc<Runs> {
        let pending = std::mem::take(&mut self.pending);
        if self.flushing.is_empty() {
            self.flushing = Arc::new(pending);
        } else {
            let flushing = Arc::make_mut(&mut self.flushing);
            for (id, runs) in pending {
                flushing.entry(id).or_default().extend(runs);
            }
        }
        Arc::clone(&self.flushing)
    }

    /// Ends a checkpoint's write: what it flushed is in sled.
    pub fn end_flush(&mut self) {
        self.flushing = Arc::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first: u64, positions: &[u64]) -> Run {
        Run {
            first,
            positions: positions.to_vec(),
        }
    }

    #[test]
    fn a_run_round_trips_and_malformed_ones_are_refused() {
        let stored = run(7, &[40, 41, 90]);
        let mut key = b"eorder\0".to_vec();
        key.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(Run::decode(&key, &stored.encode()).unwrap(), stored);
        // A format-3 entry is a run of one.
        assert_eq!(
            Run::decode(&key, &40u64.to_be_bytes()).unwrap(),
            run(7, &[40])
        );
        assert!(Run::decode(&key, &[0; 12]).is_err());
        assert!(Run::decode(&key, &[]).is_err());
        assert!(Run::decode(b"short", &[0; 8]).is_err());
    }

    #[test]
    fn a_run_is_cut_at_a_position() {
        assert_eq!(run(3, &[10, 20, 30]).up_to(25), Some(run(3, &[10, 20])));
        assert_eq!(run(3, &[10, 20, 30]).up_to(30), Some(run(3, &[10, 20, 30])));
        assert_eq!(run(3, &[10, 20, 30]).up_to(9), None);
    }

    #[test]
    fn events_gather_into_one_run_per_order_until_a_flush() {
        let mut recent = Recent::default();
        recent.push("a", 1, 10);
        recent.push("b", 1, 11);
        recent.push("a", 2, 12);
        recent.push("a", 3, 13);
        assert_eq!(recent.runs_of("a"), vec![run(1, &[10, 12, 13])]);
        assert_eq!(recent.position_of("a", 2), Some(12));
        assert_eq!(recent.position_of("a", 4), None);
        assert_eq!(recent.position_of("a", 0), None);
        let flushing = recent.start_flush();
        assert_eq!(flushing.len(), 2);
        recent.push("a", 4, 14);
        assert_eq!(recent.position_of("a", 1), Some(10));
        assert_eq!(recent.position_of("a", 4), Some(14));
        // Still readable while flushing, older run first.
        assert_eq!(
            recent.runs_of("a"),
            vec![run(1, &[10, 12, 13]), run(4, &[14])]
        );
        assert_eq!(recent.all().len(), 3);
        // A flush that did not end keeps its runs for the next one.
        let again = recent.start_flush();
        assert_eq!(again["a"], vec![run(1, &[10, 12, 13]), run(4, &[14])]);
        recent.end_flush();
        assert!(recent.runs_of("a").is_empty());
        assert!(recent.all().is_empty());
        // A version that does not follow starts a run of its own.
        recent.push("c", 5, 20);
        recent.push("c", 9, 21);
        assert_eq!(recent.runs_of("c"), vec![run(5, &[20]), run(9, &[21])]);
    }
}
