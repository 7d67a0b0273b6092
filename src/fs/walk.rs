//! Read-ahead across files: when an application walks a directory — lists
//! it, then opens its files one after another in listing order, as `cp -r`,
//! `tar c`, `rsync`, `diff -r` and `grep -r` do — the next small files of
//! that listing are fetched in parallel before they are opened. Without
//! it every file costs one request round trip in sequence.
//!
//! - A directory read to its end leaves its files (name, size, ETag, in
//!   listing order) here, for the last few directories only. (At the end
//!   of the listing, not when the handle closes: tar and fts-based tools
//!   keep the directory open while they open its files.)
//! - A read-only open of a file of such a listing moves a cursor. Two opens
//!   in a row that go forward by at most [`WalkConfig::files_ahead`]
//!   entries are a walk; from then on every open starts whole-object GETs
//!   of the next files up to that many entries ahead, each at most
//!   [`WalkConfig::max_file`] bytes, each guarded by the ETag the listing
//!   showed (`If-Match`).
//! - An open of a fetched file takes its bytes if the ETag it opens with
//!   is the one fetched (else they are dropped and the file is read as
//!   usual); an open that finds the fetch still in flight waits for it,
//!   which is never longer than asking afresh. A failed fetch is no error:
//!   the file is read as usual.
//! - Memory comes from the read-ahead share of the mount's budget, taken
//!   only if free at once and only while half the share stays free for
//!   readers (a reader waiting for memory held by files fetched ahead of
//!   it would wait for ever): under pressure nothing is fetched ahead. Files
//!   passed by the cursor, and all of them when the walk stops (an open
//!   elsewhere or out of order), are dropped, their fetches aborted.
//! - Nothing happens without the pattern: listing alone (`ls -l`) or
//!   opening files in no listing order costs no request, only the copy of
//!   the listing's names.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use lru::LruCache;

use super::budget::{self, MetaBudget};
use super::cache::DirEntry;
use super::data_cache::{self, DataCache};
use super::inode::{Kind, Location};
use super::memory::{Memory, Use};
use super::prefetch::Chunk;
use crate::s3::{GetObjectParams, ObjectClient};

#[derive(Debug, Clone)]
pub struct WalkConfig {
    /// How many entries ahead of the last open file are fetched; 0 turns
    /// read-ahead across files off. Default 16.
    pub files_ahead: usize,
    /// Larger files are left to the ordinary read-ahead of their own
    /// reader. Default 1 MiB.
    pub max_file: u64,
    /// How many subdirectories ahead of the one entered are listed during
    /// a walk (`fs/list_ahead.rs`); 0 turns list-ahead off. Default 8.
    pub dirs_ahead: usize,
}

impl Default for WalkConfig {
    fn default() -> Self {
        WalkConfig {
            files_ahead: 16,
            max_file: 1024 * 1024,
            dirs_ahead: 8,
        }
    }
}

/// Listings kept for walks: one per directory being walked, and a few
/// more for trees walked depth first (a directory's walk resumes after its
/// subdirectory's).
const LISTINGS: usize = 8;

/// Larger directories are not kept for walks: their names would hold more
/// memory than their walk is worth (the metadata cache keeps no longer
/// listings either). A listing charged more than an eighth of the metadata
/// budget is not kept either (see [`Walk::listed`]).
const MAX_FILES: usize = 100_000;

/// Bytes fetched ahead: the object's content and the version the store
/// named, if any.
pub type Fetched = (Arc<Chunk>, Option<String>);

type FetchFuture = Shared<BoxFuture<'static, Option<Fetched>>>;

struct File {
    name: Arc<str>,
    size: u64,
    etag: String,
}

struct Listing {
    files: Vec<File>,
    index: HashMap<Arc<str>, usize>,
    /// What it charges to the metadata budget, given back when it goes.
    charged: u64,
    budget: Arc<MetaBudget>,
}

impl Drop for Listing {
    fn drop(&mut self) {
        self.budget.release(self.charged);
    }
}

/// What a walk's listing of these files costs: each file's entry and
/// ETag, and its slot in the index by name.
fn listing_charge<'a>(files: impl Iterator<Item = (&'a Arc<str>, u64, &'a str)>) -> u64 {
    files
        .map(|(_, _, etag)| {
            (std::mem::size_of::<File>() + 2 * std::mem::size_of::<(Arc<str>, usize)>()) as u64
                + budget::alloc(etag.len())
        })
        .sum()
}

impl Listing {
    /// Whether `files` (in order) are the files of this listing.
    fn holds<'a>(&self, files: impl Iterator<Item = (&'a Arc<str>, u64, &'a str)>) -> bool {
        let mut n = 0;
        for (name, size, etag) in files {
            match self.files.get(n) {
                Some(f) if f.name == *name && f.size == size && f.etag == etag => n += 1,
                _ => return false,
            }
        }
        n == self.files.len()
    }
}

/// The entries a walk can fetch ahead: files with a known ETag (a file
/// being written here has none yet).
fn fetchable(entries: &[DirEntry]) -> impl Iterator<Item = (&Arc<str>, u64, &str)> + Clone {
    entries
        .iter()
        .filter(|e| e.kind == Kind::File)
        .filter_map(|e| Some((&e.name, e.stat.size, e.stat.etag.as_deref()?)))
}

type DirKey = (Arc<str>, String);

struct Fetch {
    etag: String,
    data: FetchFuture,
    task: tokio::task::AbortHandle,
}

impl Drop for Fetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Cursor {
    dir: DirKey,
    listing: Arc<Listing>,
    at: usize,
    /// Opens in a row that went forward within reach.
    streak: u32,
    ahead: BTreeMap<usize, Fetch>,
}

pub struct Walk {
    client: Arc<dyn ObjectClient>,
    memory: Memory,
    cfg: WalkConfig,
    /// Files in the local data cache are taken from there.
    cache: Option<Arc<DataCache>>,
    /// Listings kept charge it; one may take an eighth of it.
    budget: Arc<MetaBudget>,
    state: Mutex<State>,
    /// Files fetched ahead, and those an open then took: for the metrics.
    fetched: AtomicU64,
    used: AtomicU64,
}

struct State {
    listings: LruCache<DirKey, Arc<Listing>>,
    cursor: Option<Cursor>,
}

/// A walk's cursor moves from `at` to `to`: one more open in a row that
/// went forward by at most `reach` entries, or the streak starts over.
/// (Shared with the walks across directories, `fs/list_ahead.rs`.)
pub(super) fn step(at: &mut usize, streak: &mut u32, to: usize, reach: usize) {
    if to > *at && to <= *at + reach {
        *streak += 1;
    } else {
        *streak = 0;
    }
    *at = to;
}

/// `key` as its directory's prefix and its name.
fn split(key: &str) -> (&str, &str) {
    match key.rfind('/') {
        Some(i) => (&key[..=i], &key[i + 1..]),
        None => ("", key),
    }
}

impl Walk {
    pub fn new(
        client: Arc<dyn ObjectClient>,
        memory: Memory,
        cfg: WalkConfig,
        cache: Option<Arc<DataCache>>,
        budget: Arc<MetaBudget>,
    ) -> Self {
        Walk {
            client,
            memory,
            cfg,
            cache,
            budget,
            state: Mutex::new(State {
                listings: LruCache::new(NonZeroUsize::new(LISTINGS).expect("not zero")),
                cursor: None,
            }),
            fetched: AtomicU64::new(0),
            used: AtomicU64::new(0),
        }
    }

    /// Files fetched ahead so far, and how many of them an open took.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.fetched.load(Ordering::Relaxed),
            self.used.load(Ordering::Relaxed),
        )
    }

    /// Directory `dir` was listed to its end: `entries` in listing order.
    pub fn listed(&self, dir: &Location, entries: &[DirEntry]) {
        if self.cfg.files_ahead == 0 || entries.len() > MAX_FILES {
            return;
        }
        let key = (dir.bucket.clone(), dir.key.clone());
        // The same listing again (the kernel reads the end of a directory
        // more than once) keeps the one a walk may be on, and costs no copy;
        // another replaces it, and a walk on it starts afresh at its next
        // open.
        if let Some(known) = self.state.lock().expect("walk lock").listings.get(&key)
            && known.holds(fetchable(entries))
        {
            return;
        }
        let charged = listing_charge(fetchable(entries));
        if charged > self.budget.limit() / 8 {
            return;
        }
        self.budget.charge(charged);
        let files: Vec<File> = fetchable(entries)
            .map(|(name, size, etag)| File {
                name: name.clone(),
                size,
                etag: etag.to_string(),
            })
            .collect();
        let index = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let listing = Arc::new(Listing {
            files,
            index,
            charged,
            budget: self.budget.clone(),
        });
        self.state
            .lock()
            .expect("walk lock")
            .listings
            .put(key, listing);
    }

    /// A read-only open of `loc`, whose object has `etag` and `size` now:
    /// its bytes if they were fetched ahead (waiting for a fetch in flight),
    /// and the walk moved on.
    pub async fn opened(&self, loc: &Location, etag: Option<&str>, size: u64) -> Option<Fetched> {
        if self.cfg.files_ahead == 0 {
            return None;
        }
        let mine = self.advance(loc)?;
        if Some(mine.etag.as_str()) != etag {
            return None;
        }
        let fetched = mine.data.clone().await?;
        if fetched.0.len() as u64 != size {
            return None;
        }
        self.used.fetch_add(1, Ordering::Relaxed);
        Some(fetched)
    }

    /// Moves the cursor to `loc` and starts the fetches ahead of it; returns
    /// the fetch of `loc` itself, if any.
    fn advance(&self, loc: &Location) -> Option<Fetch> {
        let (dir, name) = split(&loc.key);
        let key: DirKey = (loc.bucket.clone(), dir.to_string());
        let mut st = self.state.lock().expect("walk lock");
        let Some(listing) = st.listings.get(&key).cloned() else {
            st.cursor = None;
            return None;
        };
        let Some(&at) = listing.index.get(name) else {
            st.cursor = None;
            return None;
        };
        let reach = self.cfg.files_ahead;
        let mut cursor = match st.cursor.take() {
            Some(mut c) if c.dir == key && Arc::ptr_eq(&c.listing, &listing) => {
                step(&mut c.at, &mut c.streak, at, reach);
                c
            }
            _ => Cursor {
                dir: key,
                listing,
                at,
                streak: 0,
                ahead: BTreeMap::new(),
            },
        };
        let mine = cursor.ahead.remove(&at);
        if cursor.streak == 0 {
            cursor.ahead.clear();
        } else {
            cursor.ahead.retain(|i, _| *i > at);
            self.fetch_ahead(&mut cursor);
        }
        st.cursor = Some(cursor);
        mine
    }

    fn fetch_ahead(&self, cursor: &mut Cursor) {
        let end = cursor
            .listing
            .files
            .len()
            .min(cursor.at + 1 + self.cfg.files_ahead);
        // Half the share stays for readers: a file's own reader may need
        // memory that files fetched ahead of it would otherwise hold until
        // the walk reaches them, which it cannot without that reader.
        let reserve = self.memory.largest(Use::ReadAhead) / 2;
        for i in cursor.at + 1..end {
            let file = &cursor.listing.files[i];
            if cursor.ahead.contains_key(&i) || file.size == 0 || file.size > self.cfg.max_file {
                continue;
            }
            if self.memory.available(Use::ReadAhead) < file.size + reserve {
                break;
            }
            let Some(permit) = self.memory.try_take(Use::ReadAhead, file.size) else {
                break;
            };
            let client = self.client.clone();
            let (bucket, dir) = cursor.dir.clone();
            let object = format!("{dir}{}", file.name);
            let params = GetObjectParams {
                if_match: Some(file.etag.clone()),
                ..Default::default()
            };
            let size = file.size;
            // A file of one block may be on local disk already.
            let cached = self
                .cache
                .clone()
                .filter(|_| size <= data_cache::BLOCK)
                .map(|c| {
                    let id = c.object(bucket.clone(), object.clone(), &file.etag);
                    (c, id)
                });
            let task = tokio::spawn(async move {
                if let Some((cache, id)) = &cached
                    && let [Some(bytes)] = cache.read(id, 0..size, size).await.as_slice()
                {
                    return Some((Arc::new(Chunk::new(bytes.clone(), permit)), None));
                }
                let out = client.get_object(&bucket, &object, &params).await;
                match out {
                    Ok(out) if out.body.len() as u64 == size => {
                        let version = out.version_id.filter(|v| v != "null");
                        let chunk = Arc::new(Chunk::new(out.body, permit));
                        if let Some((cache, id)) = cached {
                            cache.store(id, vec![(0, chunk.bytes().clone())], chunk.clone());
                        }
                        Some((chunk, version))
                    }
                    Ok(_) => None,
                    Err(e) => {
                        tracing::debug!(bucket = %bucket, key = %object, error = %e, "fetch ahead failed: read as usual");
                        None
                    }
                }
            });
            self.fetched.fetch_add(1, Ordering::Relaxed);
            let abort = task.abort_handle();
            let data = async move { task.await.ok().flatten() }.boxed().shared();
            cursor.ahead.insert(
                i,
                Fetch {
                    etag: file.etag.clone(),
                    data,
                    task: abort,
                },
            );
        }
    }

    /// Fetches ahead now (in flight or done), for tests and metrics.
    pub fn ahead(&self) -> usize {
        let st = self.state.lock().expect("walk lock");
        st.cursor.as_ref().map_or(0, |c| c.ahead.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_directory_and_name() {
        assert_eq!(split("a/b/c"), ("a/b/", "c"));
        assert_eq!(split("c"), ("", "c"));
        assert_eq!(split("p/"), ("p/", ""));
    }
}
