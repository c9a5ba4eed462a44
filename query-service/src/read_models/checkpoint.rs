//! The checkpoint read model: how far a generation has got (key `p`), stored in the same atomic batch as the changes it covers, so it can never disagree with them.

use serde::{Deserialize, Serialize};
use shared::domain::Timestamp;

use super::{Batch, Descriptor};
use crate::storage::{Reader, StoreError, Writes};

const KEY: &[u8] = b"p";

pub static MODEL: Descriptor = Descriptor {
    name: "checkpoint",
    prefixes: b"p",
    version: 1,
    update,
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last log position applied; 0 before the first event.
    pub position: u64,
    /// Wall-clock time of the batch that applied `position`.
    pub applied_at: Option<Timestamp>,
}

/// The generation's progress; position 0 before its first batch.
pub fn get(reader: &Reader) -> Result<Checkpoint, StoreError> {
    Ok(reader.get_every_batch(KEY)?.unwrap_or_default())
}

/// Every batch moves it: written as the batch's every-batch write, which a
/// small batch keeps in its pending value only (`Reader::commit`).
fn update(batch: &Batch<'_>, _: &Reader, writes: &mut Writes) -> Result<(), StoreError> {
    writes.put_every_batch(KEY.to_vec(), &batch.checkpoint);
    Ok(())
}
