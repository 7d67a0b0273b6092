//! The namespace part of the core: names and inodes, the caches of names
//! and listings, the POSIX metadata of each directory, the history of
//! versioned buckets, and the root (one bucket, a prefix, or every bucket).
//!
//! [`Names`] owns that state and answers what a name is (lookup, getattr,
//! the attributes shown); the jobs that change names borrow it: `Changes`
//! (`fs/changes.rs`: create, mkdir, unlink, rmdir, symlink, mknod,
//! setattr), `Renames` (`fs/rename.rs`) and `Directories`
//! (`fs/readdir.rs`). It reaches file data only through [`Files`]: whether
//! a file is being written here, and a file's upload at commit.

use std::ffi::OsStr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use super::attr::{self, Attr, Defaults, Sources, described, shown_kind};
use super::budget::{self, MetaBudget};
use super::cache::{Entry, MetaCache, Ttl};
use super::config::FsConfig;
use super::error::{FsError, FsResult};
use super::files::Files;
use super::inode::{
    self, Ino, Inode, Inodes, Kind, Location, NAME_MAX, SHOWN_NAME_MAX, Stat, Tree, View,
    split_key, valid_name,
};
use super::meta::{self, MetaEntry, MetaStore, Table, is_meta_name};
use super::open::OpenFiles;
use super::resolve::Resolver;
use super::upload::{self, DirtyFile};
use super::versions::{HistEntry, History};
use crate::s3::{ErrorKind, ObjectClient, limits};

pub struct Names {
    pub(super) client: Arc<dyn ObjectClient>,
    pub(super) cfg: FsConfig,
    pub(super) inodes: Inodes,
    /// What names are in the store, and the caches that remember it.
    pub(super) resolver: Resolver,
    /// The key of the mount's root in its bucket (of each bucket's
    /// directory with all buckets): where the history directories are.
    pub(super) root_key: String,
    pub(super) history: History,
    /// Modes, owners, times and special kinds, per directory.
    pub(super) meta: Arc<MetaStore>,
    pub(super) files: Arc<Files>,
    /// What all of the above may hold (`fs/budget.rs`).
    pub(super) budget: Arc<MetaBudget>,
    /// Asks the kernel to forget names (parent, name), once set by the
    /// adapter: how inodes the kernel holds are given back to the budget.
    kernel_evict: OnceLock<KernelEvict>,
}

/// See [`Names::set_kernel_evict`].
pub type KernelEvict = Box<dyn Fn(Vec<(Ino, Arc<str>)>) + Send + Sync>;

/// A reclaim starts once this share of the budget is charged, before the
/// limit: the kernel forgets asynchronously, and a walk goes on meanwhile.
const RECLAIM_AT: f64 = 0.875;

/// A reclaim makes room down to this share of the budget: each scans
/// every inode, so each gives back enough for many charges to follow.
const RECLAIM_TO: f64 = 0.625;

impl Names {
    pub fn new(
        client: Arc<dyn ObjectClient>,
        root: Location,
        cfg: FsConfig,
        files: Arc<Files>,
        budget: Arc<MetaBudget>,
    ) -> Self {
        let mount_time = SystemTime::now();
        let meta = MetaStore::new(client.clone(), cfg.metadata_ttl, budget.clone());
        let cache = MetaCache::new(cfg.metadata_ttl, cfg.max_cached_listing_len, budget.clone());
        Names {
            root_key: root.key.clone(),
            history: History::new(
                cfg.versions_dir.clone(),
                cfg.snapshots_dir.clone(),
                cfg.metadata_ttl,
            ),
            resolver: Resolver::new(
                client.clone(),
                cache,
                meta.clone(),
                files.clone(),
                mount_time,
                cfg.walk.dirs_ahead,
            ),
            meta,
            inodes: Inodes::new(root, mount_time, budget.clone()),
            budget,
            kernel_evict: OnceLock::new(),
            client,
            cfg,
            files,
        }
    }

    /// `ino` was written through a handle.
    pub(super) fn written(&self, ino: Ino) {
        self.inodes.written(ino);
    }

    /// Whether the kernel may keep the pages it cached of `ino` for an
    /// open of the object `etag` (see [`InodeTable::keep_pages`]).
    pub(super) fn keep_pages(&self, ino: Ino, etag: &Option<String>) -> bool {
        self.inodes.keep_pages(ino, etag)
    }

    /// The metadata of `ino`'s entry is in the bucket (fsync).
    pub(super) async fn sync_entry(&self, ino: Ino) -> FsResult<()> {
        let node = self.inode(ino)?;
        if let Some((dir, _)) = self.meta_home(&node.loc) {
            self.meta.flush(&dir).await?;
        }
        Ok(())
    }

    /// The open files (`Files`' own), asked whether a file is written here.
    pub(super) fn open(&self) -> &OpenFiles {
        self.files.open_files()
    }

    /// Makes the content of `name` in `parent` local if the file is open,
    /// so its handles keep reading it once its object is deleted or
    /// replaced (POSIX keeps an unlinked file until its last close). The
    /// buffer returned is then unlinked by the caller.
    pub(super) async fn keep_open_content(
        &self,
        parent: Ino,
        name: &str,
    ) -> FsResult<Option<Arc<DirtyFile>>> {
        let Some(node) = self.inodes.child(parent, name) else {
            return Ok(None);
        };
        let Some(file) = self.files.open_content(&node)? else {
            return Ok(None);
        };
        self.saving(node.ino, &file, || file.keep_all()).await?;
        Ok(Some(file))
    }

    pub(super) fn dir_stat(&self) -> Stat {
        self.resolver.dir_stat()
    }

    pub(super) fn defaults(&self) -> Defaults {
        Defaults {
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            file_mode: self.cfg.file_mode,
            dir_mode: self.cfg.dir_mode,
        }
    }

    pub(super) fn default_perm(&self, kind: Kind) -> u16 {
        self.defaults().perm(kind)
    }

    /// Attributes by `fs/attr.rs`'s precedence; a file being written here
    /// is as big as its buffer says (read without waiting for the file's
    /// own lock: see `DirtyFile::size`).
    pub(super) fn attr(
        &self,
        ino: Ino,
        kind: Kind,
        stat: &Stat,
        meta: Option<&MetaEntry>,
        overrides: &attr::Overrides,
        unlinked: bool,
    ) -> Attr {
        let src = Sources {
            stat,
            meta,
            overrides,
            unlinked,
            written_size: self.open().buffer(ino).map(|f| f.size()),
        };
        attr::shown(ino, kind, &src, &self.defaults())
    }

    /// Records a kernel reference to `name` in `parent` and returns its
    /// attributes. `kind` is what the store holds (file or directory); the
    /// metadata entry, if it applies, may make a file another kind.
    pub(super) fn remember(
        &self,
        parent: Ino,
        name: &str,
        kind: Kind,
        loc: Location,
        stat: Stat,
        table: &Table,
    ) -> Attr {
        let writing = kind != Kind::Dir && self.open().written_at(&loc).is_some();
        let meta = described(table, name, kind, stat.etag.as_deref(), writing);
        self.remember_described(parent, name, kind, loc, stat, meta)
    }

    /// [`Names::remember`] with the entry that applies already found.
    fn remember_described(
        &self,
        parent: Ino,
        name: &str,
        kind: Kind,
        loc: Location,
        stat: Stat,
        meta: Option<&MetaEntry>,
    ) -> Attr {
        let kind = meta.map_or(kind, |m| shown_kind(kind, m));
        let (ino, stat, ov) = self
            .inodes
            .remember((parent, name), (kind, loc, View::Live), stat);
        self.reclaim();
        self.attr(ino, kind, &stat, meta, &ov, false)
    }

    /// The directory holding the metadata of `loc`, and its name there
    /// (`None` for a mount's root and for buckets: nothing holds theirs).
    pub(super) fn meta_home<'a>(&self, loc: &'a Location) -> Option<(Location, &'a str)> {
        if loc.tree() == Tree::Buckets || loc.key.is_empty() || loc.key == self.root_key {
            return None;
        }
        let (parent, path) = split_key(&loc.key);
        Some((
            Location {
                bucket: loc.bucket.clone(),
                key: parent.to_string(),
            },
            &path[parent.len()..],
        ))
    }

    /// Records a kernel reference to an entry of history (looked up).
    fn remember_found(&self, parent: Ino, bucket: &Arc<str>, e: HistEntry) -> Attr {
        let loc = e.location(bucket);
        self.remember_history(parent, &e.name, e.kind, loc, e.view, &e.stat)
    }

    /// Records a kernel reference to `name` of history in `parent` (at
    /// `loc`, in `view`) and returns its attributes: the one place history
    /// inodes are made.
    pub(super) fn remember_history(
        &self,
        parent: Ino,
        name: &str,
        kind: Kind,
        loc: Location,
        view: View,
        stat: &Stat,
    ) -> Attr {
        debug_assert!(view != View::Live);
        let (ino, _, _) = self
            .inodes
            .remember((parent, name), (kind, loc, view), stat.clone());
        self.history_attr(ino, kind, stat)
    }

    pub(super) fn history_attr(&self, ino: Ino, kind: Kind, stat: &Stat) -> Attr {
        attr::history(ino, kind, stat, &self.defaults())
    }

    pub(super) fn inode(&self, ino: Ino) -> FsResult<inode::Inode> {
        self.inodes.get(ino).ok_or(FsError::NotFound)
    }

    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Attr> {
        let name = name.to_str().ok_or(FsError::NotFound)?;
        if name.len() > SHOWN_NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if !valid_name(name) || meta::is_meta_name(name) {
            return Err(FsError::NotFound);
        }
        let p = self.inode(parent)?;
        if p.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let tree = p.tree();
        if tree == Tree::History {
            let e = self
                .history
                .lookup(
                    self.client.as_ref(),
                    &p.loc,
                    &p.view,
                    name,
                    self.resolver.mount_time(),
                )
                .await?;
            return Ok(self.remember_found(parent, &p.loc.bucket, e));
        }
        if tree == Tree::Live
            && p.loc.key == self.root_key
            && let Some(e) = self
                .history
                .root_entry(&p.loc, name, self.resolver.mount_time())
            && self
                .history
                .versioned(self.client.as_ref(), &p.loc.bucket)
                .await
        {
            return Ok(self.remember_found(parent, &p.loc.bucket, e));
        }
        // The directory's metadata is read while the name is resolved. No
        // snapshot of its table is held across the request: a change made
        // meanwhile would copy the whole table to keep it.
        let (entry, ready) =
            tokio::join!(self.resolver.resolve(&p.loc, name), self.meta_ready(&p.loc));
        let (kind, stat) = match entry? {
            // Only an existing file can have a name this long; a new one
            // could not (creating it would fail the same way).
            Entry::Missing if name.len() > NAME_MAX => return Err(FsError::NameTooLong),
            Entry::Missing => return Err(FsError::NotFound),
            Entry::Dir => (Kind::Dir, self.dir_stat()),
            Entry::File(stat) => (Kind::File, stat),
        };
        ready?;
        let loc = p.loc.child(name, kind);
        let writing = kind != Kind::Dir && self.open().written_at(&loc).is_some();
        let meta = self.meta.peek(&p.loc, |t| {
            described(t, name, kind, stat.etag.as_deref(), writing).cloned()
        });
        Ok(self.remember_described(parent, name, kind, loc, stat, meta.as_ref()))
    }

    /// Reads the metadata table of a live directory unless it is fresh.
    async fn meta_ready(&self, dir: &Location) -> FsResult<()> {
        match dir.tree() {
            Tree::Buckets | Tree::History => Ok(()),
            Tree::Live => self.meta.ready(dir).await,
        }
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        if self.inodes.forget(ino, n) {
            budget::give_back_memory();
        }
    }

    /// How the kernel is asked to forget names (`fuser`'s `inval_entry`,
    /// sent from a thread of its own: the kernel takes the parent
    /// directory's lock, which a request in flight may hold).
    pub fn set_kernel_evict(&self, f: KernelEvict) {
        let _ = self.kernel_evict.set(f);
    }

    /// Keeps what the names hold within the metadata budget: over it,
    /// the least recently used cached names, listings and tables go, and
    /// if that is not enough the kernel is asked to forget the least
    /// recently used inodes (it then sends FORGET, which frees them).
    /// Cheap when within the budget: called after each step that charges.
    pub(super) fn reclaim(&self) {
        // What the kernel is forgetting already counts as given back:
        // asking again while it does would scan the inodes at each charge.
        // (Atomics only: this runs at every entry a listing hands out.)
        let charged = self.budget.unasked();
        if charged <= self.budget.mark(RECLAIM_AT) {
            return;
        }
        let want = charged - self.budget.mark(RECLAIM_TO);
        let mut freed = self.resolver.cache.evict(want);
        if freed < want {
            freed += self.meta.evict(want - freed);
        }
        if freed >= want {
            return;
        }
        let Some(evict) = self.kernel_evict.get() else {
            return;
        };
        let open = self.open().open_inodes();
        let names = self.inodes.least_used(want - freed, &open);
        if !names.is_empty() {
            tracing::debug!(
                names = names.len(),
                charged = self.budget.charged(),
                "metadata budget full: the kernel is asked to forget the least recently used names"
            );
            evict(names);
        }
    }

    /// Re-reads a file's attributes when they are older than the TTL, or
    /// whatever their age when `always` (an open, close-to-open): one HEAD,
    /// none for a file this mount is writing. A change found goes to the
    /// inode and to the cached name; a name gone, from the cache too.
    pub(super) async fn refresh(&self, node: &inode::Inode, always: bool) -> FsResult<Stat> {
        if node.kind == Kind::Dir
            || node.tree() != Tree::Live
            || node.unlinked
            || (!always && self.ttl().fresh(node.stat_at))
            || self.open().buffer(node.ino).is_some()
        {
            return Ok(node.stat.clone());
        }
        let (parent, path) = split_key(&node.loc.key);
        let h = match self
            .client
            .head_object(&node.loc.bucket, &node.loc.key, None)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                if e.kind() == ErrorKind::NotFound {
                    self.resolver
                        .cache
                        .invalidate(&node.loc.bucket, path, parent);
                }
                return Err(e.into());
            }
        };
        let stat = node.stat.updated(Stat {
            size: h.size,
            mtime: inode::object_mtime(h.last_modified, self.resolver.mount_time()),
            etag: h.etag,
        });
        self.inodes.refreshed(node.ino, stat.clone());
        if stat.etag != node.stat.etag || stat.size != node.stat.size {
            self.resolver.cache.changed(
                &node.loc.bucket,
                path,
                parent,
                Entry::File(stat.clone()),
                &self.dir_stat(),
            );
        }
        Ok(stat)
    }

    pub async fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        let node = self.inode(ino)?;
        if node.tree() == Tree::History {
            return Ok(self.history_attr(ino, node.kind, &node.stat));
        }
        let stat = self.refresh(&node, false).await?;
        let meta = self.meta_of(&node).await?;
        Ok(self.attr(
            ino,
            node.kind,
            &stat,
            meta.as_ref(),
            &node.overrides,
            node.unlinked,
        ))
    }

    /// Names were added to or removed from directories `dirs`: their mtime
    /// and ctime are now. Kept in memory only: persisting them would cost a
    /// metadata write in the parent for every change of a name.
    pub(super) fn entries_changed(&self, dirs: &[Ino]) -> SystemTime {
        let now = SystemTime::now();
        self.inodes.entries_changed(dirs, now);
        now
    }

    /// The metadata entry that applies to a live inode, if any.
    pub(super) async fn meta_of(&self, node: &inode::Inode) -> FsResult<Option<MetaEntry>> {
        if node.unlinked {
            return Ok(None);
        }
        let Some((dir, name)) = self.meta_home(&node.loc) else {
            return Ok(None);
        };
        let storage = if node.kind == Kind::Dir {
            Kind::Dir
        } else {
            Kind::File
        };
        let writing = self.open().buffer(node.ino).is_some();
        self.meta
            .look(&dir, |table| {
                described(table, name, storage, node.stat.etag.as_deref(), writing)
                    .filter(|m| shown_kind(storage, m) == node.kind)
                    .cloned()
            })
            .await
    }

    /// Puts a file's changes in the bucket (close, fsync): returns once the
    /// object is complete there.
    /// With write-back, the journal's entries the commit covers go.
    pub(super) async fn commit(&self, ino: Ino, file: &Arc<DirtyFile>) -> FsResult<()> {
        match self.files.upload(file).await? {
            Some(done) => self.saved(ino, &file.location(), done).await?,
            // Nothing to upload: the object stays, and the entry naming it
            // holds any time set meanwhile.
            None if self.meta_home(&file.location()).is_some() => {
                self.inodes.saved(ino, None);
            }
            None => {}
        }
        if let Some(wb) = self.files.write_back() {
            wb.saved(ino, file.saved_generation()).await?;
        }
        Ok(())
    }

    /// Runs `op` on open file `ino`; when it needs bytes the file sent from
    /// memory ([`FsError::SaveFirst`]), saves the file as it stands (as
    /// fsync would) and runs it again.
    pub(super) async fn saving<T, F, Fut>(
        &self,
        ino: Ino,
        file: &Arc<DirtyFile>,
        op: F,
    ) -> FsResult<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = FsResult<T>>,
    {
        // Saving completes the stream; only a new one, started after an
        // emptying meanwhile, could ask again.
        for _ in 0..3 {
            match op().await {
                Err(FsError::SaveFirst) => self.commit(ino, file).await?,
                done => return done,
            }
        }
        Err(FsError::Internal(
            "a file streamed from memory could not be saved",
        ))
    }

    /// A file's content is now the object `done` at `loc`.
    pub(super) async fn saved(
        &self,
        ino: Ino,
        loc: &Location,
        done: upload::Committed,
    ) -> FsResult<()> {
        self.history.changed();
        let stat = Stat {
            size: done.size,
            mtime: SystemTime::now(),
            etag: done.etag.clone(),
        };
        // A time set while the file was being written, after its last write.
        let set_mtime = self.inodes.saved(ino, Some(stat.clone()));
        let (parent, path) = split_key(&loc.key);
        self.resolver.cache.changed(
            &loc.bucket,
            path,
            parent,
            Entry::File(stat),
            &self.dir_stat(),
        );
        // An entry now describes the new object; its time is the upload's
        // unless one was set since the last write.
        if let Some((dir, name)) = self.meta_home(loc) {
            let etag = done.etag;
            self.meta
                .update(&dir, name, move |e| {
                    if let Some(m) = e {
                        m.etag.clone_from(&etag);
                        m.mtime_ns = set_mtime.map(meta::to_ns);
                    }
                })
                .await?;
        }
        Ok(())
    }

    /// readlink(2): the target kept in the directory's metadata.
    pub async fn readlink(&self, ino: Ino) -> FsResult<String> {
        let node = self.inode(ino)?;
        if node.kind != Kind::Symlink {
            return Err(FsError::InvalidName("not a symbolic link".to_string()));
        }
        self.meta_of(&node)
            .await?
            .and_then(|m| m.target)
            .ok_or(FsError::Stale)
    }

    /// fsync(2) of a directory: the metadata of its entries is in the
    /// bucket.
    pub async fn fsyncdir(&self, ino: Ino) -> FsResult<()> {
        let node = self.inode(ino)?;
        match node.tree() {
            Tree::Live => self.meta.flush(&node.loc).await,
            Tree::Buckets | Tree::History => Ok(()),
        }
    }

    /// Writes every directory's pending metadata (unmount).
    pub async fn flush_metadata(&self) -> FsResult<()> {
        self.meta.flush_all().await
    }

    /// What `ino` is, for logs: `bucket/key` (or the inode number of one
    /// the kernel no longer holds).
    pub fn path_of(&self, ino: Ino) -> String {
        match self.inodes.get(ino) {
            Some(n) if n.tree() == Tree::Buckets => "/".to_string(),
            Some(n) => format!("{}/{}", n.loc.bucket, n.loc.key),
            None => format!("inode {ino}"),
        }
    }

    /// Inodes the table holds (the kernel's references), for tests.
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    pub fn ttl(&self) -> Ttl {
        self.resolver.cache.ttl()
    }

    pub(super) fn changed(&self, loc: &Location, entry: Entry) {
        self.history.changed();
        let (parent, path) = split_key(&loc.key);
        self.resolver
            .cache
            .changed(&loc.bucket, path, parent, entry, &self.dir_stat());
    }

    pub(super) fn writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    /// A directory whose names may change: live, not history.
    pub(super) fn dir_inode(&self, ino: u64) -> FsResult<Inode> {
        let node = self.inode(ino)?;
        if node.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        match node.tree() {
            Tree::History => Err(FsError::ReadOnly),
            Tree::Buckets | Tree::Live => Ok(node),
        }
    }

    pub(super) fn name<'a>(&self, name: &'a OsStr) -> FsResult<&'a str> {
        let name = name
            .to_str()
            .ok_or_else(|| FsError::InvalidName("not UTF-8".to_string()))?;
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if !valid_name(name) || is_meta_name(name) {
            return Err(FsError::InvalidName(name.to_string()));
        }
        Ok(name)
    }

    pub(super) fn key_fits(loc: &Location) -> FsResult<()> {
        if loc.key.len() > limits::MAX_KEY_LEN {
            return Err(FsError::NameTooLong);
        }
        Ok(())
    }
}
