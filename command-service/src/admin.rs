//! `orders.v1.CommandAdminService`: `Backup` streams the store's entries as
//! of the head published when the call came (`Store::backup`), read by a
//! blocking task into a bounded channel while commands go on being written.

use std::time::Instant;

use shared::proto as pb;
use shared::proto::command_admin_service_server::CommandAdminService;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::CommandError;
use crate::store::{Store, FORMAT};

/// Every RPC of the service starts with this (the admin token's auth rule).
pub const ADMIN_PATH: &str = "/orders.v1.CommandAdminService/";

/// A chunk is sent once its entries hold this many bytes.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks read ahead of a client that reads slower than the store is read.
const CHUNKS_AHEAD: usize = 4;

type Sent = Result<pb::BackupResponse, Status>;

pub struct CommandAdmin {
    pub store: Store,
    /// The last durable position (the writer publishes it after each commit).
    pub head: watch::Receiver<u64>,
    /// Set when the service begins stopping: ends a backup being streamed.
    pub shutdown: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl CommandAdminService for CommandAdmin {
    type BackupStream = ReceiverStream<Sent>;

    async fn backup(
        &self,
        _request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let position = *self.head.borrow();
        let (sender, receiver) = mpsc::channel(CHUNKS_AHEAD);
        let store = self.store.clone();
        let shutdown = self.shutdown.clone();
        tokio::task::spawn_blocking(move || stream_backup(&store, position, &sender, &shutdown));
        let mut response = Response::new(ReceiverStream::new(receiver));
        if let Ok(log_id) = tonic::metadata::MetadataValue::try_from(self.store.log_id()) {
            response
                .metadata_mut()
                .insert(shared::LOG_ID_HEADER, log_id);
        }
        Ok(response)
    }
}

fn message(kind: pb::backup_response::Kind) -> Sent {
    Ok(pb::BackupResponse { kind: Some(kind) })
}

/// Sends the header, the entries in chunks and the trailer; stops when the
/// client has gone, and ends the stream with an error when the service stops
/// or storage fails.
fn stream_backup(
    store: &Store,
    position: u64,
    sender: &mpsc::Sender<Sent>,
    shutdown: &watch::Receiver<bool>,
) {
    use pb::backup_response::Kind;
    let started = Instant::now();
    let header = pb::BackupHeader {
        log_id: store.log_id().to_owned(),
        position,
        store_format: FORMAT,
    };
    if sender.blocking_send(message(Kind::Header(header))).is_err() {
        return;
    }
    let mut chunk = Vec::new();
    let mut bytes = 0;
    let mut stopped = false;
    let send_chunk = |chunk: &mut Vec<pb::BackupEntry>| {
        let entries = std::mem::take(chunk);
        sender
            .blocking_send(message(Kind::Chunk(pb::BackupChunk { entries })))
            .is_ok()
    };
    let read = store.backup(position, &mut |key, value| {
        bytes += key.len() + value.len();
        chunk.push(pb::BackupEntry {
            key: key.to_vec(),
            value: value.to_vec(),
        });
        if bytes < CHUNK_BYTES {
            return true;
        }
        bytes = 0;
        if *shutdown.borrow() {
            stopped = true;
            return false;
        }
        send_chunk(&mut chunk)
    });
    let read = match read {
        Ok(Some(_)) if !chunk.is_empty() && !send_chunk(&mut chunk) => return,
        Ok(Some(read)) => read,
        Ok(None) if stopped => {
            let _ = sender.blocking_send(Err(CommandError::ShuttingDown.into()));
            return;
        }
        Ok(None) => return,
        Err(e) => {
            let _ = sender.blocking_send(Err(CommandError::Backup(e).into()));
            return;
        }
    };
    let counts = read.counts;
    tracing::info!(
        position,
        entries = counts.total(),
        rebuilt_orders = read.rebuilt_orders,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "backup streamed"
    );
    let trailer = pb::BackupTrailer {
        entries: counts.total(),
        orders: counts.orders,
        log_blocks: counts.log_blocks,
        commands: counts.commands,
        history: counts.history,
    };
    let _ = sender.blocking_send(message(Kind::Trailer(trailer)));
}
