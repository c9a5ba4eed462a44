//! The event stream: one client reads `SubscribeEvents` from position 0 until it
//! has every event of the stored log.
//!
//! The client decodes each message into a reduced view of the contract
//! (`Probe`: the envelope's `position`, heartbeats whole; prost skips the
//! other fields without allocating), so that on a machine where client and
//! server share two cores the figure is the server's, not the client's decoding.

use std::time::{Duration, Instant};

use shared::proto as pb;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::load::progress_line;
use crate::stats::{self, Latency, Report};

/// `SubscribeEventsResponse` with only what the probe reads.
#[derive(Clone, PartialEq, prost::Message)]
struct Probe {
    #[prost(oneof = "Kind", tags = "1, 2")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(message, tag = "1")]
    Event(EnvelopePosition),
    #[prost(message, tag = "2")]
    Heartbeat(pb::Heartbeat),
}

/// `EventEnvelope.position` (field 1); every other field is skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct EnvelopePosition {
    #[prost(uint64, tag = "1")]
    position: u64,
}

/// What the reader needs of one stream message.
enum Item {
    Event(u64),
    Heartbeat(u64),
    Empty,
}

/// A decoding of `SubscribeEventsResponse`: the reduced `Probe` or the real one.
trait StreamMessage: prost::Message + Default + Send + 'static {
    fn item(self) -> Item;
}

impl StreamMessage for Probe {
    fn item(self) -> Item {
        match self.kind {
            Some(Kind::Event(e)) => Item::Event(e.position),
            Some(Kind::Heartbeat(h)) => Item::Heartbeat(h.head_position),
            None => Item::Empty,
        }
    }
}

impl StreamMessage for pb::SubscribeEventsResponse {
    fn item(self) -> Item {
        use pb::subscribe_events_response::Kind as K;
        match self.kind {
            Some(K::Event(e)) => Item::Event(e.position),
            Some(K::Heartbeat(h)) => Item::Heartbeat(h.head_position),
            None => Item::Empty,
        }
    }
}

/// Reads the log from 0 to its head; events/s is the figure. The latency series
/// is the gap between consecutive messages (what a reader waits per event).
/// `full_decode`: decode every message completely, as a real subscriber does.
pub async fn run(channel: Channel, full_decode: bool) -> Result<Report, String> {
    if full_decode {
        read::<pb::SubscribeEventsResponse>(channel, "stream (full decode)").await
    } else {
        read::<Probe>(channel, "stream").await
    }
}

async fn read<M: StreamMessage>(channel: Channel, name: &str) -> Result<Report, String> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
    let started = Instant::now();
    grpc.ready()
        .await
        .map_err(|e| format!("SubscribeEvents: {e}"))?;
    let codec = tonic_prost::ProstCodec::<pb::SubscribeEventsRequest, M>::default();
    let mut stream = grpc
        .server_streaming(
            tonic::Request::new(pb::SubscribeEventsRequest {
                after_position: 0,
                ..Default::default()
            }),
            PathAndQuery::from_static("/orders.v1.CommandService/SubscribeEvents"),
            codec,
        )
        .await
        .map_err(|e| format!("SubscribeEvents: {e}"))?
        .into_inner();
    let mut gaps = stats::histogram();
    let mut received: u64 = 0;
    let mut last_position = 0;
    let mut last_message = Instant::now();
    let mut last_print = Instant::now();
    let mut printed = 0;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .map_err(|_| "the event stream stalled for 30 s".to_owned())?
            .map_err(|e| format!("event stream: {e}"))?
            .ok_or("the event stream ended")?;
        let now = Instant::now();
        match message.item() {
            Item::Event(position) => {
                if position != last_position + 1 {
                    return Err(format!("gap: position {position} after {last_position}"));
                }
                last_position = position;
                received += 1;
                gaps.saturating_record(stats::micros(now - last_message));
            }
            Item::Heartbeat(head) => {
                if last_position >= head {
                    break;
                }
            }
            Item::Empty => return Err("a message without a kind".to_owned()),
        }
        last_message = now;
        if last_print.elapsed() >= Duration::from_secs(1) {
            progress_line(name, started, received, received - printed, "events");
            printed = received;
            last_print = Instant::now();
        }
    }
    let mut report = Report::new(name, "events");
    report.finish(received, started.elapsed());
    report
        .latencies
        .insert("between events".to_owned(), Latency::from_histogram(&gaps));
    Ok(report)
}

/// The command side's log head: a subscription after the end of the log gets a
/// heartbeat carrying it at once.
pub async fn log_head(channel: Channel) -> Result<u64, String> {
    let mut client = shared::proto::command_service_client::CommandServiceClient::new(channel);
    let mut stream = client
        .subscribe_events(pb::SubscribeEventsRequest {
            after_position: u64::MAX - 1,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("SubscribeEvents: {e}"))?
        .into_inner();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .map_err(|_| "no heartbeat within 10 s".to_owned())?
            .map_err(|e| format!("SubscribeEvents: {e}"))?
            .ok_or("the event stream ended")?;
        if let Some(pb::subscribe_events_response::Kind::Heartbeat(h)) = message.kind {
            return Ok(h.head_position);
        }
    }
}
