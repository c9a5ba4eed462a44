//! A service's `/metrics` endpoint: its logged address, a plain HTTP scrape,
//! and reading one sample from the Prometheus text.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::eventually::eventually;
use crate::service::Service;

/// The address a service logged as `metrics listening on ADDR`.
pub async fn metrics_addr(service: &Service) -> SocketAddr {
    eventually(
        "the metrics address in the log",
        Duration::from_secs(20),
        || {
            let found = service.logged_addr("metrics listening on ");
            async move { found }
        },
    )
    .await
}

/// A plain HTTP/1.1 GET; gives the status line and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics port");
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("metrics response in time")
    .expect("read the metrics response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// Scrapes `/metrics` and checks the status.
pub async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "GET /metrics: {status}");
    body
}

/// The value of the sample `series` (name plus labels exactly as rendered), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
