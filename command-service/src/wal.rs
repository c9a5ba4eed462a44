//! The write-ahead log: what makes an acknowledgement durable.
//!
//! Every group commit appends one record to the current segment file and the
//! group is acknowledged only after an `fdatasync` of that file, started after
//! the append, has completed (`Wal::append` then `Ticket::sync`). sled keeps
//! the aggregates, the log blocks and the idempotency keys, written after the
//! sync and without a flush; a checkpoint (`Store::checkpoint`) later makes
//! sled durable and drops the segments it covers. At open, the records after
//! the last checkpoint are applied to sled again.
//!
//! A segment is a file `wal/{sequence:020}.wal` of frames
//! `[payload length: u32 LE][crc32 of payload: u32 LE][payload]`, then zeros
//! (the file is zero-filled ahead of the appends, `ZERO_AHEAD`), where the
//! payload is a record: `[first position: u64 LE][last position: u64 LE]` and
//! then the group's sled writes as `[key length: u32 LE][key][value length:
//! u32 LE][value]` pairs.
//!
//! Crash argument: an acknowledged record was synced, and so was every record
//! before it (the writer syncs each group before it writes the next), so
//! after a power cut the valid
//! records form a prefix that contains every acknowledged one. Reading stops
//! at the first frame that is short or fails its checksum: everything from
//! there on was never acknowledged, and is cut off (truncated, later segments
//! removed, both made durable) before anything new is appended.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A segment is closed and a new one started once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Segments are zero-filled this far ahead of the last record, so that an
/// fdatasync after an append writes the data only: a file that grows with
/// every append also needs its inode written on every sync.
const ZERO_AHEAD: u64 = 1024 * 1024;
/// A frame longer than this is corrupt, not a group (a group is at most
/// `--max-batch` commands of at most a few hundred KiB each).
const MAX_FRAME: u32 = 1 << 30;
const FRAME_HEADER: usize = 8;
const RECORD_HEADER: usize = 16;

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("write-ahead log {path}: corrupt record at offset {offset}: {reason}")]
    Corrupt {
        path: String,
        offset: u64,
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One group's writes, encoded once: appended to the log as they are and
/// applied to sled from the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    bytes: Vec<u8>,
}

impl Record {
    /// An empty record for the events `first..=last`; add the writes with `push`.
    pub fn new(first: u64, last: u64) -> Self {
        let mut bytes = Vec::with_capacity(1024);
        bytes.extend_from_slice(&first.to_le_bytes());
        bytes.extend_from_slice(&last.to_le_bytes());
        Record { bytes }
    }

    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        for part in [key, value] {
            let len = u32::try_from(part.len()).expect("a key or value under 4 GiB");
            self.bytes.extend_from_slice(&len.to_le_bytes());
            self.bytes.extend_from_slice(part);
        }
    }

    pub fn first_position(&self) -> u64 {
        u64::from_le_bytes(self.bytes[0..8].try_into().expect("8 bytes"))
    }

    pub fn last_position(&self) -> u64 {
        u64::from_le_bytes(self.bytes[8..16].try_into().expect("8 bytes"))
    }

    /// The (key, value) writes, in the order they were pushed.
    pub fn writes(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let mut rest = &self.bytes[RECORD_HEADER..];
        std::iter::from_fn(move || {
            let key = take_part(&mut rest)?;
            let value = take_part(&mut rest)?;
            Some((key, value))
        })
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.len() == RECORD_HEADER
    }

    /// Checks a payload read back from disk: header, and every part in bounds.
    fn parse(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < RECORD_HEADER {
            return Err(format!("record of {} bytes", bytes.len()));
        }
        let mut rest = &bytes[RECORD_HEADER..];
        while !rest.is_empty() {
            if take_part(&mut rest).is_none() || take_part(&mut rest).is_none() {
                return Err("a write runs past the end of its record".into());
            }
        }
        let record = Record { bytes };
        if record.first_position() == 0 || record.first_position() > record.last_position() {
            return Err(format!(
                "positions {}..={}",
                record.first_position(),
                record.last_position()
            ));
        }
        Ok(record)
    }
}

fn take_part<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let part = rest.get(4..4 + len)?;
    *rest = &rest[4 + len..];
    Some(part)
}

/// Proof that a record was appended to a segment, and the means to make it
/// durable: `sync` returns once an fdatasync of that segment, started now,
/// has completed.
#[derive(Clone)]
pub struct Ticket {
    segment: Arc<Segment>,
}

impl Ticket {
    pub fn sync(&self) -> Result<(), WalError> {
        self.segment.sync()
    }

    /// Whether two tickets name the same file (one sync serves both).
    pub fn same_segment(&self, other: &Ticket) -> bool {
        Arc::ptr_eq(&self.segment, &other.segment)
    }
}

struct Segment {
    sequence: u64,
    path: PathBuf,
    file: File,
}

impl Segment {
    fn sync(&self) -> Result<(), WalError> {
        self.file.sync_data().map_err(io_error(&self.path))
    }
}

/// A closed segment kept until a checkpoint covers its last position.
struct Closed {
    path: PathBuf,
    last_position: u64,
}

struct Current {
    segment: Arc<Segment>,
    len: u64,
    /// The file is zeros from `len` up to here.
    zeroed: u64,
    /// The last position appended to this segment (0 if none).
    last_position: u64,
}

/// The segment files of one data directory. Appends come from one thread (the
/// writer); checkpoints from another, hence the mutex (uncontended).
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    state: Mutex<State>,
}

struct State {
    current: Current,
    closed: Vec<Closed>,
}

/// What `Wal::open` found: the valid records, in order, for replay.
pub struct Opened {
    pub wal: Wal,
    pub records: Vec<Record>,
}

impl Wal {
    /// Opens (or creates) the log in `dir`, reads every valid record, cuts off
    /// an invalid tail durably, and starts a new segment for appends.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Opened, WalError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut sequences = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let name = entry.map_err(io_error(dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(sequence) = name
                .strip_suffix(".wal")
                .and_then(|s| s.parse::<u64>().ok())
            {
                sequences.push(sequence);
            }
        }
        sequences.sort_unstable();
        let mut records = Vec::new();
        let mut closed = Vec::new();
        let mut cut = false;
        for &sequence in &sequences {
            let path = segment_path(dir, sequence);
            if cut {
                // Beyond the first invalid frame: never acknowledged.
                tracing::warn!(path = %path.display(), "removing a write-ahead log segment written after a torn record");
                std::fs::remove_file(&path).map_err(io_error(&path))?;
                continue;
            }
            let (valid, valid_len, clean) = read_segment(&path)?;
            if !clean {
                tracing::warn!(
                    path = %path.display(),
                    kept = valid_len,
                    "cutting an unacknowledged (torn) tail off the write-ahead log"
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_error(&path))?;
                file.set_len(valid_len).map_err(io_error(&path))?;
                file.sync_all().map_err(io_error(&path))?;
                cut = true;
            }
            let last_position = valid.last().map_or(0, Record::last_position);
            if let Some(previous) = records.last().map(Record::last_position) {
                if let Some(first) = valid.first().map(Record::first_position) {
                    if first != previous + 1 {
                        return Err(WalError::Corrupt {
                            path: path.display().to_string(),
                            offset: 0,
                            reason: format!(
                                "starts at position {first}, the segment before ends at {previous}"
                            ),
                        });
                    }
                }
            }
            records.extend(valid);
            closed.push(Closed {
                path,
                last_position,
            });
        }
        let sequence = sequences.last().map_or(1, |last| last + 1);
        let segment = create_segment(dir, sequence)?;
        sync_dir(dir)?;
        Ok(Opened {
            wal: Wal {
                dir: dir.to_path_buf(),
                segment_bytes,
                state: Mutex::new(State {
                    current: Current {
                        segment: Arc::new(segment),
                        len: 0,
                        zeroed: 0,
                        last_position: 0,
                    },
                    closed,
                }),
            },
            records,
        })
    }

    /// Appends a record (one `write`), starting a new segment first when the
    /// current one is full. Durable only once the returned ticket's `sync`
    /// has returned.
    pub fn append(&self, record: &Record) -> Result<Ticket, WalError> {
        let mut state = self.state.lock().expect("wal state");
        if state.current.len >= self.segment_bytes {
            let sequence = state.current.segment.sequence + 1;
            let segment = Arc::new(create_segment(&self.dir, sequence)?);
            sync_dir(&self.dir)?;
            let full = std::mem::replace(
                &mut state.current,
                Current {
                    segment,
                    len: 0,
                    zeroed: 0,
                    last_position: 0,
                },
            );
            state.closed.push(Closed {
                path: full.segment.path.clone(),
                last_position: full.last_position,
            });
        }
        let payload = &record.bytes;
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|len| *len <= MAX_FRAME)
            .ok_or_else(|| WalError::Corrupt {
                path: state.current.segment.path.display().to_string(),
                offset: state.current.len,
                reason: format!("a record of {} bytes is too large", payload.len()),
            })?;
        let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        let current = &mut state.current;
        let end = current.len + frame.len() as u64;
        if end > current.zeroed {
            static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
            let zeroed = end + ZERO_AHEAD;
            let mut at = current.len.max(current.zeroed);
            while at < zeroed {
                let n = usize::try_from(zeroed - at).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
                current
                    .segment
                    .file
                    .write_all_at(&ZEROS[..n], at)
                    .map_err(io_error(&current.segment.path))?;
                at += n as u64;
            }
            current.zeroed = zeroed;
        }
        current
            .segment
            .file
            .write_all_at(&frame, current.len)
            .map_err(io_error(&current.segment.path))?;
        let ticket = Ticket {
            segment: Arc::clone(&current.segment),
        };
        state.current.len += frame.len() as u64;
        state.current.last_position = record.last_position();
        Ok(ticket)
    }

    /// Removes the closed segments whose every record is at or below
    /// `durable`: a position the store holds on stable storage.
    pub fn release(&self, durable: u64) -> Result<usize, WalError> {
        let mut state = self.state.lock().expect("wal state");
        let mut removed = 0;
        while let Some(oldest) = state.closed.first() {
            if oldest.last_position > durable {
                break;
            }
            std::fs::remove_file(&oldest.path).map_err(io_error(&oldest.path))?;
            state.closed.remove(0);
            removed += 1;
        }
        Ok(removed)
    }

    /// How many segment files exist (closed and current).
    pub fn segments(&self) -> usize {
        self.state.lock().expect("wal state").closed.len() + 1
    }
}

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.wal"))
}

fn create_segment(dir: &Path, sequence: u64) -> Result<Segment, WalError> {
    let path = segment_path(dir, sequence);
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    Ok(Segment {
        sequence,
        path,
        file,
    })
}

/// Makes the directory's entries (a created or removed segment) durable.
fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// The valid records of a segment, the length they cover, and whether the
/// file ends cleanly after them (nothing, or only zeros, follows).
fn read_segment(path: &Path) -> Result<(Vec<Record>, u64, bool), WalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_error(path))?;
    let mut records = Vec::new();
    let mut offset = 0usize;
    while let Some(header) = bytes.get(offset..offset + FRAME_HEADER) {
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let start = offset + FRAME_HEADER;
        let Some(payload) = bytes.get(start..start + len as usize) else {
            break;
        };
        if len > MAX_FRAME || crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(record) = Record::parse(payload.to_vec()) else {
            break;
        };
        if let Some(previous) = records.last().map(Record::last_position) {
            if record.first_position() != previous + 1 {
                return Err(WalError::Corrupt {
                    path: path.display().to_string(),
                    offset: offset as u64,
                    reason: format!(
                        "record starts at position {}, the one before ends at {previous}",
                        record.first_position()
                    ),
                });
            }
        }
        records.push(record);
        offset = start + len as usize;
    }
    let clean = bytes[offset..].iter().all(|&b| b == 0);
    Ok((records, offset as u64, clean))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(first: u64, last: u64, value: &[u8]) -> Record {
        let mut record = Record::new(first, last);
        record.push(&first.to_be_bytes(), value);
        record
    }

    #[test]
    fn records_round_trip_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Wal::open(dir.path(), 100).unwrap();
        assert!(opened.records.is_empty());
        let wal = opened.wal;
        let written: Vec<Record> = (1..=10u64)
            .map(|i| record(2 * i - 1, 2 * i, &[i as u8; 40]))
            .collect();
        for r in &written {
            wal.append(r).unwrap().sync().unwrap();
        }
        assert!(wal.segments() > 3, "small segments rotate");
        drop(wal);
        let reopened = Wal::open(dir.path(), 100).unwrap();
        assert_eq!(reopened.records, written);
        let writes: Vec<_> = reopened.records[3].writes().collect();
        assert_eq!(writes, vec![(&7u64.to_be_bytes()[..], &[4u8; 40][..])]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_later_segments_removed() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1 << 20).unwrap().wal;
        for i in 1..=3u64 {
            wal.append(&record(i, i, b"abc")).unwrap().sync().unwrap();
        }
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let (_, valid, clean) = read_segment(&path).unwrap();
        assert!(clean, "zeros after the last record are a clean end");
        // A torn fourth frame: a header promising more than is there.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9], valid)
            .unwrap();
        // A later segment with a record: written after the torn one, never acknowledged.
        std::fs::write(segment_path(dir.path(), 2), b"junk").unwrap();
        let opened = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(opened.records.len(), 3);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), valid);
        assert!(!segment_path(dir.path(), 2).exists());
        // Appends go on in a new segment and read back after the old ones.
        opened
            .wal
            .append(&record(4, 4, b"d"))
            .unwrap()
            .sync()
            .unwrap();
        drop(opened);
        let again = Wal::open(dir.path(), 1 << 20).unwrap();
        let positions: Vec<u64> = again.records.iter().map(Record::last_position).collect();
        assert_eq!(positions, vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_bit_flip_ends_the_valid_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1 << 20).unwrap().wal;
        for i in 1..=3u64 {
            wal.append(&record(i, i, b"abcdef"))
                .unwrap()
                .sync()
                .unwrap();
        }
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let second_frame = read_segment(&path).unwrap().1 as usize / 3;
        bytes[second_frame + FRAME_HEADER + 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let opened = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(opened.records.len(), 1);
    }

    #[test]
    fn release_removes_only_closed_covered_segments() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 10).unwrap().wal;
        for i in 1..=4u64 {
            wal.append(&record(i, i, b"0123456789")).unwrap();
        }
        // Segments: 1, 2, 3 closed (one record each), 4 current.
        assert_eq!(wal.segments(), 4);
        assert_eq!(wal.release(2).unwrap(), 2);
        assert_eq!(wal.segments(), 2);
        assert_eq!(wal.release(10).unwrap(), 1, "the current segment stays");
        assert_eq!(wal.segments(), 1);
    }
}
