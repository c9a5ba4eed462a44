//! The one error taxonomy of query-service and its one mapping to `tonic::Status`.
//!
//! Besides the message, a status carries `google.rpc` details for clients to
//! branch on without parsing text: `BadRequest` (the field and what is wrong
//! with it) on INVALID_ARGUMENT, `ErrorInfo` (reason `WATCH_LAGGED`) on
//! ABORTED.

use shared::domain::ValidationError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::storage::StoreError;

/// `ErrorInfo.domain` of every error this service reports.
pub const ERROR_DOMAIN: &str = "orders.v1";
/// `ErrorInfo.reason` of a `WatchOrder` that fell too far behind.
pub const WATCH_LAGGED: &str = "WATCH_LAGGED";

/// Why a query failed. Variants say how the caller should react.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request is malformed: the caller's mistake.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("order {0} not found")]
    NotFound(String),
    /// `min_position` was not applied in time; retrying later may succeed.
    #[error(
        "min_position {min_position} not reached before the deadline: the projection has applied up to position {applied_position} (command side head {head_position}, {})",
        if *connected { "connected" } else { "not connected" }
    )]
    NotCaughtUp {
        min_position: u64,
        applied_position: u64,
        head_position: u64,
        connected: bool,
    },
    /// Applying stopped at a poison event before `min_position`.
    #[error(
        "min_position {min_position} cannot be reached: the projection has applied up to position {applied_position} and is stopped at position {position}: {error}"
    )]
    Stopped {
        min_position: u64,
        applied_position: u64,
        position: u64,
        error: String,
    },
    /// A `WatchOrder` client read too slowly to keep every change; it may watch again.
    #[error("the watch fell too far behind the order's changes; call WatchOrder again")]
    WatchLagged,
    #[error("query-service is shutting down")]
    ShuttingDown,
    /// `StreamSnapshot` cannot copy the read models as they are now (a model
    /// is being rebuilt, or no command log has been followed yet).
    #[error("no snapshot: {0}")]
    NoSnapshot(String),
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl From<QueryError> for Status {
    fn from(error: QueryError) -> Self {
        let message = error.to_string();
        let (code, details) = match &error {
            QueryError::Invalid(invalid) => (
                Code::InvalidArgument,
                Some(ErrorDetails::with_bad_request_violation(
                    &invalid.field,
                    &invalid.message,
                )),
            ),
            QueryError::WatchLagged => (
                Code::Aborted,
                Some(ErrorDetails::with_error_info(
                    WATCH_LAGGED,
                    ERROR_DOMAIN,
                    std::collections::HashMap::new(),
                )),
            ),
            QueryError::NotFound(_) => (Code::NotFound, None),
            QueryError::NoSnapshot(_) => (Code::FailedPrecondition, None),
            QueryError::NotCaughtUp { .. } => (Code::DeadlineExceeded, None),
            QueryError::Stopped { .. } | QueryError::ShuttingDown => (Code::Unavailable, None),
            // Not a failure: the served generation lacks this model until a
            // rebuild switches in (store.rs).
            QueryError::Storage(StoreError::Rebuilding(model)) => {
                return Status::unavailable(format!(
                    "the {model} read model is being rebuilt from the event log; retry later"
                ));
            }
            QueryError::Storage(e) => {
                tracing::error!(error = %e, "storage failure");
                return Status::unavailable("storage failure in query-service; retry later");
            }
        };
        match details {
            Some(details) => Status::with_error_details(code, message, details),
            None => Status::new(code, message),
        }
    }
}

/// Why the service could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the bound address: {0}")]
    Address(std::io::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Server(#[from] shared::server::ServeError),
    /// Bad operating configuration (tokens, TLS files, metrics address).
    #[error("{0}")]
    Config(String),
    /// `--bootstrap-from` did not complete: nothing of the copy is served,
    /// the next start tries again.
    #[error("bootstrap from {peer} failed: {reason}; nothing of the copy is served, the next start with --bootstrap-from copies again")]
    Bootstrap { peer: String, reason: String },
    /// Writing or flushing the read models failed (crash-only: restart it).
    #[error("stopped after a storage failure: {0}")]
    StorageFailure(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_request_names_its_field_in_a_bad_request_detail() {
        let status = Status::from(QueryError::Invalid(ValidationError::new(
            "page_token",
            "not a token",
        )));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "page_token: not a token");
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("BadRequest").field_violations;
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "page_token");
    }

    #[test]
    fn a_lagged_watch_says_so_in_an_error_info() {
        let status = Status::from(QueryError::WatchLagged);
        assert_eq!(status.code(), Code::Aborted);
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().expect("ErrorInfo").reason,
            WATCH_LAGGED
        );
        assert!(Status::from(QueryError::NotFound("o".into()))
            .details()
            .is_empty());
    }
}
