//! Event bytes as query-service receives them from the stream (and as the
//! command side stores them): decoded as an `EventEnvelope`, then read into a
//! `RecordedEvent`, which the applier does before projecting. A failure is a
//! poison event to report, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::codec;
use shared::domain::RecordedEvent;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = codec::decode_event(data) {
        if let Ok(event) = RecordedEvent::try_from(&envelope) {
            // What can be read can be written back and read again, unchanged.
            let again = shared::proto::EventEnvelope::from(&event);
            let bytes = codec::encode_event(&again);
            let reread = RecordedEvent::try_from(&codec::decode_event(&bytes).unwrap()).unwrap();
            assert_eq!(reread, event);
        }
    }
});
