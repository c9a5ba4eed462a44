//! The source side of `--bootstrap-from`: `orders.v1.ReplicationService.StreamSnapshot`
//! streams a copy of the served read models at one checkpoint.
//!
//! What is copied is the database's files as they are on disk (format 2),
//! not its entries: a new replica that inserted 800,000 entries one by one
//! spent half of a full catch-up's time in sled's per-key insert, while the
//! files of the same read models arrive and open in a fraction of it
//! (BENCHMARKS.md).
//!
//! sled has no snapshots, so the copy is made consistent by holding the
//! applier off (`Store::hold_writes`) from the header to the trailer, after
//! writing out what sled still buffers (`Store::write_out`): nothing changes
//! the read models meanwhile, and each file is read up to the length it had
//! when the copy began. sled itself may still write while the files are
//! read: a read passing through a node an earlier insert left over-full
//! splits it (an under-full one merges), and its flusher thread cleans
//! segments, moving live pages to the end of the log. Both change where
//! pages are, never what the tree holds, so what is read is what sled would
//! find after a crash at the checkpoint the header names, with such moves
//! half done, which it recovers from; unless a segment emptied by a move is
//! reused before the copy reaches it, when the copy lacks the moved pages.
//! That argument rests on sled's internals, so it is checked, not trusted:
//! alongside the files, the served generation's entries are counted and
//! checksummed in key order (`Digest`, on two threads), and the receiver
//! opens the files and counts its entries again before serving any. A copy
//! that is not the checkpoint's is never served; the receiver copies again
//! (bootstrap.rs).
//!
//! Queries are not held (they read sled directly and never take the
//! gate); the replica only lags behind the command side for the duration of
//! the copy, which is bounded: a receiver that leaves a chunk unread for
//! `SEND_STALL`, or a copy longer than `MAX_COPY`, is cut off (its stream
//! ends without a trailer, which the receiver detects), and stopping the
//! service ends it too.
//!
//! The stream: a header (format, log identity, position, read models and their
//! versions), chunks of file parts (`conf`, `db`, snapshots, blobs, each in
//! order) of at most `chunk_bytes` of data each, and a trailer (the entries'
//! count, size and CRC-32, `Digest`; the files' byte count and CRC-32,
//! `dbfiles::FileDigest`).

use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::proto as pb;
use shared::proto::replication_service_server::ReplicationService;
use shared::proto::stream_snapshot_response::Kind;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::dbfiles::{self, FileDigest};
use crate::error::QueryError;
use crate::store::{Generation, Store};

/// How the copy is laid out: the database files of this build's sled, as on
/// disk (1 was the generation's entries, key by key).
pub const FORMAT_VERSION: u32 = 2;
/// Most bytes of file data in one chunk (less under a small
/// `--max-message-bytes`, see `chunk_bytes`).
const MAX_CHUNK_BYTES: usize = 1 << 20;
/// Longest a receiver may leave a chunk unread before the copy is cut off.
const SEND_STALL: Duration = Duration::from_secs(30);
/// Longest a copy may hold the applier off.
const MAX_COPY: Duration = Duration::from_secs(600);
/// Chunks encoded ahead of the receiver.
const STREAM_BUFFER: usize = 4;

/// The chunk size for a message limit: a quarter of it (room for the
/// per-entry framing), at most `MAX_CHUNK_BYTES`.
pub fn chunk_bytes(max_message_bytes: usize) -> usize {
    (max_message_bytes / 4).clamp(1, MAX_CHUNK_BYTES)
}

/// Count, size and CRC-32 of the entries of a copy, in order: what the
/// trailer carries, computed again by the receiver.
#[derive(Default, Clone)]
pub struct Digest {
    entries: u64,
    bytes: u64,
    crc: crc32fast::Hasher,
}

impl Digest {
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.entries += 1;
        self.bytes += (key.len() + value.len()) as u64;
        for part in [key, value] {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            self.crc.update(&len.to_le_bytes());
            self.crc.update(part);
        }
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// `self` followed by `next` (the entries after `self`'s), as if added
    /// one by one.
    fn append(&mut self, next: &Digest) {
        self.entries += next.entries;
        self.bytes += next.bytes;
        self.crc.combine(&next.crc);
    }

    /// The digest of `generation`'s entries from `low` up to `high`.
    fn of_range(
        generation: &Generation,
        low: &[u8],
        high: Option<&[u8]>,
        stop: &AtomicBool,
    ) -> Result<Digest, String> {
        let mut digest = Digest::default();
        for entry in generation.entries_between(low, high) {
            let (key, value) = entry.map_err(|e| format!("reading the read models: {e}"))?;
            digest.add(&key, &value);
            if digest.entries % 4096 == 0 && stop.load(Ordering::Relaxed) {
                return Err("the copy was given up".to_owned());
            }
        }
        Ok(digest)
    }

    /// The digest of `generation`'s entries, its key ranges (`split_keys`)
    /// scanned by `threads` threads at once; gives up with an error soon
    /// after `stop` is set.
    pub fn of(
        generation: &Generation,
        threads: usize,
        stop: &AtomicBool,
    ) -> Result<Digest, String> {
        let splits = generation.split_keys();
        let ranges: Vec<(&[u8], Option<&[u8]>)> = std::iter::once(&[][..])
            .chain(splits.iter().map(Vec::as_slice))
            .zip(splits.iter().map(|s| Some(s.as_slice())).chain([None]))
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        // Each thread takes the next range not yet taken and hands back the
        // digests it made, with their ranges' indexes.
        let mut scanned: Vec<(usize, Result<Digest, String>)> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    scope.spawn(|| {
                        let mut scanned = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&(low, high)) = ranges.get(i) else {
                                return scanned;
                            };
                            scanned.push((i, Digest::of_range(generation, low, high, stop)));
                        }
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap_or_default())
                .collect()
        });
        if scanned.len() != ranges.len() {
            return Err("a range was not scanned".to_owned());
        }
        scanned.sort_by_key(|(i, _)| *i);
        let mut all = Digest::default();
        for (_, digest) in scanned {
            all.append(&digest?);
        }
        Ok(all)
    }

    /// The trailer of a copy with these entries and `files`.
    pub fn trailer(&self, files: &FileDigest) -> pb::SnapshotTrailer {
        pb::SnapshotTrailer {
            entry_count: self.entries,
            byte_count: self.bytes,
            checksum: self.crc.clone().finalize(),
            file_bytes: files.bytes(),
            file_checksum: files.checksum(),
        }
    }
}

pub struct ReplicationApi {
    pub store: Arc<Store>,
    /// Bytes of keys and values per chunk (`chunk_bytes`).
    pub chunk_bytes: usize,
    /// Set when the service stops: ends a copy under way.
    pub shutdown: watch::Receiver<bool>,
}

type Sender = mpsc::Sender<Result<pb::StreamSnapshotResponse, Status>>;

#[tonic::async_trait]
impl ReplicationService for ReplicationApi {
    type StreamSnapshotStream = ReceiverStream<Result<pb::StreamSnapshotResponse, Status>>;

    async fn stream_snapshot(
        &self,
        _request: Request<pb::StreamSnapshotRequest>,
    ) -> Result<Response<Self::StreamSnapshotStream>, Status> {
        // Waits for the batch being applied; from here the served generation
        // does not change until the guard is dropped at the end of the copy.
        let gate = self.store.hold_writes().await;
        let generation = self.store.active();
        let Some(models) = generation.complete_models() else {
            return Err(QueryError::NoSnapshot(
                "a read model is being rebuilt from the event log; retry once the rebuild has switched in".to_owned(),
            )
            .into());
        };
        let Some(log_id) = self.store.log_id().map_err(QueryError::from)? else {
            return Err(QueryError::NoSnapshot(
                "this replica has not followed a command log yet".to_owned(),
            )
            .into());
        };
        let position = generation.checkpoint().map_err(QueryError::from)?.position;
        let header = pb::SnapshotHeader {
            format_version: FORMAT_VERSION,
            log_id,
            position,
            models: models
                .into_iter()
                .map(|(name, version)| pb::SnapshotModel { name, version })
                .collect(),
        };
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let copy = Copying {
            store: Arc::clone(&self.store),
            generation,
            chunk_bytes: self.chunk_bytes,
            tx,
            handle: Handle::current(),
            shutdown: self.shutdown.clone(),
            deadline: Instant::now() + MAX_COPY,
        };
        tracing::info!(position, "copying a snapshot of the read models");
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = copy.run(header);
            drop(gate);
            match result {
                Ok((digest, files)) => tracing::info!(
                    position,
                    entries = digest.entries,
                    file_bytes = files.bytes(),
                    elapsed_ms = elapsed_ms(started),
                    "snapshot copied"
                ),
                Err(reason) => tracing::warn!(position, "snapshot copy ended early: {reason}"),
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One copy under way, on a blocking thread (sled and file reads block).
struct Copying {
    store: Arc<Store>,
    generation: Arc<Generation>,
    chunk_bytes: usize,
    tx: Sender,
    handle: Handle,
    shutdown: watch::Receiver<bool>,
    deadline: Instant,
}

impl Copying {
    fn run(&self, header: pb::SnapshotHeader) -> Result<(Digest, FileDigest), String> {
        let fail = |error: String| {
            // The receiver hears why instead of a bare truncation.
            let _ = self.tx.try_send(Err(Status::unavailable(format!(
                "snapshot failed: {error}"
            ))));
            error
        };
        // The files then hold everything applied up to the checkpoint, and
        // the entries counted below are what the copy holds once opened.
        self.store
            .write_out(&self.generation)
            .map_err(|e| fail(format!("writing out the read models: {e}")))?;
        let files = dbfiles::list(self.store.dir())
            .map_err(|e| fail(format!("listing the database files: {e}")))?;
        self.send(Kind::Header(header))?;
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let (entries, sent) = std::thread::scope(|scope| {
            // The entries are counted on a second thread while the files go out.
            let entries = scope.spawn(|| {
                let digest = Digest::of(&self.generation, 2, &stop);
                tracing::debug!(elapsed_ms = elapsed_ms(started), "entries counted");
                digest
            });
            let sent = self.send_files(&files);
            tracing::debug!(elapsed_ms = elapsed_ms(started), "files sent");
            if sent.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            (entries.join(), sent)
        });
        let files = sent?;
        let entries = entries
            .map_err(|_| fail("counting the entries panicked".to_owned()))?
            .map_err(fail)?;
        self.send(Kind::Trailer(entries.trailer(&files)))?;
        Ok((entries, files))
    }

    /// Sends `files` (name, length) in parts of at most `chunk_bytes`.
    fn send_files(&self, files: &[(String, u64)]) -> Result<FileDigest, String> {
        let mut digest = FileDigest::default();
        let mut parts = Vec::new();
        let mut size = 0;
        for (name, len) in files {
            let path = self.store.dir().join(name);
            let mut file = File::open(&path).map_err(|e| format!("opening {name}: {e}"))?;
            let mut offset = 0u64;
            loop {
                let room = (self.chunk_bytes - size) as u64;
                let mut data = vec![0; (len - offset).min(room) as usize];
                file.read_exact(&mut data)
                    .map_err(|e| format!("reading {name} at {offset}: {e}"))?;
                digest.add(name, offset, &data);
                size += data.len();
                let end = offset + data.len() as u64;
                parts.push(pb::SnapshotFilePart {
                    path: name.clone(),
                    offset,
                    data,
                });
                offset = end;
                if size >= self.chunk_bytes {
                    self.send_parts(&mut parts)?;
                    size = 0;
                }
                if offset == *len {
                    break;
                }
            }
        }
        self.send_parts(&mut parts)?;
        Ok(digest)
    }

    fn send_parts(&self, parts: &mut Vec<pb::SnapshotFilePart>) -> Result<(), String> {
        if parts.is_empty() {
            return Ok(());
        }
        self.send(Kind::Chunk(pb::SnapshotChunk {
            entries: Vec::new(),
            files: std::mem::take(parts),
        }))
    }

    /// Hands one message to the stream; gives up when the receiver has gone,
    /// stalls, the copy takes too long, or the service stops.
    fn send(&self, kind: Kind) -> Result<(), String> {
        let message = pb::StreamSnapshotResponse { kind: Some(kind) };
        let mut shutdown = self.shutdown.clone();
        let limit = SEND_STALL.min(self.deadline.saturating_duration_since(Instant::now()));
        self.handle.block_on(async {
            tokio::select! {
                sent = tokio::time::timeout(limit, self.tx.send(Ok(message))) => match sent {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err("the receiver went away".to_owned()),
                    Err(_) if Instant::now() >= self.deadline => Err(format!(
                        "the copy took longer than {} s", MAX_COPY.as_secs()
                    )),
                    Err(_) => Err(format!(
                        "the receiver left a chunk unread for {} s", SEND_STALL.as_secs()
                    )),
                },
                _ = shutdown.wait_for(|stop| *stop) => Err("the service is stopping".to_owned()),
            }
        })
    }
}

/// Milliseconds since `since`, for log lines (saturating, never truncated).
pub(crate) fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_tells_entries_apart_by_their_boundaries() {
        let mut one = Digest::default();
        one.add(b"ab", b"c");
        let mut other = Digest::default();
        other.add(b"a", b"bc");
        assert_eq!(
            one.trailer(&FileDigest::default()).byte_count,
            other.trailer(&FileDigest::default()).byte_count
        );
        assert_ne!(
            one.trailer(&FileDigest::default()).checksum,
            other.trailer(&FileDigest::default()).checksum
        );
        assert_eq!(one.trailer(&FileDigest::default()).entry_count, 1);
    }

    #[test]
    fn digests_of_consecutive_entries_append_to_the_digest_of_all() {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..50u8)
            .map(|i| (vec![b'k', i], vec![i; i as usize]))
            .collect();
        let mut all = Digest::default();
        for (k, v) in &entries {
            all.add(k, v);
        }
        let mut joined = Digest::default();
        for part in entries.chunks(7) {
            let mut digest = Digest::default();
            for (k, v) in part {
                digest.add(k, v);
            }
            joined.append(&digest);
        }
        let none = FileDigest::default();
        assert_eq!(joined.trailer(&none), all.trailer(&none));
    }

    #[test]
    fn chunks_stay_well_under_the_message_limit() {
        assert_eq!(chunk_bytes(4 << 20), 1 << 20);
        assert_eq!(chunk_bytes(64 << 20), MAX_CHUNK_BYTES);
        assert_eq!(chunk_bytes(1 << 20), 256 << 10);
    }
}
