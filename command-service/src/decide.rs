//! The application step of a command: idempotency, load, decide, record.
//!
//! A `Group` decides the commands of one group commit in order, each against
//! the stored state plus what the group has already decided, and collects
//! what the group will write. It does no I/O of its own beyond reading through
//! `State`, and knows nothing of threads or durability (`writer.rs`).

use std::collections::HashMap;

use shared::codec;
use shared::domain::{
    CommandId, CommandRequest, Order, OrderId, RecordedEvent, Submission, Timestamp,
};
use shared::proto as pb;

use crate::error::{CommandError, StoreError};
use crate::store::{CommandResult, Store, StoredCommand, WriteBatch};

/// What deciding reads from storage.
pub trait State {
    /// The current state of an order; `Order::default()` when it does not exist.
    fn load_order(&self, id: &OrderId) -> Result<Order, StoreError>;
    fn load_command(&self, id: &CommandId) -> Result<Option<StoredCommand>, StoreError>;
}

impl State for Store {
    fn load_order(&self, id: &OrderId) -> Result<Order, StoreError> {
        Store::load_order(self, id)
    }

    fn load_command(&self, id: &CommandId) -> Result<Option<StoredCommand>, StoreError> {
        Store::load_command(self, id)
    }
}

/// The commands of one group commit, decided but not yet written.
pub struct Group {
    orders: HashMap<OrderId, Order>,
    commands: HashMap<CommandId, StoredCommand>,
    batch: WriteBatch,
    first_position: u64,
    /// The position the next event gets.
    next_position: u64,
}

/// What a group writes: its batch and the positions of its events.
pub struct Decided {
    pub batch: WriteBatch,
    pub first_position: u64,
    pub last_position: u64,
}

impl Group {
    /// A group whose first event gets `next_position`.
    pub fn new(next_position: u64) -> Self {
        Group {
            orders: HashMap::new(),
            commands: HashMap::new(),
            batch: WriteBatch::default(),
            first_position: next_position,
            next_position,
        }
    }

    /// Decides one command against `state` plus what this group has decided;
    /// its events carry `metadata` (the request's trace context) when given.
    pub fn decide(
        &mut self,
        state: &impl State,
        submission: Submission,
        now: Timestamp,
        metadata: Option<&pb::EventMetadata>,
    ) -> Result<CommandResult, CommandError> {
        let Submission {
            request,
            command_id,
        } = submission;
        let fingerprint = codec::encode_snapshot(&request);
        if let Some(id) = &command_id {
            let earlier = match self.commands.get(id) {
                Some(stored) => Some(stored.clone()),
                None => state.load_command(id)?,
            };
            if let Some(stored) = earlier {
                return if stored.fingerprint == fingerprint {
                    Ok(stored.result)
                } else {
                    Err(CommandError::CommandIdReused(id.clone()))
                };
            }
        }
        let CommandRequest {
            order_id,
            expected_version,
            command,
        } = request;
        let order_id = order_id.unwrap_or_else(generate_order_id);
        let mut order = match self.orders.get(&order_id) {
            Some(order) => order.clone(),
            None => state.load_order(&order_id)?,
        };
        let events = order
            .handle(&command, expected_version, now)
            .map_err(|e| CommandError::from_domain(&order_id, e))?;
        for event in events {
            order.apply(&event);
            let recorded = RecordedEvent {
                position: self.next_position,
                event_id: uuid::Uuid::now_v7().simple().to_string(),
                order_id: order_id.clone(),
                version: order.version,
                occurred_at: now,
                command_id: command_id.clone(),
                event,
            };
            let mut envelope = pb::EventEnvelope::from(&recorded);
            envelope.metadata = metadata.cloned();
            self.batch.push_event(recorded.position, &envelope);
            self.next_position += 1;
        }
        let result = CommandResult {
            order_id: order_id.clone(),
            version: order.version,
            position: self.next_position - 1,
        };
        self.orders.insert(order_id, order);
        if let Some(id) = command_id {
            let stored = StoredCommand {
                fingerprint,
                result: result.clone(),
            };
            self.batch.commands.push((id.clone(), stored.clone()));
            self.commands.insert(id, stored);
        }
        Ok(result)
    }

    /// What the group writes; `None` when no command wrote anything.
    pub fn finish(mut self) -> Option<Decided> {
        if self.batch.is_empty() {
            return None;
        }
        self.batch.orders.extend(self.orders.drain());
        Some(Decided {
            batch: self.batch,
            first_position: self.first_position,
            last_position: self.next_position - 1,
        })
    }
}

/// A fresh order id: a UUIDv7 in simple form (32 hex digits, time-ordered).
fn generate_order_id() -> OrderId {
    OrderId::parse("order_id", &uuid::Uuid::now_v7().simple().to_string())
        .expect("a uuid is a valid order id")
}

#[cfg(test)]
mod tests {
    use shared::domain::{Command, Currency, CustomerId, Line, Sku};

    use super::*;

    /// Stored state as plain maps: what a previous, committed group left.
    #[derive(Default)]
    struct Stored {
        orders: HashMap<OrderId, Order>,
        commands: HashMap<CommandId, StoredCommand>,
    }

    impl State for Stored {
        fn load_order(&self, id: &OrderId) -> Result<Order, StoreError> {
            Ok(self.orders.get(id).cloned().unwrap_or_default())
        }

        fn load_command(&self, id: &CommandId) -> Result<Option<StoredCommand>, StoreError> {
            Ok(self.commands.get(id).cloned())
        }
    }

    impl Stored {
        /// Keeps what a decided group wrote, as a commit would.
        fn commit(&mut self, decided: Decided) {
            self.orders.extend(decided.batch.orders);
            self.commands.extend(decided.batch.commands);
        }
    }

    fn order_id(id: &str) -> OrderId {
        OrderId::parse("order_id", id).unwrap()
    }

    fn submission(order: &str, command: Command, command_id: Option<&str>) -> Submission {
        Submission {
            request: CommandRequest {
                order_id: Some(order_id(order)),
                expected_version: None,
                command,
            },
            command_id: command_id.map(|id| CommandId::parse("command_id", id).unwrap()),
        }
    }

    fn create(order: &str, command_id: Option<&str>) -> Submission {
        submission(
            order,
            Command::CreateOrder {
                customer_id: CustomerId::parse("customer_id", "c-1").unwrap(),
                items: vec![line("apple", 2)],
                currency: Currency::parse("currency", "USD").unwrap(),
            },
            command_id,
        )
    }

    fn line(sku: &str, quantity: u32) -> Line {
        Line {
            sku: Sku::parse("sku", sku).unwrap(),
            quantity,
            unit_price_cents: 100,
        }
    }

    fn add(order: &str, sku: &str, command_id: Option<&str>) -> Submission {
        submission(order, Command::AddItem { item: line(sku, 1) }, command_id)
    }

    fn now() -> Timestamp {
        Timestamp::from_micros(1_700_000_000_000_000)
    }

    #[test]
    fn a_repeat_in_a_later_group_returns_the_original_result_and_writes_nothing() {
        let mut stored = Stored::default();
        let mut group = Group::new(1);
        let first = group
            .decide(&stored, create("o-1", Some("k-1")), now(), None)
            .unwrap();
        stored.commit(group.finish().unwrap());

        let mut group = Group::new(first.position + 1);
        let repeat = group
            .decide(&stored, create("o-1", Some("k-1")), now(), None)
            .unwrap();
        assert_eq!(repeat, first);
        assert!(group.finish().is_none(), "a repeat writes nothing");
    }

    #[test]
    fn a_repeat_within_the_same_group_returns_the_original_result() {
        let stored = Stored::default();
        let mut group = Group::new(1);
        let first = group
            .decide(&stored, create("o-1", Some("k-1")), now(), None)
            .unwrap();
        let repeat = group
            .decide(&stored, create("o-1", Some("k-1")), now(), None)
            .unwrap();
        assert_eq!(repeat, first);
        let decided = group.finish().unwrap();
        assert_eq!((decided.first_position, decided.last_position), (1, 1));
        assert_eq!(decided.batch.commands.len(), 1);
    }

    #[test]
    fn a_command_id_reused_for_another_request_is_refused() {
        let mut stored = Stored::default();
        let mut group = Group::new(1);
        group
            .decide(&stored, create("o-1", Some("k-1")), now(), None)
            .unwrap();
        // In the same group...
        let reused = group.decide(&stored, create("o-2", Some("k-1")), now(), None);
        assert!(
            matches!(reused, Err(CommandError::CommandIdReused(_))),
            "{reused:?}"
        );
        stored.commit(group.finish().unwrap());
        // ...and in a later one.
        let mut group = Group::new(2);
        let reused = group.decide(&stored, add("o-1", "pear", Some("k-1")), now(), None);
        assert!(
            matches!(reused, Err(CommandError::CommandIdReused(_))),
            "{reused:?}"
        );
        assert!(group.finish().is_none());
    }

    #[test]
    fn commands_see_earlier_commands_of_the_same_group() {
        let stored = Stored::default();
        let mut group = Group::new(10);
        let created = group
            .decide(&stored, create("o-1", None), now(), None)
            .unwrap();
        assert_eq!((created.version, created.position), (1, 10));
        let added = group
            .decide(&stored, add("o-1", "pear", None), now(), None)
            .unwrap();
        assert_eq!((added.version, added.position), (2, 11));
        // Creating it again in the same group sees that it exists.
        let again = group.decide(&stored, create("o-1", None), now(), None);
        assert!(
            matches!(again, Err(CommandError::AlreadyExists(_))),
            "{again:?}"
        );
        let decided = group.finish().unwrap();
        assert_eq!((decided.first_position, decided.last_position), (10, 11));
        assert_eq!(decided.batch.orders.len(), 1, "one snapshot per order");
        assert_eq!(decided.batch.orders[0].1.version, 2);
    }

    #[test]
    fn a_refused_command_writes_nothing_and_takes_no_position() {
        let stored = Stored::default();
        let mut group = Group::new(1);
        let missing = group.decide(&stored, add("nope", "pear", Some("k-9")), now(), None);
        assert!(
            matches!(missing, Err(CommandError::NotFound(_))),
            "{missing:?}"
        );
        let created = group
            .decide(&stored, create("o-1", None), now(), None)
            .unwrap();
        assert_eq!(created.position, 1);
        let decided = group.finish().unwrap();
        assert!(decided.batch.commands.is_empty(), "a refusal keeps no key");
    }

    /// The events in a decided group's log blocks, decoded as a reader would.
    fn events_of(decided: &Decided) -> Vec<pb::EventEnvelope> {
        decided
            .batch
            .blocks
            .iter()
            .flat_map(|(_, block)| {
                codec::log_block_frames(block)
                    .unwrap()
                    .into_iter()
                    .map(|range| {
                        let bytes = bytes::Bytes::copy_from_slice(&block[range]);
                        crate::store::decode_event(0, bytes).unwrap()
                    })
            })
            .collect()
    }

    #[test]
    fn a_commands_trace_context_is_stored_with_its_events_and_only_then() {
        let stored = Stored::default();
        let mut group = Group::new(1);
        let metadata = pb::EventMetadata {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: "vendor=abc".into(),
        };
        group
            .decide(&stored, create("o-1", None), now(), Some(&metadata))
            .unwrap();
        group
            .decide(&stored, add("o-1", "pear", None), now(), None)
            .unwrap();
        let events = events_of(&group.finish().unwrap());
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].metadata.as_ref(), Some(&metadata));
        assert_eq!(events[1].metadata, None, "no trace context, no metadata");
    }
}
