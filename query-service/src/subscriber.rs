//! The link to the command side: subscribes to `SubscribeEvents` after the last
//! position received, reads each event and passes it on to the applier, tracks
//! the head from heartbeats, and reconnects with jittered exponential backoff
//! when the command side is down, the stream breaks, or it falls silent.

use std::sync::Arc;
use std::time::Duration;

use crate::applier::{Received, Resubscribe};
use crate::status::ProjectionStatus;
use crate::store::Store;
use crate::upstream::Upstream;
use rand::Rng;
use shared::proto as pb;
use shared::proto::command_service_client::CommandServiceClient;
use shared::proto::subscribe_events_response::Kind;
use tokio::sync::{mpsc, watch};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Heartbeats come every ~2 s on an idle stream; this much silence means a dead link.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Events are small; a generous cap still refuses nonsense.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

pub struct Subscriber {
    pub endpoint: String,
    /// TLS and the subscribe token.
    pub upstream: Upstream,
    pub status: Arc<ProjectionStatus>,
    pub shutdown: watch::Receiver<bool>,
    /// Where the identity of the command log is recorded.
    pub store: Arc<Store>,
    /// `--rebuild`: the read models start over, so the log the first
    /// subscription offers becomes theirs, whatever was recorded before.
    pub accept_new_log: bool,
    /// A rebuild started at runtime: subscribe again from its position, into
    /// a new channel.
    pub resubscribe: mpsc::Receiver<Resubscribe>,
}

/// How one subscription ended.
enum Ended {
    Shutdown,
    /// The applier stopped: nothing more to deliver.
    ApplierGone,
    /// The applier started a rebuild: subscribe again from its position.
    Resubscribed(Resubscribe),
    /// The command side serves another history than the read models hold
    /// (another log, or one that ends before their checkpoint): applying
    /// stopped, and stays stopped until a restart with `--rebuild`.
    OtherHistory,
    Lost {
        established: bool,
        reason: String,
    },
}

/// Exponential backoff with "equal jitter": a delay in [d/2, d], d doubling up to a cap,
/// so replicas that lost the same command-service do not reconnect in lockstep.
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let ceiling = BACKOFF_BASE
            .saturating_mul(1 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }
}

impl Subscriber {
    /// Streams every event after `after` into `events` until shutdown or until the
    /// applier goes away.
    pub async fn run(mut self, mut after: u64, mut events: mpsc::Sender<Received>) {
        let mut backoff = Backoff { attempt: 0 };
        loop {
            match self.subscribe_once(&mut after, &events).await {
                Ended::Shutdown | Ended::ApplierGone => break,
                Ended::Resubscribed(again) => {
                    tracing::info!(after = again.after, "subscribing again for a rebuild");
                    after = again.after;
                    events = again.events;
                    backoff.attempt = 0;
                }
                Ended::OtherHistory => {
                    // Queries keep being answered from what is held; the
                    // applier waits (its channel stays open) until shutdown.
                    self.status.set_connected(false);
                    let _ = self.shutdown.wait_for(|stop| *stop).await;
                    break;
                }
                Ended::Lost {
                    established,
                    reason,
                } => {
                    self.status.set_connected(false);
                    if established {
                        backoff.attempt = 0;
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        after,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "event stream unavailable: {reason}"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        Some(again) = self.resubscribe.recv() => {
                            after = again.after;
                            events = again.events;
                        }
                        _ = self.shutdown.wait_for(|stop| *stop) => break,
                    }
                }
            }
        }
        self.status.set_connected(false);
        tracing::debug!("subscriber stopped");
    }

    /// Subscribes after `after`: the stream, and the log identity the
    /// command side announced in its response header.
    async fn connect(
        &self,
        after: u64,
    ) -> Result<
        (
            tonic::Streaming<pb::SubscribeEventsResponse>,
            Option<String>,
        ),
        String,
    > {
        let endpoint = self
            .upstream
            .endpoint(&self.endpoint)?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut client =
            CommandServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let response = client
            .subscribe_events(self.upstream.request(pb::SubscribeEventsRequest {
                after_position: after,
                ..Default::default()
            })?)
            .await
            .map_err(|s| format!("SubscribeEvents refused: {s}"))?;
        let log_id = response
            .metadata()
            .get(shared::LOG_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((response.into_inner(), log_id))
    }

    /// Checks that the command side serves the log the read models come
    /// from, recording it when they have none yet (or on `--rebuild`).
    async fn check_log(&mut self, offered: Option<&str>) -> Result<(), String> {
        let Some(offered) = offered else {
            return Err(format!(
                "the command side at {} does not say which log it serves (no {} header): \
                 refusing to apply events that may belong to another history",
                self.endpoint,
                shared::LOG_ID_HEADER
            ));
        };
        let known = self
            .store
            .log_id()
            .map_err(|e| format!("cannot read the recorded log identity: {e}"))?;
        match known {
            Some(known) if known == offered => Ok(()),
            Some(known) if !self.accept_new_log => Err(format!(
                "the command side at {} serves another event log (identity {offered}) than the \
                 one these read models were built from ({known}): its data was replaced. \
                 Nothing more is applied and queries answer from the old state; restart this \
                 replica with --rebuild to build the read models from the new log",
                self.endpoint
            )),
            _ => {
                self.store
                    .set_log_id(offered)
                    .await
                    .map_err(|e| format!("cannot record the log identity: {e}"))?;
                self.accept_new_log = false;
                tracing::info!(log_id = offered, "following the command log");
                Ok(())
            }
        }
    }

    /// Applying stops for good: another history. Reported like a poison event.
    fn stop_other_history(&self, after: u64, reason: String) -> Ended {
        tracing::error!(applied = after, "{reason}");
        metrics::gauge!("orders_projection_other_log").set(1.0);
        self.status.stop(after, reason);
        Ended::OtherHistory
    }

    async fn subscribe_once(&mut self, after: &mut u64, events: &mpsc::Sender<Received>) -> Ended {
        let mut shutdown = self.shutdown.clone();
        let (mut stream, log_id) = tokio::select! {
            result = self.connect(*after) => match result {
                Ok(connected) => connected,
                Err(reason) => return Ended::Lost { established: false, reason },
            },
            _ = shutdown.wait_for(|stop| *stop) => return Ended::Shutdown,
        };
        if let Err(reason) = self.check_log(log_id.as_deref()).await {
            return self.stop_other_history(*after, reason);
        }
        self.status.set_connected(true);
        tracing::info!(endpoint = %self.endpoint, after = *after, "subscribed to the event stream");
        loop {
            let message = tokio::select! {
                message = tokio::time::timeout(STALL_TIMEOUT, stream.message()) => message,
                Some(again) = self.resubscribe.recv() => return Ended::Resubscribed(again),
                _ = self.shutdown.wait_for(|stop| *stop) => return Ended::Shutdown,
            };
            let lost = |reason: String| Ended::Lost {
                established: true,
                reason,
            };
            let kind = match message {
                Ok(Ok(Some(message))) => message.kind,
                Ok(Ok(None)) => return lost("the command side ended the stream".to_owned()),
                Ok(Err(status)) => return lost(format!("stream error: {status}")),
                Err(_) => {
                    return lost(format!(
                        "no event or heartbeat for {}s",
                        STALL_TIMEOUT.as_secs()
                    ))
                }
            };
            match kind {
                Some(Kind::Event(event)) => {
                    let position = event.position;
                    self.status.saw_position(position);
                    tokio::select! {
                        // Read here, beside the applier rather than on its path.
                        sent = events.send(Received::from(event)) => {
                            if sent.is_err() {
                                // A rebuild replaces the channel after asking
                                // to subscribe again.
                                return match self.resubscribe.try_recv() {
                                    Ok(again) => Ended::Resubscribed(again),
                                    Err(_) => Ended::ApplierGone,
                                };
                            }
                        }
                        Some(again) = self.resubscribe.recv() => return Ended::Resubscribed(again),
                        _ = self.shutdown.wait_for(|stop| *stop) => return Ended::Shutdown,
                    }
                    *after = position;
                }
                Some(Kind::Heartbeat(heartbeat)) => {
                    let head = heartbeat.head_position;
                    if head < *after {
                        return self.stop_other_history(
                            *after,
                            format!(
                                "the command side's event log ends at position {head}, before \
                                 position {after} these read models have applied: its data was \
                                 reset or restored from an older copy. Nothing more is applied \
                                 and queries answer from the old state; restart this replica \
                                 with --rebuild to build the read models from the log as it is",
                                after = *after
                            ),
                        );
                    }
                    self.status.set_head(head);
                }
                None => tracing::debug!("ignoring a stream message of an unknown kind"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff { attempt: 0 };
        let first = backoff.next_delay();
        assert!(first >= BACKOFF_BASE / 2 && first <= BACKOFF_BASE);
        for _ in 0..40 {
            let delay = backoff.next_delay();
            assert!(delay <= BACKOFF_MAX);
        }
        assert!(backoff.next_delay() >= BACKOFF_MAX / 2);
    }
}
