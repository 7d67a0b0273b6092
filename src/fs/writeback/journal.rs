//! The write-back journal on local disk: what `close()` promised is kept
//! until the bucket has it.
//!
//! Rules:
//! - One directory per journal, used by one mount at a time (`lock`,
//!   flock'd while open; a second mount is refused, not mixed in) and for
//!   one endpoint (`endpoint`: entries replayed against another store
//!   would land in the wrong place).
//! - One file per closed state of a file, `queue/<seq>.entry`: the
//!   content, then a trailer naming the bucket, the key, the size and the
//!   CRC32C of the content, then the trailer's length and a magic. It is
//!   written, `fdatasync`'d and its directory `fsync`'d before `close()`
//!   returns ([`Journal::append`]); an entry whose trailer or checksum does
//!   not hold was being written when the machine stopped (its close never
//!   returned) and is dropped when the journal is opened.
//! - An entry is removed once the bucket holds that state or a later one
//!   of the file, or the name was unlinked; removals are made durable
//!   before the operation that caused them returns, so that no replay
//!   brings back what was deleted or renamed away.
//! - Sequence numbers only grow, across mounts: of two entries for one
//!   key, the higher is the later close.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::fs::error::{FsError, FsResult, local_io};

const MAGIC: &[u8; 8] = b"BFWB0001";
/// Bytes copied at a time into an entry.
const CHUNK: usize = 1 << 20;

/// What the trailer of an entry says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub crc32c: u32,
}

/// An entry found in the journal.
#[derive(Debug, Clone)]
pub struct Found {
    pub seq: u64,
    pub info: EntryInfo,
}

pub struct Journal {
    dir: PathBuf,
    queue: PathBuf,
    /// Held for the journal's life: the flock.
    _lock: File,
    /// The queue directory, fsync'd after entries come and go.
    queue_dir: File,
    next_seq: AtomicU64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

impl Journal {
    /// Opens (creating) the journal in `dir` for `endpoint`; refuses one in
    /// use by another mount or written for another endpoint. Returns the
    /// journal and the entries it holds, oldest first (torn ones removed).
    pub fn open(dir: &Path, endpoint: &str) -> FsResult<(Journal, Vec<Found>)> {
        let io = |what: &str, e| local_io(format!("{what} {}", dir.display()), e);
        let queue = dir.join("queue");
        std::fs::create_dir_all(&queue).map_err(|e| io("creating the write-back journal", e))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(|e| io("opening the lock of", e))?;
        // SAFETY: a valid descriptor owned by `lock`.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(FsError::WriteBack(format!(
                "the write-back journal {} is in use by another bladefs (one still uploading \
                 its queue after an unmount holds it until it is done)",
                dir.display()
            )));
        }
        let id = dir.join("endpoint");
        match std::fs::read_to_string(&id) {
            Ok(was) if was != endpoint => {
                return Err(FsError::WriteBack(format!(
                    "the write-back journal {} belongs to endpoint {was}, not {endpoint}: \
                     mount that endpoint with it to upload what it holds, or use another directory",
                    dir.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::write(&id, endpoint).map_err(|e| io("writing the endpoint of", e))?;
            }
            Err(e) => return Err(io("reading the endpoint of", e)),
        }
        let queue_dir = File::open(&queue).map_err(|e| io("opening", e))?;
        let mut found = Vec::new();
        let mut torn = 0;
        for item in std::fs::read_dir(&queue).map_err(|e| io("listing", e))? {
            let item = item.map_err(|e| io("listing", e))?;
            let name = item.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".entry"))
                .and_then(|n| u64::from_str_radix(n, 16).ok())
            else {
                continue;
            };
            match read_entry(&item.path()) {
                Ok(Some(info)) => found.push(Found { seq, info }),
                Ok(None) => {
                    torn += 1;
                    let _ = std::fs::remove_file(item.path());
                }
                Err(e) => return Err(io("reading an entry of", e)),
            }
        }
        found.sort_by_key(|f| f.seq);
        if torn > 0 {
            tracing::info!(
                torn,
                "write-back journal: entries whose close never returned dropped"
            );
        }
        let next = found.last().map_or(1, |f| f.seq + 1);
        let journal = Journal {
            dir: dir.to_path_buf(),
            queue,
            _lock: lock,
            queue_dir,
            next_seq: AtomicU64::new(next),
        };
        journal.sync_dir()?;
        Ok((journal, found))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.queue.join(format!("{seq:016x}.entry"))
    }

    fn sync_dir(&self) -> FsResult<()> {
        self.queue_dir
            .sync_all()
            .map_err(|e| local_io("syncing the write-back journal", e))
    }

    /// Writes an entry for `bucket`/`key` whose `size` bytes `fill`
    /// produces (it is called with each offset and a buffer to fill), and
    /// makes it durable. Blocking. On failure nothing is left behind.
    pub fn append(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        mut fill: impl FnMut(u64, &mut [u8]) -> FsResult<()>,
    ) -> FsResult<u64> {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let path = self.path(seq);
        let written = (|| {
            let mut out = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&path)
                .map_err(|e| local_io("creating a write-back entry", e))?;
            let mut buf = vec![0u8; CHUNK.min(size as usize)];
            let mut crc = 0u32;
            let mut at = 0u64;
            while at < size {
                let n = CHUNK.min((size - at) as usize);
                fill(at, &mut buf[..n])?;
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(|e| local_io("writing a write-back entry", e))?;
                at += n as u64;
            }
            let info = EntryInfo {
                bucket: bucket.to_string(),
                key: key.to_string(),
                size,
                crc32c: crc,
            };
            let trailer = serde_json::to_vec(&info).expect("plain struct");
            out.write_all(&trailer)
                .and_then(|()| out.write_all(&(trailer.len() as u32).to_le_bytes()))
                .and_then(|()| out.write_all(MAGIC))
                .and_then(|()| out.sync_data())
                .map_err(|e| local_io("writing a write-back entry", e))?;
            self.sync_dir()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(seq)
    }

    /// Removes entries, durably. Blocking.
    pub fn remove(&self, seqs: &[u64]) -> FsResult<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        for &seq in seqs {
            match std::fs::remove_file(self.path(seq)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(local_io("removing a write-back entry", e)),
            }
        }
        self.sync_dir()
    }

    /// Bytes `offset..offset + buf.len()` of entry `seq`'s content. Blocking.
    pub fn read_at(&self, seq: u64, offset: u64, buf: &mut [u8]) -> FsResult<()> {
        File::open(self.path(seq))
            .and_then(|f| f.read_exact_at(buf, offset))
            .map_err(|e| local_io("reading a write-back entry", e))
    }
}

/// The trailer of the entry at `path`, if the entry is whole and its
/// content matches its checksum.
fn read_entry(path: &Path) -> std::io::Result<Option<EntryInfo>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len < 12 {
        return Ok(None);
    }
    let mut end = [0u8; 12];
    f.read_exact_at(&mut end, len - 12)?;
    if &end[4..] != MAGIC {
        return Ok(None);
    }
    let tlen = u64::from(u32::from_le_bytes(end[..4].try_into().expect("4 bytes")));
    if tlen + 12 > len {
        return Ok(None);
    }
    let mut trailer = vec![0u8; tlen as usize];
    f.read_exact_at(&mut trailer, len - 12 - tlen)?;
    let Ok(info) = serde_json::from_slice::<EntryInfo>(&trailer) else {
        return Ok(None);
    };
    if info.size + tlen + 12 != len {
        return Ok(None);
    }
    let mut crc = 0u32;
    let mut buf = vec![0u8; CHUNK];
    let mut left = info.size;
    while left > 0 {
        let n = CHUNK.min(left as usize);
        f.read_exact(&mut buf[..n])?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        left -= n as u64;
    }
    Ok((crc == info.crc32c).then_some(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill_from(data: &[u8]) -> impl FnMut(u64, &mut [u8]) -> FsResult<()> + '_ {
        move |at, buf| {
            buf.copy_from_slice(&data[at as usize..at as usize + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn entries_survive_reopening_in_order_and_torn_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        {
            let (j, found) = Journal::open(dir.path(), "http://a").unwrap();
            assert!(found.is_empty());
            assert_eq!(j.append("b", "k1", 3, fill_from(b"abc")).unwrap(), 1);
            assert_eq!(
                j.append("b", "dir/k2", big.len() as u64, fill_from(&big))
                    .unwrap(),
                2
            );
            assert_eq!(j.append("b", "k3", 0, fill_from(b"")).unwrap(), 3);
            j.remove(&[3]).unwrap();
        }
        // A close that never returned: content without its trailer, and
        // one whose content changed after its checksum.
        std::fs::write(dir.path().join("queue/0000000000000009.entry"), b"partial").unwrap();
        let p2 = dir.path().join("queue/0000000000000002.entry");
        let mut bytes = std::fs::read(&p2).unwrap();
        std::fs::write(dir.path().join("queue/000000000000000a.entry"), {
            bytes[5] ^= 1;
            &bytes
        })
        .unwrap();
        let (j, found) = Journal::open(dir.path(), "http://a").unwrap();
        let keys: Vec<(u64, &str, u64)> = found
            .iter()
            .map(|f| (f.seq, f.info.key.as_str(), f.info.size))
            .collect();
        assert_eq!(keys, vec![(1, "k1", 3), (2, "dir/k2", big.len() as u64)]);
        assert!(!dir.path().join("queue/0000000000000009.entry").exists());
        let mut buf = vec![0u8; big.len()];
        j.read_at(2, 0, &mut buf).unwrap();
        assert_eq!(buf, big);
        // New entries come after every one found, even those dropped.
        assert_eq!(j.append("b", "k4", 1, fill_from(b"x")).unwrap(), 3);
    }

    #[test]
    fn a_journal_serves_one_mount_of_one_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (held, _) = Journal::open(dir.path(), "http://a").unwrap();
        let e = Journal::open(dir.path(), "http://a").unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        drop(held);
        let e = Journal::open(dir.path(), "http://b").unwrap_err();
        assert!(
            e.to_string().contains("belongs to endpoint http://a"),
            "{e}"
        );
        Journal::open(dir.path(), "http://a").unwrap();
    }

    #[test]
    fn a_failed_fill_leaves_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), "e").unwrap();
        let e = j
            .append("b", "k", 10, |_, _| Err(FsError::Internal("disk")))
            .unwrap_err();
        assert!(matches!(e, FsError::Internal(_)));
        drop(j);
        let (_, found) = Journal::open(dir.path(), "e").unwrap();
        assert!(found.is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("queue")).unwrap().count(),
            0
        );
    }
}
