//! The new replica's side of `--bootstrap-from`: on an empty data directory,
//! copies a running replica's database files (`StreamSnapshot`, snapshot.rs)
//! before anything is served; the subscriber then follows the command log
//! from the copy's checkpoint.
//!
//! Nothing of a copy is served until all of it has arrived, matches its
//! trailer, and, opened, holds the read models the trailer counts at the
//! header's position and log identity: until then the directory holds the
//! marker `dbfiles::INCOMPLETE_MARKER`, written before the first file and
//! removed last, and a directory with the marker is never opened for serving.
//! A peer that goes away mid-copy, a truncated stream, a checksum that does
//! not match, read models of another build, or a peer following another
//! command log than `--command-endpoint` serves: the start fails with one
//! clear line and a non-zero exit, and the next start with `--bootstrap-from`
//! removes the partial copy and copies again. A directory that already holds
//! read models is not touched: the flag is ignored with a warning and the
//! replica catches up from its own checkpoint.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::proto as pb;
use shared::proto::command_service_client::CommandServiceClient;
use shared::proto::replication_service_client::ReplicationServiceClient;
use shared::proto::stream_snapshot_response::Kind;
use tonic::Streaming;

use crate::config::Settings;
use crate::dbfiles::Receiving;
use crate::error::RunError;
use crate::snapshot::{elapsed_ms, Digest, FORMAT_VERSION};
use crate::store::{model_differences, Generation, Store};
use crate::upstream::Upstream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the next message of the copy (or the command side's answer).
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The peer's chunks are bounded by its `--max-message-bytes`; this only
/// refuses nonsense.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Chunks received but not yet written.
const WRITE_BUFFER: usize = 8;

/// The replica to copy from: its endpoint, TLS towards it and the token it takes.
#[derive(Debug, Clone)]
pub struct Peer {
    pub endpoint: String,
    pub upstream: Upstream,
}

/// The store opened on a copy, and the generation to apply events to.
pub type Opened = (Store, Arc<Generation>);

/// Copies `peer`'s database into the empty data directory and returns it
/// opened, or does nothing (with a warning; `None`) when the directory
/// already holds read models.
pub async fn run(settings: &Settings, peer: &Peer) -> Result<Option<Opened>, RunError> {
    let started = Instant::now();
    let mut attempt = 1;
    let copied = loop {
        let Some(receiving) = Store::begin_bootstrap(&settings.data_dir, settings.cache_bytes)?
        else {
            tracing::warn!(
                peer = %peer.endpoint,
                "--bootstrap-from is ignored: the data directory already holds read models; \
                 catching up from their own checkpoint"
            );
            return Ok(None);
        };
        tracing::info!(peer = %peer.endpoint, attempt, "bootstrapping: copying the database of a running replica");
        match copy(settings, peer, receiving).await {
            Ok(copied) => break copied,
            Err(Failed::Inconsistent(reason)) if attempt < ATTEMPTS => {
                tracing::warn!(
                    peer = %peer.endpoint,
                    attempt,
                    "{reason}: the source's files changed while they were read; copying again"
                );
                attempt += 1;
            }
            Err(Failed::Inconsistent(reason) | Failed::Refused(reason)) => {
                return Err(RunError::Bootstrap {
                    peer: peer.endpoint.clone(),
                    reason,
                })
            }
        }
    };
    tracing::info!(
        peer = %peer.endpoint,
        position = copied.position,
        entries = copied.entries,
        file_bytes = copied.file_bytes,
        generation = copied.opened.1.number(),
        received_ms = copied.received_ms,
        elapsed_ms = elapsed_ms(started),
        "bootstrapped; following the command log from the copy's position"
    );
    Ok(Some(copied.opened))
}

/// Copies made in one start before giving up on copies that arrive whole
/// but do not hold what their source counted.
const ATTEMPTS: u32 = 3;

/// Why a copy did not complete.
enum Failed {
    /// The copy arrived but does not open to what the source counted: its
    /// files changed while they were read (sled cleaning segments in the
    /// background); another copy is likely to succeed.
    Inconsistent(String),
    /// Anything else: the peer went away, refused, or serves something else.
    Refused(String),
}

impl From<String> for Failed {
    fn from(reason: String) -> Failed {
        Failed::Refused(reason)
    }
}

struct Copied {
    position: u64,
    entries: u64,
    file_bytes: u64,
    /// From the request to the trailer (the rest is syncing, opening and checking).
    received_ms: u64,
    opened: Opened,
}

async fn copy(settings: &Settings, peer: &Peer, receiving: Receiving) -> Result<Copied, Failed> {
    let started = Instant::now();
    let channel = peer
        .upstream
        .endpoint(&peer.endpoint)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut client =
        ReplicationServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut stream = client
        .stream_snapshot(peer.upstream.request(pb::StreamSnapshotRequest {})?)
        .await
        .map_err(|s| format!("StreamSnapshot refused: {s}"))?
        .into_inner();
    let header = match next(&mut stream).await? {
        Some(Kind::Header(header)) => header,
        _ => return Err("the copy does not start with its header".to_owned().into()),
    };
    check_header(&header)?;
    let command_log = command_log_id(settings, header.position).await?;
    if command_log != header.log_id {
        return Err(format!(
            "the peer's read models were built from another command log (identity {}) than \
             the one {} serves ({command_log}): bootstrap from a replica of this command log",
            header.log_id, settings.command_endpoint
        )
        .into());
    }

    // Written on a blocking thread while the next chunks arrive.
    let (chunks, to_write) =
        std::sync::mpsc::sync_channel::<Vec<pb::SnapshotFilePart>>(WRITE_BUFFER);
    let writer = tokio::task::spawn_blocking(move || {
        let mut receiving = receiving;
        for parts in to_write {
            for part in parts {
                receiving.write(&part.path, part.offset, &part.data)?;
            }
        }
        Ok::<_, String>(receiving)
    });
    let mut received = 0u64;
    let trailer = loop {
        let message = match next(&mut stream).await {
            Ok(message) => message,
            Err(e) => {
                drop(chunks);
                let _ = writer.await;
                return Err(format!("{e} after {received} bytes").into());
            }
        };
        match message {
            Some(Kind::Chunk(chunk)) => {
                if !chunk.entries.is_empty() {
                    break None; // format 1 entries in a format 2 copy
                }
                received += chunk.files.iter().map(|p| p.data.len() as u64).sum::<u64>();
                if chunks.send(chunk.files).is_err() {
                    break None; // the writer failed: its error follows
                }
            }
            Some(Kind::Trailer(trailer)) => break Some(trailer),
            Some(Kind::Header(_)) => break None,
            None => {
                drop(chunks);
                let _ = writer.await;
                return Err(format!(
                    "the copy ended after {received} bytes without its trailer: the peer \
                     went away or cut it off mid-copy (truncated)"
                )
                .into());
            }
        }
    };
    drop(chunks);
    let receiving = writer
        .await
        .map_err(|e| format!("the writer task failed: {e}"))??;
    let received_ms = elapsed_ms(started);
    let Some(trailer) = trailer else {
        return Err(
            "a second header, or entries, in the middle of a copy of files"
                .to_owned()
                .into(),
        );
    };
    let files = receiving.digest();
    if (files.bytes(), files.checksum()) != (trailer.file_bytes, trailer.file_checksum) {
        return Err(Failed::Inconsistent(format!(
            "the files do not match the trailer (received {} bytes with CRC {:08x}, trailer {} bytes with CRC {:08x})",
            files.bytes(),
            files.checksum(),
            trailer.file_bytes,
            trailer.file_checksum
        )));
    }
    let file_bytes = trailer.file_bytes;
    let dir = settings.data_dir.clone();
    let cache_bytes = settings.cache_bytes;
    let opened = tokio::task::spawn_blocking(move || {
        open_and_check(receiving, &dir, cache_bytes, &header, &trailer)
    })
    .await
    .map_err(|e| format!("the opening task failed: {e}"))?
    .map_err(Failed::Inconsistent)?;
    Ok(Copied {
        position: opened.position,
        entries: opened.entries,
        file_bytes,
        received_ms,
        opened: opened.opened,
    })
}

pub(crate) struct Checked {
    pub position: u64,
    pub entries: u64,
    pub opened: Opened,
}

/// Syncs the received files, opens them, and checks that they hold what the
/// header and the trailer say: the command log, the position, the read
/// models, and every entry (count, size, CRC-32 in key order). Only then is
/// the marker removed. On any failure the marker stays: nothing is served.
pub(crate) fn open_and_check(
    receiving: Receiving,
    dir: &std::path::Path,
    cache_bytes: u64,
    header: &pb::SnapshotHeader,
    trailer: &pb::SnapshotTrailer,
) -> Result<Checked, String> {
    let started = Instant::now();
    let marker = receiving.finish()?;
    let synced_ms = elapsed_ms(started);
    let (store, target) =
        Store::open_copy(dir, cache_bytes).map_err(|e| format!("opening the copy: {e}"))?;
    let opened_ms = elapsed_ms(started);
    let active = store.active();
    let log_id = store
        .log_id()
        .map_err(|e| format!("reading the copy: {e}"))?;
    if log_id.as_deref() != Some(header.log_id.as_str()) {
        return Err(format!(
            "the copy follows command log {log_id:?}, not {} as its header says",
            header.log_id
        ));
    }
    let position = active
        .checkpoint()
        .map_err(|e| format!("reading the copy: {e}"))?
        .position;
    if position != header.position {
        return Err(format!(
            "the copy is at position {position}, not {} as its header says",
            header.position
        ));
    }
    if target.number() != active.number() {
        return Err(
            "the copy opens to a rebuild of its read models, not the served ones".to_owned(),
        );
    }
    // Nothing else runs yet: every core scans.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let digest = Digest::of(&active, threads, &AtomicBool::new(false))
        .map_err(|e| format!("reading the copy: {e}"))?;
    let counted = digest.trailer(&Default::default());
    if (counted.entry_count, counted.byte_count, counted.checksum)
        != (trailer.entry_count, trailer.byte_count, trailer.checksum)
    {
        return Err(format!(
            "the copy's read models do not match the trailer (counted {} entries, {} bytes, CRC {:08x}; trailer {} entries, {} bytes, CRC {:08x})",
            counted.entry_count,
            counted.byte_count,
            counted.checksum,
            trailer.entry_count,
            trailer.byte_count,
            trailer.checksum
        ));
    }
    drop(active);
    marker
        .remove()
        .map_err(|e| format!("recording the copy as complete: {e}"))?;
    tracing::debug!(
        synced_ms,
        opened_ms,
        checked_ms = elapsed_ms(started),
        "the copy is synced, opened and checked"
    );
    Ok(Checked {
        position,
        entries: digest.entries(),
        opened: (store, target),
    })
}

/// The next message of the copy: `None` when the stream ended.
async fn next(stream: &mut Streaming<pb::StreamSnapshotResponse>) -> Result<Option<Kind>, String> {
    match tokio::time::timeout(STALL_TIMEOUT, stream.message()).await {
        Err(_) => Err(format!(
            "the peer sent nothing for {} s",
            STALL_TIMEOUT.as_secs()
        )),
        Ok(Err(status)) => Err(format!("the copy broke: {status}")),
        Ok(Ok(None)) => Ok(None),
        Ok(Ok(Some(message))) => match message.kind {
            Some(kind) => Ok(Some(kind)),
            None => Err("a message of an unknown kind in the copy".to_owned()),
        },
    }
}

/// Refuses a copy this build cannot serve as it is.
fn check_header(header: &pb::SnapshotHeader) -> Result<(), String> {
    if header.format_version != FORMAT_VERSION {
        return Err(format!(
            "the copy is in format {} but this build reads format {FORMAT_VERSION}: \
             bootstrap from a replica of the same version",
            header.format_version
        ));
    }
    let models: Vec<(String, u32)> = header
        .models
        .iter()
        .map(|m| (m.name.clone(), m.version))
        .collect();
    let differences = model_differences(&models);
    if !differences.is_empty() {
        return Err(format!(
            "the peer's read models are not this build's ({}): bootstrap from a replica \
             of the same version",
            differences.join(", ")
        ));
    }
    if header.log_id.is_empty() {
        return Err("the copy names no command log".to_owned());
    }
    Ok(())
}

/// The identity of the command log `--command-endpoint` serves, from the
/// response header of a subscription after `position` (dropped at once).
async fn command_log_id(settings: &Settings, position: u64) -> Result<String, String> {
    let endpoint = &settings.command_endpoint;
    let channel = settings
        .upstream
        .endpoint(endpoint)?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await
        .map_err(|e| {
            format!("cannot reach the command side at {endpoint} to check its log identity: {e}")
        })?;
    let request = settings.upstream.request(pb::SubscribeEventsRequest {
        after_position: position,
        ..Default::default()
    })?;
    let response = tokio::time::timeout(
        STALL_TIMEOUT,
        CommandServiceClient::new(channel).subscribe_events(request),
    )
    .await
    .map_err(|_| format!("the command side at {endpoint} did not answer SubscribeEvents"))?
    .map_err(|s| format!("SubscribeEvents at {endpoint} refused: {s}"))?;
    response
        .metadata()
        .get(shared::LOG_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "the command side at {endpoint} does not say which log it serves (no {} header)",
                shared::LOG_ID_HEADER
            )
        })
}
