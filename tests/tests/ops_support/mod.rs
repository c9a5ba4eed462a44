//! What the operations suites (`ops_*.rs`) share: bearer-token requests,
//! certificates made for the test, the metrics endpoint's address and a plain
//! HTTP scrape, and polling with a deadline.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::{pb, Service};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

pub const COMMAND_TOKEN: &str = "cmd-token-3f9a1c";
pub const SUBSCRIBE_TOKEN: &str = "sub-token-77e0b2";
pub const QUERY_TOKEN: &str = "qry-token-c41d5e";

/// `message` with `authorization: Bearer <token>`, or without it for `None`.
pub fn bearer<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ascii token");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

pub fn create_request(order_id: &str) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        order_id: order_id.to_owned(),
        customer_id: "cust-ops".to_owned(),
        items: vec![e2e::item("sku-1", 2, 150)],
        currency: "EUR".to_owned(),
        command_id: String::new(),
    }
}

pub fn s(v: &str) -> String {
    v.to_owned()
}

/// Polls `probe` until it gives `Some`, failing the test after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The address a service logged as `metrics listening on ADDR`.
pub async fn metrics_addr(service: &Service) -> SocketAddr {
    eventually(
        "the metrics address in the log",
        Duration::from_secs(20),
        || {
            let found = service.logs().iter().find_map(|line| {
                let rest =
                    &line[line.find("metrics listening on ")? + "metrics listening on ".len()..];
                let token: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
                    .collect();
                token.parse().ok()
            });
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

/// A CA and a server certificate it signed, for `127.0.0.1` and `localhost`,
/// written as PEM files.
pub struct Pki {
    _dir: TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_pem: String,
}

impl Pki {
    pub fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "orders test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let mut server_params =
            rcgen::CertificateParams::new(vec![s("127.0.0.1"), s("localhost")]).unwrap();
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "orders test server");
        let server_cert = server_params
            .signed_by(&server_key, &ca_cert, &ca_key)
            .unwrap();
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let ca_pem = ca_cert.pem();
        Pki {
            ca: write("ca.pem", &ca_pem),
            cert: write("server.pem", &server_cert.pem()),
            key: write("server.key", &server_key.serialize_pem()),
            ca_pem,
            _dir: dir,
        }
    }

    pub fn server_args(&self) -> Vec<String> {
        vec![
            s("--tls-cert"),
            path(&self.cert),
            s("--tls-key"),
            path(&self.key),
        ]
    }

    /// A TLS channel to `service` that trusts this CA.
    pub async fn channel(&self, service: &Service) -> Result<Channel, tonic::transport::Error> {
        tls_channel(service, &self.ca_pem).await
    }
}

pub async fn tls_channel(
    service: &Service,
    ca_pem: &str,
) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("https://{}", service.addr))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

pub fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}
