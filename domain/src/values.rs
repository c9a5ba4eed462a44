//! Validated value types: identifiers, currency codes, free text, timestamps.
//!
//! Each type can only be built through `parse`, so holding one proves it is valid.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::currency::is_iso_4217;
use super::error::ValidationError;

/// Longest identifier, in characters.
pub const MAX_ID_LEN: usize = 64;
/// Longest free text, in characters.
pub const MAX_TEXT_CHARS: usize = 256;

fn check_id(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_ID_LEN} characters"),
        ));
    }
    let ok = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if !ok {
        return Err(ValidationError::new(
            field,
            "may only contain the characters A-Z a-z 0-9 . _ : -",
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` (1..=64 characters of `[A-Za-z0-9._:-]`); errors name `field`.
            pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
                check_id(field, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// Identifies an order.
    OrderId
);
id_type!(
    /// Identifies a customer.
    CustomerId
);
id_type!(
    /// A stock keeping unit: identifies a product.
    Sku
);
id_type!(
    /// A client-chosen idempotency key.
    CommandId
);

/// An ISO 4217 currency code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Currency(String);

impl Currency {
    /// Empty means `USD`; anything else must be a known ISO 4217 code in upper case.
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        if value.is_empty() {
            return Ok(Self("USD".to_owned()));
        }
        if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ValidationError::new(
                field,
                "must be an ISO 4217 code of three upper-case letters, e.g. USD",
            ));
        }
        if !is_iso_4217(value) {
            return Err(ValidationError::new(
                field,
                format!("unknown ISO 4217 currency code {value:?}"),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text (carrier, tracking number, reason): at most 256 characters, may be empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Text(String);

impl Text {
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        if value.chars().count() > MAX_TEXT_CHARS {
            return Err(ValidationError::new(
                field,
                format!("must be at most {MAX_TEXT_CHARS} characters"),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A point in time: microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// The UTC calendar date as `YYYY-MM-DD`.
    pub fn utc_date(self) -> String {
        let days = self.0.div_euclid(86_400_000_000);
        let (y, m, d) = civil_from_days(days);
        format!("{y:04}-{m:02}-{d:02}")
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
/// Howard Hinnant's `civil_from_days` algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_allowed_alphabet_up_to_64_characters() {
        assert!(OrderId::parse("order_id", "A-z0.9_:x").is_ok());
        assert!(OrderId::parse("order_id", &"a".repeat(64)).is_ok());
        let err = OrderId::parse("order_id", &"a".repeat(65)).unwrap_err();
        assert_eq!(err.field, "order_id");
        assert!(OrderId::parse("order_id", "").is_err());
        assert!(OrderId::parse("order_id", "a b").is_err());
        assert!(OrderId::parse("order_id", "é").is_err());
    }

    #[test]
    fn currency_defaults_to_usd_and_rejects_unknown_codes() {
        assert_eq!(Currency::parse("currency", "").unwrap().as_str(), "USD");
        assert_eq!(Currency::parse("currency", "EUR").unwrap().as_str(), "EUR");
        assert!(Currency::parse("currency", "eur").is_err());
        assert!(Currency::parse("currency", "XYZ").is_err());
        assert!(Currency::parse("currency", "EURO").is_err());
    }

    #[test]
    fn text_counts_characters_not_bytes() {
        assert!(Text::parse("reason", &"é".repeat(256)).is_ok());
        assert!(Text::parse("reason", &"é".repeat(257)).is_err());
    }

    #[test]
    fn utc_dates() {
        assert_eq!(Timestamp(0).utc_date(), "1970-01-01");
        assert_eq!(Timestamp(-1).utc_date(), "1969-12-31");
        // 2024-02-29T12:00:00Z
        assert_eq!(Timestamp(1_709_208_000_000_000).utc_date(), "2024-02-29");
    }
}
