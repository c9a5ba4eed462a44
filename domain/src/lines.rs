//! An order's lines and the rules that change them: an item joins the line with
//! its sku (at the same unit price) or opens a new one; removing takes units from
//! a line and drops the line when none are left. Pure functions over a
//! `Vec<Line>`, so that any copy of an order's lines (the aggregate's, a read
//! model's) changes the same way.

use serde::{Deserialize, Serialize};

use super::error::Rule;
use super::values::Sku;

/// At most this many distinct lines per order.
pub const MAX_LINES: usize = 100;
/// At most this many units in one line.
pub const MAX_LINE_QUANTITY: u32 = 10_000;
/// The largest order total, in cents (10^12).
pub const MAX_TOTAL_CENTS: i64 = 1_000_000_000_000;

/// One line of an order: a sku, how many, and the price of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: Sku,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

impl Line {
    /// `quantity * unit_price_cents`; cannot overflow for validated values.
    pub fn total_cents(&self) -> i128 {
        i128::from(self.quantity) * i128::from(self.unit_price_cents)
    }
}

/// What `remove_item` took from a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Units removed.
    pub quantity: u32,
    pub unit_price_cents: i64,
    /// Units the line holds afterwards; 0: the line is gone.
    pub line_quantity: u32,
}

/// Adds `item`: raises the quantity of the line with its sku, which must have
/// the same unit price, or opens a new line. Returns the line's quantity
/// afterwards. Checks the line rules (price, line count, units per line) but not
/// the order total; on error `lines` is unchanged.
pub fn add_item(lines: &mut Vec<Line>, item: &Line) -> Result<u32, Rule> {
    match lines.iter().position(|l| l.sku == item.sku) {
        Some(index) => {
            let line = &mut lines[index];
            if line.unit_price_cents != item.unit_price_cents {
                return Err(Rule::PriceMismatch);
            }
            let quantity = line.quantity.saturating_add(item.quantity);
            if quantity > MAX_LINE_QUANTITY {
                return Err(Rule::LineQuantityLimit);
            }
            line.quantity = quantity;
            Ok(quantity)
        }
        None if lines.len() >= MAX_LINES => Err(Rule::TooManyLines),
        None if item.quantity > MAX_LINE_QUANTITY => Err(Rule::LineQuantityLimit),
        None => {
            lines.push(item.clone());
            Ok(item.quantity)
        }
    }
}

/// Takes `quantity` units (0: all of them) from the line with `sku`, and drops
/// the line when none are left. On error `lines` is unchanged.
pub fn remove_item(lines: &mut Vec<Line>, sku: &Sku, quantity: u32) -> Result<Removed, Rule> {
    let index = lines
        .iter()
        .position(|l| &l.sku == sku)
        .ok_or(Rule::SkuNotInOrder)?;
    let line = &mut lines[index];
    let quantity = if quantity == 0 {
        line.quantity
    } else {
        quantity
    };
    if quantity > line.quantity {
        return Err(Rule::RemoveMoreThanLine);
    }
    line.quantity -= quantity;
    let removed = Removed {
        quantity,
        unit_price_cents: line.unit_price_cents,
        line_quantity: line.quantity,
    };
    if removed.line_quantity == 0 {
        lines.remove(index);
    }
    Ok(removed)
}

/// Makes the line with `sku` hold `line_quantity` units, as an `ItemAdded` or
/// `ItemRemoved` event states it: opens the line at `unit_price_cents` if there
/// is none, drops it at 0. Checks nothing: events are facts.
pub fn set_line_quantity(
    lines: &mut Vec<Line>,
    sku: &Sku,
    unit_price_cents: i64,
    line_quantity: u32,
) {
    if line_quantity == 0 {
        lines.retain(|l| &l.sku != sku);
        return;
    }
    match lines.iter_mut().find(|l| &l.sku == sku) {
        Some(line) => line.quantity = line_quantity,
        None => lines.push(Line {
            sku: sku.clone(),
            quantity: line_quantity,
            unit_price_cents,
        }),
    }
}

/// The sum of the lines' quantities.
pub(crate) fn item_count(lines: &[Line]) -> u64 {
    lines.iter().map(|l| u64::from(l.quantity)).sum()
}

/// The order total, refused above `MAX_TOTAL_CENTS`.
pub(crate) fn checked_total(lines: &[Line]) -> Result<i64, Rule> {
    let total: i128 = lines.iter().map(Line::total_cents).sum();
    if total > i128::from(MAX_TOTAL_CENTS) {
        return Err(Rule::TotalLimit);
    }
    Ok(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: u32, unit_price_cents: i64) -> Line {
        Line {
            sku: Sku::parse("sku", sku).unwrap(),
            quantity,
            unit_price_cents,
        }
    }

    #[test]
    fn a_refused_change_leaves_the_lines_unchanged() {
        let before = vec![line("a", 2, 100)];
        let mut lines = before.clone();
        assert_eq!(
            add_item(&mut lines, &line("a", 1, 99)),
            Err(Rule::PriceMismatch)
        );
        assert_eq!(
            add_item(&mut lines, &line("a", MAX_LINE_QUANTITY - 1, 100)),
            Err(Rule::LineQuantityLimit)
        );
        assert_eq!(
            remove_item(&mut lines, &line("a", 0, 0).sku, 3),
            Err(Rule::RemoveMoreThanLine)
        );
        assert_eq!(
            remove_item(&mut lines, &line("b", 0, 0).sku, 1),
            Err(Rule::SkuNotInOrder)
        );
        assert_eq!(lines, before);
    }

    #[test]
    fn setting_a_line_quantity_opens_changes_and_drops_lines() {
        let mut lines = Vec::new();
        let a = line("a", 0, 0).sku;
        set_line_quantity(&mut lines, &a, 150, 2);
        assert_eq!(lines, vec![line("a", 2, 150)]);
        set_line_quantity(&mut lines, &a, 150, 5);
        assert_eq!(lines, vec![line("a", 5, 150)]);
        set_line_quantity(&mut lines, &a, 150, 0);
        assert_eq!(lines, vec![]);
    }

    #[test]
    fn replaying_what_add_and_remove_report_rebuilds_the_same_lines() {
        let mut decided = vec![line("a", 1, 10)];
        let mut replayed = decided.clone();
        let added = add_item(&mut decided, &line("a", 4, 10)).unwrap();
        set_line_quantity(&mut replayed, &line("a", 0, 0).sku, 10, added);
        let added = add_item(&mut decided, &line("b", 3, 7)).unwrap();
        set_line_quantity(&mut replayed, &line("b", 0, 0).sku, 7, added);
        let b = line("b", 0, 0).sku;
        let removed = remove_item(&mut decided, &b, 0).unwrap();
        assert_eq!(
            removed,
            Removed {
                quantity: 3,
                unit_price_cents: 7,
                line_quantity: 0
            }
        );
        set_line_quantity(&mut replayed, &b, 7, removed.line_quantity);
        assert_eq!(replayed, decided);
        assert_eq!(decided, vec![line("a", 5, 10)]);
    }
}
