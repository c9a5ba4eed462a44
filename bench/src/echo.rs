//! Baseline 1: a bare tonic unary echo service (its own process) and the client
//! workload for it, with the concurrency, connections and message sizes of the
//! command workload.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::load::{Recorder, Workload};
use crate::proto::echo_service_client::EchoServiceClient;
use crate::proto::echo_service_server::{EchoService, EchoServiceServer};
use crate::proto::{EchoRequest, EchoResponse};

struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let size = request.get_ref().response_size as usize;
        Ok(Response::new(EchoResponse {
            payload: vec![b'x'; size],
        }))
    }
}

/// `loadgen echo-server`: serves the echo service until killed.
pub async fn serve(listen: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(EchoServiceServer::new(Echo))
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
