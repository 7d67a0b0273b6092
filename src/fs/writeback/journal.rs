//! The write-back journal on local disk: what `close()` promised is kept
//! until the bucket has it.
//!
//! Rules:
//! - One directory per journal, used by one mount at a time (`lock`,
//!   flock'd while open; a second mount is refused, not mixed in) and for
//!   one endpoint (`endpoint`: entries replayed against another store
//!   would land in the wrong place).
//! - A log of records in segment files `queue/<first seq>.log`, appended
//!   to and never rewritten: no file is created or removed per close
//!   (creating and deleting inodes cost more than the data on ext4). A
//!   record is a header (magic, kind, sequence number, payload length and
//!   the header's CRC32C), the payload, and the payload's CRC32C.
//!   - An *entry* (a close) holds the bucket, key and size, then the
//!     content. Its header is written when its place is taken, under the
//!     log's lock, so the headers of a segment always chain; its content
//!     is written outside the lock, then `fdatasync`'d before `close()`
//!     returns ([`Journal::append`]).
//!   - A *removal* lists entries the bucket now holds (or whose name was
//!     unlinked or renamed away); it is `fdatasync`'d before the operation
//!     that caused it returns, so no replay brings back what was deleted.
//! - Reading the log back ([`Journal::open`]): a record whose payload does
//!   not match its checksum was being written when the machine stopped
//!   (its close never returned) and is skipped; a header that does not
//!   hold ends the segment (nothing after it was promised).
//! - A segment goes once every entry in it is removed, oldest first (a
//!   later one may hold the removals of an earlier one's entries). Live
//!   entries of an old segment are copied to the end of the log so that
//!   one file whose upload keeps failing does not keep the log growing.
//! - Sequence numbers only grow, across mounts: of two entries for one
//!   key, the higher is the later close. Every record carries one (a
//!   removal, the highest given so far), and a segment is named after
//!   every one before it, so reading segments in name order is reading
//!   the log in the order written. Appending after a restart starts a new
//!   segment, never after a torn tail.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::fs::error::{FsError, FsResult, local_io};

const MAGIC: &[u8; 4] = b"BFWJ";
const HEADER: u64 = 32;
const FOOTER: u64 = 4;
const ENTRY: u8 = 1;
const REMOVAL: u8 = 2;
/// Bytes copied at a time into an entry.
const CHUNK: usize = 1 << 20;
/// A segment past this size is closed and a new one begun.
const SEGMENT_ROLL: u64 = 64 << 20;
/// Removed entries from this size on give their disk blocks back at once.
const PUNCH_FROM: u64 = 64 << 10;
/// Segments behind the active one before the oldest one's live entries
/// are copied forward.
const COMPACT_AFTER: usize = 3;

/// What an entry says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    pub bucket: String,
    pub key: String,
    pub size: u64,
}

/// An entry found in the journal.
#[derive(Debug, Clone)]
pub struct Found {
    pub seq: u64,
    pub info: EntryInfo,
}

/// Where an entry's content is.
#[derive(Clone, Copy)]
struct Place {
    segment: u64,
    /// Offset of the content in the segment file.
    data: u64,
    size: u64,
}

struct Segment {
    file: Arc<File>,
    /// Entries in it not removed.
    live: usize,
}

struct Log {
    segments: BTreeMap<u64, Segment>,
    /// The segment appended to, and its length.
    active: u64,
    end: u64,
    next_seq: u64,
    index: HashMap<u64, (Place, EntryInfo)>,
}

pub struct Journal {
    dir: PathBuf,
    queue: PathBuf,
    /// Held for the journal's life: the flock.
    _lock: File,
    /// The queue directory, fsync'd when segments come and go.
    queue_dir: File,
    log: Mutex<Log>,
    /// Held by each removal across its compaction.
    removing: Mutex<()>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

fn header(kind: u8, seq: u64, len: u64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..4].copy_from_slice(MAGIC);
    h[4] = kind;
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..24].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A record's kind, sequence number and payload length, if its header holds.
fn parse_header(h: &[u8; HEADER as usize]) -> Option<(u8, u64, u64)> {
    let crc = u32::from_le_bytes(h[28..].try_into().expect("4 bytes"));
    if &h[..4] != MAGIC || crc32c::crc32c(&h[..28]) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
    Some((h[4], seq, len))
}

impl Journal {
    /// Opens (creating) the journal in `dir` for `endpoint`; refuses one in
    /// use by another mount or written for another endpoint. Returns the
    /// journal and the entries it holds, oldest first.
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
        let mut ids = Vec::new();
        for item in std::fs::read_dir(&queue).map_err(|e| io("listing", e))? {
            let name = item.map_err(|e| io("listing", e))?.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| u64::from_str_radix(n, 16).ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut log = Log {
            segments: BTreeMap::new(),
            active: 0,
            end: 0,
            next_seq: 1,
            index: HashMap::new(),
        };
        let mut torn = 0;
        let mut removed = HashSet::new();
        for id in ids {
            let path = queue.join(format!("{id:016x}.log"));
            let file = Arc::new(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| io("opening a segment of", e))?,
            );
            torn += scan(&file, id, &mut log, &mut removed)
                .map_err(|e| io("reading a segment of", e))?;
            log.segments.insert(id, Segment { file, live: 0 });
        }
        for (place, _) in log.index.values() {
            log.segments.get_mut(&place.segment).expect("scanned").live += 1;
        }
        if torn > 0 {
            tracing::info!(
                torn,
                "write-back journal: entries whose close never returned dropped"
            );
        }
        let mut found: Vec<Found> = log
            .index
            .iter()
            .map(|(&seq, (_, info))| Found {
                seq,
                info: info.clone(),
            })
            .collect();
        found.sort_by_key(|f| f.seq);
        let journal = Journal {
            dir: dir.to_path_buf(),
            queue,
            _lock: lock,
            queue_dir,
            log: Mutex::new(log),
            removing: Mutex::new(()),
        };
        {
            let mut log = journal.lock();
            journal.roll(&mut log)?;
            journal.drop_dead(&mut log)?;
        }
        Ok((journal, found))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().expect("journal lock")
    }

    fn sync_dir(&self) -> FsResult<()> {
        self.queue_dir
            .sync_all()
            .map_err(|e| local_io("syncing the write-back journal", e))
    }

    /// Begins a new segment (durably named) and appends there from now on.
    fn roll(&self, log: &mut Log) -> FsResult<()> {
        // After every segment there is, so that reading in name order
        // reads in the order written; entries in it number from its name.
        let after = log.segments.keys().next_back().map_or(0, |last| last + 1);
        let id = log.next_seq.max(after);
        log.next_seq = id;
        let path = self.queue.join(format!("{id:016x}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| local_io("creating a write-back journal segment", e))?;
        self.sync_dir()?;
        log.segments.insert(
            id,
            Segment {
                file: Arc::new(file),
                live: 0,
            },
        );
        log.active = id;
        log.end = 0;
        Ok(())
    }

    /// Takes the place of a record of `len` payload bytes at the end of
    /// the log and writes its header there. Under the log's lock.
    fn reserve(
        &self,
        log: &mut Log,
        kind: u8,
        seq: u64,
        len: u64,
    ) -> FsResult<(u64, Arc<File>, u64)> {
        if log.end >= SEGMENT_ROLL {
            self.roll(log)?;
        }
        let file = log.segments[&log.active].file.clone();
        let at = log.end;
        file.write_all_at(&header(kind, seq, len), at)
            .map_err(|e| local_io("writing the write-back journal", e))?;
        log.end = at + HEADER + len + FOOTER;
        Ok((log.active, file, at))
    }

    /// Writes an entry for `bucket`/`key` whose `size` bytes `fill`
    /// produces (it is called with each offset and a buffer to fill), and
    /// makes it durable. Blocking. Returns the entry's sequence number.
    pub fn append(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        fill: impl FnMut(u64, &mut [u8]) -> FsResult<()>,
    ) -> FsResult<u64> {
        self.append_as(None, bucket, key, size, fill)
    }

    /// [`Journal::append`] under a fresh sequence number, or under `copy`'s
    /// (an entry copied forward).
    fn append_as(
        &self,
        copy: Option<u64>,
        bucket: &str,
        key: &str,
        size: u64,
        mut fill: impl FnMut(u64, &mut [u8]) -> FsResult<()>,
    ) -> FsResult<u64> {
        let info = EntryInfo {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size,
        };
        let meta = serde_json::to_vec(&info).expect("plain struct");
        let len = 4 + meta.len() as u64 + size;
        let (seq, segment, file, at) = {
            let mut log = self.lock();
            let seq = copy.unwrap_or_else(|| {
                log.next_seq += 1;
                log.next_seq - 1
            });
            let (segment, file, at) = self.reserve(&mut log, ENTRY, seq, len)?;
            (seq, segment, file, at)
        };
        let io = |e| local_io("writing the write-back journal", e);
        let mut crc = 0u32;
        let mut head = (meta.len() as u32).to_le_bytes().to_vec();
        head.extend_from_slice(&meta);
        crc = crc32c::crc32c_append(crc, &head);
        file.write_all_at(&head, at + HEADER).map_err(io)?;
        let data = at + HEADER + head.len() as u64;
        let mut buf = vec![0u8; CHUNK.min(size as usize)];
        let mut done = 0u64;
        while done < size {
            let n = CHUNK.min((size - done) as usize);
            fill(done, &mut buf[..n])?;
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            file.write_all_at(&buf[..n], data + done).map_err(io)?;
            done += n as u64;
        }
        file.write_all_at(&crc.to_le_bytes(), data + size)
            .map_err(io)?;
        file.sync_data().map_err(io)?;
        let mut log = self.lock();
        log.segments
            .get_mut(&segment)
            .ok_or(FsError::Internal("a journal segment went while written"))?
            .live += 1;
        let place = Place {
            segment,
            data,
            size,
        };
        if let Some((old, _)) = log.index.insert(seq, (place, info)) {
            // Copied forward: the old place is dead.
            if let Some(s) = log.segments.get_mut(&old.segment) {
                s.live -= 1;
            }
        }
        Ok(seq)
    }

    /// Removes entries; durably before returning when `durable`, else with
    /// the log's next sync (a replay before then may upload them again).
    /// Blocking.
    pub fn remove(&self, seqs: &[u64], durable: bool) -> FsResult<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        // No copy forward may put back an entry removed meanwhile.
        let _removing = self.removing.lock().expect("journal removal lock");
        let payload: Vec<u8> = seqs.iter().flat_map(|s| s.to_le_bytes()).collect();
        let file = {
            let mut log = self.lock();
            // A removal carries the highest number given so far, so that
            // a log of removals alone still tells the next mount where
            // numbering stands.
            let high = log.next_seq - 1;
            let (_, file, at) = self.reserve(&mut log, REMOVAL, high, payload.len() as u64)?;
            let io = |e| local_io("writing the write-back journal", e);
            file.write_all_at(&payload, at + HEADER).map_err(io)?;
            file.write_all_at(
                &crc32c::crc32c(&payload).to_le_bytes(),
                at + HEADER + payload.len() as u64,
            )
            .map_err(io)?;
            for seq in seqs {
                if let Some((place, _)) = log.index.remove(seq)
                    && let Some(s) = log.segments.get_mut(&place.segment)
                {
                    s.live -= 1;
                    if place.size >= PUNCH_FROM {
                        punch(&s.file, place.data, place.size);
                    }
                }
            }
            file
        };
        if durable {
            file.sync_data()
                .map_err(|e| local_io("syncing the write-back journal", e))?;
        }
        self.compact()?;
        let mut log = self.lock();
        self.drop_dead(&mut log)
    }

    /// Makes every removal so far durable. Blocking.
    pub fn sync(&self) -> FsResult<()> {
        let file = {
            let log = self.lock();
            log.segments[&log.active].file.clone()
        };
        file.sync_data()
            .map_err(|e| local_io("syncing the write-back journal", e))
    }

    /// Deletes the oldest segments while no entry in them is live.
    fn drop_dead(&self, log: &mut Log) -> FsResult<()> {
        if log
            .segments
            .iter()
            .next()
            .is_some_and(|(&id, s)| s.live == 0 && id != log.active)
        {
            // The removals that emptied it must outlive it.
            log.segments[&log.active]
                .file
                .sync_data()
                .map_err(|e| local_io("syncing the write-back journal", e))?;
        }
        let mut dropped = false;
        while let Some((&id, s)) = log.segments.iter().next() {
            if s.live > 0 || id == log.active {
                break;
            }
            log.segments.remove(&id);
            std::fs::remove_file(self.queue.join(format!("{id:016x}.log")))
                .map_err(|e| local_io("removing a write-back journal segment", e))?;
            dropped = true;
        }
        if dropped {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Copies the live entries of the oldest segment to the end of the log
    /// once it is far behind, so that it can go.
    fn compact(&self) -> FsResult<()> {
        let copies: Vec<(u64, Place, EntryInfo, Arc<File>)> = {
            let log = self.lock();
            if log.segments.len() <= COMPACT_AFTER {
                return Ok(());
            }
            let (&oldest, s) = log.segments.iter().next().expect("segments");
            if s.live == 0 {
                return Ok(());
            }
            log.index
                .iter()
                .filter(|(_, (p, _))| p.segment == oldest)
                .map(|(&seq, (p, i))| (seq, *p, i.clone(), s.file.clone()))
                .collect()
        };
        for (seq, place, info, file) in copies {
            self.append_as(Some(seq), &info.bucket, &info.key, info.size, |at, buf| {
                file.read_exact_at(buf, place.data + at)
                    .map_err(|e| local_io("reading the write-back journal", e))
            })?;
        }
        Ok(())
    }

    /// Bytes `offset..offset + buf.len()` of entry `seq`'s content. Blocking.
    pub fn read_at(&self, seq: u64, offset: u64, buf: &mut [u8]) -> FsResult<()> {
        let (place, file) = {
            let log = self.lock();
            let (place, _) = log.index.get(&seq).ok_or(FsError::Internal(
                "a write-back entry read after its removal",
            ))?;
            (*place, log.segments[&place.segment].file.clone())
        };
        if offset + buf.len() as u64 > place.size {
            return Err(FsError::Internal("a read past a write-back entry"));
        }
        file.read_exact_at(buf, place.data + offset)
            .map_err(|e| local_io("reading the write-back journal", e))
    }
}

/// Frees the disk blocks of a removed entry's content (the segment keeps
/// its length, so offsets hold); best effort: a filesystem without holes
/// frees them with the segment.
fn punch(file: &File, offset: u64, len: u64) {
    // SAFETY: a valid descriptor; the range is inside the file.
    unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        );
    }
}

/// Reads segment `id` into `log`: its entries join the index, its
/// removals take them out. Returns the torn entries skipped.
fn scan(file: &File, id: u64, log: &mut Log, removed: &mut HashSet<u64>) -> std::io::Result<usize> {
    let len = file.metadata()?.len();
    let mut at = 0u64;
    let mut torn = 0;
    while at + HEADER + FOOTER <= len {
        let mut h = [0u8; HEADER as usize];
        file.read_exact_at(&mut h, at)?;
        let Some((kind, seq, plen)) = parse_header(&h) else {
            break;
        };
        let end = at + HEADER + plen + FOOTER;
        if end > len {
            torn += usize::from(kind == ENTRY);
            break;
        }
        log.next_seq = log.next_seq.max(seq + 1);
        let mut crc = 0u32;
        let mut buf = vec![0u8; CHUNK];
        let mut left = plen;
        let mut pos = at + HEADER;
        // An entry's head is in its first chunk (the content is not kept);
        // a removal's list is kept whole.
        let mut first = Vec::new();
        while left > 0 {
            let n = CHUNK.min(left as usize);
            file.read_exact_at(&mut buf[..n], pos)?;
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            if first.is_empty() || kind == REMOVAL {
                first.extend_from_slice(&buf[..n]);
            }
            pos += n as u64;
            left -= n as u64;
        }
        let mut footer = [0u8; 4];
        file.read_exact_at(&mut footer, at + HEADER + plen)?;
        let whole = u32::from_le_bytes(footer) == crc;
        match kind {
            ENTRY if whole => {
                let parsed = first
                    .get(..4)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                    .and_then(|m| {
                        let info =
                            serde_json::from_slice::<EntryInfo>(first.get(4..4 + m)?).ok()?;
                        Some((m, info))
                    });
                match parsed {
                    Some((m, info)) if 4 + m as u64 + info.size == plen => {
                        let place = Place {
                            segment: id,
                            data: at + HEADER + 4 + m as u64,
                            size: info.size,
                        };
                        if !removed.contains(&seq) {
                            log.index.insert(seq, (place, info));
                        }
                    }
                    _ => torn += 1,
                }
            }
            ENTRY => torn += 1,
            REMOVAL if whole => {
                for s in first.chunks_exact(8) {
                    let s = u64::from_le_bytes(s.try_into().expect("8 bytes"));
                    log.index.remove(&s);
                    removed.insert(s);
                }
            }
            _ => {}
        }
        at = end;
    }
    Ok(torn)
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

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("queue"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
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
            j.remove(&[3], true).unwrap();
            assert_eq!(j.append("b", "k4", 5, fill_from(b"torn!")).unwrap(), 4);
        }
        // The last close never returned: a byte of its content is not the
        // one its checksum covers.
        let seg = segments(dir.path()).pop().unwrap();
        let bytes = std::fs::read(&seg).unwrap();
        let at = bytes.windows(5).rposition(|w| w == b"torn!").unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(b"T", at as u64).unwrap();
        let (j, found) = Journal::open(dir.path(), "http://a").unwrap();
        let keys: Vec<(u64, &str, u64)> = found
            .iter()
            .map(|f| (f.seq, f.info.key.as_str(), f.info.size))
            .collect();
        assert_eq!(keys, vec![(1, "k1", 3), (2, "dir/k2", big.len() as u64)]);
        let mut buf = vec![0u8; big.len()];
        j.read_at(2, 0, &mut buf).unwrap();
        assert_eq!(buf, big);
        let mut buf = [0u8; 2];
        j.read_at(1, 1, &mut buf).unwrap();
        assert_eq!(&buf, b"bc");
        // New entries come after every one found, even those dropped.
        assert_eq!(j.append("b", "k5", 1, fill_from(b"x")).unwrap(), 5);
        // Once every entry is removed, the segments go.
        j.remove(&[1, 2, 5], false).unwrap();
        drop(j);
        let (_, found) = Journal::open(dir.path(), "http://a").unwrap();
        assert!(found.is_empty());
        assert_eq!(segments(dir.path()).len(), 1, "only the new active one");
    }

    #[test]
    fn a_tail_cut_short_ends_the_log_and_loses_nothing_before_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (j, _) = Journal::open(dir.path(), "e").unwrap();
            j.append("b", "a", 4, fill_from(b"aaaa")).unwrap();
            j.append("b", "z", 4, fill_from(b"zzzz")).unwrap();
        }
        let seg = segments(dir.path()).pop().unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (_, found) = Journal::open(dir.path(), "e").unwrap();
        let keys: Vec<&str> = found.iter().map(|f| f.info.key.as_str()).collect();
        assert_eq!(keys, vec!["a"]);
    }

    /// A mount that only replays (its segment holds removals, no entry)
    /// must not let the next one number entries from 1 again: a removal in
    /// a later-named segment would then take a new entry of the same
    /// number.
    #[test]
    fn numbers_keep_growing_across_mounts_that_only_remove() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Journal::open(dir.path(), "e").unwrap();
        let (j, _) = open();
        j.append("b", "x", 1, fill_from(b"x")).unwrap();
        drop(j);
        let (j, found) = open();
        j.remove(&[found[0].seq], true).unwrap();
        drop(j);
        let (j, found) = open();
        assert!(found.is_empty());
        j.append("b", "y", 1, fill_from(b"y")).unwrap();
        drop(j);
        let (_, found) = open();
        let keys: Vec<&str> = found.iter().map(|f| f.info.key.as_str()).collect();
        assert_eq!(keys, vec!["y"]);
    }

    #[test]
    fn a_removal_of_more_entries_than_one_chunk_holds_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), "e").unwrap();
        let real: Vec<u64> = (0..3)
            .map(|i| j.append("b", &format!("k{i}"), 0, fill_from(b"")).unwrap())
            .collect();
        // The real ones last, past the first chunk of the record.
        let mut seqs: Vec<u64> = (1000..1000 + (CHUNK / 8) as u64).collect();
        seqs.extend(&real);
        j.remove(&seqs, true).unwrap();
        drop(j);
        let (_, found) = Journal::open(dir.path(), "e").unwrap();
        assert_eq!(found.len(), 0);
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
        j.append("b", "after", 1, fill_from(b"x")).unwrap();
        drop(j);
        let (_, found) = Journal::open(dir.path(), "e").unwrap();
        let keys: Vec<&str> = found.iter().map(|f| f.info.key.as_str()).collect();
        assert_eq!(keys, vec!["after"]);
    }

    #[test]
    fn an_entry_that_stays_does_not_keep_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), "e").unwrap();
        let stuck = j.append("b", "stuck", 3, fill_from(b"old")).unwrap();
        let chunk = vec![7u8; (SEGMENT_ROLL / 2) as usize];
        for i in 0..12 {
            let seq = j
                .append("b", &format!("k{i}"), chunk.len() as u64, fill_from(&chunk))
                .unwrap();
            j.remove(&[seq], false).unwrap();
        }
        assert!(
            segments(dir.path()).len() <= COMPACT_AFTER + 1,
            "{:?}",
            segments(dir.path())
        );
        drop(j);
        let (j, found) = Journal::open(dir.path(), "e").unwrap();
        let keys: Vec<(u64, &str)> = found.iter().map(|f| (f.seq, f.info.key.as_str())).collect();
        assert_eq!(keys, vec![(stuck, "stuck")]);
        let mut buf = [0u8; 3];
        j.read_at(stuck, 0, &mut buf).unwrap();
        assert_eq!(&buf, b"old");
    }
}
