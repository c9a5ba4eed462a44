//! How far a generation of read models has got: stored in the same atomic batch
//! as the changes it covers, so it can never disagree with them.

use serde::{Deserialize, Serialize};
use shared::domain::Timestamp;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last log position applied; 0 before the first event.
    pub position: u64,
    /// Wall-clock time of the batch that applied `position`.
    pub applied_at: Option<Timestamp>,
}
