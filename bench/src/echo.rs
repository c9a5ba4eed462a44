//! Baseline 1: a bare tonic unary echo service (its own process) and the client
//! workload for it, with the concurrency, connections and message sizes of the
//! command workload.
//!
//! With `--sync-dir` it is the durable echo (baseline 1b): each request's
//! payload is appended to a zero-filled file and the reply waits for an
//! fdatasync of it, with group commit, started after the append: one
//! acknowledged durable write per request and nothing else, the floor under
//! a durable command on this machine's disk.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::load::{Recorder, Workload};
use crate::proto::echo_service_client::EchoServiceClient;
use crate::proto::echo_service_server::{EchoService, EchoServiceServer};
use crate::proto::{EchoRequest, EchoResponse};

struct Echo {
    log: Option<SyncLog>,
}

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        if let Some(log) = &self.log {
            // Inline on the worker, as command-service commits a command
            // that comes alone.
            log.append(&request.get_ref().payload)
                .map_err(|e| Status::internal(format!("sync log: {e}")))?;
        }
        let size = request.get_ref().response_size as usize;
        Ok(Response::new(EchoResponse {
            payload: vec![b'x'; size],
        }))
    }
}

/// The durable echo's file: written in place over zeros (wrapping at its
/// end), so an fdatasync writes data only, as the command log's segments are.
const SYNC_FILE_BYTES: u64 = 64 * 1024 * 1024;

struct SyncLog {
    file: File,
    size: u64,
    /// Where the next append goes, and the bytes appended so far.
    tail: Mutex<(u64, u64)>,
    /// Appended bytes an fdatasync has covered; held across the sync, so a
    /// request that finds its bytes covered on taking it shares that sync.
    synced: Mutex<u64>,
}

impl SyncLog {
    fn create(dir: &Path, size: u64) -> std::io::Result<Self> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("echo.log"))?;
        let zeros = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < size {
            let len = (size - at).min(zeros.len() as u64);
            file.write_all_at(&zeros[..len as usize], at)?;
            at += len;
        }
        file.sync_all()?;
        Ok(SyncLog {
            file,
            size,
            tail: Mutex::new((0, 0)),
            synced: Mutex::new(0),
        })
    }

    fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let end = {
            let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
            let len = bytes.len() as u64;
            let at = if tail.0 + len > self.size { 0 } else { tail.0 };
            self.file.write_all_at(bytes, at)?;
            *tail = (at + len, tail.1 + len);
            tail.1
        };
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced < end {
            // Everything appended so far is written: this sync covers it.
            let written = self.tail.lock().unwrap_or_else(|e| e.into_inner()).1;
            self.file.sync_data()?;
            *synced = written;
        }
        Ok(())
    }
}

/// `loadgen echo-server`: serves the echo service until killed; with
/// `sync_dir`, the durable echo.
pub async fn serve(listen: SocketAddr, sync_dir: Option<&Path>) -> Result<(), String> {
    let log = match sync_dir {
        Some(dir) => Some(
            SyncLog::create(dir, SYNC_FILE_BYTES).map_err(|e| format!("{}: {e}", dir.display()))?,
        ),
        None => None,
    };
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(EchoServiceServer::new(Echo { log }))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await
        .map_err(|e| e.to_string())
}

/// Unary echoes, one request per step.
pub struct EchoLoad {
    pub channels: Vec<Channel>,
    pub request_size: usize,
    pub response_size: u32,
}

impl Workload for EchoLoad {
    type State = EchoServiceClient<Channel>;

    fn series(&self) -> Vec<&'static str> {
        vec!["echo"]
    }

    async fn start(&self, index: usize) -> Result<Self::State, Status> {
        Ok(EchoServiceClient::new(
            self.channels[index % self.channels.len()].clone(),
        ))
    }

    async fn step(&self, client: &mut Self::State, rec: &mut Recorder) -> Result<(), Status> {
        let request = EchoRequest {
            payload: vec![b'x'; self.request_size],
            response_size: self.response_size,
        };
        let sent = Instant::now();
        client.echo(request).await?;
        rec.request(sent.elapsed());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_durable_echo_writes_each_payload_after_the_last_and_wraps_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = SyncLog::create(dir.path(), 10).unwrap();
        log.append(b"abcd").unwrap();
        log.append(b"efgh").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("echo.log")).unwrap(),
            b"abcdefgh\0\0"
        );
        // Too long for the 2 bytes left: written from the start, over zeros
        // and old payloads, never past the file's size.
        log.append(b"ijk").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("echo.log")).unwrap(),
            b"ijkdefgh\0\0"
        );
        assert_eq!(
            *log.synced.lock().unwrap(),
            11,
            "every appended byte synced"
        );
    }
}
