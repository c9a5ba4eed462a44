//! Child processes the harness starts (the two services and the echo server):
//! each on `127.0.0.1:0`, its address read from its `listening on ADDR` log line;
//! plus what `/proc` and the data directory say about them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running child process, killed when dropped.
pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
    pub name: String,
}

impl Proc {
    /// Starts `program args` and waits for it to log the address it bound.
    pub fn spawn(name: &str, program: &Path, args: &[String]) -> Result<Proc, String> {
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let (tx, rx) = mpsc::channel();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            let tag = name.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(addr) = listening_addr(&line) {
                        let _ = tx.send(addr);
                    } else if line.contains("ERROR") || line.contains("WARN") {
                        eprintln!("[{tag}] {line}");
                    }
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
                return Ok(Proc {
                    child,
                    addr,
                    name: name.to_owned(),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{name} exited before listening: {status}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{name} did not log `listening on` in time"));
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid())
    }

    /// A `/proc/PID/status` memory field (`VmRSS`, `VmHWM`) in bytes.
    pub fn memory(&self, field: &str) -> Option<u64> {
        proc_status_bytes(self.pid(), field)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    #[allow(clippy::cast_precision_loss)]
    Some(ticks as f64 / 100.0)
}

/// Finds `listening on ADDR` in a log line (text or JSON format).
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
        .collect();
    token.parse().ok()
}

/// Reads `field:  1234 kB` from `/proc/PID/status`, in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_field(&text, field)
}

fn parse_status_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Total size of the regular files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Where the release binaries of the services are.
pub fn service_binary(bin_dir: &Path, name: &str) -> Result<PathBuf, String> {
    let path = bin_dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it first with `cargo build --release -p command-service -p query-service`",
            path.display()
        ))
    }
}

pub fn command_service(bin_dir: &Path, data_dir: &Path) -> Result<Proc, String> {
    Proc::spawn(
        "command-service",
        &service_binary(bin_dir, "command-service")?,
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ],
    )
}

pub fn query_service(bin_dir: &Path, data_dir: &Path, command: SocketAddr) -> Result<Proc, String> {
    Proc::spawn(
        "query-service",
        &service_binary(bin_dir, "query-service")?,
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--command-endpoint".into(),
            format!("http://{command}"),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_addresses_and_memory_fields() {
        let line = "2026-11-26T10:00:00Z  INFO command_service: listening on 127.0.0.1:4321";
        assert_eq!(listening_addr(line).unwrap().port(), 4321);
        assert!(listening_addr(r#"{"message":"listening on 127.0.0.1:9"}"#).is_some());
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_field(status, "VmHWM"), Some(2 * 1024 * 1024));
        assert_eq!(parse_status_field(status, "VmRSS"), Some(1024 * 1024));
        assert_eq!(parse_status_field(status, "VmPeak"), None);
    }
}
