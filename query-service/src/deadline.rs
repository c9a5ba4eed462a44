//! How long a query may wait for `min_position`: the client's deadline (the
//! `grpc-timeout` header) or the server cap, whichever is shorter.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// The answer must leave before the client gives up, or the client sees its own
/// bare timeout instead of our message saying how far the projection got.
const MAX_MARGIN: Duration = Duration::from_millis(100);

/// When to stop waiting for a request received now.
pub fn wait_deadline(metadata: &MetadataMap, cap: Duration) -> Instant {
    let budget = match metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        Some(client) => {
            let margin = (client / 10).min(MAX_MARGIN);
            (client - margin).min(cap)
        }
        None => cap,
    };
    Instant::now() + budget
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (H M S m u n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_the_rest() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "10", "10x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_shorter_of_client_deadline_and_cap_wins() {
        let cap = Duration::from_secs(5);
        let mut metadata = MetadataMap::new();
        let now = Instant::now();
        assert_eq!(wait_deadline(&metadata, cap) - now, cap);
        metadata.insert("grpc-timeout", "1000m".parse().unwrap());
        assert_eq!(
            wait_deadline(&metadata, cap) - now,
            Duration::from_millis(900)
        );
        metadata.insert("grpc-timeout", "60S".parse().unwrap());
        assert_eq!(wait_deadline(&metadata, cap) - now, cap);
    }
}
