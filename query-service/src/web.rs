//! The dashboard (`--web-listen`): a minimal HTTP/1.1 server on its own
//! listener that serves the page built from `web/` (embedded in the binary, so
//! running it needs nothing but this executable) and `/config.json`, which
//! tells the page where the two services answer gRPC-Web. The page talks to
//! the services directly; this server only hands out files.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use shared::server::web::CorsOrigins;
use shared::server::ServerSettings;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::RunError;

/// The bundle `cd web && npm run build` writes (CI checks it is up to date).
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../web/dist/index.html"),
    ),
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../web/dist/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/dist/app.js"),
    ),
    (
        "/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/dist/app.css"),
    ),
];

/// Where the page finds the services, as `/config.json` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// query-service's own gRPC(-Web) URL (the bound address; an unspecified
    /// IP such as 0.0.0.0 is replaced by the page with the host it was loaded from).
    pub query_url: String,
    /// command-service's URL as a browser reaches it (`--web-command-url`).
    pub command_url: String,
}

impl Endpoints {
    fn to_json(&self) -> Vec<u8> {
        serde_json::json!({ "queryUrl": self.query_url, "commandUrl": self.command_url })
            .to_string()
            .into_bytes()
    }
}

/// One response: status line, content type, body, and a validator for caching.
struct Reply {
    status: &'static str,
    content_type: &'static str,
    body: Arc<[u8]>,
    etag: Option<String>,
}

/// The routes, with each file's entity tag computed once.
struct Site {
    files: Vec<(&'static str, &'static str, Arc<[u8]>, String)>,
}

impl Site {
    fn new(endpoints: &Endpoints) -> Self {
        let mut files: Vec<_> = FILES
            .iter()
            .map(|&(path, content_type, body)| (path, content_type, Arc::from(body), etag(body)))
            .collect();
        let config = endpoints.to_json();
        let config_etag = etag(&config);
        files.push((
            "/config.json",
            "application/json",
            Arc::from(config),
            config_etag,
        ));
        Site { files }
    }

    fn reply(&self, method: &[u8], path: &[u8], if_none_match: Option<&[u8]>) -> Reply {
        if method != b"GET" && method != b"HEAD" {
            return Reply::text(
                "405 Method Not Allowed",
                "only GET and HEAD are served here\n",
            );
        }
        let Some((_, content_type, body, tag)) =
            self.files.iter().find(|(p, ..)| p.as_bytes() == path)
        else {
            return Reply::text("404 Not Found", "not found\n");
        };
        if if_none_match == Some(tag.as_bytes()) {
            return Reply {
                status: "304 Not Modified",
                content_type,
                body: Arc::from(&[][..]),
                etag: Some(tag.clone()),
            };
        }
        Reply {
            status: "200 OK",
            content_type,
            body: Arc::clone(body),
            etag: Some(tag.clone()),
        }
    }
}

impl Reply {
    fn text(status: &'static str, body: &'static str) -> Self {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Arc::from(body.as_bytes()),
            etag: None,
        }
    }

    fn head(&self) -> String {
        // Revalidated on every load (an unchanged file costs a 304), so a new
        // binary's bundle is picked up at once.
        let validator = self
            .etag
            .as_ref()
            .map(|tag| format!("etag: {tag}\r\ncache-control: no-cache\r\n"))
            .unwrap_or_default();
        format!(
            "HTTP/1.1 {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n{validator}\
             x-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
    }
}

/// A strong entity tag: FNV-1a of the bytes (a cache validator, not a checksum
/// against tampering).
fn etag(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

/// Serves the dashboard on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    shutdown: impl Future<Output = ()>,
) {
    let site = Arc::new(Site::new(&endpoints));
    shared::server::http::serve("dashboard", listener, shutdown, move |stream, head| {
        let site = Arc::clone(&site);
        async move { answer(stream, &head, &site).await }
    })
    .await;
}

async fn answer(mut stream: TcpStream, head: &[u8], site: &Site) {
    let (method, path, if_none_match) = parse_head(head);
    let reply = site.reply(method, path, if_none_match);
    let _ = stream.write_all(reply.head().as_bytes()).await;
    if method != b"HEAD" {
        let _ = stream.write_all(&reply.body).await;
    }
    let _ = stream.shutdown().await;
}

/// The method, the path without its query string, and `If-None-Match`.
fn parse_head(head: &[u8]) -> (&[u8], &[u8], Option<&[u8]>) {
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.trim_ascii());
    let mut parts = lines.next().unwrap_or_default().split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let if_none_match = lines.find_map(|line| {
        let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
        name.eq_ignore_ascii_case(b"if-none-match")
            .then(|| value[1..].trim_ascii())
    });
    (method, path, if_none_match)
}

/// Binds the dashboard's listener (logging `dashboard on http://ADDR/`), lets
/// its page call this service (its origin is added to `server.cors`), and says
/// where the page finds the services: this query-service's gRPC `listener`
/// (https when it serves TLS) and `command_url`.
pub async fn bind(
    addr: SocketAddr,
    grpc: &TcpListener,
    server: &mut ServerSettings,
    command_url: &str,
) -> Result<(TcpListener, Endpoints), RunError> {
    let grpc = grpc.local_addr().map_err(RunError::Address)?;
    let scheme = if server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| RunError::Config(format!("cannot serve the dashboard on {addr}: {e}")))?;
    let bound = listener.local_addr().map_err(RunError::Address)?;
    allow_own_origin(&mut server.cors, bound);
    // The effective CORS origins, now with the dashboard's own.
    tracing::info!(cors_origin = %server.cors, "dashboard on http://{bound}/");
    let endpoints = Endpoints {
        query_url: format!("{scheme}://{grpc}"),
        command_url: command_url.to_owned(),
    };
    Ok((listener, endpoints))
}

/// Adds the dashboard's origin(s) to the allowed ones. An unspecified address
/// (0.0.0.0) has no single origin: pages reached through it need `--cors-origin`.
fn allow_own_origin(cors: &mut CorsOrigins, bound: SocketAddr) {
    let ip = bound.ip();
    if ip.is_unspecified() {
        return;
    }
    let port = bound.port();
    let mut own = vec![format!("http://{bound}")];
    if ip.is_loopback() {
        own.push(format!("http://localhost:{port}"));
    }
    match cors {
        CorsOrigins::Any => {}
        CorsOrigins::None => *cors = CorsOrigins::Exact(own),
        CorsOrigins::Exact(origins) => {
            for origin in own {
                if !origins.contains(&origin) {
                    origins.push(origin);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use tokio::io::AsyncReadExt;

    use super::*;

    fn site() -> Site {
        Site::new(&Endpoints {
            query_url: "http://127.0.0.1:50052".to_owned(),
            command_url: "http://127.0.0.1:50051".to_owned(),
        })
    }

    #[test]
    fn the_page_and_its_assets_are_served_with_their_types() {
        let site = site();
        for (path, content_type) in [
            ("/", "text/html; charset=utf-8"),
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/app.css", "text/css; charset=utf-8"),
            ("/config.json", "application/json"),
        ] {
            let reply = site.reply(b"GET", path.as_bytes(), None);
            assert_eq!(reply.status, "200 OK", "{path}");
            assert_eq!(reply.content_type, content_type, "{path}");
            assert!(!reply.body.is_empty(), "{path}");
        }
        assert!(std::str::from_utf8(&site.reply(b"GET", b"/", None).body)
            .unwrap()
            .contains("app.js"));
    }

    #[test]
    fn config_json_names_both_services() {
        let reply = site().reply(b"GET", b"/config.json", None);
        let config: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(config["queryUrl"], "http://127.0.0.1:50052");
        assert_eq!(config["commandUrl"], "http://127.0.0.1:50051");
    }

    #[test]
    fn an_unchanged_file_is_not_sent_again() {
        let site = site();
        let first = site.reply(b"GET", b"/app.js", None);
        let tag = first.etag.clone().unwrap();
        let again = site.reply(b"GET", b"/app.js", Some(tag.as_bytes()));
        assert_eq!(again.status, "304 Not Modified");
        assert!(again.body.is_empty());
        assert!(first.head().contains("cache-control: no-cache"));
    }

    #[test]
    fn unknown_paths_and_methods_are_refused() {
        let site = site();
        assert_eq!(site.reply(b"GET", b"/secret", None).status, "404 Not Found");
        assert_eq!(
            site.reply(b"POST", b"/", None).status,
            "405 Method Not Allowed"
        );
    }

    /// One request over a real socket: the status line, the headers and the body.
    async fn fetch(addr: SocketAddr, request: &str) -> (String, Vec<u8>) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8(response[..split].to_vec()).unwrap();
        (head, response[split + 4..].to_vec())
    }

    #[tokio::test]
    async fn bound_on_port_zero_it_serves_until_shutdown() {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = crate::config::Config::try_parse_from(["query-service"]).unwrap();
        let mut server = config.validate().unwrap().server;
        let listen = "127.0.0.1:0".parse().unwrap();
        let (listener, endpoints) = bind(listen, &grpc, &mut server, "http://cmd:1")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(
            endpoints.query_url,
            format!("http://{}", grpc.local_addr().unwrap())
        );
        assert_eq!(
            server.cors,
            CorsOrigins::Exact(vec![
                format!("http://{addr}"),
                format!("http://localhost:{}", addr.port())
            ])
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, endpoints, async {
            let _ = stopped.await;
        }));

        let (head, body) = fetch(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(
            head.contains("content-type: text/html; charset=utf-8"),
            "{head}"
        );
        assert_eq!(body, include_bytes!("../web/dist/index.html"));
        let (head, body) = fetch(addr, "HEAD /config.json HTTP/1.1\r\n\r\n").await;
        assert!(
            head.starts_with("HTTP/1.1 200 OK") && body.is_empty(),
            "{head}"
        );
        let (_, body) = fetch(addr, "GET /config.json HTTP/1.1\r\n\r\n").await;
        let config: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(config["commandUrl"], "http://cmd:1");

        stop.send(()).unwrap();
        served.await.unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn the_dashboards_own_origin_is_allowed() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let mut cors = CorsOrigins::None;
        allow_own_origin(&mut cors, local);
        let own = ["http://127.0.0.1:8080", "http://localhost:8080"].map(String::from);
        assert_eq!(cors, CorsOrigins::Exact(own.to_vec()));
        let mut cors = CorsOrigins::Exact(vec!["https://ops.example".to_owned(), own[0].clone()]);
        allow_own_origin(&mut cors, local);
        assert_eq!(
            cors,
            CorsOrigins::Exact(vec![
                "https://ops.example".to_owned(),
                own[0].clone(),
                own[1].clone()
            ])
        );
        let mut any = CorsOrigins::Any;
        allow_own_origin(&mut any, local);
        assert_eq!(any, CorsOrigins::Any);
        let mut none = CorsOrigins::None;
        allow_own_origin(&mut none, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(none, CorsOrigins::None);
    }

    #[test]
    fn the_request_head_is_read_case_insensitively() {
        let head = b"GET /app.js?v=1 HTTP/1.1\r\nHost: x\r\nIF-NONE-MATCH: \"abc\"\r\n\r\n";
        let (method, path, tag) = parse_head(head);
        assert_eq!(
            (method, path, tag),
            (&b"GET"[..], &b"/app.js"[..], Some(&b"\"abc\""[..]))
        );
        assert_eq!(parse_head(b"\r\n\r\n").1, b"");
    }
}
