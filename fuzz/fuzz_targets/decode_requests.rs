//! Request bytes as a service receives them: decoded as the request type the
//! first byte picks, then validated into a `Submission`. Neither step may
//! panic; a decode failure must be described with a field path or `request`
//! (what the client gets as INVALID_ARGUMENT).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shared::domain::Submission;
use shared::proto as pb;

fn check<R>(bytes: &[u8])
where
    R: Message + Default,
    for<'a> Submission: TryFrom<&'a R, Error = shared::domain::ValidationError>,
{
    match R::decode(bytes) {
        Ok(request) => {
            if let Err(e) = Submission::try_from(&request) {
                assert!(!e.field.is_empty(), "a validation error without a field");
            }
        }
        Err(e) => {
            let text = shared::grpc_codec::describe_decode_error(&e);
            assert!(text.contains(": does not decode as protobuf: "), "{text}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 9 {
        0 => check::<pb::CreateOrderRequest>(bytes),
        1 => check::<pb::AddItemRequest>(bytes),
        2 => check::<pb::RemoveItemRequest>(bytes),
        3 => check::<pb::PlaceOrderRequest>(bytes),
        4 => check::<pb::ShipOrderRequest>(bytes),
        5 => check::<pb::CancelOrderRequest>(bytes),
        // The query side's requests: decoding alone (validation is in query-service).
        6 => drop(pb::GetOrderRequest::decode(bytes)),
        7 => drop(pb::ListRecentOrdersRequest::decode(bytes)),
        _ => drop(pb::ListCustomerOrdersRequest::decode(bytes)),
    }
});
