//! Bearer-token authentication as a tower layer in front of the gRPC routes.
//!
//! An [`AuthPolicy`] is closed as soon as any token is set (SPEC guarantee
//! 10): every API path then needs a token, and only the health and reflection
//! services stay open. Each [`Rule`] guards the paths starting with its prefix
//! (the first matching rule wins); a rule with no token of its own takes the
//! API's. Tokens are compared in constant time and never logged or echoed.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{self, Either, Ready};
use subtle::ConstantTimeEq;
use tonic::body::Body;
use tower::{Layer, Service};

/// Paths outside every rule: probes and `grpcurl list` need no token.
const ALWAYS_OPEN: &[&str] = &["/grpc.health.v1.Health/", "/grpc.reflection."];

/// A token whose value never reaches a log line or a `Debug` print.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time for tokens of equal length; the length itself is not secret.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        checked(s.trim())
    }
}

fn checked(token: &str) -> Result<Secret, String> {
    if token.is_empty() {
        return Err("a token must not be empty".to_owned());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token must be printable ASCII without spaces".to_owned());
    }
    Ok(Secret(token.into()))
}

/// The token given directly, or read from `file` (surrounding whitespace
/// trimmed), or none; both at once is a configuration error.
pub fn resolve(
    direct: Option<&Secret>,
    file: Option<&Path>,
    flag: &str,
) -> Result<Option<Secret>, String> {
    match (direct, file) {
        (Some(_), Some(_)) => Err(format!("--{flag} and --{flag}-file are mutually exclusive")),
        (Some(token), None) => Ok(Some(token.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --{flag}-file {}: {e}", path.display()))?;
            checked(text.trim())
                .map(Some)
                .map_err(|e| format!("--{flag}-file {}: {e}", path.display()))
        }
        (None, None) => Ok(None),
    }
}

/// The token required for every RPC whose path starts with `path_prefix`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub path_prefix: &'static str,
    /// What the RPCs under the prefix are, for the start-up log, e.g. `SubscribeEvents`.
    pub role: &'static str,
    /// The flag that sets the token (without `--`), for messages.
    pub flag: &'static str,
    pub token: Option<Secret>,
}

/// Which token each path needs: service rules first, then the API rule for
/// every other path but health and reflection.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    rules: Arc<[Rule]>,
    summary: String,
}

impl AuthPolicy {
    /// `api` guards every path no rule of `rules` claims. A rule without a
    /// token of its own takes `api`'s; a rule with a token while `api` has
    /// none would leave the API open beside a closed path, and is refused.
    pub fn new(api: Rule, rules: Vec<Rule>) -> Result<Self, String> {
        if api.token.is_none() {
            if let Some(closed) = rules.iter().find(|r| r.token.is_some()) {
                return Err(format!(
                    "--{} is set but --{} is not: the {} RPCs would stay open; set --{} too",
                    closed.flag, api.flag, api.role, api.flag
                ));
            }
        }
        let summary = if api.token.is_none() {
            "auth: off, every RPC is open".to_owned()
        } else {
            let mut needs = vec![format!("{} need --{}", api.role, api.flag)];
            for rule in &rules {
                needs.push(match rule.token {
                    Some(_) => format!("{} needs --{}", rule.role, rule.flag),
                    None => format!(
                        "{} needs --{} (no --{} is set)",
                        rule.role, api.flag, rule.flag
                    ),
                });
            }
            format!(
                "auth: on: {}; health and reflection are open",
                needs.join(", ")
            )
        };
        let mut rules: Vec<Rule> = rules
            .into_iter()
            .map(|rule| Rule {
                token: rule.token.or_else(|| api.token.clone()),
                ..rule
            })
            .collect();
        rules.push(api);
        Ok(AuthPolicy {
            rules: rules.into(),
            summary,
        })
    }

    /// Whether any token is set.
    pub fn is_on(&self) -> bool {
        self.rules.iter().any(|r| r.token.is_some())
    }

    /// One line saying which roles need which token, or that every RPC is open.
    pub fn summary(&self) -> &str {
        &self.summary
    }
}

#[derive(Debug, Clone)]
pub struct AuthLayer {
    rules: Arc<[Rule]>,
}

impl AuthLayer {
    pub fn new(policy: &AuthPolicy) -> Self {
        AuthLayer {
            rules: Arc::clone(&policy.rules),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            rules: Arc::clone(&self.rules),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    rules: Arc<[Rule]>,
}

/// Why a request was refused; the text goes to the client, so it names no token.
fn check(rules: &[Rule], request: &http::Request<Body>) -> Result<(), &'static str> {
    let path = request.uri().path();
    if ALWAYS_OPEN.iter().any(|open| path.starts_with(open)) {
        return Ok(());
    }
    let Some(rule) = rules.iter().find(|r| path.starts_with(r.path_prefix)) else {
        return Ok(());
    };
    let Some(expected) = &rule.token else {
        return Ok(());
    };
    let Some(value) = request.headers().get(http::header::AUTHORIZATION) else {
        return Err("missing authorization metadata: send `authorization: Bearer <token>`");
    };
    let bytes = value.as_bytes();
    let Some(presented) = bytes
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|_| bytes[7..].trim_ascii())
    else {
        return Err("malformed authorization metadata: expected `Bearer <token>`");
    };
    if expected.matches(presented) {
        Ok(())
    } else {
        Err("invalid bearer token")
    }
}

impl<S> Service<http::Request<Body>> for Auth<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match check(&self.rules, &request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(reason) => {
                tracing::debug!(
                    rpc = request.uri().path(),
                    reason,
                    "unauthenticated request refused"
                );
                Either::Right(future::ready(Ok(
                    tonic::Status::unauthenticated(reason).into_http()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, authorization: Option<&str>) -> http::Request<Body> {
        let mut builder = http::Request::builder().uri(path);
        if let Some(value) = authorization {
            builder = builder.header("authorization", value);
        }
        builder.body(Body::empty()).unwrap()
    }

    fn rule(path_prefix: &'static str, token: Option<&str>) -> Rule {
        Rule {
            path_prefix,
            role: path_prefix,
            flag: "some-token",
            token: token.map(|t| t.parse().unwrap()),
        }
    }

    fn rules(api: Option<&str>, stream: Option<&str>) -> Result<AuthPolicy, String> {
        AuthPolicy::new(rule("/", api), vec![rule("/svc/Stream", stream)])
    }

    #[test]
    fn the_first_matching_rule_decides_and_health_and_reflection_stay_open() {
        let policy = rules(Some("s3cret"), Some("str3am")).unwrap();
        let rules = &policy.rules;
        assert!(check(rules, &request("/svc/Stream", Some("Bearer str3am"))).is_ok());
        assert!(check(rules, &request("/svc/Stream", Some("Bearer s3cret"))).is_err());
        assert!(check(rules, &request("/grpc.health.v1.Health/Check", None)).is_ok());
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert!(check(rules, &request(reflection, None)).is_ok());
        assert!(check(rules, &request("/svc/Do", None)).is_err());
        assert!(check(rules, &request("/svc/Do", Some("Bearer wrong"))).is_err());
        assert!(check(rules, &request("/svc/Do", Some("s3cret"))).is_err());
        assert!(check(rules, &request("/svc/Do", Some("Bearer s3cret"))).is_ok());
        assert!(check(rules, &request("/svc/Do", Some("bearer s3cret"))).is_ok());
        assert!(check(rules, &request("/svc/Do", Some("Bearer s3cretX"))).is_err());
        assert!(check(rules, &request("/made.Up/Thing", None)).is_err());
    }

    #[test]
    fn one_token_closes_every_api_path() {
        let policy = rules(Some("s3cret"), None).unwrap();
        assert!(policy.is_on());
        assert!(check(&policy.rules, &request("/svc/Stream", None)).is_err());
        assert!(check(
            &policy.rules,
            &request("/svc/Stream", Some("Bearer s3cret"))
        )
        .is_ok());
        assert!(policy.summary().contains("no --some-token is set"));
    }

    #[test]
    fn no_token_leaves_everything_open_and_a_lone_rule_token_is_refused() {
        let open = rules(None, None).unwrap();
        assert!(!open.is_on() && open.summary().contains("every RPC is open"));
        assert!(check(&open.rules, &request("/svc/Do", None)).is_ok());
        let error = rules(None, Some("str3am")).unwrap_err();
        assert!(error.contains("--some-token is set"), "{error}");
    }

    #[test]
    fn a_secret_never_prints() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!("".parse::<Secret>().is_err());
        assert!("two words".parse::<Secret>().is_err());
    }

    #[test]
    fn a_token_comes_from_the_flag_or_a_file_but_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let direct: Secret = "direct".parse().unwrap();
        assert_eq!(
            resolve(None, Some(&path), "t").unwrap().unwrap().expose(),
            "from-file"
        );
        assert_eq!(
            resolve(Some(&direct), None, "t").unwrap().unwrap().expose(),
            "direct"
        );
        assert!(resolve(Some(&direct), Some(&path), "t").is_err());
        assert!(resolve(None, Some(&dir.path().join("missing")), "t").is_err());
        assert!(resolve(None, None, "t").unwrap().is_none());
    }
}
