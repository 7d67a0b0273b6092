//! POSIX attributes the store cannot hold (it keeps no user metadata):
//! one small JSON object per directory, `DIR/.bladefs-meta`, with an entry
//! for each name that needs one: its kind when it is no regular file
//! (symlink and target, fifo, socket, device and rdev), mode, owner, group
//! and mtime. A directory without such an object costs nothing more than
//! before; one with it costs one GET per TTL, and a listing that shows the
//! object unchanged (same ETag) costs no GET at all.
//!
//! Rules (also in `docs/SEMANTICS.md`, which documents the format):
//! - an entry of a file applies while the object has the ETag recorded in
//!   the entry (or while the file is being written here): an object that
//!   another client replaced is a plain file again, with the defaults and
//!   its own LastModified;
//! - an entry of a directory applies while the name is a directory;
//! - the object is written before its entry (symlink, mknod, rename), so a
//!   crash in between leaves a default attribute, never a lost file;
//! - changes to one directory are coalesced for [`FLUSH_WINDOW`] and go
//!   out as one PUT (or a DELETE once no entry is left), at once on fsync,
//!   close and unmount; between two mounts the last writer of a directory
//!   wins, except that a flush first re-reads an object older than the TTL
//!   and merges this mount's changes into it;
//! - an object that cannot be parsed is logged once and read as empty.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::cache::Ttl;
use super::error::{FsError, FsResult};
use super::inode::{Kind, Location};
use crate::s3::limits::MAX_KEY_LEN;
use crate::s3::{ErrorKind, GetObjectParams, ObjectClient};

/// The reserved name of a directory's metadata object, hidden from
/// listings and refused as a file name.
pub const META_NAME: &str = ".bladefs-meta";
const FORMAT: &str = "bladefs-dir-meta";
const VERSION: u32 = 1;

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

pub type Table = BTreeMap<String, MetaEntry>;

#[derive(Serialize, Deserialize)]
struct Document {
    format: String,
    version: u32,
    entries: Table,
}

/// Reads a metadata object. Unknown fields are ignored (a later minor
/// version may add some); another format or a later major version is an
/// error.
pub fn parse(body: &[u8]) -> Result<Table, String> {
    let doc: Document = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if doc.format != FORMAT {
        return Err(format!("format {:?}, not {FORMAT:?}", doc.format));
    }
    if doc.version != VERSION {
        return Err(format!(
            "version {} (this bladefs reads {VERSION})",
            doc.version
        ));
    }
    Ok(doc.entries)
}

pub fn render(entries: &Table) -> Bytes {
    let doc = Document {
        format: FORMAT.to_string(),
        version: VERSION,
        entries: entries.clone(),
    };
    Bytes::from(serde_json::to_vec(&doc).expect("a table always serialises"))
}

/// The key of the metadata object of directory `dir` (a prefix).
pub fn meta_key(dir: &str) -> String {
    format!("{dir}{META_NAME}")
}

/// Whether directory `dir` can have a metadata object: not one whose key
/// is so long that the object's would pass S3's key limit. Its entries
/// keep the defaults; symlinks and special files cannot be made there.
pub fn has_room(dir: &str) -> bool {
    dir.len() + META_NAME.len() <= MAX_KEY_LEN
}

type DirKey = (Arc<str>, String);

#[derive(Default)]
struct State {
    /// When the table was last read from, or written to, the store.
    loaded: Option<Instant>,
    /// The ETag of the object the table was read from (`None`: absent).
    etag: Option<String>,
    table: Arc<Table>,
    /// Changes made here and not yet in the store, to be merged into the
    /// store's table when it is read again before they are written.
    pending: BTreeMap<String, Option<MetaEntry>>,
    /// Counts changes, so a flush knows whether more came while it ran.
    generation: u64,
    /// The generation the store has.
    saved: u64,
    /// Writes done: a read that began before one is older than the table.
    writes: u64,
    scheduled: bool,
    flushing: bool,
    /// Why the last flush failed, until one succeeds.
    failed: Option<FsError>,
}

#[derive(Default)]
struct DirMeta {
    state: Mutex<State>,
    flushed: Notify,
}

/// The metadata of every directory this mount has seen: the one owner of
/// the tables and of their writes.
pub struct MetaStore {
    client: Arc<dyn ObjectClient>,
    ttl: Ttl,
    window: Duration,
    dirs: Mutex<HashMap<DirKey, Arc<DirMeta>>>,
    /// Objects logged as unreadable, so each is logged once.
    bad_logged: Mutex<HashSet<DirKey>>,
}

impl MetaStore {
    pub fn new(client: Arc<dyn ObjectClient>, ttl: Ttl) -> Arc<Self> {
        Arc::new(MetaStore {
            client,
            ttl,
            window: FLUSH_WINDOW,
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
        dirs.entry(key).or_default().clone()
    }

    fn existing(&self, dir: &Location) -> Option<Arc<DirMeta>> {
        self.dirs
            .lock()
            .expect("meta lock")
            .get(&(dir.bucket.clone(), dir.key.clone()))
            .cloned()
    }

    /// The table of `dir` if it was read within the TTL.
    pub fn fresh(&self, dir: &Location) -> Option<Arc<Table>> {
        let d = self.existing(dir)?;
        let st = d.state.lock().expect("meta dir lock");
        st.loaded
            .filter(|at| self.ttl.fresh(*at))
            .map(|_| st.table.clone())
    }

    /// The table of `dir` last read, however old (no request): for what
    /// must not wait on the store.
    pub fn known(&self, dir: &Location) -> Option<Arc<Table>> {
        let d = self.existing(dir)?;
        let st = d.state.lock().expect("meta dir lock");
        st.loaded.map(|_| st.table.clone())
    }

    /// A listing of `dir` showed its metadata object with `etag` (`None`:
    /// a complete listing without one). The same ETag as the table's
    /// confirms it without a GET; another one makes the next read fetch it.
    pub fn seen_in_listing(&self, dir: &Location, etag: Option<&str>) {
        let d = self.dir(dir);
        let mut st = d.state.lock().expect("meta dir lock");
        let unchanged = if st.loaded.is_some() {
            st.etag.as_deref() == etag
        } else {
            etag.is_none() && st.pending.is_empty()
        };
        st.loaded = unchanged.then(Instant::now);
    }

    /// The table of `dir`: from memory within the TTL, else read from the
    /// store (a conditional GET when one was read before).
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

    /// Reads the object of `dir` into its table (this mount's unsaved
    /// changes kept on top).
    async fn load(&self, dir: &Location, d: &DirMeta) -> FsResult<()> {
        let (known, writes) = {
            let st = d.state.lock().expect("meta dir lock");
            (st.loaded.and(st.etag.clone()), st.writes)
        };
        let key = meta_key(&dir.key);
        let params = GetObjectParams {
            if_none_match: known,
            ..Default::default()
        };
        let remote = match self.client.get_object(&dir.bucket, &key, &params).await {
            Ok(out) => Some((out.etag, out.body)),
            Err(e) if e.kind() == ErrorKind::NotModified => {
                d.state.lock().expect("meta dir lock").loaded = Some(Instant::now());
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let (etag, table) = match remote {
            None => (None, Table::new()),
            Some((etag, body)) => match parse(&body) {
                Ok(t) => (etag, t),
                Err(why) => {
                    self.log_bad(dir, &why);
                    (etag, Table::new())
                }
            },
        };
        let mut st = d.state.lock().expect("meta dir lock");
        if st.writes != writes {
            // This mount wrote the object while it was read: what was read
            // is older than the table, which has everything written since.
            return Ok(());
        }
        let mut table = table;
        for (name, change) in &st.pending {
            match change {
                Some(e) => table.insert(name.clone(), e.clone()),
                None => table.remove(name),
            };
        }
        st.table = Arc::new(table);
        st.etag = etag;
        st.loaded = Some(Instant::now());
        Ok(())
    }

    fn log_bad(&self, dir: &Location, why: &str) {
        let mut logged = self.bad_logged.lock().expect("meta log lock");
        if logged.len() >= MAX_DIRS {
            logged.clear();
        }
        if logged.insert((dir.bucket.clone(), dir.key.clone())) {
            tracing::warn!(bucket = %dir.bucket, key = %meta_key(&dir.key), error = why, "metadata object unreadable: its directory shows default attributes, and the next change here replaces it");
        }
    }

    /// Changes the entry of `name` in `dir` (reading the table first if
    /// this mount never did): `change` gets the entry (`None`: none) and
    /// leaves what is to be kept. The change is visible here at once and
    /// written within [`FLUSH_WINDOW`].
    pub async fn update(
        self: &Arc<Self>,
        dir: &Location,
        name: &str,
        change: impl FnOnce(&mut Option<MetaEntry>),
    ) -> FsResult<()> {
        if !has_room(&dir.key) {
            let mut entry = None;
            change(&mut entry);
            return match entry.filter(|e| !e.is_default()) {
                Some(_) => Err(FsError::NameTooLong),
                None => Ok(()),
            };
        }
        let d = self.dir(dir);
        let never_read = d.state.lock().expect("meta dir lock").loaded.is_none();
        if never_read {
            self.load(dir, &d).await?;
        }
        let schedule = {
            let mut st = d.state.lock().expect("meta dir lock");
            let mut entry = st.table.get(name).cloned();
            let before = entry.clone();
            change(&mut entry);
            let entry = entry.filter(|e| !e.is_default());
            if entry == before {
                return Ok(());
            }
            let table = Arc::make_mut(&mut st.table);
            match &entry {
                Some(e) => table.insert(name.to_string(), e.clone()),
                None => table.remove(name),
            };
            st.pending.insert(name.to_string(), entry);
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
            let stale = {
                let mut st = d.state.lock().expect("meta dir lock");
                if st.pending.is_empty() || st.saved >= target {
                    return Ok(());
                }
                if st.flushing {
                    None
                } else {
                    st.flushing = true;
                    Some(!st.loaded.is_some_and(|at| self.ttl.fresh(at)))
                }
            };
            let Some(stale) = stale else {
                notified.await;
                if let Some(e) = &d.state.lock().expect("meta dir lock").failed {
                    return Err(e.clone());
                }
                continue;
            };
            let result = self.write(dir, &d, stale).await;
            {
                let mut st = d.state.lock().expect("meta dir lock");
                st.flushing = false;
                st.failed = result.as_ref().err().cloned();
            }
            d.flushed.notify_waiters();
            result?;
        }
    }

    /// One write of the table (re-read first when `stale`, so another
    /// mount's changes since are kept where this mount made none).
    async fn write(&self, dir: &Location, d: &DirMeta, stale: bool) -> FsResult<()> {
        if stale {
            self.load(dir, d).await?;
        }
        let (table, generation) = {
            let st = d.state.lock().expect("meta dir lock");
            (st.table.clone(), st.generation)
        };
        let key = meta_key(&dir.key);
        let etag = if table.is_empty() {
            self.client.delete_object(&dir.bucket, &key, None).await?;
            None
        } else {
            self.client
                .put_object_typed(&dir.bucket, &key, render(&table), "application/json")
                .await?
                .etag
        };
        let mut st = d.state.lock().expect("meta dir lock");
        st.etag = etag;
        st.loaded = Some(Instant::now());
        st.saved = generation;
        st.writes += 1;
        if st.generation == generation {
            st.pending.clear();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_round_trips_and_leaves_defaults_out() {
        let mut t = Table::new();
        t.insert(
            "link".into(),
            MetaEntry {
                kind: EntryType::Symlink,
                target: Some("../lib".into()),
                etag: Some("\"abc\"".into()),
                ..Default::default()
            },
        );
        t.insert(
            "run.sh".into(),
            MetaEntry {
                mode: Some(0o755),
                mtime_ns: Some(-1_500_000_000),
                ..Default::default()
            },
        );
        let body = render(&t);
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.starts_with(r#"{"format":"bladefs-dir-meta","version":1,"entries":{"#));
        assert!(
            text.contains(r#""run.sh":{"mode":493,"mtime_ns":-1500000000}"#),
            "{text}"
        );
        assert_eq!(parse(&body).unwrap(), t);
        assert_eq!(
            from_ns(-1_500_000_000),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        assert_eq!(to_ns(from_ns(-1_500_000_000)), -1_500_000_000);
    }

    #[test]
    fn other_formats_and_versions_are_refused_and_unknown_fields_ignored() {
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"format":"other","version":1,"entries":{}}"#).is_err());
        assert!(parse(br#"{"format":"bladefs-dir-meta","version":2,"entries":{}}"#).is_err());
        let t = parse(
            br#"{"format":"bladefs-dir-meta","version":1,"later":0,"entries":{"a":{"type":"fifo","xattr":{}}}}"#,
        )
        .unwrap();
        assert_eq!(t["a"].kind, EntryType::Fifo);
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
