//! Writing: the write-back buffer and the uploads that empty it.
//!
//! Design:
//! - A file open for writing has one [`DirtyFile`], shared by all its
//!   handles. Written bytes go to a *staging file*: a sparse temp file in
//!   the cache directory, unlinked at once (a crash leaves nothing behind).
//!   RAM holds only parts being uploaded, bounded by a semaphore of bytes
//!   shared by the mount: writers wait for memory instead of growing it.
//!   Staged bytes of all files together are bounded too (ENOSPC beyond).
//! - The file is the *base* object (its ETag and the length of it still in
//!   use) overlaid with *dirty* ranges. Bytes of the base a reader or an
//!   upload needs are fetched into the staging file on demand (*present*).
//! - A new or truncated file written from start to end *streams*: each
//!   part is uploaded in the background as soon as it is complete and more
//!   data follows. Part sizes grow with the part number (8 MiB for the
//!   first thousand, doubling every thousand) so 10 000 parts reach past
//!   5 TiB without knowing the final size.
//! - Otherwise `commit` plans the object afresh: unchanged ranges of the
//!   base stay on the server (UploadPartCopy, guarded by If-Match on the
//!   base ETag), changed ones are uploaded; a piece too small to be a part
//!   (under 5 MiB, not the last) is merged into its neighbour, filling its
//!   unchanged bytes from the base. Small files are one PUT.
//! - `commit` (on close and fsync) returns only when the object is
//!   complete in the bucket. A failed multipart upload is aborted, so no
//!   partial object appears and the old content stays; the written data
//!   stays staged and the error goes to close/fsync (EIO).

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use super::memory::{Memory, Permit, Use};
use tokio::task::JoinHandle;

use super::error::{FsError, FsResult, local_io};
use super::inode::Location;
use super::multipart::{self, Multipart, PartSource};
use super::ranges::RangeSet;
use crate::s3::{CompletedPart, CopySource, GetObjectParams, ObjectClient, S3Error, limits};

#[derive(Debug, Clone)]
pub struct WriteConfig {
    /// Where staging files live. Default: `$TMPDIR` (or /var/tmp).
    pub cache_dir: PathBuf,
    /// Bytes all files together may stage. Default 10 GiB.
    pub max_staged: u64,
    /// Part size of the first thousand streamed parts, and the smallest
    /// part of a planned upload. Default 8 MiB.
    pub part_size: u64,
    /// Parts of one file uploading at once. Default 8.
    pub parts_in_flight: usize,
    /// Bytes of parts in memory for all uploads together. Default 128 MiB.
    pub max_memory: u64,
}

impl Default for WriteConfig {
    fn default() -> Self {
        const MIB: u64 = 1024 * 1024;
        WriteConfig {
            cache_dir: std::env::temp_dir(),
            max_staged: 10 * 1024 * MIB,
            part_size: 8 * MIB,
            parts_in_flight: 8,
            max_memory: 128 * MIB,
        }
    }
}

/// What every dirty file of a mount shares.
pub struct Uploads {
    pub cfg: WriteConfig,
    pub client: Arc<dyn ObjectClient>,
    /// Multipart uploads not yet completed or aborted.
    pub open: multipart::OpenUploads,
    memory: Memory,
    staged: AtomicU64,
}

impl Uploads {
    pub fn new(client: Arc<dyn ObjectClient>, cfg: WriteConfig, memory: Memory) -> Arc<Self> {
        Arc::new(Uploads {
            memory,
            cfg,
            client,
            open: multipart::OpenUploads::default(),
            staged: AtomicU64::new(0),
        })
    }

    /// The largest part memory allows (every part is in memory whole
    /// while it is sent).
    fn largest_part(&self) -> u64 {
        self.memory.largest(Use::Transfer)
    }

    /// The size of streamed part number `n` (1-based): doubling every
    /// thousand parts, up to what memory allows.
    fn stream_part_len(&self, n: u32) -> u64 {
        (self.cfg.part_size << ((n - 1) / 1000).min(10)).min(self.largest_part())
    }

    /// The size of planned parts for an object of `size` bytes.
    fn planned_part_len(&self, size: u64) -> u64 {
        const MIB: u64 = 1024 * 1024;
        let fit = size.div_ceil(u64::from(PLANNED_PARTS)).div_ceil(MIB) * MIB;
        self.cfg
            .part_size
            .max(fit)
            .max(limits::MIN_PART_SIZE)
            .min(self.largest_part())
    }

    /// Bytes of files being written held in staging files, not yet in
    /// the bucket.
    pub fn staged(&self) -> u64 {
        self.staged.load(Ordering::Relaxed)
    }

    /// The largest file that can be written: as many parts as a planned
    /// upload may have, each as large as memory allows.
    pub fn max_file_size(&self) -> u64 {
        u64::from(PLANNED_PARTS) * self.largest_part()
    }
}

/// Parts a planned upload uses at most (a margin below S3's 10 000 for
/// the pieces that planning splits and merges).
const PLANNED_PARTS: u32 = limits::MAX_PARTS - 100;

#[derive(Debug, Clone)]
struct Base {
    etag: Option<String>,
    /// Bytes of the object that still belong to the file (truncation cuts).
    len: u64,
}

struct Stream {
    upload: Arc<Multipart>,
    parts: Vec<JoinHandle<FsResult<CompletedPart>>>,
    uploaded_to: u64,
}

struct State {
    size: u64,
    base: Option<Base>,
    /// Changes whenever the base changes or loses bytes (a truncation, a
    /// commit that makes a new object the base). A fill from the base that
    /// started under another epoch writes nothing: its bytes may belong
    /// past the end, or to an object that is no longer the base.
    base_epoch: u64,
    /// The smallest size since the running commit took its snapshot: the
    /// object it writes is the file's content only below this.
    low_water: u64,
    dirty: RangeSet,
    present: RangeSet,
    generation: u64,
    committed: u64,
    stream: Option<Stream>,
    /// Staged bytes counted against the mount's limit.
    charged: u64,
    /// The generation an emptying open left: while the file is still at
    /// it, flushes hold it back (see [`DirtyFile::hold_empty`]).
    truncated_at: Option<u64>,
}

pub struct DirtyFile {
    up: Arc<Uploads>,
    loc: Mutex<Location>,
    staging: Arc<std::fs::File>,
    /// Held across this file's staging I/O, never across an await, and
    /// never by anything that other files or the FUSE loop wait for: they
    /// read `size` and `changed` below instead.
    state: Mutex<State>,
    /// `State::size`, readable without waiting for a staging write.
    size: AtomicU64,
    /// Whether there are changes not yet in the bucket (`generation !=
    /// committed`), likewise.
    changed: std::sync::atomic::AtomicBool,
    part_slots: Arc<Semaphore>,
    /// Set by unlink: the name is gone, so nothing may be written back.
    unlinked: std::sync::atomic::AtomicBool,
    /// Commits of one file run one at a time: each must see the result of
    /// the one before. An async mutex, held across the upload on purpose;
    /// nothing else ever waits on it while holding another lock.
    commit_serial: tokio::sync::Mutex<()>,
}

/// What a successful commit left in the bucket.
#[derive(Debug, Clone)]
pub struct Committed {
    pub size: u64,
    pub etag: Option<String>,
    /// The file's generation, when the staging file holds every byte of
    /// the object saved (see [`DirtyFile::read_saved`]).
    pub staged: Option<u64>,
}

/// One piece of a planned upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes kept from the base object.
    Copy(Range<u64>),
    /// Bytes sent from the staging file.
    Upload(Range<u64>),
}

impl Piece {
    fn range(&self) -> &Range<u64> {
        match self {
            Piece::Copy(r) | Piece::Upload(r) => r,
        }
    }

    fn len(&self) -> u64 {
        let r = self.range();
        r.end - r.start
    }
}

/// Splits `0..size` into parts: unchanged bytes of the base (below
/// `base_len`, outside `dirty`) are copied, the rest uploaded; no part but
/// the last is under 5 MiB, none over 5 GiB, uploads at most `part_len`.
pub fn plan(size: u64, base_len: u64, dirty: &RangeSet, part_len: u64) -> Vec<Piece> {
    let mut runs: Vec<Piece> = Vec::new();
    let copyable_end = base_len.min(size);
    let mut pos = 0;
    for gap in dirty.gaps(0..copyable_end) {
        if gap.start > pos {
            runs.push(Piece::Upload(pos..gap.start));
        }
        runs.push(Piece::Copy(gap.clone()));
        pos = gap.end;
    }
    if pos < size {
        runs.push(Piece::Upload(pos..size));
    }
    let mut parts: Vec<Piece> = Vec::new();
    for run in runs {
        let (r, max) = match &run {
            Piece::Copy(r) => (r.clone(), limits::MAX_PART_SIZE),
            Piece::Upload(r) => (r.clone(), part_len),
        };
        let mut start = r.start;
        while start < r.end {
            let end = r.end.min(start + max);
            parts.push(match run {
                Piece::Copy(_) => Piece::Copy(start..end),
                Piece::Upload(_) => Piece::Upload(start..end),
            });
            start = end;
        }
    }
    // Grow every small part but the last into an upload of at least 5 MiB,
    // taking bytes from the parts after it.
    let mut i = 0;
    while i + 1 < parts.len() {
        if parts[i].len() >= limits::MIN_PART_SIZE {
            i += 1;
            continue;
        }
        let start = parts[i].range().start;
        let want_end = start + part_len.max(limits::MIN_PART_SIZE);
        let mut end = parts[i].range().end;
        let mut j = i + 1;
        while j < parts.len() && end < want_end {
            let r = parts[j].range().clone();
            if r.end <= want_end {
                end = r.end;
                j += 1;
            } else {
                end = want_end;
                parts[j] = match &parts[j] {
                    Piece::Copy(_) => Piece::Copy(want_end..r.end),
                    Piece::Upload(_) => Piece::Upload(want_end..r.end),
                };
                break;
            }
        }
        parts.splice(i..j, [Piece::Upload(start..end)]);
        i += 1;
    }
    parts
}

impl DirtyFile {
    /// A file whose content starts as `base` (an existing object of
    /// `base_size` bytes), or empty.
    pub fn new(
        up: Arc<Uploads>,
        loc: Location,
        base: Option<(Option<String>, u64)>,
    ) -> FsResult<Arc<Self>> {
        let staging = tempfile::tempfile_in(&up.cfg.cache_dir).map_err(|e| {
            local_io(
                format!("creating a staging file in {}", up.cfg.cache_dir.display()),
                e,
            )
        })?;
        // An empty base is no base: the file is new, and may stream.
        let base = base.filter(|b| b.1 > 0);
        let size = base.as_ref().map_or(0, |b| b.1);
        // The staging file is as long as the file (sparse), so that reads
        // stop at its end and nothing lies beyond it.
        staging
            .set_len(size)
            .map_err(|e| local_io("sizing the staging file", e))?;
        Ok(Arc::new(DirtyFile {
            size: AtomicU64::new(size),
            changed: std::sync::atomic::AtomicBool::new(false),
            part_slots: Arc::new(Semaphore::new(up.cfg.parts_in_flight.max(1))),
            up,
            loc: Mutex::new(loc),
            staging: Arc::new(staging),
            state: Mutex::new(State {
                size,
                base: base.map(|(etag, len)| Base { etag, len }),
                base_epoch: 0,
                low_water: size,
                dirty: RangeSet::new(),
                present: RangeSet::new(),
                generation: 0,
                committed: 0,
                stream: None,
                charged: 0,
                truncated_at: None,
            }),
            commit_serial: tokio::sync::Mutex::new(()),
            unlinked: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::SeqCst)
    }

    /// Records a new size or generation in the mirrors read without the lock.
    fn publish(&self, st: &State) {
        self.size.store(st.size, Ordering::SeqCst);
        self.changed
            .store(st.generation != st.committed, Ordering::SeqCst);
    }

    pub fn location(&self) -> Location {
        self.loc.lock().expect("loc lock").clone()
    }

    pub fn set_location(&self, loc: Location) {
        *self.loc.lock().expect("loc lock") = loc;
    }

    /// The file's name was removed while it is open: its content is no
    /// longer written back (as an unlinked file's data goes nowhere).
    /// Callers first make the content local ([`DirtyFile::keep_all`]), so
    /// open handles keep reading it once the object is gone.
    pub fn unlink(&self) {
        self.unlinked.store(true, Ordering::SeqCst);
        let mut st = self.state.lock().expect("dirty lock");
        if let Some(stream) = st.stream.take() {
            self.abandon(stream);
        }
        // Nothing is ever read from the object again.
        st.base = None;
        st.base_epoch += 1;
    }

    /// Waits for a running commit and keeps others from starting while the
    /// guard lives (unlink holds it across its delete, so that no upload
    /// brings the object back after it).
    pub async fn pause_commits(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.commit_serial.lock().await
    }

    /// Undoes [`DirtyFile::unlink`] when deleting the object failed.
    pub fn relink(&self) {
        self.unlinked.store(false, Ordering::SeqCst);
    }

    /// Makes every byte of the file local, so it no longer needs the object.
    pub async fn keep_all(self: &Arc<Self>) -> FsResult<()> {
        let size = self.size();
        self.ensure_present(0..size).await
    }

    pub fn is_unlinked(&self) -> bool {
        self.unlinked.load(Ordering::SeqCst)
    }

    /// An open with O_TRUNC, or a create, just left the file empty. Until
    /// anything else changes it, a flush does not publish that: `echo x >
    /// f` closes a dup of the descriptor before it writes, and other hosts
    /// would see the file empty, a versioned bucket would keep an empty
    /// version. Release or fsync publish it.
    pub fn hold_empty(&self) {
        let mut st = self.state.lock().expect("dirty lock");
        st.truncated_at = Some(st.generation);
    }

    /// Whether the file's only unsaved change is its emptying at open.
    pub fn only_emptied(&self) -> bool {
        let st = self.state.lock().expect("dirty lock");
        st.generation != st.committed && st.truncated_at == Some(st.generation)
    }

    /// Whether there are changes not yet in the bucket.
    pub fn is_dirty(&self) -> bool {
        self.changed.load(Ordering::SeqCst) && !self.unlinked.load(Ordering::SeqCst)
    }

    /// Counts `new_size` against the mount's staging limit.
    fn charge(&self, st: &mut State, new_size: u64) -> FsResult<()> {
        if new_size <= st.charged {
            return Ok(());
        }
        if new_size > self.up.max_file_size() {
            return Err(FsError::FileTooBig);
        }
        let more = new_size - st.charged;
        let before = self.up.staged.fetch_add(more, Ordering::SeqCst);
        if before + more > self.up.cfg.max_staged {
            self.up.staged.fetch_sub(more, Ordering::SeqCst);
            return Err(FsError::NoSpace);
        }
        st.charged = new_size;
        Ok(())
    }

    pub async fn write(self: &Arc<Self>, offset: u64, data: Bytes) -> FsResult<u32> {
        let len = data.len() as u64;
        let this = self.clone();
        // Local disk I/O off the async workers; the state lock covers the
        // pwrite so a concurrent fill from the base cannot overwrite it.
        tokio::task::spawn_blocking(move || {
            let mut st = this.state.lock().expect("dirty lock");
            let end = offset + len;
            let grown = end.max(st.size);
            this.charge(&mut st, grown)?;
            this.staging
                .write_all_at(&data, offset)
                .map_err(|e| local_io("writing the staging file", e))?;
            st.size = st.size.max(end);
            st.dirty.insert(offset..end);
            st.present.insert(offset..end);
            st.generation += 1;
            this.publish(&st);
            if let Some(stream) = &st.stream
                && offset < stream.uploaded_to
            {
                // Rewriting what already went up: plan afresh at commit.
                let stream = st.stream.take().expect("checked");
                this.abandon(stream);
            }
            Ok::<(), FsError>(())
        })
        .await
        .map_err(|_| FsError::Cancelled)??;
        self.stream_parts().await?;
        Ok(len as u32)
    }

    /// Starts background uploads of the parts that are complete, when the
    /// file is new (no base) and more data follows them.
    async fn stream_parts(self: &Arc<Self>) -> FsResult<()> {
        loop {
            let (upload, range, number) = {
                let st = self.state.lock().expect("dirty lock");
                // An unlinked file is never written back: nothing to stream.
                if st.base.is_some() || self.unlinked.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let (uploaded_to, n) = st
                    .stream
                    .as_ref()
                    .map_or((0, 1), |s| (s.uploaded_to, s.parts.len() as u32 + 1));
                if n > limits::MAX_PARTS - 1 {
                    return Ok(());
                }
                let part_end = uploaded_to + self.up.stream_part_len(n);
                // The last part is left for the commit, so it is never empty.
                if st.size <= part_end {
                    return Ok(());
                }
                (
                    st.stream.as_ref().map(|s| s.upload.clone()),
                    uploaded_to..part_end,
                    n,
                )
            };
            // Back-pressure: a writer waits while its parts are uploading.
            let slot = self
                .part_slots
                .clone()
                .acquire_owned()
                .await
                .expect("slots never close");
            let upload = match upload {
                Some(u) => u,
                None => {
                    let loc = self.location();
                    let upload = Multipart::create(
                        self.up.client.clone(),
                        &self.up.open,
                        loc.bucket,
                        loc.key,
                    )
                    .await?;
                    let mut st = self.state.lock().expect("dirty lock");
                    if st.stream.is_some() || st.base.is_some() {
                        // Raced with another writer, or truncated: dropping
                        // the upload aborts it.
                        continue;
                    }
                    st.stream = Some(Stream {
                        upload: upload.clone(),
                        parts: Vec::new(),
                        uploaded_to: 0,
                    });
                    upload
                }
            };
            let task = {
                let this = self.clone();
                let range = range.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let (body, _memory) = this.read_staging(range).await?;
                    upload.upload(number, body).await
                })
            };
            let mut st = self.state.lock().expect("dirty lock");
            match &mut st.stream {
                Some(s) if s.parts.len() as u32 + 1 == number && s.uploaded_to == range.start => {
                    s.parts.push(task);
                    s.uploaded_to = range.end;
                }
                _ => task.abort(),
            }
        }
    }

    /// Gives up a stream: its parts stop, and the upload is aborted once
    /// the last of them lets go of it.
    fn abandon(&self, stream: Stream) {
        for p in &stream.parts {
            p.abort();
        }
    }

    /// Bytes of the staging file, holding memory permits while they live.
    async fn read_staging(&self, range: Range<u64>) -> FsResult<(Bytes, Permit)> {
        let len = range.end - range.start;
        let permit = self.up.memory.take(Use::Transfer, len).await;
        let staging = self.staging.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            // A reused buffer: a fresh one costs a page fault per 4 KiB.
            let mut buf = crate::s3::buffers::take(len as usize);
            buf.resize(len as usize, 0);
            staging.read_exact_at(&mut buf, range.start).map(|_| buf)
        })
        .await
        .map_err(|_| FsError::Cancelled)?
        .map_err(|e| local_io("reading the staging file", e))?;
        Ok((crate::s3::buffers::freeze(bytes), permit))
    }

    /// Makes the base's bytes in `range` present in the staging file. A
    /// fill that finds the base changed when its answer arrives (see
    /// `State::base_epoch`) writes nothing, and what is still missing is
    /// asked for again under the new base.
    async fn ensure_present(self: &Arc<Self>, range: Range<u64>) -> FsResult<()> {
        loop {
            let (gaps, etag, epoch) = {
                let st = self.state.lock().expect("dirty lock");
                let Some(base) = &st.base else {
                    return Ok(());
                };
                let end = range.end.min(base.len);
                if range.start >= end {
                    return Ok(());
                }
                (
                    st.present.gaps(range.start..end),
                    base.etag.clone(),
                    st.base_epoch,
                )
            };
            if gaps.is_empty() {
                return Ok(());
            }
            if let Err(e) = self.fill(gaps, etag, epoch).await {
                // A fill that failed because the base moved (renamed,
                // replaced by a commit) is asked for again from the new one.
                if self.state.lock().expect("dirty lock").base_epoch == epoch {
                    return Err(e);
                }
            }
        }
    }

    /// The file was renamed: its base object is now at the new location
    /// with `new` as its ETag (a copy may change it), if it was `old`.
    pub fn rebase(&self, loc: Location, old: &Option<String>, new: Option<String>) {
        let mut st = self.state.lock().expect("dirty lock");
        *self.loc.lock().expect("loc lock") = loc;
        if let Some(base) = &mut st.base
            && base.etag == *old
        {
            base.etag = new;
        }
        st.base_epoch += 1;
    }

    /// Fetches `gaps` of the base (as it was at `epoch`) into the staging
    /// file, in parts fetched in parallel.
    async fn fill(
        self: &Arc<Self>,
        gaps: Vec<Range<u64>>,
        etag: Option<String>,
        epoch: u64,
    ) -> FsResult<()> {
        let loc = self.location();
        let chunk = self.up.cfg.part_size.min(self.up.largest_part());
        let pieces: Vec<Range<u64>> = gaps
            .into_iter()
            .flat_map(|g| {
                (g.start..g.end)
                    .step_by(chunk as usize)
                    .map(move |s| s..(s + chunk).min(g.end))
            })
            .collect();
        futures::stream::iter(pieces)
            .map(|piece| {
                let loc = loc.clone();
                let etag = etag.clone();
                async move {
                    // Held until the bytes are in the staging file.
                    let _memory = self
                        .up
                        .memory
                        .take(Use::Transfer, piece.end - piece.start)
                        .await;
                    let out = self
                        .up
                        .client
                        .get_object(
                            &loc.bucket,
                            &loc.key,
                            &GetObjectParams {
                                range: Some(piece.clone()),
                                if_match: etag,
                                ..Default::default()
                            },
                        )
                        .await?;
                    if out.body.len() as u64 != piece.end - piece.start {
                        return Err(FsError::S3(S3Error::InvalidResponse {
                            operation: "GetObject",
                            detail: format!(
                                "asked for {} bytes, got {}",
                                piece.end - piece.start,
                                out.body.len()
                            ),
                        }));
                    }
                    let this = self.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut st = this.state.lock().expect("dirty lock");
                        if st.base_epoch != epoch {
                            return Ok(());
                        }
                        // Only what nobody wrote meanwhile, and never past
                        // the end (the base's length follows truncation).
                        let limit = st.base.as_ref().map_or(0, |b| b.len).min(st.size);
                        let piece = piece.start..piece.end.min(limit);
                        if piece.is_empty() {
                            return Ok(());
                        }
                        for gap in st.present.gaps(piece.clone()) {
                            let from = (gap.start - piece.start) as usize;
                            let to = (gap.end - piece.start) as usize;
                            this.staging
                                .write_all_at(&out.body[from..to], gap.start)
                                .map_err(|e| local_io("writing the staging file", e))?;
                        }
                        st.present.insert(piece);
                        Ok::<(), FsError>(())
                    })
                    .await
                    .map_err(|_| FsError::Cancelled)?
                }
            })
            .buffer_unordered(self.up.cfg.parts_in_flight.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Bytes `offset..offset+len` of the file as it is now; fewer at its
    /// end. The bytes are taken under the file's lock, with the size of
    /// that moment, so a read racing a write or a truncation of the same
    /// file returns the file as it was before it or after it, never a mix
    /// (other files never wait for this lock).
    pub async fn read(self: &Arc<Self>, offset: u64, len: u32) -> FsResult<Bytes> {
        loop {
            let size = self.size();
            if offset >= size || len == 0 {
                return Ok(Bytes::new());
            }
            self.ensure_present(offset..size.min(offset + u64::from(len)))
                .await?;
            let this = self.clone();
            let got = tokio::task::spawn_blocking(move || {
                let st = this.state.lock().expect("dirty lock");
                let end = st.size.min(offset + u64::from(len));
                if offset >= end {
                    return Ok(Some(Vec::new()));
                }
                // Grown since, or a fill given up: fetch what is missing.
                let base_end = st.base.as_ref().map_or(0, |b| b.len).min(end);
                if offset < base_end && !st.present.gaps(offset..base_end).is_empty() {
                    return Ok(None);
                }
                // The staging file is as long as the file under this lock.
                let mut buf = vec![0u8; (end - offset) as usize];
                this.staging.read_exact_at(&mut buf, offset)?;
                Ok(Some(buf))
            })
            .await
            .map_err(|_| FsError::Cancelled)?
            .map_err(|e| local_io("reading the staging file", e))?;
            if let Some(bytes) = got {
                return Ok(Bytes::from(bytes));
            }
        }
    }

    /// Bytes `range` of what the commit that returned `generation` in
    /// [`Committed::staged`] saved, from the staging file; `None` once the
    /// file has changed since. Blocking (local disk).
    pub fn read_saved(&self, generation: u64, range: Range<u64>) -> Option<Vec<u8>> {
        let st = self.state.lock().expect("dirty lock");
        if st.generation != generation || range.end > st.size {
            return None;
        }
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        self.staging.read_exact_at(&mut buf, range.start).ok()?;
        Some(buf)
    }

    /// Truncates or extends the file to `new_size` (extension reads as zeros).
    pub async fn set_size(self: &Arc<Self>, new_size: u64) -> FsResult<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut st = this.state.lock().expect("dirty lock");
            this.charge(&mut st, new_size)?;
            // The staging file follows the size both ways: cut bytes are
            // gone (zeros if it grows again), added ones read as zeros.
            this.staging
                .set_len(new_size)
                .map_err(|e| local_io("resizing the staging file", e))?;
            if new_size < st.size {
                st.dirty.truncate(new_size);
                st.present.truncate(new_size);
                if let Some(base) = &mut st.base
                    && new_size < base.len
                {
                    base.len = new_size;
                    st.base_epoch += 1;
                }
                if st
                    .stream
                    .as_ref()
                    .is_some_and(|s| new_size <= s.uploaded_to)
                {
                    let stream = st.stream.take().expect("checked");
                    this.abandon(stream);
                }
            }
            if new_size == 0 && st.base.is_some() {
                // Nothing of the old object is left: a new file, which may stream.
                st.base = None;
                st.base_epoch += 1;
            }
            st.size = new_size;
            st.low_water = st.low_water.min(new_size);
            st.generation += 1;
            this.publish(&st);
            Ok::<(), FsError>(())
        })
        .await
        .map_err(|_| FsError::Cancelled)?
    }

    /// Puts the file's content in the bucket; returns only when it is
    /// complete there. `Ok(None)`: nothing had changed.
    pub async fn commit(self: &Arc<Self>) -> FsResult<Option<Committed>> {
        let _serial = self.commit_serial.lock().await;
        let (generation, size, base, dirty, stream, all_staged) = {
            let mut st = self.state.lock().expect("dirty lock");
            if st.generation == st.committed || self.unlinked.load(Ordering::SeqCst) {
                return Ok(None);
            }
            st.low_water = st.size;
            let base_len = st.base.as_ref().map_or(0, |b| b.len).min(st.size);
            let all_staged = base_len == 0 || st.present.covers(0..base_len);
            (
                st.generation,
                st.size,
                st.base.clone(),
                st.dirty.clone(),
                st.stream.take(),
                all_staged,
            )
        };
        let loc = self.location();
        let result = match stream {
            // A stream started under another name (renamed since), or whose
            // last part would not fit in memory (it ran out of part numbers),
            // is given up, and the file planned afresh.
            Some(stream)
                if stream.upload.key() == loc.key
                    && size - stream.uploaded_to <= self.up.largest_part() =>
            {
                self.finish_stream(stream, size).await
            }
            Some(stream) => {
                self.abandon(stream);
                self.upload_planned(&loc, size, base.as_ref(), &dirty).await
            }
            None => self.upload_planned(&loc, size, base.as_ref(), &dirty).await,
        };
        let etag = result?;
        let mut st = self.state.lock().expect("dirty lock");
        st.committed = generation;
        // An empty object is no base: a file written from nothing after it
        // (dd's first close comes before its writes) may still stream.
        // What was cut after the snapshot is not the file's any more, even
        // though the new object holds it.
        let len = size.min(st.low_water);
        st.base = (len > 0 && !self.unlinked.load(Ordering::SeqCst)).then(|| Base {
            etag: etag.clone(),
            len,
        });
        st.base_epoch += 1;
        if st.generation == generation {
            st.dirty = RangeSet::new();
        }
        self.publish(&st);
        Ok(Some(Committed {
            size,
            etag,
            staged: (all_staged && st.generation == generation).then_some(generation),
        }))
    }

    /// Makes the file, empty until now, a server-side copy of `source`
    /// (`size` bytes): PUT Object Copy straight to the file's key, then the
    /// copy is the file's base with nothing left to upload. Refused
    /// (NotSupported, so the kernel copies the bytes itself) unless the file
    /// is empty, saved or not, and nothing is streaming.
    pub async fn replace_by_copy(
        self: &Arc<Self>,
        source: &CopySource,
        size: u64,
    ) -> FsResult<Committed> {
        let _serial = self.commit_serial.lock().await;
        let empty = |st: &State| st.size == 0 && st.stream.is_none();
        if !empty(&self.state.lock().expect("dirty lock")) || self.is_unlinked() {
            return Err(FsError::NotSupported);
        }
        let loc = self.location();
        let out = self
            .up
            .client
            .copy_object(&loc.bucket, &loc.key, source)
            .await?;
        let this = self.clone();
        let etag = out.etag.clone();
        tokio::task::spawn_blocking(move || {
            let mut st = this.state.lock().expect("dirty lock");
            if !empty(&st) {
                // Written meanwhile through another handle: that content is
                // committed at its close, over the copy.
                return Err(FsError::NotSupported);
            }
            this.staging
                .set_len(size)
                .map_err(|e| local_io("sizing the staging file", e))?;
            st.size = size;
            st.low_water = size;
            st.base = Some(Base { etag, len: size });
            st.base_epoch += 1;
            st.dirty = RangeSet::new();
            st.present = RangeSet::new();
            st.generation += 1;
            st.committed = st.generation;
            this.publish(&st);
            Ok(())
        })
        .await
        .map_err(|_| FsError::Cancelled)??;
        Ok(Committed {
            size,
            etag: out.etag,
            staged: None,
        })
    }

    /// Completes a stream: the last part goes up while earlier parts may
    /// still be in flight, and the first part that fails for good ends the
    /// commit at once (the others stop, the upload is aborted). So a server
    /// that stops answering costs one request's retry deadline and timeout,
    /// not one per part in sequence.
    async fn finish_stream(
        self: &Arc<Self>,
        stream: Stream,
        size: u64,
    ) -> FsResult<Option<String>> {
        let upload = stream.upload.clone();
        let stops: Vec<_> = stream.parts.iter().map(|t| t.abort_handle()).collect();
        let number = stream.parts.len() as u32 + 1;
        let earlier = futures::future::try_join_all(
            stream
                .parts
                .into_iter()
                .map(|t| async move { t.await.map_err(|_| FsError::Cancelled)? }),
        );
        let last = async {
            let (body, _memory) = self.read_staging(stream.uploaded_to..size).await?;
            upload.upload(number, body).await
        };
        let result = async {
            let (mut parts, last) = futures::future::try_join(earlier, last).await?;
            parts.push(last);
            upload.complete(&parts).await
        }
        .await;
        if result.is_err() {
            for stop in stops {
                stop.abort();
            }
            upload.abort().await;
        }
        result
    }

    async fn upload_planned(
        self: &Arc<Self>,
        loc: &Location,
        size: u64,
        base: Option<&Base>,
        dirty: &RangeSet,
    ) -> FsResult<Option<String>> {
        let client = &self.up.client;
        let base_len = base.map_or(0, |b| b.len);
        let part_len = self.up.planned_part_len(size);
        if size <= part_len {
            self.ensure_present(0..size).await?;
            let (body, _memory) = self.read_staging(0..size).await?;
            return Ok(client.put_object(&loc.bucket, &loc.key, body).await?.etag);
        }
        let pieces = plan(size, base_len, dirty, part_len)
            .into_iter()
            .map(|p| match p {
                Piece::Copy(r) => PartSource::Copy(r),
                Piece::Upload(r) => PartSource::Upload(r),
            })
            .collect();
        let source = CopySource {
            bucket: loc.bucket.to_string(),
            key: loc.key.clone(),
            version_id: None,
            if_match: base.and_then(|b| b.etag.clone()),
        };
        let upload = Multipart::create(
            client.clone(),
            &self.up.open,
            loc.bucket.clone(),
            loc.key.clone(),
        )
        .await?;
        upload
            .run(
                pieces,
                Some(&source),
                self.up.cfg.parts_in_flight,
                |r: Range<u64>| async move {
                    self.ensure_present(r.clone()).await?;
                    self.read_staging(r).await
                },
            )
            .await
    }
}

impl Drop for DirtyFile {
    fn drop(&mut self) {
        let st = self.state.get_mut().expect("dirty lock");
        self.up.staged.fetch_sub(st.charged, Ordering::SeqCst);
        if let Some(stream) = st.stream.take() {
            // The upload itself is aborted when its last part lets go.
            self.abandon(stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn check(parts: &[Piece], size: u64) {
        let mut pos = 0;
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.range().start, pos, "{parts:?}");
            pos = p.range().end;
            assert!(p.len() > 0);
            assert!(p.len() <= limits::MAX_PART_SIZE);
            if i + 1 < parts.len() {
                assert!(
                    p.len() >= limits::MIN_PART_SIZE,
                    "part {i} small: {parts:?}"
                );
            }
        }
        assert_eq!(pos, size);
    }

    #[test]
    fn append_to_a_large_object_copies_it_and_uploads_the_tail() {
        let mut dirty = RangeSet::new();
        dirty.insert(1024 * MIB..1025 * MIB);
        let parts = plan(1025 * MIB, 1024 * MIB, &dirty, 8 * MIB);
        assert_eq!(
            parts,
            [
                Piece::Copy(0..1024 * MIB),
                Piece::Upload(1024 * MIB..1025 * MIB)
            ]
        );
    }

    #[test]
    fn a_small_edit_in_the_middle_is_grown_to_a_part() {
        let mut dirty = RangeSet::new();
        dirty.insert(100 * MIB..100 * MIB + 10);
        let parts = plan(200 * MIB, 200 * MIB, &dirty, 8 * MIB);
        check(&parts, 200 * MIB);
        let uploaded: u64 = parts
            .iter()
            .filter(|p| matches!(p, Piece::Upload(_)))
            .map(Piece::len)
            .sum();
        assert!(uploaded <= 8 * MIB, "{parts:?}");
    }

    #[test]
    fn plans_are_valid_for_many_shapes() {
        let mut state = 1u64;
        for _ in 0..500 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let size = 1 + (state >> 20) % (300 * MIB);
            let base_len = (state >> 7) % (size + 1);
            let mut dirty = RangeSet::new();
            for k in 0..(state % 5) {
                let s = (state >> (k * 3)) % size;
                dirty.insert(s..(s + (state >> 40) % (20 * MIB)).min(size));
            }
            check(&plan(size, base_len, &dirty, 8 * MIB), size);
        }
    }

    #[test]
    fn part_sizes_reach_five_tib() {
        let up = WriteConfig::default();
        let total: u64 = (1..=limits::MAX_PARTS)
            .map(|n| up.part_size << ((n - 1) / 1000).min(10))
            .sum();
        assert!(total >= 5 * 1024 * 1024 * MIB);
    }
}
