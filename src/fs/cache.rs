//! The metadata cache: what a name is (file with its stat, directory, or
//! nothing) and complete directory listings, each good for the metadata
//! TTL, in bounded LRUs. A fresh complete listing answers lookups of every
//! name in (and not in) that directory without a request.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::inode::{Kind, Stat};

/// How long metadata is trusted. `None`: forever (static data sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(pub Option<Duration>);

impl Ttl {
    pub fn fresh(&self, at: Instant) -> bool {
        match self.0 {
            None => true,
            Some(ttl) => at.elapsed() < ttl,
        }
    }

    /// For the kernel's attribute and entry caches: a long time stands for
    /// forever.
    pub fn kernel(&self) -> Duration {
        self.0.unwrap_or(Duration::from_secs(365 * 24 * 3600))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File(Stat),
    Dir,
    Missing,
}

/// One name of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Arc<str>,
    pub kind: Kind,
    pub stat: Stat,
}

type Key = (Arc<str>, String);
/// A complete listing, when it was taken, and whether it is only assumed
/// (see [`MetaCache::put_assumed_listing`]).
type Listing = (Arc<Vec<DirEntry>>, Instant, bool);

pub struct MetaCache {
    ttl: Ttl,
    names: Mutex<LruCache<Key, (Entry, Instant)>>,
    listings: Mutex<LruCache<Key, Listing>>,
    /// Listings longer than this are not kept (their memory would crowd
    /// out everything else); they are listed again when read again.
    max_listing_len: usize,
    /// Lookups answered from `names` or not, and the same for listings:
    /// what the metrics show.
    pub stats: CacheStats,
}

#[derive(Debug, Default)]
pub struct CacheStats {
    pub name_hits: AtomicU64,
    pub name_misses: AtomicU64,
    pub listing_hits: AtomicU64,
    pub listing_misses: AtomicU64,
}

fn count(hit: bool, hits: &AtomicU64, misses: &AtomicU64) {
    if hit { hits } else { misses }.fetch_add(1, Ordering::Relaxed);
}

impl MetaCache {
    pub fn new(ttl: Ttl, max_names: usize, max_listings: usize, max_listing_len: usize) -> Self {
        let cap = |n: usize| NonZeroUsize::new(n.max(1)).expect("at least one");
        MetaCache {
            ttl,
            names: Mutex::new(LruCache::new(cap(max_names))),
            listings: Mutex::new(LruCache::new(cap(max_listings))),
            max_listing_len,
            stats: CacheStats::default(),
        }
    }

    pub fn ttl(&self) -> Ttl {
        self.ttl
    }

    fn caching(&self) -> bool {
        self.ttl.0 != Some(Duration::ZERO)
    }

    /// What `path` (a key without trailing slash) is, if known and fresh.
    pub fn get(&self, bucket: &Arc<str>, path: &str) -> Option<Entry> {
        if !self.caching() {
            return None;
        }
        let found = fresh(&self.names, self.ttl, (bucket.clone(), path.to_string()));
        count(
            found.is_some(),
            &self.stats.name_hits,
            &self.stats.name_misses,
        );
        found
    }

    pub fn put(&self, bucket: &Arc<str>, path: &str, entry: Entry) {
        if self.caching() {
            self.names
                .lock()
                .expect("cache lock")
                .put((bucket.clone(), path.to_string()), (entry, Instant::now()));
        }
    }

    /// The complete listing of directory `prefix`, if fresh and seen in
    /// the store.
    pub fn listing(&self, bucket: &Arc<str>, prefix: &str) -> Option<Arc<Vec<DirEntry>>> {
        let found = match self.any_listing(bucket, prefix) {
            Some((l, false)) => Some(l),
            _ => None,
        };
        let s = &self.stats;
        count(found.is_some(), &s.listing_hits, &s.listing_misses);
        found
    }

    /// The listing of `prefix` if fresh, and whether it is only assumed.
    /// (Stale listings stay in the LRU for [`MetaCache::stale_len`].)
    fn any_listing(&self, bucket: &Arc<str>, prefix: &str) -> Option<(Arc<Vec<DirEntry>>, bool)> {
        if !self.caching() {
            return None;
        }
        let mut lru = self.listings.lock().expect("cache lock");
        match lru.get(&(bucket.clone(), prefix.to_string())) {
            Some((l, at, assumed)) if self.ttl.fresh(*at) => Some((l.clone(), *assumed)),
            _ => None,
        }
    }

    /// How many entries the listing of `prefix` had when it went stale
    /// (no longer trusted, but it tells whether listing it again is cheap).
    pub fn stale_len(&self, bucket: &Arc<str>, prefix: &str) -> Option<usize> {
        if !self.caching() {
            return None;
        }
        let lru = self.listings.lock().expect("cache lock");
        match lru.peek(&(bucket.clone(), prefix.to_string())) {
            Some((l, at, _)) if !self.ttl.fresh(*at) => Some(l.len()),
            _ => None,
        }
    }

    /// Whether `prefix` has a fresh listing that is only assumed.
    pub fn is_assumed(&self, bucket: &Arc<str>, prefix: &str) -> bool {
        matches!(self.any_listing(bucket, prefix), Some((_, true)))
    }

    pub fn put_listing(&self, bucket: &Arc<str>, prefix: &str, entries: Arc<Vec<DirEntry>>) {
        self.put_listing_as(bucket, prefix, entries, false);
    }

    /// The listing of a directory this mount just made: empty, as far as
    /// the mount knows, but never seen in the store. It answers for the
    /// names it holds (made through the mount); a name it lacks is asked
    /// of the store, since another client may have put it there meanwhile.
    pub fn put_assumed_listing(&self, bucket: &Arc<str>, prefix: &str) {
        self.put_listing_as(bucket, prefix, Arc::new(Vec::new()), true);
    }

    fn put_listing_as(
        &self,
        bucket: &Arc<str>,
        prefix: &str,
        entries: Arc<Vec<DirEntry>>,
        assumed: bool,
    ) {
        if self.caching() && entries.len() <= self.max_listing_len {
            self.listings.lock().expect("cache lock").put(
                (bucket.clone(), prefix.to_string()),
                (entries, Instant::now(), assumed),
            );
        }
    }

    /// Forgets the listing of `prefix`.
    pub fn forget_listing(&self, bucket: &Arc<str>, prefix: &str) {
        self.listings
            .lock()
            .expect("cache lock")
            .pop(&(bucket.clone(), prefix.to_string()));
    }

    /// Forgets what is known of `path` and of the listing of `parent`,
    /// after a change there.
    pub fn invalidate(&self, bucket: &Arc<str>, path: &str, parent: &str) {
        self.names
            .lock()
            .expect("cache lock")
            .pop(&(bucket.clone(), path.to_string()));
        self.listings
            .lock()
            .expect("cache lock")
            .pop(&(bucket.clone(), parent.to_string()));
    }

    /// A change made through this mount: `path` (in directory `parent`)
    /// is now `entry`. A cached listing of `parent` is edited to match
    /// rather than dropped, and stays exactly as fresh as it was: filling
    /// a directory does not make each next lookup in it ask the store.
    /// Directories carry `dir_stat` in listings.
    pub fn changed(
        &self,
        bucket: &Arc<str>,
        path: &str,
        parent: &str,
        entry: Entry,
        dir_stat: &Stat,
    ) {
        self.put(bucket, path, entry.clone());
        let mut listings = self.listings.lock().expect("cache lock");
        let Some((list, _, _)) = listings.peek_mut(&(bucket.clone(), parent.to_string())) else {
            return;
        };
        let name = path.strip_prefix(parent).unwrap_or(path);
        let list = Arc::make_mut(list);
        let at = list.binary_search_by(|e| e.name.as_ref().cmp(name));
        let new = match entry {
            Entry::Missing => None,
            Entry::File(stat) => Some((Kind::File, stat)),
            Entry::Dir => Some((Kind::Dir, dir_stat.clone())),
        };
        match (at, new) {
            (Ok(i), None) => {
                list.remove(i);
            }
            (Err(_), None) => {}
            (Ok(i), Some((kind, stat))) => {
                list[i].kind = kind;
                list[i].stat = stat;
            }
            (Err(i), Some((kind, stat))) => list.insert(
                i,
                DirEntry {
                    name: Arc::from(name),
                    kind,
                    stat,
                },
            ),
        }
    }

    /// Forgets everything (after a directory rename moved many keys).
    pub fn clear(&self) {
        self.names.lock().expect("cache lock").clear();
        self.listings.lock().expect("cache lock").clear();
    }

    /// What a name is according to a fresh complete listing of its
    /// directory: `Some(Missing)` when a listing seen in the store lacks
    /// it (an assumed one does not know).
    pub fn from_listing(&self, bucket: &Arc<str>, prefix: &str, name: &str) -> Option<Entry> {
        let (listing, assumed) = self.any_listing(bucket, prefix)?;
        let found = listing
            .binary_search_by(|e| e.name.as_ref().cmp(name))
            .ok()
            .map(|i| &listing[i]);
        match found {
            Some(e) if e.kind == Kind::Dir => Some(Entry::Dir),
            Some(e) => Some(Entry::File(e.stat.clone())),
            None if assumed => None,
            None => Some(Entry::Missing),
        }
    }
}

/// The value under `key` if it is younger than `ttl`; a stale one is
/// dropped on the way.
fn fresh<V: Clone>(lru: &Mutex<LruCache<Key, (V, Instant)>>, ttl: Ttl, key: Key) -> Option<V> {
    let mut lru = lru.lock().expect("cache lock");
    match lru.get(&key) {
        Some((value, at)) if ttl.fresh(*at) => Some(value.clone()),
        Some(_) => {
            lru.pop(&key);
            None
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn stat() -> Stat {
        Stat {
            size: 1,
            mtime: SystemTime::UNIX_EPOCH,
            etag: None,
        }
    }

    #[test]
    fn entries_expire_and_are_bounded() {
        let b: Arc<str> = Arc::from("b");
        let c = MetaCache::new(Ttl(Some(Duration::from_secs(60))), 2, 2, 10);
        c.put(&b, "a", Entry::Missing);
        c.put(&b, "b", Entry::Dir);
        c.put(&b, "c", Entry::File(stat()));
        assert_eq!(c.get(&b, "a"), None, "evicted by the bound");
        assert_eq!(c.get(&b, "b"), Some(Entry::Dir));
        let none = MetaCache::new(Ttl(Some(Duration::ZERO)), 2, 2, 10);
        none.put(&b, "a", Entry::Dir);
        assert_eq!(none.get(&b, "a"), None);
    }

    #[test]
    fn listings_answer_lookups() {
        let b: Arc<str> = Arc::from("b");
        let c = MetaCache::new(Ttl(None), 10, 10, 10);
        let entries = vec![
            DirEntry {
                name: Arc::from("d"),
                kind: Kind::Dir,
                stat: stat(),
            },
            DirEntry {
                name: Arc::from("f"),
                kind: Kind::File,
                stat: stat(),
            },
        ];
        c.put_listing(&b, "p/", Arc::new(entries));
        assert_eq!(c.from_listing(&b, "p/", "d"), Some(Entry::Dir));
        assert_eq!(c.from_listing(&b, "p/", "f"), Some(Entry::File(stat())));
        assert_eq!(c.from_listing(&b, "p/", "zz"), Some(Entry::Missing));
        assert_eq!(c.from_listing(&b, "q/", "d"), None);
        // A directory made here: what was made through the mount is known,
        // anything else must be asked.
        c.put_assumed_listing(&b, "new/");
        assert!(c.is_assumed(&b, "new/"));
        assert_eq!(c.listing(&b, "new/"), None, "not for readdir");
        assert_eq!(c.from_listing(&b, "new/", "x"), None);
        c.changed(&b, "new/x", "new/", Entry::File(stat()), &stat());
        assert_eq!(c.from_listing(&b, "new/", "x"), Some(Entry::File(stat())));
        assert_eq!(c.from_listing(&b, "new/", "y"), None);
    }

    #[test]
    fn a_stale_listing_answers_nothing_but_its_length() {
        let b: Arc<str> = Arc::from("b");
        let long = MetaCache::new(Ttl(Some(Duration::from_secs(60))), 10, 10, 10);
        long.put_listing(&b, "p/", Arc::new(vec![]));
        assert_eq!(long.stale_len(&b, "p/"), None, "fresh");
        // A TTL over before the next call can look.
        let short = MetaCache::new(Ttl(Some(Duration::from_nanos(1))), 10, 10, 10);
        short.put_listing(&b, "p/", Arc::new(vec![]));
        assert_eq!(short.listing(&b, "p/"), None);
        assert_eq!(short.from_listing(&b, "p/", "x"), None);
        assert_eq!(short.stale_len(&b, "p/"), Some(0));
    }
}
