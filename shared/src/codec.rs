//! Storage encodings. Every use of bincode is in this file, so replacing it is a
//! one-file change.
//!
//! - Rebuildable data (aggregate snapshots, read-model rows, checkpoints): bincode
//!   behind a one-byte format version.
//! - The event log, which lives forever: the protobuf `EventEnvelope` encoding,
//!   which evolves safely. The command side stores it in *log blocks*: a format
//!   byte, then consecutive events, each framed as the encoded
//!   `SubscribeEventsResponse` that carries it, so the log streams as stored.
//! - Log keys: the position as 8 big-endian bytes, so key order is position order.

use prost::Message;
use serde::{de::DeserializeOwned, Serialize};

use crate::proto as pb;

/// The format version written in front of every bincode value.
const SNAPSHOT_FORMAT: u8 = 1;

/// The format byte in front of every log block.
const LOG_BLOCK_FORMAT: u8 = 1;
/// `SubscribeEventsResponse.event` is field 1, length-delimited (wire type 2).
const EVENT_FIELD_TAG: u8 = (1 << 3) | 2;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("stored value is empty")]
    Empty,
    #[error("stored value has format version {0}, this build reads version {SNAPSHOT_FORMAT}")]
    UnknownFormat(u8),
    #[error("stored value does not decode: {0}")]
    Bincode(#[from] bincode::error::DecodeError),
    #[error("stored event does not decode: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("log block has format version {0}, this build reads version {LOG_BLOCK_FORMAT}")]
    UnknownLogFormat(u8),
    #[error("log block is cut short or has a foreign field at byte {0}")]
    BadLogBlock(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Encodes a rebuildable value with its format version in front.
pub fn encode_snapshot<T: Serialize>(value: &T) -> Vec<u8> {
    // Room for a typical value up front: bincode writes field by field, and
    // a Vec starting at one byte was reallocated 5-6 times for an order row.
    let mut out = Vec::with_capacity(256);
    out.push(SNAPSHOT_FORMAT);
    // Serializing plain owned data into a Vec cannot fail.
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .expect("bincode encoding into a Vec cannot fail");
    out
}

pub fn decode_snapshot<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&format, rest) = bytes.split_first().ok_or(CodecError::Empty)?;
    if format != SNAPSHOT_FORMAT {
        return Err(CodecError::UnknownFormat(format));
    }
    let (value, _) = bincode::serde::decode_from_slice(rest, config())?;
    Ok(value)
}

/// An empty log block, ready for `push_log_event`.
pub fn new_log_block() -> Vec<u8> {
    vec![LOG_BLOCK_FORMAT]
}

/// Appends an event to a log block, framed as `SubscribeEventsResponse { event }`.
pub fn push_log_event(block: &mut Vec<u8>, event: &pb::EventEnvelope) {
    let len = event.encoded_len();
    block.reserve(len + 11);
    block.push(EVENT_FIELD_TAG);
    prost::encoding::encode_varint(len as u64, block);
    event
        .encode(block)
        .expect("a Vec grows to take any message");
}

/// Appends an already encoded `EventEnvelope` to a log block (see `push_log_event`).
pub fn push_encoded_log_event(block: &mut Vec<u8>, envelope: &[u8]) {
    block.reserve(envelope.len() + 11);
    block.push(EVENT_FIELD_TAG);
    prost::encoding::encode_varint(envelope.len() as u64, block);
    block.extend_from_slice(envelope);
}

/// Where each event of a log block is, in order: byte ranges of encoded
/// `SubscribeEventsResponse` messages.
pub fn log_block_frames(block: &[u8]) -> Result<Vec<std::ops::Range<usize>>, CodecError> {
    let (&format, _) = block.split_first().ok_or(CodecError::Empty)?;
    if format != LOG_BLOCK_FORMAT {
        return Err(CodecError::UnknownLogFormat(format));
    }
    let mut frames = Vec::new();
    let mut at = 1;
    while at < block.len() {
        let start = at;
        if block[at] != EVENT_FIELD_TAG {
            return Err(CodecError::BadLogBlock(at));
        }
        let mut rest = &block[at + 1..];
        let before = rest.len();
        let len =
            prost::encoding::decode_varint(&mut rest).map_err(|_| CodecError::BadLogBlock(at))?;
        at += 1 + before - rest.len();
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| at.checked_add(len))
            .filter(|end| *end <= block.len())
            .ok_or(CodecError::BadLogBlock(start))?;
        frames.push(start..end);
        at = end;
    }
    Ok(frames)
}

/// The sled key of a log position: big-endian, so iteration order is position order.
pub fn position_key(position: u64) -> [u8; 8] {
    position.to_be_bytes()
}

/// Reads a key written by `position_key`; `None` if it is not 8 bytes.
pub fn position_from_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_refuse_other_versions() {
        let value = (7u64, "x".to_owned());
        let bytes = encode_snapshot(&value);
        assert_eq!(decode_snapshot::<(u64, String)>(&bytes).unwrap(), value);
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(matches!(
            decode_snapshot::<(u64, String)>(&other),
            Err(CodecError::UnknownFormat(9))
        ));
        assert!(decode_snapshot::<(u64, String)>(&[]).is_err());
    }

    #[test]
    fn order_snapshots_round_trip() {
        use crate::domain::{Command, Currency, CustomerId, Line, Order, Sku, Text, Timestamp};
        let line = |sku: &str, quantity, unit_price_cents| Line {
            sku: Sku::parse("sku", sku).unwrap(),
            quantity,
            unit_price_cents,
        };
        let now = Timestamp::from_micros(1_764_000_000_000_000);
        let mut order = Order::default();
        let commands = [
            Command::CreateOrder {
                customer_id: CustomerId::parse("customer_id", "c-1").unwrap(),
                currency: Currency::parse("currency", "EUR").unwrap(),
                items: vec![line("a", 10_000, 100_000_000), line("b", 1, 0)],
            },
            Command::PlaceOrder,
            Command::CancelOrder {
                reason: Text::parse("reason", "changed my mind, ça arrive").unwrap(),
            },
        ];
        // Every state an order passes through: Draft, Placed (with a time), Cancelled.
        for command in &commands {
            for event in order.handle(command, None, now).unwrap() {
                order.apply(&event);
            }
            let bytes = encode_snapshot(&order);
            assert_eq!(decode_snapshot::<Order>(&bytes).unwrap(), order);
        }
        assert_eq!(
            decode_snapshot::<Order>(&encode_snapshot(&Order::default())).unwrap(),
            Order::default()
        );
    }

    #[test]
    fn log_block_frames_are_subscribe_responses() {
        let events: Vec<pb::EventEnvelope> = (1..=3)
            .map(|position| pb::EventEnvelope {
                position,
                // 200 bytes: a length that needs a two-byte varint.
                event_id: "e".repeat(200),
                order_id: "o-1".into(),
                version: position,
                ..Default::default()
            })
            .collect();
        let mut block = new_log_block();
        push_log_event(&mut block, &events[0]);
        push_encoded_log_event(&mut block, &events[1].encode_to_vec());
        push_log_event(&mut block, &events[2]);
        let frames = log_block_frames(&block).unwrap();
        assert_eq!(frames.len(), 3);
        for (range, event) in frames.into_iter().zip(events) {
            let expected = pb::SubscribeEventsResponse {
                kind: Some(pb::subscribe_events_response::Kind::Event(event)),
            };
            assert_eq!(&block[range], expected.encode_to_vec().as_slice());
        }
        assert!(log_block_frames(&new_log_block()).unwrap().is_empty());
    }

    #[test]
    fn damaged_log_blocks_are_refused() {
        let mut block = new_log_block();
        push_log_event(&mut block, &pb::EventEnvelope::default());
        push_log_event(
            &mut block,
            &pb::EventEnvelope {
                position: 9,
                ..Default::default()
            },
        );
        assert!(matches!(
            log_block_frames(&block[..block.len() - 1]),
            Err(CodecError::BadLogBlock(_))
        ));
        let mut other = block.clone();
        other[0] = 2;
        assert!(matches!(
            log_block_frames(&other),
            Err(CodecError::UnknownLogFormat(2))
        ));
        assert!(matches!(log_block_frames(&[]), Err(CodecError::Empty)));
        let mut foreign = block;
        foreign[1] = 0x12;
        assert!(matches!(
            log_block_frames(&foreign),
            Err(CodecError::BadLogBlock(1))
        ));
    }

    #[test]
    fn position_keys_sort_like_positions() {
        assert!(position_key(255) < position_key(256));
        assert_eq!(position_from_key(&position_key(42)), Some(42));
        assert_eq!(position_from_key(b"abc"), None);
    }
}
