//! History as files, on buckets with versioning Enabled or Suspended: two
//! hidden, read-only directories at the root of each bucket the mount shows.
//!
//! - `.versions/PATH/` of a file (current or deleted) holds one file per
//!   version, named by its LastModified time in UTC with milliseconds
//!   (`2026-11-24T10:15:30.123Z`, then `~2`, `~3` for versions of the same
//!   millisecond); a delete marker is an empty file named `TIME.deleted`.
//!   `.versions/DIR/` lists the names below DIR that have any version,
//!   deleted ones included.
//! - `.snapshots/TIME/` is the tree as it was at TIME (any RFC 3339 time):
//!   each key shows its newest version not after TIME, unless that is a
//!   delete marker. `.snapshots` itself lists nothing.
//!
//! Every listing is ListObjectVersions with the directory's prefix and
//! delimiter `/`, paginated: no request per entry, and the attributes of
//! every entry come from the listing. Listings are cached under the
//! metadata TTL, and a name is looked up in its parent's cached listing
//! before the store is asked (then with the name as prefix: one page in
//! the usual case). Reads are ranged GETs of the version's id, so they are
//! never torn by later writes. Names of the two directories shadow keys of
//! the same name at the bucket root (the options rename them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::{StreamExt, TryStreamExt};
use lru::LruCache;

use super::cache::{DirEntry, Ttl};
use super::error::{FsError, FsResult};
use super::inode::{Kind, Location, Stat, View, valid_name};
use crate::s3::{ListVersionsOutput, ListVersionsParams, ObjectClient, ObjectVersion};

/// Default names of the two directories (options `--versions-dir`,
/// `--snapshots-dir`).
pub const DEFAULT_VERSIONS_DIR: &str = ".versions";
pub const DEFAULT_SNAPSHOTS_DIR: &str = ".snapshots";

/// One entry of a history directory: what the kernel sees, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistEntry {
    pub name: Arc<str>,
    pub kind: Kind,
    pub stat: Stat,
    /// A prefix for directories; the file's key for a file's versions and
    /// for a version.
    pub key: String,
    pub view: View,
}

impl HistEntry {
    pub fn dir_entry(&self) -> DirEntry {
        DirEntry {
            name: self.name.clone(),
            kind: self.kind,
            stat: self.stat.clone(),
        }
    }

    pub fn location(&self, bucket: &Arc<str>) -> Location {
        Location {
            bucket: bucket.clone(),
            key: self.key.clone(),
        }
    }
}

/// `2026-11-24T10:15:30.123Z`: sorts as the times do.
pub fn time_name(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

/// A snapshot time: any RFC 3339 time (`2026-11-24T10:00:00Z`,
/// `2026-11-24T10:00:00.5+01:00`).
pub fn parse_time(name: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(name, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// The files of `.versions/KEY/`, oldest first, from the versions of one
/// key as listed (newest first).
pub fn name_versions(key: &str, newest_first: &[ObjectVersion]) -> Vec<HistEntry> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut out = Vec::with_capacity(newest_first.len());
    for v in newest_first.iter().rev() {
        let Some(id) = v.version_id.as_deref() else {
            continue;
        };
        let at = v.last_modified.unwrap_or(SystemTime::UNIX_EPOCH);
        let base = time_name(at);
        let n = seen.entry(base.clone()).or_insert(0);
        *n += 1;
        let mut name = base;
        if *n > 1 {
            name.push_str(&format!("~{n}"));
        }
        if v.is_delete_marker {
            name.push_str(".deleted");
        }
        out.push(HistEntry {
            name: Arc::from(name.as_str()),
            kind: Kind::File,
            stat: Stat {
                size: if v.is_delete_marker { 0 } else { v.size },
                mtime: at,
                etag: v.etag.clone(),
            },
            key: key.to_string(),
            view: View::Version {
                id: Arc::from(id),
                marker: v.is_delete_marker,
            },
        });
    }
    out
}

/// The version of a key that was current at `at`, from its versions as
/// listed (newest first): `None` if it did not exist then (no version yet,
/// or a delete marker).
pub fn current_at(newest_first: &[ObjectVersion], at: SystemTime) -> Option<&ObjectVersion> {
    newest_first
        .iter()
        .find(|v| v.last_modified.unwrap_or(SystemTime::UNIX_EPOCH) <= at)
        .filter(|v| !v.is_delete_marker && v.version_id.is_some())
}

/// Pages of ListObjectVersions under `prefix` with delimiter `/`, handed
/// to `each` until it returns false or the listing ends.
async fn scan(
    client: &dyn ObjectClient,
    bucket: &str,
    prefix: &str,
    each: impl FnMut(ListVersionsOutput) -> bool,
) -> FsResult<()> {
    scan_with(client, bucket, prefix, Some("/"), each).await
}

async fn scan_with(
    client: &dyn ObjectClient,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    mut each: impl FnMut(ListVersionsOutput) -> bool,
) -> FsResult<()> {
    let mut params = ListVersionsParams {
        prefix: prefix.to_string(),
        delimiter: delimiter.map(str::to_string),
        ..Default::default()
    };
    loop {
        let page = client.list_object_versions(bucket, &params).await?;
        let next = (
            page.next_key_marker.clone(),
            page.next_version_id_marker.clone(),
        );
        if !each(page) {
            return Ok(());
        }
        match next {
            (Some(k), v) => {
                params.key_marker = Some(k);
                params.version_id_marker = v.filter(|v| !v.is_empty());
            }
            _ => return Ok(()),
        }
    }
}

/// Versions grouped by key as a listing delivers them (a key's versions
/// are contiguous, newest first, possibly across pages).
#[derive(Default)]
struct Grouper {
    key: Option<String>,
    versions: Vec<ObjectVersion>,
}

impl Grouper {
    /// Adds one version; returns the previous key's versions when a new
    /// key starts.
    fn push(&mut self, v: ObjectVersion) -> Option<(String, Vec<ObjectVersion>)> {
        if self.key.as_deref() == Some(v.key.as_str()) {
            self.versions.push(v);
            return None;
        }
        let done = self.take();
        self.key = Some(v.key.clone());
        self.versions.push(v);
        done
    }

    fn take(&mut self) -> Option<(String, Vec<ObjectVersion>)> {
        let key = self.key.take()?;
        Some((key, std::mem::take(&mut self.versions)))
    }
}

/// The names of the sub-prefixes a page lists below `prefix`.
fn add_subdirs(prefix: &str, common_prefixes: Vec<String>, dirs: &mut BTreeSet<String>) {
    for p in common_prefixes {
        if let Some(name) = p.strip_prefix(prefix).and_then(|r| r.strip_suffix('/'))
            && valid_name(name)
        {
            dirs.insert(name.to_string());
        }
    }
}

/// `.versions/DIR/`: every name below `prefix` with any version (as a
/// directory of its versions), and every sub-prefix. A name that is both a
/// key and a prefix is the directory, as in the live tree.
pub async fn list_history(
    client: &dyn ObjectClient,
    bucket: &str,
    prefix: &str,
    dir_time: SystemTime,
) -> FsResult<Vec<HistEntry>> {
    let mut files: BTreeMap<String, SystemTime> = BTreeMap::new();
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    scan(client, bucket, prefix, |page| {
        for v in page.versions {
            let Some(rel) = v.key.strip_prefix(prefix) else {
                continue;
            };
            if !valid_name(rel) || super::meta::is_meta_name(rel) {
                continue;
            }
            let at = v.last_modified.unwrap_or(SystemTime::UNIX_EPOCH);
            let newest = files.entry(rel.to_string()).or_insert(at);
            *newest = (*newest).max(at);
        }
        add_subdirs(prefix, page.common_prefixes, &mut dirs);
        true
    })
    .await?;
    let mut out: Vec<HistEntry> = dirs
        .iter()
        .map(|name| history_dir(prefix, name, dir_time))
        .collect();
    for (name, newest) in files {
        if !dirs.contains(&name) {
            out.push(versions_dir(prefix, &name, newest));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A directory entry of history.
fn dir(name: &str, key: String, mtime: SystemTime, view: View) -> HistEntry {
    HistEntry {
        name: Arc::from(name),
        kind: Kind::Dir,
        stat: Stat {
            size: 0,
            mtime,
            etag: None,
        },
        key,
        view,
    }
}

fn history_dir(prefix: &str, name: &str, dir_time: SystemTime) -> HistEntry {
    dir(name, format!("{prefix}{name}/"), dir_time, View::History)
}

fn versions_dir(prefix: &str, name: &str, newest: SystemTime) -> HistEntry {
    dir(name, format!("{prefix}{name}"), newest, View::VersionsOf)
}

fn snapshot_dir(prefix: &str, name: &str, at: SystemTime) -> HistEntry {
    dir(name, format!("{prefix}{name}/"), at, View::Snapshot { at })
}

fn snapshot_file(key: &str, name: &str, v: &ObjectVersion) -> HistEntry {
    HistEntry {
        name: Arc::from(name),
        kind: Kind::File,
        stat: Stat {
            size: v.size,
            mtime: v.last_modified.unwrap_or(SystemTime::UNIX_EPOCH),
            etag: v.etag.clone(),
        },
        key: key.to_string(),
        view: View::Version {
            id: Arc::from(v.version_id.as_deref().unwrap_or("null")),
            marker: false,
        },
    }
}

/// `.versions/KEY/`: the versions of exactly `key`, oldest first. Keys
/// that only start with `key` end the scan (they sort after it), and
/// `key/...` is folded into one prefix by the delimiter.
pub async fn list_versions_of(
    client: &dyn ObjectClient,
    bucket: &str,
    key: &str,
) -> FsResult<Vec<HistEntry>> {
    let mut mine = Vec::new();
    scan(client, bucket, key, |page| {
        let mut past = false;
        for v in page.versions {
            if v.key == key {
                mine.push(v);
            } else {
                past = true;
            }
        }
        !past
    })
    .await?;
    Ok(name_versions(key, &mine))
}

/// Whether anything below `dir` (a prefix) existed at `at`: the keys
/// below it are walked, every depth, until one had a version then that
/// was not a delete marker. One page when the directory existed then; its
/// whole history, page by page, when it did not.
async fn existed_at(
    client: &dyn ObjectClient,
    bucket: &str,
    dir: &str,
    at: SystemTime,
) -> FsResult<bool> {
    let mut group = Grouper::default();
    let mut found = false;
    scan_with(client, bucket, dir, None, |page| {
        for v in page.versions {
            if let Some((_, versions)) = group.push(v) {
                found |= current_at(&versions, at).is_some();
            }
        }
        !found
    })
    .await?;
    if let Some((_, versions)) = group.take() {
        found |= current_at(&versions, at).is_some();
    }
    Ok(found)
}

/// Subdirectories checked at once for a snapshot listing.
const DIRS_CHECKED_AT_ONCE: usize = 8;

/// `.snapshots/TIME/DIR/`: each key below `prefix` as it was at `at`, and
/// the sub-prefixes with anything in them then (one more listing each, 8
/// at a time: a directory made after TIME is not shown, so that `cp -r`
/// of a snapshot into the tree it shows does not find its own copy).
/// Memory: one entry per name of the directory (a key's versions are let
/// go once the next key starts).
pub async fn list_snapshot(
    client: &dyn ObjectClient,
    bucket: &str,
    prefix: &str,
    at: SystemTime,
) -> FsResult<Vec<HistEntry>> {
    let mut files: BTreeMap<String, HistEntry> = BTreeMap::new();
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    let mut group = Grouper::default();
    let settle = |files: &mut BTreeMap<String, HistEntry>,
                  (key, versions): (String, Vec<ObjectVersion>)| {
        let Some(rel) = key.strip_prefix(prefix) else {
            return;
        };
        if !valid_name(rel) || super::meta::is_meta_name(rel) {
            return;
        }
        if let Some(v) = current_at(&versions, at) {
            files.insert(rel.to_string(), snapshot_file(&key, rel, v));
        }
    };
    scan(client, bucket, prefix, |page| {
        for v in page.versions {
            if let Some(done) = group.push(v) {
                settle(&mut files, done);
            }
        }
        add_subdirs(prefix, page.common_prefixes, &mut dirs);
        true
    })
    .await?;
    if let Some(done) = group.take() {
        settle(&mut files, done);
    }
    let dirs: BTreeSet<String> = futures::stream::iter(dirs)
        .map(|name| async move {
            let dir = format!("{prefix}{name}/");
            Ok::<_, FsError>(existed_at(client, bucket, &dir, at).await?.then_some(name))
        })
        .buffered(DIRS_CHECKED_AT_ONCE)
        .try_filter_map(|d| async move { Ok(d) })
        .try_collect()
        .await?;
    let mut out: Vec<HistEntry> = dirs.iter().map(|n| snapshot_dir(prefix, n, at)).collect();
    out.extend(
        files
            .into_values()
            .filter(|f| !dirs.contains(f.name.as_ref())),
    );
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What `name` below `prefix` is in history: the versions of the key
/// `prefix + name` (newest first) and whether `prefix + name + /` holds
/// anything. One page in the usual case: the scan stops once the listing
/// has passed `name/`.
async fn probe(
    client: &dyn ObjectClient,
    bucket: &str,
    prefix: &str,
    name: &str,
) -> FsResult<(Vec<ObjectVersion>, bool)> {
    let key = format!("{prefix}{name}");
    let dir = format!("{key}/");
    let mut versions = Vec::new();
    let mut is_dir = false;
    scan(client, bucket, &key, |page| {
        let mut past = false;
        for p in page.common_prefixes {
            if p == dir {
                is_dir = true;
            }
            past |= p > dir;
        }
        for v in page.versions {
            past |= v.key > dir;
            if v.key == key {
                versions.push(v);
            }
        }
        !past && !is_dir
    })
    .await?;
    Ok((versions, is_dir))
}

/// What a listing of a history directory is keyed by in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ListingKind {
    History,
    VersionsOf,
    Snapshot(SystemTime),
}

type CacheKey = (Arc<str>, String, ListingKind);
/// A listing and when it was taken.
type Listing = (Arc<Vec<HistEntry>>, Instant);

/// Listings of history directories and the buckets' versioning states,
/// each good for the metadata TTL.
pub struct History {
    pub versions_dir: Option<String>,
    pub snapshots_dir: Option<String>,
    ttl: Ttl,
    listings: Mutex<LruCache<CacheKey, Listing>>,
    versioned: Mutex<HashMap<Arc<str>, (bool, Instant)>>,
}

/// History listings kept at once.
const CACHED_LISTINGS: usize = 64;

impl History {
    pub fn new(versions_dir: Option<String>, snapshots_dir: Option<String>, ttl: Ttl) -> Self {
        History {
            versions_dir,
            snapshots_dir,
            ttl,
            listings: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHED_LISTINGS).expect("non-zero"),
            )),
            versioned: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `bucket` keeps versions (Enabled or Suspended). A store
    /// that cannot say counts as unversioned.
    pub async fn versioned(&self, client: &dyn ObjectClient, bucket: &Arc<str>) -> bool {
        if let Some((v, at)) = self.versioned.lock().expect("history lock").get(bucket)
            && self.fresh(*at)
        {
            return *v;
        }
        let v = match client.get_bucket_versioning(bucket).await {
            Ok(status) => status != crate::s3::VersioningStatus::Unversioned,
            Err(e) => {
                tracing::debug!(bucket = %bucket, error = %e, "versioning state unknown: no history shown");
                false
            }
        };
        self.versioned
            .lock()
            .expect("history lock")
            .insert(bucket.clone(), (v, Instant::now()));
        v
    }

    /// Something was written or removed through this mount: every history
    /// listing may have a new version (cheap: a handful of listings).
    pub fn changed(&self) {
        self.listings.lock().expect("history lock").clear();
    }

    fn fresh(&self, at: Instant) -> bool {
        // Even with caching off, a listing serves the lookups that follow
        // it for a moment (`ls -l` of a history directory).
        self.ttl.fresh(at) || at.elapsed() < Duration::from_millis(200)
    }

    fn kind_of(view: &View) -> Option<ListingKind> {
        match view {
            View::History => Some(ListingKind::History),
            View::VersionsOf => Some(ListingKind::VersionsOf),
            View::Snapshot { at } => Some(ListingKind::Snapshot(*at)),
            _ => None,
        }
    }

    fn cached(&self, loc: &Location, view: &View) -> Option<Arc<Vec<HistEntry>>> {
        let key = (loc.bucket.clone(), loc.key.clone(), Self::kind_of(view)?);
        let mut cache = self.listings.lock().expect("history lock");
        match cache.get(&key) {
            Some((l, at)) if self.fresh(*at) => Some(l.clone()),
            _ => None,
        }
    }

    /// The entries of the history directory at `loc` with `view`.
    pub async fn list(
        &self,
        client: &dyn ObjectClient,
        loc: &Location,
        view: &View,
        dir_time: SystemTime,
    ) -> FsResult<Arc<Vec<HistEntry>>> {
        if let Some(l) = self.cached(loc, view) {
            return Ok(l);
        }
        let entries = match view {
            View::History => list_history(client, &loc.bucket, &loc.key, dir_time).await?,
            View::VersionsOf => list_versions_of(client, &loc.bucket, &loc.key).await?,
            View::Snapshot { at } => list_snapshot(client, &loc.bucket, &loc.key, *at).await?,
            View::Snapshots => Vec::new(),
            View::Live | View::Version { .. } => return Err(FsError::NotDir),
        };
        let entries = Arc::new(entries);
        if let Some(kind) = Self::kind_of(view) {
            self.listings.lock().expect("history lock").put(
                (loc.bucket.clone(), loc.key.clone(), kind),
                (entries.clone(), Instant::now()),
            );
        }
        Ok(entries)
    }

    /// `name` in the history directory at `loc` with `view`.
    pub async fn lookup(
        &self,
        client: &dyn ObjectClient,
        loc: &Location,
        view: &View,
        name: &str,
        dir_time: SystemTime,
    ) -> FsResult<HistEntry> {
        if let Some(l) = self.cached(loc, view) {
            return l
                .iter()
                .find(|e| e.name.as_ref() == name)
                .cloned()
                .ok_or(FsError::NotFound);
        }
        match view {
            View::Snapshots => {
                let at = parse_time(name).ok_or(FsError::NotFound)?;
                Ok(dir(name, loc.key.clone(), at, View::Snapshot { at }))
            }
            View::VersionsOf => self
                .list(client, loc, view, dir_time)
                .await?
                .iter()
                .find(|e| e.name.as_ref() == name)
                .cloned()
                .ok_or(FsError::NotFound),
            View::History => {
                let (versions, is_dir) = probe(client, &loc.bucket, &loc.key, name).await?;
                if is_dir {
                    return Ok(history_dir(&loc.key, name, dir_time));
                }
                if versions.is_empty() {
                    return Err(FsError::NotFound);
                }
                let newest = versions
                    .iter()
                    .filter_map(|v| v.last_modified)
                    .max()
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let entry = versions_dir(&loc.key, name, newest);
                // The probe saw every version of the key: that is the
                // listing of the directory just found, if it is listed next.
                let key = (
                    loc.bucket.clone(),
                    entry.key.clone(),
                    ListingKind::VersionsOf,
                );
                let listing = Arc::new(name_versions(&entry.key, &versions));
                self.listings
                    .lock()
                    .expect("history lock")
                    .put(key, (listing, Instant::now()));
                Ok(entry)
            }
            View::Snapshot { at } => {
                let (versions, is_dir) = probe(client, &loc.bucket, &loc.key, name).await?;
                if is_dir
                    && existed_at(client, &loc.bucket, &format!("{}{name}/", loc.key), *at).await?
                {
                    return Ok(snapshot_dir(&loc.key, name, *at));
                }
                let key = format!("{}{name}", loc.key);
                current_at(&versions, *at)
                    .map(|v| snapshot_file(&key, name, v))
                    .ok_or(FsError::NotFound)
            }
            View::Live | View::Version { .. } => Err(FsError::NotDir),
        }
    }

    /// The entry for `.versions` or `.snapshots` at a bucket root, if
    /// `name` is one of them.
    pub fn root_entry(
        &self,
        root: &Location,
        name: &str,
        mount_time: SystemTime,
    ) -> Option<HistEntry> {
        let view = if self.versions_dir.as_deref() == Some(name) {
            View::History
        } else if self.snapshots_dir.as_deref() == Some(name) {
            View::Snapshots
        } else {
            return None;
        };
        Some(dir(name, root.key.clone(), mount_time, view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn version(id: &str, ms: u64, marker: bool) -> ObjectVersion {
        ObjectVersion {
            key: "k".into(),
            version_id: Some(id.into()),
            is_latest: false,
            is_delete_marker: marker,
            size: if marker { 0 } else { 10 },
            etag: (!marker).then(|| format!("\"{id}\"")),
            last_modified: Some(at(ms)),
        }
    }

    #[test]
    fn times_are_named_in_utc_with_milliseconds_and_parsed_in_any_offset() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_515_330_123);
        assert_eq!(time_name(t), "2026-11-24T10:15:30.123Z");
        assert_eq!(parse_time("2026-11-24T10:15:30.123Z"), Some(t));
        assert_eq!(
            parse_time("2026-11-24T11:15:30.123+01:00"),
            Some(t),
            "an offset names the same instant"
        );
        assert_eq!(
            parse_time("2026-11-24T10:00:00.5+01:00"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_510_800_500))
        );
        for bad in ["", "yesterday", "2026-11-24", "2026-11-24T10:00:00"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn versions_are_named_oldest_first_with_suffixes_for_ties_and_deletes() {
        // As listed: newest first.
        let listed = vec![
            version("v5", 3000, true),
            version("v4", 2000, false),
            version("v3", 1000, true),
            version("v2", 1000, false),
            version("v1", 1000, false),
        ];
        let named = name_versions("k", &listed);
        let names: Vec<&str> = named.iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "1970-01-01T00:00:01.000Z",
                "1970-01-01T00:00:01.000Z~2",
                "1970-01-01T00:00:01.000Z~3.deleted",
                "1970-01-01T00:00:02.000Z",
                "1970-01-01T00:00:03.000Z.deleted",
            ]
        );
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names, "names sort as the versions were made");
        assert_eq!(
            named[0].view,
            View::Version {
                id: Arc::from("v1"),
                marker: false
            }
        );
        assert_eq!(named[2].stat.size, 0);
        assert!(named.iter().all(|e| e.kind == Kind::File && e.key == "k"));
    }

    #[test]
    fn a_snapshot_shows_the_version_current_then() {
        let listed = vec![
            version("v3", 3000, false),
            version("v2", 2000, true),
            version("v1", 1000, false),
        ];
        assert!(current_at(&listed, at(999)).is_none(), "before the first");
        assert_eq!(
            current_at(&listed, at(1000)).unwrap().version_id.as_deref(),
            Some("v1")
        );
        assert_eq!(
            current_at(&listed, at(1999)).unwrap().version_id.as_deref(),
            Some("v1")
        );
        assert!(current_at(&listed, at(2500)).is_none(), "deleted then");
        assert_eq!(
            current_at(&listed, at(9000)).unwrap().version_id.as_deref(),
            Some("v3")
        );
    }
}
