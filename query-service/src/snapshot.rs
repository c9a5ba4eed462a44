//! The source side of `--bootstrap-from`: `orders.v1.ReplicationService.StreamSnapshot`
//! streams a copy of the served read models at one checkpoint.
//!
//! sled has no snapshots, so the copy is made consistent by holding the
//! applier off (`Store::hold_writes`) from the header to the trailer: the
//! served generation stays at the checkpoint the header names while its tree
//! is scanned in key order. Queries are not held (they read sled directly and
//! never take the gate); the replica only lags behind the command side for the
//! duration of the copy, which is bounded: a receiver that leaves a chunk
//! unread for `SEND_STALL`, or a copy longer than `MAX_COPY`, is cut off (its
//! stream ends without a trailer, which the receiver detects), and stopping the
//! service ends it too.
//!
//! The stream: a header (format, log identity, position, read models and their
//! versions), chunks of raw entries (key, value as the read models stored them)
//! each of at most `chunk_bytes` of keys and values, and a trailer (counts and
//! a CRC-32 over every entry, `Digest`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::proto as pb;
use shared::proto::replication_service_server::ReplicationService;
use shared::proto::stream_snapshot_response::Kind;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::QueryError;
use crate::store::{Generation, Store};

/// How the entries are laid out: raw keys and values of one generation's
/// tree (each value in `shared::codec`'s format of its read model's version).
pub const FORMAT_VERSION: u32 = 1;
/// Most bytes of keys and values in one chunk (less under a small
/// `--max-message-bytes`, see `chunk_bytes`).
const MAX_CHUNK_BYTES: usize = 1 << 20;
/// Longest a receiver may leave a chunk unread before the copy is cut off.
const SEND_STALL: Duration = Duration::from_secs(30);
/// Longest a copy may hold the applier off.
const MAX_COPY: Duration = Duration::from_secs(600);
/// Chunks encoded ahead of the receiver.
const STREAM_BUFFER: usize = 4;

/// The chunk size for a message limit: a quarter of it (room for the
/// per-entry framing), at most `MAX_CHUNK_BYTES`.
pub fn chunk_bytes(max_message_bytes: usize) -> usize {
    (max_message_bytes / 4).clamp(1, MAX_CHUNK_BYTES)
}

/// Count, size and CRC-32 of the entries of a copy, in order: what the
/// trailer carries, computed again by the receiver.
#[derive(Default, Clone)]
pub struct Digest {
    entries: u64,
    bytes: u64,
    crc: crc32fast::Hasher,
}

impl Digest {
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.entries += 1;
        self.bytes += (key.len() + value.len()) as u64;
        for part in [key, value] {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            self.crc.update(&len.to_le_bytes());
            self.crc.update(part);
        }
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn trailer(&self) -> pb::SnapshotTrailer {
        pb::SnapshotTrailer {
            entry_count: self.entries,
            byte_count: self.bytes,
            checksum: self.crc.clone().finalize(),
        }
    }
}

pub struct ReplicationApi {
    pub store: Arc<Store>,
    /// Bytes of keys and values per chunk (`chunk_bytes`).
    pub chunk_bytes: usize,
    /// Set when the service stops: ends a copy under way.
    pub shutdown: watch::Receiver<bool>,
}

type Sender = mpsc::Sender<Result<pb::StreamSnapshotResponse, Status>>;

#[tonic::async_trait]
impl ReplicationService for ReplicationApi {
    type StreamSnapshotStream = ReceiverStream<Result<pb::StreamSnapshotResponse, Status>>;

    async fn stream_snapshot(
        &self,
        _request: Request<pb::StreamSnapshotRequest>,
    ) -> Result<Response<Self::StreamSnapshotStream>, Status> {
        // Waits for the batch being applied; from here the served generation
        // does not change until the guard is dropped at the end of the copy.
        let gate = self.store.hold_writes().await;
        let generation = self.store.active();
        let Some(models) = generation.complete_models() else {
            return Err(QueryError::NoSnapshot(
                "a read model is being rebuilt from the event log; retry once the rebuild has switched in".to_owned(),
            )
            .into());
        };
        let Some(log_id) = self.store.log_id().map_err(QueryError::from)? else {
            return Err(QueryError::NoSnapshot(
                "this replica has not followed a command log yet".to_owned(),
            )
            .into());
        };
        let position = generation.checkpoint().map_err(QueryError::from)?.position;
        let header = pb::SnapshotHeader {
            format_version: FORMAT_VERSION,
            log_id,
            position,
            models: models
                .into_iter()
                .map(|(name, version)| pb::SnapshotModel { name, version })
                .collect(),
        };
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let copy = Copying {
            generation,
            chunk_bytes: self.chunk_bytes,
            tx,
            handle: Handle::current(),
            shutdown: self.shutdown.clone(),
            deadline: Instant::now() + MAX_COPY,
        };
        tracing::info!(position, "copying a snapshot of the read models");
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = copy.run(header);
            drop(gate);
            match result {
                Ok(digest) => tracing::info!(
                    position,
                    entries = digest.entries,
                    bytes = digest.bytes,
                    elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "snapshot copied"
                ),
                Err(reason) => tracing::warn!(position, "snapshot copy ended early: {reason}"),
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One copy under way, on a blocking thread (sled reads block).
struct Copying {
    generation: Arc<Generation>,
    chunk_bytes: usize,
    tx: Sender,
    handle: Handle,
    shutdown: watch::Receiver<bool>,
    deadline: Instant,
}

impl Copying {
    fn run(&self, header: pb::SnapshotHeader) -> Result<Digest, String> {
        self.send(Kind::Header(header))?;
        let mut digest = Digest::default();
        let mut entries = Vec::new();
        let mut size = 0;
        for entry in self.generation.entries() {
            let (key, value) = entry.map_err(|e| {
                let error = format!("reading the read models: {e}");
                // The receiver hears why instead of a bare truncation.
                let _ = self.tx.try_send(Err(Status::unavailable(format!(
                    "snapshot failed: {error}"
                ))));
                error
            })?;
            digest.add(&key, &value);
            size += key.len() + value.len();
            entries.push(pb::SnapshotEntry {
                key: key.to_vec(),
                value: value.to_vec(),
            });
            if size >= self.chunk_bytes {
                self.send(Kind::Chunk(pb::SnapshotChunk {
                    entries: std::mem::take(&mut entries),
                }))?;
                size = 0;
            }
        }
        if !entries.is_empty() {
            self.send(Kind::Chunk(pb::SnapshotChunk { entries }))?;
        }
        self.send(Kind::Trailer(digest.trailer()))?;
        Ok(digest)
    }

    /// Hands one message to the stream; gives up when the receiver has gone,
    /// stalls, the copy takes too long, or the service stops.
    fn send(&self, kind: Kind) -> Result<(), String> {
        let message = pb::StreamSnapshotResponse { kind: Some(kind) };
        let mut shutdown = self.shutdown.clone();
        let limit = SEND_STALL.min(self.deadline.saturating_duration_since(Instant::now()));
        self.handle.block_on(async {
            tokio::select! {
                sent = tokio::time::timeout(limit, self.tx.send(Ok(message))) => match sent {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err("the receiver went away".to_owned()),
                    Err(_) if Instant::now() >= self.deadline => Err(format!(
                        "the copy took longer than {} s", MAX_COPY.as_secs()
                    )),
                    Err(_) => Err(format!(
                        "the receiver left a chunk unread for {} s", SEND_STALL.as_secs()
                    )),
                },
                _ = shutdown.wait_for(|stop| *stop) => Err("the service is stopping".to_owned()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_tells_entries_apart_by_their_boundaries() {
        let mut one = Digest::default();
        one.add(b"ab", b"c");
        let mut other = Digest::default();
        other.add(b"a", b"bc");
        assert_eq!(one.trailer().byte_count, other.trailer().byte_count);
        assert_ne!(one.trailer().checksum, other.trailer().checksum);
        assert_eq!(one.trailer().entry_count, 1);
    }

    #[test]
    fn chunks_stay_well_under_the_message_limit() {
        assert_eq!(chunk_bytes(4 << 20), 1 << 20);
        assert_eq!(chunk_bytes(64 << 20), MAX_CHUNK_BYTES);
        assert_eq!(chunk_bytes(1 << 20), 256 << 10);
    }
}
