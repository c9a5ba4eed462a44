//! A TCP fault proxy for the fault-injection tests: listens on 127.0.0.1:0,
//! forwards every connection to one upstream address, and on the test's command
//! (or at random, per chunk forwarded) stalls the traffic, drops connections
//! (orderly close) or resets them (RST), or refuses new ones.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Faults injected at random, decided once per chunk forwarded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chaos {
    /// Probability of pausing the connection before forwarding a chunk.
    pub stall: f64,
    /// The longest such pause.
    pub max_stall: Duration,
    /// Probability of closing the connection (both ways) instead of forwarding.
    pub drop: f64,
    /// Probability of resetting the connection instead of forwarding.
    pub reset: f64,
}

/// What the proxy did, for reports and for asserting the faults really happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub accepted: u64,
    pub refused: u64,
    pub stalls: u64,
    pub drops: u64,
    pub resets: u64,
    pub bytes_forwarded: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    Drop,
    Reset,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    stalls: AtomicU64,
    drops: AtomicU64,
    resets: AtomicU64,
    bytes: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    chaos: Mutex<Chaos>,
    /// Every live connection watches this: a new value ends all of them.
    kill: watch::Sender<(u64, Kill)>,
    stall_until: Mutex<Option<Instant>>,
    refuse: AtomicBool,
    counters: Counters,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1:0 forwarding to `upstream`, passing everything through.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            chaos: Mutex::new(Chaos::default()),
            kill: watch::Sender::new((0, Kill::Drop)),
            stall_until: Mutex::new(None),
            refuse: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        FaultProxy {
            addr,
            shared,
            accept,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Random faults from now on (`Chaos::default()` turns them off).
    pub fn set_chaos(&self, chaos: Chaos) {
        *self.shared.chaos.lock().unwrap() = chaos;
    }

    /// Closes every open connection in an orderly way (FIN both ways).
    pub fn drop_all(&self) {
        self.kill(Kill::Drop);
    }

    /// Resets every open connection (RST both ways).
    pub fn reset_all(&self) {
        self.kill(Kill::Reset);
    }

    fn kill(&self, how: Kill) {
        self.shared.kill.send_modify(|k| *k = (k.0 + 1, how));
    }

    /// Forwards nothing, in either direction, for `duration` (connections stay open).
    pub fn stall_for(&self, duration: Duration) {
        *self.shared.stall_until.lock().unwrap() = Some(Instant::now() + duration);
        self.shared.counters.stalls.fetch_add(1, Ordering::Relaxed);
    }

    /// While true, new connections are accepted and closed at once.
    pub fn refuse_new(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::Relaxed);
    }

    pub fn stats(&self) -> FaultStats {
        let c = &self.shared.counters;
        FaultStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            stalls: c.stalls.load(Ordering::Relaxed),
            drops: c.drops.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
            bytes_forwarded: c.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if shared.refuse.load(Ordering::Relaxed) {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(forward(client, Arc::clone(&shared)));
    }
}

/// Pumps one connection both ways until either side closes or a fault ends it.
async fn forward(mut client: TcpStream, shared: Arc<Shared>) {
    let Ok(mut upstream) = TcpStream::connect(shared.upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let mut kill = shared.kill.subscribe();
    kill.borrow_and_update();
    let ended = {
        let (mut client_read, mut client_write) = client.split();
        let (mut upstream_read, mut upstream_write) = upstream.split();
        let mut to_upstream = vec![0u8; 16 * 1024];
        let mut to_client = vec![0u8; 16 * 1024];
        loop {
            let step = tokio::select! {
                n = client_read.read(&mut to_upstream) => {
                    pass(&shared, n, &to_upstream, &mut upstream_write).await
                }
                n = upstream_read.read(&mut to_client) => {
                    pass(&shared, n, &to_client, &mut client_write).await
                }
                changed = kill.changed() => match changed {
                    Ok(()) => Step::Kill(kill.borrow().1),
                    Err(_) => Step::Kill(Kill::Reset),
                },
            };
            match step {
                Step::Continue => {}
                Step::Closed => break None,
                Step::Kill(how) => break Some(how),
            }
        }
    };
    match ended {
        Some(Kill::Reset) => {
            shared.counters.resets.fetch_add(1, Ordering::Relaxed);
            let _ = client.set_zero_linger();
            let _ = upstream.set_zero_linger();
        }
        Some(Kill::Drop) => {
            shared.counters.drops.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown().await;
            let _ = upstream.shutdown().await;
        }
        None => {}
    }
}

enum Step {
    Continue,
    Closed,
    Kill(Kill),
}

/// Forwards one chunk, after the stalls and random faults that apply to it.
async fn pass<W: AsyncWriteExt + Unpin>(
    shared: &Shared,
    read: std::io::Result<usize>,
    chunk: &[u8],
    out: &mut W,
) -> Step {
    let n = match read {
        Ok(0) | Err(_) => return Step::Closed,
        Ok(n) => n,
    };
    let until = *shared.stall_until.lock().unwrap();
    if let Some(until) = until {
        tokio::time::sleep_until(until).await;
    }
    let chaos = *shared.chaos.lock().unwrap();
    let (roll, pause) = {
        let mut rng = rand::rng();
        let pause = if chaos.max_stall.is_zero() {
            Duration::ZERO
        } else {
            rng.random_range(Duration::ZERO..=chaos.max_stall)
        };
        (rng.random::<f64>(), pause)
    };
    if roll < chaos.reset {
        return Step::Kill(Kill::Reset);
    }
    if roll < chaos.reset + chaos.drop {
        return Step::Kill(Kill::Drop);
    }
    if roll < chaos.reset + chaos.drop + chaos.stall {
        shared.counters.stalls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(pause).await;
    }
    if out.write_all(&chunk[..n]).await.is_err() {
        return Step::Closed;
    }
    shared.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
    Step::Continue
}
