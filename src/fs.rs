//! The filesystem core, free of fuser types so it can be driven by tests
//! without a kernel. Every method that may reach the store is async; locks
//! are plain mutexes held only between awaits. `Fs` is a thin facade over
//! two owners (docs/ARCHITECTURE.md draws the map):
//!
//! - the namespace, `names` ([`names::Names`]: inodes, the caches of names
//!   and listings, POSIX metadata, history, the root), and the jobs that
//!   borrow it: `changes` (create, mkdir, unlink, rmdir, symlink, mknod,
//!   setattr), `rename`, `readdir` (directory handles);
//! - the file data, `files` ([`files::Files`]: open files, uploads, reads,
//!   read-ahead across files, memory, the data cache).
//!
//! Below them:
//! - `attr`: the attributes shown, from memory, metadata and the store
//! - `inode`: numbers, lookup counts, locations
//! - `cache`: metadata and listing cache (TTL, LRU, negative entries)
//! - `meta`: each directory's POSIX metadata, segments merged across hosts
//! - `dir`: streaming, deduplicated directory listings
//! - `versions`: `.versions` and `.snapshots`, history as read-only files
//! - `open`: open files and handles, one owner per inode and location
//! - `prefetch`: ranged reads with read-ahead; `walk`: across files
//! - `upload`: the write-back buffer and uploads (`ranges`: byte-range sets)
//! - `multipart`: the one multipart upload driver
//! - `memory`: the one memory budget of read-ahead, fills and uploads
//! - `data_cache`: blocks of objects on local disk
//! - `writeback`, `closing`: `--write-back`'s journal and queue, and what
//!   a close does with a written file
//! - `error`: the one errno boundary

pub mod attr;
pub mod budget;
pub mod cache;
mod changes;
mod closing;
pub mod config;
pub mod data_cache;
pub mod dir;
pub mod error;
pub mod files;
pub mod inode;
pub mod list_ahead;
pub mod memory;
pub mod meta;
pub mod multipart;
pub mod names;
pub mod open;
pub mod prefetch;
pub mod ranges;
mod readdir;
mod rename;
mod resolve;
pub mod upload;
pub mod versions;
pub mod walk;
pub mod writeback;

use std::ffi::OsStr;
use std::sync::Arc;

use bytes::Bytes;

use crate::s3::ObjectClient;
pub use attr::{Attr, SetAttr};
use cache::Ttl;
use changes::Changes;
pub use changes::{Creator, DIR_MARKER_TYPE};
pub use config::{FsConfig, Gauges, MountSource};
pub use error::{FsError, FsResult};
use files::Files;
use inode::{Ino, Kind, Location, ROOT_INO, View};
use memory::Memory;
use names::Names;
use readdir::Directories;
pub use readdir::ReaddirEntry;
use rename::Renames;

/// What is known, at a close (FLUSH), of the process that closes: whether
/// it still holds the file on another descriptor (the FUSE adapter reads
/// that from /proc, `crate::proc_fds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closer {
    /// Nothing: a file only emptied at open is held back, as if it did.
    Unknown,
    /// It does: bash's `echo x > f` closing the dup it made for the write.
    HoldsAnother,
    /// It does not: `touch new`, `: > f`; this close publishes the file.
    Done,
}

pub struct Fs {
    names: Arc<Names>,
    files: Arc<Files>,
    changes: Changes,
    renames: Renames,
    dirs: Directories,
}

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
        let budget = Arc::new(budget::MetaBudget::new(cfg.metadata_cache_bytes));
        let files = Arc::new(Files::new(client.clone(), &cfg, data_cache, budget.clone()));
        let names = Arc::new(Names::new(client, root, cfg, files.clone(), budget));
        Fs {
            changes: Changes::new(names.clone()),
            renames: Renames::new(names.clone()),
            dirs: Directories::new(names.clone()),
            names,
            files,
        }
    }

    /// How to make the kernel drop its cached attributes of an inode
    /// (`fuser`'s notifier): called when an open finds the file changed by
    /// another host, so that the kernel's size is the new one (its pages go
    /// because the open does not keep the cache).
    pub fn set_kernel_forget(&self, f: Box<dyn Fn(Ino) + Send + Sync>) {
        self.files.set_kernel_forget(f);
    }

    /// How to make the kernel forget names (`fuser`'s `inval_entry`), for
    /// the metadata budget: see `Names::set_kernel_evict`.
    pub fn set_kernel_evict(&self, f: names::KernelEvict) {
        self.names.set_kernel_evict(f);
    }

    /// What the metadata budget holds now, its peak, and its limit.
    pub fn metadata_charged(&self) -> (u64, u64, u64) {
        let b = &self.names.budget;
        (b.charged(), b.peak(), b.limit())
    }

    /// Whole metadata tables copied to change them (see
    /// `MetaStore::table_copies`), for tests.
    pub fn metadata_table_copies(&self) -> u64 {
        self.names.meta.table_copies()
    }

    pub fn config(&self) -> &FsConfig {
        &self.names.cfg
    }

    pub fn ttl(&self) -> Ttl {
        self.names.ttl()
    }

    /// Inodes the table holds (the kernel's references), for tests.
    pub fn inode_count(&self) -> usize {
        self.names.inode_count()
    }

    /// Directories listed ahead of a walk so far, and those then used.
    pub fn list_ahead_counts(&self) -> (u64, u64) {
        self.names.resolver.list_ahead.counts()
    }

    /// Files being fetched, or held, ahead of a directory walk.
    pub fn walk_ahead(&self) -> usize {
        self.files.walk().ahead()
    }

    pub fn open_file_count(&self) -> usize {
        self.files.open_files().handle_count()
    }

    /// What the mount holds now, for the metrics.
    pub fn gauges(&self) -> Gauges {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.names.resolver.cache.stats;
        let mut g = Gauges {
            inodes: self.inode_count() as u64,
            name_hits: c.name_hits.load(Relaxed),
            name_misses: c.name_misses.load(Relaxed),
            listing_hits: c.listing_hits.load(Relaxed),
            listing_misses: c.listing_misses.load(Relaxed),
            ..Default::default()
        };
        (g.list_ahead_started, g.list_ahead_used) = self.list_ahead_counts();
        (g.metadata_charged_bytes, _, g.metadata_limit_bytes) = self.metadata_charged();
        self.files.gauges(&mut g);
        g
    }

    /// The mount's memory budget (read-ahead, fills, parts).
    pub fn memory(&self) -> &Memory {
        self.files.memory()
    }

    /// Waits until every multipart upload this mount started is completed
    /// or aborted (open files' included: close them first).
    pub async fn settle(&self) {
        self.files.settle().await;
    }

    /// What `ino` is, for logs: `bucket/key` (or the inode number of one
    /// the kernel no longer holds).
    pub fn path_of(&self, ino: Ino) -> String {
        self.names.path_of(ino)
    }

    /// The inode a file handle was opened on.
    pub fn handle_ino(&self, fh: u64) -> Option<Ino> {
        self.files
            .open_files()
            .target(fh)
            .ok()
            .map(|(ino, _, _)| ino)
    }

    pub fn root_ino(&self) -> Ino {
        ROOT_INO
    }

    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Attr> {
        self.names.lookup(parent, name).await
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        self.names.forget(ino, n);
    }

    pub async fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        self.names.getattr(ino).await
    }

    /// Opens a file. Returns the handle and whether the kernel may keep the
    /// pages it cached at an earlier open (same ETag, no unsaved changes).
    /// An open for writing shares the inode's one buffer; an open for
    /// reading asks the store what the file is now (close-to-open), unless
    /// a walk just fetched it.
    pub async fn open(&self, ino: Ino, write: bool, truncate: bool) -> FsResult<(u64, bool)> {
        if (write || truncate) && self.names.cfg.read_only {
            return Err(FsError::ReadOnly);
        }
        let node = self.names.inode(ino)?;
        if node.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        if let View::Version { id, .. } = &node.view {
            if write || truncate {
                return Err(FsError::ReadOnly);
            }
            return Ok((self.files.open_version(&node, id), true));
        }
        if write || truncate {
            let stat = self.names.refresh(&node, false).await?;
            let fh = self.files.open_writer(&node, &stat, truncate).await?;
            return Ok((fh, false));
        }
        // A file a walk fetched ahead is the one its listing showed, just
        // now: no need to ask again. Any other is asked about.
        let ahead = self.files.fetched_ahead(&node).await;
        let stat = match ahead {
            Some(_) => node.stat.clone(),
            None => {
                self.names
                    .refresh(&node, self.names.cfg.close_to_open)
                    .await?
            }
        };
        // The kernel's size (and so how far it reads) is the one it was
        // given before: it must ask again.
        if stat.etag != node.stat.etag || stat.size != node.stat.size {
            self.files.forget_in_kernel(ino);
        }
        let (fh, buffered) = self.files.open_reader(&node, &stat, ahead);
        let keep_cache = !buffered && self.names.keep_pages(ino, &stat.etag);
        Ok((fh, keep_cache))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        match self.files.read(fh, offset, size).await {
            Err(FsError::SaveFirst) => {
                let (ino, file) = self.files.buffer(fh)?;
                let read = || self.files.read(fh, offset, size);
                self.names.saving(ino, &file, read).await
            }
            done => done,
        }
    }

    /// Takes the bytes by value: they move on to the staging write without
    /// another copy.
    pub async fn write(&self, fh: u64, offset: u64, data: impl Into<Bytes>) -> FsResult<u32> {
        let data = data.into();
        let (ino, n) = match self.files.write(fh, offset, data.clone()).await {
            Err(FsError::SaveFirst) => {
                let (ino, file) = self.files.buffer(fh)?;
                let write = || self.files.write(fh, offset, data.clone());
                self.names.saving(ino, &file, write).await?
            }
            done => done?,
        };
        self.names.written(ino);
        Ok(n)
    }

    /// [`Fs::write`] done at once on the caller's thread, when it only
    /// copies `data` into the part a file streaming from memory is filling
    /// and nobody holds the file (see `DirtyFile::write_now`); `None`
    /// otherwise: then `write` it.
    pub fn write_now(&self, fh: u64, offset: u64, data: &[u8]) -> Option<FsResult<u32>> {
        let (ino, file) = self.files.writer(fh).ok()??;
        let result = file.write_now(offset, data)?;
        if result.is_ok() {
            self.names.written(ino);
        }
        Some(result)
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
        let (ino, file, done) = self
            .files
            .copy_whole(fh_in, offset_in, fh_out, offset_out, len)
            .await?;
        let size = done.size;
        self.names.saved(ino, &file.location(), done).await?;
        Ok(size as u32)
    }

    /// close() from a process nothing is known of: [`Fs::flush_from`]
    /// with [`Closer::Unknown`].
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        self.flush_from(fh, |_| Closer::Unknown).await
    }

    /// close(): the changes are in the bucket, or the error is returned.
    /// A file whose only change is its emptying at open (O_TRUNC, or a
    /// create) is not published while the closing process may still hold
    /// it (`DirtyFile::hold_empty`; `closer` is asked only then): its next
    /// write's close, fsync, a close that is the process's last, or the
    /// release of its last handle do it.
    pub async fn flush_from(&self, fh: u64, closer: impl FnOnce(Ino) -> Closer) -> FsResult<()> {
        match self.files.writer(fh)? {
            Some((ino, file)) if file.only_emptied() && closer(ino) != Closer::Done => Ok(()),
            Some((ino, file)) => closing::close(&self.names, ino, &file).await,
            None => Ok(()),
        }
    }

    /// fsync(2): the file's data, and its directory's metadata, are in
    /// the bucket.
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let ino = match self.files.writer(fh)? {
            Some((ino, file)) => {
                self.names.commit(ino, &file).await?;
                ino
            }
            None => self.handle_ino(fh).ok_or(FsError::BadHandle)?,
        };
        self.names.sync_entry(ino).await
    }

    /// The last close of a handle (RELEASE). A write-back buffer goes with
    /// its last handle, read-only or not. Its changes were committed at
    /// flush (every close); if that failed, close() reported it and the
    /// changes are dropped here, not tried again unseen. A file whose
    /// flushes held back its emptying (`: > f`, `touch new`) is published
    /// first, while its buffer still answers for it here; a failure is
    /// logged: close() has returned, there is nobody left to tell.
    pub async fn release(&self, fh: u64) {
        // With write-back the queue may hold the file's last handle: an
        // emptying is journaled at this close all the same.
        if self.files.write_back().is_some()
            && let Ok(Some((ino, file))) = self.files.writer(fh)
            && file.only_emptied()
        {
            if let Err(e) = closing::close(&self.names, ino, &file).await {
                tracing::warn!(key = %file.location().key, error = %e, "a file emptied or created at open not saved at its release");
            }
            self.files.drop_handle(fh);
            return;
        }
        let Some((ino, file)) = self.files.release_unless_last_buffer(fh) else {
            return;
        };
        if file.only_emptied()
            && let Err(e) = self.names.commit(ino, &file).await
        {
            tracing::warn!(key = %file.location().key, error = %e, "a file emptied or created at open not saved at its release");
        }
        self.files.drop_handle(fh);
    }

    /// truncate (in the bucket), chmod, chown and utimes (in the directory's
    /// metadata).
    pub async fn setattr(&self, ino: Ino, fh: Option<u64>, set: SetAttr) -> FsResult<Attr> {
        self.changes.setattr(ino, fh, set).await
    }

    /// readlink(2): the target kept in the directory's metadata.
    pub async fn readlink(&self, ino: Ino) -> FsResult<String> {
        self.names.readlink(ino).await
    }

    /// fsync(2) of a directory: the metadata of its entries is in the
    /// bucket.
    pub async fn fsyncdir(&self, ino: Ino) -> FsResult<()> {
        self.names.fsyncdir(ino).await
    }

    /// Writes every directory's pending metadata (unmount).
    /// With `--write-back`: opens the journal, uploads what an earlier
    /// mount left in it, and from then on journals closes. Call before
    /// serving. Returns the files uploaded from the journal.
    pub async fn start_write_back(&self) -> FsResult<u64> {
        self.files.start_write_back().await
    }

    /// Uploads every queued file (unmount); returns those left in the
    /// journal because their uploads keep failing.
    pub async fn drain_write_back(&self) -> u64 {
        match self.files.write_back() {
            Some(wb) => wb.drain().await,
            None => 0,
        }
    }

    /// The write-back queue, if write-back is on.
    pub fn write_back(&self) -> Option<&Arc<writeback::WriteBack>> {
        self.files.write_back()
    }

    pub async fn flush_metadata(&self) -> FsResult<()> {
        self.names.flush_metadata().await
    }

    pub async fn opendir(&self, ino: Ino) -> FsResult<u64> {
        self.dirs.opendir(ino).await
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.releasedir(fh);
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
        fill: impl FnMut(ReaddirEntry<'_>) -> bool,
    ) -> FsResult<()> {
        self.dirs.readdir(ino, fh, offset, plus, fill).await
    }

    /// Creates a file and opens it. The object is written when the file is
    /// closed (an empty one for `touch`): the kernel holds the directory
    /// locked during create, so a request here would hold up every other
    /// create in that directory for as long as the store takes.
    pub async fn create(&self, parent: Ino, name: &OsStr) -> FsResult<(Attr, u64)> {
        self.create_as(parent, name, &self.creator(None)).await
    }

    /// create(2) as `who`, with its mode (after umask).
    pub async fn create_as(
        &self,
        parent: Ino,
        name: &OsStr,
        who: &Creator,
    ) -> FsResult<(Attr, u64)> {
        self.changes.create_as(parent, name, who).await
    }

    /// The attributes a new name gets: the caller's mode and ids, or the
    /// mount's defaults.
    pub fn creator(&self, mode: Option<u16>) -> Creator {
        self.changes.creator(mode)
    }

    pub async fn mkdir(&self, parent: Ino, name: &OsStr) -> FsResult<Attr> {
        self.mkdir_as(parent, name, &self.creator(None)).await
    }

    /// mkdir(2) as `who`, with its mode (after umask).
    pub async fn mkdir_as(&self, parent: Ino, name: &OsStr, who: &Creator) -> FsResult<Attr> {
        self.changes.mkdir_as(parent, name, who).await
    }

    /// symlink(2): an object at the name holding the target (what other
    /// S3 clients see), made a link by its entry in the directory's
    /// metadata, written after it.
    pub async fn symlink(
        &self,
        parent: Ino,
        name: &OsStr,
        target: &std::path::Path,
        who: &Creator,
    ) -> FsResult<Attr> {
        self.changes.symlink(parent, name, target, who).await
    }

    /// mknod(2): a regular file is in the bucket when the call returns (its
    /// create alone would hold it back until release); a fifo, socket or
    /// device is an empty object at the name, its kind in the metadata.
    pub async fn mknod(
        &self,
        parent: Ino,
        name: &OsStr,
        kind: Kind,
        rdev: u32,
        who: &Creator,
    ) -> FsResult<Attr> {
        if kind != Kind::File {
            return self.changes.mknod(parent, name, kind, rdev, who).await;
        }
        let (attr, fh) = self.create_as(parent, name, who).await?;
        let saved = match self.files.writer(fh) {
            Ok(Some((ino, file))) => self.names.commit(ino, &file).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        self.release(fh).await;
        saved.map(|()| attr)
    }

    pub async fn unlink(&self, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.changes.unlink(parent, name).await
    }

    pub async fn rmdir(&self, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.changes.rmdir(parent, name).await
    }

    pub async fn rename(
        &self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        no_replace: bool,
    ) -> FsResult<()> {
        self.renames
            .rename(parent, name, new_parent, new_name, no_replace)
            .await
    }
}
