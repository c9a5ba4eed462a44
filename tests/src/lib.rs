//! The one helper module of the end-to-end tests: builds and starts the real
//! `command-service` and `query-service` binaries on port 0 with their own data
//! directories, finds the address each one logs, and hands out gRPC clients.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use shared::proto::command_service_client::CommandServiceClient;
use shared::proto::query_service_client::QueryServiceClient;
use tonic::transport::Channel;

pub use shared::proto as pb;

pub mod fault_proxy;
pub mod model;

/// How long a service may take to log its address after start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of a workspace binary, built once per test process with the same
/// profile as the tests, so `cargo test` alone is enough.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "command-service", "-p", "query-service"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("run cargo build for the service binaries");
        assert!(status.success(), "building the service binaries failed");
    });
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps");
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A running service process. Killed (SIGKILL) when dropped.
pub struct Service {
    child: Option<Child>,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    name: String,
}

impl Service {
    /// Starts `binary_name` with `args` and waits until it logs the address it bound.
    pub fn spawn(binary_name: &str, args: &[String], envs: &[(&str, &str)]) -> Self {
        Self::try_spawn(binary_name, args, envs).unwrap_or_else(|(logs, status)| {
            panic!(
                "{binary_name} did not start (exit: {status:?}); its log:\n{}",
                logs.join("\n")
            )
        })
    }

    /// Like `spawn`, but a process that exits before binding gives back its log and status.
    pub fn try_spawn(
        binary_name: &str,
        args: &[String],
        envs: &[(&str, &str)],
    ) -> Result<Self, (Vec<String>, Option<ExitStatus>)> {
        Self::try_spawn_wrapped(&[], binary_name, args, envs)
    }

    /// Like `try_spawn`, with the binary started by `wrapper` (a program and
    /// its first arguments, the binary's path and `args` following), e.g.
    /// `sh -c 'trap "" XFSZ; exec "$0" "$@"'` or `prlimit --fsize=N`.
    pub fn try_spawn_wrapped(
        wrapper: &[&str],
        binary_name: &str,
        args: &[String],
        envs: &[(&str, &str)],
    ) -> Result<Self, (Vec<String>, Option<ExitStatus>)> {
        let mut cmd = match wrapper.split_first() {
            None => Command::new(binary(binary_name)),
            Some((program, first)) => {
                let mut cmd = Command::new(program);
                cmd.args(first).arg(binary(binary_name));
                cmd
            }
        };
        cmd.args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn service");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&logs);
        let tag = binary_name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
                if std::env::var_os("E2E_SHOW_LOGS").is_some() {
                    eprintln!("[{tag}] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => {
                    return Ok(Service {
                        child: Some(child),
                        addr,
                        logs,
                        name: binary_name.to_owned(),
                    })
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // Give the reader thread a moment to drain the pipe.
                        std::thread::sleep(Duration::from_millis(100));
                        return Err((logs.lock().unwrap().clone(), Some(status)));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        return Err((logs.lock().unwrap().clone(), None));
                    }
                }
            }
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the process has logged so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .expect("endpoint")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("service is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        child.wait().expect("wait for service")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `within` for the process to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Finds `listening on ADDR` in a log line (text or JSON format).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
        .collect();
    token.parse().ok()
}

fn path_arg(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_owned()
}

/// Starts command-service on 127.0.0.1:0 over `data_dir`.
pub fn start_command_service(data_dir: &Path) -> Service {
    Service::spawn(
        "command-service",
        &command_args(data_dir, "127.0.0.1:0"),
        &[],
    )
}

pub fn command_args(data_dir: &Path, listen: &str) -> Vec<String> {
    vec![
        "--listen".into(),
        listen.into(),
        "--data-dir".into(),
        path_arg(data_dir),
    ]
}

/// Starts query-service on 127.0.0.1:0 over `data_dir`, reading from `command_endpoint`.
pub fn start_query_service(data_dir: &Path, command_endpoint: &str) -> Service {
    Service::spawn(
        "query-service",
        &query_args(data_dir, "127.0.0.1:0", command_endpoint),
        &[],
    )
}

pub fn query_args(data_dir: &Path, listen: &str, command_endpoint: &str) -> Vec<String> {
    vec![
        "--listen".into(),
        listen.into(),
        "--data-dir".into(),
        path_arg(data_dir),
        "--command-endpoint".into(),
        command_endpoint.into(),
    ]
}

pub async fn command_client(service: &Service) -> CommandServiceClient<Channel> {
    CommandServiceClient::new(service.channel().await)
}

pub async fn query_client(service: &Service) -> QueryServiceClient<Channel> {
    QueryServiceClient::new(service.channel().await)
}

/// Reads the whole event log from position `after` up to the first heartbeat
/// (the point where the stream has caught up with the stored log).
pub async fn read_log(
    client: &mut CommandServiceClient<Channel>,
    after: u64,
) -> Vec<pb::EventEnvelope> {
    let mut stream = client
        .subscribe_events(pb::SubscribeEventsRequest {
            after_position: after,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut events = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("log read timed out")
            .expect("stream error")
            .expect("stream ended");
        match msg.kind.expect("message kind") {
            pb::subscribe_events_response::Kind::Event(e) => events.push(e),
            pb::subscribe_events_response::Kind::Heartbeat(h) => {
                if events.last().map_or(after, |e| e.position) >= h.head_position {
                    return events;
                }
            }
        }
    }
}

/// A line item for tests.
pub fn item(sku: &str, quantity: u32, unit_price_cents: i64) -> pb::LineItem {
    pb::LineItem {
        sku: sku.to_owned(),
        quantity,
        unit_price_cents,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_address_in_text_and_json_lines() {
        let text = "2026-11-26T10:00:00Z  INFO command_service: listening on 127.0.0.1:4321";
        assert_eq!(
            super::listening_addr(text).unwrap().to_string(),
            "127.0.0.1:4321"
        );
        let json = r#"{"fields":{"message":"listening on 127.0.0.1:99"}}"#;
        assert_eq!(super::listening_addr(json).unwrap().port(), 99);
        assert!(super::listening_addr("nothing here").is_none());
    }
}
