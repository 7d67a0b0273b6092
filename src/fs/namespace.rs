//! Changing names: create, unlink, mkdir, rmdir, rename.
//!
//! - mkdir writes the marker object `dir/` (Content-Type
//!   `application/x-directory`), so an empty directory persists;
//!   rmdir removes it once the directory holds nothing else. At the root of
//!   an all-buckets mount they create and delete buckets.
//! - rename of a file is a copy (PUT Object Copy up to 5 GiB, multipart
//!   UploadPartCopy above, guarded by If-Match on the source ETag) then a
//!   delete of the source. Rename of a directory copies every key under
//!   its prefix in parallel, then deletes the sources in DeleteObjects
//!   batches of 1000. The source is never deleted before every copy
//!   succeeded. Not atomic: another client may see both names, or a
//!   directory half copied, while it runs.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::attr::{Overrides, described};
use super::cache::Entry;
use super::error::{FsError, FsResult};
use super::inode::{Copies, Inode, Kind, Location, NAME_MAX, Stat, View, valid_name};
use super::meta::{EntryType, MetaEntry, Table, has_room, is_meta_name, parse, render, to_ns};
use super::multipart::{Multipart, PartSource};
use super::upload::DirtyFile;
use super::{Attr, Fs, split_key};

/// Who makes a new name: the calling process's ids, and the mode the
/// kernel passes (umask applied); `None` for the mount's default.
#[derive(Debug, Clone, Copy)]
pub struct Creator {
    pub uid: u32,
    pub gid: u32,
    pub mode: Option<u16>,
}
use crate::s3::{CopySource, ErrorKind, ListObjectsParams, ObjectIdentifier, S3Error, limits};

/// The Content-Type of directory markers (`dir/`, empty): what s3fs and
/// other tools take for a directory (without it s3fs shows the marker as a
/// regular file and cannot copy into it).
pub const DIR_MARKER_TYPE: &str = "application/x-directory";

/// Part size of multipart copies: 5 TiB fits in 5120 parts.
const COPY_PART: u64 = 1024 * 1024 * 1024;
/// Keys copied at once when a directory is renamed.
const RENAME_PARALLEL: usize = 32;
/// Keys asked for at a time when checking a directory is empty: its
/// marker and metadata segments, and one more.
const EMPTY_CHECK_PAGE: u32 = 16;
/// Parts of one large object copied at once.
const COPY_PARALLEL: usize = 4;

impl Fs {
    fn writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    /// A directory whose names may change: live, not history.
    fn dir_inode(&self, ino: u64) -> FsResult<Inode> {
        let node = self.inode(ino)?;
        if node.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if node.view != View::Live {
            return Err(FsError::ReadOnly);
        }
        Ok(node)
    }

    fn name<'a>(&self, name: &'a OsStr) -> FsResult<&'a str> {
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

    fn key_fits(loc: &Location) -> FsResult<()> {
        if loc.key.len() > limits::MAX_KEY_LEN {
            return Err(FsError::NameTooLong);
        }
        Ok(())
    }

    fn changed(&self, loc: &Location, entry: Entry) {
        self.history.changed();
        let (parent, path) = split_key(&loc.key);
        self.cache
            .changed(&loc.bucket, path, parent, entry, &self.dir_stat());
    }

    /// Creates a file and opens it. The object is written when the file is
    /// closed (an empty one for `touch`): the kernel holds the directory
    /// locked during create, so a request here would hold up every other
    /// create in that directory for as long as the store takes.
    pub async fn create(&self, parent: u64, name: &OsStr) -> FsResult<(Attr, u64)> {
        self.create_as(parent, name, &self.creator(None)).await
    }

    /// The attributes a new name gets: the caller's mode and ids, or the
    /// mount's defaults.
    pub fn creator(&self, mode: Option<u16>) -> Creator {
        Creator {
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            mode,
        }
    }

    /// `who` making a name of `kind` in directory `p`: a set-group-ID
    /// directory gives new names its group, and new directories the bit
    /// too (what Linux file systems do). The directory's attributes are
    /// those in memory: it was looked up to make a name in it.
    fn inherited(&self, p: &Inode, kind: Kind, who: &Creator) -> Creator {
        let entry = self.meta_home(&p.loc).and_then(|(dir, name)| {
            let table = self.meta.known(&dir)?;
            described(&table, name, Kind::Dir, None, false).cloned()
        });
        let perm = p
            .overrides
            .perm
            .or(entry.as_ref().and_then(|e| e.mode))
            .unwrap_or(self.default_perm(Kind::Dir));
        let gid = p
            .overrides
            .gid
            .or(entry.as_ref().and_then(|e| e.gid))
            .unwrap_or(self.cfg.gid);
        let mut who = *who;
        if perm & 0o2000 != 0 {
            who.gid = gid;
            if kind == Kind::Dir {
                who.mode = Some(who.mode.unwrap_or(self.default_perm(kind)) | 0o2000);
            }
        }
        who
    }

    /// The metadata entry of a new name of `kind` made by `who` (nothing
    /// set where it is the mount's default).
    fn new_entry(&self, p: &Inode, kind: Kind, who: &Creator) -> MetaEntry {
        let who = self.inherited(p, kind, who);
        MetaEntry {
            kind: EntryType::of(kind),
            mode: who
                .mode
                .filter(|m| kind != Kind::Symlink && *m != self.default_perm(kind)),
            uid: Some(who.uid).filter(|u| *u != self.cfg.uid),
            gid: Some(who.gid).filter(|g| *g != self.cfg.gid),
            ..Default::default()
        }
    }

    /// Records the entry of a name just made in `dir` (an entry with
    /// nothing but defaults clears it: `MetaStore::update` keeps none).
    async fn set_entry(&self, dir: &Location, name: &str, entry: MetaEntry) -> FsResult<()> {
        self.meta
            .update(dir, name, move |e| *e = Some(entry.clone()))
            .await
    }

    /// Where a new file-like name goes: a live directory of a bucket, a
    /// valid name, a key that fits.
    fn new_name_place<'a>(
        &self,
        parent: u64,
        name: &'a OsStr,
    ) -> FsResult<(Inode, &'a str, Location)> {
        self.writable()?;
        let p = self.dir_inode(parent)?;
        let name = self.name(name)?;
        if p.loc.bucket.is_empty() {
            // Only buckets live at the root of an all-buckets mount.
            return Err(FsError::NotPermitted);
        }
        let loc = p.loc.child(name, Kind::File);
        Self::key_fits(&loc)?;
        Ok((p, name, loc))
    }

    /// create(2) as `who`, with its mode (after umask).
    pub async fn create_as(
        &self,
        parent: u64,
        name: &OsStr,
        who: &Creator,
    ) -> FsResult<(Attr, u64)> {
        let (p, name, loc) = self.new_name_place(parent, name)?;
        let stat = Stat {
            size: 0,
            mtime: SystemTime::now(),
            etag: None,
        };
        let file = DirtyFile::new(self.uploads.clone(), loc.clone(), None)?;
        // New content (even empty), written at the first close after a
        // write, or at the last release.
        file.set_size(0).await?;
        file.hold_empty();
        self.changed(&loc, Entry::File(stat.clone()));
        // A created file is a new inode, whatever had the name before.
        self.inodes.lock().expect("inode lock").unlink(parent, name);
        let entry = self.new_entry(&p, Kind::File, who);
        self.set_entry(&p.loc, name, entry.clone()).await?;
        self.entries_changed(&[parent]);
        let ino = self
            .remember(
                parent,
                name,
                Kind::File,
                loc.clone(),
                stat.clone(),
                &Table::new(),
            )
            .ino;
        let (fh, _) = self.open.open(ino, Some(&loc), None, Some(file), true);
        let attr = self.attr(
            ino,
            Kind::File,
            &stat,
            Some(&entry),
            &Overrides::default(),
            false,
        );
        Ok((attr, fh))
    }

    /// Makes the content of `name` in `parent` local if the file is open,
    /// so its handles keep reading it once its object is deleted or
    /// replaced (POSIX keeps an unlinked file until its last close). The
    /// buffer returned is then unlinked by the caller.
    async fn keep_open_content(&self, parent: u64, name: &str) -> FsResult<Option<Arc<DirtyFile>>> {
        let Some(node) = self
            .inodes
            .lock()
            .expect("inode lock")
            .child(parent, name)
            .cloned()
        else {
            return Ok(None);
        };
        // The handles read the version they opened.
        let base = match self.open.any_reader(node.ino) {
            Some(r) => (r.etag(), r.size()),
            None => (node.stat.etag.clone(), node.stat.size),
        };
        let make = || DirtyFile::new(self.uploads.clone(), node.loc.clone(), Some(base.clone()));
        let Some(file) = self.open.buffer_or_insert(node.ino, make)? else {
            return Ok(None);
        };
        file.keep_all().await?;
        Ok(Some(file))
    }

    pub async fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.writable()?;
        let p = self.dir_inode(parent)?;
        let name = self.name(name)?;
        match self.resolve(&p.loc, name).await? {
            Entry::Missing => return Err(FsError::NotFound),
            Entry::Dir => return Err(FsError::IsDir),
            Entry::File(_) => {}
        }
        let loc = p.loc.child(name, Kind::File);
        let open = self.keep_open_content(parent, name).await?;
        // No commit of the open file may bring the object back after the
        // delete: commits wait, and then find the file unlinked.
        let _paused = match &open {
            Some(file) => Some(file.pause_commits().await),
            None => None,
        };
        if let Some(file) = &open {
            file.unlink();
        }
        if let Err(e) = self.client.delete_object(&loc.bucket, &loc.key, None).await {
            if let Some(file) = &open {
                file.relink();
            }
            return Err(e.into());
        }
        self.inodes.lock().expect("inode lock").unlink(parent, name);
        self.changed(&loc, Entry::Missing);
        self.entries_changed(&[parent]);
        self.meta.update(&p.loc, name, |e| *e = None).await
    }

    pub async fn mkdir(&self, parent: u64, name: &OsStr) -> FsResult<Attr> {
        self.mkdir_as(parent, name, &self.creator(None)).await
    }

    /// mkdir(2) as `who`, with its mode (after umask).
    pub async fn mkdir_as(&self, parent: u64, name: &OsStr, who: &Creator) -> FsResult<Attr> {
        self.writable()?;
        let p = self.dir_inode(parent)?;
        let name = self.name(name)?;
        let loc = p.loc.child(name, Kind::Dir);
        if p.loc.bucket.is_empty() {
            self.client
                .create_bucket(name)
                .await
                .map_err(|e| bucket_error(&e, name).unwrap_or(FsError::S3(e)))?;
            self.cache.invalidate(&p.loc.bucket, name, "");
            return Ok(self.remember(parent, name, Kind::Dir, loc, self.dir_stat(), &Table::new()));
        }
        Self::key_fits(&loc)?;
        if self.resolve(&p.loc, name).await? != Entry::Missing {
            return Err(FsError::Exists);
        }
        self.client
            .put_object_typed(&loc.bucket, &loc.key, Bytes::new(), DIR_MARKER_TYPE)
            .await?;
        self.changed(&loc, Entry::Dir);
        // Nothing was under the new name: its listing is assumed empty, so
        // that filling it (cp -r) asks nothing per name; a name it lacks is
        // checked once in the store (see `Fs::resolve`).
        self.cache.put_assumed_listing(&loc.bucket, &loc.key);
        // Nor any metadata.
        self.meta.seen_in_listing(&loc, &[]);
        let entry = self.new_entry(&p, Kind::Dir, who);
        self.set_entry(&p.loc, name, entry.clone()).await?;
        let table = Table::one(name, entry);
        let mut attr = self.remember(parent, name, Kind::Dir, loc, self.dir_stat(), &table);
        let now = self.entries_changed(&[parent, attr.ino]);
        (attr.atime, attr.mtime, attr.ctime) = (now, now, now);
        Ok(attr)
    }

    /// symlink(2): an object at the name holding the target (what other
    /// S3 clients see), made a link by its entry in the directory's
    /// metadata, written after it.
    pub async fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &std::path::Path,
        who: &Creator,
    ) -> FsResult<Attr> {
        let target = target
            .to_str()
            .ok_or_else(|| FsError::InvalidName("a link target must be UTF-8".to_string()))?;
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        let own = MetaEntry {
            target: Some(target.to_string()),
            ..Default::default()
        };
        let body = Bytes::from(target.to_string());
        self.make_node(parent, name, body, Kind::Symlink, who, own)
            .await
    }

    /// mknod(2) of a fifo, socket or device: an empty object at the name,
    /// its kind in the directory's metadata.
    pub async fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        rdev: u32,
        who: &Creator,
    ) -> FsResult<Attr> {
        if matches!(kind, Kind::Dir | Kind::Symlink) {
            return Err(FsError::NotPermitted);
        }
        if kind == Kind::File {
            // An empty file that is in the bucket when the call returns
            // (its create alone would hold it back until release).
            let (attr, fh) = self.create_as(parent, name, who).await?;
            let saved = match self.open.target(fh) {
                Ok((ino, super::open::Target::Buffer(file), _)) => self.commit(ino, &file).await,
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            self.release(fh).await;
            return saved.map(|()| attr);
        }
        let own = MetaEntry {
            rdev: matches!(kind, Kind::CharDev | Kind::BlockDev).then_some(rdev),
            ..Default::default()
        };
        self.make_node(parent, name, Bytes::new(), kind, who, own)
            .await
    }

    /// A name whose kind lives in the metadata (its link target or device
    /// number in `own`): the object first, then the entry naming its ETag
    /// (a crash between leaves a plain file).
    async fn make_node(
        &self,
        parent: u64,
        name: &OsStr,
        body: Bytes,
        kind: Kind,
        who: &Creator,
        own: MetaEntry,
    ) -> FsResult<Attr> {
        let (p, name, loc) = self.new_name_place(parent, name)?;
        let mut entry = MetaEntry {
            target: own.target,
            rdev: own.rdev,
            ..self.new_entry(&p, kind, who)
        };
        if !has_room(&p.loc.key) {
            return Err(FsError::NameTooLong);
        }
        if self.resolve(&p.loc, name).await? != Entry::Missing {
            return Err(FsError::Exists);
        }
        let size = body.len() as u64;
        let out = self.client.put_object(&loc.bucket, &loc.key, body).await?;
        let stat = Stat {
            size,
            mtime: SystemTime::now(),
            etag: out.etag.clone(),
        };
        entry.etag = out.etag;
        // Its time as this mount shows it now, not the store's
        // LastModified a moment later.
        entry.mtime_ns = Some(to_ns(stat.mtime));
        self.changed(&loc, Entry::File(stat.clone()));
        self.set_entry(&p.loc, name, entry.clone()).await?;
        self.inodes.lock().expect("inode lock").unlink(parent, name);
        self.entries_changed(&[parent]);
        Ok(self.remember(
            parent,
            name,
            Kind::File,
            loc,
            stat,
            &Table::one(name, entry),
        ))
    }

    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.writable()?;
        let p = self.dir_inode(parent)?;
        let name = self.name(name)?;
        if p.loc.bucket.is_empty() {
            self.client
                .delete_bucket(name)
                .await
                .map_err(|e| bucket_error(&e, name).unwrap_or(FsError::S3(e)))?;
            self.cache.invalidate(&p.loc.bucket, name, "");
            return Ok(());
        }
        match self.resolve(&p.loc, name).await? {
            Entry::Missing => return Err(FsError::NotFound),
            Entry::File(_) => return Err(FsError::NotDir),
            Entry::Dir => {}
        }
        let loc = p.loc.child(name, Kind::Dir);
        let metas = self.ensure_empty(&loc).await?;
        // Its metadata and its marker, if any (deleting a missing key is
        // no error).
        self.meta.remove_dir(&loc, &metas).await?;
        self.client
            .delete_object(&loc.bucket, &loc.key, None)
            .await?;
        self.changed(&loc, Entry::Missing);
        self.entries_changed(&[parent]);
        let (_, path) = split_key(&loc.key);
        self.cache.invalidate(&loc.bucket, path, &loc.key);
        self.meta.update(&p.loc, name, |e| *e = None).await
    }

    /// ENOTEMPTY unless the directory at `loc` holds nothing but its marker
    /// and metadata; returns the names of its metadata objects.
    async fn ensure_empty(&self, loc: &Location) -> FsResult<Vec<String>> {
        // A file created here and not yet closed has no object yet.
        if !self.open.written_under(loc).is_empty() {
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

    pub async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> FsResult<()> {
        self.writable()?;
        let p = self.dir_inode(parent)?;
        let np = self.dir_inode(new_parent)?;
        let name = self.name(name)?;
        let new_name = self.name(new_name)?;
        if p.loc.bucket.is_empty() || np.loc.bucket.is_empty() {
            // Buckets cannot be renamed.
            return Err(FsError::NotPermitted);
        }
        let src = self.resolve(&p.loc, name).await?;
        let dst = self.resolve(&np.loc, new_name).await?;
        if no_replace && dst != Entry::Missing {
            return Err(FsError::Exists);
        }
        match src {
            Entry::Missing => Err(FsError::NotFound),
            Entry::File(_) => {
                if dst == Entry::Dir {
                    return Err(FsError::IsDir);
                }
                let from = p.loc.child(name, Kind::File);
                let to = np.loc.child(new_name, Kind::File);
                Self::key_fits(&to)?;
                let source = self.open.written_under(&from);
                for (ino, file) in &source {
                    self.commit(*ino, file).await?;
                }
                // The file replaced keeps its content for its open handles.
                let replaced = if matches!(dst, Entry::File(_)) {
                    self.keep_open_content(new_parent, new_name).await?
                } else {
                    None
                };
                // No commit of either file may land between the copy and
                // the moves below (it would write to a name that is gone).
                let mut paused = Vec::new();
                for f in source.iter().map(|(_, f)| f).chain(&replaced) {
                    paused.push(f.pause_commits().await);
                }
                let head = self
                    .client
                    .head_object(&from.bucket, &from.key, None)
                    .await?;
                let new_etag = self
                    .copy_object(&from, &to, head.size, head.etag.clone())
                    .await?;
                if let Some(f) = &replaced {
                    f.unlink();
                }
                self.open.relocate(
                    &from,
                    &to,
                    &[(from.key.clone(), head.etag.clone(), new_etag.clone())],
                );
                self.moved(parent, name, new_parent, new_name, &to);
                // What this mount says of the file (and the entry a chmod
                // records) names the copy now.
                self.inodes
                    .lock()
                    .expect("inode lock")
                    .restamp_child(new_parent, new_name, &head.etag, &new_etag);
                drop(paused);
                self.client
                    .delete_object(&from.bucket, &from.key, None)
                    .await?;
                self.changed(&from, Entry::Missing);
                self.changed(
                    &to,
                    Entry::File(Stat {
                        size: head.size,
                        mtime: SystemTime::now(),
                        etag: new_etag.clone(),
                    }),
                );
                // The entry follows the object (a link stays a link), and
                // the time is the source's, as rename(2) keeps it.
                let table = self.meta.table(&p.loc).await?;
                let mut entry = described(&table, name, Kind::File, head.etag.as_deref(), false)
                    .cloned()
                    .unwrap_or_default();
                entry.etag = new_etag;
                if entry.mtime_ns.is_none() {
                    entry.mtime_ns = head.last_modified.map(to_ns);
                }
                self.meta.update(&p.loc, name, |e| *e = None).await?;
                self.meta
                    .update(&np.loc, new_name, move |e| *e = Some(entry.clone()))
                    .await?;
                Ok(())
            }
            Entry::Dir => {
                if matches!(dst, Entry::File(_)) {
                    return Err(FsError::NotDir);
                }
                let from = p.loc.child(name, Kind::Dir);
                let to = np.loc.child(new_name, Kind::Dir);
                if from.bucket == to.bucket && to.key.starts_with(&from.key) {
                    return Err(FsError::InvalidName(
                        "a directory cannot move into itself".to_string(),
                    ));
                }
                if dst == Entry::Dir {
                    // The target's metadata goes with it: its removals must
                    // not win over the entries moved in.
                    let metas = self.ensure_empty(&to).await?;
                    self.meta.remove_dir(&to, &metas).await?;
                }
                let table = self.meta.table(&p.loc).await?;
                let entry = described(&table, name, Kind::Dir, None, false).cloned();
                let copies = self.rename_dir(&from, &to).await?;
                self.meta.update(&p.loc, name, |e| *e = None).await?;
                self.meta
                    .update(&np.loc, new_name, move |e| *e = entry.clone())
                    .await?;
                self.moved(parent, name, new_parent, new_name, &to);
                let mut inodes = self.inodes.lock().expect("inode lock");
                inodes.rebase(&from, &to, &copies);
                drop(inodes);
                self.cache.clear();
                Ok(())
            }
        }
    }

    /// The inode of `name` now lives at `to`.
    fn moved(&self, parent: u64, name: &str, new_parent: u64, new_name: &str, to: &Location) {
        self.entries_changed(&[parent, new_parent]);
        let mut inodes = self.inodes.lock().expect("inode lock");
        match inodes.child(parent, name).map(|n| n.ino) {
            Some(ino) => inodes.rename(ino, new_parent, new_name, to.clone(), SystemTime::now()),
            // The kernel did not hold the source: the target's name is
            // gone from whatever inode had it all the same.
            None => {
                inodes.unlink(new_parent, new_name);
            }
        }
    }

    /// Copies every key under `from` to `to`, moves the open files along,
    /// then deletes the sources. Returns what was copied.
    async fn rename_dir(&self, from: &Location, to: &Location) -> FsResult<Copies> {
        for (ino, file) in self.open.written_under(from) {
            self.commit(ino, &file).await?;
        }
        self.meta.flush_under(&from.bucket, &from.key).await?;
        let mut keys = Vec::new();
        let mut params = ListObjectsParams {
            prefix: from.key.clone(),
            ..Default::default()
        };
        loop {
            let page = self.client.list_objects(&from.bucket, &params).await?;
            keys.extend(page.objects);
            match page.next_continuation_token {
                Some(t) => params.continuation_token = Some(t),
                None => break,
            }
        }
        // Nothing is copied unless everything fits under the new name.
        let at = |key: &str| Location {
            bucket: from.bucket.clone(),
            key: key.to_string(),
        };
        let moved = |key: &str| at(key).rebased(from, to).expect("listed under the prefix");
        for o in &keys {
            Self::key_fits(&moved(&o.key))?;
        }
        let (metas, objects): (Vec<_>, Vec<_>) = keys
            .iter()
            .cloned()
            .partition(|o| o.key.rsplit('/').next().is_some_and(is_meta_name));
        let copied = futures::stream::iter(objects)
            .map(|o| {
                let src = at(&o.key);
                let dst = moved(&o.key);
                async move {
                    let new = self.copy_object(&src, &dst, o.size, o.etag.clone()).await?;
                    Ok::<_, FsError>((o.key, o.etag, new))
                }
            })
            .buffer_unordered(RENAME_PARALLEL)
            .try_collect::<Vec<_>>()
            .await?;
        // Metadata after the objects it describes, naming the copies.
        let by_key: HashMap<&str, _> = copied
            .iter()
            .map(|(k, before, after)| (k.as_str(), (before, after)))
            .collect();
        futures::stream::iter(metas)
            .map(|o| self.move_meta(from, to, o.key, &by_key))
            .buffer_unordered(RENAME_PARALLEL)
            .try_collect::<Vec<()>>()
            .await?;
        self.meta.forget_under(&from.bucket, &from.key);
        self.meta.forget_under(&to.bucket, &to.key);
        // Open files follow their objects before the sources go.
        self.open.relocate(from, to, &copied);
        // Every copy is in place: only now do the sources go.
        let ids: Vec<ObjectIdentifier> =
            keys.iter().map(|o| ObjectIdentifier::key(&o.key)).collect();
        for batch in ids.chunks(limits::MAX_DELETE_OBJECTS) {
            let out = self.client.delete_objects(&from.bucket, batch).await?;
            if let Some(e) = out.errors.first() {
                return Err(FsError::Partial(format!(
                    "{} of {} keys not deleted after the copy, first {}: {} {}",
                    out.errors.len(),
                    batch.len(),
                    e.key,
                    e.code,
                    e.message
                )));
            }
        }
        Ok(copied
            .into_iter()
            .map(|(key, before, after)| (key, (before, after)))
            .collect())
    }

    /// Writes the metadata object `key` under `from` to its place under
    /// `to`, its entries naming the ETags of the copies (a copy of a
    /// multipart object has another ETag).
    async fn move_meta(
        &self,
        from: &Location,
        to: &Location,
        key: String,
        copied: &HashMap<&str, (&Option<String>, &Option<String>)>,
    ) -> FsResult<()> {
        let new_key = Location {
            bucket: from.bucket.clone(),
            key: key.clone(),
        }
        .rebased(from, to)
        .expect("listed under the prefix")
        .key;
        let name_len = key.rsplit('/').next().map_or(0, str::len);
        let dir = &key[..key.len() - name_len];
        let got = match self
            .client
            .get_object(&from.bucket, &key, &Default::default())
            .await
        {
            Ok(got) => got,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let body = match parse(&got.body) {
            Ok(mut table) => {
                table.edit_entries(|name, e| {
                    if let Some((before, after)) = copied.get(format!("{dir}{name}").as_str())
                        && e.etag == **before
                    {
                        e.etag.clone_from(after);
                    }
                });
                render(&table)
            }
            // Not ours to fix: moved as it is.
            Err(_) => got.body,
        };
        self.client
            .put_object_typed(&to.bucket, &new_key, body, "application/json")
            .await?;
        Ok(())
    }

    /// Server-side copy, guarded by the source ETag: PUT Object Copy up to
    /// 5 GiB, multipart UploadPartCopy above. Returns the copy's ETag.
    async fn copy_object(
        &self,
        from: &Location,
        to: &Location,
        size: u64,
        etag: Option<String>,
    ) -> FsResult<Option<String>> {
        let source = CopySource {
            bucket: from.bucket.to_string(),
            key: from.key.clone(),
            version_id: None,
            if_match: etag,
        };
        if size <= limits::MAX_PART_SIZE {
            let out = self
                .client
                .copy_object(&to.bucket, &to.key, &source)
                .await?;
            return Ok(out.etag);
        }
        let pieces = (0..size.div_ceil(COPY_PART))
            .map(|i| PartSource::Copy(i * COPY_PART..((i + 1) * COPY_PART).min(size)))
            .collect();
        let upload = Multipart::create(
            self.client.clone(),
            &self.uploads.open,
            to.bucket.clone(),
            to.key.clone(),
        )
        .await?;
        upload
            .run(pieces, Some(&source), COPY_PARALLEL, |_| async {
                Err::<(bytes::Bytes, ()), _>(FsError::Internal("a copy uploads nothing"))
            })
            .await
    }
}

/// What a bucket error means at the root of an all-buckets mount.
fn bucket_error(e: &S3Error, name: &str) -> Option<FsError> {
    use crate::s3::S3ErrorCode as C;
    match e.code() {
        Some(C::InvalidBucketName) => {
            tracing::warn!(name, "not a valid bucket name");
            Some(FsError::InvalidName(name.to_string()))
        }
        Some(C::BucketAlreadyExists | C::BucketAlreadyOwnedByYou) => Some(FsError::Exists),
        Some(C::BucketNotEmpty) => Some(FsError::NotEmpty),
        // Any other refusal of a bucket name is about the name (the
        // caller's argument), whatever code the store gives it.
        _ if e.kind() == ErrorKind::InvalidRequest => {
            tracing::warn!(name, error = %e, "the store refused the bucket name");
            Some(FsError::InvalidName(name.to_string()))
        }
        _ if e.kind() == ErrorKind::NoSuchBucket => Some(FsError::NotFound),
        _ => None,
    }
}
