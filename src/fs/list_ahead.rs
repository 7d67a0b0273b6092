//! List-ahead across directories: when an application walks a tree —
//! `find`, `du`, `ls -lR`, `rsync`, a backup tool — it enters the
//! subdirectories of a directory one after another in listing order, and
//! each costs a listing round trip before the walk can go on. Here the
//! next subdirectories are listed in parallel before they are entered, so
//! a walk is bound by the store's listing throughput, not by its latency.
//!
//! Rules:
//! - A directory read to its end leaves the names of its subdirectories
//!   here (the last few directories only), as walks across files do
//!   (`fs/walk.rs`).
//! - Opening a subdirectory of such a listing moves that parent's cursor.
//!   Two opens in a row that go forward by at most
//!   [`ListAhead::window`] subdirectories are a walk: from then on each
//!   open starts listing the next subdirectories up to that many ahead —
//!   their first page only, each a `DirHandle` that the open of that
//!   directory then takes (the handle goes on to the next pages itself, as
//!   any listing does). An open out of order cancels what was started for
//!   that parent.
//! - Nothing is listed twice: an open, and a lookup of the directory's
//!   name, wait for a listing in flight instead of asking again; a
//!   directory whose listing is cached fresh is not listed ahead.
//! - At most `window` directories per parent are listed that nobody then
//!   opens, when a walk stops; listings nobody took within one metadata
//!   TTL are dropped, so no listing older than the TTL is ever shown, and
//!   none is started while the metadata budget is full. A change made
//!   through this mount drops listings started before it (they may not
//!   show it).
//! - Without the pattern nothing is listed: `ls` of one directory, or
//!   opening directories in no listing order, costs nothing here.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use lru::LruCache;

use super::cache::{DirEntry, Ttl};
use super::dir::DirHandle;
use super::inode::{Kind, Location, Stat};
use crate::s3::ObjectClient;

/// Parents whose subdirectories are kept, and cursors: a tree walked depth
/// first resumes each parent's walk after its subdirectory's.
const PARENTS: usize = 8;

/// Larger listings leave no subdirectories here.
const MAX_SUBDIRS: usize = 100_000;

type DirKey = (Arc<str>, String);

struct Subdirs {
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, usize>,
}

struct Cursor {
    subdirs: Arc<Subdirs>,
    at: usize,
    streak: u32,
}

struct Ahead {
    parent: DirKey,
    handle: Arc<DirHandle>,
    /// The first page is in: whether it came without error.
    ready: Shared<BoxFuture<'static, bool>>,
    task: tokio::task::AbortHandle,
    started: Instant,
    /// The cache's change count when it started.
    epoch: u64,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    parents: LruCache<DirKey, Arc<Subdirs>>,
    cursors: LruCache<DirKey, Cursor>,
    ahead: HashMap<DirKey, Ahead>,
}

pub struct ListAhead {
    client: Arc<dyn ObjectClient>,
    window: usize,
    ttl: Ttl,
    state: Mutex<State>,
    /// Directories listed ahead, and those then taken by an open or a
    /// lookup: for the metrics and tests.
    started: AtomicU64,
    used: AtomicU64,
}

/// What starting a listing needs from the rest of the mount.
pub struct Context<'a> {
    /// The cache's change count now.
    pub epoch: u64,
    /// Whether a fresh listing of the directory is cached already.
    pub cached: &'a (dyn Fn(&Location) -> bool + Sync),
    /// Whether the metadata budget has room.
    pub room: bool,
    pub dir_stat: &'a Stat,
}

fn key(loc: &Location) -> DirKey {
    (loc.bucket.clone(), loc.key.clone())
}

/// A directory's location as its parent's prefix and its name.
fn split(loc: &Location) -> Option<(DirKey, &str)> {
    let path = loc.key.strip_suffix('/')?;
    let (parent, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    Some(((loc.bucket.clone(), parent.to_string()), name))
}

impl ListAhead {
    pub fn new(client: Arc<dyn ObjectClient>, window: usize, ttl: Ttl) -> Self {
        let cap = NonZeroUsize::new(PARENTS).expect("not zero");
        ListAhead {
            client,
            // Without a TTL no listing may be kept, even for a moment.
            window: if ttl.0 == Some(std::time::Duration::ZERO) {
                0
            } else {
                window
            },
            ttl,
            state: Mutex::new(State {
                parents: LruCache::new(cap),
                cursors: LruCache::new(cap),
                ahead: HashMap::new(),
            }),
            started: AtomicU64::new(0),
            used: AtomicU64::new(0),
        }
    }

    /// Directories listed ahead so far, and how many of them were used.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::Relaxed),
            self.used.load(Ordering::Relaxed),
        )
    }

    /// Directory `dir` was listed to its end: `entries` in listing order.
    pub fn listed(&self, dir: &Location, entries: &[DirEntry]) {
        if self.window == 0 || entries.len() > MAX_SUBDIRS {
            return;
        }
        let names: Vec<Arc<str>> = entries
            .iter()
            .filter(|e| e.kind == Kind::Dir)
            .map(|e| e.name.clone())
            .collect();
        let mut st = self.state.lock().expect("list-ahead lock");
        let k = key(dir);
        if names.is_empty() {
            st.parents.pop(&k);
            return;
        }
        if st.parents.get(&k).is_some_and(|s| s.names == names) {
            // The same listing read again keeps the cursor on it.
            return;
        }
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        st.parents
            .put(k.clone(), Arc::new(Subdirs { names, index }));
        st.cursors.pop(&k);
    }

    /// Directory `loc` is being opened: moves its parent's cursor, starts
    /// listing the next subdirectories if this is a walk, and returns the
    /// listing started ahead for `loc`, if any is still good (its first
    /// page in).
    pub async fn opening(&self, loc: &Location, ctx: &Context<'_>) -> Option<Arc<DirHandle>> {
        if self.window == 0 {
            return None;
        }
        let mine = {
            let mut st = self.state.lock().expect("list-ahead lock");
            let mine = st.ahead.remove(&key(loc));
            self.advance(&mut st, loc, ctx);
            mine
        }?;
        self.usable(mine, ctx.epoch).await
    }

    /// Whether a listing started ahead shows that directory `loc` has
    /// entries (so it is a directory, which wins over a file of its name),
    /// waiting for its first page; `false` when none is known.
    pub async fn shows_entries(&self, loc: &Location, epoch: u64) -> bool {
        if self.window == 0 {
            return false;
        }
        let (handle, ready) = {
            let st = self.state.lock().expect("list-ahead lock");
            match st.ahead.get(&key(loc)) {
                Some(a) if a.epoch == epoch && self.ttl.fresh(a.started) => {
                    (a.handle.clone(), a.ready.clone())
                }
                _ => return false,
            }
        };
        ready.await && !handle.settled(0, 1).0.is_empty()
    }

    async fn usable(&self, a: Ahead, epoch: u64) -> Option<Arc<DirHandle>> {
        let ok = a.ready.clone().await;
        // Taken only if as fresh as a cached listing may be, and not
        // older than a change made here.
        if !ok || a.epoch != epoch || !self.ttl.fresh(a.started) {
            return None;
        }
        self.used.fetch_add(1, Ordering::Relaxed);
        Some(a.handle.clone())
    }

    fn advance(&self, st: &mut State, loc: &Location, ctx: &Context<'_>) {
        st.ahead
            .retain(|_, a| a.epoch == ctx.epoch && self.ttl.fresh(a.started));
        let Some((parent, name)) = split(loc) else {
            return;
        };
        let Some(subdirs) = st.parents.get(&parent).cloned() else {
            return;
        };
        let Some(&at) = subdirs.index.get(name) else {
            return;
        };
        let window = self.window;
        let cursor = match st.cursors.pop(&parent) {
            Some(mut c) if Arc::ptr_eq(&c.subdirs, &subdirs) => {
                super::walk::step(&mut c.at, &mut c.streak, at, window);
                c
            }
            _ => Cursor {
                subdirs: subdirs.clone(),
                at,
                streak: 0,
            },
        };
        if cursor.streak == 0 {
            // Not (or no longer) a walk in order: what was started for
            // this parent is given up.
            st.ahead.retain(|_, a| a.parent != parent);
        } else if ctx.room {
            let end = subdirs.names.len().min(at + 1 + window);
            for i in at + 1..end {
                let child = Location {
                    bucket: parent.0.clone(),
                    key: format!("{}{}/", parent.1, subdirs.names[i]),
                };
                let k = key(&child);
                if st.ahead.contains_key(&k) || (ctx.cached)(&child) {
                    continue;
                }
                let ahead = self.start(parent.clone(), child, ctx);
                st.ahead.insert(k, ahead);
            }
        }
        st.cursors.put(parent, cursor);
    }

    fn start(&self, parent: DirKey, dir: Location, ctx: &Context<'_>) -> Ahead {
        let handle = Arc::new(DirHandle::streaming(0, dir, Vec::new()));
        let (client, h, stat) = (self.client.clone(), handle.clone(), ctx.dir_stat.clone());
        let task = tokio::spawn(async move {
            match h.fetch_more(&client, &stat).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!(bucket = %h.location().bucket, key = %h.location().key, error = %e, "list-ahead failed: listed as usual");
                    false
                }
            }
        });
        self.started.fetch_add(1, Ordering::Relaxed);
        let abort = task.abort_handle();
        Ahead {
            parent,
            handle,
            ready: async move { task.await.unwrap_or(false) }.boxed().shared(),
            task: abort,
            started: Instant::now(),
            epoch: ctx.epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_split_into_parent_and_name() {
        let loc = |k: &str| Location {
            bucket: Arc::from("b"),
            key: k.to_string(),
        };
        let (ab, top) = (loc("a/b/"), loc("top/"));
        let (p, n) = split(&ab).unwrap();
        assert_eq!((p.1.as_str(), n), ("a/", "b"));
        let (p, n) = split(&top).unwrap();
        assert_eq!((p.1.as_str(), n), ("", "top"));
        assert!(split(&loc("")).is_none(), "the root has no parent");
    }
}
