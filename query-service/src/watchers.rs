//! Who is watching which order. The applier hands every committed row to the
//! watchers of its order; a watcher that cannot keep up is dropped (its stream
//! ends with an error) rather than ever slowing the applier or missing a change
//! silently.
//!
//! The applier keeps the row after each event only for the orders watched when
//! its batch starts (`is_watched`); copying every row of a catch-up for nobody
//! costs about a tenth of the applier's CPU. So that a watcher registered
//! meanwhile cannot miss a change, registering waits while a batch is applied
//! (`hold_registrations`): a watcher is either known to the batch or reads its
//! first view after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, RwLock, RwLockWriteGuard};

use crate::read_models::order_view::OrderRow;

/// Changes a watcher may have pending before it counts as too slow.
const WATCHER_CAPACITY: usize = 1024;

type Senders = HashMap<String, Vec<(u64, mpsc::Sender<Arc<OrderRow>>)>>;

#[derive(Default)]
pub struct Watchers {
    next_id: AtomicU64,
    senders: Mutex<Senders>,
    /// Read to register, written by the applier for the whole of a batch.
    registrations: RwLock<()>,
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
    /// Waits while a batch is being applied.
    pub async fn register(
        self: &Arc<Self>,
        order_id: &str,
    ) -> (Registration, mpsc::Receiver<Arc<OrderRow>>) {
        let _open = self.registrations.read().await;
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

    /// Keeps new watchers out until the guard is dropped: held by the applier
    /// from before it asks `is_watched` until after it has called `notify`.
    pub async fn hold_registrations(&self) -> RwLockWriteGuard<'_, ()> {
        self.registrations.write().await
    }

    /// Whether anyone watches `order_id` (for the applier, inside `hold_registrations`).
    pub fn is_watched(&self, order_id: &str) -> bool {
        self.lock().contains_key(order_id)
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
    use super::*;

    fn row(order_id: &str, position: u64) -> OrderRow {
        OrderRow {
            order_id: order_id.to_owned(),
            version: position,
            last_position: position,
            ..OrderRow::default()
        }
    }

    #[tokio::test]
    async fn watchers_get_their_order_in_order_and_leave_cleanly() {
        let watchers = Arc::new(Watchers::default());
        let (registration, mut rx) = watchers.register("a").await;
        assert!(watchers.is_watched("a") && !watchers.is_watched("b"));
        watchers.notify(&[row("a", 1), row("b", 2), row("a", 3)]);
        assert_eq!(rx.try_recv().unwrap().last_position, 1);
        assert_eq!(rx.try_recv().unwrap().last_position, 3);
        assert!(rx.try_recv().is_err());
        drop(registration);
        assert_eq!(watchers.count(), 0);
    }

    #[tokio::test]
    async fn registering_waits_while_a_batch_is_applied() {
        let watchers = Arc::new(Watchers::default());
        let batch = watchers.hold_registrations().await;
        let registering = tokio::spawn({
            let watchers = Arc::clone(&watchers);
            async move { watchers.register("a").await }
        });
        tokio::task::yield_now().await;
        assert!(!watchers.is_watched("a"), "registered during a batch");
        drop(batch);
        let _registered = registering.await.unwrap();
        assert!(watchers.is_watched("a"));
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_dropped_not_waited_for() {
        let watchers = Arc::new(Watchers::default());
        let (_registration, mut rx) = watchers.register("a").await;
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
