//! Storage encodings. Every use of bincode is in this file, so replacing it is a
//! one-file change.
//!
//! - Rebuildable data (aggregate snapshots, read-model rows, checkpoints): bincode
//!   behind a one-byte format version.
//! - The event log, which lives forever: the protobuf `EventEnvelope` encoding,
//!   which evolves safely.
//! - Log keys: the position as 8 big-endian bytes, so key order is position order.

use prost::Message;
use serde::{de::DeserializeOwned, Serialize};

use crate::proto as pb;

/// The format version written in front of every bincode value.
const SNAPSHOT_FORMAT: u8 = 1;

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
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Encodes a rebuildable value with its format version in front.
pub fn encode_snapshot<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![SNAPSHOT_FORMAT];
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

pub fn encode_event(event: &pb::EventEnvelope) -> Vec<u8> {
    event.encode_to_vec()
}

pub fn decode_event(bytes: &[u8]) -> Result<pb::EventEnvelope, CodecError> {
    Ok(pb::EventEnvelope::decode(bytes)?)
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
    fn position_keys_sort_like_positions() {
        assert!(position_key(255) < position_key(256));
        assert_eq!(position_from_key(&position_key(42)), Some(42));
        assert_eq!(position_from_key(b"abc"), None);
    }
}
