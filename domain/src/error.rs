//! What can go wrong with a command: a malformed request, or a refusal by the aggregate.

use std::fmt;

/// A request field that does not satisfy the contract. Always names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field path as a client spells it, e.g. `items[2].sku`.
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why the aggregate refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("order not found")]
    NotFound,
    #[error("order already exists")]
    AlreadyExists,
    #[error("expected version {expected}, but the order is at version {actual}")]
    VersionConflict { expected: u64, actual: u64 },
    #[error("{0}")]
    Rule(Rule),
}

impl From<Rule> for DomainError {
    fn from(rule: Rule) -> Self {
        DomainError::Rule(rule)
    }
}

/// A business rule that forbids a command in the order's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Items can only be added or removed while the order is Draft.
    ItemsOnlyWhileDraft,
    /// Only a Draft order can be placed.
    PlaceOnlyDraft,
    /// An order with no items cannot be placed.
    PlaceEmptyOrder,
    /// Only a Placed order can be shipped.
    ShipOnlyPlaced,
    /// Shipped and Cancelled orders cannot be cancelled.
    CancelOnlyDraftOrPlaced,
    /// At most `MAX_LINES` distinct lines per order.
    TooManyLines,
    /// At most `MAX_LINE_QUANTITY` units per line.
    LineQuantityLimit,
    /// The order total may not exceed `MAX_TOTAL_CENTS`.
    TotalLimit,
    /// The sku is not in the order.
    SkuNotInOrder,
    /// Removing more units than the line holds.
    RemoveMoreThanLine,
    /// A line with that sku already has another unit price.
    PriceMismatch,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use super::lines::{MAX_LINES, MAX_LINE_QUANTITY, MAX_TOTAL_CENTS};
        match self {
            Rule::ItemsOnlyWhileDraft => {
                write!(
                    f,
                    "items can only be added or removed while the order is Draft"
                )
            }
            Rule::PlaceOnlyDraft => write!(f, "only a Draft order can be placed"),
            Rule::PlaceEmptyOrder => write!(f, "an order with no items cannot be placed"),
            Rule::ShipOnlyPlaced => write!(f, "only a Placed order can be shipped"),
            Rule::CancelOnlyDraftOrPlaced => {
                write!(f, "only a Draft or Placed order can be cancelled")
            }
            Rule::TooManyLines => write!(f, "an order has at most {MAX_LINES} distinct lines"),
            Rule::LineQuantityLimit => {
                write!(f, "a line holds at most {MAX_LINE_QUANTITY} units")
            }
            Rule::TotalLimit => {
                write!(f, "the order total may not exceed {MAX_TOTAL_CENTS} cents")
            }
            Rule::SkuNotInOrder => write!(f, "the order has no line with that sku"),
            Rule::RemoveMoreThanLine => {
                write!(f, "cannot remove more units than the line holds")
            }
            Rule::PriceMismatch => write!(
                f,
                "the order already has a line with that sku at another unit price"
            ),
        }
    }
}
