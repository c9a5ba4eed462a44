//! What the fault-injection suites share besides the writers: iteration
//! counts and seeds from the environment, the codes a fault may cause, and
//! tallies of them for the reports.

use std::collections::BTreeMap;

use tonic::Code;

/// An iteration count: `$var` if set (to run long by hand), else `default`.
pub fn count(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a count")),
        Err(_) => default,
    }
}

/// The seed of a test's randomness: `FAULT_SEED` if set, else from the clock.
/// Printed, so that a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("FAULT_SEED") {
        Ok(v) => v.parse().expect("FAULT_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("{test}: FAULT_SEED={seed}");
    seed
}

/// Codes a command may fail with when the service dies or stops under it;
/// anything else would be a wrong answer, not a fault.
pub fn is_fault_code(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal
    )
}

/// Counts of failure codes, for the reports.
pub fn tally(codes: impl IntoIterator<Item = Code>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for code in codes {
        *out.entry(format!("{code:?}")).or_default() += 1;
    }
    out
}
