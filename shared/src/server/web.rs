//! Browsers: gRPC-Web on the gRPC port and CORS for the origins the operator
//! allows with `--cors-origin`.
//!
//! `serve` accepts HTTP/1.1 beside HTTP/2 and puts tonic-web's translation in
//! front of every other layer, so a gRPC-Web request (`application/grpc-web`,
//! over either HTTP version) reaches auth, metrics and the routes as the gRPC
//! request it stands for, and its response (trailers included) goes back as
//! gRPC-Web. Plain gRPC over HTTP/2 passes through untouched; any other HTTP/1.1
//! request gets 400.
//!
//! CORS sits in front of that. With no `--cors-origin` there is no CORS layer
//! at all: no response carries `access-control-allow-origin`, so a browser
//! refuses every page of another origin (same-origin pages and non-browser
//! clients are unaffected). With origins, a preflight from one of them is
//! answered with what a gRPC-Web client sends and reads; from any other origin
//! it is answered without `access-control-allow-origin`, so the browser refuses.
//! Credentials (cookies) are never allowed: the API takes its token in the
//! `authorization` header, which a page must set itself.
//!
//! Over HTTP/1.1 a request's body is read whole ([`Http1BodyLayer`]) before
//! any layer answers: an answer given before the body is read (auth's
//! UNAUTHENTICATED) would make hyper close the connection under a client still
//! sending it, which then sees a broken pipe instead of the status. gRPC-Web
//! requests are one message, so nothing streams that way.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Request, Response, Version};
use http_body_util::{BodyExt, Full, Limited};
use tonic::body::Body;
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers a gRPC-Web client may send from another origin.
pub const ALLOW_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "traceparent",
];

/// Response headers a page of another origin may read: the status (in headers
/// for a trailers-only response) and the event log's identity.
pub const EXPOSE_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    crate::LOG_ID_HEADER,
];

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The origins whose pages may call the API, validated from `--cors-origin`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CorsOrigins {
    /// No CORS headers: pages of other origins are refused by their browser.
    #[default]
    None,
    /// `*`: a page of any origin (without credentials).
    Any,
    /// Exactly these origins, as browsers send them (`http://127.0.0.1:8080`).
    Exact(Vec<String>),
}

impl CorsOrigins {
    /// Validates the values of `--cors-origin` (each already split at commas):
    /// none, `*` alone, or exact origins `scheme://host[:port]`. Fails with
    /// one line naming the flag and the value.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let values: Vec<&str> = values.iter().map(|v| v.trim()).collect();
        if values.is_empty() {
            return Ok(CorsOrigins::None);
        }
        if values.contains(&"*") {
            if values.len() > 1 {
                return Err(
                    "--cors-origin: `*` (every origin) cannot be combined with other origins"
                        .to_owned(),
                );
            }
            return Ok(CorsOrigins::Any);
        }
        let mut origins = Vec::with_capacity(values.len());
        for value in values {
            let origin = exact_origin(value).map_err(|why| {
                format!(
                    "--cors-origin {value:?}: {why} (an origin is scheme://host[:port], \
                     e.g. http://127.0.0.1:8080)"
                )
            })?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(CorsOrigins::Exact(origins))
    }

    /// The CORS layer for these origins; `None` when no origin is allowed.
    pub fn layer(&self) -> Option<CorsLayer> {
        let allow = match self {
            CorsOrigins::None => return None,
            CorsOrigins::Any => AllowOrigin::any(),
            CorsOrigins::Exact(origins) => AllowOrigin::list(
                origins
                    .iter()
                    .map(|o| HeaderValue::from_str(o).expect("validated origin")),
            ),
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::POST])
                .allow_headers(ALLOW_HEADERS.map(HeaderName::from_static))
                .expose_headers(EXPOSE_HEADERS.map(HeaderName::from_static))
                .max_age(PREFLIGHT_MAX_AGE),
        )
    }
}

impl std::fmt::Display for CorsOrigins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorsOrigins::None => f.write_str("none"),
            CorsOrigins::Any => f.write_str("*"),
            CorsOrigins::Exact(origins) => f.write_str(&origins.join(",")),
        }
    }
}

/// Reads the body of an HTTP/1.x request whole, up to a bound, before the
/// inner service sees it (HTTP/2 requests pass untouched). A larger body is
/// refused with RESOURCE_EXHAUSTED (trailers only, gRPC-Web).
#[derive(Debug, Clone, Copy)]
pub struct Http1BodyLayer {
    max_body_bytes: usize,
}

impl Http1BodyLayer {
    /// Bounds a body to what carries one message of `max_message_bytes`, as
    /// binary or base64 (`grpc-web-text`) gRPC-Web; a body between that
    /// message size and this bound still reaches the codec, which refuses it.
    pub fn new(max_message_bytes: usize) -> Self {
        Http1BodyLayer {
            max_body_bytes: max_message_bytes.saturating_add(5).saturating_mul(4) / 3 + 8,
        }
    }
}

impl<S> Layer<S> for Http1BodyLayer {
    type Service = Http1Body<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Http1Body {
            inner,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Http1Body<S> {
    inner: S,
    max_body_bytes: usize,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> Service<Request<Body>> for Http1Body<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if request.version() >= Version::HTTP_2 {
            return Box::pin(self.inner.call(request));
        }
        // The ready service goes with this request; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let max = self.max_body_bytes;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            match Limited::new(body, max).collect().await {
                Ok(whole) => {
                    let body = Body::new(Full::new(whole.to_bytes()));
                    inner.call(Request::from_parts(parts, body)).await
                }
                Err(error) => {
                    let too_large = error.is::<http_body_util::LengthLimitError>();
                    Ok(refusal(too_large, max))
                }
            }
        })
    }
}

/// A trailers-only gRPC-Web answer for a body that could not be read whole.
fn refusal(too_large: bool, max: usize) -> Response<Body> {
    let (code, message) = if too_large {
        (
            tonic::Code::ResourceExhausted,
            format!("the request body is over {max} bytes (--max-message-bytes)"),
        )
    } else {
        (
            tonic::Code::Cancelled,
            "the request body could not be read".to_owned(),
        )
    };
    let status = tonic::Status::new(code, message);
    let mut response = status.into_http::<Body>();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc-web+proto"),
    );
    response
}

/// `value` if it is an origin exactly as a browser sends it in `Origin`:
/// `http` or `https`, lowercase, a host, a port only when not the scheme's
/// default, nothing after (no path, not even `/`).
fn exact_origin(value: &str) -> Result<String, &'static str> {
    if value.is_empty() {
        return Err("empty origin");
    }
    let (rest, default_port) = if let Some(rest) = value.strip_prefix("http://") {
        (rest, 80)
    } else if let Some(rest) = value.strip_prefix("https://") {
        (rest, 443)
    } else {
        return Err("the scheme must be http:// or https://");
    };
    if rest.contains(['/', '?', '#']) {
        return Err("no path, query or fragment (not even a trailing /)");
    }
    if rest.contains('@') {
        return Err("no user information");
    }
    if rest.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("browsers send origins in lowercase; write it so");
    }
    let authority: http::uri::Authority = rest.parse().map_err(|_| "not a valid host[:port]")?;
    if authority.host().is_empty() {
        return Err("no host");
    }
    let port = match rest[authority.host().len()..].strip_prefix(':') {
        None => None,
        Some(port) => Some(
            port.parse::<u16>()
                .map_err(|_| "the port must be 1-65535")?,
        ),
    };
    match port {
        Some(0) => Err("the port must be 1-65535"),
        Some(port) if port == default_port => {
            Err("browsers leave out the scheme's default port; leave it out too")
        }
        _ => Ok(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<CorsOrigins, String> {
        CorsOrigins::parse(&values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn no_origin_means_no_cors_layer() {
        assert_eq!(parse(&[]).unwrap(), CorsOrigins::None);
        assert!(CorsOrigins::None.layer().is_none());
    }

    #[test]
    fn exact_origins_are_kept_as_browsers_send_them() {
        let origins = parse(&[
            "http://127.0.0.1:8080",
            "https://orders.example.com",
            "http://[::1]:3000",
            "http://127.0.0.1:8080",
        ])
        .unwrap();
        assert_eq!(
            origins,
            CorsOrigins::Exact(vec![
                "http://127.0.0.1:8080".to_owned(),
                "https://orders.example.com".to_owned(),
                "http://[::1]:3000".to_owned(),
            ])
        );
        assert!(origins.layer().is_some());
        assert_eq!(
            origins.to_string(),
            "http://127.0.0.1:8080,https://orders.example.com,http://[::1]:3000"
        );
    }

    #[test]
    fn a_star_alone_allows_every_origin() {
        assert_eq!(parse(&["*"]).unwrap(), CorsOrigins::Any);
        let error = parse(&["*", "http://a.example"]).unwrap_err();
        assert!(
            error.contains("--cors-origin") && error.contains('*'),
            "{error}"
        );
    }

    #[test]
    fn what_a_browser_never_sends_is_refused_naming_the_flag_and_value() {
        for bad in [
            "127.0.0.1:8080",
            "ftp://a.example",
            "http://a.example/",
            "http://a.example/app",
            "http://a.example?x",
            "http://user@a.example",
            "http://A.example",
            "HTTP://a.example",
            "http://a.example:80",
            "https://a.example:443",
            "http://a.example:0",
            "http://a.example:99999",
            "http://",
            "",
            "null",
        ] {
            let error = parse(&[bad]).unwrap_err();
            assert!(
                error.starts_with("--cors-origin") && error.contains(&format!("{bad:?}")),
                "{bad}: {error}"
            );
        }
    }
}
