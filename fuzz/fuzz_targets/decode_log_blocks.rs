//! Log blocks as the command side stores them and streams them: split into
//! frames by `codec::log_block_frames`, each frame decoded as the
//! `SubscribeEventsResponse` a subscriber receives, its event read into a
//! `RecordedEvent` (what query-service does before projecting). No step may
//! panic: a damaged block or a poison event is an error to report. The frames
//! of a block that splits cover it end to end, in order, and an event that
//! reads back is written into a block again and reads back unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shared::codec;
use shared::domain::RecordedEvent;
use shared::proto as pb;

/// The event a log block frame carries, if it decodes to one.
fn frame_event(frame: &[u8]) -> Option<pb::EventEnvelope> {
    match pb::SubscribeEventsResponse::decode(frame).ok()?.kind? {
        pb::subscribe_events_response::Kind::Event(envelope) => Some(envelope),
        pb::subscribe_events_response::Kind::Heartbeat(_) => None,
    }
}

fuzz_target!(|block: &[u8]| {
    let Ok(frames) = codec::log_block_frames(block) else {
        return;
    };
    // After the format byte, frame follows frame with nothing between or after.
    let mut at = 1;
    for frame in frames {
        assert_eq!(frame.start, at, "frames leave a gap or overlap");
        at = frame.end;
        let Some(envelope) = frame_event(&block[frame]) else {
            continue;
        };
        let Ok(event) = RecordedEvent::try_from(&envelope) else {
            continue;
        };
        let mut again = codec::new_log_block();
        codec::push_log_event(&mut again, &pb::EventEnvelope::from(&event));
        let frames = codec::log_block_frames(&again).expect("a block just written splits");
        assert_eq!(frames.len(), 1);
        let envelope = frame_event(&again[frames[0].clone()]).expect("the frame just written");
        assert_eq!(RecordedEvent::try_from(&envelope).as_ref(), Ok(&event));
    }
    assert_eq!(at, block.len(), "frames do not reach the end of the block");
});
