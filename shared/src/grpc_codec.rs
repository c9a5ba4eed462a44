//! The gRPC wire codec of every `orders.v1` service and client, and the layer
//! that classifies over-size requests.
//!
//! `OrdersCodec` is prost's codec with one difference: a message that does not
//! decode (invalid UTF-8 in a string, a truncated field, a wrong wire type) is
//! the sender's mistake, so it is answered with `INVALID_ARGUMENT` naming the
//! field, where `tonic_prost::ProstCodec` answers `INTERNAL`. `build.rs` wires it
//! into the generated code with `codec_path`.
//!
//! `PreEncodedCodec` is the same codec for a server whose responses are
//! already encoded (command-service streams its stored log without decoding
//! and re-encoding each event).
//!
//! tonic checks a message's length against the decoding limit before any codec
//! sees it, and answers `OUT_OF_RANGE`; the SPEC's error model wants
//! `RESOURCE_EXHAUSTED` for an over-size request. `OversizeLayer` rewrites that
//! one answer on its way out of a server.

use std::marker::PhantomData;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes};
use futures::future::{MapOk, TryFutureExt};
use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::codegen::Service;
use tonic::Status;
use tonic_prost::{ProstCodec, ProstEncoder};

/// prost encoding; decode failures become `INVALID_ARGUMENT` naming the field.
#[derive(Debug, Clone)]
pub struct OrdersCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for OrdersCodec<T, U> {
    fn default() -> Self {
        OrdersCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for OrdersCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = OrdersDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        OrdersDecoder { _type: PhantomData }
    }
}

/// Decodes one `U`, mapping a malformed message to `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct OrdersDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default> Decoder for OrdersDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(describe_decode_error(&e)))
    }
}

/// A server codec whose responses are protobuf messages encoded beforehand:
/// each `Bytes` is written as one gRPC message as it is. Requests decode like
/// `OrdersCodec`'s.
#[derive(Debug, Clone)]
pub struct PreEncodedCodec<U> {
    _type: PhantomData<U>,
}

impl<U> Default for PreEncodedCodec<U> {
    fn default() -> Self {
        PreEncodedCodec { _type: PhantomData }
    }
}

impl<U> Codec for PreEncodedCodec<U>
where
    U: Message + Default + Send + 'static,
{
    type Encode = Bytes;
    type Decode = U;
    type Encoder = PreEncodedEncoder;
    type Decoder = OrdersDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        OrdersDecoder { _type: PhantomData }
    }
}

/// Copies an encoded message into the response.
#[derive(Debug, Clone, Copy)]
pub struct PreEncodedEncoder;

/// Streams of many small messages: fill 64 KiB before handing a chunk to
/// HTTP/2 (tonic's default yields every 32 KiB from an 8 KiB buffer).
const STREAM_BUFFER_BYTES: usize = 64 * 1024;

impl Encoder for PreEncodedEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(STREAM_BUFFER_BYTES, STREAM_BUFFER_BYTES)
    }
}

/// prost says `failed to decode Protobuf message: LineItem.sku:
/// CreateOrderRequest.items: invalid string value: data is not UTF-8 encoded`
/// (innermost first). Clients read field paths outermost first, like
/// `ValidationError`: `items.sku: invalid string value: ...`.
pub fn describe_decode_error(error: &prost::DecodeError) -> String {
    let text = error.to_string();
    let rest = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(&text);
    let mut fields = Vec::new();
    let mut description = rest;
    while let Some((segment, tail)) = description.split_once(": ") {
        match segment.split_once('.') {
            Some((message, field))
                if is_identifier(message) && is_identifier(field) && !field.is_empty() =>
            {
                fields.push(field);
                description = tail;
            }
            _ => break,
        }
    }
    fields.reverse();
    if fields.is_empty() {
        format!("request: does not decode as protobuf: {description}")
    } else {
        format!(
            "{}: does not decode as protobuf: {description}",
            fields.join(".")
        )
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Turns tonic's `OUT_OF_RANGE` for a request over the decoding limit into
/// `RESOURCE_EXHAUSTED`. Add it to a server with `Server::builder().layer(..)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OversizeLayer;

impl<S> tower_layer::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Oversize { inner }
    }
}

/// The service `OversizeLayer` wraps around a server.
#[derive(Debug, Clone)]
pub struct Oversize<S> {
    inner: S,
}

type Rewrite<B> = fn(http::Response<B>) -> http::Response<B>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Oversize<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = MapOk<S::Future, Rewrite<ResBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        self.inner
            .call(request)
            .map_ok(rewrite_oversize as Rewrite<ResBody>)
    }
}

/// The start of tonic's message for a request over the decoding limit
/// (`tonic::codec::decode`), as it appears percent-encoded in `grpc-message`.
const TOO_LARGE: &str = "Error,%20decoded%20message%20length%20too%20large";

/// gRPC errors that end a call before any message is sent are "trailers only":
/// the status is in the response headers, which is where a refused request's is.
pub fn rewrite_oversize<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers.get("grpc-message").is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(TOO_LARGE.as_bytes())
            || v.starts_with(TOO_LARGE.replace("%20", " ").as_bytes())
    });
    if out_of_range && too_large {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(tonic::Code::ResourceExhausted as i32),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto as pb;

    fn decode<U: Message + Default>(bytes: &[u8]) -> Result<U, Status> {
        U::decode(bytes).map_err(|e| Status::invalid_argument(describe_decode_error(&e)))
    }

    /// A `CreateOrderRequest` whose `customer_id` (field 2) is not UTF-8.
    fn bad_utf8_customer() -> Vec<u8> {
        vec![0x12, 0x02, 0xff, 0xfe]
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        let err = decode::<pb::CreateOrderRequest>(&bad_utf8_customer()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().starts_with("customer_id: does not decode"),
            "{}",
            err.message()
        );
        assert!(err.message().contains("UTF-8"), "{}", err.message());
    }

    #[test]
    fn nested_fields_are_named_outermost_first() {
        // items (3) = LineItem { sku (1) = 0xff }
        let bytes = [0x1a, 0x03, 0x0a, 0x01, 0xff];
        let err = decode::<pb::CreateOrderRequest>(&bytes).unwrap_err();
        assert!(
            err.message().starts_with("items.sku: does not decode"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn garbage_without_a_field_still_says_request() {
        // A length-delimited field claiming more bytes than there are.
        let err = decode::<pb::PlaceOrderRequest>(&[0x0a, 0x7f, b'x']).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(!err.message().is_empty());
    }

    fn response(status: &str, message: &str) -> http::Response<()> {
        http::Response::builder()
            .header("grpc-status", status)
            .header("grpc-message", message)
            .body(())
            .unwrap()
    }

    #[test]
    fn only_the_too_large_answer_is_rewritten() {
        let msg = "Error,%20decoded%20message%20length%20too%20large:%20found%205%20bytes";
        let r = rewrite_oversize(response("11", msg));
        assert_eq!(r.headers()["grpc-status"], "8");
        let r = rewrite_oversize(response("11", "something%20else"));
        assert_eq!(r.headers()["grpc-status"], "11");
        let r = rewrite_oversize(response("3", msg));
        assert_eq!(r.headers()["grpc-status"], "3");
    }
}
