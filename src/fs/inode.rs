//! The inode table: numbers that stay the same for as long as the kernel
//! holds a reference (FUSE lookup counts), freed on forget so that walking
//! a million keys does not grow memory without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

pub use super::attr::Overrides;
use super::attr::SetAttr;
use super::budget::{self, MetaBudget};

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// What a name is. Every kind but `Dir` is an object at the name's key;
/// the kinds other than `File` and `Dir` exist through the directory's
/// metadata (`fs/meta.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

/// What the store tells about an object (directories have size 0 and the
/// mount time, unless a marker object gives them a date).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime: SystemTime,
    pub etag: Option<String>,
}

/// An object's LastModified as the mtime a mount shows: in whole seconds.
/// A HEAD (an HTTP date) has nothing finer and a listing has milliseconds;
/// one precision for both makes an object show the same time to every
/// mount, whichever way each first saw it. `None` (a store that sends no
/// time) is `default`.
pub fn object_mtime(last_modified: Option<SystemTime>, default: SystemTime) -> SystemTime {
    let Some(t) = last_modified else {
        return default;
    };
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

impl Stat {
    /// `newer`, told by the store (or by the buffer of a file being written
    /// here) about what this stat describes. The same object (same ETag and
    /// size) keeps the time already shown, which a HEAD (whole seconds) or a
    /// listing (milliseconds) would otherwise move by a fraction, across a
    /// second at times. A stat without an ETag (a file being written here,
    /// known by its size only) keeps the ETag and time of what this mount
    /// uploaded last: the entry in the directory's metadata must name it.
    pub fn updated(&self, newer: Stat) -> Stat {
        let same = newer.etag.is_some() && newer.etag == self.etag && newer.size == self.size;
        if same {
            Stat {
                mtime: self.mtime,
                ..newer
            }
        } else if newer.etag.is_none() && self.etag.is_some() {
            Stat {
                size: newer.size,
                ..self.clone()
            }
        } else {
            newer
        }
    }
}

/// Where an inode lives in the store. For a directory `key` is the prefix
/// (empty, or ending in `/`); for a file, the whole key. The all-buckets
/// root has an empty bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: Arc<str>,
    pub key: String,
}

impl Location {
    /// The location of `name` inside this directory.
    pub fn child(&self, name: &str, kind: Kind) -> Location {
        if self.bucket.is_empty() {
            // A child of the all-buckets root is a bucket.
            return Location {
                bucket: Arc::from(name),
                key: String::new(),
            };
        }
        let mut key = String::with_capacity(self.key.len() + name.len() + 1);
        key.push_str(&self.key);
        key.push_str(name);
        if kind == Kind::Dir {
            key.push('/');
        }
        Location {
            bucket: self.bucket.clone(),
            key,
        }
    }

    /// Where a live location is: the all-buckets root has no bucket.
    pub fn tree(&self) -> Tree {
        if self.bucket.is_empty() {
            Tree::Buckets
        } else {
            Tree::Live
        }
    }

    /// Whether this is a directory's location (a prefix: empty, or ending
    /// in `/`).
    pub fn is_dir(&self) -> bool {
        self.key.is_empty() || self.key.ends_with('/')
    }

    /// Where this location is once directory (or file) `from` has moved to
    /// `to`; `None` when it is not `from` or under it.
    pub fn rebased(&self, from: &Location, to: &Location) -> Option<Location> {
        if self.bucket != from.bucket {
            return None;
        }
        let rest = self.key.strip_prefix(from.key.as_str())?;
        if !rest.is_empty() && !from.is_dir() {
            // `a` moving is not `ab` moving.
            return None;
        }
        Some(Location {
            bucket: to.bucket.clone(),
            key: format!("{}{rest}", to.key),
        })
    }
}

/// The trees a mount shows, told apart by [`Inode::tree`] (and
/// [`Location::tree`]) so that a `match` says which of them a function
/// handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// The root of an all-buckets mount: its entries are the buckets, and
    /// nothing is stored in it (its location has no bucket).
    Buckets,
    /// The live names of a bucket: the mount's root, each bucket of an
    /// all-buckets mount, and every file and directory below.
    Live,
    /// The read-only history of a versioned bucket (`.versions`,
    /// `.snapshots` and below), answered by `fs/versions.rs`.
    History,
}

/// Which tree an inode belongs to: the live one, or the read-only history
/// of a versioned bucket (`fs/versions.rs`). For history directories
/// `loc.key` is a prefix as for live ones; for a file's versions and for
/// one version, it is the file's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Live,
    /// Under `.versions`: the names below `loc.key` that have any version.
    History,
    /// `.versions/PATH` of a file: one entry per version of `loc.key`.
    VersionsOf,
    /// One version of `loc.key`; a delete marker reads as empty.
    Version {
        id: Arc<str>,
        marker: bool,
    },
    /// `.snapshots` itself: lists nothing, any time can be looked up in it.
    Snapshots,
    /// The tree below `loc.key` as it was at `at`.
    Snapshot {
        at: SystemTime,
    },
}

#[derive(Debug, Clone)]
pub struct Inode {
    pub ino: Ino,
    pub parent: Ino,
    pub name: Arc<str>,
    pub kind: Kind,
    pub loc: Location,
    pub view: View,
    pub stat: Stat,
    /// When `stat` was last confirmed by the store.
    pub stat_at: Instant,
    /// The ETag whose content the kernel's page cache holds from an earlier
    /// open; the cache is kept across opens only while it still matches.
    pub cached_etag: Option<String>,
    /// Attributes held in memory for the inode's life: where no metadata
    /// object holds them (mount root, unlinked files), times set before an
    /// upload, and a directory's times changed by changes to its entries.
    pub overrides: Overrides,
    /// Its name was removed (unlink, or replaced by a rename) while the
    /// kernel still references it: it has no link left.
    pub unlinked: bool,
    lookups: u64,
    /// When the kernel last looked it up (the table's tick): the least
    /// recently used are the first the kernel is asked to forget.
    used: u64,
    /// The kernel was asked to forget it and has not looked it up since.
    evicting: bool,
    /// What it charges to the metadata budget.
    charge: u32,
}

/// Keys copied by a move: the old key, the ETag copied and the copy's.
pub type Copies = HashMap<String, (Option<String>, Option<String>)>;

impl Inode {
    pub fn tree(&self) -> Tree {
        match self.view {
            View::Live => self.loc.tree(),
            _ => Tree::History,
        }
    }

    /// Its object was copied to where it now lives: `before` was copied,
    /// its copy is `after`. A stat of another object is left alone.
    pub fn restamp(&mut self, before: &Option<String>, after: &Option<String>) {
        if self.stat.etag == *before {
            self.stat.etag.clone_from(after);
        }
    }
}

/// The inodes the kernel references. Inodes are boxed: a hash table keeps
/// up to twice its entries in empty slots, which would each be an inode's
/// size. Both tables shrink when most of their entries are forgotten, and
/// charge their capacity and every inode to the metadata budget.
#[derive(Debug)]
pub struct InodeTable {
    inodes: HashMap<Ino, Box<Inode>, Hasher>,
    children: HashMap<(Ino, Arc<str>), Ino, Hasher>,
    next: Ino,
    budget: Arc<MetaBudget>,
    /// Counts lookups, to order inodes by their last one.
    tick: u64,
    /// What the two tables' slots are charged now.
    tables_charged: u64,
}

/// The tables' hasher: a walk hashes a few keys per entry, and SipHash's
/// resistance to chosen keys buys nothing for numbers this table picks and
/// names under one directory (foldhash is seeded per process all the same).
type Hasher = foldhash::fast::RandomState;

/// A key of `children`, owned or borrowed: a lookup by `(parent, &str)`
/// finds `(parent, Arc<str>)` without making a name to ask with (one
/// allocation less per entry a listing hands the kernel). Both hash as
/// `(Ino, &str)` does.
trait ChildKey {
    fn key(&self) -> (Ino, &str);
}

impl ChildKey for (Ino, Arc<str>) {
    fn key(&self) -> (Ino, &str) {
        (self.0, &self.1)
    }
}

impl ChildKey for (Ino, &str) {
    fn key(&self) -> (Ino, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn ChildKey + 'a> for (Ino, Arc<str>) {
    fn borrow(&self) -> &(dyn ChildKey + 'a) {
        self
    }
}

impl std::hash::Hash for dyn ChildKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for dyn ChildKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn ChildKey + '_ {}

/// What an inode costs beyond its table slots: its block, its name, its
/// key and an ETag (assumed: most are 34 bytes).
fn inode_charge(name: &str, key: &str) -> u32 {
    (budget::alloc(std::mem::size_of::<Inode>())
        + budget::alloc(16 + name.len())
        + budget::alloc(key.len())
        + budget::alloc(34)) as u32
}

impl InodeTable {
    pub fn new(root: Location, mount_time: SystemTime, budget: Arc<MetaBudget>) -> Self {
        let mut inodes = HashMap::default();
        inodes.insert(
            ROOT_INO,
            Box::new(Inode {
                ino: ROOT_INO,
                parent: ROOT_INO,
                name: Arc::from(""),
                kind: Kind::Dir,
                loc: root,
                view: View::Live,
                stat: Stat {
                    size: 0,
                    mtime: mount_time,
                    etag: None,
                },
                stat_at: Instant::now(),
                cached_etag: None,
                overrides: Overrides::default(),
                unlinked: false,
                // The root is never forgotten.
                lookups: 1,
                used: 0,
                evicting: false,
                charge: 0,
            }),
        );
        let mut t = InodeTable {
            inodes,
            children: HashMap::default(),
            next: ROOT_INO + 1,
            budget,
            tick: 0,
            tables_charged: 0,
        };
        t.account_tables();
        t
    }

    pub fn get(&self, ino: Ino) -> Option<&Inode> {
        self.inodes.get(&ino).map(|b| &**b)
    }

    /// Charges the tables' capacity as it is now.
    fn account_tables(&mut self) {
        let now = budget::table(
            self.inodes.capacity(),
            std::mem::size_of::<(Ino, Box<Inode>)>(),
        ) + budget::table(
            self.children.capacity(),
            std::mem::size_of::<((Ino, Arc<str>), Ino)>(),
        );
        self.budget.recharge(self.tables_charged, now);
        self.tables_charged = now;
    }

    /// Gives back the tables' room once most of it is empty (a hash table
    /// never shrinks by itself: a walk's million entries would stay
    /// reserved after the kernel forgot them). Returns whether it did.
    fn shrink(&mut self) -> bool {
        let (len, cap) = (self.inodes.len(), self.inodes.capacity());
        if cap < 1024 || len * 4 > cap {
            return false;
        }
        self.inodes.shrink_to(len * 2);
        self.children.shrink_to(self.children.len() * 2);
        self.account_tables();
        true
    }

    /// Asks for the least recently looked-up inodes the kernel holds, as
    /// (parent, name), worth about `bytes`; each is marked so that it is
    /// not asked for again unless looked up again. Only names that no
    /// process can be standing in or using: never a directory (the kernel
    /// would unhash it under a process whose working directory it is), a
    /// file in `open`, the root or a nameless inode.
    pub fn least_used(
        &mut self,
        bytes: u64,
        open: &std::collections::HashSet<Ino>,
    ) -> Vec<(Ino, Arc<str>)> {
        let mut all: Vec<(u64, Ino, u32)> = self
            .inodes
            .values()
            .filter(|n| n.kind != Kind::Dir && !n.unlinked && !n.evicting && !open.contains(&n.ino))
            .map(|n| (n.used, n.ino, n.charge))
            .collect();
        all.sort_unstable();
        let mut out = Vec::new();
        let mut freed = 0u64;
        for (_, ino, charge) in all {
            if freed >= bytes {
                break;
            }
            let Some(n) = self.inodes.get_mut(&ino) else {
                continue;
            };
            n.evicting = true;
            self.budget.ask(u64::from(charge));
            freed += u64::from(charge);
            out.push((n.parent, n.name.clone()));
        }
        out
    }

    /// The inode of `name` in `parent`, if the kernel knows it.
    pub fn child(&self, parent: Ino, name: &str) -> Option<&Inode> {
        self.children
            .get(&(parent, name) as &dyn ChildKey)
            .and_then(|ino| self.inodes.get(ino))
            .map(|b| &**b)
    }

    /// Records that the kernel now holds one more reference to `name` in
    /// `parent`, as `kind` with `stat`; returns its inode number. A name that
    /// changed kind (a file replaced by a directory) gets a new number.
    pub fn remember(
        &mut self,
        parent: Ino,
        name: &str,
        kind: Kind,
        loc: Location,
        stat: Stat,
    ) -> Ino {
        self.remember_in(parent, name, kind, loc, View::Live, stat)
    }

    /// [`InodeTable::remember`] for an inode of any view; a name whose view
    /// changed gets a new number, as one whose kind changed.
    pub fn remember_in(
        &mut self,
        parent: Ino,
        name: &str,
        kind: Kind,
        loc: Location,
        view: View,
        stat: Stat,
    ) -> Ino {
        let looked_up = (parent, name);
        let looked_up: &dyn ChildKey = &looked_up;
        self.tick += 1;
        if let Some(&ino) = self.children.get(looked_up)
            && let Some(inode) = self.inodes.get_mut(&ino)
        {
            if inode.kind == kind && inode.view == view {
                inode.lookups += 1;
                inode.stat = inode.stat.updated(stat);
                inode.stat_at = Instant::now();
                inode.used = self.tick;
                if std::mem::take(&mut inode.evicting) {
                    self.budget.answered(u64::from(inode.charge));
                }
                return ino;
            }
            // The old inode lives on until the kernel forgets it, but the
            // name now leads to the new one.
            self.children.remove(looked_up);
        }
        // Only a new inode needs a name of its own.
        let key = (parent, Arc::<str>::from(name));
        let ino = self.next;
        self.next += 1;
        let charge = inode_charge(name, &loc.key);
        self.budget.charge(u64::from(charge));
        self.inodes.insert(
            ino,
            Box::new(Inode {
                ino,
                parent,
                name: key.1.clone(),
                kind,
                loc,
                view,
                stat,
                stat_at: Instant::now(),
                cached_etag: None,
                overrides: Overrides::default(),
                unlinked: false,
                lookups: 1,
                used: self.tick,
                evicting: false,
                charge,
            }),
        );
        self.children.insert(key, ino);
        self.account_tables();
        ino
    }

    /// `ino` is now `new_name` in `new_parent`, at `new_loc`, since `now`;
    /// an inode that had that name loses it.
    pub fn rename(
        &mut self,
        ino: Ino,
        new_parent: Ino,
        new_name: &str,
        new_loc: Location,
        now: SystemTime,
    ) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        inode.overrides.changed(now);
        let old_key = (inode.parent, inode.name.clone());
        let new_key = (new_parent, Arc::<str>::from(new_name));
        inode.parent = new_parent;
        inode.name = new_key.1.clone();
        inode.loc = new_loc;
        if self.children.get(&old_key) == Some(&ino) {
            self.children.remove(&old_key);
        }
        if let Some(replaced) = self.children.insert(new_key, ino)
            && replaced != ino
            && let Some(r) = self.inodes.get_mut(&replaced)
        {
            r.unlinked = true;
        }
    }

    /// `name` in `parent` is gone: its inode (if the kernel still holds
    /// it) has no link left, and the name may be given to a new inode.
    pub fn unlink(&mut self, parent: Ino, name: &str) -> Option<Ino> {
        let ino = self.children.remove(&(parent, name) as &dyn ChildKey)?;
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.unlinked = true;
        }
        Some(ino)
    }

    /// Every live inode whose key starts with `old` in `bucket` moves to
    /// `new` (history stays where it was).
    /// A directory moved from prefix `old` to `new`: its inodes follow,
    /// each file taking the ETag of its copy (`copies`: old key to the
    /// ETags before and after; a multipart object's copy has another).
    pub fn rebase(&mut self, from: &Location, to: &Location, copies: &Copies) {
        for inode in self.inodes.values_mut() {
            if inode.view == View::Live
                && let Some(moved) = inode.loc.rebased(from, to)
            {
                if let Some((before, after)) = copies.get(inode.loc.key.as_str()) {
                    inode.restamp(before, after);
                }
                inode.loc = moved;
            }
        }
    }

    /// The kernel dropped `n` references; the inode goes when none is left.
    /// Returns whether the tables gave memory back.
    pub fn forget(&mut self, ino: Ino, n: u64) -> bool {
        if ino == ROOT_INO {
            return false;
        }
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return false;
        };
        inode.lookups = inode.lookups.saturating_sub(n);
        if inode.lookups == 0 {
            let key = (inode.parent, inode.name.clone());
            self.budget.release(u64::from(inode.charge));
            if inode.evicting {
                self.budget.answered(u64::from(inode.charge));
            }
            self.inodes.remove(&ino);
            if self.children.get(&key) == Some(&ino) {
                self.children.remove(&key);
            }
            return self.shrink();
        }
        false
    }

    pub fn len(&self) -> usize {
        self.inodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inodes.is_empty()
    }
}

/// The parent prefix and the path (without trailing slash) of a key.
pub fn split_key(key: &str) -> (&str, &str) {
    let path = key.strip_suffix('/').unwrap_or(key);
    let parent = path.rfind('/').map_or("", |i| &path[..=i]);
    (parent, path)
}

/// The inode table behind its lock: the one owner of inodes. Each method
/// takes the lock for one step and lets go; no caller holds it, and
/// nothing under it waits.
pub struct Inodes(Mutex<InodeTable>);

impl Inodes {
    pub fn new(root: Location, mount_time: SystemTime, budget: Arc<MetaBudget>) -> Self {
        Inodes(Mutex::new(InodeTable::new(root, mount_time, budget)))
    }

    fn table(&self) -> MutexGuard<'_, InodeTable> {
        self.0.lock().expect("inode lock")
    }

    pub fn get(&self, ino: Ino) -> Option<Inode> {
        self.table().get(ino).cloned()
    }

    /// The inode of `name` in `parent`, if the kernel knows it.
    pub fn child(&self, parent: Ino, name: &str) -> Option<Inode> {
        self.table().child(parent, name).cloned()
    }

    pub fn child_ino(&self, parent: Ino, name: &str) -> Option<Ino> {
        self.table().child(parent, name).map(|n| n.ino)
    }

    /// A kernel reference to `name` in `parent` ([`InodeTable::remember_in`]:
    /// `what` it is, where, in which view); also returns what the inode's
    /// attributes are computed from now.
    pub fn remember(
        &self,
        (parent, name): (Ino, &str),
        (kind, loc, view): (Kind, Location, View),
        stat: Stat,
    ) -> (Ino, Stat, Overrides) {
        let mut t = self.table();
        let ino = t.remember_in(parent, name, kind, loc, view, stat.clone());
        match t.get(ino) {
            Some(n) => (ino, n.stat.clone(), n.overrides.clone()),
            None => (ino, stat, Overrides::default()),
        }
    }

    /// The store confirmed (or changed) what `ino` is, just now.
    pub fn refreshed(&self, ino: Ino, stat: Stat) {
        let mut t = self.table();
        if let Some(n) = t.inodes.get_mut(&ino) {
            n.stat = n.stat.updated(stat);
            n.stat_at = Instant::now();
        }
    }

    /// `ino` was written through a handle.
    pub fn written(&self, ino: Ino) {
        let mut t = self.table();
        if let Some(n) = t.inodes.get_mut(&ino) {
            n.overrides.written();
        }
    }

    /// `ino`'s content is now the object `stat` (or, without, stayed what
    /// it was). Returns the time set since its last write, for its entry.
    pub fn saved(&self, ino: Ino, stat: Option<Stat>) -> Option<SystemTime> {
        let mut t = self.table();
        let n = t.inodes.get_mut(&ino)?;
        if let Some(stat) = stat {
            n.stat = stat;
            n.stat_at = Instant::now();
        }
        n.overrides.saved()
    }

    /// Names in directories `dirs` were added or removed at `now`.
    pub fn entries_changed(&self, dirs: &[Ino], now: SystemTime) {
        let mut t = self.table();
        for ino in dirs {
            if let Some(n) = t.inodes.get_mut(ino) {
                n.overrides.entries_changed(now);
            }
        }
    }

    /// `set` applied to `ino` at `now` (see [`Overrides::set`]); returns
    /// what its attributes are now computed from.
    pub fn set_attrs(
        &self,
        ino: Ino,
        set: &SetAttr,
        homeless: bool,
        mtime_here: bool,
        now: SystemTime,
    ) -> Option<(Stat, Overrides)> {
        let mut t = self.table();
        let n = t.inodes.get_mut(&ino)?;
        n.overrides.set(set, homeless, mtime_here, now);
        Some((n.stat.clone(), n.overrides.clone()))
    }

    /// The kernel is about to cache `ino`'s pages for the object `etag`:
    /// whether the pages it kept from an earlier open are that object's.
    pub fn keep_pages(&self, ino: Ino, etag: &Option<String>) -> bool {
        let mut t = self.table();
        let Some(n) = t.inodes.get_mut(&ino) else {
            return false;
        };
        let keep = etag.is_some() && n.cached_etag == *etag;
        n.cached_etag.clone_from(etag);
        keep
    }

    /// The object of `name` in `parent` was copied: `before` became
    /// `after` (see [`Inode::restamp`]).
    pub fn restamp_child(
        &self,
        parent: Ino,
        name: &str,
        before: &Option<String>,
        after: &Option<String>,
    ) {
        let mut t = self.table();
        let ino = t.children.get(&(parent, name) as &dyn ChildKey).copied();
        if let Some(n) = ino.and_then(|ino| t.inodes.get_mut(&ino)) {
            n.restamp(before, after);
        }
    }

    pub fn unlink(&self, parent: Ino, name: &str) -> Option<Ino> {
        self.table().unlink(parent, name)
    }

    /// `name` in `parent` is now `new_name` in `new_parent`, at `to`, since
    /// `now`: its inode follows (one step, so no lookup sees it half
    /// moved); if the kernel did not hold it, the target's name is gone
    /// from whatever inode had it all the same.
    pub fn moved(
        &self,
        (parent, name): (Ino, &str),
        (new_parent, new_name): (Ino, &str),
        to: &Location,
        now: SystemTime,
    ) {
        let mut t = self.table();
        match t.child(parent, name).map(|n| n.ino) {
            Some(ino) => t.rename(ino, new_parent, new_name, to.clone(), now),
            None => {
                t.unlink(new_parent, new_name);
            }
        }
    }

    pub fn rebase(&self, from: &Location, to: &Location, copies: &Copies) {
        self.table().rebase(from, to, copies);
    }

    /// The kernel dropped `n` references to `ino`. Returns whether the
    /// table gave memory back (worth returning to the system).
    pub fn forget(&self, ino: Ino, n: u64) -> bool {
        self.table().forget(ino, n)
    }

    /// See [`InodeTable::least_used`].
    pub fn least_used(
        &self,
        bytes: u64,
        open: &std::collections::HashSet<Ino>,
    ) -> Vec<(Ino, Arc<str>)> {
        self.table().least_used(bytes, open)
    }

    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn is_empty(&self) -> bool {
        self.table().is_empty()
    }
}

/// Whether a key component can be shown as a file name: not empty, not `.`
/// or `..`, at most [`SHOWN_NAME_MAX`] bytes, no NUL.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= SHOWN_NAME_MAX
        && !name.contains('\0')
        && !name.contains('/')
}

/// The longest name this mount shows: FUSE's limit, far beyond the usual
/// 255, because keys hold such segments (a file at a bucket's top may have
/// a 1024-byte name).
pub const SHOWN_NAME_MAX: usize = 1024;

/// The longest name this mount creates, and the NAME_MAX it reports: one
/// byte less than S3's key limit, because a directory's key ends in `/`,
/// so that a name of NAME_MAX bytes can be of any kind at a bucket's top.
pub const NAME_MAX: usize = SHOWN_NAME_MAX - 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> InodeTable {
        InodeTable::new(
            Location {
                bucket: Arc::from("b"),
                key: String::new(),
            },
            SystemTime::UNIX_EPOCH,
            Arc::new(MetaBudget::new(1 << 30)),
        )
    }

    fn stat(size: u64) -> Stat {
        Stat {
            size,
            mtime: SystemTime::UNIX_EPOCH,
            etag: None,
        }
    }

    fn loc(key: &str) -> Location {
        Location {
            bucket: Arc::from("b"),
            key: key.into(),
        }
    }

    #[test]
    fn numbers_are_stable_while_referenced_and_freed_after() {
        let mut t = root();
        let a = t.remember(ROOT_INO, "a", Kind::File, loc("a"), stat(1));
        assert_eq!(t.remember(ROOT_INO, "a", Kind::File, loc("a"), stat(2)), a);
        assert_eq!(t.get(a).unwrap().stat.size, 2);
        t.forget(a, 1);
        assert!(t.get(a).is_some(), "one reference left");
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        assert!(t.child(ROOT_INO, "a").is_none());
        assert_eq!(t.len(), 1);
        t.forget(ROOT_INO, 100);
        assert!(t.get(ROOT_INO).is_some());
    }

    #[test]
    fn an_unlinked_inode_keeps_living_but_loses_its_name() {
        let mut t = root();
        let a = t.remember(ROOT_INO, "a", Kind::File, loc("a"), stat(1));
        assert_eq!(t.unlink(ROOT_INO, "a"), Some(a));
        assert!(t.get(a).unwrap().unlinked);
        assert!(t.child(ROOT_INO, "a").is_none());
        let b = t.remember(ROOT_INO, "a", Kind::File, loc("a"), stat(2));
        assert_ne!(a, b, "a new file of that name is a new inode");
        let c = t.remember(ROOT_INO, "c", Kind::File, loc("c"), stat(3));
        t.rename(c, ROOT_INO, "a", loc("a"), SystemTime::UNIX_EPOCH);
        assert!(t.get(b).unwrap().unlinked, "replaced by the rename");
        assert!(!t.get(c).unwrap().unlinked);
    }

    #[test]
    fn a_name_that_changes_kind_gets_a_new_inode() {
        let mut t = root();
        let f = t.remember(ROOT_INO, "x", Kind::File, loc("x"), stat(1));
        let d = t.remember(ROOT_INO, "x", Kind::Dir, loc("x/"), stat(0));
        assert_ne!(f, d);
        assert_eq!(t.child(ROOT_INO, "x").unwrap().ino, d);
        t.forget(f, 1);
        assert_eq!(
            t.child(ROOT_INO, "x").unwrap().ino,
            d,
            "forgetting the old one keeps the new"
        );
    }

    #[test]
    fn names() {
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(1025)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in [
            "a",
            "...",
            ".hidden",
            "é",
            &"x".repeat(256),
            &"x".repeat(1024),
        ] {
            assert!(valid_name(good), "{good:?}");
        }
        let l = loc("dir/");
        assert_eq!(l.child("f", Kind::File).key, "dir/f");
        assert_eq!(l.child("d", Kind::Dir).key, "dir/d/");
        let to = Location {
            bucket: Arc::from("c"),
            key: "new/".into(),
        };
        assert_eq!(loc("dir/sub/f").rebased(&l, &to).unwrap().key, "new/sub/f");
        assert_eq!(&*loc("dir/f").rebased(&l, &to).unwrap().bucket, "c");
        assert_eq!(loc("dirt/f").rebased(&l, &to), None);
        assert_eq!(to.rebased(&l, &to), None, "another bucket");
        let file = loc("dir/a");
        let moved = loc("dir/b");
        assert_eq!(file.rebased(&file, &moved), Some(moved.clone()));
        assert_eq!(
            loc("dir/ab").rebased(&file, &moved),
            None,
            "a file moves alone"
        );
    }

    /// Listings' milliseconds are dropped: a second mount that first saw
    /// an object by HEAD shows the same time as one that listed it.
    #[test]
    fn object_times_are_whole_seconds() {
        let t = |ms| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        assert_eq!(object_mtime(Some(t(100_999)), t(0)), t(100_000));
        assert_eq!(object_mtime(Some(t(100_000)), t(0)), t(100_000));
        assert_eq!(object_mtime(None, t(7)), t(7));
    }

    /// A HEAD gives whole seconds, a listing milliseconds: the same object
    /// must not change its time (pjdfstest saw ctime move by a second).
    #[test]
    fn the_same_object_keeps_the_time_shown() {
        let t = |ms| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        let known = Stat {
            size: 4,
            mtime: t(100_999),
            etag: Some("\"a\"".to_string()),
        };
        let head = Stat {
            mtime: t(100_000),
            ..known.clone()
        };
        assert_eq!(known.updated(head.clone()), known);
        let other = Stat {
            etag: Some("\"b\"".to_string()),
            ..head.clone()
        };
        assert_eq!(known.updated(other.clone()), other);
        let no_etag = Stat { etag: None, ..head };
        assert_eq!(stat(4).updated(no_etag.clone()), no_etag);
    }
}
