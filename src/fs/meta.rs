//! POSIX attributes the store cannot hold (it keeps no user metadata):
//! per directory, small immutable JSON **segments**,
//! `DIR/.bladefs-meta.MOUNT.SEQ`, each holding changes to names of that
//! directory: a name's kind when it is no regular file (symlink and
//! target, fifo, socket, device and rdev), mode, owner, group and times.
//! A directory without segments costs nothing more than before.
//!
//! Many hosts write at once and the store has no conditional PUT, so no
//! mount ever rewrites what another wrote (format 2; docs/SEMANTICS.md):
//! - every change carries its time (the writer's clock, never older than
//!   the change it replaces) and the writing mount's id; readers merge
//!   every segment of a directory and the latest change of a name wins,
//!   removals being tombstones. Merging is idempotent and commutative, so
//!   any reader reaches the same table from any set of segments;
//! - a mount's changes to one directory are coalesced for
//!   [`FLUSH_WINDOW`] and go out as one new segment (at once on fsync,
//!   close and unmount): a change costs its own size, not the
//!   directory's;
//! - a segment is never changed, so a listing of the directory shows
//!   which segments are new and only those are fetched;
//! - any mount compacts (after its own write): it writes one segment
//!   merging several and then deletes those. Segments of alike size are
//!   merged (a binary counter), so their number stays logarithmic and a
//!   change is rewritten a logarithmic number of times; a crash between
//!   the write and the deletes leaves duplicates that merge to the same;
//! - the format-1 object `DIR/.bladefs-meta` (one table rewritten whole)
//!   is read as the oldest segment and folded away at the first change;
//! - an entry of a file applies while the object has the ETag recorded in
//!   the entry (or while the file is being written here): an object that
//!   another client replaced is a plain file again, with the defaults and
//!   its own LastModified; an entry of a directory applies while the name
//!   is a directory;
//! - the object is written before its entry (symlink, mknod, rename), so a
//!   crash in between leaves a default attribute, never a lost file;
//! - a segment that cannot be parsed is logged once and read as empty.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::budget::MetaBudget;
use super::cache::Ttl;
use super::error::{FsError, FsResult};
use super::inode::{Kind, Location};
use crate::s3::limits::MAX_KEY_LEN;
use crate::s3::{ErrorKind, ListObjectsParams, ObjectClient, ObjectIdentifier, limits};

/// The reserved name of a directory's format-1 metadata object, and the
/// start of every segment's name: all are hidden from listings and
/// refused as file names ([`is_meta_name`]).
pub const META_NAME: &str = ".bladefs-meta";
const SEGMENT_PREFIX: &str = ".bladefs-meta.";
/// `.bladefs-meta.` + 16 hex digits of mount id + `.` + 16 of sequence.
const SEGMENT_NAME_LEN: usize = SEGMENT_PREFIX.len() + 16 + 1 + 16;
/// Every metadata name sorts before this one (`/` follows `.`): a listing
/// that has passed it has shown them all.
const PAST_META: &str = ".bladefs-meta/";
const FORMAT: &str = "bladefs-dir-meta";
const VERSION: u32 = 2;
const VERSION_1: u32 = 1;
/// Segments fetched at once when a directory's metadata is read.
const FETCH_PARALLEL: usize = 8;
/// A full compaction drops removals older than this: by then no segment
/// written before them can still be on its way.
const TOMBSTONE_KEEP: Duration = Duration::from_secs(3600);
/// Listings of a directory's segments in one read, when compactions keep
/// deleting what was listed before it is fetched.
const MAX_RELIST: usize = 3;

/// Changes to one directory within this window go out in one PUT.
pub const FLUSH_WINDOW: Duration = Duration::from_millis(100);
/// A flush that failed is tried again after this (doubling, at most
/// [`MAX_RETRY`]) for as long as the mount lives; fsync reports it.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Directories whose metadata is kept in memory (clean ones are dropped
/// beyond this; ones with unsaved changes never are).
const MAX_DIRS: usize = 10_000;

/// What an entry is, as the format spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    #[default]
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Char,
    Block,
}

impl EntryType {
    pub fn kind(self) -> Kind {
        match self {
            EntryType::File => Kind::File,
            EntryType::Dir => Kind::Dir,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Fifo => Kind::Fifo,
            EntryType::Socket => Kind::Socket,
            EntryType::Char => Kind::CharDev,
            EntryType::Block => Kind::BlockDev,
        }
    }

    pub fn of(kind: Kind) -> EntryType {
        match kind {
            Kind::File => EntryType::File,
            Kind::Dir => EntryType::Dir,
            Kind::Symlink => EntryType::Symlink,
            Kind::Fifo => EntryType::Fifo,
            Kind::Socket => EntryType::Socket,
            Kind::CharDev => EntryType::Char,
            Kind::BlockDev => EntryType::Block,
        }
    }
}

fn is_file(t: &EntryType) -> bool {
    *t == EntryType::File
}

/// One name's attributes. Unset fields take the mount's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetaEntry {
    #[serde(rename = "type", default, skip_serializing_if = "is_file")]
    pub kind: EntryType,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u32>,
    /// Permission bits with setuid, setgid and sticky (0o7777).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Nanoseconds since the epoch (negative before 1970).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i64>,
    /// Set by utimes; unset, it is the mtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atime_ns: Option<i64>,
    /// When this entry last changed (chmod, chown, utimes); the status
    /// change time shown is the later of it and the object's upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime_ns: Option<i64>,
    /// The ETag of the object this entry describes (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl MetaEntry {
    /// Nothing in it differs from the defaults: no need to keep it (a
    /// change time alone is not worth an entry: the upload's stands in).
    pub fn is_default(&self) -> bool {
        self.kind == EntryType::File
            && self.mode.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.mtime_ns.is_none()
            && self.atime_ns.is_none()
    }

    pub fn mtime(&self) -> Option<SystemTime> {
        self.mtime_ns.map(from_ns)
    }

    pub fn atime(&self) -> Option<SystemTime> {
        self.atime_ns.map(from_ns)
    }

    pub fn ctime(&self) -> Option<SystemTime> {
        self.ctime_ns.map(from_ns)
    }

    /// Whether it describes what is at its name now: a directory, or the
    /// object with `etag` (an entry without an ETag, of a file not yet
    /// uploaded, describes it only while it is being written here).
    pub fn applies(&self, kind: Kind, etag: Option<&str>, writing: bool) -> bool {
        match (self.kind, kind) {
            (EntryType::Dir, Kind::Dir) => true,
            (EntryType::Dir, _) | (_, Kind::Dir) => false,
            _ => writing || (self.etag.is_some() && self.etag.as_deref() == etag),
        }
    }
}

pub fn to_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

pub fn from_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Entries by name, as format 1 held them (and what [`read_all`] gives).
pub type Entries = BTreeMap<String, MetaEntry>;

/// One change of a name: its entry (`None`: removed), when it was made
/// (nanoseconds, the writer's clock) and by which mount (ties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub at: i64,
    pub by: String,
    pub entry: Option<MetaEntry>,
}

impl Record {
    fn wins_over(&self, other: &Record) -> bool {
        (self.at, &self.by) > (other.at, &other.by)
    }
}

/// A directory's metadata: every name's latest change, removals included
/// (so that an older change merged later cannot bring an entry back);
/// only the entries not removed are shown. A segment holds one, and a
/// directory's is the merge of all of its segments'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    records: HashMap<String, Record>,
    /// Records that are not removals.
    live: usize,
}

impl Table {
    pub fn new() -> Self {
        Table::default()
    }

    /// Records held, removals included.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// A table of one entry, older than any change (for a name just made,
    /// before its directory's table is read again).
    pub fn one(name: &str, entry: MetaEntry) -> Self {
        let mut t = Table::new();
        let r = Record {
            at: i64::MIN,
            by: String::new(),
            entry: Some(entry),
        };
        t.set(name.to_string(), r);
        t
    }

    /// The entry of `name`, unless it has none or it was removed.
    pub fn get(&self, name: &str) -> Option<&MetaEntry> {
        self.records.get(name)?.entry.as_ref()
    }

    pub fn record(&self, name: &str) -> Option<&Record> {
        self.records.get(name)
    }

    /// Whether no name has an entry (removals aside).
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn records(&self) -> impl Iterator<Item = (&String, &Record)> {
        self.records.iter()
    }

    /// The entries not removed.
    pub fn entries(&self) -> Entries {
        self.records
            .iter()
            .filter_map(|(n, r)| r.entry.clone().map(|e| (n.clone(), e)))
            .collect()
    }

    /// Edits every entry in place (a removal stays one).
    pub fn edit_entries(&mut self, mut f: impl FnMut(&str, &mut MetaEntry)) {
        for (name, r) in &mut self.records {
            if let Some(e) = &mut r.entry {
                f(name, e);
            }
        }
    }

    /// Records `r` for `name`, whatever was there.
    fn set(&mut self, name: String, r: Record) {
        let now_live = usize::from(r.entry.is_some());
        let was_live = self
            .records
            .insert(name, r)
            .map_or(0, |old| usize::from(old.entry.is_some()));
        self.live = self.live + now_live - was_live;
    }

    /// Keeps, for `name`, the later of `r` and what is there.
    fn merge_one(&mut self, name: String, r: Record) {
        if self.records.get(&name).is_none_or(|have| r.wins_over(have)) {
            self.set(name, r);
        }
    }

    /// Keeps, for each name, the later of the two changes.
    pub fn merge(&mut self, other: Table) {
        for (name, r) in other.records {
            self.merge_one(name, r);
        }
    }
}

impl FromIterator<(String, Record)> for Table {
    fn from_iter<I: IntoIterator<Item = (String, Record)>>(iter: I) -> Self {
        let mut t = Table::new();
        for (name, r) in iter {
            t.merge_one(name, r);
        }
        t
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    at: i64,
    by: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    #[serde(flatten)]
    entry: MetaEntry,
}

#[derive(Deserialize)]
struct Header {
    format: String,
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct Document<T> {
    format: String,
    version: u32,
    entries: BTreeMap<String, T>,
}

/// Reads a segment (format 2) or a format-1 object, whose entries count
/// as older than any change of format 2. Unknown fields are ignored (a
/// later minor version may add some); another format or a later major
/// version is an error.
pub fn parse(body: &[u8]) -> Result<Table, String> {
    let head: Header = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if head.format != FORMAT {
        return Err(format!("format {:?}, not {FORMAT:?}", head.format));
    }
    match head.version {
        VERSION => {
            let doc: Document<Wire> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            Ok(doc
                .entries
                .into_iter()
                .map(|(name, w)| {
                    let entry = (!w.deleted).then_some(w.entry);
                    (
                        name,
                        Record {
                            at: w.at,
                            by: w.by,
                            entry,
                        },
                    )
                })
                .collect())
        }
        VERSION_1 => {
            let doc: Document<MetaEntry> =
                serde_json::from_slice(body).map_err(|e| e.to_string())?;
            Ok(doc
                .entries
                .into_iter()
                .map(|(name, e)| {
                    let r = Record {
                        at: i64::MIN,
                        by: String::new(),
                        entry: Some(e),
                    };
                    (name, r)
                })
                .collect())
        }
        v => Err(format!(
            "version {v} (this bladefs reads {VERSION_1} and {VERSION})"
        )),
    }
}

/// A segment holding `table`, in name order.
pub fn render(table: &Table) -> Bytes {
    let entries = table
        .records()
        .map(|(name, r)| {
            let w = Wire {
                at: r.at,
                by: r.by.clone(),
                deleted: r.entry.is_none(),
                entry: r.entry.clone().unwrap_or_default(),
            };
            (name.clone(), w)
        })
        .collect();
    let doc = Document {
        format: FORMAT.to_string(),
        version: VERSION,
        entries,
    };
    Bytes::from(serde_json::to_vec(&doc).expect("records always serialise"))
}

/// A format-1 object, as bladefs wrote them before segments (for tests of
/// their migration).
pub fn render_v1(entries: &Entries) -> Bytes {
    let doc = Document {
        format: FORMAT.to_string(),
        version: VERSION_1,
        entries: entries.clone(),
    };
    Bytes::from(serde_json::to_vec(&doc).expect("a table always serialises"))
}

/// The entries that the metadata objects `bodies` of one directory make
/// together (what any mount reads; unreadable ones count as empty).
pub fn read_all<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> Entries {
    let mut table = Table::new();
    for body in bodies {
        table.merge(parse(body).unwrap_or_default());
    }
    table.entries()
}

/// The key of directory `dir`'s format-1 object, and the prefix of its
/// segments' keys.
pub fn meta_key(dir: &str) -> String {
    format!("{dir}{META_NAME}")
}

/// Whether `name` is a metadata object's (format 1 or a segment): hidden,
/// reserved.
pub fn is_meta_name(name: &str) -> bool {
    name == META_NAME || name.starts_with(SEGMENT_PREFIX)
}

/// Whether a listing whose greatest name is `last` has shown every
/// metadata object of its directory.
pub fn past_meta(last: &str) -> bool {
    last >= PAST_META
}

/// Whether directory `dir` can have metadata: not one whose key is so
/// long that a segment's would pass S3's key limit. Its entries keep the
/// defaults; symlinks and special files cannot be made there.
pub fn has_room(dir: &str) -> bool {
    dir.len() + SEGMENT_NAME_LEN <= MAX_KEY_LEN
}

/// A metadata object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Its name in the directory.
    pub name: String,
    pub etag: Option<String>,
    pub size: u64,
}

type DirKey = (Arc<str>, String);

#[derive(Default)]
struct State {
    /// When the set of segments was last confirmed (listed), if current.
    loaded: Option<Instant>,
    /// Whether segments were ever read: `table` is worth showing.
    read_once: bool,
    /// Segments merged into `records`: their ETags and sizes.
    segments: HashMap<String, (Option<String>, u64)>,
    /// What a listing showed that is not merged yet, and when: the next
    /// read fetches these, with no listing of its own.
    listed: Option<(Instant, Vec<Segment>)>,
    /// Every segment read merged, and this mount's changes.
    table: Arc<Table>,
    /// Changes made here and not yet in a segment.
    pending: HashMap<String, Record>,
    /// Counts changes, so a flush knows whether more came while it ran.
    generation: u64,
    /// The generation the store has.
    saved: u64,
    scheduled: bool,
    flushing: bool,
    /// Why the last flush failed, until one succeeds.
    failed: Option<FsError>,
}

impl State {
    fn knows(&self, s: &Segment) -> bool {
        self.segments
            .get(&s.name)
            .is_some_and(|(e, _)| *e == s.etag)
    }
}

struct DirMeta {
    state: Mutex<State>,
    flushed: Notify,
    /// What it charges to the metadata budget, given back when it goes.
    charged: std::sync::atomic::AtomicU64,
    budget: Arc<MetaBudget>,
}

/// What a directory's state costs with an empty table, and each record
/// (name, record, slot) on average: estimates, names being short.
const DIR_BYTES: u64 = 512;
const RECORD_BYTES: u64 = 192;

impl DirMeta {
    fn new(budget: Arc<MetaBudget>) -> Self {
        budget.charge(DIR_BYTES);
        DirMeta {
            state: Mutex::default(),
            flushed: Notify::new(),
            charged: std::sync::atomic::AtomicU64::new(DIR_BYTES),
            budget,
        }
    }

    /// Charges the table as it is now (called under its state's lock).
    fn account(&self, st: &State) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = DIR_BYTES
            + (st.table.len() + st.pending.len() + st.segments.len()) as u64 * RECORD_BYTES;
        let old = self.charged.swap(now, Relaxed);
        self.budget.recharge(old, now);
    }
}

impl Drop for DirMeta {
    fn drop(&mut self) {
        self.budget
            .release(self.charged.load(std::sync::atomic::Ordering::Relaxed));
    }
}

/// The metadata of every directory this mount has seen: the one owner of
/// the tables, of their segments and of their writes.
pub struct MetaStore {
    client: Arc<dyn ObjectClient>,
    ttl: Ttl,
    window: Duration,
    /// This mount's id in segment names and records (random per mount).
    id: String,
    /// The next segment's sequence number.
    seq: std::sync::atomic::AtomicU64,
    /// Whole tables copied to change them, because a snapshot of the table
    /// was held elsewhere (each costs the directory's size).
    copies: std::sync::atomic::AtomicU64,
    /// The last change's time: changes here never go back in time.
    last_stamp: Mutex<i64>,
    dirs: Mutex<HashMap<DirKey, Arc<DirMeta>>>,
    /// Objects logged as unreadable, so each is logged once.
    bad_logged: Mutex<HashSet<(Arc<str>, String)>>,
    budget: Arc<MetaBudget>,
}

impl MetaStore {
    pub fn new(client: Arc<dyn ObjectClient>, ttl: Ttl, budget: Arc<MetaBudget>) -> Arc<Self> {
        Arc::new(MetaStore {
            budget,
            client,
            ttl,
            window: FLUSH_WINDOW,
            id: format!("{:016x}", fastrand::u64(..)),
            seq: std::sync::atomic::AtomicU64::new(1),
            copies: std::sync::atomic::AtomicU64::new(0),
            last_stamp: Mutex::new(i64::MIN),
            dirs: Mutex::new(HashMap::new()),
            bad_logged: Mutex::new(HashSet::new()),
        })
    }

    fn dir(&self, dir: &Location) -> Arc<DirMeta> {
        let mut dirs = self.dirs.lock().expect("meta lock");
        let key = (dir.bucket.clone(), dir.key.clone());
        if let Some(d) = dirs.get(&key) {
            return d.clone();
        }
        if dirs.len() >= MAX_DIRS {
            dirs.retain(|_, d| {
                let st = d.state.lock().expect("meta dir lock");
                !st.pending.is_empty() || st.flushing || st.scheduled
            });
        }
        dirs.entry(key)
            .or_insert_with(|| Arc::new(DirMeta::new(self.budget.clone())))
            .clone()
    }

    /// Forgets tables with nothing to write (any, the metadata budget
    /// being short: each is read again when needed) until about `bytes`
    /// are given back; returns what was.
    pub fn evict(&self, bytes: u64) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let mut freed = 0;
        self.dirs.lock().expect("meta lock").retain(|_, d| {
            if freed >= bytes {
                return true;
            }
            let busy = {
                let st = d.state.lock().expect("meta dir lock");
                !st.pending.is_empty() || st.flushing || st.scheduled
            };
            if !busy {
                freed += d.charged.load(Relaxed);
            }
            busy
        });
        freed
    }

    fn existing(&self, dir: &Location) -> Option<Arc<DirMeta>> {
        self.dirs
            .lock()
            .expect("meta lock")
            .get(&(dir.bucket.clone(), dir.key.clone()))
            .cloned()
    }

    /// The table of `dir` if its segments were confirmed within the TTL.
    pub fn fresh(&self, dir: &Location) -> Option<Arc<Table>> {
        let d = self.existing(dir)?;
        let st = d.state.lock().expect("meta dir lock");
        self.is_fresh(&st).then(|| st.table.clone())
    }

    /// Whether `d`'s table was confirmed within the TTL. (A bool, not the
    /// table: a snapshot held even briefly makes a concurrent change copy
    /// the whole table.)
    fn is_fresh_dir(&self, d: &DirMeta) -> bool {
        self.is_fresh(&d.state.lock().expect("meta dir lock"))
    }

    fn is_fresh(&self, st: &State) -> bool {
        st.loaded.is_some_and(|at| self.ttl.fresh(at))
    }

    /// The table of `dir` last read, however old (no request): for what
    /// must not wait on the store.
    pub fn known(&self, dir: &Location) -> Option<Arc<Table>> {
        let d = self.existing(dir)?;
        let st = d.state.lock().expect("meta dir lock");
        st.read_once.then(|| st.table.clone())
    }

    /// A complete listing of `dir` showed these metadata objects. When all
    /// are merged already the table is confirmed without a request;
    /// otherwise the next read fetches just the new ones.
    pub fn seen_in_listing(&self, dir: &Location, listed: &[Segment]) {
        let d = self.dir(dir);
        let mut st = d.state.lock().expect("meta dir lock");
        let now = Instant::now();
        if listed.iter().all(|s| st.knows(s)) {
            // Segments compacted away were merged: forgetting their names
            // loses nothing.
            st.segments
                .retain(|name, _| listed.iter().any(|s| s.name == *name));
            st.loaded = Some(now);
            st.read_once = true;
            st.listed = None;
        } else {
            st.loaded = None;
            st.listed = Some((now, listed.to_vec()));
        }
    }

    /// The table of `dir`: from memory within the TTL, else read from the
    /// store (new segments only).
    pub async fn table(&self, dir: &Location) -> FsResult<Arc<Table>> {
        if !has_room(&dir.key) {
            return Ok(Arc::default());
        }
        if let Some(t) = self.fresh(dir) {
            return Ok(t);
        }
        let d = self.dir(dir);
        self.load(dir, &d).await?;
        Ok(d.state.lock().expect("meta dir lock").table.clone())
    }

    /// `look` applied to the table of `dir` (read as [`MetaStore::table`]
    /// does) under the directory's lock, for a look at one name: no
    /// snapshot of the table is handed out, so a change made meanwhile does
    /// not copy the whole table to keep that snapshot intact (thousands of
    /// creates in a large directory, each beside lookups, copied it every
    /// time).
    pub async fn look<R>(&self, dir: &Location, look: impl FnOnce(&Table) -> R) -> FsResult<R> {
        self.ready(dir).await?;
        Ok(self.peek(dir, look))
    }

    /// Reads the table of `dir` unless it was confirmed within the TTL.
    pub async fn ready(&self, dir: &Location) -> FsResult<()> {
        if !has_room(&dir.key) {
            return Ok(());
        }
        let d = self.dir(dir);
        if !self.is_fresh_dir(&d) {
            self.load(dir, &d).await?;
        }
        Ok(())
    }

    /// `look` applied to the table of `dir` as it is in memory, under the
    /// directory's lock (an empty table for one never read).
    pub fn peek<R>(&self, dir: &Location, look: impl FnOnce(&Table) -> R) -> R {
        match self.existing(dir) {
            Some(d) => look(&d.state.lock().expect("meta dir lock").table),
            None => look(&Table::new()),
        }
    }

    /// A directory's table to change: copied first if a snapshot of it is
    /// held (counted: [`MetaStore::table_copies`]).
    fn table_mut<'a>(&self, st: &'a mut State) -> &'a mut Table {
        if Arc::strong_count(&st.table) > 1 {
            self.copies
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Arc::make_mut(&mut st.table)
    }

    /// How many times a change had to copy a whole table (for tests: a
    /// snapshot held across a request makes every change meanwhile pay).
    pub fn table_copies(&self) -> u64 {
        self.copies.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every metadata object of `dir`, listed.
    async fn list_segments(&self, dir: &Location) -> FsResult<Vec<Segment>> {
        let mut params = ListObjectsParams {
            prefix: meta_key(&dir.key),
            delimiter: Some("/".to_string()),
            ..Default::default()
        };
        let mut out = Vec::new();
        loop {
            let page = self.client.list_objects(&dir.bucket, &params).await?;
            for o in page.objects {
                if let Some(name) = o.key.strip_prefix(dir.key.as_str())
                    && is_meta_name(name)
                {
                    out.push(Segment {
                        name: name.to_string(),
                        etag: o.etag,
                        size: o.size,
                    });
                }
            }
            match page.next_continuation_token {
                Some(t) => params.continuation_token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// Reads one metadata object: `None` if it is gone (compacted away).
    async fn fetch(&self, dir: &Location, s: Segment) -> FsResult<Option<(Segment, Table)>> {
        let key = format!("{}{}", dir.key, s.name);
        let got = match self
            .client
            .get_object(&dir.bucket, &key, &Default::default())
            .await
        {
            Ok(got) => got,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let table = parse(&got.body).unwrap_or_else(|why| {
            self.log_bad(dir, &key, &why);
            Table::new()
        });
        let seg = Segment {
            size: got.body.len() as u64,
            etag: got.etag.or(s.etag),
            name: s.name,
        };
        Ok(Some((seg, table)))
    }

    /// Brings `dir`'s table up to the store: lists its segments (or takes
    /// what a listing showed) and merges those not merged yet. Merging is
    /// monotone, so reads that overlap each other or a write lose nothing.
    async fn load(&self, dir: &Location, d: &DirMeta) -> FsResult<()> {
        let mut shown = d.state.lock().expect("meta dir lock").listed.take();
        for round in 0..MAX_RELIST {
            let (at, listed) = match shown.take() {
                Some(s) => s,
                None => (Instant::now(), self.list_segments(dir).await?),
            };
            let wanted: Vec<Segment> = {
                let st = d.state.lock().expect("meta dir lock");
                listed.iter().filter(|s| !st.knows(s)).cloned().collect()
            };
            let fetched: Vec<_> = futures::stream::iter(wanted)
                .map(|s| self.fetch(dir, s))
                .buffer_unordered(FETCH_PARALLEL)
                .collect()
                .await;
            let mut st = d.state.lock().expect("meta dir lock");
            let mut gone = false;
            let mut first_error = None;
            for f in fetched {
                match f {
                    Ok(Some((seg, table))) => {
                        self.table_mut(&mut st).merge(table);
                        st.segments.insert(seg.name, (seg.etag, seg.size));
                        d.account(&st);
                    }
                    Ok(None) => gone = true,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            if !gone || round + 1 == MAX_RELIST {
                st.segments
                    .retain(|name, _| listed.iter().any(|s| s.name == *name));
                st.loaded = Some(at);
                st.read_once = true;
                return Ok(());
            }
            // A compaction deleted what was listed: its merge is newer.
        }
        Ok(())
    }

    fn log_bad(&self, dir: &Location, key: &str, why: &str) {
        let mut logged = self.bad_logged.lock().expect("meta log lock");
        if logged.len() >= MAX_DIRS {
            logged.clear();
        }
        if logged.insert((dir.bucket.clone(), key.to_string())) {
            tracing::warn!(bucket = %dir.bucket, key, error = why, "metadata object unreadable: read as empty, and folded away at the next compaction");
        }
    }

    /// A time for a change made now that follows `after` (the change it
    /// replaces, perhaps by another host with a clock ahead) and every
    /// change made here before.
    fn stamp(&self, after: Option<i64>) -> i64 {
        let mut last = self.last_stamp.lock().expect("stamp lock");
        let t = to_ns(SystemTime::now())
            .max(last.saturating_add(1))
            .max(after.map_or(i64::MIN, |a| a.saturating_add(1)));
        *last = t;
        t
    }

    /// Changes the entry of `name` in `dir` (reading the table first if
    /// this mount never did): `change` gets the entry (`None`: none) and
    /// leaves what is to be kept. The change is visible here at once and
    /// written within [`FLUSH_WINDOW`].
    pub async fn update(
        self: &Arc<Self>,
        dir: &Location,
        name: &str,
        change: impl Fn(&mut Option<MetaEntry>),
    ) -> FsResult<()> {
        if !has_room(&dir.key) {
            let mut entry = None;
            change(&mut entry);
            return match entry.filter(|e| !e.is_default()) {
                Some(_) => Err(FsError::NameTooLong),
                None => Ok(()),
            };
        }
        // What `change` makes of the entry, if that differs from it.
        let changed = |table: &Table| {
            let before = table.get(name).cloned();
            let mut entry = before.clone();
            change(&mut entry);
            let entry = entry.filter(|e| !e.is_default());
            (entry != before).then_some(entry)
        };
        let d = self.dir(dir);
        // A change is made to what the store has now (within the TTL), so
        // that it does not carry back an older state of the entry; one that
        // changes nothing here (a new file with default attributes) asks
        // nothing.
        let no_op = {
            let st = d.state.lock().expect("meta dir lock");
            st.read_once && changed(&st.table).is_none()
        };
        if no_op {
            return Ok(());
        }
        if !self.is_fresh_dir(&d) {
            self.load(dir, &d).await?;
        }
        let schedule = {
            let mut st = d.state.lock().expect("meta dir lock");
            let Some(entry) = changed(&st.table) else {
                return Ok(());
            };
            let record = Record {
                at: self.stamp(st.table.record(name).map(|r| r.at)),
                by: self.id.clone(),
                entry,
            };
            self.table_mut(&mut st)
                .set(name.to_string(), record.clone());
            st.pending.insert(name.to_string(), record);
            d.account(&st);
            st.generation += 1;
            !std::mem::replace(&mut st.scheduled, true)
        };
        if schedule {
            let (store, dir) = (self.clone(), dir.clone());
            tokio::spawn(async move { store.flush_later(dir).await });
        }
        Ok(())
    }

    /// The scheduled write of a directory's changes, retried while it fails.
    async fn flush_later(self: Arc<Self>, dir: Location) {
        let mut wait = self.window;
        let mut retry = FIRST_RETRY;
        loop {
            tokio::time::sleep(wait).await;
            match self.flush(&dir).await {
                Ok(()) => {
                    let Some(d) = self.existing(&dir) else { return };
                    let mut st = d.state.lock().expect("meta dir lock");
                    if st.pending.is_empty() {
                        st.scheduled = false;
                        return;
                    }
                    // Changes made while it was written: one more round.
                    wait = self.window;
                }
                Err(e) => {
                    tracing::warn!(bucket = %dir.bucket, key = %meta_key(&dir.key), error = %e, retry_in = ?retry, "metadata not saved yet");
                    wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// Writes `dir`'s changes now, or waits for the write under way; Ok
    /// once every change made before the call is in the store.
    pub async fn flush(&self, dir: &Location) -> FsResult<()> {
        let Some(d) = self.existing(dir) else {
            return Ok(());
        };
        let target = d.state.lock().expect("meta dir lock").generation;
        loop {
            // Made before the state is looked at: a wake-up in between
            // is not missed.
            let notified = d.flushed.notified();
            let mine = {
                let mut st = d.state.lock().expect("meta dir lock");
                if st.pending.is_empty() || st.saved >= target {
                    return Ok(());
                }
                !std::mem::replace(&mut st.flushing, true)
            };
            if !mine {
                notified.await;
                if let Some(e) = &d.state.lock().expect("meta dir lock").failed {
                    return Err(e.clone());
                }
                continue;
            }
            let result = self.write(dir, &d).await;
            {
                let mut st = d.state.lock().expect("meta dir lock");
                st.flushing = false;
                st.failed = result.as_ref().err().cloned();
            }
            d.flushed.notify_waiters();
            result?;
        }
    }

    /// Writes this mount's pending changes to `dir` as one new segment,
    /// then compacts if its segments call for it.
    async fn write(&self, dir: &Location, d: &DirMeta) -> FsResult<()> {
        let (batch, generation) = {
            let st = d.state.lock().expect("meta dir lock");
            let batch: Table = st.pending.clone().into_iter().collect();
            (batch, st.generation)
        };
        let (name, etag, size) = self.put_segment(dir, &batch).await?;
        {
            let mut st = d.state.lock().expect("meta dir lock");
            st.segments.insert(name, (etag, size));
            st.pending.retain(|n, r| batch.record(n) != Some(r));
            st.saved = generation;
        }
        if let Err(e) = self.compact(dir, d).await {
            // What was written is in the store; merging waits for the
            // next write here or elsewhere.
            tracing::info!(bucket = %dir.bucket, dir = %dir.key, error = %e, "metadata compaction put off");
        }
        Ok(())
    }

    /// Merges the segments [`plan`] picks into one and deletes them.
    async fn compact(&self, dir: &Location, d: &DirMeta) -> FsResult<()> {
        let (known, emptied) = {
            let st = d.state.lock().expect("meta dir lock");
            let known: Vec<(String, u64)> = st
                .segments
                .iter()
                .map(|(n, (_, size))| (n.clone(), *size))
                .collect();
            (known, st.table.is_empty())
        };
        if emptied {
            // Every entry removed (rm -r): the directory keeps no metadata.
            // Its removals go too; one that a segment still on its way could
            // undo names an object that is gone, or a directory made anew.
            let names: Vec<String> = known.into_iter().map(|(n, _)| n).collect();
            {
                let mut st = d.state.lock().expect("meta dir lock");
                for n in &names {
                    st.segments.remove(n);
                }
            }
            return self.delete_segments(dir, &names).await;
        }
        let Some(chosen) = plan(&known) else {
            return Ok(());
        };
        let full = chosen.len() == known.len();
        let merged = if full {
            // Everything known is merged in memory already.
            let st = d.state.lock().expect("meta dir lock");
            let oldest = to_ns(SystemTime::now()) - TOMBSTONE_KEEP.as_nanos() as i64;
            st.table
                .records()
                .filter(|(_, r)| r.entry.is_some() || r.at > oldest)
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect::<Table>()
        } else {
            let wanted: Vec<Segment> = chosen
                .iter()
                .map(|n| Segment {
                    name: n.clone(),
                    etag: None,
                    size: 0,
                })
                .collect();
            let fetched: Vec<_> = futures::stream::iter(wanted)
                .map(|s| self.fetch(dir, s))
                .buffer_unordered(FETCH_PARALLEL)
                .collect()
                .await;
            let mut merged = Table::new();
            for f in fetched {
                match f? {
                    Some((_, table)) => merged.merge(table),
                    // Another mount compacted it: nothing to do here.
                    None => return Ok(()),
                }
            }
            merged
        };
        let (name, etag, size) = self.put_segment(dir, &merged).await?;
        {
            let mut st = d.state.lock().expect("meta dir lock");
            // What the merge holds of this mount's changes is saved.
            st.pending.retain(|n, r| merged.record(n) != Some(r));
            for n in &chosen {
                st.segments.remove(n);
            }
            st.segments.insert(name, (etag, size));
        }
        drop(merged);
        // Only once the merge is in place do its sources go.
        self.delete_segments(dir, &chosen).await
    }

    /// Writes `records` as a new segment of `dir`, named by this mount and
    /// its next sequence number; returns its name, ETag and size.
    async fn put_segment(
        &self,
        dir: &Location,
        table: &Table,
    ) -> FsResult<(String, Option<String>, u64)> {
        let name = format!(
            "{SEGMENT_PREFIX}{}.{:016x}",
            self.id,
            self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let body = render(table);
        let size = body.len() as u64;
        let out = self
            .client
            .put_object_typed(
                &dir.bucket,
                &format!("{}{name}", dir.key),
                body,
                "application/json",
            )
            .await?;
        Ok((name, out.etag, size))
    }

    /// Deletes segments `names` of `dir` (no request for none). One left
    /// behind is an error: after a merge it only merges to the same, but
    /// in a removed directory it would keep the directory there.
    async fn delete_segments(&self, dir: &Location, names: &[String]) -> FsResult<()> {
        let ids: Vec<ObjectIdentifier> = names
            .iter()
            .map(|n| ObjectIdentifier::key(format!("{}{n}", dir.key)))
            .collect();
        for batch in ids.chunks(limits::MAX_DELETE_OBJECTS) {
            let out = self.client.delete_objects(&dir.bucket, batch).await?;
            if let Some(e) = out.errors.first() {
                return Err(FsError::Partial(format!(
                    "{} of {} metadata segments not deleted, first {}: {} {}",
                    out.errors.len(),
                    batch.len(),
                    e.key,
                    e.code,
                    e.message
                )));
            }
        }
        Ok(())
    }

    /// Writes every directory's changes (unmount).
    pub async fn flush_all(&self) -> FsResult<()> {
        let dirs: Vec<Location> = self
            .dirs
            .lock()
            .expect("meta lock")
            .iter()
            .filter(|(_, d)| !d.state.lock().expect("meta dir lock").pending.is_empty())
            .map(|((bucket, key), _)| Location {
                bucket: bucket.clone(),
                key: key.clone(),
            })
            .collect();
        let mut first_error = None;
        for dir in dirs {
            if let Err(e) = self.flush(&dir).await {
                tracing::error!(bucket = %dir.bucket, key = %meta_key(&dir.key), error = %e, "metadata not saved at unmount");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Writes the changes of every directory under `prefix` (before the
    /// directory is moved).
    pub async fn flush_under(&self, bucket: &str, prefix: &str) -> FsResult<()> {
        let dirs: Vec<Location> = self
            .dirs
            .lock()
            .expect("meta lock")
            .keys()
            .filter(|(b, k)| b.as_ref() == bucket && k.starts_with(prefix))
            .map(|(bucket, key)| Location {
                bucket: bucket.clone(),
                key: key.clone(),
            })
            .collect();
        for dir in dirs {
            self.flush(&dir).await?;
        }
        Ok(())
    }

    /// Directories under `prefix` are gone (rmdir, a directory moved):
    /// forget their tables. Their unsaved changes go with them.
    pub fn forget_under(&self, bucket: &str, prefix: &str) {
        self.dirs
            .lock()
            .expect("meta lock")
            .retain(|(b, k), _| !(b.as_ref() == bucket && k.starts_with(prefix)));
    }

    /// Directory `dir` is removed: forgets its table and deletes its
    /// metadata objects `names` (as the check that it is empty listed them).
    pub async fn remove_dir(&self, dir: &Location, names: &[String]) -> FsResult<()> {
        self.forget_under(&dir.bucket, &dir.key);
        self.delete_segments(dir, names).await
    }
}

/// Which segments (by name, with their sizes) to merge: the smallest ones
/// while a segment is no larger than all smaller ones together (a binary
/// counter: each merge at least doubles, so there are about log2(largest /
/// smallest) segments and each change is rewritten about as often), or
/// all of them while a format-1 object is among them (its migration).
pub fn plan(segments: &[(String, u64)]) -> Option<Vec<String>> {
    if segments.len() < 2 {
        return None;
    }
    let mut by_size: Vec<&(String, u64)> = segments.iter().collect();
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let names = |from: usize| by_size[from..].iter().map(|(n, _)| n.clone()).collect();
    if segments.iter().any(|(n, _)| n == META_NAME) {
        return Some(names(0));
    }
    let mut tail: u64 = by_size.iter().map(|(_, s)| s).sum();
    for (i, (_, size)) in by_size.iter().enumerate().take(by_size.len() - 1) {
        tail -= size;
        if *size <= tail {
            return Some(names(i));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: i64, by: &str, entry: Option<MetaEntry>) -> Record {
        Record {
            at,
            by: by.into(),
            entry,
        }
    }

    #[test]
    fn the_format_round_trips_and_leaves_defaults_out() {
        let link = MetaEntry {
            kind: EntryType::Symlink,
            target: Some("../lib".into()),
            etag: Some("\"abc\"".into()),
            ..Default::default()
        };
        let run = MetaEntry {
            mode: Some(0o755),
            mtime_ns: Some(-1_500_000_000),
            ..Default::default()
        };
        let r: Table = [
            ("link".into(), rec(5, "m1", Some(link))),
            ("run.sh".into(), rec(7, "m2", Some(run))),
            ("gone".into(), rec(9, "m1", None)),
        ]
        .into_iter()
        .collect();
        let body = render(&r);
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.starts_with(r#"{"format":"bladefs-dir-meta","version":2,"entries":{"#));
        assert!(
            text.contains(r#""run.sh":{"at":7,"by":"m2","mode":493,"mtime_ns":-1500000000}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""gone":{"at":9,"by":"m1","deleted":true}"#),
            "{text}"
        );
        assert_eq!(parse(&body).unwrap(), r);
        assert_eq!(r.entries().len(), 2);
        assert!(r.get("gone").is_none() && r.record("gone").is_some());
        assert_eq!(
            from_ns(-1_500_000_000),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        assert_eq!(to_ns(from_ns(-1_500_000_000)), -1_500_000_000);
    }

    #[test]
    fn other_formats_and_versions_are_refused_and_unknown_fields_ignored() {
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"format":"other","version":2,"entries":{}}"#).is_err());
        assert!(parse(br#"{"format":"bladefs-dir-meta","version":3,"entries":{}}"#).is_err());
        let t = parse(
            br#"{"format":"bladefs-dir-meta","version":2,"later":0,"entries":{"a":{"at":1,"by":"x","type":"fifo","xattr":{}}}}"#,
        )
        .unwrap();
        assert_eq!(t.get("a").unwrap().kind, EntryType::Fifo);
    }

    #[test]
    fn format_one_reads_as_older_than_any_change() {
        let mut v1 = Entries::new();
        v1.insert(
            "f".into(),
            MetaEntry {
                mode: Some(0o600),
                ..Default::default()
            },
        );
        let mut r = parse(&render_v1(&v1)).unwrap();
        assert_eq!(r.entries(), v1);
        r.merge(
            [("f".into(), rec(i64::MIN + 1, "m", None))]
                .into_iter()
                .collect(),
        );
        assert!(r.is_empty());
    }

    /// Last change wins, by time then mount id, in whatever order and
    /// however often segments are merged.
    #[test]
    fn merging_is_order_free_and_idempotent() {
        let e = |m: u16| {
            Some(MetaEntry {
                mode: Some(m),
                ..Default::default()
            })
        };
        let segs: Vec<Table> = vec![
            [
                ("a".into(), rec(1, "x", e(0o600))),
                ("b".into(), rec(5, "x", None)),
            ]
            .into_iter()
            .collect(),
            [
                ("a".into(), rec(2, "y", e(0o700))),
                ("b".into(), rec(4, "y", e(0o711))),
            ]
            .into_iter()
            .collect(),
            [
                ("a".into(), rec(2, "x", e(0o640))),
                ("c".into(), rec(1, "y", e(0o755))),
            ]
            .into_iter()
            .collect(),
        ];
        let mut want: Option<Table> = None;
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]] {
            let mut t = Table::new();
            for i in order {
                t.merge(segs[i].clone());
                t.merge(segs[i].clone());
            }
            assert_eq!(
                t.get("a").unwrap().mode,
                Some(0o700),
                "same time: the greater mount id"
            );
            assert!(t.get("b").is_none(), "the later removal");
            assert_eq!(t.get("c").unwrap().mode, Some(0o755));
            assert_eq!(t.entries().len(), 2);
            if let Some(w) = &want {
                assert_eq!(w, &t);
            }
            want = Some(t);
        }
    }

    #[test]
    fn compaction_merges_alike_sizes_like_a_binary_counter() {
        let s = |n: &str, size| (n.to_string(), size);
        assert_eq!(plan(&[s("a", 10)]), None);
        assert_eq!(plan(&[s("big", 1000), s("t", 10)]), None);
        let mut p = plan(&[s("big", 1000), s("t1", 10), s("t2", 10)]).unwrap();
        p.sort();
        assert_eq!(p, ["t1", "t2"]);
        assert_eq!(plan(&[s("big", 1000), s("m", 20), s("t", 10)]), None);
        assert_eq!(plan(&[s("a", 10), s("b", 10)]).unwrap().len(), 2);
        // A format-1 object is folded in at the first chance.
        let p = plan(&[s(META_NAME, 5000), s("t", 10)]).unwrap();
        assert_eq!(p.len(), 2);
        // Counting up: a change at a time into a large directory keeps
        // few segments and rewrites each change a few times only.
        let mut segs = vec![s("base", 1_000_000)];
        let mut rewritten = 0;
        for i in 0..1000 {
            segs.push(s(&format!("n{i}"), 100));
            if let Some(chosen) = plan(&segs) {
                let total: u64 = segs
                    .iter()
                    .filter(|(n, _)| chosen.contains(n))
                    .map(|(_, z)| z)
                    .sum();
                rewritten += total;
                segs.retain(|(n, _)| !chosen.contains(n));
                segs.push(s(&format!("m{i}"), total));
            }
            assert!(segs.len() <= 12, "{} segments", segs.len());
        }
        assert!(rewritten < 1000 * 100 * 12, "{rewritten}");
        assert!(
            segs.iter().any(|(n, _)| n == "base"),
            "the base never rewritten"
        );
    }

    #[test]
    fn metadata_names_are_recognised_and_sorted_together() {
        assert!(is_meta_name(META_NAME));
        assert!(is_meta_name(
            ".bladefs-meta.0123456789abcdef.0000000000000001"
        ));
        assert!(!is_meta_name(".bladefs-metadata"));
        assert!(!past_meta(
            ".bladefs-meta.ffffffffffffffff.ffffffffffffffff"
        ));
        assert!(past_meta(".bladefs-metb"));
        assert!(past_meta("a"));
        assert!(!past_meta(".a"));
    }

    #[test]
    fn an_entry_applies_to_the_object_it_was_written_for() {
        let e = MetaEntry {
            mode: Some(0o700),
            etag: Some("\"1\"".into()),
            ..Default::default()
        };
        assert!(e.applies(Kind::File, Some("\"1\""), false));
        assert!(!e.applies(Kind::File, Some("\"2\""), false));
        assert!(e.applies(Kind::File, Some("\"2\""), true));
        assert!(!e.applies(Kind::Dir, None, false));
        let unsaved = MetaEntry {
            mode: Some(0o700),
            ..Default::default()
        };
        assert!(!unsaved.applies(Kind::File, None, false));
        let dir = MetaEntry {
            kind: EntryType::Dir,
            mode: Some(0o700),
            ..Default::default()
        };
        assert!(dir.applies(Kind::Dir, None, false));
        assert!(!dir.applies(Kind::File, Some("\"1\""), false));
    }
}
