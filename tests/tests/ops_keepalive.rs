//! HTTP/2 keepalive closes connections whose peer vanished: a client that
//! opens an HTTP/2 connection and then never answers the server's pings (as
//! a machine that lost power would) is disconnected after
//! `--keepalive-interval-ms` + `--keepalive-timeout-ms`, while a live client
//! on the same service keeps working.

use std::time::{Duration, Instant};

use e2e::{command_args, command_client, commands::create_request, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The client connection preface and an empty SETTINGS frame (RFC 9113 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// A SETTINGS frame with the ACK flag: the server's settings acknowledged,
/// so the connection is a proper idle one.
const SETTINGS_ACK: &[u8] = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_pings_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = command_args(&dir.path().join("command"), "127.0.0.1:0");
    args.extend(
        [
            "--keepalive-interval-ms",
            "1500",
            "--keepalive-timeout-ms",
            "1000",
        ]
        .map(String::from),
    );
    let service = Service::spawn("command-service", &args, &[]);

    let mut silent = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    silent.write_all(PREFACE).await.unwrap();
    let mut buffer = [0u8; 4096];
    // The server's SETTINGS come first; acknowledge them, then go silent.
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buffer))
        .await
        .expect("the server's settings")
        .unwrap();
    assert!(
        n >= 9 && buffer[3] == 0x4,
        "a SETTINGS frame first: {:?}",
        &buffer[..n]
    );
    silent.write_all(SETTINGS_ACK).await.unwrap();
    let opened = Instant::now();
    // Read (and drop) whatever the server sends, pings included, never
    // answering, until it closes the connection.
    let closed_after = loop {
        match tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break opened.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the silent connection is still open after 20 s"),
        }
    };
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(10),
        "closed {closed_after:?} after going silent; the pings come every 1.5 s, 1 s to answer"
    );

    // A client that answers pings is still served, over the same time.
    let mut client = command_client(&service).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    client.create_order(create_request("o-1")).await.unwrap();
}
