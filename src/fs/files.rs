//! The file-data part of the core: open files and their handles, the
//! write-back buffers and their uploads, reads with read-ahead, read-ahead
//! across the files of a directory being walked, the one memory budget and
//! the local data cache.
//!
//! It knows nothing of names: callers (`Fs`, `Names`) give it an inode's
//! location and what the store said of it, and it answers with handles,
//! bytes and what an upload saved. Whether a file is being written here is
//! answered by its [`OpenFiles`], the one owner of open files' identity.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;

use super::budget::MetaBudget;
use super::config::{FsConfig, Gauges};
use super::data_cache::{self, DataCache};
use super::error::{FsError, FsResult};
use super::inode::{Ino, Inode, Location, Stat};
use super::memory::{self, Memory};
use super::open::{OpenFiles, Target};
use super::prefetch::FileReader;
use super::upload::{self, DirtyFile, Uploads};
use super::walk::{Fetched, Walk};
use super::writeback::WriteBack;
use crate::s3::ObjectClient;

pub struct Files {
    client: Arc<dyn ObjectClient>,
    cfg: FsConfig,
    open: OpenFiles,
    uploads: Arc<Uploads>,
    memory: Memory,
    /// Read-ahead across the files of a directory being walked.
    walk: Walk,
    /// Blocks of objects kept on local disk (`--data-cache`).
    data_cache: Option<Arc<DataCache>>,
    /// Tells the kernel to drop its cached attributes of an inode, once set
    /// by the adapter.
    kernel_forget: std::sync::OnceLock<Box<dyn Fn(Ino) + Send + Sync>>,
    /// The write-back queue, once started (`--write-back`).
    write_back: std::sync::OnceLock<Arc<WriteBack>>,
}

impl Files {
    pub fn new(
        client: Arc<dyn ObjectClient>,
        cfg: &FsConfig,
        data_cache: Option<Arc<DataCache>>,
        budget: Arc<MetaBudget>,
    ) -> Self {
        let memory = Memory::new(cfg.prefetch.max_memory, cfg.write.max_memory);
        Files {
            walk: Walk::new(
                client.clone(),
                memory.clone(),
                cfg.walk.clone(),
                data_cache.clone(),
                budget,
            ),
            uploads: Uploads::new(
                client.clone(),
                crate::fs::upload::WriteConfig {
                    // A data cache is filled, and a write-back journal
                    // written, from the staging file.
                    from_memory: cfg.write.from_memory
                        && data_cache.is_none()
                        && cfg.write_back.is_none(),
                    stream: cfg.write.stream && cfg.write_back.is_none(),
                    ..cfg.write.clone()
                },
                memory.clone(),
            ),
            memory,
            open: OpenFiles::default(),
            client,
            cfg: cfg.clone(),
            data_cache,
            kernel_forget: std::sync::OnceLock::new(),
            write_back: std::sync::OnceLock::new(),
        }
    }

    /// Opens the write-back journal of the configuration, uploads what an
    /// earlier mount left in it, and from then on journals closes. Returns
    /// the files uploaded from the journal.
    pub async fn start_write_back(&self) -> FsResult<u64> {
        let Some(cfg) = self.cfg.write_back.clone() else {
            return Ok(0);
        };
        if self.write_back.get().is_some() {
            return Err(FsError::Internal("write-back started twice"));
        }
        let (wb, replayed) = WriteBack::start(cfg, &self.uploads).await?;
        let _ = self.write_back.set(wb);
        Ok(replayed)
    }

    /// The write-back queue, when write-back is on.
    pub fn write_back(&self) -> Option<&Arc<WriteBack>> {
        self.write_back.get()
    }

    /// See `Fs::set_kernel_forget`.
    pub fn set_kernel_forget(&self, f: Box<dyn Fn(Ino) + Send + Sync>) {
        let _ = self.kernel_forget.set(f);
    }

    /// The open files: who is open, where, and with which buffer.
    pub fn open_files(&self) -> &OpenFiles {
        &self.open
    }

    pub fn uploads(&self) -> &Arc<Uploads> {
        &self.uploads
    }

    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    pub fn walk(&self) -> &Walk {
        &self.walk
    }

    /// A buffer for the file at `loc` whose content starts as `base` (an
    /// object's ETag and size), or empty.
    pub fn new_buffer(
        &self,
        loc: Location,
        base: Option<(Option<String>, u64)>,
    ) -> FsResult<Arc<DirtyFile>> {
        DirtyFile::new(self.uploads.clone(), loc, base)
    }

    /// Opens `node` for writing, its content the object `stat` (emptied
    /// when `truncate`): every handle of the inode shares one buffer.
    pub async fn open_writer(&self, node: &Inode, stat: &Stat, truncate: bool) -> FsResult<u64> {
        let ino = node.ino;
        let make = || self.new_buffer(node.loc.clone(), Some((stat.etag.clone(), stat.size)));
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
        Ok(fh)
    }

    /// The content a walk fetched ahead for `node`, if it is the object
    /// the listing showed (then no need to ask the store again).
    pub async fn fetched_ahead(&self, node: &Inode) -> Option<Fetched> {
        self.walk
            .opened(&node.loc, node.stat.etag.as_deref(), node.stat.size)
            .await
    }

    /// Opens `node` for reading the object `stat` (with its content when a
    /// walk fetched it ahead). Returns the handle and whether the inode has
    /// a buffer (then its handles read that).
    pub fn open_reader(&self, node: &Inode, stat: &Stat, ahead: Option<Fetched>) -> (u64, bool) {
        let mut reader = self.reader(&node.loc, stat);
        if let Some((whole, version)) = ahead {
            reader = reader.preloaded(whole, version);
        }
        let (fh, buffer) = self.open.open(
            node.ino,
            Some(&node.loc),
            Some(Arc::new(reader)),
            None,
            false,
        );
        (fh, buffer.is_some())
    }

    /// Opens one version of a file (it never changes, nor moves).
    pub fn open_version(&self, node: &Inode, id: &str) -> u64 {
        let reader = self.reader(&node.loc, &node.stat).pinned(id.to_string());
        self.open
            .open(node.ino, None, Some(Arc::new(reader)), None, false)
            .0
    }

    fn reader(&self, loc: &Location, stat: &Stat) -> FileReader {
        FileReader::new(
            self.client.clone(),
            loc.bucket.clone(),
            loc.key.clone(),
            stat.etag.clone(),
            stat.size,
            self.cfg.prefetch.clone(),
            self.memory.clone(),
        )
        .cached(self.data_cache.clone())
    }

    /// The kernel must ask again for `ino`'s attributes (its size changed
    /// under it).
    pub fn forget_in_kernel(&self, ino: Ino) {
        if let Some(forget) = self.kernel_forget.get() {
            forget(ino);
        }
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        match self.open.target(fh)?.1 {
            Target::Reader(reader) => reader.read(offset, size).await,
            Target::Buffer(file) => file.read(offset, size).await,
        }
    }

    /// Writes through handle `fh` (open for writing); returns its inode and
    /// the bytes taken.
    pub async fn write(&self, fh: u64, offset: u64, data: Bytes) -> FsResult<(Ino, u32)> {
        match self.open.target(fh)? {
            (ino, Target::Buffer(file), true) => Ok((ino, file.write(offset, data).await?)),
            _ => Err(FsError::BadHandle),
        }
    }

    /// The buffer behind handle `fh`, and its inode.
    pub fn buffer(&self, fh: u64) -> FsResult<(Ino, Arc<DirtyFile>)> {
        match self.open.target(fh)? {
            (ino, Target::Buffer(file), _) => Ok((ino, file)),
            _ => Err(FsError::BadHandle),
        }
    }

    /// The buffer handle `fh` writes to, if it is open for writing.
    pub fn writer(&self, fh: u64) -> FsResult<Option<(Ino, Arc<DirtyFile>)>> {
        Ok(match self.open.target(fh)? {
            (ino, Target::Buffer(file), true) => Some((ino, file)),
            _ => None,
        })
    }

    /// Uploads a file's changes; returns what the bucket now holds, or
    /// `None` when there was nothing to upload. What was saved is copied
    /// into the data cache in the background.
    pub async fn upload(&self, file: &Arc<DirtyFile>) -> FsResult<Option<upload::Committed>> {
        tracing::debug!(size = file.size(), dirty = file.is_dirty(), "commit");
        let done = file.commit().await?;
        if let Some(done) = &done {
            self.keep_written(file, done);
        }
        Ok(done)
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

    /// The server-side copy of `copy_file_range` (see `Fs`): the whole
    /// object read by `fh_in` into the empty file written by `fh_out`.
    /// Returns the written inode, its buffer and what the bucket holds.
    pub async fn copy_whole(
        &self,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
    ) -> FsResult<(Ino, Arc<DirtyFile>, upload::Committed)> {
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
        Ok((ino, file, done))
    }

    /// Releases `fh` unless it is the last handle of a buffer, which is
    /// returned for the caller to save first (see
    /// [`OpenFiles::release_unless_last_buffer`]).
    pub fn release_unless_last_buffer(&self, fh: u64) -> Option<(Ino, Arc<DirtyFile>)> {
        self.open.release_unless_last_buffer(fh)
    }

    /// Forgets handle `fh` (and its inode's buffer with its last handle).
    pub fn drop_handle(&self, fh: u64) {
        let Some(released) = self.open.release(fh) else {
            return;
        };
        if let Some(file) = released.last_buffer
            && file.is_dirty()
        {
            tracing::warn!(key = %file.location().key, "unsaved changes dropped: their upload failed and close() reported it");
        }
    }

    /// The buffer of open inode `node`, made for it if its handles only
    /// read, so that its content can be made local ([`DirtyFile::keep_all`])
    /// and its handles keep reading it once its object is deleted or
    /// replaced (POSIX keeps an unlinked file until its last close). `None`
    /// when it is not open.
    pub fn open_content(&self, node: &Inode) -> FsResult<Option<Arc<DirtyFile>>> {
        // The handles read the version they opened.
        let base = match self.open.any_reader(node.ino) {
            Some(r) => (r.etag(), r.size()),
            None => (node.stat.etag.clone(), node.stat.size),
        };
        let make = || self.new_buffer(node.loc.clone(), Some(base.clone()));
        self.open.buffer_or_insert(node.ino, make)
    }

    /// Waits until every multipart upload is completed or aborted, and the
    /// data cache has stored what it was given.
    pub async fn settle(&self) {
        self.uploads.open.none_open().await;
        if let Some(cache) = &self.data_cache {
            cache.idle().await;
        }
    }

    /// Fills in the gauges of open files, uploads, memory, the walk and the
    /// data cache.
    pub fn gauges(&self, g: &mut Gauges) {
        use std::sync::atomic::Ordering::Relaxed;
        let dc = self.data_cache.as_ref();
        let dcs = |f: fn(&data_cache::DataCacheStats) -> &AtomicU64| {
            dc.map_or(0, |c| f(&c.stats).load(Relaxed))
        };
        let (walk_fetched, walk_used) = self.walk.counts();
        g.data_cache_hits = dcs(|s| &s.hits);
        g.data_cache_misses = dcs(|s| &s.misses);
        g.data_cache_hit_bytes = dcs(|s| &s.hit_bytes);
        g.data_cache_stored_bytes = dcs(|s| &s.stored_bytes);
        g.data_cache_evicted = dcs(|s| &s.evicted);
        g.data_cache_invalid = dcs(|s| &s.invalid);
        g.data_cache_used_bytes = dc.map_or(0, |c| c.used());
        g.open_handles = self.open.handle_count() as u64;
        g.dirty_files = self.open.dirty_count() as u64;
        g.staged_bytes = self.uploads.staged();
        g.multipart_uploads = self.uploads.open.open_count() as u64;
        g.read_ahead_bytes = self.memory.in_use_for(memory::Use::ReadAhead);
        g.transfer_bytes = self.memory.in_use_for(memory::Use::Transfer)
            + self.memory.in_use_for(memory::Use::Tail);
        g.memory_peak_bytes = self.memory.peak();
        if let Some(wb) = self.write_back() {
            let (files, bytes, failed) = wb.counts();
            g.write_back_queued_files = files;
            g.write_back_queued_bytes = bytes;
            g.write_back_failed_files = failed;
            g.write_back_uploaded = wb.stats.uploaded.load(Relaxed);
            g.write_back_failures = wb.stats.failures.load(Relaxed);
            g.write_back_replayed = wb.stats.replayed.load(Relaxed);
        }
        g.walk_fetched = walk_fetched;
        g.walk_used = walk_used;
    }
}
