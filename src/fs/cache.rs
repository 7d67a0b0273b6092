//! The metadata cache: what a name is (file with its stat, directory, or
//! nothing) and complete directory listings, each good for the metadata
//! TTL. A fresh complete listing answers lookups of every name in (and not
//! in) that directory without a request.
//!
//! Both LRUs charge each entry's size to the mount's metadata budget
//! (`fs/budget.rs`) and are bounded by it, not by a count: [`MetaCache::evict`]
//! drops the older of the two least recently used entries until enough is
//! given back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::budget::{self, MetaBudget};
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
    budget: Arc<MetaBudget>,
    /// Counts changes made through the mount (edits and invalidations):
    /// what was listed before a change may not show it.
    epoch: AtomicU64,
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

/// What an LRU entry costs beside its key and value: the lru crate's node
/// (two links) in its own block, and a slot of its index (about two for
/// one at the table's usual load).
const LRU_NODE: usize = 16;
const LRU_SLOT: u64 = 2 * 17;

fn name_charge(path: &str, entry: &Entry) -> u64 {
    let etag = match entry {
        Entry::File(s) => s.etag.as_ref().map_or(0, |e| budget::alloc(e.len())),
        _ => 0,
    };
    budget::alloc(std::mem::size_of::<(Key, (Entry, Instant))>() + LRU_NODE)
        + LRU_SLOT
        + budget::alloc(path.len())
        + etag
}

/// What one name of a listing costs: its place in the vector, its name's
/// block and its ETag's.
pub fn dir_entry_charge(e: &DirEntry) -> u64 {
    std::mem::size_of::<DirEntry>() as u64
        + budget::alloc(16 + e.name.len())
        + e.stat.etag.as_ref().map_or(0, |t| budget::alloc(t.len()))
}

fn listing_charge(prefix: &str, entries: &[DirEntry]) -> u64 {
    budget::alloc(std::mem::size_of::<(Key, Listing)>() + LRU_NODE)
        + LRU_SLOT
        + budget::alloc(prefix.len())
        + budget::alloc(16 + std::mem::size_of_val(entries))
        + entries
            .iter()
            .map(|e| dir_entry_charge(e) - std::mem::size_of::<DirEntry>() as u64)
            .sum::<u64>()
}

impl MetaCache {
    pub fn new(ttl: Ttl, max_listing_len: usize, budget: Arc<MetaBudget>) -> Self {
        MetaCache {
            ttl,
            names: Mutex::new(LruCache::unbounded()),
            listings: Mutex::new(LruCache::unbounded()),
            max_listing_len,
            budget,
            epoch: AtomicU64::new(0),
            stats: CacheStats::default(),
        }
    }

    /// The count of changes made through the mount so far.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn changing(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops least recently used entries (names or listings, whichever
    /// was used longer ago) until `bytes` are given back or nothing is
    /// left; returns what was given back.
    pub fn evict(&self, bytes: u64) -> u64 {
        let mut freed = 0;
        while freed < bytes {
            // One entry at a time, each lock alone: never both at once.
            let name_age = self
                .names
                .lock()
                .expect("cache lock")
                .peek_lru()
                .map(|(_, (_, at))| *at);
            let listing_age = self
                .listings
                .lock()
                .expect("cache lock")
                .peek_lru()
                .map(|(_, (_, at, _))| *at);
            let from_names = match (name_age, listing_age) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(n), Some(l)) => n <= l,
            };
            freed += if from_names {
                let popped = self.names.lock().expect("cache lock").pop_lru();
                popped.map_or(0, |((_, path), (entry, _))| name_charge(&path, &entry))
            } else {
                let popped = self.listings.lock().expect("cache lock").pop_lru();
                popped.map_or(0, |((_, prefix), (l, _, _))| listing_charge(&prefix, &l))
            };
        }
        self.budget.release(freed);
        freed
    }

    /// Forgets every entry, giving back what they charged.
    pub fn clear(&self) {
        self.changing();
        self.evict(u64::MAX);
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
        let found = fresh(
            &self.names,
            self.ttl,
            (bucket.clone(), path.to_string()),
            &self.budget,
        );
        count(
            found.is_some(),
            &self.stats.name_hits,
            &self.stats.name_misses,
        );
        found
    }

    pub fn put(&self, bucket: &Arc<str>, path: &str, entry: Entry) {
        if self.caching() {
            self.budget.charge(name_charge(path, &entry));
            let old = self
                .names
                .lock()
                .expect("cache lock")
                .put((bucket.clone(), path.to_string()), (entry, Instant::now()));
            if let Some((old, _)) = old {
                self.budget.release(name_charge(path, &old));
            }
        }
    }

    fn pop_name(&self, key: &Key) {
        let popped = self.names.lock().expect("cache lock").pop(key);
        if let Some((entry, _)) = popped {
            self.budget.release(name_charge(&key.1, &entry));
        }
    }

    fn pop_listing(&self, key: &Key) {
        let popped = self.listings.lock().expect("cache lock").pop(key);
        if let Some((l, _, _)) = popped {
            self.budget.release(listing_charge(&key.1, &l));
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

    /// Whether a fresh listing of `prefix` is cached (no hit counted).
    pub fn listing_is_fresh(&self, bucket: &Arc<str>, prefix: &str) -> bool {
        self.any_listing(bucket, prefix).is_some()
    }

    /// Whether the metadata budget has room for more.
    pub fn has_room(&self) -> bool {
        self.budget.excess() == 0
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
        let charge = listing_charge(prefix, &entries);
        // A listing worth a quarter of the budget would push out
        // everything else at each read: it is listed again instead.
        if self.caching()
            && entries.len() <= self.max_listing_len
            && charge <= self.budget.limit() / 4
        {
            self.budget.charge(charge);
            let old = self.listings.lock().expect("cache lock").put(
                (bucket.clone(), prefix.to_string()),
                (entries, Instant::now(), assumed),
            );
            if let Some((old, _, _)) = old {
                self.budget.release(listing_charge(prefix, &old));
            }
        }
    }

    /// Forgets the listing of `prefix`.
    pub fn forget_listing(&self, bucket: &Arc<str>, prefix: &str) {
        self.changing();
        self.pop_listing(&(bucket.clone(), prefix.to_string()));
    }

    /// Forgets what is known of `path` and of the listing of `parent`,
    /// after a change there.
    pub fn invalidate(&self, bucket: &Arc<str>, path: &str, parent: &str) {
        self.changing();
        self.pop_name(&(bucket.clone(), path.to_string()));
        self.pop_listing(&(bucket.clone(), parent.to_string()));
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
        self.changing();
        self.put(bucket, path, entry.clone());
        let mut listings = self.listings.lock().expect("cache lock");
        let Some((list, _, _)) = listings.peek_mut(&(bucket.clone(), parent.to_string())) else {
            return;
        };
        let name = path.strip_prefix(parent).unwrap_or(path);
        let before = listing_charge(parent, list);
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
        self.budget.recharge(before, listing_charge(parent, list));
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

/// The name under `key` if it is younger than `ttl`; a stale one is
/// dropped on the way (and its charge given back).
fn fresh(
    lru: &Mutex<LruCache<Key, (Entry, Instant)>>,
    ttl: Ttl,
    key: Key,
    budget: &MetaBudget,
) -> Option<Entry> {
    let mut lru = lru.lock().expect("cache lock");
    match lru.get(&key) {
        Some((value, at)) if ttl.fresh(*at) => Some(value.clone()),
        Some(_) => {
            if let Some((old, _)) = lru.pop(&key) {
                budget.release(name_charge(&key.1, &old));
            }
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

    fn cache(ttl: Ttl) -> MetaCache {
        MetaCache::new(ttl, 10, Arc::new(MetaBudget::new(1 << 20)))
    }

    #[test]
    fn entries_expire_and_are_evicted_oldest_first() {
        let b: Arc<str> = Arc::from("b");
        let budget = Arc::new(MetaBudget::new(1 << 20));
        let c = MetaCache::new(Ttl(Some(Duration::from_secs(60))), 10, budget.clone());
        c.put(&b, "a", Entry::Missing);
        c.put(&b, "b", Entry::Dir);
        c.put_listing(&b, "p/", Arc::new(vec![]));
        c.put(&b, "c", Entry::File(stat()));
        let all = budget.charged();
        assert!(all > 0);
        // The first name is the oldest entry: one byte's worth drops it.
        let freed = c.evict(1);
        assert_eq!(c.get(&b, "a"), None, "evicted first");
        assert_eq!(budget.charged(), all - freed);
        c.evict(1);
        assert_eq!(c.get(&b, "b"), None);
        assert!(c.listing(&b, "p/").is_some(), "younger than the names");
        c.put(&b, "c", Entry::Dir);
        c.clear();
        assert_eq!(budget.charged(), 0, "every charge given back");
        let none = MetaCache::new(Ttl(Some(Duration::ZERO)), 10, budget.clone());
        none.put(&b, "a", Entry::Dir);
        assert_eq!(none.get(&b, "a"), None);
        assert_eq!(budget.charged(), 0);
    }

    #[test]
    fn edits_of_a_listing_move_its_charge() {
        let b: Arc<str> = Arc::from("b");
        let budget = Arc::new(MetaBudget::new(1 << 20));
        let c = MetaCache::new(Ttl(None), 10, budget.clone());
        c.put_listing(&b, "p/", Arc::new(vec![]));
        let empty = budget.charged();
        c.changed(&b, "p/x", "p/", Entry::File(stat()), &stat());
        let one = budget.charged();
        assert!(one > empty);
        c.changed(&b, "p/x", "p/", Entry::Missing, &stat());
        c.forget_listing(&b, "p/");
        c.invalidate(&b, "p/x", "p/");
        assert_eq!(budget.charged(), 0);
        let small = MetaCache::new(Ttl(None), 10, Arc::new(MetaBudget::new(4096)));
        let big: Vec<DirEntry> = (0..100)
            .map(|i| DirEntry {
                name: Arc::from(format!("f{i:03}").as_str()),
                kind: Kind::File,
                stat: stat(),
            })
            .collect();
        small.put_listing(&b, "p/", Arc::new(big));
        assert_eq!(
            small.listing(&b, "p/"),
            None,
            "over a quarter of the budget"
        );
    }

    #[test]
    fn listings_answer_lookups() {
        let b: Arc<str> = Arc::from("b");
        let c = cache(Ttl(None));
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
        let long = cache(Ttl(Some(Duration::from_secs(60))));
        long.put_listing(&b, "p/", Arc::new(vec![]));
        assert_eq!(long.stale_len(&b, "p/"), None, "fresh");
        // A TTL over before the next call can look.
        let short = cache(Ttl(Some(Duration::from_nanos(1))));
        short.put_listing(&b, "p/", Arc::new(vec![]));
        assert_eq!(short.listing(&b, "p/"), None);
        assert_eq!(short.from_listing(&b, "p/", "x"), None);
        assert_eq!(short.stale_len(&b, "p/"), Some(0));
    }
}
