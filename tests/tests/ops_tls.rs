//! TLS through the real binaries, with a CA and a server certificate made by the
//! test: a round trip over TLS, query-service following command-service over
//! TLS with a CA file, and clients that do not speak TLS or do not trust the
//! certificate refused.

use std::time::Duration;

use e2e::commands::create_request;
use e2e::tls::*;
use e2e::{command_args, path_arg, pb, query_args, CommandClient, QueryClient, Service};
use tempfile::TempDir;
use tonic::transport::Channel;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_and_queries_round_trip_over_tls() {
    let pki = Pki::new();
    let command_dir = TempDir::new().unwrap();
    let mut args = command_args(command_dir.path(), "127.0.0.1:0");
    args.extend(pki.server_args());
    let command = Service::spawn("command-service", &args, &[]);

    let query_dir = TempDir::new().unwrap();
    let mut args = query_args(
        query_dir.path(),
        "127.0.0.1:0",
        &format!("https://{}", command.addr),
    );
    args.extend(pki.server_args());
    args.extend(["--command-ca-file".to_owned(), path_arg(&pki.ca)]);
    let query = Service::spawn("query-service", &args, &[]);

    let mut commands = CommandClient::new(pki.channel(&command).await.expect("TLS connect"));
    let ack = commands
        .create_order(create_request("ord-tls"))
        .await
        .expect("CreateOrder over TLS")
        .into_inner();

    let mut queries = QueryClient::new(pki.channel(&query).await.expect("TLS connect"));
    let mut request = tonic::Request::new(pb::GetOrderRequest {
        order_id: "ord-tls".to_owned(),
        min_position: ack.position,
    });
    request.set_timeout(Duration::from_secs(20));
    let order = queries
        .get_order(request)
        .await
        .expect("query-service followed command-service over TLS")
        .into_inner()
        .order
        .expect("an order view");
    assert_eq!(order.order_id, "ord-tls");
    let status = queries
        .get_projection_status(pb::GetProjectionStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.connected, "the TLS subscription is up: {status:?}");
}

/// The first RPC over `channel`: the error a client sees if any.
async fn first_call(channel: Channel) -> Result<(), tonic::Status> {
    CommandClient::new(channel)
        .create_order(create_request("ord-refused"))
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plaintext_and_untrusting_clients_are_refused() {
    let pki = Pki::new();
    let dir = TempDir::new().unwrap();
    let mut args = command_args(dir.path(), "127.0.0.1:0");
    args.extend(pki.server_args());
    let command = Service::spawn("command-service", &args, &[]);

    // Plaintext HTTP/2 to a TLS port: the connection or the call fails.
    let plaintext = Channel::from_shared(command.endpoint())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    match plaintext.connect().await {
        Err(_) => {}
        Ok(channel) => {
            // The client reads the TLS alert as a broken HTTP/2 frame or a closed
            // pipe: tonic reports INTERNAL, UNAVAILABLE or UNKNOWN depending on
            // timing. What matters: the call fails in transport and writes nothing
            // (checked below: the first accepted command is position 1).
            let status = first_call(channel)
                .await
                .expect_err("a plaintext call is refused");
            assert!(
                std::error::Error::source(&status).is_some()
                    || status.code() == tonic::Code::Unavailable,
                "a transport failure, not an answer from the service: {status:?}"
            );
        }
    }

    // TLS, but trusting another CA: the handshake fails.
    let other = Pki::new();
    match tls_channel(&command, &other.ca_pem).await {
        Err(_) => {}
        Ok(channel) => {
            first_call(channel)
                .await
                .expect_err("a client that does not trust the certificate gets nothing");
        }
    }

    // Nothing was written by the refused attempts, and the right client works.
    let mut commands = CommandClient::new(pki.channel(&command).await.unwrap());
    let ack = commands
        .create_order(create_request("ord-ok"))
        .await
        .expect("a trusting TLS client is served")
        .into_inner();
    assert_eq!(ack.position, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_misconfiguration_ends_the_start_with_one_clear_line() {
    let pki = Pki::new();
    let dir = TempDir::new().unwrap();
    let mut args = command_args(dir.path(), "127.0.0.1:0");
    args.extend([
        "--tls-cert".to_owned(),
        path_arg(&pki.cert),
        "--tls-key".to_owned(),
        path_arg(&dir.path().join("missing.key")),
    ]);
    let (logs, status) = match Service::try_spawn("command-service", &args, &[]) {
        Ok(_) => panic!("command-service started without its TLS key"),
        Err(failure) => failure,
    };
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    assert!(
        logs.iter()
            .any(|l| l.contains("cannot read the TLS private key")),
        "{logs:?}"
    );

    let query_dir = TempDir::new().unwrap();
    let args = query_args(query_dir.path(), "127.0.0.1:0", "https://127.0.0.1:1");
    let (logs, status) = match Service::try_spawn("query-service", &args, &[]) {
        Ok(_) => panic!("query-service started with https and no CA file"),
        Err(failure) => failure,
    };
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    assert!(
        logs.iter().any(|l| l.contains("needs --command-ca-file")),
        "{logs:?}"
    );
}
