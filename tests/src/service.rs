//! A service process under test: built once, started on the port the OS
//! assigns, found by the address it logs, restarted on that same address.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

/// How long a service may take to log its address after start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a restart may wait for its old address to be free again.
const REBIND_TIMEOUT: Duration = Duration::from_secs(20);

/// What a service logs when its address is taken (see both `main.rs`).
const CANNOT_LISTEN: &str = "cannot listen on";

/// The path of a workspace binary, built once per test process with the same
/// profile as the tests, so `cargo test` alone is enough.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "command-service", "-p", "query-service"]);
        // What cargo set for this test crate (its manifest dir, package
        // name...) would reach the nested build's build scripts and make
        // some (ring's) run again, rebuilding rustls and tonic each time.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let per_crate = [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|prefix| key.starts_with(prefix));
            if per_crate || key == "CARGO_PRIMARY_PACKAGE" || key == "CARGO_TARGET_TMPDIR" {
                cmd.env_remove(key.as_ref());
            }
        }
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

/// Why a service did not start: its log, and its exit status (`None`: it
/// hung without binding and was killed).
pub type StartFailure = (Vec<String>, Option<ExitStatus>);

/// A running service process. Killed (SIGKILL) when dropped.
pub struct Service {
    child: Option<Child>,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    name: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// A program (and its first arguments) that starts the binary, if any.
    wrapper: Vec<String>,
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
    ) -> Result<Self, StartFailure> {
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        start(&[], binary_name, args.to_vec(), envs)
    }

    /// Like `try_spawn`, with the binary started by `wrapper` (a program and
    /// its first arguments; the binary's path and `args` follow), e.g.
    /// `prlimit --fsize=N`.
    pub fn try_spawn_wrapped(
        wrapper: &[&str],
        binary_name: &str,
        args: &[String],
        envs: &[(&str, &str)],
    ) -> Result<Self, StartFailure> {
        let wrapper: Vec<String> = wrapper.iter().map(|w| (*w).to_owned()).collect();
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        start(&wrapper, binary_name, args.to_vec(), envs)
    }

    /// Like `try_spawn`, with the files the process writes limited to
    /// `max_file_bytes` (`RLIMIT_FSIZE`, through `prlimit`) and `SIGXFSZ`
    /// ignored, so that a write past the limit fails with `EFBIG`, as on a
    /// full disk.
    pub fn try_spawn_file_limited(
        binary_name: &str,
        args: &[String],
        max_file_bytes: u64,
    ) -> Result<Self, StartFailure> {
        // `sh -c` takes the binary as $0; `$1` is the limit, then the
        // binary's own arguments (prlimit ends its options at the binary).
        let args: Vec<String> = std::iter::once(format!("--fsize={max_file_bytes}"))
            .chain(args.iter().cloned())
            .collect();
        Self::try_spawn_wrapped(
            &[
                "sh",
                "-c",
                r#"trap '' XFSZ; limit=$1; shift; exec prlimit "$limit" "$0" "$@""#,
            ],
            binary_name,
            &args,
            &[],
        )
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

    /// Starts the same binary with the same arguments again, listening on the
    /// address this process reported (so clients and replicas that know it
    /// find the new process there). Kills this process first if it still
    /// runs; while the address is still held (a closing socket), retries.
    pub fn restart(&mut self) {
        self.kill();
        let args = with_listen(&self.args, self.addr);
        let deadline = Instant::now() + REBIND_TIMEOUT;
        let started = loop {
            match start(&self.wrapper, &self.name, args.clone(), self.envs.clone()) {
                Ok(service) => break service,
                Err((logs, Some(_)))
                    if Instant::now() < deadline
                        && logs.iter().any(|l| l.contains(CANNOT_LISTEN)) =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((logs, status)) => panic!(
                    "{} did not restart on {} (exit: {status:?}); its log:\n{}",
                    self.name,
                    self.addr,
                    logs.join("\n")
                ),
            }
        };
        assert_eq!(started.addr, self.addr, "back on the same address");
        *self = started;
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the process has logged so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The first address logged after `marker` (e.g. `"metrics listening on "`).
    pub fn logged_addr(&self, marker: &str) -> Option<SocketAddr> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .find_map(|line| addr_after(line, marker))
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
        let child = self.child.as_ref().expect("service is running");
        signal(child.id(), "-TERM");
        let mut child = self.child.take().expect("service is running");
        child.wait().expect("wait for service")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGTERM, waiting at most `timeout` for the exit; a process that hangs is
/// killed and fails the test.
pub async fn terminate_within(mut svc: Service, timeout: Duration) -> ExitStatus {
    let pid = svc.pid().expect("running");
    let waiting = tokio::task::spawn_blocking(move || svc.terminate());
    match tokio::time::timeout(timeout, waiting).await {
        Ok(status) => status.unwrap(),
        Err(_) => {
            signal(pid, "-9");
            panic!("the service did not exit within {timeout:?} of SIGTERM");
        }
    }
}

fn signal(pid: u32, which: &str) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {which} {pid} failed");
}

/// Spawns the process and waits for the address it logs, or its end.
fn start(
    wrapper: &[String],
    binary_name: &str,
    args: Vec<String>,
    envs: Vec<(String, String)>,
) -> Result<Service, StartFailure> {
    let mut cmd = match wrapper.split_first() {
        None => Command::new(binary(binary_name)),
        Some((program, first)) => {
            let mut cmd = Command::new(program);
            cmd.args(first).arg(binary(binary_name));
            cmd
        }
    };
    cmd.args(&args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in &envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn service");
    let stderr = child.stderr.take().expect("piped stderr");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let sink = Arc::clone(&logs);
    let tag = binary_name.to_owned();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = addr_after(&line, "listening on ") {
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
                    args,
                    envs,
                    wrapper: wrapper.to_vec(),
                })
            }
            Err(_) => {
                if let Ok(Some(status)) = child.try_wait() {
                    // The pipe closes with the process: the whole log is read.
                    let _ = reader.join();
                    return Err((logs.lock().unwrap().clone(), Some(status)));
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err((logs.lock().unwrap().clone(), None));
                }
            }
        }
    }
}

/// `args` with the value of `--listen` replaced by `addr` (or added).
fn with_listen(args: &[String], addr: SocketAddr) -> Vec<String> {
    let mut args = args.to_vec();
    match args.iter().position(|a| a == "--listen") {
        Some(i) if i + 1 < args.len() => args[i + 1] = addr.to_string(),
        _ => args.extend(["--listen".to_owned(), addr.to_string()]),
    }
    args
}

/// Finds `MARKER ADDR` in a log line (text or JSON format).
fn addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let token: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
        .collect();
    token.parse().ok()
}

/// A local address that refuses every connection, held for as long as this
/// lives: the port is bound but never listened on, so the OS gives it to no
/// one else and a client that connects is reset at once.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    pub addr: SocketAddr,
}

impl ClosedPort {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bind port 0");
        let addr = socket.local_addr().expect("the bound address");
        ClosedPort {
            _socket: socket,
            addr,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A path as a command-line argument.
pub fn path_arg(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_text_and_json_lines() {
        let text = "2026-11-26T10:00:00Z  INFO command_service: listening on 127.0.0.1:4321";
        assert_eq!(
            addr_after(text, "listening on ").unwrap().to_string(),
            "127.0.0.1:4321"
        );
        let json = r#"{"fields":{"message":"listening on 127.0.0.1:99"}}"#;
        assert_eq!(addr_after(json, "listening on ").unwrap().port(), 99);
        assert!(addr_after("nothing here", "listening on ").is_none());
        let metrics = "INFO metrics listening on 127.0.0.1:7000";
        assert_eq!(
            addr_after(metrics, "metrics listening on ").unwrap().port(),
            7000
        );
    }

    #[test]
    fn a_restart_listens_where_the_first_start_was_bound() {
        let addr: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        let args = command_args(Path::new("/d"), "127.0.0.1:0");
        assert_eq!(
            with_listen(&args, addr),
            command_args(Path::new("/d"), "127.0.0.1:4321")
        );
        assert_eq!(
            with_listen(&[], addr),
            vec!["--listen".to_owned(), "127.0.0.1:4321".to_owned()]
        );
    }
}
