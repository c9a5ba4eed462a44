//! The gRPC layer: unpacks requests, waits for `min_position`, reads the store,
//! and converts rows to proto. No business logic here.

use std::sync::Arc;
use std::time::Duration;

use shared::convert::{order_status_from_proto, timestamp_to_proto};
use shared::domain::{CustomerId, OrderId};
use shared::proto as pb;
use shared::proto::query_service_server::QueryService;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::deadline::wait_deadline;
use crate::error::QueryError;
use crate::page_token::{self, Scope};
use crate::read_models::analytics::{self, AnalyticsReport};
use crate::read_models::order_lists::{self, Page, SummaryRow};
use crate::read_models::order_view::{self, OrderRow};
use crate::status::ProjectionStatus;
use crate::store::Store;
use crate::watchers::Watchers;

const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 500;
const DEFAULT_TOP_N: usize = 10;
/// Messages a `WatchOrder` client may leave unread before its task waits.
const WATCH_STREAM_BUFFER: usize = 16;

#[derive(Clone)]
pub struct QueryApi {
    pub store: Arc<Store>,
    pub status: Arc<ProjectionStatus>,
    pub watchers: Arc<Watchers>,
    /// The longest a `min_position` wait may take when the client sets no deadline.
    pub max_wait: Duration,
    pub shutdown: watch::Receiver<bool>,
}

fn page_size(requested: u32) -> usize {
    match usize::try_from(requested).unwrap_or(MAX_PAGE_SIZE) {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

pub fn view_to_proto(row: &OrderRow) -> pb::OrderView {
    pb::OrderView {
        order_id: row.order_id.clone(),
        customer_id: row.customer_id.clone(),
        status: pb::OrderStatus::from(row.status) as i32,
        lines: row
            .lines
            .iter()
            .map(|l| pb::OrderLine {
                sku: l.sku.as_str().to_owned(),
                quantity: l.quantity,
                unit_price_cents: l.unit_price_cents,
                line_total_cents: i64::try_from(l.total_cents()).unwrap_or(i64::MAX),
            })
            .collect(),
        total_cents: row.total_cents,
        item_count: row.item_count,
        currency: row.currency.clone(),
        version: row.version,
        last_position: row.last_position,
        created_at: Some(timestamp_to_proto(row.created_at)),
        updated_at: Some(timestamp_to_proto(row.updated_at)),
        placed_at: row.placed_at.map(timestamp_to_proto),
        shipped_at: row.shipped_at.map(timestamp_to_proto),
        cancelled_at: row.cancelled_at.map(timestamp_to_proto),
        carrier: row.carrier.clone(),
        tracking_number: row.tracking_number.clone(),
        cancel_reason: row.cancel_reason.clone(),
    }
}

fn order_summary(row: SummaryRow) -> pb::OrderSummary {
    pb::OrderSummary {
        order_id: row.order_id,
        customer_id: row.customer_id,
        status: pb::OrderStatus::from(row.status) as i32,
        total_cents: row.total_cents,
        item_count: row.item_count,
        created_at: Some(timestamp_to_proto(row.created_at)),
    }
}

fn analytics_to_proto(report: AnalyticsReport) -> pb::OrderAnalytics {
    pb::OrderAnalytics {
        total_orders: report.total_orders,
        draft_orders: report.draft_orders,
        placed_orders: report.placed_orders,
        shipped_orders: report.shipped_orders,
        cancelled_orders: report.cancelled_orders,
        placed_revenue_cents: report.placed_revenue_cents,
        average_order_value_cents: report.average_order_value_cents,
        top_products: report
            .top_products
            .into_iter()
            .map(|(sku, quantity, revenue_cents)| pb::ProductStat {
                sku,
                quantity,
                revenue_cents,
            })
            .collect(),
        daily: report
            .daily
            .into_iter()
            .map(|(date, orders_placed, revenue_cents)| pb::DailyStat {
                date,
                orders_placed,
                revenue_cents,
            })
            .collect(),
    }
}

impl QueryApi {
    /// Read-your-writes: returns once `min_position` is applied (0: at once).
    async fn caught_up<T>(
        &self,
        request: &Request<T>,
        min_position: u64,
    ) -> Result<(), QueryError> {
        if min_position == 0 {
            return Ok(());
        }
        let deadline = wait_deadline(request.metadata(), self.max_wait);
        self.status
            .wait_for(min_position, deadline, self.shutdown.clone())
            .instrument(tracing::info_span!("min_position_wait", min_position))
            .await
    }

    fn page_response(page: Page, scope: Scope<'_>) -> (Vec<pb::OrderSummary>, String) {
        let orders = page.rows.into_iter().map(order_summary).collect();
        let token = page
            .next_cursor
            .map(|cursor| page_token::encode(scope, cursor))
            .unwrap_or_default();
        (orders, token)
    }
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let req = request.get_ref();
        let order_id = OrderId::parse("order_id", &req.order_id).map_err(QueryError::from)?;
        self.caught_up(&request, req.min_position).await?;
        let generation = self.store.active();
        let views = generation
            .read(&order_view::MODEL)
            .map_err(QueryError::from)?;
        let row = order_view::get(views, order_id.as_str())
            .map_err(QueryError::from)?
            .ok_or_else(|| QueryError::NotFound(order_id.to_string()))?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(view_to_proto(&row)),
        }))
    }

    async fn list_recent_orders(
        &self,
        request: Request<pb::ListRecentOrdersRequest>,
    ) -> Result<Response<pb::ListRecentOrdersResponse>, Status> {
        let req = request.get_ref();
        let status = match req.status {
            0 => None,
            value => Some(order_status_from_proto("status", value).map_err(QueryError::from)?),
        };
        let scope = Scope::Recent { status: req.status };
        let cursor = page_token::decode(scope, &req.page_token).map_err(QueryError::from)?;
        self.caught_up(&request, req.min_position).await?;
        let generation = self.store.active();
        let lists = generation
            .read(&order_lists::MODEL)
            .map_err(QueryError::from)?;
        let page = order_lists::recent_page(lists, status, cursor, page_size(req.page_size))
            .map_err(QueryError::from)?;
        let (orders, next_page_token) = Self::page_response(page, scope);
        Ok(Response::new(pb::ListRecentOrdersResponse {
            orders,
            next_page_token,
        }))
    }

    async fn list_customer_orders(
        &self,
        request: Request<pb::ListCustomerOrdersRequest>,
    ) -> Result<Response<pb::ListCustomerOrdersResponse>, Status> {
        let req = request.get_ref();
        let customer_id =
            CustomerId::parse("customer_id", &req.customer_id).map_err(QueryError::from)?;
        let scope = Scope::Customer {
            customer_id: customer_id.as_str(),
        };
        let cursor = page_token::decode(scope, &req.page_token).map_err(QueryError::from)?;
        self.caught_up(&request, req.min_position).await?;
        let generation = self.store.active();
        let lists = generation
            .read(&order_lists::MODEL)
            .map_err(QueryError::from)?;
        let page = order_lists::customer_page(
            lists,
            customer_id.as_str(),
            cursor,
            page_size(req.page_size),
        )
        .map_err(QueryError::from)?;
        let (orders, next_page_token) = Self::page_response(page, scope);
        Ok(Response::new(pb::ListCustomerOrdersResponse {
            orders,
            next_page_token,
        }))
    }

    async fn get_order_analytics(
        &self,
        request: Request<pb::GetOrderAnalyticsRequest>,
    ) -> Result<Response<pb::GetOrderAnalyticsResponse>, Status> {
        let req = request.get_ref();
        let top_n = match usize::try_from(req.top_n).unwrap_or(usize::MAX) {
            0 => DEFAULT_TOP_N,
            n => n,
        };
        self.caught_up(&request, req.min_position).await?;
        let generation = self.store.active();
        let stats = generation
            .read(&analytics::MODEL)
            .map_err(QueryError::from)?;
        let report = analytics::report(stats, top_n).map_err(QueryError::from)?;
        Ok(Response::new(pb::GetOrderAnalyticsResponse {
            analytics: Some(analytics_to_proto(report)),
        }))
    }

    type WatchOrderStream = ReceiverStream<Result<pb::WatchOrderResponse, Status>>;

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let order_id =
            OrderId::parse("order_id", &request.get_ref().order_id).map_err(QueryError::from)?;
        // Register first: a change committed after this point reaches `changes`,
        // one committed before it is in the view read next.
        let (registration, mut changes) = self.watchers.register(order_id.as_str()).await;
        let generation = self.store.active();
        let views = generation
            .read(&order_view::MODEL)
            .map_err(QueryError::from)?;
        let current = order_view::get(views, order_id.as_str())
            .map_err(QueryError::from)?
            .ok_or_else(|| QueryError::NotFound(order_id.to_string()))?;
        let (tx, rx) = mpsc::channel(WATCH_STREAM_BUFFER);
        let mut shutdown = self.shutdown.clone();
        // A child of the request's span that lasts as long as the stream.
        let span = tracing::info_span!("watch_order", order_id = %order_id);
        let forward = async move {
            let _registration = registration;
            let mut last_position = current.last_position;
            let first = pb::WatchOrderResponse {
                order: Some(view_to_proto(&current)),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                let change = tokio::select! {
                    change = changes.recv() => change,
                    () = tx.closed() => return,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                };
                let Some(row) = change else {
                    let _ = tx.send(Err(QueryError::WatchLagged.into())).await;
                    return;
                };
                // The view read at the start may already include a change that
                // was also queued; positions tell them apart.
                if row.last_position <= last_position {
                    continue;
                }
                last_position = row.last_position;
                let message = pb::WatchOrderResponse {
                    order: Some(view_to_proto(&row)),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        };
        tokio::spawn(forward.instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_projection_status(
        &self,
        _request: Request<pb::GetProjectionStatusRequest>,
    ) -> Result<Response<pb::GetProjectionStatusResponse>, Status> {
        let p = self.status.snapshot();
        Ok(Response::new(pb::GetProjectionStatusResponse {
            applied_position: p.applied_position,
            head_position: p.head_position,
            lag: p.head_position.saturating_sub(p.applied_position),
            connected: p.connected,
            last_applied_at: p.last_applied_at.map(timestamp_to_proto),
            stopped_position: p.stopped.as_ref().map_or(0, |s| s.position),
            error: p
                .stopped
                .map(|s| format!("stopped at position {}: {}", s.position, s.error))
                .unwrap_or_default(),
            paused: p.paused,
            parked_events: p.parked,
            skipped_events: p.skipped,
            rebuilding: p.rebuild_position.is_some(),
            rebuild_position: p.rebuild_position.unwrap_or(0),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_and_clamp() {
        assert_eq!(page_size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(10_000), MAX_PAGE_SIZE);
    }
}
