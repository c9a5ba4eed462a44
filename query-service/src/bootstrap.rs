//! The new replica's side of `--bootstrap-from`: on an empty data directory,
//! copies a running replica's read models (`StreamSnapshot`, snapshot.rs) into
//! a fresh generation before anything is served; the subscriber then follows
//! the command log from the copy's checkpoint.
//!
//! Nothing of a copy is served until all of it has arrived and matches its
//! trailer: the catalog naming the generation, and the command log's identity,
//! are written only then (`Incoming::finish`). A peer that goes away mid-copy,
//! a truncated stream, a checksum that does not match, read models of another
//! build, or a peer following another command log than `--command-endpoint`
//! serves: the start fails with one clear line and a non-zero exit, the
//! directory still has no catalog, and the next start drops the partial tree
//! and copies again. A directory that already holds read models is not
//! touched: the flag is ignored with a warning and the replica catches up from
//! its own checkpoint.

use std::time::{Duration, Instant};

use shared::proto as pb;
use shared::proto::command_service_client::CommandServiceClient;
use shared::proto::replication_service_client::ReplicationServiceClient;
use shared::proto::stream_snapshot_response::Kind;
use tonic::Streaming;

use crate::config::Settings;
use crate::error::RunError;
use crate::snapshot::{Digest, FORMAT_VERSION};
use crate::store::{model_differences, Incoming, Store};
use crate::upstream::Upstream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the next message of the copy (or the command side's answer).
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The peer's chunks are bounded by its `--max-message-bytes`; this only
/// refuses nonsense.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Chunks received but not yet written.
const WRITE_BUFFER: usize = 4;

/// The replica to copy from: its endpoint, TLS towards it and the token it takes.
#[derive(Debug, Clone)]
pub struct Peer {
    pub endpoint: String,
    pub upstream: Upstream,
}

/// Copies `peer`'s read models into the empty data directory, or does nothing
/// (with a warning) when the directory already holds read models.
pub async fn run(settings: &Settings, peer: &Peer) -> Result<(), RunError> {
    let Some(incoming) = Store::begin_bootstrap(&settings.data_dir, settings.cache_bytes)? else {
        tracing::warn!(
            peer = %peer.endpoint,
            "--bootstrap-from is ignored: the data directory already holds read models; \
             catching up from their own checkpoint"
        );
        return Ok(());
    };
    tracing::info!(peer = %peer.endpoint, "bootstrapping: copying the read models of a running replica");
    let started = Instant::now();
    let copied = copy(settings, peer, incoming)
        .await
        .map_err(|reason| RunError::Bootstrap {
            peer: peer.endpoint.clone(),
            reason,
        })?;
    tracing::info!(
        peer = %peer.endpoint,
        position = copied.position,
        entries = copied.entries,
        generation = copied.generation,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "bootstrapped; following the command log from the copy's position"
    );
    Ok(())
}

struct Copied {
    position: u64,
    entries: u64,
    generation: u64,
}

async fn copy(settings: &Settings, peer: &Peer, incoming: Incoming) -> Result<Copied, String> {
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
        _ => return Err("the copy does not start with its header".to_owned()),
    };
    check_header(&header)?;
    let command_log = command_log_id(settings, header.position).await?;
    if command_log != header.log_id {
        return Err(format!(
            "the peer's read models were built from another command log (identity {}) than \
             the one {} serves ({command_log}): bootstrap from a replica of this command log",
            header.log_id, settings.command_endpoint
        ));
    }

    // Written on a blocking thread while the next chunks arrive.
    let (chunks, to_write) = std::sync::mpsc::sync_channel::<Vec<pb::SnapshotEntry>>(WRITE_BUFFER);
    let writer = tokio::task::spawn_blocking(move || {
        let mut digest = Digest::default();
        for chunk in to_write {
            let entries = chunk
                .into_iter()
                .map(|e| {
                    digest.add(&e.key, &e.value);
                    (e.key, e.value)
                })
                .collect();
            incoming
                .write(entries)
                .map_err(|e| format!("writing the copy: {e}"))?;
        }
        Ok::<_, String>((incoming, digest))
    });
    let mut received = 0u64;
    let trailer = loop {
        let message = match next(&mut stream).await {
            Ok(message) => message,
            Err(e) => {
                drop(chunks);
                let _ = writer.await;
                return Err(format!("{e} after {received} entries"));
            }
        };
        match message {
            Some(Kind::Chunk(chunk)) => {
                received += chunk.entries.len() as u64;
                if chunks.send(chunk.entries).is_err() {
                    break None; // the writer failed: its error follows
                }
            }
            Some(Kind::Trailer(trailer)) => break Some(trailer),
            Some(Kind::Header(_)) => break None,
            None => {
                drop(chunks);
                let _ = writer.await;
                return Err(format!(
                    "the copy ended after {received} entries without its trailer: the peer \
                     went away or cut it off mid-copy (truncated)"
                ));
            }
        }
    };
    drop(chunks);
    let (incoming, digest) = writer
        .await
        .map_err(|e| format!("the writer task failed: {e}"))??;
    let Some(trailer) = trailer else {
        return Err("a second header in the middle of the copy".to_owned());
    };
    if digest.trailer() != trailer {
        return Err(format!(
            "the copy does not match its trailer (received {:?}, trailer {trailer:?})",
            digest.trailer()
        ));
    }
    let log_id = header.log_id.clone();
    let generation = tokio::task::spawn_blocking(move || incoming.finish(&log_id))
        .await
        .map_err(|e| format!("the writer task failed: {e}"))?
        .map_err(|e| format!("recording the copy: {e}"))?;
    Ok(Copied {
        position: header.position,
        entries: digest.entries(),
        generation,
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
