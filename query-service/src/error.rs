//! The one error taxonomy of query-service and its one mapping to `tonic::Status`.

use shared::domain::ValidationError;
use tonic::{Code, Status};

use crate::storage::StoreError;

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
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl From<QueryError> for Status {
    fn from(error: QueryError) -> Self {
        let code = match &error {
            QueryError::Invalid(_) => Code::InvalidArgument,
            QueryError::NotFound(_) => Code::NotFound,
            QueryError::NotCaughtUp { .. } => Code::DeadlineExceeded,
            QueryError::Stopped { .. } | QueryError::ShuttingDown => Code::Unavailable,
            QueryError::WatchLagged => Code::Aborted,
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
        Status::new(code, error.to_string())
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
}
