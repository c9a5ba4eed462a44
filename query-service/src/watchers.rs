//! Who is watching which order. The applier hands every committed row to the
//! watchers of its order; a watcher that cannot keep up is dropped (its stream
//! ends with an error) rather than ever slowing the applier or missing a change
//! silently.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use crate::order_row::OrderRow;

/// Changes a watcher may have pending before it counts as too slow.
const WATCHER_CAPACITY: usize = 1024;

type Senders = HashMap<String, Vec<(u64, mpsc::Sender<Arc<OrderRow>>)>>;

#[derive(Default)]
pub struct Watchers {
    next_id: AtomicU64,
    senders: Mutex<Senders>,
}

/// Removes its watcher when dropped.
pub struct Registration {
    watchers: Arc<Watchers>,
    order_id: String,
    id: u64,
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Senders> {
        self.senders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts receiving every change of `order_id` committed from now on.
    /// Register before reading the current view, so no change falls in between.
    pub fn register(
        self: &Arc<Self>,
        order_id: &str,
    ) -> (Registration, mpsc::Receiver<Arc<OrderRow>>) {
        let (tx, rx) = mpsc::channel(WATCHER_CAPACITY);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(order_id.to_owned())
            .or_default()
            .push((id, tx));
        let registration = Registration {
            watchers: Arc::clone(self),
            order_id: order_id.to_owned(),
            id,
        };
        (registration, rx)
    }

    /// Hands each committed row (in position order) to the watchers of its order.
    pub fn notify(&self, rows: &[OrderRow]) {
        let mut senders = self.lock();
        if senders.is_empty() {
            return;
        }
        for row in rows {
            let Some(list) = senders.get_mut(&row.order_id) else {
                continue;
            };
            let row = Arc::new(row.clone());
            // A full or closed channel drops the watcher: its receiver then ends.
            list.retain(|(_, tx)| tx.try_send(Arc::clone(&row)).is_ok());
            if list.is_empty() {
                senders.remove(&row.order_id);
            }
        }
    }

    pub fn count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut senders = self.watchers.lock();
        if let Some(list) = senders.get_mut(&self.order_id) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                senders.remove(&self.order_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use shared::domain::{OrderStatus, Timestamp};

    use super::*;

    fn row(order_id: &str, position: u64) -> OrderRow {
        OrderRow {
            order_id: order_id.to_owned(),
            customer_id: "c".to_owned(),
            status: OrderStatus::Draft,
            lines: Vec::new(),
            total_cents: 0,
            item_count: 0,
            currency: "USD".to_owned(),
            version: position,
            last_position: position,
            created_position: 1,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            placed_at: None,
            shipped_at: None,
            cancelled_at: None,
            carrier: String::new(),
            tracking_number: String::new(),
            cancel_reason: String::new(),
        }
    }

    #[test]
    fn watchers_get_their_order_in_order_and_leave_cleanly() {
        let watchers = Arc::new(Watchers::default());
        let (registration, mut rx) = watchers.register("a");
        watchers.notify(&[row("a", 1), row("b", 2), row("a", 3)]);
        assert_eq!(rx.try_recv().unwrap().last_position, 1);
        assert_eq!(rx.try_recv().unwrap().last_position, 3);
        assert!(rx.try_recv().is_err());
        drop(registration);
        assert_eq!(watchers.count(), 0);
    }

    #[test]
    fn a_watcher_that_falls_behind_is_dropped_not_waited_for() {
        let watchers = Arc::new(Watchers::default());
        let (_registration, mut rx) = watchers.register("a");
        let rows: Vec<_> = (1..=WATCHER_CAPACITY as u64 + 1)
            .map(|p| row("a", p))
            .collect();
        watchers.notify(&rows);
        assert_eq!(watchers.count(), 0);
        let mut received = 0;
        while rx.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, WATCHER_CAPACITY);
    }
}
