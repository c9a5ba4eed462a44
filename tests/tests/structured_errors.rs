//! Errors a generated client can branch on without parsing text, through the
//! real binaries: `google.rpc.BadRequest` naming the field on
//! INVALID_ARGUMENT, `google.rpc.ErrorInfo` with the order's current version on
//! ABORTED, and the messages unchanged beside them.

use e2e::{command_client, item, pb, query_client, start_command_service, start_query_service};
use tempfile::TempDir;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The one field violation of an INVALID_ARGUMENT status: (field, description).
fn violation(status: &Status) -> (String, String) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.check_error_details().expect("details decode");
    let bad_request = details.bad_request().expect("a BadRequest detail");
    assert_eq!(bad_request.field_violations.len(), 1, "{bad_request:?}");
    let v = &bad_request.field_violations[0];
    (v.field.clone(), v.description.clone())
}

fn create(order_id: &str) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        order_id: order_id.into(),
        customer_id: "cust-1".into(),
        items: vec![item("apple", 1, 50)],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_command_names_its_field_in_a_bad_request() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut client = command_client(&svc).await;
    client.create_order(create("o-1")).await.unwrap();

    let status = client
        .add_item(pb::AddItemRequest {
            order_id: "o-1".into(),
            item: Some(item("fig", 0, 10)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.message(), "item.quantity: must be at least 1");
    assert_eq!(
        violation(&status),
        ("item.quantity".into(), "must be at least 1".into())
    );

    let status = client
        .create_order(pb::CreateOrderRequest {
            items: vec![item("apple", 1, 50), item("bad sku", 1, 50)],
            ..create("o-2")
        })
        .await
        .unwrap_err();
    assert_eq!(violation(&status).0, "items[1].sku");

    // A command_id reused for another request is the caller's mistake too.
    let keyed = |order_id: &str| pb::CreateOrderRequest {
        command_id: "key-1".into(),
        ..create(order_id)
    };
    client.create_order(keyed("o-3")).await.unwrap();
    let status = client.create_order(keyed("o-4")).await.unwrap_err();
    assert!(status.message().starts_with("command_id: "), "{status:?}");
    assert_eq!(violation(&status).0, "command_id");

    let status = client
        .list_order_events(pb::ListOrderEventsRequest {
            order_id: "o-1".into(),
            page_token: "nonsense".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violation(&status).0, "page_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_conflict_carries_the_current_version_in_an_error_info() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut client = command_client(&svc).await;
    client.create_order(create("o-1")).await.unwrap();
    client
        .add_item(pb::AddItemRequest {
            order_id: "o-1".into(),
            item: Some(item("pear", 1, 10)),
            ..Default::default()
        })
        .await
        .unwrap();

    let status = client
        .place_order(pb::PlaceOrderRequest {
            order_id: "o-1".into(),
            expected_version: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(
        status.message(),
        "expected_version 1 does not match the current version 2 of the order"
    );
    let details = status.check_error_details().expect("details decode");
    let info = details.error_info().expect("an ErrorInfo detail");
    assert_eq!(info.reason, "VERSION_CONFLICT");
    assert_eq!(info.domain, "orders.v1");
    assert_eq!(info.metadata["current_version"], "2");
    assert_eq!(info.metadata["expected_version"], "1");
    assert_eq!(info.metadata["order_id"], "o-1");

    // The client branches on it: retry at the current version.
    let current: u64 = info.metadata["current_version"].parse().unwrap();
    let placed = client
        .place_order(pb::PlaceOrderRequest {
            order_id: "o-1".into(),
            expected_version: Some(current),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(placed.version, 3);

    // Refusals that are not the caller's field or a conflict carry no details.
    let status = client
        .add_item(pb::AddItemRequest {
            order_id: "o-1".into(),
            item: Some(item("fig", 1, 10)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.details().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_query_names_its_field_in_a_bad_request() {
    let dir = TempDir::new().unwrap();
    let command = start_command_service(&dir.path().join("command"));
    let query_svc = start_query_service(&dir.path().join("query"), &command.endpoint());
    let mut query = query_client(&query_svc).await;

    let status = query
        .list_recent_orders(pb::ListRecentOrdersRequest {
            page_token: "nonsense".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(status.message().starts_with("page_token: "), "{status:?}");
    assert_eq!(violation(&status).0, "page_token");

    let status = query
        .get_order(pb::GetOrderRequest {
            order_id: "a b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violation(&status).0, "order_id");
}
