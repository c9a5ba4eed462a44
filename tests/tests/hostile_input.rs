//! Hostile input against the real binaries: requests that are not valid
//! protobuf (invalid UTF-8, truncated fields), over-size requests, values at
//! every extreme, and bytes that are not gRPC at all. Each is refused with the
//! SPEC's code, names the field where there is one, writes nothing, and the
//! service keeps serving.

use std::time::Duration;

use e2e::commands::*;
use e2e::event_log::*;
use e2e::{command_client, pb, query_client, start_command_service, start_query_service, Service};
use prost::bytes::{Buf, BufMut};
use prost::Message;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Sends bytes as they are, so a test can send what no generated client would.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// Calls `path` with `body` as the request message, unchecked.
async fn raw_call(channel: Channel, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    grpc.unary(
        tonic::Request::new(body),
        PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[track_caller]
fn refused(result: Result<Vec<u8>, Status>, code: Code, field: &str, case: &str) {
    match result {
        Ok(_) => panic!("{case}: accepted"),
        Err(s) => {
            assert_eq!(s.code(), code, "{case}: {}", s.message());
            assert!(
                s.message().starts_with(field),
                "{case}: the message should name {field}: {}",
                s.message()
            );
        }
    }
}

/// A string field of `tag` holding `bytes` (which need not be UTF-8).
fn field(tag: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

const NOT_UTF8: &[u8] = &[b'o', 0xff, 0xfe, b'x'];

fn assert_no_panic(svc: &Service) {
    let panics: Vec<_> = svc
        .logs()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "the service panicked: {panics:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_that_do_not_decode_are_invalid_argument_naming_the_field() {
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    let qs = start_query_service(&dir.path().join("query"), &cmd.endpoint());
    let channel = cmd.channel().await;
    let mut client = command_client(&cmd).await;
    ok(&mut client, create("o1", vec![item("apple", 1, 5)])).await;
    let head = log_head(&mut client).await;

    const CREATE: &str = "/orders.v1.CommandService/CreateOrder";
    let mut valid = pb::CreateOrderRequest {
        customer_id: "c1".to_owned(),
        ..create("o2", vec![])
    }
    .encode_to_vec();
    valid.extend(field(2, NOT_UTF8)); // the last value of a field wins
    refused(
        raw_call(channel.clone(), CREATE, valid).await,
        Code::InvalidArgument,
        "customer_id",
        "CreateOrder customer_id not UTF-8",
    );
    let line = field(1, NOT_UTF8);
    refused(
        raw_call(channel.clone(), CREATE, field(3, &line)).await,
        Code::InvalidArgument,
        "items.sku",
        "CreateOrder items[].sku not UTF-8",
    );
    refused(
        raw_call(
            channel.clone(),
            "/orders.v1.CommandService/AddItem",
            field(2, &line),
        )
        .await,
        Code::InvalidArgument,
        "item.sku",
        "AddItem item.sku not UTF-8",
    );
    for (path, tag, name) in [
        ("/orders.v1.CommandService/ShipOrder", 2, "carrier"),
        ("/orders.v1.CommandService/ShipOrder", 3, "tracking_number"),
        ("/orders.v1.CommandService/CancelOrder", 2, "reason"),
        ("/orders.v1.CommandService/PlaceOrder", 3, "command_id"),
        ("/orders.v1.CommandService/RemoveItem", 2, "sku"),
    ] {
        refused(
            raw_call(channel.clone(), path, field(tag, NOT_UTF8)).await,
            Code::InvalidArgument,
            name,
            &format!("{path} {name} not UTF-8"),
        );
    }
    // Truncated: a field that claims more bytes than follow; a bad wire type.
    for (body, case) in [
        (vec![0x0a, 0x7f, b'x'], "truncated length-delimited field"),
        (vec![0x0f], "invalid wire type"),
        (vec![0xff; 11], "a varint longer than ten bytes"),
    ] {
        let err = raw_call(channel.clone(), CREATE, body).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{case}: {}",
            err.message()
        );
    }
    assert_log_unchanged(&mut client, head, "undecodable requests").await;

    let query = qs.channel().await;
    refused(
        raw_call(
            query.clone(),
            "/orders.v1.QueryService/GetOrder",
            field(1, NOT_UTF8),
        )
        .await,
        Code::InvalidArgument,
        "order_id",
        "GetOrder order_id not UTF-8",
    );
    refused(
        raw_call(
            query,
            "/orders.v1.QueryService/ListCustomerOrders",
            field(1, NOT_UTF8),
        )
        .await,
        Code::InvalidArgument,
        "customer_id",
        "ListCustomerOrders customer_id not UTF-8",
    );
    // Still serving.
    ok(&mut client, place("o1")).await;
    assert_no_panic(&cmd);
    assert_no_panic(&qs);
}

/// Sends a 5 MiB request to each service; returns the codes they answer with.
/// Nothing may be written, and the connection keeps working.
async fn over_size_codes() -> (Code, Code) {
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    let qs = start_query_service(&dir.path().join("query"), &cmd.endpoint());
    let mut client = command_client(&cmd).await;
    ok(&mut client, create("o1", vec![])).await;
    let head = log_head(&mut client).await;
    // Over the default 4 MiB limit: a valid message, just too large.
    let huge = "x".repeat(5 * 1024 * 1024);
    let command_code = client
        .create_order(pb::CreateOrderRequest {
            customer_id: huge.clone(),
            ..create("o2", vec![])
        })
        .await
        .unwrap_err()
        .code();
    let query_code = query_client(&qs)
        .await
        .get_order(pb::GetOrderRequest {
            order_id: huge,
            min_position: 0,
        })
        .await
        .unwrap_err()
        .code();
    assert_log_unchanged(&mut client, head, "over-size request").await;
    // The same connection still works.
    ok(&mut client, add("o1", item("apple", 1, 1))).await;
    assert_no_panic(&cmd);
    assert_no_panic(&qs);
    (command_code, query_code)
}

/// tonic answers OUT_OF_RANGE before any codec runs; the servers'
/// `shared::grpc_codec::OversizeLayer` makes it the SPEC's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_size_requests_are_resource_exhausted_and_write_nothing() {
    let (command, query) = over_size_codes().await;
    assert_eq!(command, Code::ResourceExhausted, "command-service");
    assert_eq!(query, Code::ResourceExhausted, "query-service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extreme_values_are_invalid_argument_naming_the_field_and_write_nothing() {
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(dir.path());
    let mut client = command_client(&cmd).await;
    ok(&mut client, create("o1", vec![item("apple", 1, 5)])).await;
    let head = log_head(&mut client).await;
    let long = "a".repeat(1024 * 1024);
    let many: Vec<_> = (0..10_000).map(|i| item(&format!("s{i}"), 1, 1)).collect();
    let cases: Vec<(Cmd, &str)> = vec![
        (create("", vec![item("", 1, 1)]).into(), "items[0].sku"),
        (
            create("o2", vec![item("a", 1, 1), item("a", 1, 1)]).into(),
            "items[1].sku",
        ),
        (
            create("o2", vec![item("a", u32::MAX, 1)]).into(),
            "items[0].quantity",
        ),
        (
            create("o2", vec![item("a", 0, 1)]).into(),
            "items[0].quantity",
        ),
        (
            create("o2", vec![item("a", 1, i64::MAX)]).into(),
            "items[0].unit_price_cents",
        ),
        (
            create("o2", vec![item("a", 1, i64::MIN)]).into(),
            "items[0].unit_price_cents",
        ),
        (create("o2", many).into(), "items"),
        (
            pb::CreateOrderRequest {
                customer_id: long.clone(),
                ..create("o2", vec![])
            }
            .into(),
            "customer_id",
        ),
        (create(&long, vec![]).into(), "order_id"),
        (
            pb::CreateOrderRequest {
                currency: "usd".to_owned(),
                ..create("o2", vec![])
            }
            .into(),
            "currency",
        ),
        (
            with(create("o2", vec![]), None, &"k".repeat(65)),
            "command_id",
        ),
        (
            pb::AddItemRequest {
                item: None,
                ..add("o1", item("a", 1, 1))
            }
            .into(),
            "item",
        ),
        (add("o1", item("a b", 1, 1)).into(), "item.sku"),
        (remove("o1", "", 0).into(), "sku"),
        (cancel("o1", &"é".repeat(257)).into(), "reason"),
        (
            pb::ShipOrderRequest {
                carrier: long.clone(),
                ..ship("o1")
            }
            .into(),
            "carrier",
        ),
        (place("\0").into(), "order_id"),
    ];
    for (cmd, name) in cases {
        let what: String = format!("{cmd:?}").chars().take(200).collect();
        let status = expect_code(send(&mut client, cmd).await, Code::InvalidArgument, &what);
        assert!(
            status.message().starts_with(name),
            "{what}: the message should name {name}: {}",
            status.message()
        );
    }
    // Well-formed but extreme: refused by the rules, not by a crash.
    let status = expect_code(
        send(&mut client, with(place("o1"), Some(u64::MAX), "")).await,
        Code::Aborted,
        "expected_version u64::MAX",
    );
    assert!(
        status.message().contains("current version 1"),
        "{}",
        status.message()
    );
    expect_code(
        send(&mut client, add("o1", item("apple", 10_000, 5))).await,
        Code::FailedPrecondition,
        "a line over 10,000 units",
    );
    expect_code(
        send(&mut client, remove("o1", "apple", u32::MAX)).await,
        Code::FailedPrecondition,
        "remove u32::MAX",
    );
    assert_log_unchanged(&mut client, head, "extreme values").await;
    ok(&mut client, place("o1")).await;
    assert_no_panic(&cmd);
}

/// Opens a TCP connection, writes `bytes`, reads whatever comes back for a
/// moment, and closes (sometimes with a reset).
async fn throw(addr: std::net::SocketAddr, bytes: &[u8], reset: bool) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut sink = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut sink)).await;
    if reset {
        let _ = stream.set_zero_linger();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_bytes_on_the_ports_do_not_crash_the_services() {
    use rand::{Rng, SeedableRng};
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    let qs = start_query_service(&dir.path().join("query"), &cmd.endpoint());
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // a TLS ClientHello start
        PREFACE.to_vec(),
        PREFACE[..10].to_vec(),
        // The preface, then a frame header claiming 16 MiB of a made-up type.
        [PREFACE, &[0xff, 0xff, 0xff, 0x42, 0, 0, 0, 0, 1]].concat(),
        // The preface, then a SETTINGS frame of nonsense length.
        [PREFACE, &[0, 0, 5, 4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5]].concat(),
        vec![0; 70_000],
    ];
    for _ in 0..20 {
        let n = rng.random_range(1..20_000);
        let mut noise: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        if rng.random_bool(0.5) {
            noise.splice(0..0, PREFACE.iter().copied());
        }
        inputs.push(noise);
    }
    for svc in [&cmd, &qs] {
        for (i, bytes) in inputs.iter().enumerate() {
            throw(svc.addr, bytes, i % 2 == 0).await;
        }
    }
    // Both still answer, on fresh connections.
    let mut client = command_client(&cmd).await;
    let a = ok(&mut client, create("after-garbage", vec![item("a", 1, 1)])).await;
    let view = query_client(&qs)
        .await
        .get_order(pb::GetOrderRequest {
            order_id: "after-garbage".to_owned(),
            min_position: a.position,
        })
        .await
        .expect("query-service still answers")
        .into_inner();
    assert_eq!(view.order.unwrap().order_id, "after-garbage");
    assert_no_panic(&cmd);
    assert_no_panic(&qs);
}
