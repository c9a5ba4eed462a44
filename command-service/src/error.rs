//! The one error taxonomy of command-service and its one mapping to `tonic::Status`.

use shared::codec::CodecError;
use shared::domain::{CommandId, DomainError, OrderId, Rule, ValidationError};
use tonic::{Code, Status};

/// Why a command failed. Variants say how the caller should react.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request is malformed: the caller's mistake.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("order {0} not found")]
    NotFound(OrderId),
    #[error("order {0} already exists")]
    AlreadyExists(OrderId),
    /// Optimistic concurrency: the caller should reload and retry.
    #[error(
        "expected_version {expected} does not match the current version {actual} of the order"
    )]
    VersionConflict { expected: u64, actual: u64 },
    /// A business rule forbids the command in the order's current state.
    #[error("{0}")]
    Rule(Rule),
    #[error("command_id: {0} was already used for a different request")]
    CommandIdReused(CommandId),
    /// The service is stopping; nothing was written.
    #[error("command-service is shutting down")]
    ShuttingDown,
    /// Storage failed; the command may be retried with the same command_id.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// A failure of the storage underneath: sled or the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt stored value: {0}")]
    Codec(#[from] CodecError),
    #[error("corrupt event log key {0:02x?}")]
    LogKey(Vec<u8>),
    #[error("corrupt history entry {0:02x?}")]
    HistoryEntry(Vec<u8>),
    #[error("the event at position {0} is missing from the log")]
    MissingEvent(u64),
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    #[error("the write-ahead log continues at position {first} but the store ends at {head}: records are missing")]
    WalGap { head: u64, first: u64 },
    #[error("the store has a format version but no log identity")]
    NoLogId,
    /// Storage failed earlier in this process; nothing is written any more.
    #[error("storage failed ({0}); this process accepts no more commands and is stopping")]
    Failed(String),
}

impl CommandError {
    pub fn from_domain(order_id: &OrderId, error: DomainError) -> Self {
        match error {
            DomainError::NotFound => CommandError::NotFound(order_id.clone()),
            DomainError::AlreadyExists => CommandError::AlreadyExists(order_id.clone()),
            DomainError::VersionConflict { expected, actual } => {
                CommandError::VersionConflict { expected, actual }
            }
            DomainError::Rule(rule) => CommandError::Rule(rule),
        }
    }
}

impl From<CommandError> for Status {
    fn from(error: CommandError) -> Self {
        let code = match &error {
            CommandError::Invalid(_) | CommandError::CommandIdReused(_) => Code::InvalidArgument,
            CommandError::NotFound(_) => Code::NotFound,
            CommandError::AlreadyExists(_) => Code::AlreadyExists,
            CommandError::VersionConflict { .. } => Code::Aborted,
            CommandError::Rule(_) => Code::FailedPrecondition,
            CommandError::ShuttingDown => Code::Unavailable,
            CommandError::Storage(e) => {
                tracing::error!(error = %e, "storage failure");
                return Status::unavailable(
                    "storage failure; nothing was acknowledged, retry with the same command_id",
                );
            }
        };
        Status::new(code, error.to_string())
    }
}
