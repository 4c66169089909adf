//! Unwind tables kept on disk between runs, by FileID.
//!
//! Building a table is the largest cost a new executable brings (`cc1`:
//! 480k rows, ~60 ms of parsing `.eh_frame` and converting), and every
//! `record` starts cold: the first compiler of a build is sampled for that
//! long before its table is in the kernel, and those samples stop at its
//! first frame. Read back from here, the same table costs a few
//! milliseconds. The cache is an optimisation only: a file that is missing,
//! unreadable, truncated, of another format or corrupt (checksum) is a miss
//! (and is removed), and a write that fails (a full disk, a read-only
//! filesystem) is counted and skipped.
//!
//! One file per table, `<FileID hex>.rows`, written to a temporary name and
//! renamed, so readers never see half a file. The directory is kept under a
//! byte budget by removing the files least recently used (their mtime is
//! refreshed on every hit).

use libpf::FileId;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use support::abi::UnwindRow;

/// Where `record` and `agent` keep tables unless told otherwise.
pub const DEFAULT_DIR: &str = "/var/cache/ebpf-profiler/tables";
/// Default byte budget of the directory.
pub const DEFAULT_BUDGET: u64 = 256 << 20;

const MAGIC: [u8; 8] = *b"EPFROWS\0";
/// Bump when the rows a file produces change (the `unwind` crate's rules or
/// `rows::convert`): older files are then misses, never used.
const FORMAT: u32 = 3;
const HEADER: usize = 8 + 4 + 16 + 8 + 4 + 4;

/// Counts of the cache's work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Files found but not usable (other format, truncated, checksum).
    pub rejected: u64,
    pub writes: u64,
    pub write_errors: u64,
    /// Files removed to stay within the budget.
    pub evicted: u64,
}

pub struct TableCache {
    dir: PathBuf,
    budget: u64,
    pub stats: CacheStats,
}

impl TableCache {
    /// Opens (creating) the cache directory, readable by its owner only.
    pub fn open(dir: impl Into<PathBuf>, budget: u64) -> io::Result<TableCache> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        Ok(TableCache {
            dir,
            budget,
            stats: CacheStats::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: FileId) -> PathBuf {
        self.dir
            .join(format!("{:016x}{:016x}.rows", id.hi(), id.lo()))
    }

    /// The rows cached for the file `id` of `file_len` bytes.
    pub fn get(&mut self, id: FileId, file_len: u64) -> Option<Vec<UnwindRow>> {
        let path = self.path(id);
        let mut bytes = Vec::new();
        match File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)) {
            Ok(_) => {}
            Err(_) => {
                self.stats.misses += 1;
                return None;
            }
        }
        match decode(&bytes, id, file_len) {
            Some(rows) => {
                self.stats.hits += 1;
                // Least recently used goes first when over budget.
                if let Ok(f) = File::options().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(rows)
            }
            None => {
                self.stats.rejected += 1;
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores the rows of the file `id`; failures are counted, not returned
    /// (the cache is an optimisation).
    pub fn put(&mut self, id: FileId, file_len: u64, rows: &[UnwindRow]) {
        let path = self.path(id);
        let tmp = self
            .dir
            .join(format!(".{:016x}.{}.tmp", id.hi(), std::process::id()));
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(&encode(id, file_len, rows)))
            .and_then(|()| fs::rename(&tmp, &path));
        match written {
            Ok(()) => {
                self.stats.writes += 1;
                self.trim();
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                if self.stats.write_errors == 0 {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the unwind table cache; tables are built again at every start");
                }
                self.stats.write_errors += 1;
            }
        }
    }

    /// Removes the least recently used files until the directory fits
    /// 90 % of the budget.
    fn trim(&mut self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "rows"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        if total <= self.budget {
            return;
        }
        files.sort();
        for (_, len, path) in files {
            if total <= self.budget / 10 * 9 {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
                self.stats.evicted += 1;
            }
        }
    }
}

fn encode(id: FileId, file_len: u64, rows: &[UnwindRow]) -> Vec<u8> {
    let mut body = Vec::with_capacity(rows.len() * UnwindRow::SIZE);
    for r in rows {
        let mut b = [0u8; UnwindRow::SIZE];
        // Cannot fail: the buffer has exactly SIZE bytes.
        let _ = r.write_to(&mut b);
        body.extend_from_slice(&b);
    }
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&file_len.to_le_bytes());
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode(bytes: &[u8], id: FileId, file_len: u64) -> Option<Vec<UnwindRow>> {
    let header = bytes.get(..HEADER)?;
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    if header[..8] != MAGIC || u32_at(8) != FORMAT || header[12..28] != id.to_be_bytes() {
        return None;
    }
    let (len, count, crc) = (u64_at(28), u32_at(36) as usize, u32_at(40));
    let body = &bytes[HEADER..];
    if len != file_len || body.len() != count.checked_mul(UnwindRow::SIZE)? {
        return None;
    }
    if crc32fast::hash(body) != crc {
        return None;
    }
    body.chunks_exact(UnwindRow::SIZE)
        .map(|c| UnwindRow::from_bytes(c).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: u32) -> Vec<UnwindRow> {
        (0..n)
            .map(|i| UnwindRow {
                address: i * 16,
                cfa_offset: (i % 100) as u16,
                kind: (i % 4) as u8,
                fp_offset: -((i % 3) as i8),
            })
            .collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("table-cache-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_table_comes_back_as_written() {
        let dir = temp_dir("roundtrip");
        let mut c = TableCache::open(&dir, DEFAULT_BUDGET).unwrap();
        let id = FileId::new(1, 2);
        assert_eq!(c.get(id, 1000), None);
        c.put(id, 1000, &rows(5000));
        assert_eq!(c.get(id, 1000), Some(rows(5000)));
        // Another file, or the same id with another length: not this table.
        assert_eq!(c.get(FileId::new(1, 3), 1000), None);
        assert_eq!(c.get(id, 1001), None);
        assert_eq!(c.stats.hits, 1);
        assert_eq!(c.stats.writes, 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn damaged_files_are_misses_and_removed() {
        let dir = temp_dir("damaged");
        let mut c = TableCache::open(&dir, DEFAULT_BUDGET).unwrap();
        let id = FileId::new(7, 7);
        let path = c.path(id);
        let good = encode(id, 10, &rows(100));
        let mut flipped = good.clone();
        flipped[HEADER + 50] ^= 1;
        let mut old_format = good.clone();
        old_format[8] = 1;
        for bad in [
            flipped,
            old_format,
            good[..good.len() - 1].to_vec(),
            good[..10].to_vec(),
            Vec::new(),
        ] {
            fs::write(&path, &bad).unwrap();
            assert_eq!(c.get(id, 10), None);
            assert!(!path.exists(), "a rejected file is removed");
        }
        assert_eq!(c.stats.rejected, 5);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_budget_removes_least_recently_used_files() {
        let dir = temp_dir("budget");
        let one = encode(FileId::new(0, 0), 1, &rows(1000)).len() as u64;
        let mut c = TableCache::open(&dir, one * 2 + one / 2).unwrap();
        let ids: Vec<FileId> = (1..=3).map(|i| FileId::new(i, i)).collect();
        c.put(ids[0], 1, &rows(1000));
        c.put(ids[1], 1, &rows(1000));
        // Used after the second was written: the second is now the oldest.
        let back = SystemTime::now() - std::time::Duration::from_secs(60);
        File::options()
            .write(true)
            .open(c.path(ids[1]))
            .unwrap()
            .set_modified(back)
            .unwrap();
        c.put(ids[2], 1, &rows(1000));
        assert!(c.get(ids[1], 1).is_none(), "least recently used went");
        assert!(c.get(ids[0], 1).is_some());
        assert!(c.get(ids[2], 1).is_some());
        assert_eq!(c.stats.evicted, 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unwritable_directory_is_counted_not_fatal() {
        let dir = temp_dir("readonly");
        let mut c = TableCache::open(&dir, DEFAULT_BUDGET).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        fs::write(&dir, b"not a directory").unwrap();
        c.put(FileId::new(1, 1), 1, &rows(10));
        assert_eq!(c.stats.write_errors, 1);
        assert_eq!(c.get(FileId::new(1, 1), 1), None);
        fs::remove_file(dir).unwrap();
    }
}
