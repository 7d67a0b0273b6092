//! Write-back (`--write-back DIR`): `close()` returns once the file's
//! content is durable in a journal on local disk, and the upload runs in
//! the background. The one owner of what is queued.
//!
//! Rules:
//! - A close journals the file's whole content as it stands
//!   ([`WriteBack::queue`], `journal.rs`) and the queue takes a handle of
//!   the file's open entry, so that its buffer (`DirtyFile`) outlives the
//!   application's handles: reads, `stat` and listings of this mount keep
//!   showing the written data until the bucket has it, and a rename, an
//!   unlink or a new open find it as they find any open file.
//! - Only a file whose every byte is local is journaled (new, emptied, or
//!   small enough to fetch whole); any other is committed at close as
//!   without write-back. So is a file when the journal's disk is full.
//! - The upload is the file's ordinary commit (`Names::commit`), of its
//!   state when it runs: a file closed twice before it runs is uploaded
//!   once, in its latest state. Every commit, whoever runs it (the queue,
//!   fsync, a rename), removes the entries it covers ([`WriteBack::saved`]).
//! - Bounded: at most `max_bytes` journaled and `max_files` queued; a close
//!   beyond waits for room (back-pressure), and a file larger than the
//!   whole bound is committed at close. At most `parallel` uploads run.
//! - An upload that fails stays queued and journaled, is logged and
//!   counted, and is tried again after a growing pause; `fsync` of the file
//!   tries at once and reports the error.
//! - Lock order: this queue's lock, then `OpenFiles`' lock; never the
//!   other way round. No I/O under the lock.

pub mod journal;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use super::error::{FsError, FsResult};
use super::inode::{Ino, Location};
use super::open::OpenFiles;
use super::upload::{self, DirtyFile, Uploads};
use journal::{Found, Journal};

/// Subdirectory of the journal's directory holding the staging files of
/// a write-back mount (so that a full journal disk shows at write).
pub const STAGING_SUBDIR: &str = "staging";

#[derive(Debug, Clone)]
pub struct WriteBackConfig {
    pub dir: PathBuf,
    /// The store's endpoint: the journal belongs to it.
    pub endpoint: String,
    /// Bytes journaled and not yet uploaded, at most. Default 4 GiB.
    pub max_bytes: u64,
    /// Files queued at once, at most (each holds a staging file open).
    pub max_files: usize,
    /// Uploads running at once.
    pub parallel: usize,
    /// Unmount leaves the queue for the next mount instead of draining it.
    pub leave_queued: bool,
    /// How long a closed file waits before its upload begins (not during
    /// a drain): a temporary file renamed (rsync, git, editors) or a file
    /// closed again meanwhile is then uploaded once, under its final name
    /// and in its last state, instead of being uploaded, copied and
    /// deleted. Default 100 ms.
    pub settle: Duration,
}

impl WriteBackConfig {
    pub fn new(dir: PathBuf, endpoint: String) -> Self {
        WriteBackConfig {
            dir,
            endpoint,
            max_bytes: 4 << 30,
            max_files: 4096,
            parallel: 16,
            leave_queued: false,
            settle: Duration::from_millis(100),
        }
    }
}

struct Entry {
    seq: u64,
    generation: u64,
    size: u64,
    /// The key it was journaled under.
    key: String,
}

struct Queued {
    file: Arc<DirtyFile>,
    /// The queue's handle of the file (see the module's rules).
    fh: u64,
    entries: Vec<Entry>,
    /// The last upload's failure, until one succeeds.
    failed: Option<String>,
    /// The drain round in which it last failed.
    failed_in: u64,
}

#[derive(Default)]
struct State {
    queued: HashMap<Ino, Queued>,
    bytes: u64,
    /// Incremented when a drain begins: failures of earlier rounds are
    /// tried again at once.
    drain_round: u64,
}

/// What [`WriteBack::queue`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Queuing {
    /// Journaled; the file was not queued before: start its upload.
    Started,
    /// Journaled; its upload is already queued.
    Added,
    /// Not journaled (not all of it is local, or larger than the queue):
    /// commit it now.
    CommitNow,
}

#[derive(Default)]
pub struct WriteBackStats {
    pub uploaded: AtomicU64,
    pub failures: AtomicU64,
    pub replayed: AtomicU64,
}

pub struct WriteBack {
    cfg: WriteBackConfig,
    journal: Journal,
    state: Mutex<State>,
    /// Something left the queue or failed: closes waiting for room and
    /// drains look again.
    changed: Notify,
    /// A drain began: failed uploads wait no longer.
    retry_now: Notify,
    pub(super) slots: Semaphore,
    pub stats: WriteBackStats,
}

impl WriteBack {
    /// Opens the journal, uploads what an earlier mount left in it (the
    /// latest entry of each key; nothing else of the mount runs meanwhile)
    /// and returns the queue. Fails, keeping the journal, if any of those
    /// cannot be uploaded.
    pub async fn start(cfg: WriteBackConfig, up: &Uploads) -> FsResult<(Arc<Self>, u64)> {
        let dir = cfg.dir.clone();
        let endpoint = cfg.endpoint.clone();
        let (journal, found) = upload::blocking(move || -> FsResult<_> {
            std::fs::create_dir_all(dir.join(STAGING_SUBDIR))
                .map_err(|e| super::error::local_io(format!("creating {}", dir.display()), e))?;
            Journal::open(&dir, &endpoint)
        })
        .await?;
        let wb = Arc::new(WriteBack {
            slots: Semaphore::new(cfg.parallel.max(1)),
            cfg,
            journal,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            retry_now: Notify::new(),
            stats: WriteBackStats::default(),
        });
        let replayed = wb.replay(found, up).await?;
        Ok((wb, replayed))
    }

    /// Uploads the latest entry of each key found, then removes them all.
    async fn replay(self: &Arc<Self>, found: Vec<Found>, up: &Uploads) -> FsResult<u64> {
        if found.is_empty() {
            return Ok(0);
        }
        let all: Vec<u64> = found.iter().map(|f| f.seq).collect();
        let mut latest: HashMap<(String, String), Found> = HashMap::new();
        for f in found {
            // Oldest first: a later close of the same key replaces it.
            latest.insert((f.info.bucket.clone(), f.info.key.clone()), f);
        }
        let (files, bytes) = (
            latest.len(),
            latest.values().map(|f| f.info.size).sum::<u64>(),
        );
        tracing::info!(
            files,
            bytes,
            dir = %self.journal.dir().display(),
            "write-back: uploading what an earlier mount journaled and did not store"
        );
        use futures::StreamExt;
        let results: Vec<(Found, FsResult<()>)> = futures::stream::iter(latest.into_values())
            .map(|f| async move {
                let r = self.replay_one(&f, up).await;
                (f, r)
            })
            .buffer_unordered(self.cfg.parallel.max(1))
            .collect()
            .await;
        let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
        if let Some((f, Err(e))) = failed.first() {
            return Err(FsError::WriteBack(format!(
                "{} of {files} files journaled in {} by an earlier mount could not be uploaded \
                 (first: {}/{}: {e}); they stay there for the next mount",
                failed.len(),
                self.journal.dir().display(),
                f.info.bucket,
                f.info.key
            )));
        }
        let this = self.clone();
        upload::blocking(move || this.journal.remove(&all, true)).await?;
        self.stats
            .replayed
            .fetch_add(files as u64, Ordering::Relaxed);
        tracing::info!(
            files,
            bytes,
            "write-back: the earlier mount's queue is stored"
        );
        Ok(files as u64)
    }

    async fn replay_one(self: &Arc<Self>, f: &Found, up: &Uploads) -> FsResult<()> {
        let loc = Location {
            bucket: Arc::from(f.info.bucket.as_str()),
            key: f.info.key.clone(),
        };
        let seq = f.seq;
        let this = self.clone();
        upload::upload_whole(up, &loc, f.info.size, move |at, buf| {
            this.journal.read_at(seq, at, buf)
        })
        .await?;
        tracing::debug!(key = %f.info.key, size = f.info.size, "write-back: replayed");
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("write-back lock")
    }

    /// Journals `file` (inode `ino`) as it stands, waiting for room in the
    /// queue first, and queues its upload (see [`Queuing`]).
    pub async fn queue(
        self: &Arc<Self>,
        ino: Ino,
        file: &Arc<DirtyFile>,
        open: &OpenFiles,
    ) -> FsResult<Queuing> {
        let size = file.size();
        if size > self.cfg.max_bytes {
            return Ok(Queuing::CommitNow);
        }
        // Room first, reserved under the lock.
        loop {
            // Registered before looking, so no wake-up falls in between.
            let wait = self.changed.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            {
                let mut st = self.state();
                let fits = st.bytes + size <= self.cfg.max_bytes
                    && (st.queued.len() < self.cfg.max_files || st.queued.contains_key(&ino));
                if fits || st.queued.is_empty() {
                    st.bytes += size;
                    break;
                }
            }
            wait.await;
        }
        let reserved = size;
        let (entry, mut st) = loop {
            let journaled = self.journal_file(file).await;
            let (entry, loc) = match journaled {
                Ok(Some(j)) => j,
                done => {
                    self.state().bytes -= reserved;
                    self.changed.notify_waiters();
                    return done.map(|_| Queuing::CommitNow);
                }
            };
            let st = self.state();
            // Renamed while it was journaled: the entry names the old key.
            if file.location() == loc {
                break (entry, st);
            }
            drop(st);
            if let Err(e) = self.remove_entries(vec![entry.seq], true).await {
                self.state().bytes -= reserved;
                return Err(e);
            }
        };
        st.bytes = st.bytes - reserved + entry.size;
        if let Some(q) = st.queued.get_mut(&ino) {
            q.entries.push(entry);
            return Ok(Queuing::Added);
        }
        let (fh, _) = open.open(ino, Some(&file.location()), None, Some(file.clone()), false);
        st.queued.insert(
            ino,
            Queued {
                file: file.clone(),
                fh,
                entries: vec![entry],
                failed: None,
                failed_in: 0,
            },
        );
        Ok(Queuing::Started)
    }

    /// Journals `file`'s whole content under its location now; `None`
    /// when not all of it is local.
    async fn journal_file(
        self: &Arc<Self>,
        file: &Arc<DirtyFile>,
    ) -> FsResult<Option<(Entry, Location)>> {
        let (this, f) = (self.clone(), file.clone());
        upload::blocking(move || {
            let loc = f.location();
            let journaled = f.journal_into(|size, fill| {
                this.journal.append(&loc.bucket, &loc.key, size, fill)
            })?;
            Ok(journaled.map(|j| {
                let entry = Entry {
                    seq: j.seq,
                    generation: j.generation,
                    size: j.size,
                    key: loc.key.clone(),
                };
                (entry, loc)
            }))
        })
        .await
    }

    /// Queued file `ino` was renamed here (its location is the new one):
    /// its content is journaled under the new key and the entries under
    /// any other go, durably, so that a replay neither brings back the old
    /// name nor loses what was closed. `false` when it is not queued, or
    /// cannot be journaled (then commit it).
    pub async fn rekey(self: &Arc<Self>, ino: Ino, file: &Arc<DirtyFile>) -> FsResult<bool> {
        if self.file(ino).is_none_or(|f| !Arc::ptr_eq(&f, file)) {
            return Ok(false);
        }
        let Some((entry, loc)) = self.journal_file(file).await? else {
            return Ok(false);
        };
        let (seq, stale) = (entry.seq, self.take_other_keys(ino, entry, &loc.key));
        let Some(stale) = stale else {
            // It left the queue meanwhile (unlinked).
            self.remove_entries(vec![seq], true).await?;
            return Ok(false);
        };
        self.remove_entries(stale, true).await?;
        Ok(true)
    }

    /// Puts `entry` in the place of `ino`'s entries under keys other than
    /// `key`, and returns theirs; `None` if `ino` is not queued.
    fn take_other_keys(&self, ino: Ino, entry: Entry, key: &str) -> Option<Vec<u64>> {
        {
            let mut st = self.state();
            let q = st.queued.get_mut(&ino)?;
            let (old, keep): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut q.entries)
                .into_iter()
                .partition(|e| e.key != key);
            q.entries = keep;
            let added = entry.size;
            q.entries.push(entry);
            let gone: u64 = old.iter().map(|e| e.size).sum();
            st.bytes = st.bytes + added - gone;
            Some(old.iter().map(|e| e.seq).collect())
        }
    }

    /// The file of `ino` is saved up to `generation` (a commit succeeded):
    /// the entries that covers are removed (durably with the journal's next
    /// sync: the next close, [`WriteBack::sync`], or the end of a drain).
    pub async fn saved(self: &Arc<Self>, ino: Ino, generation: u64) -> FsResult<()> {
        let done: Vec<u64> = {
            let mut st = self.state();
            let Some(q) = st.queued.get_mut(&ino) else {
                return Ok(());
            };
            q.failed = None;
            let (done, keep): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut q.entries)
                .into_iter()
                .partition(|e| e.generation <= generation);
            q.entries = keep;
            st.bytes -= done.iter().map(|e| e.size).sum::<u64>();
            done.iter().map(|e| e.seq).collect()
        };
        self.remove_entries(done, false).await
    }

    /// Makes every removal so far durable: before a change that a replay
    /// of a removed entry would undo (a rename deletes the old name).
    pub async fn sync(self: &Arc<Self>) -> FsResult<()> {
        let this = self.clone();
        upload::blocking(move || this.journal.sync()).await
    }

    async fn remove_entries(self: &Arc<Self>, seqs: Vec<u64>, durable: bool) -> FsResult<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let this = self.clone();
        let r = upload::blocking(move || this.journal.remove(&seqs, durable)).await;
        self.changed.notify_waiters();
        r
    }

    /// `file`'s name was removed (unlink, or replaced by a rename): nothing
    /// of it may be uploaded any more, even after a crash. Its entries go,
    /// durably, and so does its place in the queue.
    pub async fn unlinked(
        self: &Arc<Self>,
        file: &Arc<DirtyFile>,
        open: &OpenFiles,
    ) -> FsResult<()> {
        let gone = {
            let mut st = self.state();
            let ino = st
                .queued
                .iter()
                .find(|(_, q)| Arc::ptr_eq(&q.file, file))
                .map(|(ino, _)| *ino);
            let Some(q) = ino.and_then(|ino| st.queued.remove(&ino)) else {
                return Ok(());
            };
            st.bytes -= q.entries.iter().map(|e| e.size).sum::<u64>();
            q
        };
        let r = self
            .remove_entries(gone.entries.iter().map(|e| e.seq).collect(), true)
            .await;
        open.release(gone.fh);
        r
    }

    /// After an upload of `ino` (`result`): `Ok(true)` when the file has
    /// left the queue (nothing journaled is left; its handle is released),
    /// `Ok(false)` when entries remain to upload. An error is recorded.
    pub fn uploaded(&self, ino: Ino, result: &FsResult<()>, open: &OpenFiles) -> bool {
        let released = {
            let mut st = self.state();
            let round = st.drain_round;
            let Some(q) = st.queued.get_mut(&ino) else {
                return true;
            };
            if let Err(e) = result {
                q.failed = Some(e.to_string());
                q.failed_in = round;
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                drop(st);
                self.changed.notify_waiters();
                return false;
            }
            if !q.entries.is_empty() {
                return false;
            }
            self.stats.uploaded.fetch_add(1, Ordering::Relaxed);
            st.queued.remove(&ino).expect("present")
        };
        // Outside the lock: it may drop the last reference to the buffer.
        open.release(released.fh);
        drop(released);
        self.changed.notify_waiters();
        true
    }

    /// The file queued for `ino`, while it is.
    pub fn file(&self, ino: Ino) -> Option<Arc<DirtyFile>> {
        self.state().queued.get(&ino).map(|q| q.file.clone())
    }

    /// Waits after a failed upload of `ino`: longer after each failure in
    /// a row, cut short when a drain begins (or has begun since).
    pub async fn pause_after_failure(&self, ino: Ino, failures_in_a_row: u32) {
        let pause = Duration::from_secs(1u64 << failures_in_a_row.min(6));
        let drain = self.retry_now.notified();
        tokio::pin!(drain);
        drain.as_mut().enable();
        {
            let st = self.state();
            if st
                .queued
                .get(&ino)
                .is_some_and(|q| q.failed_in < st.drain_round)
            {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = drain => {}
        }
    }

    /// Waits the settling time of a file just queued, cut short when a
    /// drain begins (or has begun).
    pub async fn settle(&self) {
        if self.cfg.settle.is_zero() {
            return;
        }
        let drain = self.retry_now.notified();
        tokio::pin!(drain);
        drain.as_mut().enable();
        if self.state().drain_round > 0 {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.cfg.settle) => {}
            _ = drain => {}
        }
    }

    /// Files queued, bytes journaled, and files whose last upload failed.
    pub fn counts(&self) -> (u64, u64, u64) {
        let st = self.state();
        let failed = st.queued.values().filter(|q| q.failed.is_some()).count();
        (st.queued.len() as u64, st.bytes, failed as u64)
    }

    pub fn leave_queued(&self) -> bool {
        self.cfg.leave_queued
    }

    pub fn dir(&self) -> &std::path::Path {
        self.journal.dir()
    }

    /// Waits until the queue is empty, or until every file left in it has
    /// failed once more since the drain began; logs progress meanwhile.
    /// Returns the files left (their entries stay for the next mount).
    pub async fn drain(&self) -> u64 {
        let round = {
            let mut st = self.state();
            st.drain_round += 1;
            st.drain_round
        };
        self.retry_now.notify_waiters();
        let mut last_log = std::time::Instant::now();
        loop {
            let wait = self.changed.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            let (left, bytes, stuck) = {
                let st = self.state();
                let stuck = st
                    .queued
                    .values()
                    .filter(|q| q.failed.is_some() && q.failed_in >= round)
                    .count();
                (st.queued.len(), st.bytes, stuck)
            };
            if left == 0 {
                if let Err(e) = self.journal.sync() {
                    tracing::warn!(error = %e, "write-back: journal not synced; a next mount may upload some files again");
                }
                return 0;
            }
            if stuck == left {
                let st = self.state();
                for (_, q) in st.queued.iter() {
                    tracing::error!(key = %q.file.location().key, error = q.failed.as_deref().unwrap_or(""), "write-back: not uploaded; it stays in the journal for the next mount");
                }
                return left as u64;
            }
            if last_log.elapsed() >= Duration::from_secs(2) {
                tracing::info!(
                    files = left,
                    bytes,
                    "write-back: uploading the queue before exiting"
                );
                last_log = std::time::Instant::now();
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
        }
    }
}
