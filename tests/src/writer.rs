//! Fault-injection writers: every command carries an idempotency key and an
//! `expected_version`, so that after a fault a retry either returns the
//! original result or commits now, and the model stays exact either way; and
//! the checks made after every fault against that model.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::{Code, Status};

use crate::clients::{connect_command, CommandClient, QueryClient};
use crate::commands::{add, cancel, create, item, place, send, ship, with, Ack, Cmd};
use crate::event_log::{ack_of, assert_gap_free, read_log};
use crate::fault::is_fault_code;
use crate::model::{placement_dates, Model, ModelOrder};
use crate::pb;
use crate::queries::projection_status;
use pb::OrderStatus as S;

/// What a command does to the model once it is acknowledged.
#[derive(Debug, Clone)]
enum Effect {
    Create(Vec<(String, u32, i64)>),
    Add(String, u32, i64),
    Place,
    Ship(String, String),
    Cancel(String),
}

/// A writer: drives its own orders through create, adds, place, then ship or
/// cancel, one command at a time. Survives across service restarts.
pub struct Writer {
    pub name: String,
    rng: StdRng,
    order_no: usize,
    step: usize,
    current: Option<ModelOrder>,
    pub finished: Vec<ModelOrder>,
    /// A command sent but not acknowledged (the service went away): it is
    /// retried first, with the same key.
    pending: Option<(Cmd, Effect)>,
    /// Every acknowledged command with its result, in order.
    pub acks: Vec<(Cmd, Ack)>,
    /// Codes of the failures seen (each one left a command pending).
    pub failures: Vec<Code>,
}

const SKUS: [&str; 5] = ["apple", "pear", "plum", "fig", "kiwi"];

fn price(sku: &str) -> i64 {
    100 + 7 * sku.len() as i64
}

impl Writer {
    pub fn new(name: &str, seed: u64) -> Writer {
        Writer {
            name: name.to_owned(),
            rng: StdRng::seed_from_u64(seed),
            order_no: 0,
            step: 0,
            current: None,
            finished: Vec::new(),
            pending: None,
            acks: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn order_id(&self) -> String {
        format!("{}-o{}", self.name, self.order_no)
    }

    /// The next command: the pending one, or the next step of the current order.
    fn next(&mut self) -> (Cmd, Effect) {
        if let Some(pending) = self.pending.clone() {
            return pending;
        }
        let id = self.order_id();
        let key = format!("{id}-s{}", self.step);
        let version = self.current.as_ref().map(|o| o.version);
        let adds = 2 + self.order_no % 3;
        let (cmd, effect): (Cmd, Effect) = match self.step {
            0 => {
                let n = self.rng.random_range(0..=2);
                let items: Vec<_> = SKUS[..n]
                    .iter()
                    .map(|s| (s.to_string(), 1, price(s)))
                    .collect();
                let request = pb::CreateOrderRequest {
                    customer_id: format!("cust-{}", self.rng.random_range(0..7)),
                    ..create(&id, items.iter().map(|(s, q, p)| item(s, *q, *p)).collect())
                };
                (request.into(), Effect::Create(items))
            }
            s if s <= adds => {
                let sku = SKUS[self.rng.random_range(0..SKUS.len())];
                let quantity = self.rng.random_range(1..=3);
                (
                    add(&id, item(sku, quantity, price(sku))).into(),
                    Effect::Add(sku.to_owned(), quantity, price(sku)),
                )
            }
            s if s == adds + 1 => (place(&id).into(), Effect::Place),
            _ if self.order_no % 3 == 2 => {
                let reason = format!("reason {}", self.order_no);
                (cancel(&id, &reason).into(), Effect::Cancel(reason))
            }
            _ => {
                let tracking = format!("trk-{}", self.order_no);
                (
                    pb::ShipOrderRequest {
                        tracking_number: tracking.clone(),
                        ..ship(&id)
                    }
                    .into(),
                    Effect::Ship("DHL".to_owned(), tracking),
                )
            }
        };
        // Every command but the create guards on the version it was decided for.
        let expected = if self.step == 0 { None } else { version };
        (with(cmd, expected, &key), effect)
    }

    /// Records an acknowledgement and moves the model on.
    fn acknowledged(&mut self, cmd: Cmd, effect: Effect, ack: Ack) {
        self.pending = None;
        let order = self.current.get_or_insert_with(|| {
            let customer_id = match &cmd {
                Cmd::Create(r) => &r.customer_id,
                _ => unreachable!("the first command of an order creates it"),
            };
            ModelOrder::new(&ack.order_id, customer_id, "USD")
        });
        assert_eq!(
            ack.version,
            order.version + 1,
            "{}: acknowledged at version {} after {}",
            order.order_id,
            ack.version,
            order.version
        );
        order.version = ack.version;
        order.last_position = ack.position;
        let mut done = false;
        match effect {
            Effect::Create(items) => order.lines = items,
            Effect::Add(sku, quantity, price) => order.add(&sku, quantity, price),
            Effect::Place => {
                order.status = S::Placed;
                order.was_placed = true;
                // An order created without items and given none cannot be placed;
                // the plan always adds at least two items first.
            }
            Effect::Ship(carrier, tracking) => {
                order.status = S::Shipped;
                order.carrier = carrier;
                order.tracking_number = tracking;
                done = true;
            }
            Effect::Cancel(reason) => {
                order.status = S::Cancelled;
                order.cancel_reason = reason;
                done = true;
            }
        }
        self.acks.push((cmd, ack));
        self.step += 1;
        if done {
            self.finished
                .push(self.current.take().expect("current order"));
            self.order_no += 1;
            self.step = 0;
        }
    }

    /// Sends commands until one fails (the service went away), counting
    /// acknowledgements in `acked`. Returns the writer for the next round.
    async fn run(mut self, mut client: CommandClient, acked: watch::Sender<usize>) -> Writer {
        loop {
            let (cmd, effect) = self.next();
            match send(&mut client, cmd.clone()).await {
                Ok(ack) => {
                    self.acknowledged(cmd, effect, ack);
                    acked.send_modify(|n| *n += 1);
                }
                Err(status) => {
                    self.failed(&cmd, &status);
                    self.pending = Some((cmd, effect));
                    return self;
                }
            }
        }
    }

    fn failed(&mut self, cmd: &Cmd, status: &Status) {
        assert!(
            is_fault_code(status.code()),
            "{}: {cmd:?} failed with {:?} ({}), which no fault explains",
            self.name,
            status.code(),
            status.message()
        );
        self.failures.push(status.code());
    }

    /// Retries the pending command (if any); returns its result.
    pub async fn settle(&mut self, client: &mut CommandClient) -> Option<Ack> {
        let (cmd, effect) = self.pending.clone()?;
        let ack = send(client, cmd.clone())
            .await
            .unwrap_or_else(|s| panic!("{}: retry of {cmd:?} failed: {s}", self.name));
        self.acknowledged(cmd, effect, ack.clone());
        Some(ack)
    }

    pub fn orders(&self) -> impl Iterator<Item = &ModelOrder> {
        self.finished.iter().chain(self.current.as_ref())
    }
}

/// The writers running against one service until a fault stops each of them.
pub struct Round {
    tasks: Vec<JoinHandle<Writer>>,
    acked: watch::Receiver<usize>,
}

impl Round {
    /// Starts every writer (`writers` is left empty) on its own connection to `endpoint`.
    pub async fn start(writers: &mut Vec<Writer>, endpoint: &str) -> Round {
        let (acked_tx, acked) = watch::channel(0usize);
        let mut tasks = Vec::new();
        for w in writers.drain(..) {
            let client = connect_command(endpoint).await;
            tasks.push(tokio::spawn(w.run(client, acked_tx.clone())));
        }
        Round { tasks, acked }
    }

    /// Waits until `n` commands of this round are acknowledged.
    pub async fn acknowledged(&mut self, n: usize) {
        tokio::time::timeout(Duration::from_secs(60), self.acked.wait_for(|a| *a >= n))
            .await
            .expect("writers make progress")
            .unwrap();
    }

    /// Takes the writers back (into `writers`) once each has noticed
    /// `fault`; returns how many commands the round had acknowledged.
    pub async fn join(self, writers: &mut Vec<Writer>, fault: &str) -> usize {
        for task in self.tasks {
            writers.push(
                tokio::time::timeout(Duration::from_secs(30), task)
                    .await
                    .unwrap_or_else(|_| panic!("a writer notices the {fault}"))
                    .expect("writer task"),
            );
        }
        let acks = *self.acked.borrow();
        acks
    }
}

/// Settles every writer's pending command by a retry with its key; returns
/// how many of them had committed before (at a position up to `head`).
pub async fn settle_all(writers: &mut [Writer], client: &mut CommandClient, head: u64) -> usize {
    let mut durable = 0;
    for w in writers {
        if let Some(ack) = w.settle(client).await {
            if ack.position <= head {
                durable += 1;
            }
        }
    }
    durable
}

/// The model of everything the writers have had acknowledged.
pub fn model_of(writers: &[Writer]) -> Model {
    let mut model = Model::default();
    for w in writers {
        for order in w.orders() {
            model.max_position = model.max_position.max(order.last_position);
            model.orders.insert(order.order_id.clone(), order.clone());
        }
        model.commands_acknowledged += w.acks.len();
    }
    model
}

/// The checks after every fault: the log is gap-free, holds every
/// acknowledged command as acknowledged, and nothing else (each command
/// writes one event, and every pending command has been settled); a retry of
/// every acknowledged command returns its original result and writes nothing.
/// Returns the log.
pub async fn assert_command_side(
    client: &mut CommandClient,
    writers: &[Writer],
    retry_from: &[usize],
) -> Vec<pb::EventEnvelope> {
    let log = read_log(client, 0).await;
    assert_gap_free(&log);
    let mut acknowledged = 0;
    for w in writers {
        for (cmd, ack) in &w.acks {
            let stored = log.get(ack.position as usize - 1).map(ack_of);
            assert_eq!(
                stored.as_ref(),
                Some(ack),
                "acknowledged command lost or changed: {cmd:?}"
            );
        }
        acknowledged += w.acks.len();
    }
    assert_eq!(
        log.len(),
        acknowledged,
        "the log holds events no settled command accounts for"
    );
    // Idempotency keys survive: retries of this round's commands change nothing.
    for (w, from) in writers.iter().zip(retry_from) {
        for (cmd, ack) in &w.acks[*from..] {
            let again = send(client, cmd.clone())
                .await
                .unwrap_or_else(|s| panic!("retry of {cmd:?}: {s}"));
            assert_eq!(
                &again, ack,
                "a retry with the same key answered differently"
            );
        }
    }
    let after = read_log(client, log.len() as u64).await;
    assert!(after.is_empty(), "retries wrote {} events", after.len());
    log
}

/// Asserts the replica answers exactly like the model (every order, analytics).
pub async fn assert_replica(query: &QueryClient, model: &Model, log: &[pb::EventEnvelope]) {
    let dates = placement_dates(log);
    model.assert_query_side(query, &dates).await;
    let status = projection_status(query).await;
    assert!(
        status.error.is_empty(),
        "projection stopped: {}",
        status.error
    );
}
