//! The backup file: what `command-service backup` writes and `restore` reads.
//!
//! Layout (integers little-endian):
//!
//! | part | bytes |
//! |---|---|
//! | header | magic `ORDBAKUP`, file format (u32, 1), store format (u32), position (u64), entry counts: total, orders, log blocks, commands, history (5 × u64), log id length (u16), log id (UTF-8), crc32 of the header's bytes before it (u32) |
//! | entry, repeated | key length (u32), value length (u32), key, value, crc32 of the entry's bytes before it (u32) |
//!
//! and nothing after the last entry. A file is written under a temporary
//! name beside its destination, its header completed with the counts,
//! fsynced, renamed into place, and the directory fsynced: a file under its
//! own name is whole. Reading checks the header's checksum, each entry's, the
//! counts against the entries, and that the file ends where they do.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::store::EntryCounts;

const MAGIC: &[u8; 8] = b"ORDBAKUP";
/// The layout above; another is refused.
pub const FILE_FORMAT: u32 = 1;
/// A key or value longer than this is corruption, not data.
const MAX_PART: u32 = 1 << 30;

/// One stored entry: key and value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// What a backup is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub store_format: u32,
    pub log_id: String,
    /// Every event up to here, nothing after.
    pub position: u64,
    pub counts: EntryCounts,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(80 + self.log_id.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FILE_FORMAT.to_le_bytes());
        bytes.extend_from_slice(&self.store_format.to_le_bytes());
        bytes.extend_from_slice(&self.position.to_le_bytes());
        let c = &self.counts;
        for count in [c.total(), c.orders, c.log_blocks, c.commands, c.history] {
            bytes.extend_from_slice(&count.to_le_bytes());
        }
        let id = self.log_id.as_bytes();
        let len = u16::try_from(id.len()).unwrap_or(u16::MAX);
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&id[..usize::from(len)]);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }
}

/// Why a backup file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a command-service backup (no ORDBAKUP header)")]
    NotABackup { path: String },
    #[error(
        "{path} is backup file format {found}; this command-service reads format {FILE_FORMAT}"
    )]
    FileFormat { path: String, found: u32 },
    #[error("{path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: String,
        offset: u64,
        reason: String,
    },
}

/// Writes a backup file: `create`, `push` each entry, `finish`.
pub struct BackupWriter {
    file: BufWriter<File>,
    temp: PathBuf,
    to: PathBuf,
    header: Header,
    counts: EntryCounts,
    bytes: u64,
}

impl BackupWriter {
    /// Starts the file `to` (under a temporary name until `finish`).
    pub fn create(to: &Path, header: Header) -> Result<Self, FileError> {
        let name = to
            .file_name()
            .map_or_else(|| "backup".into(), |n| n.to_string_lossy().into_owned());
        let temp = to.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let file = File::create(&temp).map_err(io(&temp))?;
        let mut writer = BackupWriter {
            file: BufWriter::with_capacity(1 << 20, file),
            temp,
            to: to.to_owned(),
            header,
            counts: EntryCounts::default(),
            bytes: 0,
        };
        let encoded = writer.header.encode();
        writer.write(&encoded)?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), FileError> {
        self.bytes += bytes.len() as u64;
        self.file.write_all(bytes).map_err(io(&self.temp))
    }

    /// Appends one entry; `false` for a key of no known kind (not written).
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<bool, FileError> {
        if !self.counts.add(key) {
            return Ok(false);
        }
        let mut frame = Vec::with_capacity(12 + key.len() + value.len());
        frame.extend_from_slice(&part_len(key).to_le_bytes());
        frame.extend_from_slice(&part_len(value).to_le_bytes());
        frame.extend_from_slice(key);
        frame.extend_from_slice(value);
        let crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&crc.to_le_bytes());
        self.write(&frame)?;
        Ok(true)
    }

    /// The entries pushed so far, by kind.
    pub fn counts(&self) -> EntryCounts {
        self.counts
    }

    /// Completes the header with the counts, makes the file durable and
    /// gives it its name. Returns the header and the file's size in bytes.
    pub fn finish(mut self) -> Result<(Header, u64), FileError> {
        self.header.counts = self.counts;
        let encoded = self.header.encode();
        let temp = self.temp.clone();
        self.file.flush().map_err(io(&temp))?;
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(io(&temp))?;
        file.write_all(&encoded).map_err(io(&temp))?;
        file.sync_all().map_err(io(&temp))?;
        std::fs::rename(&temp, &self.to).map_err(io(&self.to))?;
        let dir = match self.to.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))?;
        // Not removed on drop any more.
        self.temp = PathBuf::new();
        Ok((self.header.clone(), self.bytes))
    }
}

impl Drop for BackupWriter {
    /// A backup that did not finish leaves no file behind.
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

fn part_len(part: &[u8]) -> u32 {
    u32::try_from(part.len()).unwrap_or(u32::MAX)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a backup file, checking it as it goes.
pub struct BackupReader {
    file: BufReader<File>,
    path: PathBuf,
    pub header: Header,
    counts: EntryCounts,
    offset: u64,
}

impl BackupReader {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> Result<Self, FileError> {
        let file = File::open(path).map_err(io(path))?;
        let mut reader = BackupReader {
            file: BufReader::with_capacity(1 << 20, file),
            path: path.to_owned(),
            header: Header {
                store_format: 0,
                log_id: String::new(),
                position: 0,
                counts: EntryCounts::default(),
            },
            counts: EntryCounts::default(),
            offset: 0,
        };
        let mut fixed = [0u8; 66];
        if reader.read_exact(&mut fixed).is_err() || &fixed[..8] != MAGIC {
            return Err(FileError::NotABackup {
                path: path.display().to_string(),
            });
        }
        let u32_at = |at: usize| u32::from_le_bytes(fixed[at..at + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |at: usize| u64::from_le_bytes(fixed[at..at + 8].try_into().unwrap_or([0; 8]));
        if u32_at(8) != FILE_FORMAT {
            return Err(FileError::FileFormat {
                path: path.display().to_string(),
                found: u32_at(8),
            });
        }
        let id_len = u16::from_le_bytes([fixed[64], fixed[65]]);
        let mut rest = vec![0u8; usize::from(id_len) + 4];
        reader.read_exact(&mut rest)?;
        let (id, crc) = rest.split_at(usize::from(id_len));
        let mut covered = fixed.to_vec();
        covered.extend_from_slice(id);
        if crc32fast::hash(&covered).to_le_bytes() != crc {
            return Err(reader.corrupt(0, "the header's checksum does not match"));
        }
        reader.header = Header {
            store_format: u32_at(12),
            position: u64_at(16),
            log_id: String::from_utf8_lossy(id).into_owned(),
            counts: EntryCounts {
                orders: u64_at(32),
                log_blocks: u64_at(40),
                commands: u64_at(48),
                history: u64_at(56),
            },
        };
        if reader.header.counts.total() != u64_at(24) {
            return Err(reader.corrupt(24, "the entry counts do not add up"));
        }
        Ok(reader)
    }

    fn corrupt(&self, offset: u64, reason: &str) -> FileError {
        FileError::Corrupt {
            path: self.path.display().to_string(),
            offset,
            reason: reason.to_owned(),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), FileError> {
        let at = self.offset;
        self.file.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.corrupt(at, "the file ends early"),
            _ => FileError::Io {
                path: self.path.display().to_string(),
                source: e,
            },
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// The next entry (key, value), checked; `None` after the last one the
    /// header counts, when the file also ends there.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, FileError> {
        let start = self.offset;
        if self.counts.total() == self.header.counts.total() {
            let mut probe = [0u8; 1];
            return match self.file.read(&mut probe).map_err(io(&self.path))? {
                0 if self.counts == self.header.counts => Ok(None),
                0 => {
                    Err(self.corrupt(start, "the entries' kinds do not match the header's counts"))
                }
                _ => Err(self.corrupt(start, "bytes after the last entry")),
            };
        }
        let mut lens = [0u8; 8];
        self.read_exact(&mut lens)?;
        let key_len = u32::from_le_bytes([lens[0], lens[1], lens[2], lens[3]]);
        let value_len = u32::from_le_bytes([lens[4], lens[5], lens[6], lens[7]]);
        if key_len == 0 || key_len > MAX_PART || value_len > MAX_PART {
            return Err(self.corrupt(start, "an entry's length is impossible"));
        }
        let mut key = vec![0u8; key_len as usize];
        self.read_exact(&mut key)?;
        let mut value = vec![0u8; value_len as usize];
        self.read_exact(&mut value)?;
        let mut crc = [0u8; 4];
        self.read_exact(&mut crc)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&lens);
        hasher.update(&key);
        hasher.update(&value);
        if hasher.finalize().to_le_bytes() != crc {
            return Err(self.corrupt(start, "an entry's checksum does not match"));
        }
        if !self.counts.add(&key) {
            return Err(self.corrupt(start, "an entry of no known kind"));
        }
        Ok(Some((key, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            store_format: 3,
            log_id: "0193-log".into(),
            position: 7,
            counts: EntryCounts::default(),
        }
    }

    fn write(path: &Path, entries: &[(&[u8], &[u8])]) -> Header {
        let mut writer = BackupWriter::create(path, header()).unwrap();
        for (key, value) in entries {
            assert!(writer.push(key, value).unwrap());
        }
        writer.finish().unwrap().0
    }

    fn read_all(path: &Path) -> Result<Vec<Entry>, FileError> {
        let mut reader = BackupReader::open(path)?;
        let mut entries = Vec::new();
        while let Some(entry) = reader.next_entry()? {
            entries.push(entry);
        }
        Ok(entries)
    }

    const ENTRIES: &[(&[u8], &[u8])] = &[
        (b"l\0\0\0\0\0\0\0\x01", b"block"),
        (b"cmd-1", b"rec"),
        (b"oo-1", b""),
    ];

    #[test]
    fn a_file_reads_back_as_written_with_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.bak");
        let written = write(&path, ENTRIES);
        assert_eq!(written.counts.total(), 3);
        let reader = BackupReader::open(&path).unwrap();
        assert_eq!(reader.header, written);
        let entries = read_all(&path).unwrap();
        let expected: Vec<_> = ENTRIES
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(entries, expected);
        // Only the file itself is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.bak");
        write(&path, ENTRIES);
        let good = std::fs::read(&path).unwrap();
        let bad = dir.path().join("bad.bak");
        for at in 0..good.len() {
            let mut flipped = good.clone();
            flipped[at] ^= 0x10;
            std::fs::write(&bad, &flipped).unwrap();
            assert!(
                read_all(&bad).is_err(),
                "a flipped byte at {at} was accepted"
            );
            std::fs::write(&bad, &good[..at]).unwrap();
            assert!(read_all(&bad).is_err(), "a file cut at {at} was accepted");
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&bad, &longer).unwrap();
        assert!(read_all(&bad).is_err());
    }

    #[test]
    fn an_unfinished_backup_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.bak");
        let mut writer = BackupWriter::create(&path, header()).unwrap();
        writer.push(b"cmd", b"x").unwrap();
        drop(writer);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
