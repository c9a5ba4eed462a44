//! Whole-read-side snapshots: every answer a replica gives about the model's
//! orders, to compare replicas with each other and with the model.

use std::collections::{BTreeMap, BTreeSet};

use crate::clients::QueryClient;
use crate::model::Model;
use crate::pb;
use crate::queries::{get_orders, walk, List};
use pb::OrderStatus as S;

/// Every answer the query side gives about the workload's orders.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadSnapshot {
    pub views: Vec<pb::OrderView>,
    pub analytics: pb::OrderAnalytics,
    pub recent: Vec<pb::OrderSummary>,
    /// ListRecentOrders filtered by each status, Draft..Cancelled.
    pub by_status: Vec<Vec<pb::OrderSummary>>,
    pub by_customer: BTreeMap<String, Vec<pb::OrderSummary>>,
}

impl Model {
    /// Reads every answer about the model's orders from `query`, once it has
    /// applied everything the model acknowledged.
    pub async fn read_snapshot(&self, query: &QueryClient) -> ReadSnapshot {
        let ids: Vec<String> = self.orders.keys().cloned().collect();
        let views = get_orders(query, &ids, self.max_position).await;
        let analytics = query
            .clone()
            .get_order_analytics(pb::GetOrderAnalyticsRequest {
                min_position: self.max_position,
                top_n: 1000,
            })
            .await
            .expect("GetOrderAnalytics")
            .into_inner()
            .analytics
            .expect("analytics");
        let recent = walk(query, List::Recent(0), 37, self.max_position).await;
        let mut by_status = Vec::new();
        for status in [S::Draft, S::Placed, S::Shipped, S::Cancelled] {
            by_status.push(walk(query, List::Recent(status as i32), 50, self.max_position).await);
        }
        let mut by_customer = BTreeMap::new();
        let customers: BTreeSet<_> = self
            .orders
            .values()
            .map(|o| o.customer_id.clone())
            .collect();
        for customer in customers {
            let orders = walk(query, List::Customer(&customer), 4, self.max_position).await;
            by_customer.insert(customer, orders);
        }
        ReadSnapshot {
            views,
            analytics,
            recent,
            by_status,
            by_customer,
        }
    }

    /// Checks the lists in `snapshot` hold exactly the model's orders, newest first.
    pub fn assert_lists(&self, snapshot: &ReadSnapshot) {
        let mut listed: Vec<_> = snapshot.recent.iter().map(|o| o.order_id.clone()).collect();
        assert_eq!(listed.len(), self.orders.len(), "ListRecentOrders length");
        listed.sort();
        assert!(
            listed.iter().eq(self.orders.keys()),
            "ListRecentOrders holds every order once"
        );
        let created: Vec<_> = snapshot
            .recent
            .iter()
            .map(|o| {
                let t = o.created_at.expect("created_at");
                (t.seconds, t.nanos)
            })
            .collect();
        assert!(
            created.windows(2).all(|w| w[0] >= w[1]),
            "newest created first"
        );
        for (i, status) in [S::Draft, S::Placed, S::Shipped, S::Cancelled]
            .iter()
            .enumerate()
        {
            let expected = self.orders.values().filter(|o| o.status == *status).count();
            assert_eq!(
                snapshot.by_status[i].len(),
                expected,
                "orders listed as {status:?}"
            );
            assert!(snapshot.by_status[i]
                .iter()
                .all(|o| o.status == *status as i32));
        }
        for (customer, orders) in &snapshot.by_customer {
            let expected = self
                .orders
                .values()
                .filter(|o| &o.customer_id == customer)
                .count();
            assert_eq!(orders.len(), expected, "orders of {customer}");
            assert!(orders.iter().all(|o| &o.customer_id == customer));
        }
    }
}
