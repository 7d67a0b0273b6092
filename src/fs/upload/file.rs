//! One file being written: the coordinator of its staging file
//! (`staging.rs`), its base object, its generations (each change makes
//! one; a commit saves one), its stream (`stream.rs`) and its commits
//! (`plan.rs` for the parts of a planned one). See `fs/upload` for the
//! design.
//!
//! *Memory mode*: a new or emptied file written from its start, in order,
//! keeps no staging file. Its *tail* (the bytes after the parts sent, at
//! most one part) is a buffer in memory, and each part goes up from there
//! as soon as the next write starts the one after it: no byte is written
//! to disk and read back. The bytes of parts sent are then nowhere local
//! (`State::gone_to`): whatever needs them again (a read or a write below
//! it, a truncation into it, an unlink) fails with [`FsError::SaveFirst`],
//! and its caller saves the file as it stands (`Names::saving`, as fsync
//! would) and tries again: the bytes are then in the object, the base. Anything
//! else that does not fit (a write that leaves a hole, no tail memory free)
//! moves the tail to the staging file (*spill*), and the file goes on from
//! there as a staged one. If the upload of such a stream fails for good the
//! bytes sent are lost: the file cannot be saved any more
//! ([`FsError::WriteLost`] from then on), and nothing partial is stored.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use super::Committed;
use super::Uploads;
use super::plan::{Planned, upload_planned};
use super::staging::{Held, Staging, blocking};
use super::stream::Stream;
use crate::fs::error::{FsError, FsResult};
use crate::fs::inode::Location;
use crate::fs::memory::{Permit, Use};
use crate::fs::multipart::Multipart;
use crate::fs::ranges::RangeSet;
use crate::s3::{CopySource, GetObjectParams, S3Error, limits};

mod tail;

use tail::Tail;

/// A reader of a file's bytes at any offset into a buffer.
pub type ReadAt<'a> = &'a mut dyn FnMut(u64, &mut [u8]) -> FsResult<()>;

/// What [`DirtyFile::journal_into`] handed: the number `write` returned,
/// and the generation and size of the content.
pub struct Journaled {
    pub seq: u64,
    pub generation: u64,
    pub size: u64,
}

#[derive(Debug, Clone)]
struct Base {
    etag: Option<String>,
    /// Bytes of the object that still belong to the file (truncation cuts).
    len: u64,
}

struct State {
    /// The staging file's size and ranges, and its charge.
    held: Held,
    /// Memory mode's buffer (see the module notes).
    tail: Option<Tail>,
    /// The bytes below this went up from memory in the stream's parts and
    /// are nowhere local: the stream must be completed, never given up.
    gone_to: u64,
    /// Such a stream failed: the file cannot be saved.
    lost: bool,
    /// A commit has taken its snapshot and not ended: no stream may begin
    /// meanwhile (the commit's end changes the base under it).
    committing: bool,
    base: Option<Base>,
    /// Changes whenever the base changes or loses bytes (a truncation, a
    /// commit that makes a new object the base). A fill from the base that
    /// started under another epoch writes nothing: its bytes may belong
    /// past the end, or to an object that is no longer the base.
    base_epoch: u64,
    /// The smallest size since the running commit took its snapshot: the
    /// object it writes is the file's content only below this.
    low_water: u64,
    generation: u64,
    committed: u64,
    stream: Option<Stream>,
    /// The generation an emptying open left: while the file is still at
    /// it, flushes hold it back (see [`DirtyFile::hold_empty`]).
    truncated_at: Option<u64>,
}

pub struct DirtyFile {
    up: Arc<Uploads>,
    loc: Mutex<Location>,
    staging: Staging,
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
    /// Set by create: no object was at the file's key when it was made
    /// here (cleared when one is: a commit, or a rename onto a name).
    fresh: std::sync::atomic::AtomicBool,
    /// Commits of one file run one at a time: each must see the result of
    /// the one before. An async mutex, held across the upload on purpose;
    /// nothing else ever waits on it while holding another lock.
    commit_serial: tokio::sync::Mutex<()>,
}

impl DirtyFile {
    /// A file whose content starts as `base` (an existing object of
    /// `base_size` bytes), or empty.
    pub fn new(
        up: Arc<Uploads>,
        loc: Location,
        base: Option<(Option<String>, u64)>,
    ) -> FsResult<Arc<Self>> {
        // An empty base is no base: the file is new, and may stream.
        let base = base.filter(|b| b.1 > 0);
        let size = base.as_ref().map_or(0, |b| b.1);
        let staging = Staging::create(&up.cfg.cache_dir, &up.spares, size)?;
        Ok(Arc::new(DirtyFile {
            size: AtomicU64::new(size),
            changed: std::sync::atomic::AtomicBool::new(false),
            part_slots: Arc::new(Semaphore::new(up.cfg.parts_in_flight.max(1))),
            up,
            loc: Mutex::new(loc),
            staging,
            state: Mutex::new(State {
                held: Held::new(size),
                tail: None,
                gone_to: 0,
                lost: false,
                committing: false,
                base: base.map(|(etag, len)| Base { etag, len }),
                base_epoch: 0,
                low_water: size,
                generation: 0,
                committed: 0,
                stream: None,
                truncated_at: None,
            }),
            commit_serial: tokio::sync::Mutex::new(()),
            unlinked: std::sync::atomic::AtomicBool::new(false),
            fresh: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::SeqCst)
    }

    /// Records a new size or generation in the mirrors read without the lock.
    fn publish(&self, st: &State) {
        self.size.store(st.held.size, Ordering::SeqCst);
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
            // `keep_all` completed any stream sent from memory first; one
            // started since cannot be read back.
            st.lost |= st.gone_to > 0;
            stream.abandon();
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
        if self.state.lock().expect("dirty lock").gone_to > 0 {
            return Err(FsError::SaveFirst);
        }
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

    pub async fn write(self: &Arc<Self>, offset: u64, data: Bytes) -> FsResult<u32> {
        let len = data.len() as u64;
        if self.write_in_memory(offset, &data).await? {
            return Ok(len as u32);
        }

        let this = self.clone();
        // The state lock covers the pwrite so a concurrent fill from the
        // base cannot overwrite it.
        let done = blocking(move || {
            let mut st = this.state.lock().expect("dirty lock");
            this.spill(&mut st)?;
            let behind = st.stream.as_ref().is_some_and(|s| offset < s.uploaded_to);
            if behind && st.gone_to > 0 {
                return Ok(false);
            }
            let end = offset + len;
            let grown = end.max(st.held.size);
            st.held.charge(&this.up, grown)?;
            this.staging.write_at(&data, offset)?;
            st.held.written(offset..end);
            st.generation += 1;
            this.publish(&st);
            if behind {
                // Rewriting what already went up: plan afresh at commit.
                st.stream.take().expect("checked").abandon();
            }
            Ok(true)
        })
        .await?;
        if !done {
            return Err(FsError::SaveFirst);
        }
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
                // Memory mode sends its own parts. While a commit completes
                // a stream sent from memory (`gone_to`), the staging file
                // lacks those bytes: no new stream may start from it.
                if !self.up.cfg.stream
                    || st.base.is_some()
                    || st.tail.is_some()
                    || st.gone_to > 0
                    || st.committing
                    || self.unlinked.load(Ordering::SeqCst)
                {
                    return Ok(());
                }
                let (uploaded_to, n) = st
                    .stream
                    .as_ref()
                    .map_or((0, 1), |s| (s.uploaded_to, s.next_number()));
                if n > limits::MAX_PARTS - 1 {
                    return Ok(());
                }
                let part_end = uploaded_to + self.up.stream_part_len(n);
                // The last part is left for the commit, so it is never empty.
                if st.held.size <= part_end {
                    return Ok(());
                }
                (
                    st.stream.as_ref().map(|s| s.upload.clone()),
                    uploaded_to..part_end,
                    n,
                )
            };
            let slot = self.part_slot().await;
            let upload = match upload {
                Some(u) => u,
                None => {
                    let upload = self.new_upload().await?;
                    let mut st = self.state.lock().expect("dirty lock");
                    if st.stream.is_some() || st.base.is_some() || st.committing {
                        // Raced with another writer, or truncated: dropping
                        // the upload aborts it.
                        continue;
                    }
                    st.stream = Some(Stream::new(upload.clone()));
                    upload
                }
            };
            let sent_to = upload.clone();
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
                // Only into the stream of the upload it was sent to: while
                // this waited for a slot, that stream may have been given
                // up (and its upload aborted) and another begun, whose
                // part numbers it could match.
                Some(s) if Arc::ptr_eq(&s.upload, &sent_to) => s.push(number, range, task),
                _ => task.abort(),
            }
        }
    }

    /// A slot for one more part in flight. Back-pressure: a writer waits
    /// while its parts are uploading.
    async fn part_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.part_slots
            .clone()
            .acquire_owned()
            .await
            .expect("slots never close")
    }

    /// A multipart upload for a stream to the file's key.
    async fn new_upload(&self) -> FsResult<Arc<Multipart>> {
        let loc = self.location();
        Multipart::create(self.up.client.clone(), &self.up.open, loc.bucket, loc.key).await
    }

    /// Bytes of the staging file, holding memory permits while they live.
    async fn read_staging(&self, range: Range<u64>) -> FsResult<(Bytes, Permit)> {
        self.staging.read_part(range, &self.up.memory).await
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
                    st.held.present.gaps(range.start..end),
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
                    blocking(move || {
                        let mut st = this.state.lock().expect("dirty lock");
                        if st.base_epoch != epoch {
                            return Ok(());
                        }
                        // Only what nobody wrote meanwhile, and never past
                        // the end (the base's length follows truncation).
                        let limit = st.base.as_ref().map_or(0, |b| b.len).min(st.held.size);
                        let piece = piece.start..piece.end.min(limit);
                        if piece.is_empty() {
                            return Ok(());
                        }
                        for gap in st.held.present.gaps(piece.clone()) {
                            let from = (gap.start - piece.start) as usize;
                            let to = (gap.end - piece.start) as usize;
                            this.staging.write_at(&out.body[from..to], gap.start)?;
                        }
                        st.held.present.insert(piece);
                        Ok(())
                    })
                    .await
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
            {
                let st = self.state.lock().expect("dirty lock");
                let end = st.held.size.min(offset + u64::from(len));
                if offset < st.gone_to {
                    if st.lost || self.is_unlinked() {
                        return Err(FsError::WriteLost);
                    }
                } else if let Some(tail) = &st.tail {
                    if offset >= end {
                        return Ok(Bytes::new());
                    }
                    let at = (offset - tail.start) as usize;
                    let to = (end - tail.start) as usize;
                    return Ok(Bytes::copy_from_slice(&tail.buf[at..to]));
                }
            }
            if offset < self.state.lock().expect("dirty lock").gone_to {
                return Err(FsError::SaveFirst);
            }
            let size = self.size();
            if offset >= size || len == 0 {
                return Ok(Bytes::new());
            }
            self.ensure_present(offset..size.min(offset + u64::from(len)))
                .await?;
            let this = self.clone();
            let got = blocking(move || {
                let st = this.state.lock().expect("dirty lock");
                let end = st.held.size.min(offset + u64::from(len));
                if offset >= end {
                    return Ok(Some(Vec::new()));
                }
                // In memory, or sent from there, since: ask again.
                if st.tail.is_some() || offset < st.gone_to {
                    return Ok(None);
                }
                // Grown since, or a fill given up: fetch what is missing.
                let base_end = st.base.as_ref().map_or(0, |b| b.len).min(end);
                if offset < base_end && !st.held.present.gaps(offset..base_end).is_empty() {
                    return Ok(None);
                }
                // The staging file is as long as the file under this lock.
                this.staging.read_at(offset..end).map(Some)
            })
            .await?;
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
        if st.generation != generation || range.end > st.held.size {
            return None;
        }
        self.staging.read_at(range).ok()
    }

    /// Hands the file's whole content as it stands to `write` (its size,
    /// and a reader of its bytes at any offset), under the file's lock so
    /// that no change interleaves. `None` when not every byte is local (a
    /// base not fetched, bytes sent from memory, a lost stream) or the file
    /// is unlinked. Blocking (local disk).
    pub fn journal_into(
        &self,
        write: impl FnOnce(u64, ReadAt<'_>) -> FsResult<u64>,
    ) -> FsResult<Option<Journaled>> {
        let mut st = self.state.lock().expect("dirty lock");
        self.spill(&mut st)?;
        let base_len = st.base.as_ref().map_or(0, |b| b.len).min(st.held.size);
        if st.gone_to > 0
            || st.lost
            || self.is_unlinked()
            || (base_len > 0 && !st.held.present.covers(0..base_len))
        {
            return Ok(None);
        }
        let size = st.held.size;
        let staging = &self.staging;
        let seq = write(size, &mut |at, buf| staging.read_into(at, buf))?;
        Ok(Some(Journaled {
            seq,
            generation: st.generation,
            size,
        }))
    }

    /// Whether the key held no object when the file was made (`true`), or
    /// may hold one now (`false`).
    pub fn set_fresh(&self, fresh: bool) {
        self.fresh.store(fresh, Ordering::SeqCst);
    }

    /// Whether no object is at the file's key, as far as this mount knows:
    /// made here on a name without one, and never saved since.
    pub fn never_stored(&self) -> bool {
        self.fresh.load(Ordering::SeqCst) && self.state.lock().expect("dirty lock").committed == 0
    }

    /// Whether the file's content starts from an object (an edit).
    pub fn has_base(&self) -> bool {
        self.state.lock().expect("dirty lock").base.is_some()
    }

    /// The generation the last successful commit saved.
    pub fn saved_generation(&self) -> u64 {
        self.state.lock().expect("dirty lock").committed
    }

    /// Truncates or extends the file to `new_size` (extension reads as zeros).
    pub async fn set_size(self: &Arc<Self>, new_size: u64) -> FsResult<()> {
        let this = self.clone();
        match blocking(move || this.resize(new_size)).await? {
            true => Ok(()),
            false => Err(FsError::SaveFirst),
        }
    }

    /// `set_size` under the lock; `Ok(false)` when it would give up a
    /// stream sent from memory whose bytes the file still needs. Blocking.
    fn resize(&self, new_size: u64) -> FsResult<bool> {
        let this = self;
        {
            let mut st = this.state.lock().expect("dirty lock");
            this.spill(&mut st)?;
            let into_stream = st
                .stream
                .as_ref()
                .is_some_and(|s| new_size <= s.uploaded_to);
            if into_stream && st.gone_to > 0 && new_size > 0 {
                return Ok(false);
            }
            if new_size == 0 {
                // Emptied: nothing sent is needed any more, nor lost.
                st.gone_to = 0;
                st.lost = false;
            }
            st.held.charge(&this.up, new_size)?;
            this.staging.set_len(new_size)?;
            if new_size < st.held.size {
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
                    st.stream.take().expect("checked").abandon();
                }
            }
            if new_size == 0 && st.base.is_some() {
                // Nothing of the old object is left: a new file, which may stream.
                st.base = None;
                st.base_epoch += 1;
            }
            st.held.resized(new_size);
            st.low_water = st.low_water.min(new_size);
            st.generation += 1;
            this.publish(&st);
            Ok(true)
        }
    }

    /// Puts the file's content in the bucket; returns only when it is
    /// complete there. `Ok(None)`: nothing had changed.
    pub async fn commit(self: &Arc<Self>) -> FsResult<Option<Committed>> {
        let _serial = self.commit_serial.lock().await;
        if self.state.lock().expect("dirty lock").lost {
            return Err(FsError::WriteLost);
        }
        // The last part (or the whole of a small file) is sent from the
        // staging file, like any commit's.
        if self.state.lock().expect("dirty lock").tail.is_some() {
            let this = self.clone();
            blocking(move || this.spill(&mut this.state.lock().expect("dirty lock"))).await?;
        }
        let (generation, size, base, dirty, stream, all_staged, gone) = {
            let mut st = self.state.lock().expect("dirty lock");
            if st.generation == st.committed || self.unlinked.load(Ordering::SeqCst) {
                return Ok(None);
            }
            st.low_water = st.held.size;
            st.committing = true;
            let base_len = st.base.as_ref().map_or(0, |b| b.len).min(st.held.size);
            let all_staged =
                (base_len == 0 || st.held.present.covers(0..base_len)) && st.gone_to == 0;
            (
                st.generation,
                st.held.size,
                st.base.clone(),
                st.held.dirty.clone(),
                st.stream.take(),
                all_staged,
                st.gone_to,
            )
        };
        let loc = self.location();
        let planned = Planned {
            loc: &loc,
            size,
            base_etag: base.as_ref().and_then(|b| b.etag.clone()),
            base_len: base.as_ref().map_or(0, |b| b.len),
            dirty: &dirty,
        };
        // A part's bytes: what the staging file lacks is fetched first.
        let bytes = |r: Range<u64>| async move {
            self.ensure_present(r.clone()).await?;
            self.read_staging(r).await
        };
        let result = match stream {
            // A stream started under another name (renamed since), or whose
            // last part would not fit in memory (it ran out of part numbers),
            // is given up, and the file planned afresh.
            Some(stream)
                if stream.upload.key() == loc.key
                    && size - stream.uploaded_to <= self.up.largest_part() =>
            {
                let last = stream.uploaded_to..size;
                stream.finish(self.read_staging(last)).await
            }
            // Parts sent from memory cannot be planned afresh. (A rename
            // commits a file before it moves, so this is the part numbers.)
            Some(stream) if gone > 0 => {
                stream.abandon();
                Err(FsError::FileTooBig)
            }
            Some(stream) => {
                stream.abandon();
                upload_planned(&self.up, planned, bytes).await
            }
            None => upload_planned(&self.up, planned, bytes).await,
        };
        let etag = match result {
            Ok(etag) => etag,
            Err(e) => {
                let mut st = self.state.lock().expect("dirty lock");
                st.committing = false;
                if gone > 0 {
                    st.lost = true;
                    tracing::warn!(key = %loc.key, error = %e, "a file streamed from memory could not be saved; its bytes are lost");
                }
                return Err(e);
            }
        };
        let mut st = self.state.lock().expect("dirty lock");
        st.committed = generation;
        st.gone_to = 0;
        st.committing = false;
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
            st.held.dirty = RangeSet::new();
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
        let empty = |st: &State| st.held.size == 0 && st.stream.is_none() && st.tail.is_none();
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
        blocking(move || {
            let mut st = this.state.lock().expect("dirty lock");
            if !empty(&st) {
                // Written meanwhile through another handle: that content is
                // committed at its close, over the copy.
                return Err(FsError::NotSupported);
            }
            this.staging.set_len(size)?;
            st.held.dirty = RangeSet::new();
            st.held.present = RangeSet::new();
            st.held.resized(size);
            st.low_water = size;
            st.base = Some(Base { etag, len: size });
            st.base_epoch += 1;
            st.generation += 1;
            st.committed = st.generation;
            this.publish(&st);
            Ok(())
        })
        .await?;
        Ok(Committed {
            size,
            etag: out.etag,
            staged: None,
        })
    }
}

impl Drop for DirtyFile {
    fn drop(&mut self) {
        let st = self.state.get_mut().expect("dirty lock");
        st.held.discharge(&self.up);
        if let Some(stream) = st.stream.take() {
            // The upload itself is aborted when its last part lets go.
            stream.abandon();
        }
        let len = st.held.size;
        self.up.spares.keep(&self.staging, len);
    }
}
