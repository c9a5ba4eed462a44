//! The one error taxonomy of command-service and its one mapping to `tonic::Status`.
//!
//! Besides the message, a status carries `google.rpc` details for clients to
//! branch on without parsing text: `BadRequest` (the field and what is wrong
//! with it) on INVALID_ARGUMENT, `ErrorInfo` (reason `VERSION_CONFLICT`, with
//! the order's `current_version`) on ABORTED.

use std::collections::HashMap;

use shared::codec::CodecError;
use shared::domain::{CommandId, DomainError, OrderId, Rule, ValidationError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error this service reports.
pub const ERROR_DOMAIN: &str = "orders.v1";
/// `ErrorInfo.reason` of an `expected_version` that is not the current one.
pub const VERSION_CONFLICT: &str = "VERSION_CONFLICT";

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
    VersionConflict {
        order_id: OrderId,
        expected: u64,
        actual: u64,
    },
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
    /// Reading the store for a backup failed; nothing was changed.
    #[error("backup: {0}")]
    Backup(StoreError),
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
    #[error("the stored event at position {0} cannot be read: {1}")]
    UnreadableEvent(u64, String),
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
            DomainError::VersionConflict { expected, actual } => CommandError::VersionConflict {
                order_id: order_id.clone(),
                expected,
                actual,
            },
            DomainError::Rule(rule) => CommandError::Rule(rule),
        }
    }
}

impl From<CommandError> for Status {
    fn from(error: CommandError) -> Self {
        let message = error.to_string();
        let (code, details) = match &error {
            CommandError::Invalid(invalid) => (
                Code::InvalidArgument,
                Some(ErrorDetails::with_bad_request_violation(
                    &invalid.field,
                    &invalid.message,
                )),
            ),
            CommandError::CommandIdReused(_) => (
                Code::InvalidArgument,
                Some(ErrorDetails::with_bad_request_violation(
                    "command_id",
                    "was already used for a different request",
                )),
            ),
            CommandError::VersionConflict {
                order_id,
                expected,
                actual,
            } => (
                Code::Aborted,
                Some(ErrorDetails::with_error_info(
                    VERSION_CONFLICT,
                    ERROR_DOMAIN,
                    HashMap::from([
                        ("order_id".to_owned(), order_id.to_string()),
                        ("expected_version".to_owned(), expected.to_string()),
                        ("current_version".to_owned(), actual.to_string()),
                    ]),
                )),
            ),
            CommandError::NotFound(_) => (Code::NotFound, None),
            CommandError::AlreadyExists(_) => (Code::AlreadyExists, None),
            CommandError::Rule(_) => (Code::FailedPrecondition, None),
            CommandError::ShuttingDown => (Code::Unavailable, None),
            CommandError::Backup(e) => {
                tracing::error!(error = %e, "backup failed");
                return Status::internal(
                    "the store could not be read for the backup; see the service's log",
                );
            }
            CommandError::Storage(e) => {
                tracing::error!(error = %e, "storage failure");
                return Status::unavailable(
                    "storage failure; nothing was acknowledged, retry with the same command_id",
                );
            }
        };
        match details {
            Some(details) => Status::with_error_details(code, message, details),
            None => Status::new(code, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_request_names_its_field_in_a_bad_request_detail() {
        let status = Status::from(CommandError::Invalid(ValidationError::new(
            "item.quantity",
            "must be at least 1",
        )));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "item.quantity: must be at least 1");
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("BadRequest").field_violations;
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "item.quantity");
        assert_eq!(violations[0].description, "must be at least 1");
    }

    #[test]
    fn a_version_conflict_carries_the_current_version_in_an_error_info() {
        let order_id = OrderId::parse("order_id", "o-1").unwrap();
        let error = CommandError::from_domain(
            &order_id,
            DomainError::VersionConflict {
                expected: 2,
                actual: 5,
            },
        );
        let status = Status::from(error);
        assert_eq!(status.code(), Code::Aborted);
        assert_eq!(
            status.message(),
            "expected_version 2 does not match the current version 5 of the order"
        );
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            (VERSION_CONFLICT, ERROR_DOMAIN)
        );
        assert_eq!(info.metadata["current_version"], "5");
        assert_eq!(info.metadata["expected_version"], "2");
        assert_eq!(info.metadata["order_id"], "o-1");
    }

    #[test]
    fn other_refusals_carry_no_details() {
        let order_id = OrderId::parse("order_id", "o-1").unwrap();
        let status = Status::from(CommandError::NotFound(order_id));
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.details().is_empty());
    }
}
