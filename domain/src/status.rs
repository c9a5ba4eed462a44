//! An order's status and what each status allows: the state machine
//! Draft -> Placed -> Shipped, with Cancelled reachable from Draft and Placed.

use serde::{Deserialize, Serialize};

use super::error::Rule;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    Draft,
    Placed,
    Shipped,
    Cancelled,
}

impl OrderStatus {
    /// Items can be added or removed only while Draft.
    pub fn check_item_change(self) -> Result<(), Rule> {
        require(self == OrderStatus::Draft, Rule::ItemsOnlyWhileDraft)
    }

    /// Only a Draft can be placed.
    pub fn check_place(self) -> Result<(), Rule> {
        require(self == OrderStatus::Draft, Rule::PlaceOnlyDraft)
    }

    /// Only a Placed order can be shipped.
    pub fn check_ship(self) -> Result<(), Rule> {
        require(self == OrderStatus::Placed, Rule::ShipOnlyPlaced)
    }

    /// Only a Draft or a Placed order can be cancelled.
    pub fn check_cancel(self) -> Result<(), Rule> {
        let allowed = matches!(self, OrderStatus::Draft | OrderStatus::Placed);
        require(allowed, Rule::CancelOnlyDraftOrPlaced)
    }
}

fn require(allowed: bool, rule: Rule) -> Result<(), Rule> {
    if allowed {
        Ok(())
    } else {
        Err(rule)
    }
}
