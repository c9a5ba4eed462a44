//! The services a scenario talks to: started here on temp directories, or
//! already running at `--command` / `--query`; plus the helpers that put them in
//! a known state (a log of N events, a caught-up projection).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::proto as pb;
use shared::proto::query_service_client::QueryServiceClient;
use tonic::transport::Channel;

use crate::commands::Commands;
use crate::load::{self, Plan};
use crate::services::{self, Proc};
use crate::stats::Report;

pub struct Target {
    pub command: SocketAddr,
    /// `None` until a query-service is attached (`loadgen all` measures the
    /// command side alone first).
    query: Option<SocketAddr>,
    /// Set when the harness started query-service itself (stopped first).
    pub query_proc: Option<Proc>,
    /// Set when the harness started command-service itself.
    pub command_proc: Option<Proc>,
    pub command_dir: Option<PathBuf>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Target {
    /// Uses the given addresses, starting whatever is not given.
    pub fn new(
        bin_dir: &Path,
        command: Option<SocketAddr>,
        query: Option<SocketAddr>,
    ) -> Result<Target, String> {
        let mut dirs = Vec::new();
        let mut command_dir = None;
        let (command, command_proc) = match command {
            Some(addr) => (addr, None),
            None => {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let proc = services::command_service(bin_dir, dir.path())?;
                command_dir = Some(dir.path().to_owned());
                dirs.push(dir);
                (proc.addr, Some(proc))
            }
        };
        let mut target = Target {
            command,
            query: None,
            command_proc,
            query_proc: None,
            command_dir,
            _dirs: dirs,
        };
        match query {
            Some(addr) => target.query = Some(addr),
            None => {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let proc = services::query_service(bin_dir, dir.path(), command)?;
                target.attach_query(proc, dir);
            }
        }
        Ok(target)
    }

    /// Starts command-service only.
    pub fn command_only(bin_dir: &Path) -> Result<Target, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let proc = services::command_service(bin_dir, dir.path())?;
        Ok(Target {
            command: proc.addr,
            query: None,
            command_proc: Some(proc),
            query_proc: None,
            command_dir: Some(dir.path().to_owned()),
            _dirs: vec![dir],
        })
    }

    /// A running command-service, no query side.
    pub fn external_command(command: SocketAddr) -> Target {
        Target {
            command,
            query: None,
            command_proc: None,
            query_proc: None,
            command_dir: None,
            _dirs: Vec::new(),
        }
    }

    /// Makes a started query-service (and its data directory) this target's.
    pub fn attach_query(&mut self, proc: Proc, dir: tempfile::TempDir) {
        self.query = Some(proc.addr);
        self.query_proc = Some(proc);
        self._dirs.push(dir);
    }

    pub fn query(&self) -> Result<SocketAddr, String> {
        self.query
            .ok_or_else(|| "no query-service attached".to_owned())
    }

    pub async fn query_channel(&self) -> Result<Channel, String> {
        Ok(load::connect(self.query()?, 1).await?.remove(0))
    }

    /// The projection status as query-service sees it.
    pub async fn status(&self) -> Result<pb::GetProjectionStatusResponse, String> {
        let mut client = QueryServiceClient::new(self.query_channel().await?);
        client
            .get_projection_status(pb::GetProjectionStatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|e| format!("GetProjectionStatus: {e}"))
    }

    /// Waits until query-service has applied `position`.
    pub async fn caught_up(&self, position: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let status = self.status().await?;
            if status.applied_position >= position {
                return Ok(());
            }
            if !status.error.is_empty() {
                return Err(format!("query-service stopped: {}", status.error));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "query-service did not reach {position} (at {})",
                    status.applied_position
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the durable-command workload by `plan`; returns the report and the
    /// highest position acknowledged.
    pub async fn commands(
        &self,
        connections: usize,
        plan: &Plan,
        name: &str,
    ) -> Result<(Report, u64), String> {
        let head = Arc::new(AtomicU64::new(0));
        let workload = Arc::new(Commands {
            channels: load::connect(self.command, connections).await?,
            run_id: run_id(),
            head: Arc::clone(&head),
        });
        let mut report = load::run(name, "commands", workload, plan).await;
        plan.describe(&mut report, connections);
        Ok((report, head.load(std::sync::atomic::Ordering::Relaxed)))
    }

    /// Makes the log at least `events` long (with the command workload, closed
    /// loop, 64 in flight); returns its head once query-service has applied it.
    pub async fn ensure_log(&self, events: u64) -> Result<u64, String> {
        let status = self.status().await?;
        let mut head = status.head_position.max(status.applied_position);
        if head < events {
            let plan = Plan {
                concurrency: 64,
                duration: None,
                count: Some(events - head),
                rate: None,
            };
            let (_, written) = self.commands(4, &plan, "fill log").await?;
            head = head.max(written);
        }
        self.caught_up(head).await?;
        Ok(head)
    }
}

/// A short random prefix for the ids one run creates.
pub fn run_id() -> String {
    format!("r{:08x}", rand::random::<u32>())
}
