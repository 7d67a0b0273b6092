//! The filesystem core, free of fuser types so it can be driven by tests
//! without a kernel: names to keys, the inode table, the metadata cache,
//! directory handles and readers. Every method that may reach the store is
//! async; locks are plain mutexes held only between awaits.
//!
//! - `inode`: numbers and lookup counts
//! - `cache`: metadata and listing cache (TTL, LRU, negative entries)
//! - `dir`: streaming, deduplicated directory listings
//! - `prefetch`: ranged reads with read-ahead and a memory bound
//! - `error`: the one errno boundary

pub mod cache;
pub mod dir;
pub mod error;
pub mod inode;
pub mod prefetch;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::s3::{ErrorKind, ListObjectsParams, ObjectClient, limits};
use cache::{DirEntry, Entry, MetaCache, Ttl};
use dir::DirHandle;
pub use error::{FsError, FsResult};
use inode::{Ino, InodeTable, Kind, Location, NAME_MAX, ROOT_INO, Stat, valid_name};
use prefetch::{FileReader, PrefetchConfig};

/// What a mount shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// One bucket, or the keys under `prefix` (empty, or ending in `/`).
    Bucket { bucket: String, prefix: String },
    /// Every bucket of the store, each a directory of the root.
    AllBuckets,
}

#[derive(Debug, Clone)]
pub struct FsConfig {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits of files. Default 0644.
    pub file_mode: u16,
    /// Permission bits of directories. Default 0755.
    pub dir_mode: u16,
    pub metadata_ttl: Ttl,
    pub read_only: bool,
    pub prefetch: PrefetchConfig,
    /// Names whose kind and attributes are cached. Default 100 000.
    pub max_cached_names: usize,
    /// Complete directory listings cached. Default 256.
    pub max_cached_listings: usize,
    /// Longest listing kept in the cache, in entries. Default 100 000.
    pub max_cached_listing_len: usize,
}

impl Default for FsConfig {
    fn default() -> Self {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        FsConfig {
            uid,
            gid,
            file_mode: 0o644,
            dir_mode: 0o755,
            metadata_ttl: Ttl(Some(std::time::Duration::from_secs(1))),
            read_only: false,
            prefetch: PrefetchConfig::default(),
            max_cached_names: 100_000,
            max_cached_listings: 256,
            max_cached_listing_len: 100_000,
        }
    }
}

/// Attributes of an inode, as the kernel will see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

/// One entry handed to the kernel by [`Fs::readdir`].
pub struct ReaddirEntry<'a> {
    pub ino: Ino,
    /// The offset the kernel passes back to continue after this entry.
    pub next_offset: u64,
    pub name: &'a str,
    pub kind: Kind,
    /// Present for readdirplus.
    pub attr: Option<Attr>,
}

pub struct Fs {
    client: Arc<dyn ObjectClient>,
    cfg: FsConfig,
    inodes: Mutex<InodeTable>,
    cache: MetaCache,
    files: Mutex<HashMap<u64, Arc<FileReader>>>,
    dirs: Mutex<HashMap<u64, Arc<DirHandle>>>,
    next_fh: AtomicU64,
    memory: Arc<Semaphore>,
    mount_time: SystemTime,
    /// Keys already logged as unusable names, so each is logged once.
    skipped_logged: Mutex<HashSet<String>>,
}

/// Bound on the set of keys logged as unusable, so a bucket full of them
/// cannot grow it without end (beyond it, they are logged again).
const MAX_SKIPPED_LOGGED: usize = 10_000;

/// Entries taken from a directory handle per round of filling a reply.
const READDIR_BATCH: usize = 256;

impl Fs {
    pub fn new(client: Arc<dyn ObjectClient>, source: MountSource, cfg: FsConfig) -> Self {
        let mount_time = SystemTime::now();
        let root = match &source {
            MountSource::Bucket { bucket, prefix } => Location {
                bucket: Arc::from(bucket.as_str()),
                key: prefix.clone(),
            },
            MountSource::AllBuckets => Location {
                bucket: Arc::from(""),
                key: String::new(),
            },
        };
        Fs {
            cache: MetaCache::new(
                cfg.metadata_ttl,
                cfg.max_cached_names,
                cfg.max_cached_listings,
                cfg.max_cached_listing_len,
            ),
            memory: cfg.prefetch.memory(),
            inodes: Mutex::new(InodeTable::new(root, mount_time)),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            client,
            cfg,
            mount_time,
            skipped_logged: Mutex::new(HashSet::new()),
        }
    }

    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    pub fn ttl(&self) -> Ttl {
        self.cache.ttl()
    }

    /// Inodes the table holds (the kernel's references), for tests.
    pub fn inode_count(&self) -> usize {
        self.inodes.lock().expect("inode lock").len()
    }

    pub fn open_file_count(&self) -> usize {
        self.files.lock().expect("files lock").len()
    }

    fn dir_stat(&self) -> Stat {
        Stat {
            size: 0,
            mtime: self.mount_time,
            etag: None,
        }
    }

    fn attr(&self, ino: Ino, kind: Kind, stat: &Stat) -> Attr {
        Attr {
            ino,
            kind,
            size: stat.size,
            mtime: stat.mtime,
            perm: match kind {
                Kind::File => self.cfg.file_mode,
                Kind::Dir => self.cfg.dir_mode,
            },
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    fn inode(&self, ino: Ino) -> FsResult<inode::Inode> {
        self.inodes
            .lock()
            .expect("inode lock")
            .get(ino)
            .cloned()
            .ok_or(FsError::NotFound)
    }

    fn log_skipped(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        let mut logged = self.skipped_logged.lock().expect("log lock");
        for key in keys {
            if logged.len() >= MAX_SKIPPED_LOGGED {
                logged.clear();
            }
            if logged.insert(key.clone()) {
                tracing::warn!(key = %key, "key left out of the listing: it cannot be a file name (empty, '.', '..' or longer than 255 bytes)");
            }
        }
    }

    /// The buckets of the store, as the entries of the all-buckets root.
    async fn bucket_listing(&self) -> FsResult<Arc<Vec<DirEntry>>> {
        let none: Arc<str> = Arc::from("");
        if let Some(listing) = self.cache.listing(&none, "") {
            return Ok(listing);
        }
        let mut entries: Vec<DirEntry> = Vec::new();
        let mut skipped = Vec::new();
        for b in self.client.list_buckets().await? {
            if valid_name(&b.name) {
                entries.push(DirEntry {
                    name: Arc::from(b.name.as_str()),
                    kind: Kind::Dir,
                    stat: Stat {
                        size: 0,
                        mtime: b.creation_date.unwrap_or(self.mount_time),
                        etag: None,
                    },
                });
            } else {
                skipped.push(b.name);
            }
        }
        self.log_skipped(skipped);
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let entries = Arc::new(entries);
        self.cache.put_listing(&none, "", entries.clone());
        Ok(entries)
    }

    /// What `name` in directory `parent` is: from a fresh listing of the
    /// parent, from the name cache, or asking the store with a HEAD of the
    /// key and a one-key listing of `name/` at once (at most 2 requests).
    async fn resolve(&self, parent: &Location, name: &str) -> FsResult<Entry> {
        if parent.bucket.is_empty() {
            let buckets = self.bucket_listing().await?;
            return Ok(
                match buckets.binary_search_by(|e| e.name.as_ref().cmp(name)) {
                    Ok(_) => Entry::Dir,
                    Err(_) => Entry::Missing,
                },
            );
        }
        if let Some(entry) = self.cache.from_listing(&parent.bucket, &parent.key, name) {
            return Ok(entry);
        }
        let path = format!("{}{name}", parent.key);
        if path.len() >= limits::MAX_KEY_LEN {
            return Err(FsError::NameTooLong);
        }
        if let Some(entry) = self.cache.get(&parent.bucket, &path) {
            return Ok(entry);
        }
        let dir_params = ListObjectsParams {
            prefix: format!("{path}/"),
            delimiter: Some("/".to_string()),
            max_keys: Some(1),
            ..Default::default()
        };
        // Both at once; a listing that shows children settles it as a
        // directory without waiting for (or retrying) the HEAD.
        let head = self.client.head_object(&parent.bucket, &path, None);
        let list = self.client.list_objects(&parent.bucket, &dir_params);
        tokio::pin!(head, list);
        let mut head_done = None;
        let list = loop {
            tokio::select! {
                r = &mut list => break r?,
                r = &mut head, if head_done.is_none() => head_done = Some(r),
            }
        };
        let entry = if !list.objects.is_empty() || !list.common_prefixes.is_empty() {
            Entry::Dir
        } else {
            let head = match head_done {
                Some(r) => r,
                None => head.await,
            };
            match head {
                Ok(h) => Entry::File(Stat {
                    size: h.size,
                    mtime: h.last_modified.unwrap_or(self.mount_time),
                    etag: h.etag,
                }),
                Err(e) if e.kind() == ErrorKind::NotFound => Entry::Missing,
                Err(e) => return Err(e.into()),
            }
        };
        self.cache.put(&parent.bucket, &path, entry.clone());
        Ok(entry)
    }

    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Attr> {
        let name = name.to_str().ok_or(FsError::NotFound)?;
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if !valid_name(name) {
            return Err(FsError::NotFound);
        }
        let p = self.inode(parent)?;
        if p.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let (kind, stat) = match self.resolve(&p.loc, name).await? {
            Entry::Missing => return Err(FsError::NotFound),
            Entry::Dir => (Kind::Dir, self.dir_stat()),
            Entry::File(stat) => (Kind::File, stat),
        };
        let loc = p.loc.child(name, kind);
        let ino =
            self.inodes
                .lock()
                .expect("inode lock")
                .remember(parent, name, kind, loc, stat.clone());
        Ok(self.attr(ino, kind, &stat))
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        self.inodes.lock().expect("inode lock").forget(ino, n);
    }

    /// Re-reads a file's attributes when they are older than the TTL.
    async fn refresh(&self, node: &inode::Inode) -> FsResult<Stat> {
        if node.kind == Kind::Dir || self.ttl().fresh(node.stat_at) {
            return Ok(node.stat.clone());
        }
        let h = self
            .client
            .head_object(&node.loc.bucket, &node.loc.key, None)
            .await?;
        let stat = Stat {
            size: h.size,
            mtime: h.last_modified.unwrap_or(self.mount_time),
            etag: h.etag,
        };
        if let Some(n) = self.inodes.lock().expect("inode lock").get_mut(node.ino) {
            n.stat = stat.clone();
            n.stat_at = std::time::Instant::now();
        }
        Ok(stat)
    }

    pub async fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        let node = self.inode(ino)?;
        let stat = self.refresh(&node).await?;
        Ok(self.attr(ino, node.kind, &stat))
    }

    /// Opens a file for reading. Returns the handle and whether the kernel
    /// may keep the pages it cached at an earlier open (same ETag).
    pub async fn open(&self, ino: Ino, write: bool) -> FsResult<(u64, bool)> {
        if write {
            // Writing arrives with the write-back buffer; until then, and
            // always with --read-only, writes are refused.
            return Err(FsError::ReadOnly);
        }
        let node = self.inode(ino)?;
        if node.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let stat = self.refresh(&node).await?;
        let keep_cache = {
            let mut inodes = self.inodes.lock().expect("inode lock");
            match inodes.get_mut(ino) {
                Some(n) => {
                    let keep = stat.etag.is_some() && n.cached_etag == stat.etag;
                    n.cached_etag.clone_from(&stat.etag);
                    keep
                }
                None => false,
            }
        };
        let reader = FileReader::new(
            self.client.clone(),
            node.loc.bucket.clone(),
            node.loc.key.clone(),
            stat.etag.clone(),
            stat.size,
            self.cfg.prefetch.clone(),
            self.memory.clone(),
        );
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files
            .lock()
            .expect("files lock")
            .insert(fh, Arc::new(reader));
        Ok((fh, keep_cache))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let reader = self
            .files
            .lock()
            .expect("files lock")
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        reader.read(offset, size).await
    }

    pub fn release(&self, fh: u64) {
        self.files.lock().expect("files lock").remove(&fh);
    }

    pub async fn opendir(&self, ino: Ino) -> FsResult<u64> {
        let node = self.inode(ino)?;
        if node.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let handle = if node.loc.bucket.is_empty() {
            DirHandle::complete(ino, node.loc, self.bucket_listing().await?.to_vec())
        } else if let Some(listing) = self.cache.listing(&node.loc.bucket, &node.loc.key) {
            DirHandle::complete(ino, node.loc, listing.to_vec())
        } else {
            DirHandle::streaming(ino, node.loc)
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs
            .lock()
            .expect("dirs lock")
            .insert(fh, Arc::new(handle));
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().expect("dirs lock").remove(&fh);
    }

    /// Hands entries from `offset` on to `fill` until it reports the reply
    /// full (returns true) or the directory ends. Offsets: 0 is `.`, 1 is
    /// `..`, then the listing in order. With `plus`, each entry handed over
    /// counts as a lookup.
    pub async fn readdir(
        &self,
        ino: Ino,
        fh: u64,
        offset: u64,
        plus: bool,
        mut fill: impl FnMut(ReaddirEntry<'_>) -> bool,
    ) -> FsResult<()> {
        let dir = self
            .dirs
            .lock()
            .expect("dirs lock")
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        let mut offset = offset;
        let node = self.inode(ino)?;
        for (off, name, target) in [(0u64, ".", ino), (1, "..", node.parent)] {
            if offset == off {
                let attr = plus.then(|| self.attr(target, Kind::Dir, &self.dir_stat()));
                let full = fill(ReaddirEntry {
                    ino: target,
                    next_offset: off + 1,
                    name,
                    kind: Kind::Dir,
                    attr,
                });
                if full {
                    return Ok(());
                }
                offset += 1;
            }
        }
        loop {
            let (batch, complete) = dir.settled((offset - 2) as usize, READDIR_BATCH);
            for e in &batch {
                let (entry_ino, attr) = if plus {
                    let loc = dir.location().child(&e.name, e.kind);
                    let ino = self.inodes.lock().expect("inode lock").remember(
                        ino,
                        &e.name,
                        e.kind,
                        loc,
                        e.stat.clone(),
                    );
                    (ino, Some(self.attr(ino, e.kind, &e.stat)))
                } else {
                    let known = self
                        .inodes
                        .lock()
                        .expect("inode lock")
                        .child(ino, &e.name)
                        .map(|n| n.ino);
                    // An inode number for display only; lookups assign the real one.
                    (known.unwrap_or(u64::MAX - offset), None)
                };
                let full = fill(ReaddirEntry {
                    ino: entry_ino,
                    next_offset: offset + 1,
                    name: &e.name,
                    kind: e.kind,
                    attr,
                });
                if full {
                    if plus {
                        // The kernel did not take it: no reference was made.
                        self.forget(entry_ino, 1);
                    }
                    return Ok(());
                }
                offset += 1;
            }
            if complete {
                if let Some(all) = dir.finished() {
                    self.cache.put_listing(
                        &dir.location().bucket,
                        &dir.location().key,
                        Arc::new(all),
                    );
                }
                return Ok(());
            }
            if batch.is_empty() {
                let skipped = dir
                    .fetch_more(self.client.as_ref(), &self.dir_stat())
                    .await?;
                self.log_skipped(skipped);
            }
        }
    }

    pub fn root_ino(&self) -> Ino {
        ROOT_INO
    }
}
