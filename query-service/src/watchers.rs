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
//!
//! Open watches are bounded per order and in total (`--max-watchers-per-order`,
//! `--max-watchers`): `admit` hands out a place before a watch starts, or says
//! which limit is reached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, RwLock, RwLockWriteGuard};

use crate::read_models::order_view::OrderRow;

/// Changes a watcher may have pending before it counts as too slow.
const WATCHER_CAPACITY: usize = 1024;
/// Default of `--max-watchers-per-order`.
pub const DEFAULT_MAX_PER_ORDER: u64 = 16;
/// Default of `--max-watchers`.
pub const DEFAULT_MAX_TOTAL: u64 = 10_000;

type Senders = HashMap<String, Vec<(u64, mpsc::Sender<Arc<OrderRow>>)>>;

pub struct Watchers {
    next_id: AtomicU64,
    senders: Mutex<Senders>,
    /// Read to register, written by the applier for the whole of a batch.
    registrations: RwLock<()>,
    limits: WatchLimits,
    /// Watches admitted and not yet ended, per order.
    admitted: Mutex<Admitted>,
}

/// How many watches may be open on one order and in total.
#[derive(Debug, Clone, Copy)]
pub struct WatchLimits {
    pub per_order: usize,
    pub total: usize,
}

#[derive(Default)]
struct Admitted {
    total: usize,
    per_order: HashMap<String, usize>,
}

/// Why a watch was not admitted; the text names the limit and its flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchLimitReached {
    #[error(
        "too many WatchOrder streams on order {order_id}: at most {max} per order \
         (--max-watchers-per-order)"
    )]
    PerOrder { order_id: String, max: usize },
    #[error("too many WatchOrder streams: at most {max} open in total (--max-watchers)")]
    Total { max: usize },
}

/// An admitted watch's place under the limits, given back when dropped.
pub struct WatchSlot {
    watchers: Arc<Watchers>,
    order_id: String,
}

impl Default for Watchers {
    fn default() -> Self {
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Watchers::new(WatchLimits {
            per_order: count(DEFAULT_MAX_PER_ORDER),
            total: count(DEFAULT_MAX_TOTAL),
        })
    }
}

/// Removes its watcher when dropped.
pub struct Registration {
    watchers: Arc<Watchers>,
    order_id: String,
    id: u64,
}

impl Watchers {
    pub fn new(limits: WatchLimits) -> Self {
        Watchers {
            next_id: AtomicU64::new(0),
            senders: Mutex::default(),
            registrations: RwLock::new(()),
            limits,
            admitted: Mutex::default(),
        }
    }

    /// A place for one more watch of `order_id`, unless a limit is reached.
    pub fn admit(self: &Arc<Self>, order_id: &str) -> Result<WatchSlot, WatchLimitReached> {
        let mut admitted = self.admitted.lock().unwrap_or_else(PoisonError::into_inner);
        if admitted.total >= self.limits.total {
            return Err(WatchLimitReached::Total {
                max: self.limits.total,
            });
        }
        let on_order = admitted.per_order.get(order_id).copied().unwrap_or(0);
        if on_order >= self.limits.per_order {
            return Err(WatchLimitReached::PerOrder {
                order_id: order_id.to_owned(),
                max: self.limits.per_order,
            });
        }
        admitted.total += 1;
        admitted.per_order.insert(order_id.to_owned(), on_order + 1);
        Ok(WatchSlot {
            watchers: Arc::clone(self),
            order_id: order_id.to_owned(),
        })
    }

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

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut admitted = self
            .watchers
            .admitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        admitted.total -= 1;
        if let Some(n) = admitted.per_order.get_mut(&self.order_id) {
            *n -= 1;
            if *n == 0 {
                admitted.per_order.remove(&self.order_id);
            }
        }
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

    #[test]
    fn watches_are_admitted_up_to_the_limits_per_order_and_in_total() {
        let watchers = Arc::new(Watchers::new(WatchLimits {
            per_order: 2,
            total: 3,
        }));
        let a1 = watchers.admit("a").unwrap();
        let _a2 = watchers.admit("a").unwrap();
        let per_order = watchers.admit("a").err().unwrap();
        assert!(per_order.to_string().contains("--max-watchers-per-order"));
        let _b1 = watchers.admit("b").unwrap();
        let total = watchers.admit("c").err().unwrap();
        assert_eq!(total, WatchLimitReached::Total { max: 3 });
        assert!(total.to_string().contains("--max-watchers"));
        drop(a1);
        assert!(watchers.admit("a").is_ok(), "a place is given back on drop");
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
