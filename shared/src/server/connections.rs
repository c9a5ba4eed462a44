//! The connection limit: a TCP connection accepted beyond `--max-connections`
//! gets, on plaintext, one short HTTP/2 exchange answering every request with
//! RESOURCE_EXHAUSTED and saying why, then is closed (with TLS it is closed at
//! once, so the client sees UNAVAILABLE). Either way it is logged, and it never
//! reaches the services, so one noisy client cannot exhaust the process.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// How long a refused connection is kept to deliver the refusal.
const REFUSAL_GRACE: Duration = Duration::from_secs(2);
/// Refusals delivered at once; beyond this, connections are just closed.
const MAX_REFUSING: usize = 64;

/// Accepted connections, at most `max` open at once; `tls` says whether the
/// server speaks TLS (then a refusal cannot be spoken in plaintext HTTP/2).
pub fn limited(
    listener: TcpListener,
    max: usize,
    tls: bool,
) -> impl Stream<Item = io::Result<LimitedConnection>> {
    let open = Arc::new(Semaphore::new(max));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .filter_map(move |accepted| {
            let open = Arc::clone(&open);
            let refusing = Arc::clone(&refusing);
            async move {
                let stream = match accepted {
                    Ok(stream) => stream,
                    Err(e) => return Some(Err(e)),
                };
                match open.try_acquire_owned() {
                    Ok(permit) => Some(Ok(LimitedConnection {
                        stream,
                        _permit: permit,
                    })),
                    Err(_) => {
                        tracing::warn!(
                            peer = ?stream.peer_addr().ok(),
                            max_connections = max,
                            "connection refused: the connection limit is reached (--max-connections)"
                        );
                        if let (false, Ok(slot)) = (tls, refusing.try_acquire_owned()) {
                            tokio::spawn(refuse(stream, max, slot));
                        }
                        None
                    }
                }
            }
        })
}

/// Answers every request on `stream` with RESOURCE_EXHAUSTED for a short while, then closes it.
async fn refuse(stream: TcpStream, max: usize, _slot: OwnedSemaphorePermit) {
    let message = format!("too many connections: this server accepts at most {max} at once");
    let service = hyper::service::service_fn(move |_request| {
        let status = tonic::Status::resource_exhausted(message.clone());
        async move { Ok::<_, Infallible>(status.into_http::<tonic::body::Body>()) }
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(8)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    if tokio::time::timeout(REFUSAL_GRACE, connection.as_mut())
        .await
        .is_err()
    {
        connection.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(REFUSAL_GRACE, connection).await;
    }
}

/// A TCP connection holding one slot of the limit until it is dropped.
#[derive(Debug)]
pub struct LimitedConnection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for LimitedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
