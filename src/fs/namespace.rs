//! Changing names: create, unlink, mkdir, rmdir, rename.
//!
//! - mkdir writes the marker object `dir/`, so an empty directory persists;
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
use super::inode::{Inode, Kind, Location, NAME_MAX, Stat, valid_name};
use super::upload::DirtyFile;
use super::{Attr, Fs, Handle, split_key};
use crate::s3::{
    CompletedPart, CopySource, ErrorKind, ListObjectsParams, ObjectIdentifier, S3Error, limits,
};

/// Part size of multipart copies: 5 TiB fits in 5120 parts.
const COPY_PART: u64 = 1024 * 1024 * 1024;
/// Keys copied at once when a directory is renamed.
const RENAME_PARALLEL: usize = 32;

impl Fs {
    fn writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    fn dir_inode(&self, ino: u64) -> FsResult<Inode> {
        let node = self.inode(ino)?;
        if node.kind != Kind::Dir {
            return Err(FsError::NotDir);
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
        let attr = self.remember(parent, name, Kind::File, loc, stat);
        let fh = self.add_handle(Handle::Write {
            ino: attr.ino,
            file,
        });
        Ok((attr, fh))
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
        for (_, file) in self.dirty_under(&loc.bucket, &loc.key) {
            if file.location().key == loc.key {
                file.unlink();
            }
        }
        self.client
            .delete_object(&loc.bucket, &loc.key, None)
            .await?;
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
            .put_object(&loc.bucket, &loc.key, Bytes::new())
            .await?;
        self.changed(&loc, Entry::Dir);
        // Nothing was under the new name: its listing is known, empty.
        self.cache
            .put_listing(&loc.bucket, &loc.key, Arc::new(Vec::new()));
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
        self.dirty
            .lock()
            .expect("dirty lock")
            .iter()
            .filter(|(_, d)| {
                let loc = d.file.location();
                loc.bucket.as_ref() == bucket && loc.key.starts_with(prefix)
            })
            .map(|(ino, d)| (*ino, d.file.clone()))
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
                for (ino, file) in self.dirty_under(&from.bucket, &from.key) {
                    if file.location().key == from.key {
                        self.commit(ino, &file).await?;
                    }
                }
                let head = self
                    .client
                    .head_object(&from.bucket, &from.key, None)
                    .await?;
                self.copy_object(&from, &to, head.size, head.etag.clone())
                    .await?;
                self.client
                    .delete_object(&from.bucket, &from.key, None)
                    .await?;
                self.moved(parent, name, new_parent, new_name, &from, &to);
                self.changed(&from, Entry::Missing);
                self.changed(
                    &to,
                    Entry::File(Stat {
                        size: head.size,
                        mtime: head.last_modified.unwrap_or_else(SystemTime::now),
                        etag: head.etag,
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
                self.moved(parent, name, new_parent, new_name, &from, &to);
                let mut inodes = self.inodes.lock().expect("inode lock");
                inodes.rebase(&from.bucket, &from.key, &to.key);
                drop(inodes);
                self.cache.clear();
                Ok(())
            }
        }
    }

    /// The inode (and any write-back buffer) of `name` now lives at `to`.
    fn moved(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        from: &Location,
        to: &Location,
    ) {
        let mut inodes = self.inodes.lock().expect("inode lock");
        if let Some(ino) = inodes.child(parent, name).map(|n| n.ino) {
            inodes.rename(ino, new_parent, new_name, to.clone());
        }
        drop(inodes);
        for (_, file) in self.dirty_under(&from.bucket, &from.key) {
            let loc = file.location();
            if let Some(rest) = loc.key.strip_prefix(&from.key) {
                file.set_location(Location {
                    bucket: to.bucket.clone(),
                    key: format!("{}{rest}", to.key),
                });
            }
        }
    }

    /// Copies every key under `from` to `to`, then deletes the sources.
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
        futures::stream::iter(keys.clone())
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
                    self.copy_object(&src, &dst, o.size, o.etag).await
                }
            })
            .buffer_unordered(RENAME_PARALLEL)
            .try_collect::<Vec<()>>()
            .await?;
        // Every copy is in place: only now do the sources go.
        let ids: Vec<ObjectIdentifier> =
            keys.iter().map(|o| ObjectIdentifier::key(&o.key)).collect();
        for batch in ids.chunks(limits::MAX_DELETE_OBJECTS) {
            let out = self.client.delete_objects(&from.bucket, batch).await?;
            if let Some(e) = out.errors.first() {
                return Err(FsError::Io(format!(
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
    /// 5 GiB, multipart UploadPartCopy above.
    async fn copy_object(
        &self,
        from: &Location,
        to: &Location,
        size: u64,
        etag: Option<String>,
    ) -> FsResult<()> {
        let source = CopySource {
            bucket: from.bucket.to_string(),
            key: from.key.clone(),
            version_id: None,
            if_match: etag,
        };
        if size <= limits::MAX_PART_SIZE {
            self.client
                .copy_object(&to.bucket, &to.key, &source)
                .await?;
            return Ok(());
        }
        let upload = self
            .client
            .create_multipart_upload(&to.bucket, &to.key)
            .await?;
        let ranges: Vec<_> = (0..size.div_ceil(COPY_PART))
            .map(|i| i * COPY_PART..((i + 1) * COPY_PART).min(size))
            .collect();
        let result: Result<(), S3Error> = async {
            let parts = futures::stream::iter(ranges.into_iter().enumerate())
                .map(|(i, r)| {
                    let (source, upload) = (&source, &upload);
                    async move {
                        let etag = self
                            .client
                            .upload_part_copy(
                                &to.bucket,
                                &to.key,
                                upload,
                                i as u32 + 1,
                                source,
                                Some(r),
                            )
                            .await?;
                        Ok::<_, S3Error>(CompletedPart {
                            part_number: i as u32 + 1,
                            etag,
                        })
                    }
                })
                .buffered(4)
                .try_collect::<Vec<_>>()
                .await?;
            self.client
                .complete_multipart_upload(&to.bucket, &to.key, &upload, &parts)
                .await
                .map(drop)
        }
        .await;
        if let Err(e) = result {
            let _ = self
                .client
                .abort_multipart_upload(&to.bucket, &to.key, &upload)
                .await;
            return Err(e.into());
        }
        Ok(())
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
        _ if e.kind() == ErrorKind::NoSuchBucket => Some(FsError::NotFound),
        _ => None,
    }
}
