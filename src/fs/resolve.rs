//! What a name is in the store, asked as cheaply as it can be: the caches
//! of names and listings (`fs/cache.rs`) first, a fresh listing of a small
//! directory next, else a HEAD of the key and a one-key listing of `name/`
//! at once. Files being written here are known without asking. Also the
//! buckets of an all-buckets mount, and whether a directory is empty.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::cache::{DirEntry, Entry, MetaCache};
use super::dir::DirHandle;
use super::error::{FsError, FsResult};
use super::files::Files;
use super::inode::{self, Kind, Location, Stat, Tree, valid_name};
use super::list_ahead::{self, ListAhead};
use super::meta::{MetaStore, is_meta_name};
use crate::s3::{ErrorKind, HeadObjectOutput, ListObjectsParams, ObjectClient, S3Error, limits};

/// Bound on the set of keys logged as unusable, so a bucket full of them
/// cannot grow it without end (beyond it, they are logged again).
const MAX_SKIPPED_LOGGED: usize = 10_000;

/// A directory whose last listing had fewer entries than this is listed
/// again (one page) on a lookup that misses, rather than asked name by name.
const RELIST_BELOW: usize = 1000;

/// Keys asked for at a time when checking a directory is empty: its
/// marker and metadata segments, and one more.
const EMPTY_CHECK_PAGE: u32 = 16;

pub struct Resolver {
    client: Arc<dyn ObjectClient>,
    /// Names and listings seen, for a TTL: this mount's one cache of them.
    pub(super) cache: MetaCache,
    /// Subdirectories listed ahead of a walk (`fs/list_ahead.rs`).
    pub(super) list_ahead: ListAhead,
    meta: Arc<MetaStore>,
    files: Arc<Files>,
    mount_time: SystemTime,
    /// Keys already logged as unusable names, so each is logged once.
    skipped_logged: Mutex<HashSet<String>>,
}

impl Resolver {
    pub fn new(
        client: Arc<dyn ObjectClient>,
        cache: MetaCache,
        meta: Arc<MetaStore>,
        files: Arc<Files>,
        mount_time: SystemTime,
        dirs_ahead: usize,
    ) -> Self {
        Resolver {
            list_ahead: ListAhead::new(client.clone(), dirs_ahead, cache.ttl()),
            client,
            cache,
            meta,
            files,
            mount_time,
            skipped_logged: Mutex::new(HashSet::new()),
        }
    }

    /// When the mount started: the time of what nothing stored dates.
    pub(super) fn mount_time(&self) -> SystemTime {
        self.mount_time
    }

    /// A directory's stat: nothing stored says more than the mount time.
    pub(super) fn dir_stat(&self) -> Stat {
        Stat {
            size: 0,
            mtime: self.mount_time,
            etag: None,
        }
    }

    pub(super) fn log_skipped(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        let mut logged = self.skipped_logged.lock().expect("log lock");
        for key in keys {
            if logged.len() >= MAX_SKIPPED_LOGGED {
                logged.clear();
            }
            if logged.insert(key.clone()) {
                tracing::warn!(key = %key, "key left out of the listing: it cannot be a file name (empty, '.' or '..')");
            }
        }
    }

    /// Files with a buffer here directly in directory `dir` (a new one
    /// has no object before its first close, but exists all the same).
    pub(super) fn local_files_in(&self, dir: &Location) -> Vec<DirEntry> {
        self.files
            .open_files()
            .written_under(dir)
            .into_iter()
            .filter_map(|(_, f)| {
                let loc = f.location();
                let name = loc.key.strip_prefix(dir.key.as_str())?;
                valid_name(name).then(|| DirEntry {
                    name: Arc::from(name),
                    kind: Kind::File,
                    stat: Stat {
                        size: f.size(),
                        mtime: SystemTime::now(),
                        etag: None,
                    },
                })
            })
            .collect()
    }

    /// A listing of directory `loc` started ahead of a walk, for its open
    /// (see `fs/list_ahead.rs`); the walk moves on. `None` when there is
    /// none, or when files open here may be in it (they are listed by a
    /// handle of the open's own).
    pub(super) async fn listed_ahead(&self, loc: &Location) -> Option<Arc<DirHandle>> {
        let cached = |l: &Location| self.cache.listing_is_fresh(&l.bucket, &l.key);
        let ctx = list_ahead::Context {
            epoch: self.cache.epoch(),
            cached: &cached,
            room: self.cache.has_room(),
            dir_stat: &self.dir_stat(),
        };
        let handle = self.list_ahead.opening(loc, &ctx).await?;
        self.local_files_in(loc).is_empty().then_some(handle)
    }

    /// The buckets of the store, as the entries of the all-buckets root.
    pub(super) async fn bucket_listing(&self) -> FsResult<Arc<Vec<DirEntry>>> {
        let none: Arc<str> = Arc::from("");
        if let Some(listing) = self.cache.listing(&none, "") {
            return Ok(listing);
        }
        let mut entries: Vec<DirEntry> = Vec::new();
        let mut skipped = Vec::new();
        for b in self.client.list_buckets().await? {
            if valid_name(&b.name) {
                entries.push(DirEntry {
                    name: Arc::from(b.name.as_str()),
                    kind: Kind::Dir,
                    stat: Stat {
                        size: 0,
                        mtime: b.creation_date.unwrap_or(self.mount_time),
                        etag: None,
                    },
                });
            } else {
                skipped.push(b.name);
            }
        }
        self.log_skipped(skipped);
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let entries = Arc::new(entries);
        self.cache.put_listing(&none, "", entries.clone());
        Ok(entries)
    }

    /// What `name` in directory `parent` is: from a fresh listing of the
    /// parent, from the name cache, or asking the store with a HEAD of the
    /// key and a one-key listing of `name/` at once (at most 2 requests).
    pub(super) async fn resolve(&self, parent: &Location, name: &str) -> FsResult<Entry> {
        if parent.tree() == Tree::Buckets {
            let buckets = self.bucket_listing().await?;
            return Ok(
                match buckets.binary_search_by(|e| e.name.as_ref().cmp(name)) {
                    Ok(_) => Entry::Dir,
                    Err(_) => Entry::Missing,
                },
            );
        }
        let path = format!("{}{name}", parent.key);
        // A file being written here is known locally, whatever the store
        // says (a new one is not there before its first close).
        if let Some(file) = self
            .files
            .open_files()
            .written_at(&parent.child(name, Kind::File))
        {
            return Ok(Entry::File(Stat {
                size: file.size(),
                mtime: SystemTime::now(),
                etag: None,
            }));
        }
        if let Some(entry) = self.cache.from_listing(&parent.bucket, &parent.key, name) {
            return Ok(entry);
        }
        if path.len() > limits::MAX_KEY_LEN {
            return Err(FsError::NameTooLong);
        }
        if let Some(entry) = self.cache.get(&parent.bucket, &path) {
            return Ok(entry);
        }
        // A walk revalidating a subdirectory it is about to enter: the
        // listing started ahead of it tells, with no request of its own.
        if self
            .list_ahead
            .shows_entries(&parent.child(name, Kind::Dir), self.cache.epoch())
            .await
        {
            self.cache.put(&parent.bucket, &path, Entry::Dir);
            return Ok(Entry::Dir);
        }
        // A directory made here and never listed (another client may have
        // put the name there since), or one whose last listing went stale
        // and was one page: one listing of it answers this lookup and the
        // following ones for a TTL, where asking name by name would cost a
        // HEAD and a LIST each (cp -r into the mount looks up every name).
        let relist = self.cache.is_assumed(&parent.bucket, &parent.key)
            || self
                .cache
                .stale_len(&parent.bucket, &parent.key)
                .is_some_and(|n| n < RELIST_BELOW);
        if relist && let Some(listing) = self.confirm_listing(parent).await? {
            return Ok(
                match listing.binary_search_by(|e| e.name.as_ref().cmp(name)) {
                    Ok(i) if listing[i].kind == Kind::Dir => Entry::Dir,
                    Ok(i) => Entry::File(listing[i].stat.clone()),
                    Err(_) => Entry::Missing,
                },
            );
        }
        // A key of the maximum length has no room for a directory's `/`.
        if path.len() == limits::MAX_KEY_LEN {
            let head = self.client.head_object(&parent.bucket, &path, None).await;
            let entry = self.head_entry(head)?;
            self.cache.put(&parent.bucket, &path, entry.clone());
            return Ok(entry);
        }
        let dir_params = ListObjectsParams {
            prefix: format!("{path}/"),
            delimiter: Some("/".to_string()),
            max_keys: Some(1),
            ..Default::default()
        };
        // Both at once; a listing that shows children settles it as a
        // directory without waiting for (or retrying) the HEAD.
        let head = self.client.head_object(&parent.bucket, &path, None);
        let list = self.client.list_objects(&parent.bucket, &dir_params);
        tokio::pin!(head, list);
        let mut head_done = None;
        let list = loop {
            tokio::select! {
                r = &mut list => break r?,
                r = &mut head, if head_done.is_none() => head_done = Some(r),
            }
        };
        let entry = if !list.objects.is_empty() || !list.common_prefixes.is_empty() {
            Entry::Dir
        } else {
            let head = match head_done {
                Some(r) => r,
                None => head.await,
            };
            self.head_entry(head)?
        };
        self.cache.put(&parent.bucket, &path, entry.clone());
        Ok(entry)
    }

    /// What a HEAD of a name says is there: a file or nothing.
    pub(super) fn head_entry(&self, head: Result<HeadObjectOutput, S3Error>) -> FsResult<Entry> {
        match head {
            Ok(h) => Ok(Entry::File(Stat {
                size: h.size,
                mtime: inode::object_mtime(h.last_modified, self.mount_time),
                etag: h.etag,
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Entry::Missing),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists directory `dir` from the store, if it fits in one page (else
    /// `None`, and names are looked up one by one), with the files being
    /// written here merged in, and caches the listing.
    pub(super) async fn confirm_listing(
        &self,
        dir: &Location,
    ) -> FsResult<Option<Arc<Vec<DirEntry>>>> {
        // The same listing readdir makes (directories win over files of the
        // same name, open files merged in), stopped after its first page.
        let handle = DirHandle::streaming(0, dir.clone(), self.local_files_in(dir));
        let skipped = handle.fetch_more(&self.client, &self.dir_stat()).await?;
        self.log_skipped(skipped);
        if let Some(seen) = handle.meta_seen() {
            self.meta.seen_in_listing(dir, &seen);
        }
        let Some(entries) = handle.finished() else {
            self.cache.forget_listing(&dir.bucket, &dir.key);
            return Ok(None);
        };
        let entries = Arc::new(entries);
        self.cache
            .put_listing(&dir.bucket, &dir.key, entries.clone());
        Ok(Some(entries))
    }

    /// ENOTEMPTY unless the directory at `loc` holds nothing but its marker
    /// and metadata; returns the names of its metadata objects.
    pub(super) async fn ensure_empty(&self, loc: &Location) -> FsResult<Vec<String>> {
        // A file created here and not yet closed has no object yet.
        if !self.files.open_files().written_under(loc).is_empty() {
            return Err(FsError::NotEmpty);
        }
        // Its metadata objects do not count; there may be a few pages of
        // them before a name (they sort early).
        let mut params = ListObjectsParams {
            prefix: loc.key.clone(),
            max_keys: Some(EMPTY_CHECK_PAGE),
            ..Default::default()
        };
        let mut metas = Vec::new();
        loop {
            let page = self.client.list_objects(&loc.bucket, &params).await?;
            if !page.common_prefixes.is_empty() {
                return Err(FsError::NotEmpty);
            }
            for o in page.objects {
                match &o.key[loc.key.len()..] {
                    "" => {}
                    rel if is_meta_name(rel) => metas.push(rel.to_string()),
                    _ => return Err(FsError::NotEmpty),
                }
            }
            match page.next_continuation_token {
                Some(t) => params.continuation_token = Some(t),
                None => return Ok(metas),
            }
        }
    }
}
