//! The filesystem core, free of fuser types so it can be driven by tests
//! without a kernel: names to keys, the inode table, the metadata cache,
//! directory handles and readers. Every method that may reach the store is
//! async; locks are plain mutexes held only between awaits.
//!
//! - `inode`: numbers and lookup counts
//! - `cache`: metadata and listing cache (TTL, LRU, negative entries)
//! - `dir`: streaming, deduplicated directory listings
//! - `prefetch`: ranged reads with read-ahead
//! - `memory`: the one memory budget of read-ahead, fills and uploads
//! - `upload`: the write-back buffer and uploads (`ranges`: byte-range sets)
//! - `open`: open files and handles, one owner per inode
//! - `multipart`: the one multipart upload driver
//! - `namespace`: create, mkdir, rmdir, unlink, rename
//! - `versions`: `.versions` and `.snapshots`, history as read-only files
//! - `error`: the one errno boundary

pub mod attr;
pub mod cache;
pub mod data_cache;
pub mod dir;
pub mod error;
pub mod inode;
pub mod memory;
pub mod meta;
pub mod multipart;
mod namespace;
pub mod open;
pub mod prefetch;
pub mod ranges;
pub mod upload;
pub mod versions;
pub mod walk;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use crate::s3::{ErrorKind, HeadObjectOutput, ListObjectsParams, ObjectClient, S3Error, limits};
pub use attr::{Attr, SetAttr};
use attr::{Defaults, Sources, described, shown_kind};
use cache::{DirEntry, Entry, MetaCache, Ttl};
use dir::DirHandle;
pub use error::{FsError, FsResult};
use inode::{
    Ino, InodeTable, Kind, Location, NAME_MAX, ROOT_INO, SHOWN_NAME_MAX, Stat, View, valid_name,
};
use memory::Memory;
use meta::{MetaEntry, MetaStore, Table};
pub use namespace::Creator;
use open::{OpenFiles, Target};
use prefetch::{FileReader, PrefetchConfig};
use upload::{DirtyFile, Uploads, WriteConfig};
use versions::{HistEntry, History};

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
    /// An open for reading asks the store what the file is now, unless
    /// this mount is writing it or a walk just listed it (default), so
    /// that it reads what another host closed before it.
    pub close_to_open: bool,
    pub read_only: bool,
    pub prefetch: PrefetchConfig,
    /// Read-ahead across the files of a directory being walked.
    pub walk: walk::WalkConfig,
    pub write: WriteConfig,
    /// Names whose kind and attributes are cached. Default 100 000.
    pub max_cached_names: usize,
    /// Complete directory listings cached. Default 256.
    pub max_cached_listings: usize,
    /// Longest listing kept in the cache, in entries. Default 100 000.
    pub max_cached_listing_len: usize,
    /// Names of the history directories at each versioned bucket's root
    /// (`None`: not shown). Defaults `.versions` and `.snapshots`.
    pub versions_dir: Option<String>,
    pub snapshots_dir: Option<String>,
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
            close_to_open: true,
            read_only: false,
            prefetch: PrefetchConfig::default(),
            walk: walk::WalkConfig::default(),
            write: WriteConfig::default(),
            max_cached_names: 100_000,
            max_cached_listings: 256,
            max_cached_listing_len: 100_000,
            versions_dir: Some(versions::DEFAULT_VERSIONS_DIR.to_string()),
            snapshots_dir: Some(versions::DEFAULT_SNAPSHOTS_DIR.to_string()),
        }
    }
}

/// What the mount holds now, and how its metadata cache has done.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub inodes: u64,
    pub open_handles: u64,
    /// Files open here with changes not yet in the bucket.
    pub dirty_files: u64,
    /// Bytes of those changes in staging files.
    pub staged_bytes: u64,
    pub multipart_uploads: u64,
    pub read_ahead_bytes: u64,
    pub transfer_bytes: u64,
    pub memory_peak_bytes: u64,
    pub name_hits: u64,
    pub name_misses: u64,
    pub listing_hits: u64,
    pub listing_misses: u64,
    /// Files fetched ahead of a directory walk, and those then opened.
    pub walk_fetched: u64,
    pub walk_used: u64,
    /// The local data cache (zeros without one): blocks served and not,
    /// bytes served, stored and on disk, blocks evicted and found invalid.
    pub data_cache_hits: u64,
    pub data_cache_misses: u64,
    pub data_cache_hit_bytes: u64,
    pub data_cache_stored_bytes: u64,
    pub data_cache_evicted: u64,
    pub data_cache_invalid: u64,
    pub data_cache_used_bytes: u64,
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
    open: OpenFiles,
    uploads: Arc<Uploads>,
    dirs: Mutex<HashMap<u64, Arc<DirHandle>>>,
    memory: Memory,
    mount_time: SystemTime,
    /// The key of the mount's root in its bucket (of each bucket's
    /// directory with all buckets): where the history directories are.
    root_key: String,
    history: History,
    /// Modes, owners, times and special kinds, per directory.
    meta: Arc<MetaStore>,
    /// Read-ahead across the files of a directory being walked.
    walk: walk::Walk,
    /// Keys already logged as unusable names, so each is logged once.
    skipped_logged: Mutex<HashSet<String>>,
    /// Blocks of objects kept on local disk (`--data-cache`).
    data_cache: Option<Arc<data_cache::DataCache>>,
    /// Tells the kernel to drop its cached attributes of an inode, once set
    /// by the adapter.
    kernel_forget: std::sync::OnceLock<Box<dyn Fn(Ino) + Send + Sync>>,
}

/// Bound on the set of keys logged as unusable, so a bucket full of them
/// cannot grow it without end (beyond it, they are logged again).
const MAX_SKIPPED_LOGGED: usize = 10_000;

/// A directory whose last listing had fewer entries than this is listed
/// again (one page) on a lookup that misses, rather than asked name by name.
const RELIST_BELOW: usize = 1000;

/// Entries taken from a directory handle per round of filling a reply.
const READDIR_BATCH: usize = 256;

impl Fs {
    pub fn new(client: Arc<dyn ObjectClient>, source: MountSource, cfg: FsConfig) -> Self {
        Self::with_data_cache(client, source, cfg, None)
    }

    /// [`Fs::new`] keeping blocks of objects on local disk in `data_cache`
    /// (`--data-cache`).
    pub fn with_data_cache(
        client: Arc<dyn ObjectClient>,
        source: MountSource,
        cfg: FsConfig,
        data_cache: Option<Arc<data_cache::DataCache>>,
    ) -> Self {
        let mount_time = SystemTime::now();
        let memory = Memory::new(cfg.prefetch.max_memory, cfg.write.max_memory);
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
            root_key: root.key.clone(),
            history: History::new(
                cfg.versions_dir.clone(),
                cfg.snapshots_dir.clone(),
                cfg.metadata_ttl,
            ),
            cache: MetaCache::new(
                cfg.metadata_ttl,
                cfg.max_cached_names,
                cfg.max_cached_listings,
                cfg.max_cached_listing_len,
            ),
            walk: walk::Walk::new(
                client.clone(),
                memory.clone(),
                cfg.walk.clone(),
                data_cache.clone(),
            ),
            memory: memory.clone(),
            meta: MetaStore::new(client.clone(), cfg.metadata_ttl),
            inodes: Mutex::new(InodeTable::new(root, mount_time)),
            open: OpenFiles::default(),
            uploads: Uploads::new(client.clone(), cfg.write.clone(), memory),
            dirs: Mutex::new(HashMap::new()),
            client,
            cfg,
            mount_time,
            skipped_logged: Mutex::new(HashSet::new()),
            data_cache,
            kernel_forget: std::sync::OnceLock::new(),
        }
    }

    /// How to make the kernel drop its cached attributes of an inode
    /// (`fuser`'s notifier): called when an open finds the file changed by
    /// another host, so that the kernel's size is the new one (its pages go
    /// because the open does not keep the cache).
    pub fn set_kernel_forget(&self, f: Box<dyn Fn(Ino) + Send + Sync>) {
        let _ = self.kernel_forget.set(f);
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

    /// Files being fetched, or held, ahead of a directory walk.
    pub fn walk_ahead(&self) -> usize {
        self.walk.ahead()
    }

    pub fn open_file_count(&self) -> usize {
        self.open.handle_count()
    }

    /// What the mount holds now, for the metrics.
    pub fn gauges(&self) -> Gauges {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.cache.stats;
        let (walk_fetched, walk_used) = self.walk.counts();
        let dc = self.data_cache.as_ref();
        let dcs = |f: fn(&data_cache::DataCacheStats) -> &AtomicU64| {
            dc.map_or(0, |c| f(&c.stats).load(Relaxed))
        };
        Gauges {
            data_cache_hits: dcs(|s| &s.hits),
            data_cache_misses: dcs(|s| &s.misses),
            data_cache_hit_bytes: dcs(|s| &s.hit_bytes),
            data_cache_stored_bytes: dcs(|s| &s.stored_bytes),
            data_cache_evicted: dcs(|s| &s.evicted),
            data_cache_invalid: dcs(|s| &s.invalid),
            data_cache_used_bytes: dc.map_or(0, |c| c.used()),
            inodes: self.inode_count() as u64,
            open_handles: self.open_file_count() as u64,
            dirty_files: self.open.dirty_count() as u64,
            staged_bytes: self.uploads.staged(),
            multipart_uploads: self.uploads.open.open_count() as u64,
            read_ahead_bytes: self.memory.in_use_for(memory::Use::ReadAhead),
            transfer_bytes: self.memory.in_use_for(memory::Use::Transfer),
            memory_peak_bytes: self.memory.peak(),
            name_hits: c.name_hits.load(Relaxed),
            name_misses: c.name_misses.load(Relaxed),
            listing_hits: c.listing_hits.load(Relaxed),
            listing_misses: c.listing_misses.load(Relaxed),
            walk_fetched,
            walk_used,
        }
    }

    /// The mount's memory budget (read-ahead, fills, parts).
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// Waits until every multipart upload this mount started is completed
    /// or aborted (open files' included: close them first).
    pub async fn settle(&self) {
        self.uploads.open.none_open().await;
        if let Some(cache) = &self.data_cache {
            cache.idle().await;
        }
    }

    /// What `ino` is, for logs: `bucket/key` (or the inode number of one
    /// the kernel no longer holds).
    pub fn path_of(&self, ino: Ino) -> String {
        match self.inodes.lock().expect("inode lock").get(ino) {
            Some(n) if n.loc.bucket.is_empty() => "/".to_string(),
            Some(n) => format!("{}/{}", n.loc.bucket, n.loc.key),
            None => format!("inode {ino}"),
        }
    }

    /// The inode a file handle was opened on.
    pub fn handle_ino(&self, fh: u64) -> Option<Ino> {
        self.open.target(fh).ok().map(|(ino, _, _)| ino)
    }

    fn dir_stat(&self) -> Stat {
        Stat {
            size: 0,
            mtime: self.mount_time,
            etag: None,
        }
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            file_mode: self.cfg.file_mode,
            dir_mode: self.cfg.dir_mode,
        }
    }

    fn default_perm(&self, kind: Kind) -> u16 {
        self.defaults().perm(kind)
    }

    /// Attributes by `fs/attr.rs`'s precedence; a file being written here
    /// is as big as its buffer says (read without waiting for the file's
    /// own lock: see `DirtyFile::size`).
    fn attr(
        &self,
        ino: Ino,
        kind: Kind,
        stat: &Stat,
        meta: Option<&MetaEntry>,
        overrides: &attr::Overrides,
        unlinked: bool,
    ) -> Attr {
        let src = Sources {
            stat,
            meta,
            overrides,
            unlinked,
            written_size: self.open.buffer(ino).map(|f| f.size()),
        };
        attr::shown(ino, kind, &src, &self.defaults())
    }

    /// Records a kernel reference to `name` in `parent` and returns its
    /// attributes. `kind` is what the store holds (file or directory); the
    /// metadata entry, if it applies, may make a file another kind.
    fn remember(
        &self,
        parent: Ino,
        name: &str,
        kind: Kind,
        loc: Location,
        stat: Stat,
        table: &Table,
    ) -> Attr {
        let writing = kind != Kind::Dir && self.open.written_at(&loc).is_some();
        let meta = described(table, name, kind, stat.etag.as_deref(), writing);
        let kind = meta.map_or(kind, |m| shown_kind(kind, m));
        let (ino, stat, ov) = {
            let mut inodes = self.inodes.lock().expect("inode lock");
            let ino = inodes.remember(parent, name, kind, loc, stat.clone());
            let (stat, ov) = inodes
                .get(ino)
                .map(|n| (n.stat.clone(), n.overrides.clone()))
                .unwrap_or((stat, attr::Overrides::default()));
            (ino, stat, ov)
        };
        self.attr(ino, kind, &stat, meta, &ov, false)
    }

    /// The directory holding the metadata of `loc`, and its name there
    /// (`None` for a mount's root and for buckets: nothing holds theirs).
    fn meta_home<'a>(&self, loc: &'a Location) -> Option<(Location, &'a str)> {
        if loc.bucket.is_empty() || loc.key.is_empty() || loc.key == self.root_key {
            return None;
        }
        let (parent, path) = split_key(&loc.key);
        Some((
            Location {
                bucket: loc.bucket.clone(),
                key: parent.to_string(),
            },
            &path[parent.len()..],
        ))
    }

    /// Records a kernel reference to an entry of history.
    fn remember_history(&self, parent: Ino, bucket: &Arc<str>, e: HistEntry) -> Attr {
        let ino = self.inodes.lock().expect("inode lock").remember_in(
            parent,
            &e.name,
            e.kind,
            e.location(bucket),
            e.view,
            e.stat.clone(),
        );
        self.history_attr(ino, e.kind, &e.stat)
    }

    fn history_attr(&self, ino: Ino, kind: Kind, stat: &Stat) -> Attr {
        attr::history(ino, kind, stat, &self.defaults())
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
                tracing::warn!(key = %key, "key left out of the listing: it cannot be a file name (empty, '.' or '..')");
            }
        }
    }

    /// Files with a buffer here directly in directory `dir` (a new one
    /// has no object before its first close, but exists all the same).
    fn local_files_in(&self, dir: &Location) -> Vec<DirEntry> {
        self.open
            .written_under(dir)
            .into_iter()
            .filter_map(|(_, f)| {
                let loc = f.location();
                let name = loc.key.strip_prefix(dir.key.as_str())?;
                valid_name(name).then(|| DirEntry {
                    name: Arc::from(name),
                    kind: Kind::File,
                    stat: Stat {
                        size: f.size(),
                        mtime: SystemTime::now(),
                        etag: None,
                    },
                })
            })
            .collect()
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
        let path = format!("{}{name}", parent.key);
        // A file being written here is known locally, whatever the store
        // says (a new one is not there before its first close).
        if let Some(file) = self.open.written_at(&parent.child(name, Kind::File)) {
            return Ok(Entry::File(Stat {
                size: file.size(),
                mtime: SystemTime::now(),
                etag: None,
            }));
        }
        if let Some(entry) = self.cache.from_listing(&parent.bucket, &parent.key, name) {
            return Ok(entry);
        }
        if path.len() > limits::MAX_KEY_LEN {
            return Err(FsError::NameTooLong);
        }
        if let Some(entry) = self.cache.get(&parent.bucket, &path) {
            return Ok(entry);
        }
        // A directory made here and never listed (another client may have
        // put the name there since), or one whose last listing went stale
        // and was one page: one listing of it answers this lookup and the
        // following ones for a TTL, where asking name by name would cost a
        // HEAD and a LIST each (cp -r into the mount looks up every name).
        let relist = self.cache.is_assumed(&parent.bucket, &parent.key)
            || self
                .cache
                .stale_len(&parent.bucket, &parent.key)
                .is_some_and(|n| n < RELIST_BELOW);
        if relist && let Some(listing) = self.confirm_listing(parent).await? {
            return Ok(
                match listing.binary_search_by(|e| e.name.as_ref().cmp(name)) {
                    Ok(i) if listing[i].kind == Kind::Dir => Entry::Dir,
                    Ok(i) => Entry::File(listing[i].stat.clone()),
                    Err(_) => Entry::Missing,
                },
            );
        }
        // A key of the maximum length has no room for a directory's `/`.
        if path.len() == limits::MAX_KEY_LEN {
            let head = self.client.head_object(&parent.bucket, &path, None).await;
            let entry = self.head_entry(head)?;
            self.cache.put(&parent.bucket, &path, entry.clone());
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
            self.head_entry(head)?
        };
        self.cache.put(&parent.bucket, &path, entry.clone());
        Ok(entry)
    }

    /// What a HEAD of a name says is there: a file or nothing.
    fn head_entry(&self, head: Result<HeadObjectOutput, S3Error>) -> FsResult<Entry> {
        match head {
            Ok(h) => Ok(Entry::File(Stat {
                size: h.size,
                mtime: inode::object_mtime(h.last_modified, self.mount_time),
                etag: h.etag,
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Entry::Missing),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists directory `dir` from the store, if it fits in one page (else
    /// `None`, and names are looked up one by one), with the files being
    /// written here merged in, and caches the listing.
    async fn confirm_listing(&self, dir: &Location) -> FsResult<Option<Arc<Vec<DirEntry>>>> {
        // The same listing readdir makes (directories win over files of the
        // same name, open files merged in), stopped after its first page.
        let handle = DirHandle::streaming(0, dir.clone(), self.local_files_in(dir));
        let skipped = handle.fetch_more(&self.client, &self.dir_stat()).await?;
        self.log_skipped(skipped);
        if let Some(seen) = handle.meta_seen() {
            self.meta.seen_in_listing(dir, &seen);
        }
        let Some(entries) = handle.finished() else {
            self.cache.forget_listing(&dir.bucket, &dir.key);
            return Ok(None);
        };
        let entries = Arc::new(entries);
        self.cache
            .put_listing(&dir.bucket, &dir.key, entries.clone());
        Ok(Some(entries))
    }

    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Attr> {
        let name = name.to_str().ok_or(FsError::NotFound)?;
        if name.len() > SHOWN_NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if !valid_name(name) || meta::is_meta_name(name) {
            return Err(FsError::NotFound);
        }
        let p = self.inode(parent)?;
        if p.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if p.view != View::Live {
            let e = self
                .history
                .lookup(self.client.as_ref(), &p.loc, &p.view, name, self.mount_time)
                .await?;
            return Ok(self.remember_history(parent, &p.loc.bucket, e));
        }
        if !p.loc.bucket.is_empty()
            && p.loc.key == self.root_key
            && let Some(e) = self.history.root_entry(&p.loc, name, self.mount_time)
            && self
                .history
                .versioned(self.client.as_ref(), &p.loc.bucket)
                .await
        {
            return Ok(self.remember_history(parent, &p.loc.bucket, e));
        }
        // The directory's metadata is read while the name is resolved.
        let (entry, table) = tokio::join!(self.resolve(&p.loc, name), self.table_of(&p.loc));
        let (kind, stat) = match entry? {
            // Only an existing file can have a name this long; a new one
            // could not (creating it would fail the same way).
            Entry::Missing if name.len() > NAME_MAX => return Err(FsError::NameTooLong),
            Entry::Missing => return Err(FsError::NotFound),
            Entry::Dir => (Kind::Dir, self.dir_stat()),
            Entry::File(stat) => (Kind::File, stat),
        };
        let table = table?;
        let loc = p.loc.child(name, kind);
        Ok(self.remember(parent, name, kind, loc, stat, &table))
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        self.inodes.lock().expect("inode lock").forget(ino, n);
    }

    /// Re-reads a file's attributes when they are older than the TTL, or
    /// whatever their age when `always` (an open, close-to-open): one HEAD,
    /// none for a file this mount is writing. A change found goes to the
    /// inode and to the cached name; a name gone, from the cache too.
    async fn refresh(&self, node: &inode::Inode, always: bool) -> FsResult<Stat> {
        if node.kind == Kind::Dir
            || node.view != View::Live
            || node.unlinked
            || (!always && self.ttl().fresh(node.stat_at))
            || self.open.buffer(node.ino).is_some()
        {
            return Ok(node.stat.clone());
        }
        let (parent, path) = split_key(&node.loc.key);
        let h = match self
            .client
            .head_object(&node.loc.bucket, &node.loc.key, None)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                if e.kind() == ErrorKind::NotFound {
                    self.cache.invalidate(&node.loc.bucket, path, parent);
                }
                return Err(e.into());
            }
        };
        let stat = node.stat.updated(Stat {
            size: h.size,
            mtime: inode::object_mtime(h.last_modified, self.mount_time),
            etag: h.etag,
        });
        self.inodes
            .lock()
            .expect("inode lock")
            .refreshed(node.ino, stat.clone());
        if stat.etag != node.stat.etag || stat.size != node.stat.size {
            self.cache.changed(
                &node.loc.bucket,
                path,
                parent,
                Entry::File(stat.clone()),
                &self.dir_stat(),
            );
        }
        Ok(stat)
    }

    pub async fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        let node = self.inode(ino)?;
        if node.view != View::Live {
            return Ok(self.history_attr(ino, node.kind, &node.stat));
        }
        let stat = self.refresh(&node, false).await?;
        let meta = self.meta_of(&node).await?;
        Ok(self.attr(
            ino,
            node.kind,
            &stat,
            meta.as_ref(),
            &node.overrides,
            node.unlinked,
        ))
    }

    /// Names were added to or removed from directories `dirs`: their mtime
    /// and ctime are now. Kept in memory only: persisting them would cost a
    /// metadata write in the parent for every change of a name.
    fn entries_changed(&self, dirs: &[Ino]) -> SystemTime {
        let now = SystemTime::now();
        self.inodes
            .lock()
            .expect("inode lock")
            .entries_changed(dirs, now);
        now
    }

    /// The metadata table of a live directory (empty for the all-buckets
    /// root).
    async fn table_of(&self, dir: &Location) -> FsResult<Arc<Table>> {
        if dir.bucket.is_empty() {
            return Ok(Arc::default());
        }
        self.meta.table(dir).await
    }

    /// The metadata entry that applies to a live inode, if any.
    async fn meta_of(&self, node: &inode::Inode) -> FsResult<Option<MetaEntry>> {
        if node.unlinked {
            return Ok(None);
        }
        let Some((dir, name)) = self.meta_home(&node.loc) else {
            return Ok(None);
        };
        let table = self.meta.table(&dir).await?;
        let storage = if node.kind == Kind::Dir {
            Kind::Dir
        } else {
            Kind::File
        };
        let writing = self.open.buffer(node.ino).is_some();
        Ok(
            described(&table, name, storage, node.stat.etag.as_deref(), writing)
                .filter(|m| shown_kind(storage, m) == node.kind)
                .cloned(),
        )
    }

    /// Opens a file. Returns the handle and whether the kernel may keep the
    /// pages it cached at an earlier open (same ETag, no unsaved changes).
    pub async fn open(&self, ino: Ino, write: bool, truncate: bool) -> FsResult<(u64, bool)> {
        if (write || truncate) && self.cfg.read_only {
            return Err(FsError::ReadOnly);
        }
        let node = self.inode(ino)?;
        if node.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        if let View::Version { id, .. } = &node.view {
            if write || truncate {
                return Err(FsError::ReadOnly);
            }
            return Ok((self.open_version(ino, &node, id), true));
        }
        if write || truncate {
            let stat = self.refresh(&node, false).await?;
            let make = || {
                DirtyFile::new(
                    self.uploads.clone(),
                    node.loc.clone(),
                    Some((stat.etag.clone(), stat.size)),
                )
            };
            // Built before the table is locked (it creates a staging file);
            // dropped unused if another open got there first.
            let candidate = match self.open.buffer(ino) {
                Some(_) => None,
                None => Some(make()?),
            };
            let (fh, buffer) = self.open.open(ino, Some(&node.loc), None, candidate, true);
            let file = match buffer {
                Some(file) => file,
                // The buffer seen a moment ago went with its last handle.
                None => match self.open.buffer_or_insert(ino, make) {
                    Ok(Some(file)) => file,
                    Ok(None) => {
                        self.drop_handle(fh);
                        return Err(FsError::Internal("an open file without its entry"));
                    }
                    Err(e) => {
                        self.drop_handle(fh);
                        return Err(e);
                    }
                },
            };
            if truncate {
                if let Err(e) = file.set_size(0).await {
                    self.drop_handle(fh);
                    return Err(e);
                }
                file.hold_empty();
            }
            return Ok((fh, false));
        }
        // A file a walk fetched ahead is the one its listing showed, just
        // now: no need to ask again. Any other is asked about.
        let ahead = (self.walk)
            .opened(&node.loc, node.stat.etag.as_deref(), node.stat.size)
            .await;
        let stat = match ahead {
            Some(_) => node.stat.clone(),
            None => self.refresh(&node, self.cfg.close_to_open).await?,
        };
        // The kernel's size (and so how far it reads) is the one it was
        // given before: it must ask again.
        if (stat.etag != node.stat.etag || stat.size != node.stat.size)
            && let Some(forget) = self.kernel_forget.get()
        {
            forget(ino);
        }
        let mut reader = FileReader::new(
            self.client.clone(),
            node.loc.bucket.clone(),
            node.loc.key.clone(),
            stat.etag.clone(),
            stat.size,
            self.cfg.prefetch.clone(),
            self.memory.clone(),
        )
        .cached(self.data_cache.clone());
        if let Some((whole, version)) = ahead {
            reader = reader.preloaded(whole, version);
        }
        let (fh, buffer) =
            self.open
                .open(ino, Some(&node.loc), Some(Arc::new(reader)), None, false);
        let keep_cache = buffer.is_none()
            && self
                .inodes
                .lock()
                .expect("inode lock")
                .keep_pages(ino, &stat.etag);
        Ok((fh, keep_cache))
    }

    /// A version never changes: the kernel may keep its pages.
    fn open_version(&self, ino: Ino, node: &inode::Inode, id: &str) -> u64 {
        let reader = FileReader::new(
            self.client.clone(),
            node.loc.bucket.clone(),
            node.loc.key.clone(),
            node.stat.etag.clone(),
            node.stat.size,
            self.cfg.prefetch.clone(),
            self.memory.clone(),
        )
        .cached(self.data_cache.clone())
        .pinned(id.to_string());
        self.open
            .open(ino, None, Some(Arc::new(reader)), None, false)
            .0
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        match self.open.target(fh)?.1 {
            Target::Reader(reader) => reader.read(offset, size).await,
            Target::Buffer(file) => file.read(offset, size).await,
        }
    }

    /// Takes the bytes by value: they move on to the staging write without
    /// another copy.
    pub async fn write(&self, fh: u64, offset: u64, data: impl Into<Bytes>) -> FsResult<u32> {
        match self.open.target(fh)? {
            (ino, Target::Buffer(file), true) => {
                let n = file.write(offset, data.into()).await?;
                self.inodes.lock().expect("inode lock").written(ino);
                Ok(n)
            }
            _ => Err(FsError::BadHandle),
        }
    }

    /// Puts a file's changes in the bucket (close, fsync): returns once the
    /// object is complete there.
    async fn commit(&self, ino: Ino, file: &Arc<DirtyFile>) -> FsResult<()> {
        tracing::debug!(ino, size = file.size(), dirty = file.is_dirty(), "commit");
        let Some(done) = file.commit().await? else {
            // Nothing to upload: the object stays, and the entry naming it
            // holds any time set meanwhile.
            if self.meta_home(&file.location()).is_some() {
                self.inodes.lock().expect("inode lock").saved(ino, None);
            }
            return Ok(());
        };
        self.keep_written(file, &done);
        self.saved(ino, &file.location(), done).await
    }

    /// Copies what a commit saved from the file's staging file into the
    /// local data cache, in the background, so that reading back what was
    /// just written needs no GET. Stops at the first block the file has
    /// changed under (the rest is not the saved object's).
    fn keep_written(&self, file: &Arc<DirtyFile>, done: &upload::Committed) {
        let (Some(cache), Some(etag), Some(generation)) =
            (&self.data_cache, &done.etag, done.staged)
        else {
            return;
        };
        let loc = file.location();
        let id = cache.object(loc.bucket, loc.key, etag);
        let (file, size) = (file.clone(), done.size);
        cache.in_background(move |cache| {
            for b in 0..size.div_ceil(data_cache::BLOCK) {
                let Some(bytes) = file.read_saved(generation, data_cache::block_range(b, size))
                else {
                    return;
                };
                cache.store_blocking(&id, b, &bytes);
            }
        });
    }

    /// A file's content is now the object `done` at `loc`.
    async fn saved(&self, ino: Ino, loc: &Location, done: upload::Committed) -> FsResult<()> {
        self.history.changed();
        let stat = Stat {
            size: done.size,
            mtime: SystemTime::now(),
            etag: done.etag.clone(),
        };
        // A time set while the file was being written, after its last write.
        let set_mtime = self
            .inodes
            .lock()
            .expect("inode lock")
            .saved(ino, Some(stat.clone()));
        let (parent, path) = split_key(&loc.key);
        self.cache.changed(
            &loc.bucket,
            path,
            parent,
            Entry::File(stat),
            &self.dir_stat(),
        );
        // An entry now describes the new object; its time is the upload's
        // unless one was set since the last write.
        if let Some((dir, name)) = self.meta_home(loc) {
            let etag = done.etag;
            self.meta
                .update(&dir, name, move |e| {
                    if let Some(m) = e {
                        m.etag.clone_from(&etag);
                        m.mtime_ns = set_mtime.map(meta::to_ns);
                    }
                })
                .await?;
        }
        Ok(())
    }

    /// copy_file_range(2) of a whole object into an empty file open for
    /// writing (what `cp` does) is a server-side copy: PUT Object Copy of
    /// the source's version (or ETag), no byte through this machine; for a
    /// version under `.versions` or `.snapshots` this is a restore. Anything
    /// else is NotSupported, and the kernel then copies through read and
    /// write. Objects of 4 GiB and more are copied that way too: one reply
    /// cannot count their bytes.
    pub async fn copy_file_range(
        &self,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
    ) -> FsResult<u32> {
        let (_, Target::Reader(reader), _) = self.open.target(fh_in)? else {
            return Err(FsError::NotSupported);
        };
        let (ino, Target::Buffer(file), true) = self.open.target(fh_out)? else {
            return Err(FsError::NotSupported);
        };
        let size = reader.size();
        if offset_in != 0
            || offset_out != 0
            || len < size
            || size == 0
            || size > u64::from(u32::MAX)
            || file.size() != 0
        {
            return Err(FsError::NotSupported);
        }
        let source = crate::s3::CopySource {
            bucket: reader.bucket().to_string(),
            key: reader.key(),
            version_id: reader.version_id(),
            if_match: reader.etag(),
        };
        let done = file.replace_by_copy(&source, size).await?;
        tracing::debug!(from = %source.key, version = ?source.version_id, to = %file.location().key, size, "server-side copy");
        self.saved(ino, &file.location(), done).await?;
        Ok(size as u32)
    }

    /// close(): the changes are in the bucket, or the error is returned.
    /// A file whose only change is its emptying at open (O_TRUNC, or a
    /// create) is not published yet (`DirtyFile::hold_empty`): its next
    /// write's close, fsync or the release of its last handle do it.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        match self.open.target(fh)? {
            (_, Target::Buffer(file), true) if file.only_emptied() => Ok(()),
            (ino, Target::Buffer(file), true) => self.commit(ino, &file).await,
            _ => Ok(()),
        }
    }

    /// fsync(2): the file's data, and its directory's metadata, are in
    /// the bucket.
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let (ino, target, writable) = self.open.target(fh)?;
        if let (Target::Buffer(file), true) = (target, writable) {
            self.commit(ino, &file).await?;
        }
        let node = self.inode(ino)?;
        if let Some((dir, _)) = self.meta_home(&node.loc) {
            self.meta.flush(&dir).await?;
        }
        Ok(())
    }

    /// The last close of a handle (RELEASE). A write-back buffer goes with
    /// its last handle, read-only or not. Its changes were committed at
    /// flush (every close); if that failed, close() reported it and the
    /// changes are dropped here, not tried again unseen. A file whose
    /// flushes held back its emptying (`: > f`, `touch new`) is published
    /// first, while its buffer still answers for it here; a failure is
    /// logged: close() has returned, there is nobody left to tell.
    pub async fn release(&self, fh: u64) {
        let Some((ino, file)) = self.open.release_unless_last_buffer(fh) else {
            return;
        };
        if file.only_emptied()
            && let Err(e) = self.commit(ino, &file).await
        {
            tracing::warn!(key = %file.location().key, error = %e, "a file emptied or created at open not saved at its release");
        }
        self.drop_handle(fh);
    }

    /// Forgets handle `fh` (and its inode's buffer with its last handle).
    fn drop_handle(&self, fh: u64) {
        let Some(released) = self.open.release(fh) else {
            return;
        };
        if let Some(file) = released.last_buffer
            && file.is_dirty()
        {
            tracing::warn!(key = %file.location().key, "unsaved changes dropped: their upload failed and close() reported it");
        }
    }

    /// truncate (in the bucket), chmod, chown and utimes (in the directory's
    /// metadata).
    pub async fn setattr(&self, ino: Ino, fh: Option<u64>, set: SetAttr) -> FsResult<Attr> {
        let SetAttr {
            size,
            perm,
            uid,
            gid,
            atime,
            mtime,
        } = set;
        if self.cfg.read_only {
            return Err(FsError::ReadOnly);
        }
        let node = self.inode(ino)?;
        if node.view != View::Live {
            return Err(FsError::ReadOnly);
        }
        if let Some(new_size) = size {
            if node.kind == Kind::Dir {
                return Err(FsError::IsDir);
            }
            // Through a handle open for writing (ftruncate), the change is
            // saved at that handle's close, like its writes; any other way
            // (truncate(2)) no close will follow, so it is saved now.
            let through_writer = fh.is_some_and(
                |fh| matches!(self.open.target(fh), Ok((i, Target::Buffer(_), true)) if i == ino),
            );
            match self.open.buffer(ino) {
                Some(file) if through_writer => file.set_size(new_size).await?,
                Some(file) => {
                    file.set_size(new_size).await?;
                    self.commit(ino, &file).await?;
                }
                None => {
                    let stat = self.refresh(&node, false).await?;
                    let make = || {
                        DirtyFile::new(
                            self.uploads.clone(),
                            node.loc.clone(),
                            Some((stat.etag.clone(), stat.size)),
                        )
                    };
                    // Handles open for reading read the truncated file from
                    // now on.
                    let file = match self.open.buffer_or_insert(ino, make)? {
                        Some(file) => file,
                        None => make()?,
                    };
                    file.set_size(new_size).await?;
                    self.commit(ino, &file).await?;
                }
            }
        }
        let changes = set.changes_meta();
        let now = SystemTime::now();
        let home = self.meta_home(&node.loc).filter(|_| !node.unlinked);
        if changes && let Some((dir, name)) = &home {
            // Recorded for the object as it is now; the entry changed is the
            // one in the table at the time of the change, so two changes at
            // once both hold.
            let stat = self.refresh(&node, false).await?;
            let kind = node.kind;
            let storage = if kind == Kind::Dir {
                Kind::Dir
            } else {
                Kind::File
            };
            let writing = self.open.buffer(ino).is_some();
            let default_perm = self.default_perm(kind);
            let (default_uid, default_gid) = (self.cfg.uid, self.cfg.gid);
            self.meta
                .update(dir, name, move |e| {
                    let mut m = e
                        .take()
                        .filter(|m| {
                            m.applies(storage, stat.etag.as_deref(), writing)
                                && shown_kind(storage, m) == kind
                        })
                        .unwrap_or_else(|| MetaEntry {
                            kind: meta::EntryType::of(kind),
                            ..Default::default()
                        });
                    if kind != Kind::Dir {
                        m.etag.clone_from(&stat.etag);
                    }
                    // The defaults are not recorded (rsync sets every mode).
                    m.mode = perm.or(m.mode).filter(|p| *p != default_perm);
                    m.uid = uid.or(m.uid).filter(|u| *u != default_uid);
                    m.gid = gid.or(m.gid).filter(|g| *g != default_gid);
                    m.mtime_ns = mtime.map(meta::to_ns).or(m.mtime_ns);
                    m.atime_ns = atime.map(meta::to_ns).or(m.atime_ns);
                    m.ctime_ns = Some(meta::to_ns(now));
                    *e = Some(m);
                })
                .await?;
        }
        let writing = self.open.buffer(ino).is_some();
        // Nothing holds an unlinked file's attributes, nor the mount root's:
        // they live in memory while the kernel holds the inode (failing would
        // fail `cp -a` and `rsync -a` into the root).
        let homeless = home.is_none();
        let mtime_here = writing || node.kind == Kind::Dir;
        let (stat, ov) = self
            .inodes
            .lock()
            .expect("inode lock")
            .set_attrs(ino, &set, homeless, mtime_here, now)
            .ok_or(FsError::NotFound)?;
        let meta = self.meta_of(&node).await?;
        Ok(self.attr(ino, node.kind, &stat, meta.as_ref(), &ov, node.unlinked))
    }

    /// readlink(2): the target kept in the directory's metadata.
    pub async fn readlink(&self, ino: Ino) -> FsResult<String> {
        let node = self.inode(ino)?;
        if node.kind != Kind::Symlink {
            return Err(FsError::InvalidName("not a symbolic link".to_string()));
        }
        self.meta_of(&node)
            .await?
            .and_then(|m| m.target)
            .ok_or(FsError::Stale)
    }

    /// fsync(2) of a directory: the metadata of its entries is in the
    /// bucket.
    pub async fn fsyncdir(&self, ino: Ino) -> FsResult<()> {
        let node = self.inode(ino)?;
        if node.view == View::Live && !node.loc.bucket.is_empty() {
            self.meta.flush(&node.loc).await?;
        }
        Ok(())
    }

    /// Writes every directory's pending metadata (unmount).
    pub async fn flush_metadata(&self) -> FsResult<()> {
        self.meta.flush_all().await
    }

    pub async fn opendir(&self, ino: Ino) -> FsResult<u64> {
        let node = self.inode(ino)?;
        if node.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let handle = if node.view != View::Live {
            let entries = self
                .history
                .list(self.client.as_ref(), &node.loc, &node.view, self.mount_time)
                .await?;
            DirHandle::history(ino, node.loc, &entries)
        } else if node.loc.bucket.is_empty() {
            DirHandle::complete(ino, node.loc, self.bucket_listing().await?.to_vec())
        } else if let Some(listing) = self.cache.listing(&node.loc.bucket, &node.loc.key) {
            DirHandle::complete(ino, node.loc, listing.to_vec())
        } else {
            let local = self.local_files_in(&node.loc);
            DirHandle::streaming(ino, node.loc, local)
        };
        let fh = self.open.next_handle();
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
                let attr =
                    plus.then(|| attr::plain_dir(target, &self.dir_stat(), &self.defaults()));
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
        let mut table: Option<Arc<Table>> = None;
        loop {
            let (batch, complete) = dir.settled((offset - 2) as usize, READDIR_BATCH);
            if !batch.is_empty() && table.is_none() {
                table = Some(self.listing_table(&node, &dir).await?);
            }
            let table = table.clone().unwrap_or_default();
            for e in &batch {
                let (entry_ino, attr) = if plus {
                    let attr = match dir.place((offset - 2) as usize, &e.name, e.kind) {
                        (loc, View::Live) => {
                            self.remember(ino, &e.name, e.kind, loc, e.stat.clone(), &table)
                        }
                        (loc, view) => {
                            let n = self.inodes.lock().expect("inode lock").remember_in(
                                ino,
                                &e.name,
                                e.kind,
                                loc,
                                view,
                                e.stat.clone(),
                            );
                            self.history_attr(n, e.kind, &e.stat)
                        }
                    };
                    (attr.ino, Some(attr))
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
                let kind = match &attr {
                    Some(a) => a.kind,
                    None => {
                        let loc = node.loc.child(&e.name, e.kind);
                        let writing = e.kind != Kind::Dir && self.open.written_at(&loc).is_some();
                        described(&table, &e.name, e.kind, e.stat.etag.as_deref(), writing)
                            .map_or(e.kind, |m| shown_kind(e.kind, m))
                    }
                };
                let full = fill(ReaddirEntry {
                    ino: entry_ino,
                    next_offset: offset + 1,
                    name: &e.name,
                    kind,
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
                // A directory read to its end may be walked next (the
                // walker keeps the directory open meanwhile: tar, fts).
                dir.when_listed(|loc, entries| self.walk.listed(loc, entries));
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
                let skipped = dir.fetch_more(&self.client, &self.dir_stat()).await?;
                self.log_skipped(skipped);
            }
        }
    }

    /// The metadata table for a directory being listed: what the listing
    /// showed of its object saves the GET when unchanged (history has none).
    async fn listing_table(&self, node: &inode::Inode, dir: &DirHandle) -> FsResult<Arc<Table>> {
        if node.view != View::Live || node.loc.bucket.is_empty() {
            return Ok(Arc::default());
        }
        if let Some(seen) = dir.meta_seen() {
            self.meta.seen_in_listing(&node.loc, &seen);
        }
        self.meta.table(&node.loc).await
    }

    pub fn root_ino(&self) -> Ino {
        ROOT_INO
    }
}

/// The parent prefix and the path (without trailing slash) of a key.
fn split_key(key: &str) -> (&str, &str) {
    let path = key.strip_suffix('/').unwrap_or(key);
    let parent = path.rfind('/').map_or("", |i| &path[..=i]);
    (parent, path)
}
