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

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::cache::Entry;
use super::error::{FsError, FsResult};
use super::inode::{Inode, Kind, Location, NAME_MAX, Stat, View, valid_name};
use super::multipart::{Multipart, PartSource};
use super::upload::DirtyFile;
use super::{Attr, Fs, split_key};
use crate::s3::{CopySource, ErrorKind, ListObjectsParams, ObjectIdentifier, S3Error, limits};

/// The Content-Type of directory markers (`dir/`, empty): what s3fs and
/// other tools take for a directory (without it s3fs shows the marker as a
/// regular file and cannot copy into it).
pub const DIR_MARKER_TYPE: &str = "application/x-directory";

/// Part size of multipart copies: 5 TiB fits in 5120 parts.
const COPY_PART: u64 = 1024 * 1024 * 1024;
/// Keys copied at once when a directory is renamed.
const RENAME_PARALLEL: usize = 32;
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
        if !valid_name(name) {
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
        self.writable()?;
        let p = self.dir_inode(parent)?;
        let name = self.name(name)?;
        if p.loc.bucket.is_empty() {
            // Only buckets live at the root of an all-buckets mount.
            return Err(FsError::NotPermitted);
        }
        let loc = p.loc.child(name, Kind::File);
        Self::key_fits(&loc)?;
        let stat = Stat {
            size: 0,
            mtime: SystemTime::now(),
            etag: None,
        };
        let file = DirtyFile::new(self.uploads.clone(), loc.clone(), None)?;
        // New content (even empty) to be written at close.
        file.set_size(0).await?;
        self.changed(&loc, Entry::File(stat.clone()));
        // A created file is a new inode, whatever had the name before.
        self.inodes.lock().expect("inode lock").unlink(parent, name);
        let attr = self.remember(parent, name, Kind::File, loc, stat);
        let (fh, _) = self.open.open(attr.ino, None, Some(file), true);
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
        Ok(())
    }

    pub async fn mkdir(&self, parent: u64, name: &OsStr) -> FsResult<Attr> {
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
            return Ok(self.remember(parent, name, Kind::Dir, loc, self.dir_stat()));
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
        Ok(self.remember(parent, name, Kind::Dir, loc, self.dir_stat()))
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
        self.ensure_empty(&loc).await?;
        // The marker, if any (deleting a missing key is no error).
        self.client
            .delete_object(&loc.bucket, &loc.key, None)
            .await?;
        self.changed(&loc, Entry::Missing);
        let (_, path) = split_key(&loc.key);
        self.cache.invalidate(&loc.bucket, path, &loc.key);
        Ok(())
    }

    /// ENOTEMPTY unless the directory at `loc` holds nothing but its marker.
    async fn ensure_empty(&self, loc: &Location) -> FsResult<()> {
        // A file created here and not yet closed has no object yet.
        if !self.dirty_under(&loc.bucket, &loc.key).is_empty() {
            return Err(FsError::NotEmpty);
        }
        let page = self
            .client
            .list_objects(
                &loc.bucket,
                &ListObjectsParams {
                    prefix: loc.key.clone(),
                    max_keys: Some(2),
                    ..Default::default()
                },
            )
            .await?;
        if page.objects.iter().any(|o| o.key != loc.key) || !page.common_prefixes.is_empty() {
            return Err(FsError::NotEmpty);
        }
        Ok(())
    }

    /// The write-back buffers whose keys start with `prefix` (or equal `key`).
    fn dirty_under(&self, bucket: &str, prefix: &str) -> Vec<(u64, Arc<DirtyFile>)> {
        self.open
            .buffers()
            .into_iter()
            .filter(|(_, f)| {
                let loc = f.location();
                !f.is_unlinked() && loc.bucket.as_ref() == bucket && loc.key.starts_with(prefix)
            })
            .collect()
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
                let source = self.dirty_under(&from.bucket, &from.key);
                let source: Vec<_> = source
                    .into_iter()
                    .filter(|(_, f)| f.location().key == from.key)
                    .collect();
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
                self.relocate_open(
                    &from,
                    &to,
                    &[(from.key.clone(), head.etag.clone(), new_etag.clone())],
                );
                self.moved(parent, name, new_parent, new_name, &to);
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
                        etag: new_etag,
                    }),
                );
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
                    self.ensure_empty(&to).await?;
                }
                self.rename_dir(&from, &to).await?;
                self.moved(parent, name, new_parent, new_name, &to);
                let mut inodes = self.inodes.lock().expect("inode lock");
                inodes.rebase(&from.bucket, &from.key, &to.key);
                drop(inodes);
                self.cache.clear();
                Ok(())
            }
        }
    }

    /// The inode of `name` now lives at `to`.
    fn moved(&self, parent: u64, name: &str, new_parent: u64, new_name: &str, to: &Location) {
        let mut inodes = self.inodes.lock().expect("inode lock");
        match inodes.child(parent, name).map(|n| n.ino) {
            Some(ino) => inodes.rename(ino, new_parent, new_name, to.clone()),
            // The kernel did not hold the source: the target's name is
            // gone from whatever inode had it all the same.
            None => {
                inodes.unlink(new_parent, new_name);
            }
        }
    }

    /// Open files under `from` follow their objects to `to`: buffers and
    /// readers of each copied key (old key, its ETag, the copy's ETag) now
    /// read the copy.
    fn relocate_open(
        &self,
        from: &Location,
        to: &Location,
        copied: &[(String, Option<String>, Option<String>)],
    ) {
        let moved = |key: &str| -> Option<(Location, &Option<String>, &Option<String>)> {
            let rest = key.strip_prefix(&from.key)?;
            let (_, old, new) = copied.iter().find(|(k, _, _)| k == key)?;
            Some((
                Location {
                    bucket: to.bucket.clone(),
                    key: format!("{}{rest}", to.key),
                },
                old,
                new,
            ))
        };
        for (_, file) in self.dirty_under(&from.bucket, &from.key) {
            let loc = file.location();
            match moved(&loc.key) {
                Some((new_loc, old, new)) => file.rebase(new_loc, old, new.clone()),
                // Not an object yet (never committed): only the name moves.
                None => {
                    if let Some(rest) = loc.key.strip_prefix(&from.key) {
                        file.set_location(Location {
                            bucket: to.bucket.clone(),
                            key: format!("{}{rest}", to.key),
                        });
                    }
                }
            }
        }
        for reader in self.open.readers() {
            if let Some((new_loc, old, new)) = moved(&reader.key())
                && reader.etag() == *old
            {
                reader.relocate(new_loc.key, new.clone());
            }
        }
    }

    /// Copies every key under `from` to `to`, moves the open files along,
    /// then deletes the sources.
    async fn rename_dir(&self, from: &Location, to: &Location) -> FsResult<()> {
        for (ino, file) in self.dirty_under(&from.bucket, &from.key) {
            self.commit(ino, &file).await?;
        }
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
        let copied = futures::stream::iter(keys.clone())
            .map(|o| {
                let src = Location {
                    bucket: from.bucket.clone(),
                    key: o.key.clone(),
                };
                let dst = Location {
                    bucket: to.bucket.clone(),
                    key: format!("{}{}", to.key, &o.key[from.key.len()..]),
                };
                async move {
                    Self::key_fits(&dst)?;
                    let new = self.copy_object(&src, &dst, o.size, o.etag.clone()).await?;
                    Ok::<_, FsError>((o.key, o.etag, new))
                }
            })
            .buffer_unordered(RENAME_PARALLEL)
            .try_collect::<Vec<_>>()
            .await?;
        // Open files follow their objects before the sources go.
        self.relocate_open(from, to, &copied);
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
