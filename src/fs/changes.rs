//! Making and removing names, and changing their attributes: create,
//! mkdir, unlink, rmdir, symlink, mknod, setattr. [`Changes`] borrows the
//! namespace's state from `Names`.
//!
//! - mkdir writes the marker object `dir/` (Content-Type
//!   `application/x-directory`), so an empty directory persists;
//!   rmdir removes it once the directory holds nothing else. At the root of
//!   an all-buckets mount they create and delete buckets.
//! - symlinks, fifos, sockets and devices are an object at the name and
//!   their kind in the directory's metadata (`fs/meta.rs`).
//! - chmod, chown and utimes go to the directory's metadata; truncate(2)
//!   is saved at once, ftruncate at the handle's close.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::attr::Attr;
use super::attr::{Overrides, SetAttr, described, shown_kind};
use super::cache::Entry;
use super::error::{FsError, FsResult};
use super::inode::{Ino, Inode, Kind, Location, Stat, Tree, split_key};
use super::meta::{self, EntryType, MetaEntry, Table, has_room, to_ns};
use super::names::Names;
use super::open::Target;
use super::upload::DirtyFile;
use crate::s3::{ErrorKind, S3Error};

/// Who makes a new name: the calling process's ids, and the mode the
/// kernel passes (umask applied); `None` for the mount's default.
#[derive(Debug, Clone, Copy)]
pub struct Creator {
    pub uid: u32,
    pub gid: u32,
    pub mode: Option<u16>,
}

/// The Content-Type of directory markers (`dir/`, empty): what s3fs and
/// other tools take for a directory (without it s3fs shows the marker as a
/// regular file and cannot copy into it).
pub const DIR_MARKER_TYPE: &str = "application/x-directory";

pub struct Changes {
    names: Arc<Names>,
}

impl Changes {
    pub fn new(names: Arc<Names>) -> Self {
        Changes { names }
    }

    /// The attributes a new name gets: the caller's mode and ids, or the
    /// mount's defaults.
    pub fn creator(&self, mode: Option<u16>) -> Creator {
        Creator {
            uid: self.names.cfg.uid,
            gid: self.names.cfg.gid,
            mode,
        }
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
        let file = DirtyFile::new(self.names.files.uploads().clone(), loc.clone(), None)?;
        // New content (even empty), written at the first close after a
        // write, or at the last release.
        file.set_size(0).await?;
        file.hold_empty();
        file.set_fresh(true);
        self.names.changed(&loc, Entry::File(stat.clone()));
        // A created file is a new inode, whatever had the name before.
        self.names.inodes.unlink(parent, name);
        let entry = self.new_entry(&p, Kind::File, who);
        self.set_entry(&p.loc, name, entry.clone()).await?;
        self.names.entries_changed(&[parent]);
        let ino = self
            .names
            .remember(
                parent,
                name,
                Kind::File,
                loc.clone(),
                stat.clone(),
                &Table::new(),
            )
            .ino;
        let (fh, _) = self
            .names
            .open()
            .open(ino, Some(&loc), None, Some(file), true);
        let attr = self.names.attr(
            ino,
            Kind::File,
            &stat,
            Some(&entry),
            &Overrides::default(),
            false,
        );
        Ok((attr, fh))
    }

    /// `who` making a name of `kind` in directory `p`: a set-group-ID
    /// directory gives new names its group, and new directories the bit
    /// too (what Linux file systems do). The directory's attributes are
    /// those in memory: it was looked up to make a name in it.
    pub(super) fn inherited(&self, p: &Inode, kind: Kind, who: &Creator) -> Creator {
        let entry = self.names.meta_home(&p.loc).and_then(|(dir, name)| {
            let table = self.names.meta.known(&dir)?;
            described(&table, name, Kind::Dir, None, false).cloned()
        });
        let perm = p
            .overrides
            .perm
            .or(entry.as_ref().and_then(|e| e.mode))
            .unwrap_or(self.names.default_perm(Kind::Dir));
        let gid = p
            .overrides
            .gid
            .or(entry.as_ref().and_then(|e| e.gid))
            .unwrap_or(self.names.cfg.gid);
        let mut who = *who;
        if perm & 0o2000 != 0 {
            who.gid = gid;
            if kind == Kind::Dir {
                who.mode = Some(who.mode.unwrap_or(self.names.default_perm(kind)) | 0o2000);
            }
        }
        who
    }

    /// The metadata entry of a new name of `kind` made by `who` (nothing
    /// set where it is the mount's default).
    pub(super) fn new_entry(&self, p: &Inode, kind: Kind, who: &Creator) -> MetaEntry {
        let who = self.inherited(p, kind, who);
        MetaEntry {
            kind: EntryType::of(kind),
            mode: who
                .mode
                .filter(|m| kind != Kind::Symlink && *m != self.names.default_perm(kind)),
            uid: Some(who.uid).filter(|u| *u != self.names.cfg.uid),
            gid: Some(who.gid).filter(|g| *g != self.names.cfg.gid),
            ..Default::default()
        }
    }

    /// Records the entry of a name just made in `dir` (an entry with
    /// nothing but defaults clears it: `MetaStore::update` keeps none).
    pub(super) async fn set_entry(
        &self,
        dir: &Location,
        name: &str,
        entry: MetaEntry,
    ) -> FsResult<()> {
        self.names
            .meta
            .update(dir, name, move |e| *e = Some(entry.clone()))
            .await
    }

    /// Where a new file-like name goes: a live directory of a bucket, a
    /// valid name, a key that fits.
    pub(super) fn new_name_place<'a>(
        &self,
        parent: u64,
        name: &'a OsStr,
    ) -> FsResult<(Inode, &'a str, Location)> {
        self.names.writable()?;
        let p = self.names.dir_inode(parent)?;
        let name = self.names.name(name)?;
        if p.tree() == Tree::Buckets {
            // Only buckets live at the root of an all-buckets mount.
            return Err(FsError::NotPermitted);
        }
        let loc = p.loc.child(name, Kind::File);
        Names::key_fits(&loc)?;
        Ok((p, name, loc))
    }

    pub async fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.names.writable()?;
        let p = self.names.dir_inode(parent)?;
        let name = self.names.name(name)?;
        match self.names.resolver.resolve(&p.loc, name).await? {
            Entry::Missing => return Err(FsError::NotFound),
            Entry::Dir => return Err(FsError::IsDir),
            Entry::File(_) => {}
        }
        let loc = p.loc.child(name, Kind::File);
        let open = self.names.keep_open_content(parent, name).await?;
        // No commit of the open file may bring the object back after the
        // delete: commits wait, and then find the file unlinked.
        let _paused = match &open {
            Some(file) => Some(file.pause_commits().await),
            None => None,
        };
        if let Some(file) = &open {
            file.unlink();
        }
        if let Err(e) = self
            .names
            .client
            .delete_object(&loc.bucket, &loc.key, None)
            .await
        {
            if let Some(file) = &open {
                file.relink();
            }
            return Err(e.into());
        }
        // Nothing journaled of it may come back after a crash.
        if let (Some(file), Some(wb)) = (&open, self.names.files.write_back()) {
            wb.unlinked(file, self.names.open()).await?;
        }
        self.names.inodes.unlink(parent, name);
        self.names.changed(&loc, Entry::Missing);
        self.names.entries_changed(&[parent]);
        self.names.meta.update(&p.loc, name, |e| *e = None).await
    }

    /// mkdir(2) as `who`, with its mode (after umask).
    pub async fn mkdir_as(&self, parent: u64, name: &OsStr, who: &Creator) -> FsResult<Attr> {
        self.names.writable()?;
        let p = self.names.dir_inode(parent)?;
        let name = self.names.name(name)?;
        let loc = p.loc.child(name, Kind::Dir);
        if p.tree() == Tree::Buckets {
            let made = self.names.client.create_bucket(name).await;
            self.bucket_changed(&p, name, made)?;
            return Ok(self.names.remember(
                parent,
                name,
                Kind::Dir,
                loc,
                self.names.dir_stat(),
                &Table::new(),
            ));
        }
        Names::key_fits(&loc)?;
        if self.names.resolver.resolve(&p.loc, name).await? != Entry::Missing {
            return Err(FsError::Exists);
        }
        self.names
            .client
            .put_object_typed(&loc.bucket, &loc.key, Bytes::new(), DIR_MARKER_TYPE)
            .await?;
        self.names.changed(&loc, Entry::Dir);
        // Nothing was under the new name: its listing is assumed empty, so
        // that filling it (cp -r) asks nothing per name; a name it lacks is
        // checked once in the store (see `Resolver::resolve`).
        self.names
            .resolver
            .cache
            .put_assumed_listing(&loc.bucket, &loc.key);
        // Nor any metadata.
        self.names.meta.seen_in_listing(&loc, &[]);
        let entry = self.new_entry(&p, Kind::Dir, who);
        self.set_entry(&p.loc, name, entry.clone()).await?;
        let table = Table::one(name, entry);
        let mut attr =
            self.names
                .remember(parent, name, Kind::Dir, loc, self.names.dir_stat(), &table);
        let now = self.names.entries_changed(&[parent, attr.ino]);
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
            // `Fs::mknod` makes regular files (a create, then its commit).
            return Err(FsError::Internal("mknod of a regular file in Changes"));
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
    pub(super) async fn make_node(
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
        if self.names.resolver.resolve(&p.loc, name).await? != Entry::Missing {
            return Err(FsError::Exists);
        }
        let size = body.len() as u64;
        let out = self
            .names
            .client
            .put_object(&loc.bucket, &loc.key, body)
            .await?;
        let stat = Stat {
            size,
            mtime: SystemTime::now(),
            etag: out.etag.clone(),
        };
        entry.etag = out.etag;
        // Its time as this mount shows it now, not the store's
        // LastModified a moment later.
        entry.mtime_ns = Some(to_ns(stat.mtime));
        self.names.changed(&loc, Entry::File(stat.clone()));
        self.set_entry(&p.loc, name, entry.clone()).await?;
        self.names.inodes.unlink(parent, name);
        self.names.entries_changed(&[parent]);
        Ok(self.names.remember(
            parent,
            name,
            Kind::File,
            loc,
            stat,
            &Table::one(name, entry),
        ))
    }

    /// A bucket made or removed at the root `p` of an all-buckets mount:
    /// what the store's answer means for the name, and the root's listing
    /// forgotten.
    fn bucket_changed(&self, p: &Inode, name: &str, result: Result<(), S3Error>) -> FsResult<()> {
        result.map_err(|e| bucket_error(&e, name).unwrap_or(FsError::S3(e)))?;
        self.names
            .resolver
            .cache
            .invalidate(&p.loc.bucket, name, "");
        Ok(())
    }

    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.names.writable()?;
        let p = self.names.dir_inode(parent)?;
        let name = self.names.name(name)?;
        if p.tree() == Tree::Buckets {
            let removed = self.names.client.delete_bucket(name).await;
            return self.bucket_changed(&p, name, removed);
        }
        match self.names.resolver.resolve(&p.loc, name).await? {
            Entry::Missing => return Err(FsError::NotFound),
            Entry::File(_) => return Err(FsError::NotDir),
            Entry::Dir => {}
        }
        let loc = p.loc.child(name, Kind::Dir);
        let metas = self.names.resolver.ensure_empty(&loc).await?;
        // Its metadata and its marker, if any (deleting a missing key is
        // no error).
        self.names.meta.remove_dir(&loc, &metas).await?;
        self.names
            .client
            .delete_object(&loc.bucket, &loc.key, None)
            .await?;
        self.names.changed(&loc, Entry::Missing);
        self.names.entries_changed(&[parent]);
        let (_, path) = split_key(&loc.key);
        self.names
            .resolver
            .cache
            .invalidate(&loc.bucket, path, &loc.key);
        self.names.meta.update(&p.loc, name, |e| *e = None).await
    }

    /// truncate (in the bucket), chmod, chown and utimes (in the directory's
    /// metadata).
    pub async fn setattr(&self, ino: Ino, fh: Option<u64>, set: SetAttr) -> FsResult<Attr> {
        let SetAttr {
            size,
            perm,
            uid,
            gid,
            atime,
            mtime,
        } = set;
        if self.names.cfg.read_only {
            return Err(FsError::ReadOnly);
        }
        let node = self.names.inode(ino)?;
        if node.tree() == Tree::History {
            return Err(FsError::ReadOnly);
        }
        if let Some(new_size) = size {
            if node.kind == Kind::Dir {
                return Err(FsError::IsDir);
            }
            // Through a handle open for writing (ftruncate), the change is
            // saved at that handle's close, like its writes; any other way
            // (truncate(2)) no close will follow, so it is saved now.
            let through_writer = fh.is_some_and(
                |fh| matches!(self.names.open().target(fh), Ok((i, Target::Buffer(_), true)) if i == ino),
            );
            match self.names.open().buffer(ino) {
                Some(file) => {
                    self.names
                        .saving(ino, &file, || file.set_size(new_size))
                        .await?;
                    if !through_writer {
                        self.names.commit(ino, &file).await?;
                    }
                }
                None => {
                    let stat = self.names.refresh(&node, false).await?;
                    let make = || {
                        DirtyFile::new(
                            self.names.files.uploads().clone(),
                            node.loc.clone(),
                            Some((stat.etag.clone(), stat.size)),
                        )
                    };
                    // Handles open for reading read the truncated file from
                    // now on.
                    let file = match self.names.open().buffer_or_insert(ino, make)? {
                        Some(file) => file,
                        None => make()?,
                    };
                    file.set_size(new_size).await?;
                    self.names.commit(ino, &file).await?;
                }
            }
        }
        let changes = set.changes_meta();
        let now = SystemTime::now();
        let home = self.names.meta_home(&node.loc).filter(|_| !node.unlinked);
        if changes && let Some((dir, name)) = &home {
            // Recorded for the object as it is now; the entry changed is the
            // one in the table at the time of the change, so two changes at
            // once both hold.
            let stat = self.names.refresh(&node, false).await?;
            let kind = node.kind;
            let storage = if kind == Kind::Dir {
                Kind::Dir
            } else {
                Kind::File
            };
            let writing = self.names.open().buffer(ino).is_some();
            let default_perm = self.names.default_perm(kind);
            let (default_uid, default_gid) = (self.names.cfg.uid, self.names.cfg.gid);
            self.names
                .meta
                .update(dir, name, move |e| {
                    let mut m = e
                        .take()
                        .filter(|m| {
                            m.applies(storage, stat.etag.as_deref(), writing)
                                && shown_kind(storage, m) == kind
                        })
                        .unwrap_or_else(|| MetaEntry {
                            kind: meta::EntryType::of(kind),
                            ..Default::default()
                        });
                    if kind != Kind::Dir {
                        m.etag.clone_from(&stat.etag);
                    }
                    // The defaults are not recorded (rsync sets every mode).
                    m.mode = perm.or(m.mode).filter(|p| *p != default_perm);
                    m.uid = uid.or(m.uid).filter(|u| *u != default_uid);
                    m.gid = gid.or(m.gid).filter(|g| *g != default_gid);
                    m.mtime_ns = mtime.map(meta::to_ns).or(m.mtime_ns);
                    m.atime_ns = atime.map(meta::to_ns).or(m.atime_ns);
                    m.ctime_ns = Some(meta::to_ns(now));
                    *e = Some(m);
                })
                .await?;
        }
        let writing = self.names.open().buffer(ino).is_some();
        // Nothing holds an unlinked file's attributes, nor the mount root's:
        // they live in memory while the kernel holds the inode (failing would
        // fail `cp -a` and `rsync -a` into the root).
        let homeless = home.is_none();
        let mtime_here = writing || node.kind == Kind::Dir;
        let (stat, ov) = self
            .names
            .inodes
            .set_attrs(ino, &set, homeless, mtime_here, now)
            .ok_or(FsError::NotFound)?;
        let meta = self.names.meta_of(&node).await?;
        Ok(self
            .names
            .attr(ino, node.kind, &stat, meta.as_ref(), &ov, node.unlinked))
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
