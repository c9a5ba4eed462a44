//! The database directory as files, for `--bootstrap-from`: which files make
//! up a sled database, and a copy of them being written into a new replica's
//! data directory, with the marker that says the copy is not complete.
//!
//! sled keeps a database in `conf`, `db`, `snap.<lsn>` and `blobs/<lsn>`
//! files. A copy of them taken while nothing writes to the database, after a
//! flush, is what sled would find after a crash at that moment, which it
//! recovers from (snapshot.rs says why, and how a copy is checked).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Present in a data directory while a copy is written into it, and until
/// the copy has been opened and checked: such a directory is never served
/// (`Store::open` refuses it), and the next `--bootstrap-from` start removes
/// what it holds and copies again.
pub const INCOMPLETE_MARKER: &str = "bootstrap-incomplete";

/// Whether `name` (relative to the data directory, `/`-separated) is one of
/// sled's files: `conf`, `db`, `snap.<hex>` or `blobs/<digits>`. Anything
/// else (an absolute path, `..`, another file) is not.
pub fn is_database_file(name: &str) -> bool {
    match name.split_once('/') {
        None => {
            name == "conf"
                || name == "db"
                || name.strip_prefix("snap.").is_some_and(|lsn| {
                    !lsn.is_empty() && lsn.bytes().all(|b| b.is_ascii_hexdigit())
                })
        }
        Some(("blobs", blob)) => !blob.is_empty() && blob.bytes().all(|b| b.is_ascii_digit()),
        Some(_) => false,
    }
}

/// The database files in `dir` and their lengths, in a fixed order (`conf`,
/// `db`, snapshots, blobs).
pub fn list(dir: &Path) -> io::Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    let mut names = |dir: &Path, prefix: &str| -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let name = format!("{prefix}{name}");
            if is_database_file(&name) && entry.file_type()?.is_file() {
                files.push((name, entry.metadata()?.len()));
            }
        }
        Ok(())
    };
    names(dir, "")?;
    names(&dir.join("blobs"), "blobs/")?;
    let rank = |name: &str| match name {
        "conf" => 0,
        "db" => 1,
        n if n.starts_with("snap.") => 2,
        _ => 3,
    };
    files.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    Ok(files)
}

/// Removes the database files from `dir` (and `blobs/` once empty); other
/// files are left alone.
pub fn remove(dir: &Path) -> io::Result<()> {
    for (name, _) in list(dir)? {
        fs::remove_file(dir.join(&name))?;
    }
    match fs::remove_dir(dir.join("blobs")) {
        Err(e)
            if e.kind() != io::ErrorKind::NotFound
                && e.kind() != io::ErrorKind::DirectoryNotEmpty =>
        {
            Err(e)
        }
        _ => sync_dir(dir),
    }
}

/// fsync of a directory: the names created or removed in it are durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Count and CRC-32 of the file parts of a copy, in order: what the trailer
/// carries (`file_bytes`, `file_checksum`), computed again by the receiver.
#[derive(Default, Clone)]
pub struct FileDigest {
    bytes: u64,
    crc: crc32fast::Hasher,
}

impl FileDigest {
    pub fn add(&mut self, path: &str, offset: u64, data: &[u8]) {
        self.bytes += data.len() as u64;
        let path_len = u32::try_from(path.len()).unwrap_or(u32::MAX);
        let data_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.crc.update(&path_len.to_le_bytes());
        self.crc.update(path.as_bytes());
        self.crc.update(&offset.to_le_bytes());
        self.crc.update(&data_len.to_le_bytes());
        self.crc.update(data);
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn checksum(&self) -> u32 {
        self.crc.clone().finalize()
    }
}

/// A copy being written into a data directory, which is locked meanwhile
/// (`flock` on the directory), so that a second process cannot write into
/// it. The marker is written before the first file, and removed only by
/// `Marker::remove`, once the copy has been opened and checked; a copy given
/// up before its first file leaves the directory as it was.
pub struct Receiving {
    dir: PathBuf,
    /// The directory, locked.
    lock: File,
    marked: bool,
    /// The file being written: its name, handle and the offset its next part
    /// must start at.
    current: Option<(String, File, u64)>,
    written: Vec<String>,
    digest: FileDigest,
}

impl Receiving {
    /// Locks `dir`, which must hold no database files, to write a copy into.
    pub fn begin(dir: &Path) -> io::Result<Receiving> {
        let lock = File::open(dir)?;
        if lock.try_lock().is_err() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{} is locked: another query-service is copying into it",
                    dir.display()
                ),
            ));
        }
        Ok(Receiving {
            dir: dir.to_owned(),
            lock,
            marked: false,
            current: None,
            written: Vec::new(),
            digest: FileDigest::default(),
        })
    }

    /// Writes the marker, durably, before the first file.
    fn mark(&mut self) -> io::Result<()> {
        let mut file = File::create(self.dir.join(INCOMPLETE_MARKER))?;
        file.write_all(b"a copy of another replica's database is being written here; this directory is not served until it is complete\n")?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        self.marked = true;
        Ok(())
    }

    /// Appends one part: the next part of the file being written, or the
    /// first part of the next file. Refuses a name that is not a database
    /// file, a file sent twice, and a part that does not start where the
    /// previous one ended.
    pub fn write(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<(), String> {
        if !matches!(&self.current, Some((name, _, _)) if name == path) {
            if !is_database_file(path) {
                return Err(format!(
                    "the copy names a file that is not a database file: {path:?}"
                ));
            }
            if self.written.iter().any(|w| w == path) {
                return Err(format!("the copy sends {path} twice"));
            }
            self.close_current()?;
            if !self.marked {
                self.mark()
                    .map_err(|e| format!("writing {INCOMPLETE_MARKER}: {e}"))?;
            }
            let full = self.dir.join(path);
            if let Some(parent) = full.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            let file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&full)
                .map_err(|e| format!("creating {}: {e}", full.display()))?;
            self.current = Some((path.to_owned(), file, 0));
        }
        let Some((name, file, next)) = &mut self.current else {
            unreachable!("a current file was just set");
        };
        if offset != *next {
            return Err(format!(
                "a part of {name} starts at {offset}, not where the previous one ended ({next})"
            ));
        }
        file.write_all(data)
            .map_err(|e| format!("writing {name}: {e}"))?;
        *next += data.len() as u64;
        self.digest.add(path, offset, data);
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), String> {
        if let Some((name, file, _)) = self.current.take() {
            file.sync_all()
                .map_err(|e| format!("syncing {name}: {e}"))?;
            self.written.push(name);
        }
        Ok(())
    }

    /// What has been received so far.
    pub fn digest(&self) -> &FileDigest {
        &self.digest
    }

    /// Makes every file and name written durable; the marker stays.
    pub fn finish(mut self) -> Result<Marker, String> {
        self.close_current()?;
        if !self.written.iter().any(|w| w == "db") {
            return Err("the copy holds no db file".to_owned());
        }
        let dir = &self.dir;
        let blobs = dir.join("blobs");
        if blobs.is_dir() {
            sync_dir(&blobs).map_err(|e| format!("syncing {}: {e}", blobs.display()))?;
        }
        sync_dir(dir).map_err(|e| format!("syncing {}: {e}", dir.display()))?;
        Ok(Marker {
            dir: self.dir,
            lock: self.lock,
        })
    }
}

/// The marker of a copy that is written but not yet checked (and the lock
/// on its directory).
pub struct Marker {
    dir: PathBuf,
    lock: File,
}

impl Marker {
    /// The copy is complete and checked: the directory is an ordinary data
    /// directory from now on, across a crash too.
    pub fn remove(self) -> io::Result<()> {
        fs::remove_file(self.dir.join(INCOMPLETE_MARKER))?;
        sync_dir(&self.dir)?;
        drop(self.lock);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sleds_own_file_names_are_database_files() {
        for name in ["conf", "db", "snap.000000002491F791", "blobs/12345"] {
            assert!(is_database_file(name), "{name}");
        }
        for name in [
            "",
            "/db",
            "../db",
            "db/",
            "snap.",
            "snap.xyz",
            "blobs/",
            "blobs/../db",
            "blobs/1/2",
            "other/1",
            INCOMPLETE_MARKER,
            "conf2",
        ] {
            assert!(!is_database_file(name), "{name}");
        }
    }

    #[test]
    fn a_copy_is_written_in_order_and_its_digest_matches_the_senders() {
        let source = tempfile::tempdir().unwrap();
        fs::write(source.path().join("conf"), b"segment_size: 8\n").unwrap();
        fs::write(source.path().join("db"), vec![7u8; 10_000]).unwrap();
        fs::create_dir(source.path().join("blobs")).unwrap();
        fs::write(source.path().join("blobs/42"), b"blob").unwrap();
        fs::write(source.path().join("unrelated"), b"x").unwrap();
        let files = list(source.path()).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["conf", "db", "blobs/42"]);

        let target = tempfile::tempdir().unwrap();
        let mut receiving = Receiving::begin(target.path()).unwrap();
        // A second receiver of the same directory is refused while it is written.
        assert!(Receiving::begin(target.path()).is_err());
        // No marker before the first file.
        assert!(!target.path().join(INCOMPLETE_MARKER).exists());
        let mut sent = FileDigest::default();
        for (name, _) in &files {
            let bytes = fs::read(source.path().join(name)).unwrap();
            for (i, part) in bytes.chunks(4096).enumerate() {
                let offset = (i * 4096) as u64;
                sent.add(name, offset, part);
                receiving.write(name, offset, part).unwrap();
            }
        }
        assert_eq!(receiving.digest().checksum(), sent.checksum());
        assert_eq!(receiving.digest().bytes(), 10_000 + 16 + 4);
        let marker = receiving.finish().unwrap();
        assert!(target.path().join(INCOMPLETE_MARKER).exists());
        for (name, _) in &files {
            assert_eq!(
                fs::read(target.path().join(name)).unwrap(),
                fs::read(source.path().join(name)).unwrap()
            );
        }
        marker.remove().unwrap();
        assert!(!target.path().join(INCOMPLETE_MARKER).exists());

        remove(target.path()).unwrap();
        assert!(list(target.path()).unwrap().is_empty());
        assert!(!target.path().join("blobs").exists());
    }

    #[test]
    fn parts_out_of_order_foreign_names_and_repeats_are_refused() {
        let target = tempfile::tempdir().unwrap();
        let mut receiving = Receiving::begin(target.path()).unwrap();
        let error = receiving.write("../escape", 0, b"x").unwrap_err();
        assert!(error.contains("not a database file"), "{error}");
        assert!(!target.path().parent().unwrap().join("escape").exists());
        receiving.write("db", 0, b"abc").unwrap();
        let error = receiving.write("db", 5, b"def").unwrap_err();
        assert!(error.contains("starts at 5"), "{error}");
        receiving.write("conf", 0, b"c").unwrap();
        let error = receiving.write("db", 3, b"def").unwrap_err();
        assert!(error.contains("twice"), "{error}");
    }
}
