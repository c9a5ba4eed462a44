//! Opaque page tokens for the order lists.
//!
//! A token holds the sort key of the last order a page examined (its
//! `created_position`, unique and fixed), so the next page starts strictly after
//! it: orders created meanwhile sort before the cursor and can neither repeat nor
//! push an order out of a later page. The token is bound to the list and filter it
//! was issued for. Encoding: hex of `[format, list, cursor u64 BE, scope u64 BE]`.

use shared::domain::ValidationError;

const FORMAT: u8 = 1;
const LEN: usize = 2 + 8 + 8;

/// Which list a token belongs to, with the filter it was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// `ListRecentOrders`, with the proto status filter number (0: none).
    Recent { status: i32 },
    /// `ListCustomerOrders` for one customer.
    Customer { customer_id: &'a str },
}

impl Scope<'_> {
    fn tag(&self) -> u8 {
        match self {
            Scope::Recent { .. } => 1,
            Scope::Customer { .. } => 2,
        }
    }

    fn fingerprint(&self) -> u64 {
        match self {
            Scope::Recent { status } => u64::from(status.unsigned_abs()),
            Scope::Customer { customer_id } => fnv1a(customer_id.as_bytes()),
        }
    }
}

/// FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The token that continues after the order created at `cursor`.
pub fn encode(scope: Scope<'_>, cursor: u64) -> String {
    let mut bytes = Vec::with_capacity(LEN);
    bytes.push(FORMAT);
    bytes.push(scope.tag());
    bytes.extend_from_slice(&cursor.to_be_bytes());
    bytes.extend_from_slice(&scope.fingerprint().to_be_bytes());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cursor in `token`, or `None` for the empty token (the first page).
pub fn decode(scope: Scope<'_>, token: &str) -> Result<Option<u64>, ValidationError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = |why: &str| ValidationError::new("page_token", why);
    let bytes = hex(token).ok_or_else(|| invalid("is not a page token issued by this service"))?;
    if bytes.len() != LEN || bytes[0] != FORMAT {
        return Err(invalid("is not a page token issued by this service"));
    }
    if bytes[1] != scope.tag() {
        return Err(invalid("was issued by another list RPC"));
    }
    let cursor = u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes"));
    let fingerprint = u64::from_be_bytes(bytes[10..18].try_into().expect("8 bytes"));
    if fingerprint != scope.fingerprint() {
        return Err(invalid(match scope {
            Scope::Recent { .. } => "was issued for another status filter",
            Scope::Customer { .. } => "was issued for another customer_id",
        }));
    }
    Ok(Some(cursor))
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_within_their_scope() {
        let scope = Scope::Customer { customer_id: "c-1" };
        let token = encode(scope, 42);
        assert_eq!(decode(scope, &token).unwrap(), Some(42));
        assert_eq!(decode(scope, "").unwrap(), None);
        let recent = Scope::Recent { status: 2 };
        assert_eq!(
            decode(recent, &encode(recent, u64::MAX)).unwrap(),
            Some(u64::MAX)
        );
    }

    #[test]
    fn foreign_or_damaged_tokens_name_the_field() {
        let scope = Scope::Customer { customer_id: "c-1" };
        let token = encode(scope, 42);
        for bad in ["zz", "abc", &token[..10], "é"] {
            assert_eq!(decode(scope, bad).unwrap_err().field, "page_token");
        }
        assert!(decode(Scope::Customer { customer_id: "c-2" }, &token).is_err());
        assert!(decode(Scope::Recent { status: 0 }, &token).is_err());
        let recent = encode(Scope::Recent { status: 1 }, 7);
        assert!(decode(Scope::Recent { status: 2 }, &recent).is_err());
    }
}
