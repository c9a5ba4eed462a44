//! The minimal HTTP/1.1 server under `/metrics` and the dashboard: an accept
//! loop on a listener of its own, one request per connection, the request
//! head read up to a size limit, and every connection bounded in time.

use std::future::Future;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// The most bytes of a request head read; a longer one is dropped unanswered.
const REQUEST_HEAD_LIMIT: usize = 8 * 1024;
/// How long one connection may take, from accept to the last byte written.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` until `shutdown` completes; each is
/// answered by `answer` with its request head (through the blank line) on a
/// task of its own, within the I/O timeout. `what` names the server in logs.
pub async fn serve<F, Fut>(
    what: &'static str,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    answer: F,
) where
    F: Fn(TcpStream, Vec<u8>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::pin!(shutdown);
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "{what}: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let answered = async move {
                if let Some(head) = read_head(&mut stream).await {
                    answer(stream, head).await;
                }
            };
            if tokio::time::timeout(IO_TIMEOUT, answered).await.is_err() {
                tracing::debug!("{what}: request timed out");
            }
        });
    }
}

/// The request head through its blank line; `None` when the peer closes
/// first or the head is over the limit.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > REQUEST_HEAD_LIMIT {
            return None;
        }
    }
    Some(head)
}
