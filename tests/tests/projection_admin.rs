//! `orders.v1.ProjectionAdminService` through the real query-service binary:
//! pausing and resuming while commands and queries go on; a poison event
//! skipped (only the one applying is stopped at), parked with its reason,
//! error and time, kept across a restart, and retried; automatic parking
//! after `--park-after-stops` stops across restarts; a rebuild started while
//! serving; and the admin token.
//!
//! The real command-service writes only events this build can apply, so the
//! poison suites put a stand-in upstream in front of the replica: a gRPC
//! `CommandService` in this process streaming a fixed log, as a newer
//! command-service with a new event type would (`e2e::log_replayer`, as in `poison_event.rs`).

use std::time::Duration;

use e2e::auth::{bearer, QUERY_TOKEN};
use e2e::log_replayer::{envelope, serve_log};
use e2e::metrics::{metrics_addr, sample, scrape};
use e2e::{
    command_client, eventually, item, pb, query_args, query_client, start_command_service,
    ClosedPort, QueryClient, Service,
};
use prost::Message;
use shared::domain::{Currency, CustomerId, Event, Line, Sku};
use shared::proto::projection_admin_service_client::ProjectionAdminServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

type AdminClient = ProjectionAdminServiceClient<Channel>;

const WAIT: Duration = Duration::from_secs(20);
const ADMIN_TOKEN: &str = "adm-token-9b2e11";

/// The stand-in log's identity.
const LOG_ID: &str = "0190a0a0-0000-7000-8000-00000000ad01";

/// Serves `log` on a port of its own; gives the endpoint.
async fn upstream(log: Vec<pb::EventEnvelope>) -> String {
    serve_log(log, LOG_ID).await
}

fn line() -> Line {
    Line {
        sku: Sku::parse("sku", "a").unwrap(),
        quantity: 2,
        unit_price_cents: 50,
    }
}

fn created(position: u64, order: &str) -> pb::EventEnvelope {
    let event = Event::OrderCreated {
        customer_id: CustomerId::parse("customer_id", "c").unwrap(),
        currency: Currency::parse("currency", "").unwrap(),
        items: vec![line()],
        total_cents: 100,
        item_count: 2,
    };
    envelope(position, order, 1, event)
}

fn added(position: u64, order: &str, version: u64) -> pb::EventEnvelope {
    let event = Event::ItemAdded {
        customer_id: CustomerId::parse("customer_id", "c").unwrap(),
        item: line(),
        line_quantity: 4,
        total_cents: 200,
        item_count: 4,
    };
    envelope(position, order, version, event)
}

/// What an event type added after this build decodes to: no known `event`.
fn unreadable(position: u64, order: &str) -> pb::EventEnvelope {
    let mut unknown = created(position, order);
    unknown.event = None;
    unknown
}

fn replica(data_dir: &std::path::Path, command_endpoint: &str, extra: &[&str]) -> Service {
    let mut args = query_args(data_dir, "127.0.0.1:0", command_endpoint);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Service::spawn("query-service", &args, &[])
}

async fn admin_client(service: &Service) -> AdminClient {
    ProjectionAdminServiceClient::new(service.channel().await)
}

async fn status(query: &mut QueryClient) -> pb::GetProjectionStatusResponse {
    query
        .get_projection_status(pb::GetProjectionStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Waits until `check` holds for the projection status; gives that status.
async fn status_when(
    query: &QueryClient,
    what: &str,
    check: impl Fn(&pb::GetProjectionStatusResponse) -> bool,
) -> pb::GetProjectionStatusResponse {
    eventually(what, WAIT, || {
        let mut query = query.clone();
        let check = &check;
        async move {
            let s = status(&mut query).await;
            check(&s).then_some(s)
        }
    })
    .await
}

async fn skip(
    admin: &mut AdminClient,
    position: u64,
    reason: &str,
) -> Result<pb::ParkedEvent, Status> {
    admin
        .skip_event(pb::SkipEventRequest {
            position,
            reason: reason.to_owned(),
        })
        .await
        .map(|r| r.into_inner().parked.expect("the parked event"))
}

async fn get_order(
    query: &mut QueryClient,
    order_id: &str,
    min_position: u64,
) -> Result<pb::OrderView, Status> {
    query
        .get_order(pb::GetOrderRequest {
            order_id: order_id.to_owned(),
            min_position,
        })
        .await
        .map(|r| r.into_inner().order.expect("an order"))
}

async fn parked(admin: &mut AdminClient) -> pb::ListParkedEventsResponse {
    admin
        .list_parked_events(pb::ListParkedEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
}

async fn readiness(service: &Service) -> ServingStatus {
    let mut health = HealthClient::new(service.channel().await);
    let status = health
        .check(HealthCheckRequest {
            service: "orders.v1.QueryService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_stops_applying_while_commands_and_queries_go_on_and_resuming_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let command = start_command_service(&dir.path().join("command"));
    let replica = replica(&dir.path().join("query"), &command.endpoint(), &[]);
    let mut commands = command_client(&command).await;
    let mut query = query_client(&replica).await;
    let mut admin = admin_client(&replica).await;

    let create = |id: &str| pb::CreateOrderRequest {
        order_id: id.to_owned(),
        customer_id: "c-1".to_owned(),
        items: vec![item("apple", 1, 100)],
        ..Default::default()
    };
    let first = commands
        .create_order(create("o-1"))
        .await
        .unwrap()
        .into_inner();
    get_order(&mut query, "o-1", first.position).await.unwrap();
    eventually("ready", WAIT, || async {
        (readiness(&replica).await == ServingStatus::Serving).then_some(())
    })
    .await;

    let paused = admin
        .pause_projection(pb::PauseProjectionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.applied_position, first.position);
    assert!(!paused.already_paused);
    let again = admin
        .pause_projection(pb::PauseProjectionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_paused, "pausing twice changes nothing");
    // Paused: not ready (deliberately falling behind).
    assert_eq!(readiness(&replica).await, ServingStatus::NotServing);
    // A rebuild needs applying to run.
    let refused = admin
        .start_rebuild(pb::StartRebuildRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("paused"),
        "{}",
        refused.message()
    );

    // Commands are still acknowledged; the replica receives them but does not apply them.
    let mut last = 0;
    for n in 2..=4 {
        last = commands
            .create_order(create(&format!("o-{n}")))
            .await
            .unwrap()
            .into_inner()
            .position;
    }
    let held = status_when(&query, "the events to reach the paused replica", |s| {
        s.head_position >= last
    })
    .await;
    assert!(held.paused);
    assert_eq!(
        held.applied_position, first.position,
        "nothing applied while paused"
    );
    assert_eq!(held.lag, last - first.position);
    // Queries keep answering from what was applied.
    assert_eq!(get_order(&mut query, "o-1", 0).await.unwrap().version, 1);
    assert_eq!(
        get_order(&mut query, "o-4", 0).await.unwrap_err().code(),
        Code::NotFound
    );

    let resumed = admin
        .resume_projection(pb::ResumeProjectionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!resumed.already_running);
    assert_eq!(
        get_order(&mut query, "o-4", last).await.unwrap().order_id,
        "o-4"
    );
    let running = status(&mut query).await;
    assert!(!running.paused);
    eventually("ready again", WAIT, || async {
        (readiness(&replica).await == ServingStatus::Serving).then_some(())
    })
    .await;
    let twice = admin
        .resume_projection(pb::ResumeProjectionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(twice.already_running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_stopped_event_is_skipped_it_is_parked_kept_across_a_restart_and_retried() {
    // 2 cannot be read; 4 adds to an order not created yet (o-3 is created
    // at 5): it cannot be applied when it arrives, but can once 5 is, the
    // stand-in for an event a later build understands.
    let log = vec![
        created(1, "o-1"),
        unreadable(2, "o-9"),
        created(3, "o-2"),
        added(4, "o-3", 2),
        created(5, "o-3"),
    ];
    let endpoint = upstream(log).await;
    let dir = tempfile::tempdir().unwrap();
    let mut replica = replica(dir.path(), &endpoint, &["--metrics-listen", "127.0.0.1:0"]);
    let mut query = query_client(&replica).await;
    let mut admin = admin_client(&replica).await;

    let stopped = status_when(&query, "a stop at position 2", |s| s.stopped_position == 2).await;
    assert_eq!(stopped.applied_position, 1);
    assert!(
        stopped.error.contains("cannot be read"),
        "{}",
        stopped.error
    );

    // Bad requests change nothing.
    let not_it = skip(&mut admin, 3, "wrong one").await.unwrap_err();
    assert_eq!(not_it.code(), Code::FailedPrecondition);
    assert!(
        not_it.message().starts_with("position:"),
        "{}",
        not_it.message()
    );
    assert!(
        not_it.message().contains("stopped at position 2"),
        "{}",
        not_it.message()
    );
    let zero = skip(&mut admin, 0, "zero").await.unwrap_err();
    assert_eq!(zero.code(), Code::InvalidArgument);
    assert!(zero.message().contains("position"), "{}", zero.message());
    let no_reason = skip(&mut admin, 2, "  ").await.unwrap_err();
    assert_eq!(no_reason.code(), Code::InvalidArgument);
    assert!(
        no_reason.message().contains("reason"),
        "{}",
        no_reason.message()
    );
    let long = skip(&mut admin, 2, &"x".repeat(257)).await.unwrap_err();
    assert_eq!(long.code(), Code::InvalidArgument);
    let rebuild = admin
        .start_rebuild(pb::StartRebuildRequest {})
        .await
        .unwrap_err();
    assert_eq!(rebuild.code(), Code::FailedPrecondition);
    let unchanged = status(&mut query).await;
    assert_eq!(
        (unchanged.applied_position, unchanged.stopped_position),
        (1, 2)
    );
    assert_eq!((unchanged.parked_events, unchanged.skipped_events), (0, 0));

    let first = skip(&mut admin, 2, "an event type from a newer build")
        .await
        .unwrap();
    assert_eq!(first.position, 2);
    assert_eq!(first.reason, "an event type from a newer build");
    assert!(first.error.contains("cannot be read"), "{}", first.error);
    assert!(first.parked_at.is_some() && !first.auto_parked);
    assert_eq!(
        pb::EventEnvelope::decode(first.envelope.as_slice())
            .unwrap()
            .position,
        2
    );

    // Applying went on, up to the next event it cannot apply.
    let at_four = status_when(&query, "a stop at position 4", |s| s.stopped_position == 4).await;
    assert_eq!(at_four.applied_position, 3);
    assert!(
        at_four.error.contains("never seen created"),
        "{}",
        at_four.error
    );
    assert_eq!(get_order(&mut query, "o-2", 3).await.unwrap().version, 1);
    let gone = skip(&mut admin, 2, "again").await.unwrap_err();
    assert_eq!(gone.code(), Code::FailedPrecondition);
    assert!(
        gone.message().contains("stopped at position 4"),
        "{}",
        gone.message()
    );

    let second = skip(&mut admin, 4, "order not created yet").await.unwrap();
    assert_eq!(
        (second.order_id.as_str(), second.event_type.as_str()),
        ("o-3", "ItemAdded")
    );
    assert_eq!(get_order(&mut query, "o-3", 5).await.unwrap().version, 1);
    let after = status(&mut query).await;
    assert_eq!((after.applied_position, after.stopped_position), (5, 0));
    assert!(after.error.is_empty(), "{}", after.error);
    assert_eq!((after.parked_events, after.skipped_events), (2, 2));
    let metrics = scrape(metrics_addr(&replica).await).await;
    assert_eq!(
        sample(&metrics, "orders_projection_skipped_events_total"),
        Some(2.0)
    );
    // The admin RPCs are counted like the query RPCs, by method and outcome.
    assert_eq!(
        sample(
            &metrics,
            r#"orders_admin_rpcs_total{rpc="SkipEvent",outcome="OK"}"#
        ),
        Some(2.0)
    );
    assert!(
        sample(
            &metrics,
            r#"orders_admin_rpcs_total{rpc="SkipEvent",outcome="FAILED_PRECONDITION"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let parked_gauge = eventually("the parked gauge", WAIT, || async {
        let text = scrape(metrics_addr(&replica).await).await;
        sample(&text, "orders_projection_parked_events").filter(|v| *v == 2.0)
    })
    .await;
    assert_eq!(parked_gauge, 2.0);

    let list = parked(&mut admin).await;
    assert_eq!(list.total, 2);
    let positions: Vec<_> = list.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, [2, 4]);
    let page = admin
        .list_parked_events(pb::ListParkedEventsRequest {
            page_size: 1,
            after_position: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((page.events.len(), page.next_after_position), (1, 2));
    let unknown = admin
        .retry_parked_events(pb::RetryParkedEventsRequest { positions: vec![3] })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("position"),
        "{}",
        unknown.message()
    );

    // kill -9 and start again: parked events, skips and the checkpoint hold.
    replica.restart();
    let mut query = query_client(&replica).await;
    let mut admin = admin_client(&replica).await;
    let restarted = status_when(&query, "the replica back at 5", |s| s.applied_position == 5).await;
    assert_eq!((restarted.parked_events, restarted.skipped_events), (2, 2));
    assert_eq!(restarted.stopped_position, 0);
    assert_eq!(parked(&mut admin).await.events, list.events);

    // Retry: 4 now fits (o-3 exists at version 1), 2 still cannot be read.
    let retried = admin
        .retry_parked_events(pb::RetryParkedEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.applied_positions, [4]);
    assert_eq!(retried.still_parked.len(), 1);
    let still = &retried.still_parked[0];
    assert_eq!((still.position, still.retries), (2, 1));
    assert!(still.last_retry_at.is_some() && still.error.contains("cannot be read"));
    let o3 = get_order(&mut query, "o-3", 0).await.unwrap();
    assert_eq!((o3.version, o3.item_count), (2, 4));
    let now = status(&mut query).await;
    assert_eq!(
        (now.parked_events, now.skipped_events, now.applied_position),
        (1, 2, 5)
    );
    // Retrying it again applies nothing twice: it is no longer parked.
    let twice = admin
        .retry_parked_events(pb::RetryParkedEventsRequest { positions: vec![4] })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_stopped_applying_n_times_across_restarts_is_parked_automatically() {
    let log = vec![created(1, "o-1"), unreadable(2, "o-9"), created(3, "o-2")];
    let endpoint = upstream(log).await;
    let dir = tempfile::tempdir().unwrap();
    let mut replica = replica(
        dir.path(),
        &endpoint,
        &["--park-after-stops", "2", "--metrics-listen", "127.0.0.1:0"],
    );
    let query = query_client(&replica).await;
    let first = status_when(&query, "the first stop at 2", |s| s.stopped_position == 2).await;
    assert_eq!((first.applied_position, first.parked_events), (1, 0));

    // The second stop at the same position, after a restart: parked, and on.
    replica.restart();
    let mut query = query_client(&replica).await;
    let on = status_when(&query, "applying past 2", |s| s.applied_position == 3).await;
    assert_eq!(
        (on.parked_events, on.skipped_events, on.stopped_position),
        (1, 1, 0)
    );
    assert_eq!(get_order(&mut query, "o-2", 3).await.unwrap().version, 1);
    let mut admin = admin_client(&replica).await;
    let list = parked(&mut admin).await;
    assert_eq!(list.events.len(), 1);
    let event = &list.events[0];
    assert_eq!(event.position, 2);
    assert!(event.auto_parked);
    assert_eq!(event.reason, "auto-parked after 2 stops");
    assert!(replica
        .logs()
        .iter()
        .any(|l| l.contains("auto-parked after 2 stops")));
    let metrics = scrape(metrics_addr(&replica).await).await;
    assert_eq!(
        sample(&metrics, "orders_projection_auto_parked_total"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_started_while_serving_gives_the_same_answers_and_skips_parked_events_again() {
    let log = vec![
        created(1, "o-1"),
        unreadable(2, "o-9"),
        created(3, "o-2"),
        added(4, "o-1", 2),
    ];
    let endpoint = upstream(log).await;
    let dir = tempfile::tempdir().unwrap();
    let replica = replica(dir.path(), &endpoint, &[]);
    let mut query = query_client(&replica).await;
    let mut admin = admin_client(&replica).await;
    status_when(&query, "a stop at 2", |s| s.stopped_position == 2).await;
    skip(&mut admin, 2, "unknown event type").await.unwrap();
    status_when(&query, "everything applied", |s| s.applied_position == 4).await;
    let answers = |query: QueryClient| async move {
        let mut query = query;
        let o1 = get_order(&mut query, "o-1", 0).await.unwrap();
        let o2 = get_order(&mut query, "o-2", 0).await.unwrap();
        let recent = query
            .list_recent_orders(pb::ListRecentOrdersRequest::default())
            .await
            .unwrap()
            .into_inner();
        let analytics = query
            .get_order_analytics(pb::GetOrderAnalyticsRequest::default())
            .await
            .unwrap()
            .into_inner();
        (o1, o2, recent, analytics)
    };
    let before = answers(query.clone()).await;

    let started = admin
        .start_rebuild(pb::StartRebuildRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.served_position, 4);
    assert!(started.generation >= 2, "a new generation: {started:?}");
    let rebuilt = status_when(&query, "the rebuild to switch in", |s| {
        !s.rebuilding && s.skipped_events == 2
    })
    .await;
    // The parked event was skipped again (recorded), not stopping the rebuild.
    assert_eq!((rebuilt.applied_position, rebuilt.parked_events), (4, 1));
    assert_eq!(rebuilt.stopped_position, 0);
    assert_eq!(answers(query.clone()).await, before);
    assert!(replica
        .logs()
        .iter()
        .any(|l| l.contains("rebuild caught up")));
    assert_eq!(status(&mut query).await.applied_position, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_service_needs_the_admin_token_or_else_the_query_token() {
    let nowhere = ClosedPort::new();
    let dir = tempfile::tempdir().unwrap();
    let own = replica(
        &dir.path().join("own"),
        &nowhere.endpoint(),
        &["--auth-token", QUERY_TOKEN, "--admin-token", ADMIN_TOKEN],
    );
    let mut admin = admin_client(&own).await;
    let mut query = query_client(&own).await;
    // Reflection (open without a token) lists the admin service beside the query service.
    for version in ["v1", "v1alpha"] {
        let names = e2e::reflection::list_services(own.channel().await, version).await;
        for service in ["orders.v1.QueryService", "orders.v1.ProjectionAdminService"] {
            assert!(names.contains(&service.to_owned()), "{names:?}");
        }
    }
    let pause = |token: Option<&str>| bearer(pb::PauseProjectionRequest {}, token);
    for token in [None, Some(QUERY_TOKEN), Some("wrong")] {
        let refused = admin.pause_projection(pause(token)).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "token {token:?}");
    }
    admin
        .pause_projection(pause(Some(ADMIN_TOKEN)))
        .await
        .unwrap();
    let status = query
        .get_projection_status(bearer(pb::GetProjectionStatusRequest {}, Some(QUERY_TOKEN)))
        .await
        .unwrap()
        .into_inner();
    assert!(status.paused);
    let not_for_queries = query
        .get_projection_status(bearer(pb::GetProjectionStatusRequest {}, Some(ADMIN_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(not_for_queries.code(), Code::Unauthenticated);

    let shared_token = replica(
        &dir.path().join("shared"),
        &nowhere.endpoint(),
        &["--auth-token", QUERY_TOKEN],
    );
    let mut admin = admin_client(&shared_token).await;
    let refused = admin.pause_projection(pause(None)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    admin
        .pause_projection(pause(Some(QUERY_TOKEN)))
        .await
        .unwrap();
}

/// Orders written before the rebuild (`ADMIN_REBUILD_ORDERS` to run it long).
fn rebuild_orders() -> usize {
    std::env::var("ADMIN_REBUILD_ORDERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_started_under_live_traffic_switches_in_with_every_order() {
    const WRITERS: usize = 8;
    let orders = rebuild_orders();
    let dir = tempfile::tempdir().unwrap();
    let command = start_command_service(&dir.path().join("command"));
    let replica = replica(&dir.path().join("query"), &command.endpoint(), &[]);
    let commands = command_client(&command).await;
    let write = |from: usize, to: usize| {
        let commands = commands.clone();
        async move {
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let mut client = commands.clone();
                    tokio::spawn(async move {
                        let mut last = 0;
                        for i in (from + w..to).step_by(WRITERS) {
                            last = last.max(
                                client
                                    .create_order(pb::CreateOrderRequest {
                                        order_id: format!("o-{i}"),
                                        customer_id: format!("c-{}", i % 7),
                                        items: vec![item("apple", 1, 100)],
                                        ..Default::default()
                                    })
                                    .await
                                    .unwrap()
                                    .into_inner()
                                    .position,
                            );
                        }
                        last
                    })
                })
                .collect();
            let mut last = 0;
            for w in writers {
                last = last.max(w.await.unwrap());
            }
            last
        }
    };
    let before = write(0, orders).await;
    let mut query = query_client(&replica).await;
    get_order(&mut query, "o-0", before).await.unwrap();
    let mut admin = admin_client(&replica).await;

    let started_at = std::time::Instant::now();
    let started = admin
        .start_rebuild(pb::StartRebuildRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.served_position, before);
    // Commands go on while the rebuild runs; the served read models keep answering.
    let more = tokio::spawn(write(orders, orders + 200));
    let during = status(&mut query).await;
    assert_eq!(get_order(&mut query, "o-1", 0).await.unwrap().version, 1);
    let last = more.await.unwrap();
    let switched = status_when(&query, "the rebuild to switch in", |s| !s.rebuilding).await;
    let took = started_at.elapsed();
    assert!(switched.error.is_empty(), "{}", switched.error);
    assert!(replica
        .logs()
        .iter()
        .any(|l| l.contains("rebuild caught up")));
    // Every order, written before or during the rebuild, is answered.
    let analytics = query
        .get_order_analytics(pb::GetOrderAnalyticsRequest {
            min_position: last,
            top_n: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .analytics
        .unwrap();
    assert_eq!(analytics.total_orders, (orders + 200) as u64);
    for i in [0, orders / 2, orders - 1, orders + 199] {
        get_order(&mut query, &format!("o-{i}"), last)
            .await
            .unwrap();
    }
    println!(
        "rebuild of {before} events under live traffic: switched in after {took:?} \
         (status right after StartRebuild: rebuilding={}, rebuild_position={})",
        during.rebuilding, during.rebuild_position
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_the_stream_never_delivered_cannot_be_skipped_or_auto_parked() {
    // Position 2 is missing from the stream: there is no event to park.
    let endpoint = upstream(vec![created(1, "o-1"), created(3, "o-2")]).await;
    let dir = tempfile::tempdir().unwrap();
    let replica = replica(dir.path(), &endpoint, &["--park-after-stops", "1"]);
    let mut query = query_client(&replica).await;
    let mut admin = admin_client(&replica).await;
    let stopped = status_when(&query, "a stop at 2", |s| s.stopped_position == 2).await;
    assert!(
        stopped.error.contains("skipped from position 2 to 3"),
        "{}",
        stopped.error
    );
    let refused = skip(&mut admin, 2, "missing").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("nothing to park"),
        "{}",
        refused.message()
    );
    let after = status(&mut query).await;
    assert_eq!((after.applied_position, after.stopped_position), (1, 2));
    assert_eq!((after.parked_events, after.skipped_events), (0, 0));
}
