//! Reading an object through ranged GETs, with read-ahead.
//!
//! Design:
//! - Each open file has a [`FileReader`] holding the ETag and size seen at
//!   open. Every GET carries `If-Match` with that ETag, so an object
//!   replaced by another client mid-read fails the read (ESTALE) instead of
//!   returning a mix of old and new bytes. On a versioned bucket the reader
//!   is pinned to a version instead: the one it was opened on (history),
//!   the one the first answer names, or, if the object changed before
//!   that, the version that still has the ETag seen at open; it then keeps
//!   reading that version whatever happens to the key.
//! - Reads near where the last one ended are *sequential*: the reader keeps
//!   a window of parts in flight ahead of them. The window starts small
//!   ([`PrefetchConfig::initial_window`], so the first byte comes quickly)
//!   and doubles with every sequential read up to
//!   [`PrefetchConfig::max_window`]; parts are a quarter of the window,
//!   between `min_part` and `max_part`, fetched in parallel.
//! - Any other read is *random*: the window collapses and only the bytes
//!   asked for are fetched, so random access does not pull in megabytes it
//!   will never use.
//! - Parts are tasks whose results are shared futures: the state lock is
//!   held only to decide and to clone those futures, never across an await.
//!   A part holds permits of a semaphore counting bytes, so all readers
//!   together stay under [`PrefetchConfig::max_memory`]; a fetch waits for
//!   memory before it starts (back-pressure), and dropping a reader aborts
//!   its fetches and frees its memory.
//! - The kernel delivers read-ahead as several reads at once, in any
//!   order: a read up to [`BACK_SLACK`] behind the furthest one, or (for an
//!   established stream) up to [`FORWARD_SLACK`] past what is fetched, is
//!   still sequential, and parts are dropped only once they end
//!   [`BACK_SLACK`] behind the furthest read.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::data_cache::{self, BLOCK, DataCache, ObjectId};
use super::error::{FsError, FsResult};
use super::inode::Location;
use super::memory::{Memory, Permit, Use};
use crate::s3::{ErrorKind, GetObjectParams, ListVersionsParams, ObjectClient, S3Error};

#[derive(Debug, Clone)]
pub struct PrefetchConfig {
    /// Read-ahead after the first sequential read. Default 1 MiB.
    pub initial_window: u64,
    /// Read-ahead ceiling per open file. Default 64 MiB.
    pub max_window: u64,
    /// Smallest part fetched ahead. Default 256 KiB.
    pub min_part: u64,
    /// Largest part (one GET). Default 8 MiB.
    pub max_part: u64,
    /// Bytes all readers together may hold in fetched or in-flight parts.
    /// Default 256 MiB.
    pub max_memory: u64,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        const MIB: u64 = 1024 * 1024;
        PrefetchConfig {
            initial_window: MIB,
            max_window: 64 * MIB,
            min_part: 256 * 1024,
            max_part: 8 * MIB,
            max_memory: 256 * MIB,
        }
    }
}

/// How far behind the furthest read a read may start and still count as
/// sequential, and parts be kept for it. The kernel sends read-ahead as
/// several 1 MiB reads at once (more with `POSIX_FADV_SEQUENTIAL`), which
/// reach us in any order.
pub const BACK_SLACK: u64 = 8 * 1024 * 1024;

/// How far past what is fetched a read of an established sequential
/// stream may start and still count as sequential (the gap is fetched
/// too): read-ahead requests overtaking each other are not a random reader.
pub const FORWARD_SLACK: u64 = 8 * 1024 * 1024;

/// Bytes of an object held in memory, with the budget's permits for them.
pub struct Chunk {
    bytes: Bytes,
    _memory: Permit,
}

impl Chunk {
    pub fn new(bytes: Bytes, memory: Permit) -> Self {
        Chunk {
            bytes,
            _memory: memory,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

type PartFuture = Shared<BoxFuture<'static, Result<Arc<Chunk>, FsError>>>;

struct Part {
    range: Range<u64>,
    data: PartFuture,
    /// None for bytes that were here before the reader (see
    /// [`FileReader::preloaded`]).
    task: Option<tokio::task::AbortHandle>,
    /// Cloned by every read awaiting this part, so a part dropped while a
    /// read still waits for it is left to finish.
    waiters: Arc<()>,
}

impl Drop for Part {
    fn drop(&mut self) {
        if Arc::strong_count(&self.waiters) == 1
            && let Some(task) = &self.task
        {
            task.abort();
        }
    }
}

struct ReadState {
    parts: VecDeque<Part>,
    /// Everything below this is fetched or being fetched (when parts exist).
    fetched_to: u64,
    /// Where the furthest read since the last random one ended.
    next: u64,
    window: u64,
}

/// The object a reader reads: it moves when the file is renamed.
#[derive(Clone)]
struct Source {
    bucket: Arc<str>,
    key: String,
    etag: Option<String>,
    /// The version read, once known (never S3's "null" version, which a
    /// later write replaces in place).
    version_id: Option<String>,
}

pub struct FileReader {
    client: Arc<dyn ObjectClient>,
    /// Shared with the fetches, which record the version they learn.
    source: Arc<Mutex<Source>>,
    size: u64,
    cfg: PrefetchConfig,
    memory: Memory,
    /// With a local data cache, parts are whole cache blocks (but the
    /// object's last) and each is served from there when it can be.
    cache: Option<Arc<DataCache>>,
    state: Mutex<ReadState>,
}

impl FileReader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Arc<dyn ObjectClient>,
        bucket: Arc<str>,
        key: String,
        etag: Option<String>,
        size: u64,
        cfg: PrefetchConfig,
        memory: Memory,
    ) -> Self {
        let window = cfg.initial_window;
        FileReader {
            client,
            source: Arc::new(Mutex::new(Source {
                bucket,
                key,
                etag,
                version_id: None,
            })),
            size,
            cfg,
            memory,
            cache: None,
            state: Mutex::new(ReadState {
                parts: VecDeque::new(),
                fetched_to: 0,
                next: 0,
                window,
            }),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn etag(&self) -> Option<String> {
        self.source().etag
    }

    pub fn key(&self) -> String {
        self.source().key
    }

    /// Reads through the local data cache.
    pub fn cached(mut self, cache: Option<Arc<DataCache>>) -> Self {
        self.cache = cache;
        self
    }

    /// Reads this version of the object only (a file under `.versions`
    /// or `.snapshots`).
    pub fn pinned(self, version_id: String) -> Self {
        self.source.lock().expect("source lock").version_id = Some(version_id);
        self
    }

    /// Serves every read from `whole`, the object's content as it was
    /// fetched before the open (read-ahead across files, `fs/walk.rs`)
    /// under the ETag this reader was opened with. `version` is the version
    /// the store named: it is what this reader has read, as if its own
    /// first GET had named it (a server-side copy of the open file copies
    /// that version).
    pub fn preloaded(self, whole: Arc<Chunk>, version: Option<String>) -> Self {
        debug_assert_eq!(whole.len() as u64, self.size);
        if let Some(v) = version {
            self.source.lock().expect("source lock").version_id = Some(v);
        }
        {
            let mut st = self.state.lock().expect("reader lock");
            st.parts.push_back(Part {
                range: 0..self.size,
                data: futures::future::ready(Ok(whole)).boxed().shared(),
                task: None,
                waiters: Arc::new(()),
            });
            st.fetched_to = self.size;
        }
        self
    }

    pub fn bucket(&self) -> Arc<str> {
        self.source().bucket
    }

    pub fn version_id(&self) -> Option<String> {
        self.source().version_id
    }

    fn source(&self) -> Source {
        self.source.lock().expect("source lock").clone()
    }

    /// The file was renamed: the same bytes are now at `loc` (another
    /// bucket, maybe), with `etag` (a copy may change the ETag). Parts in
    /// flight from the old key are dropped, so later reads ask the new one.
    pub fn relocate(&self, loc: Location, etag: Option<String>) {
        *self.source.lock().expect("source lock") = Source {
            bucket: loc.bucket,
            key: loc.key,
            etag,
            version_id: None,
        };
        let mut st = self.state.lock().expect("reader lock");
        st.parts.clear();
        st.fetched_to = st.next;
    }

    fn part_len(&self, window: u64) -> u64 {
        // At most half the share: a read spanning two parts can hold both.
        (window / 4)
            .clamp(self.cfg.min_part, self.cfg.max_part)
            .min(self.largest() / 2)
            .max(1)
    }

    /// Whether the data cache lacks any block that `range` touches (false
    /// without a cache).
    fn cache_lacks(&self, range: Range<u64>) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        let s = self.source();
        let Some(etag) = s.etag.as_deref() else {
            // Nothing to key blocks by: nothing is cached.
            return false;
        };
        let id = cache.object(s.bucket, s.key, etag);
        data_cache::touched(&range, self.size).any(|b| !cache.has(&id, b))
    }

    /// Where a part may start and end: with a data cache, on block
    /// boundaries (the object's end excepted), so parts are whole blocks.
    fn part_start(&self, at: u64) -> u64 {
        match self.cache {
            Some(_) => at / BLOCK * BLOCK,
            None => at,
        }
    }

    fn part_end(&self, at: u64) -> u64 {
        match self.cache {
            Some(_) => at.next_multiple_of(BLOCK).min(self.size),
            None => at.min(self.size),
        }
    }

    /// The largest part the memory budget lets one fetch hold.
    fn largest(&self) -> u64 {
        self.memory.largest(Use::ReadAhead).max(1)
    }

    /// Starts fetching `range`, with the memory for it already held, or
    /// (for a part a read waits for) taken by the fetch itself.
    fn spawn_part(&self, range: Range<u64>, held: Option<Permit>) -> Part {
        let client = self.client.clone();
        let source = self.source.clone();
        let memory = self.memory.clone();
        let len = range.end - range.start;
        let wanted = range.clone();
        let cache = self.cache.clone();
        let size = self.size;
        let task = tokio::spawn(async move {
            let permit = match held {
                Some(p) => p,
                None => memory.take(Use::ReadAhead, len).await,
            };
            let Some((cache, id)) = cache.and_then(|c| {
                let s = source.lock().expect("source lock");
                let id = c.object(s.bucket.clone(), s.key.clone(), s.etag.as_deref()?);
                Some((c, id))
            }) else {
                let body = get_exact(client.as_ref(), &source, wanted).await?;
                return Ok(Arc::new(Chunk::new(body, permit)));
            };
            let (bytes, fetched) =
                read_through(client.as_ref(), &source, &cache, &id, size, wanted).await?;
            let chunk = Arc::new(Chunk::new(bytes, permit));
            // The part's memory stays counted until its blocks are on disk.
            cache.store(id, fetched, chunk.clone());
            Ok(chunk)
        });
        let abort = task.abort_handle();
        let data = async move {
            match task.await {
                Ok(result) => result,
                Err(_) => Err(FsError::Cancelled),
            }
        }
        .boxed()
        .shared();
        Part {
            range,
            data,
            task: Some(abort),
            waiters: Arc::new(()),
        }
    }

    /// Bytes `offset..offset+len` (fewer at the end of the object).
    pub async fn read(&self, offset: u64, len: u32) -> FsResult<Bytes> {
        let before = self.key();
        match self.read_once(offset, len).await {
            // Renamed while the read was in flight: ask the new key.
            Err(_) if self.key() != before => self.read_once(offset, len).await,
            other => other,
        }
    }

    async fn read_once(&self, offset: u64, len: u32) -> FsResult<Bytes> {
        if offset >= self.size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = self.size.min(offset + u64::from(len));
        let needed: Vec<(Range<u64>, PartFuture, Arc<()>)> = {
            let mut st = self.state.lock().expect("reader lock");
            let covered_from = st.parts.front().map_or(st.fetched_to, |p| p.range.start);
            // Jumping ahead is sequential only for an established stream:
            // a random reader that lands just past its last read stays
            // random, and fetches only what it asks for.
            let forward = if st.window > self.cfg.initial_window {
                FORWARD_SLACK
            } else {
                0
            };
            let sequential = (covered_from..=st.fetched_to + forward).contains(&offset)
                && offset + BACK_SLACK >= st.next;
            // A random read with a data cache fetches whole blocks, to fill
            // it, unless the cache has them (then it reads just its bytes).
            let fill = !sequential && self.cache_lacks(offset..end);
            tracing::trace!(
                offset,
                len,
                sequential,
                fetched_to = st.fetched_to,
                next = st.next,
                "read"
            );
            if sequential {
                st.window = (st.window * 2).min(self.cfg.max_window);
            } else {
                st.parts.clear();
                st.fetched_to = if fill {
                    self.part_start(offset)
                } else {
                    offset
                };
                st.next = offset;
                st.window = self.cfg.initial_window;
            }
            // Reads arrive out of order: the furthest one counts.
            st.next = st.next.max(end);
            let keep_from = st.next.saturating_sub(BACK_SLACK);
            while st.parts.front().is_some_and(|p| p.range.end <= keep_from) {
                st.parts.pop_front();
            }
            let target = if sequential {
                self.size.min(end.max(offset + st.window))
            } else if fill {
                self.part_end(end)
            } else {
                end
            };
            // Parts kept behind this read (for reads the kernel sends out
            // of order) hold memory; when the budget has less room than a
            // part or than what is to be fetched, they go first, or a fetch
            // this reader waits for could wait forever for memory it holds.
            let room = target
                .saturating_sub(st.fetched_to)
                .max(self.cfg.max_part.min(self.largest()));
            if self.memory.available(Use::ReadAhead) < room {
                while st.parts.front().is_some_and(|p| p.range.end <= offset) {
                    st.parts.pop_front();
                }
            }
            while st.fetched_to < target {
                let start = st.fetched_to;
                let part_end = if sequential {
                    self.part_end(start + self.part_len(st.window))
                } else {
                    let step = start + self.cfg.max_part.min(self.largest() / 2).max(1);
                    target.min(if fill { self.part_end(step) } else { step })
                };
                // Parts this read waits for queue for memory in order; parts
                // further ahead start only with memory free now, so that a
                // part nobody waits for yet never holds up one that is
                // waited for (the window shrinks under memory pressure).
                let held = if start < end {
                    None
                } else {
                    match self.memory.try_take(Use::ReadAhead, part_end - start) {
                        Some(p) => Some(p),
                        None => break,
                    }
                };
                let part = self.spawn_part(start..part_end, held);
                st.parts.push_back(part);
                st.fetched_to = part_end;
            }
            st.parts
                .iter()
                .filter(|p| p.range.start < end && p.range.end > offset)
                .map(|p| (p.range.clone(), p.data.clone(), p.waiters.clone()))
                .collect()
        };
        if let [(range, data, _waiting)] = needed.as_slice() {
            let chunk = data.clone().await?;
            return Ok(chunk
                .bytes
                .slice((offset - range.start) as usize..(end - range.start) as usize));
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for (range, data, _waiting) in needed {
            let chunk = data.await?;
            let from = offset.max(range.start) - range.start;
            let to = end.min(range.end) - range.start;
            out.extend_from_slice(&chunk.bytes[from as usize..to as usize]);
        }
        // Parts are contiguous from `covered_from` and the read lies inside
        // them, so this holds; a gap would be a bug, not a short read.
        if out.len() as u64 != end - offset {
            return Err(FsError::Internal("read-ahead parts left a gap"));
        }
        Ok(out.freeze())
    }
}

/// Exactly the bytes `range` of the reader's object (see [`get_pinned`]).
async fn get_exact(
    client: &dyn ObjectClient,
    source: &Mutex<Source>,
    range: Range<u64>,
) -> FsResult<Bytes> {
    let len = range.end - range.start;
    let out = get_pinned(client, source, range).await?;
    if out.body.len() as u64 != len {
        return Err(FsError::S3(S3Error::InvalidResponse {
            operation: "GetObject",
            detail: format!("asked for {len} bytes, got {}", out.body.len()),
        }));
    }
    Ok(out.body)
}

/// The bytes `range` of object `id` (`size` bytes): from the local data
/// cache where its blocks are there, the rest by one GET from the first
/// byte missing to the last. Also returns the whole blocks that GET
/// brought, for the cache.
async fn read_through(
    client: &dyn ObjectClient,
    source: &Mutex<Source>,
    cache: &Arc<DataCache>,
    id: &ObjectId,
    size: u64,
    range: Range<u64>,
) -> FsResult<(Bytes, Vec<(u64, Bytes)>)> {
    let blocks = data_cache::touched(&range, size);
    let cached = cache.read(id, range.clone(), size).await;
    // The range cut at block boundaries, each piece with its block when it
    // is the whole block (only those are stored) and its bytes if cached.
    let mut pieces: Vec<(Range<u64>, Option<u64>, Option<Bytes>)> = Vec::new();
    for (b, got) in blocks.zip(cached) {
        let whole = data_cache::block_range(b, size);
        let piece = range.start.max(whole.start)..range.end.min(whole.end);
        let stored = (piece == whole).then_some(b);
        pieces.push((piece, stored, got));
    }
    let missing = || pieces.iter().filter(|p| p.2.is_none()).map(|p| &p.0);
    let span = match (missing().next(), missing().last()) {
        (Some(first), Some(last)) => first.start..last.end,
        _ => range.start..range.start,
    };
    let body = if span.is_empty() {
        Bytes::new()
    } else {
        get_exact(client, source, span.clone()).await?
    };
    let mut fetched = Vec::new();
    for (r, b, got) in &mut pieces {
        if got.is_none() {
            let bytes = body.slice((r.start - span.start) as usize..(r.end - span.start) as usize);
            if let Some(b) = b {
                fetched.push((*b, bytes.clone()));
            }
            *got = Some(bytes);
        }
    }
    if span == range {
        return Ok((body, fetched));
    }
    if let [(_, _, Some(only))] = pieces.as_slice() {
        return Ok((only.clone(), fetched));
    }
    let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
    for (_, _, got) in pieces {
        out.extend_from_slice(&got.expect("every piece filled"));
    }
    Ok((out.freeze(), fetched))
}

/// A ranged GET of the reader's object: of its version once known, else
/// guarded by its ETag. The version an answer names is recorded, so later
/// parts read it whatever happens to the key meanwhile. If the object
/// changed or went before the version was known, the version that still
/// has the ETag seen at open is looked up (one listing; versioned buckets
/// only: elsewhere nothing matches and the read fails as before).
async fn get_pinned(
    client: &dyn ObjectClient,
    source: &Mutex<Source>,
    range: Range<u64>,
) -> FsResult<crate::s3::GetObjectOutput> {
    let Source {
        bucket,
        key,
        etag,
        version_id,
    } = source.lock().expect("source lock").clone();
    let params = GetObjectParams {
        range: Some(range.clone()),
        if_match: etag.clone(),
        version_id: version_id.clone(),
        ..Default::default()
    };
    let err = match client.get_object(&bucket, &key, &params).await {
        Ok(out) => {
            if version_id.is_none()
                && let Some(v) = out.version_id.as_deref().filter(|v| *v != "null")
            {
                let mut s = source.lock().expect("source lock");
                if s.key == key && s.version_id.is_none() {
                    s.version_id = Some(v.to_string());
                }
            }
            return Ok(out);
        }
        Err(e) => e,
    };
    let changed = matches!(
        err.kind(),
        ErrorKind::PreconditionFailed | ErrorKind::NotFound
    );
    let (None, Some(etag)) = (&version_id, &etag) else {
        return Err(err.into());
    };
    if !changed {
        return Err(err.into());
    }
    let Some(found) = version_with_etag(client, &bucket, &key, etag).await else {
        return Err(err.into());
    };
    {
        let mut s = source.lock().expect("source lock");
        if s.key == key {
            s.version_id = Some(found.clone());
        }
    }
    let params = GetObjectParams {
        range: Some(range),
        if_match: Some(etag.clone()),
        version_id: Some(found),
        ..Default::default()
    };
    Ok(client.get_object(&bucket, &key, &params).await?)
}

/// The newest version of `key` whose ETag is `etag`, from the first page
/// of its versions (a key rewritten more than a thousand times since the
/// open is not searched further).
async fn version_with_etag(
    client: &dyn ObjectClient,
    bucket: &str,
    key: &str,
    etag: &str,
) -> Option<String> {
    let page = client
        .list_object_versions(
            bucket,
            &ListVersionsParams {
                prefix: key.to_string(),
                delimiter: Some("/".to_string()),
                ..Default::default()
            },
        )
        .await
        .ok()?;
    page.versions
        .into_iter()
        .filter(|v| v.key == key && !v.is_delete_marker)
        .find(|v| v.etag.as_deref().map(|e| e.trim_matches('"')) == Some(etag.trim_matches('"')))
        .and_then(|v| v.version_id)
        .filter(|v| v != "null")
}
