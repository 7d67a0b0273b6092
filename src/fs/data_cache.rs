//! The local data cache (`--data-cache DIR`): blocks of objects kept on
//! local disk, so that re-reads and random reads of them are served
//! without the store.
//!
//! Design:
//! - A block is [`BLOCK`] bytes of one object, aligned (the last one is
//!   shorter). It is named by bucket + key + ETag + index: an object
//!   rewritten has another ETag, so its old blocks are never served for it
//!   (they age out). Readers ask with the ETag their open saw, the one
//!   their GETs are guarded with (If-Match).
//! - One file per block, `DIR/bladefs-cache-v1/blocks/XX/HASH.N`, written
//!   under a temporary name and renamed, so no reader sees half a block.
//!   The file starts with a header naming the block (bucket, key, ETag,
//!   index, length) and the CRC32C of each 64 KiB of its bytes: bytes are
//!   served only if all of that matches (a read checks the segments it
//!   reads). A cache left by an earlier mount or damaged on
//!   disk is validated, not trusted; a block that fails is removed and
//!   fetched again.
//! - LRU under `--data-cache-size`: the index (in memory; rebuilt from the
//!   directory at mount in order of the files' modification times, which a
//!   hit moves to now) counts the files' bytes, and a block stored past the
//!   bound evicts the least recently used. The index lock guards maps only:
//!   files are read, written and removed outside it, in blocking tasks,
//!   and a file gone under a reader is a miss.
//! - One mount per directory: an exclusive lock on `lock` in it, held while
//!   the mount lives; a second mount is refused, naming the first's pid.
//! - Disk errors (full, read-only) make the cache miss or skip a store,
//!   logged once; they never fail a read.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes per cached block (the last block of an object is shorter).
pub const BLOCK: u64 = 1024 * 1024;

/// The layout's directory under `--data-cache`: a later layout gets
/// another name and leaves this one alone.
const LAYOUT: &str = "bladefs-cache-v1";
const MAGIC: &[u8; 16] = b"bladefs-block-1\n";
/// Longest header read back (bucket, key and ETag are bounded by S3).
const MAX_HEADER: u32 = 8192;
/// Bytes under one checksum: a read of a few KiB of a cached block reads
/// and checks only the segments it touches, not the whole block.
pub const SEGMENT: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DataCacheError {
    #[error("data cache {dir}: {what}: {source}")]
    Io {
        dir: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data cache {dir} is in use by another bladefs{pid}: give each mount a directory of its own"
    )]
    InUse { dir: PathBuf, pid: String },
    #[error("data cache size {size} bytes is smaller than two blocks ({} bytes)", 2 * BLOCK)]
    TooSmall { size: u64 },
}

/// The object (as of one ETag) a block belongs to, in one cache: made by
/// [`DataCache::object`], which names its blocks' files once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId {
    pub bucket: Arc<str>,
    pub key: String,
    pub etag: String,
    /// Of store, bucket, key and ETag: the stem of the blocks' file names.
    hash: String,
}

impl ObjectId {
    /// The block's file, relative to the blocks directory.
    fn file(&self, block: u64) -> String {
        format!("{}/{}.{block}", &self.hash[..2], self.hash)
    }
}

/// The bytes of block `block` of an object of `size` bytes.
pub fn block_range(block: u64, size: u64) -> Range<u64> {
    block * BLOCK..size.min((block + 1) * BLOCK)
}

#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct Header {
    store: String,
    bucket: String,
    key: String,
    etag: String,
    block: u64,
    len: u64,
    /// CRC32C of each [`SEGMENT`] of the block's bytes.
    crc32c: Vec<u32>,
}

#[derive(Default)]
struct Index {
    /// Block file (relative path) → its bytes on disk and its last use.
    files: HashMap<String, (u64, u64)>,
    by_use: BTreeMap<u64, String>,
    total: u64,
    clock: u64,
}

impl Index {
    fn contains(&self, file: &str) -> bool {
        self.files.contains_key(file)
    }

    fn touch(&mut self, file: &str) {
        self.clock += 1;
        let now = self.clock;
        if let Some((_, used)) = self.files.get_mut(file) {
            self.by_use.remove(used);
            *used = now;
            self.by_use.insert(now, file.to_string());
        }
    }

    fn insert(&mut self, file: String, bytes: u64) {
        self.remove(&file);
        self.clock += 1;
        self.by_use.insert(self.clock, file.clone());
        self.files.insert(file, (bytes, self.clock));
        self.total += bytes;
    }

    fn remove(&mut self, file: &str) -> bool {
        match self.files.remove(file) {
            Some((bytes, used)) => {
                self.by_use.remove(&used);
                self.total -= bytes;
                true
            }
            None => false,
        }
    }

    /// Takes the least recently used files out until the rest fit `limit`.
    fn evict(&mut self, limit: u64) -> Vec<String> {
        let mut out = Vec::new();
        while self.total > limit {
            let Some((_, file)) = self.by_use.pop_first() else {
                break;
            };
            if let Some((bytes, _)) = self.files.remove(&file) {
                self.total -= bytes;
            }
            out.push(file);
        }
        out
    }
}

/// What the cache did since the mount (blocks and bytes).
#[derive(Debug, Default)]
pub struct DataCacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub hit_bytes: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub evicted: AtomicU64,
    /// Blocks found on disk that failed validation (and were removed).
    pub invalid: AtomicU64,
}

pub struct DataCache {
    dir: PathBuf,
    /// The store's endpoint: an ETag names content only within one store
    /// (not every server derives it from the bytes), so blocks are named
    /// by it too, and a directory used with two stores keeps them apart.
    store: String,
    blocks: PathBuf,
    limit: u64,
    index: Mutex<Index>,
    /// Holds the directory's lock while the mount lives.
    _lock: File,
    temp_seq: AtomicU64,
    disk_error_logged: AtomicBool,
    background: Arc<Background>,
    pub stats: DataCacheStats,
}

/// Stores running in the background, and a signal when one ends. Apart
/// from the cache, so that a store lets go of the cache before it counts
/// itself done: once [`DataCache::idle`] returns, no background work holds
/// the cache, and its lock goes with its last owner.
#[derive(Default)]
struct Background {
    pending: AtomicU64,
    settled: tokio::sync::Notify,
}

impl std::fmt::Debug for DataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataCache")
            .field("dir", &self.dir)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl DataCache {
    /// Opens (creating) the cache in `dir`, bounded to `limit` bytes on
    /// disk: takes its lock, indexes the blocks an earlier mount left and
    /// evicts down to the bound. Blocking: call before serving requests.
    pub fn open(dir: &Path, limit: u64, store: &str) -> Result<Arc<DataCache>, DataCacheError> {
        if limit < 2 * BLOCK {
            return Err(DataCacheError::TooSmall { size: limit });
        }
        let io = |what: &'static str| {
            let dir = dir.to_path_buf();
            move |source| DataCacheError::Io { dir, what, source }
        };
        let root = dir.join(LAYOUT);
        let blocks = root.join("blocks");
        fs::create_dir_all(&blocks).map_err(io("creating the directory"))?;
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(root.join("lock"))
            .map_err(io("opening its lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(DataCacheError::InUse {
                    dir: dir.to_path_buf(),
                    pid: if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    },
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io("locking it")(e)),
        }
        lock.set_len(0).map_err(io("writing its lock"))?;
        writeln!(lock, "{}", std::process::id()).map_err(io("writing its lock"))?;

        let mut found = Vec::new();
        for sub in fs::read_dir(&blocks).map_err(io("listing it"))? {
            let sub = sub.map_err(io("listing it"))?;
            let Ok(files) = fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with(".tmp") {
                    // Left by a mount that stopped while writing it.
                    let _ = fs::remove_file(f.path());
                    continue;
                }
                let Ok(m) = f.metadata() else { continue };
                let used = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                let rel = format!("{}/{name}", sub.file_name().to_string_lossy());
                found.push((used, rel, m.len()));
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, rel, bytes) in found {
            index.insert(rel, bytes);
        }
        let cache = DataCache {
            dir: dir.to_path_buf(),
            store: store.to_string(),
            blocks,
            limit,
            index: Mutex::new(index),
            _lock: lock,
            temp_seq: AtomicU64::new(0),
            disk_error_logged: AtomicBool::new(false),
            background: Arc::default(),
            stats: DataCacheStats::default(),
        };
        let gone = cache.index().evict(limit);
        cache.remove_files(gone);
        tracing::info!(dir = %dir.display(), limit, used = cache.used(), "data cache");
        Ok(Arc::new(cache))
    }

    /// Object `key` of `bucket` with ETag `etag`. Listings and HEADs
    /// quote ETags alike, but not every server does: the quotes are not
    /// part of the identity.
    pub fn object(&self, bucket: Arc<str>, key: String, etag: &str) -> ObjectId {
        let etag = etag.trim_matches('"').to_string();
        let mut h = Sha256::new();
        for part in [
            self.store.as_bytes(),
            bucket.as_bytes(),
            key.as_bytes(),
            etag.as_bytes(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let hash = hex::encode(h.finalize())[..32].to_string();
        ObjectId {
            bucket,
            key,
            etag,
            hash,
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().expect("data cache lock")
    }

    /// Bytes of block files on disk.
    pub fn used(&self) -> u64 {
        self.index().total
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether block `block` of `id` is indexed (it may still fail to read).
    pub fn has(&self, id: &ObjectId, block: u64) -> bool {
        self.index().contains(&id.file(block))
    }

    fn remove_files(&self, files: Vec<String>) {
        self.stats
            .evicted
            .fetch_add(files.len() as u64, Ordering::Relaxed);
        for f in files {
            let _ = fs::remove_file(self.blocks.join(f));
        }
    }

    fn disk_error(&self, what: &str, e: &std::io::Error) {
        if !self.disk_error_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "data cache: {what} failed; reading from the store instead (logged once)");
        }
    }

    /// The bytes `range` of `id`, an object of `size` bytes, block by
    /// block: for each block the range touches, its part of the range if
    /// that block is cached and checks out. Blocking.
    pub fn read_blocking(&self, id: &ObjectId, range: Range<u64>, size: u64) -> Vec<Option<Bytes>> {
        touched(&range, size)
            .map(|b| {
                let whole = block_range(b, size);
                let want = range.start.max(whole.start)..range.end.min(whole.end);
                let got = self.read_one(
                    id,
                    b,
                    whole.end - whole.start,
                    want.start - whole.start..want.end - whole.start,
                );
                let stat = if got.is_some() {
                    self.stats
                        .hit_bytes
                        .fetch_add(want.end - want.start, Ordering::Relaxed);
                    &self.stats.hits
                } else {
                    &self.stats.misses
                };
                stat.fetch_add(1, Ordering::Relaxed);
                got
            })
            .collect()
    }

    /// [`Self::read_blocking`] off the async workers (and at once when
    /// none of the blocks is indexed).
    pub async fn read(
        self: &Arc<Self>,
        id: &ObjectId,
        range: Range<u64>,
        size: u64,
    ) -> Vec<Option<Bytes>> {
        let blocks = touched(&range, size);
        if !self.has_any(id, blocks.clone()) {
            self.stats
                .misses
                .fetch_add(blocks.end - blocks.start, Ordering::Relaxed);
            return blocks.map(|_| None).collect();
        }
        let this = self.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || this.read_blocking(&id, range, size))
            .await
            .unwrap_or_default()
    }

    /// Whether any of `blocks` of `id` is indexed.
    pub fn has_any(&self, id: &ObjectId, blocks: Range<u64>) -> bool {
        let files: Vec<String> = blocks.map(|b| id.file(b)).collect();
        let index = self.index();
        files.iter().any(|f| index.contains(f))
    }

    /// Bytes `within` of block `block` (`len` bytes) of `id`.
    fn read_one(&self, id: &ObjectId, block: u64, len: u64, within: Range<u64>) -> Option<Bytes> {
        let rel = id.file(block);
        if !self.index().contains(&rel) {
            return None;
        }
        let path = self.blocks.join(&rel);
        match read_block_file(&path, &self.store, id, block, len, within) {
            Ok(Some(bytes)) => {
                self.index().touch(&rel);
                Some(bytes)
            }
            Ok(None) => {
                // Not this block, or damaged: it must not be served again.
                tracing::debug!(file = %path.display(), "data cache: invalid block removed");
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                self.index().remove(&rel);
                let _ = fs::remove_file(&path);
                None
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    self.disk_error("reading a block", &e);
                }
                self.index().remove(&rel);
                None
            }
        }
    }

    /// Stores block `block` of `id` (`data` is all of it). Blocking.
    pub fn store_blocking(&self, id: &ObjectId, block: u64, data: &[u8]) {
        let rel = id.file(block);
        if self.index().contains(&rel) {
            return;
        }
        match self.write_block_file(&rel, id, block, data) {
            Ok(bytes) => {
                self.stats
                    .stored_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                let gone = {
                    let mut index = self.index();
                    index.insert(rel, bytes);
                    index.evict(self.limit)
                };
                self.remove_files(gone);
            }
            Err(e) => self.disk_error("storing a block", &e),
        }
    }

    /// Stores `blocks` (index, all its bytes) of `id` in the background;
    /// `hold` (the memory permits of those bytes) is dropped once they are
    /// on disk.
    pub fn store<H: Send + 'static>(
        self: &Arc<Self>,
        id: ObjectId,
        blocks: Vec<(u64, Bytes)>,
        hold: H,
    ) {
        if blocks.is_empty() {
            return;
        }
        self.in_background(move |cache| {
            for (b, data) in blocks {
                cache.store_blocking(&id, b, &data);
            }
            drop(hold);
        });
    }

    /// Runs `work` (stores) in a blocking task that [`Self::idle`] waits for.
    pub fn in_background(self: &Arc<Self>, work: impl FnOnce(&DataCache) + Send + 'static) {
        let bg = self.background.clone();
        bg.pending.fetch_add(1, Ordering::SeqCst);
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            work(&this);
            drop(this);
            bg.pending.fetch_sub(1, Ordering::SeqCst);
            bg.settled.notify_waiters();
        });
    }

    /// Waits until no store runs in the background (unmount, tests).
    pub async fn idle(&self) {
        loop {
            let settled = self.background.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.background.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            settled.await;
        }
    }

    fn write_block_file(
        &self,
        rel: &str,
        id: &ObjectId,
        block: u64,
        data: &[u8],
    ) -> std::io::Result<u64> {
        let header = serde_json::to_vec(&Header {
            store: self.store.clone(),
            bucket: id.bucket.to_string(),
            key: id.key.clone(),
            etag: id.etag.clone(),
            block,
            len: data.len() as u64,
            crc32c: data.chunks(SEGMENT as usize).map(crc32c::crc32c).collect(),
        })
        .map_err(std::io::Error::other)?;
        let path = self.blocks.join(rel);
        let dir = path.parent().expect("block files are in a subdirectory");
        let temp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.temp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut f = match File::create(&temp) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs::create_dir_all(dir)?;
                    File::create(&temp)?
                }
                other => other?,
            };
            let mut head = Vec::with_capacity(MAGIC.len() + 4 + header.len());
            head.extend_from_slice(MAGIC);
            head.extend_from_slice(&(header.len() as u32).to_le_bytes());
            head.extend_from_slice(&header);
            f.write_all(&head)?;
            f.write_all(data)?;
            fs::rename(&temp, &path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        Ok((MAGIC.len() + 4 + header.len() + data.len()) as u64)
    }
}

/// Bytes `within` of the block if the file at `path` is block `block` of
/// `id`, `len` bytes long, and the segments read are intact; `Ok(None)` if
/// it is anything else. A hit marks the file used now (the order of use
/// survives a remount).
fn read_block_file(
    path: &Path,
    store: &str,
    id: &ObjectId,
    block: u64,
    len: u64,
    within: Range<u64>,
) -> std::io::Result<Option<Bytes>> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path)?;
    let file_len = f.metadata()?.len();
    let mut head = [0u8; MAGIC.len() + 4];
    if f.read_exact_at(&mut head, 0).is_err() || &head[..MAGIC.len()] != MAGIC {
        return Ok(None);
    }
    let header_len = u32::from_le_bytes(head[MAGIC.len()..].try_into().expect("four bytes"));
    if header_len > MAX_HEADER {
        return Ok(None);
    }
    let mut header = vec![0u8; header_len as usize];
    if f.read_exact_at(&mut header, head.len() as u64).is_err() {
        return Ok(None);
    }
    let Ok(header) = serde_json::from_slice::<Header>(&header) else {
        return Ok(None);
    };
    let data_at = (head.len() + header_len as usize) as u64;
    if header.store != store
        || header.bucket != *id.bucket
        || header.key != id.key
        || header.etag != id.etag
        || header.block != block
        || header.len != len
        || header.crc32c.len() as u64 != len.div_ceil(SEGMENT)
        // Cut short or grown: not what was written.
        || file_len != data_at + len
        || within.end > len
    {
        return Ok(None);
    }
    let first = within.start / SEGMENT;
    let from = first * SEGMENT;
    let to = within
        .end
        .div_ceil(SEGMENT)
        .saturating_mul(SEGMENT)
        .min(len);
    let mut data = vec![0u8; (to - from) as usize];
    if f.read_exact_at(&mut data, data_at + from).is_err() {
        return Ok(None);
    }
    for (i, seg) in data.chunks(SEGMENT as usize).enumerate() {
        if crc32c::crc32c(seg) != header.crc32c[first as usize + i] {
            return Ok(None);
        }
    }
    let _ = f.set_modified(SystemTime::now());
    Ok(Some(Bytes::from(data).slice(
        (within.start - from) as usize..(within.end - from) as usize,
    )))
}

/// The blocks a range of an object of `size` bytes touches.
pub fn touched(range: &Range<u64>, size: u64) -> Range<u64> {
    let end = range.end.min(size);
    if range.start >= end {
        return 0..0;
    }
    range.start / BLOCK..end.div_ceil(BLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: &DataCache, key: &str, etag: &str) -> ObjectId {
        c.object(Arc::from("b"), key.to_string(), etag)
    }

    #[test]
    fn ranges_touch_the_blocks_they_overlap() {
        let size = 3 * BLOCK + 10;
        assert_eq!(touched(&(0..size), size), 0..4);
        assert_eq!(touched(&(0..BLOCK), size), 0..1);
        assert_eq!(touched(&(1..BLOCK + 1), size), 0..2);
        assert_eq!(touched(&(3 * BLOCK..size + 100), size), 3..4);
        assert_eq!(touched(&(size..size + 1), size), 0..0);
        assert_eq!(block_range(3, size), 3 * BLOCK..size);
    }

    #[test]
    fn a_part_of_a_block_is_read_and_checked_alone() {
        let dir = tempfile::tempdir().unwrap();
        let c = DataCache::open(dir.path(), 64 * BLOCK, "s").unwrap();
        let o = id(&c, "k", "e");
        let data: Vec<u8> = (0..BLOCK + 5).map(|i| (i * 7 % 251) as u8).collect();
        c.store_blocking(&o, 0, &data[..BLOCK as usize]);
        c.store_blocking(&o, 1, &data[BLOCK as usize..]);
        let size = data.len() as u64;
        let r = BLOCK - 100..BLOCK + 3;
        let got = c.read_blocking(&o, r.clone(), size);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].as_deref(),
            Some(&data[r.start as usize..BLOCK as usize])
        );
        assert_eq!(
            got[1].as_deref(),
            Some(&data[BLOCK as usize..r.end as usize])
        );
        // A damaged segment fails the reads that touch it, and the block goes.
        let path = c.blocks.join(o.file(0));
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() - BLOCK as usize + 3 * SEGMENT as usize + 1;
        bytes[at] ^= 0x80;
        fs::write(&path, &bytes).unwrap();
        assert!(
            c.read_blocking(&o, 0..100, size)[0].is_some(),
            "an intact segment"
        );
        let seg = 3 * SEGMENT..3 * SEGMENT + 10;
        assert_eq!(c.read_blocking(&o, seg, size), vec![None]);
        assert!(!path.exists());
    }

    #[test]
    fn a_block_is_served_only_for_its_object_and_etag() {
        let dir = tempfile::tempdir().unwrap();
        let c = DataCache::open(dir.path(), 64 * BLOCK, "s").unwrap();
        c.store_blocking(&id(&c, "k", "\"e1\""), 0, b"hello");
        assert_eq!(
            c.read_blocking(&id(&c, "k", "e1"), 0..5, 5),
            vec![Some(Bytes::from_static(b"hello"))]
        );
        assert_eq!(c.read_blocking(&id(&c, "k", "e2"), 0..5, 5), vec![None]);
        assert_eq!(c.read_blocking(&id(&c, "k2", "e1"), 0..5, 5), vec![None]);
        // Another length than the object's: not served.
        assert_eq!(c.read_blocking(&id(&c, "k", "e1"), 0..6, 6), vec![None]);
        drop(c);
        // The same object of another store (endpoint): not served.
        let other = DataCache::open(dir.path(), 64 * BLOCK, "another store").unwrap();
        assert_eq!(
            other.read_blocking(&id(&other, "k", "e1"), 0..5, 5),
            vec![None]
        );
    }

    #[test]
    fn damaged_blocks_are_removed_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let c = DataCache::open(dir.path(), 64 * BLOCK, "s").unwrap();
        let o = id(&c, "k", "e");
        c.store_blocking(&o, 0, &[7u8; 1000]);
        let path = c.blocks.join(o.file(0));
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(c.read_blocking(&o, 0..1000, 1000), vec![None]);
        assert!(!path.exists());
        assert_eq!(c.stats.invalid.load(Ordering::Relaxed), 1);
        assert_eq!(c.used(), 0);
    }

    #[test]
    fn the_least_recently_used_blocks_go_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let c = DataCache::open(dir.path(), 3 * BLOCK, "s").unwrap();
        let o = id(&c, "k", "e");
        let data = vec![1u8; BLOCK as usize];
        c.store_blocking(&o, 0, &data);
        c.store_blocking(&o, 1, &data);
        // Block 0 used since: block 1 is the one to go.
        assert!(c.read_blocking(&o, 0..BLOCK, 10 * BLOCK)[0].is_some());
        c.store_blocking(&o, 2, &data);
        assert!(c.used() <= 3 * BLOCK);
        assert!(c.has(&o, 0));
        assert!(!c.has(&o, 1));
        assert!(c.has(&o, 2));
        assert!(!c.blocks.join(o.file(1)).exists());
    }

    #[test]
    fn a_second_mount_of_the_directory_is_refused_and_a_later_one_finds_the_blocks() {
        let dir = tempfile::tempdir().unwrap();
        // Names of the same store stay valid across openings.
        let o = {
            let c = DataCache::open(dir.path(), 64 * BLOCK, "s").unwrap();
            let o = id(&c, "k", "e");
            c.store_blocking(&o, 0, b"kept");
            let err = DataCache::open(dir.path(), 64 * BLOCK, "s").unwrap_err();
            assert!(
                err.to_string().contains(&format!(
                    "in use by another bladefs (pid {})",
                    std::process::id()
                )),
                "{err}"
            );
            o
        };
        let c = DataCache::open(dir.path(), 64 * BLOCK, "s").unwrap();
        assert_eq!(
            c.read_blocking(&o, 0..4, 4),
            vec![Some(Bytes::from_static(b"kept"))]
        );
        // A smaller bound at the next mount evicts down to it.
        drop(c);
        let data = vec![1u8; BLOCK as usize];
        let c = DataCache::open(dir.path(), 64 * BLOCK, "s").unwrap();
        for b in 1..6 {
            c.store_blocking(&o, b, &data);
        }
        drop(c);
        let c = DataCache::open(dir.path(), 2 * BLOCK + 4096, "s").unwrap();
        assert!(c.used() <= 2 * BLOCK + 4096);
    }
}
