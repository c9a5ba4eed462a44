//! Baseline 2: a bare sled loop on a temp directory: insert a batch of values
//! the size of a stored event, flush, repeat; the limit group commit works under.

use std::time::{Duration, Instant};

use crate::load::progress_line;
use crate::stats::{self, Latency, Report};

/// Writes batches of `batch` values of `value_size` bytes, one `apply_batch` and
/// one `flush` per batch, for `duration`. Latency = one batch's write + flush.
pub fn run(batch: usize, value_size: usize, duration: Duration) -> Result<Report, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(256 << 20)
        .open()
        .map_err(|e| e.to_string())?;
    let tree = db.open_tree("events").map_err(|e| e.to_string())?;
    let value = vec![0x5a_u8; value_size];
    let mut hist = stats::histogram();
    let started = Instant::now();
    let mut last_print = started;
    let mut last_written = 0;
    let mut position: u64 = 0;
    let name = format!("sled batch {batch}");
    while started.elapsed() < duration {
        let t = Instant::now();
        let mut b = sled::Batch::default();
        for _ in 0..batch {
            position += 1;
            b.insert(&position.to_be_bytes(), value.as_slice());
        }
        tree.apply_batch(b).map_err(|e| e.to_string())?;
        db.flush().map_err(|e| e.to_string())?;
        hist.saturating_record(stats::micros(t.elapsed()));
        if last_print.elapsed() >= Duration::from_secs(1) {
            progress_line(&name, started, position, position - last_written, "writes");
            last_print = Instant::now();
            last_written = position;
        }
    }
    let mut report = Report::new(&name, "writes");
    report.finish(position, started.elapsed());
    report.setting("batch", batch);
    report.setting("value_bytes", value_size);
    report
        .latencies
        .insert("batch+flush".to_owned(), Latency::from_histogram(&hist));
    Ok(report)
}
