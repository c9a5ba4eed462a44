//! `orders.v1.ProjectionAdminService`: the gRPC layer of the projection's
//! operations, its error taxonomy and its one mapping to `tonic::Status`.
//!
//! Requests that change the projection (pause, resume, skip, retry, rebuild)
//! are handed to the applier (`Control`), the single writer of the read
//! models, which answers once done; `ListParkedEvents` reads the parking trees
//! directly.

use std::sync::Arc;

use shared::convert::timestamp_to_proto;
use shared::domain::{Text, ValidationError};
use shared::proto as pb;
use shared::proto::projection_admin_service_server::ProjectionAdminService;
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::parking::ParkedEvent;
use crate::storage::StoreError;
use crate::store::Store;

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// Why an admin request failed. Variants say how the caller should react.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request is malformed: the caller's mistake.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// `SkipEvent` of a position applying is not stopped at.
    #[error("position: applying is stopped at position {stopped}, not {position}; only the event it is stopped at can be skipped")]
    NotTheStoppedEvent { position: u64, stopped: u64 },
    #[error(
        "position: applying is not stopped at an event (position {position} cannot be skipped)"
    )]
    NotStopped { position: u64 },
    /// A stop with no event to park (the stream skipped a position).
    #[error("position: no event was received at position {position} (the event stream skipped it), so there is nothing to park")]
    NothingToPark { position: u64 },
    #[error("position: no event is parked at position {0}")]
    NotParked(u64),
    /// The projection's state forbids the request now.
    #[error("{0}")]
    Precondition(String),
    #[error("query-service is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl From<AdminError> for Status {
    fn from(error: AdminError) -> Self {
        let message = error.to_string();
        let code = match &error {
            AdminError::Invalid(invalid) => {
                return Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request_violation(&invalid.field, &invalid.message),
                );
            }
            AdminError::NotTheStoppedEvent { .. }
            | AdminError::NotStopped { .. }
            | AdminError::NothingToPark { .. }
            | AdminError::Precondition(_) => Code::FailedPrecondition,
            AdminError::NotParked(_) => Code::NotFound,
            AdminError::ShuttingDown => Code::Unavailable,
            AdminError::Storage(e) => {
                tracing::error!(error = %e, "storage failure");
                return Status::unavailable("storage failure in query-service; retry later");
            }
        };
        Status::new(code, message)
    }
}

/// What `RetryParkedEvents` did.
#[derive(Debug, Default)]
pub struct Retried {
    pub applied: Vec<u64>,
    pub still_parked: Vec<ParkedEvent>,
}

/// What `StartRebuild` started.
#[derive(Debug)]
pub struct RebuildStarted {
    pub generation: u64,
    pub served_position: u64,
}

type Reply<T> = oneshot::Sender<Result<T, AdminError>>;

/// A request to the applier, answered on its `Reply`.
#[derive(Debug)]
pub enum Control {
    /// Answers whether it was paused already, and the applied position.
    Pause(Reply<(bool, u64)>),
    /// Answers whether it was running already, and the applied position.
    Resume(Reply<(bool, u64)>),
    Skip {
        position: u64,
        reason: String,
        reply: Reply<ParkedEvent>,
    },
    /// Empty `positions`: every parked event.
    Retry {
        positions: Vec<u64>,
        reply: Reply<Retried>,
    },
    StartRebuild(Reply<RebuildStarted>),
}

pub struct AdminApi {
    pub control: mpsc::Sender<Control>,
    pub store: Arc<Store>,
}

pub fn parked_to_proto(event: ParkedEvent) -> pb::ParkedEvent {
    pb::ParkedEvent {
        position: event.position,
        order_id: event.order_id,
        event_type: event.event_type,
        reason: event.reason,
        error: event.error,
        parked_at: Some(timestamp_to_proto(event.parked_at)),
        auto_parked: event.auto,
        retries: event.retries,
        last_retry_at: event.last_retry_at.map(timestamp_to_proto),
        envelope: event.envelope,
    }
}

impl AdminApi {
    /// Hands `make(reply)` to the applier and waits for its answer.
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Control) -> Result<T, AdminError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(make(tx))
            .await
            .map_err(|_| AdminError::ShuttingDown)?;
        rx.await.map_err(|_| AdminError::ShuttingDown)?
    }
}

fn position(value: u64) -> Result<u64, AdminError> {
    if value == 0 {
        return Err(ValidationError::new("position", "must be at least 1").into());
    }
    Ok(value)
}

#[tonic::async_trait]
impl ProjectionAdminService for AdminApi {
    async fn pause_projection(
        &self,
        _request: Request<pb::PauseProjectionRequest>,
    ) -> Result<Response<pb::PauseProjectionResponse>, Status> {
        let (already_paused, applied_position) = self.ask(Control::Pause).await?;
        Ok(Response::new(pb::PauseProjectionResponse {
            applied_position,
            already_paused,
        }))
    }

    async fn resume_projection(
        &self,
        _request: Request<pb::ResumeProjectionRequest>,
    ) -> Result<Response<pb::ResumeProjectionResponse>, Status> {
        let (already_running, applied_position) = self.ask(Control::Resume).await?;
        Ok(Response::new(pb::ResumeProjectionResponse {
            applied_position,
            already_running,
        }))
    }

    async fn skip_event(
        &self,
        request: Request<pb::SkipEventRequest>,
    ) -> Result<Response<pb::SkipEventResponse>, Status> {
        let req = request.into_inner();
        let position = position(req.position)?;
        let reason = Text::parse("reason", &req.reason).map_err(AdminError::from)?;
        if reason.as_str().trim().is_empty() {
            return Err(AdminError::from(ValidationError::new(
                "reason",
                "is required: say why the event is skipped",
            ))
            .into());
        }
        let reason = reason.as_str().to_owned();
        let parked = self
            .ask(|reply| Control::Skip {
                position,
                reason,
                reply,
            })
            .await?;
        Ok(Response::new(pb::SkipEventResponse {
            parked: Some(parked_to_proto(parked)),
        }))
    }

    async fn list_parked_events(
        &self,
        request: Request<pb::ListParkedEventsRequest>,
    ) -> Result<Response<pb::ListParkedEventsResponse>, Status> {
        let req = request.into_inner();
        let limit = match usize::try_from(req.page_size).unwrap_or(MAX_PAGE_SIZE) {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let parking = self.store.parking();
        let (events, more) = parking
            .list(req.after_position, limit)
            .map_err(AdminError::from)?;
        let next_after_position = match events.last() {
            Some(last) if more => last.position,
            _ => 0,
        };
        Ok(Response::new(pb::ListParkedEventsResponse {
            events: events.into_iter().map(parked_to_proto).collect(),
            next_after_position,
            total: parking.parked_count(),
        }))
    }

    async fn retry_parked_events(
        &self,
        request: Request<pb::RetryParkedEventsRequest>,
    ) -> Result<Response<pb::RetryParkedEventsResponse>, Status> {
        let positions = request.into_inner().positions;
        for p in &positions {
            position(*p)?;
        }
        let retried = self
            .ask(|reply| Control::Retry { positions, reply })
            .await?;
        Ok(Response::new(pb::RetryParkedEventsResponse {
            applied_positions: retried.applied,
            still_parked: retried
                .still_parked
                .into_iter()
                .map(parked_to_proto)
                .collect(),
        }))
    }

    async fn start_rebuild(
        &self,
        _request: Request<pb::StartRebuildRequest>,
    ) -> Result<Response<pb::StartRebuildResponse>, Status> {
        let started = self.ask(Control::StartRebuild).await?;
        Ok(Response::new(pb::StartRebuildResponse {
            generation: started.generation,
            served_position: started.served_position,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_position_is_a_failed_precondition_naming_the_field() {
        let status = Status::from(AdminError::NotTheStoppedEvent {
            position: 5,
            stopped: 2,
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().starts_with("position:"));
        assert!(status.message().contains("stopped at position 2"));
        let status = Status::from(position(0).unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().expect("BadRequest").field_violations[0].field,
            "position"
        );
        assert_eq!(
            Status::from(AdminError::NotParked(3)).code(),
            Code::NotFound
        );
    }
}
