//! Renaming. [`Renames`] borrows the namespace's state from `Names`.
//!
//! - rename of a file is a copy (PUT Object Copy up to 5 GiB, multipart
//!   UploadPartCopy above, guarded by If-Match on the source ETag) then a
//!   delete of the source. Rename of a directory copies every key under
//!   its prefix in parallel, then deletes the sources in DeleteObjects
//!   batches of 1000. The source is never deleted before every copy
//!   succeeded. Not atomic: another client may see both names, or a
//!   directory half copied, while it runs.
//! - open files follow their objects (`OpenFiles::relocate`), and the
//!   metadata follows the names, naming the copies' ETags.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};

use super::attr::described;
use super::cache::Entry;
use super::error::{FsError, FsResult};
use super::inode::{Copies, Kind, Location, Stat, Tree};
use super::meta::{is_meta_name, parse, render, to_ns};
use super::multipart::{Multipart, PartSource};
use super::names::Names;
use crate::s3::{CopySource, ErrorKind, ListObjectsParams, ObjectIdentifier, limits};

/// Part size of multipart copies: 5 TiB fits in 5120 parts.
const COPY_PART: u64 = 1024 * 1024 * 1024;
/// Keys copied at once when a directory is renamed.
const RENAME_PARALLEL: usize = 32;
/// Parts of one large object copied at once.
const COPY_PARALLEL: usize = 4;

pub struct Renames {
    names: Arc<Names>,
}

/// A file's rename: its names and their places.
struct Places<'a> {
    parent: u64,
    name: &'a str,
    new_parent: u64,
    new_name: &'a str,
    from: &'a Location,
    to: &'a Location,
}

impl Renames {
    pub fn new(names: Arc<Names>) -> Self {
        Renames { names }
    }

    pub async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> FsResult<()> {
        self.names.writable()?;
        let p = self.names.dir_inode(parent)?;
        let np = self.names.dir_inode(new_parent)?;
        let name = self.names.name(name)?;
        let new_name = self.names.name(new_name)?;
        if p.tree() == Tree::Buckets || np.tree() == Tree::Buckets {
            // Buckets cannot be renamed.
            return Err(FsError::NotPermitted);
        }
        let src = self.names.resolver.resolve(&p.loc, name).await?;
        let dst = self.names.resolver.resolve(&np.loc, new_name).await?;
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
                Names::key_fits(&to)?;
                let places = Places {
                    parent,
                    name,
                    new_parent,
                    new_name,
                    from: &from,
                    to: &to,
                };
                if self.rename_queued(&places, &dst).await? {
                    return Ok(());
                }
                let source = self.names.open().written_under(&from);
                for (ino, file) in &source {
                    self.names.commit(*ino, file).await?;
                }
                // Its journaled content must not come back under the old
                // name after a crash.
                if let Some(wb) = self.names.files.write_back() {
                    wb.sync().await?;
                }
                // The file replaced keeps its content for its open handles.
                let replaced = if matches!(dst, Entry::File(_)) {
                    self.names.keep_open_content(new_parent, new_name).await?
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
                    .names
                    .client
                    .head_object(&from.bucket, &from.key, None)
                    .await?;
                let new_etag = self
                    .copy_object(&from, &to, head.size, head.etag.clone())
                    .await?;
                if let Some(f) = &replaced {
                    f.unlink();
                    // Its journaled content must not come back over the
                    // file renamed onto it.
                    if let Some(wb) = self.names.files.write_back() {
                        wb.unlinked(f, self.names.open()).await?;
                    }
                }
                self.names.open().relocate(
                    &from,
                    &to,
                    &[(from.key.clone(), head.etag.clone(), new_etag.clone())],
                );
                self.moved(parent, name, new_parent, new_name, &to);
                // What this mount says of the file (and the entry a chmod
                // records) names the copy now.
                self.names
                    .inodes
                    .restamp_child(new_parent, new_name, &head.etag, &new_etag);
                drop(paused);
                self.names
                    .client
                    .delete_object(&from.bucket, &from.key, None)
                    .await?;
                self.names.changed(&from, Entry::Missing);
                self.names.changed(
                    &to,
                    Entry::File(Stat {
                        size: head.size,
                        mtime: SystemTime::now(),
                        etag: new_etag.clone(),
                    }),
                );
                // The entry follows the object (a link stays a link), and
                // the time is the source's, as rename(2) keeps it.
                let table = self.names.meta.table(&p.loc).await?;
                let mut entry = described(&table, name, Kind::File, head.etag.as_deref(), false)
                    .cloned()
                    .unwrap_or_default();
                entry.etag = new_etag;
                if entry.mtime_ns.is_none() {
                    entry.mtime_ns = head.last_modified.map(to_ns);
                }
                self.names.meta.update(&p.loc, name, |e| *e = None).await?;
                self.names
                    .meta
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
                    let metas = self.names.resolver.ensure_empty(&to).await?;
                    self.names.meta.remove_dir(&to, &metas).await?;
                }
                let table = self.names.meta.table(&p.loc).await?;
                let entry = described(&table, name, Kind::Dir, None, false).cloned();
                let copies = self.rename_dir(&from, &to).await?;
                self.names.meta.update(&p.loc, name, |e| *e = None).await?;
                self.names
                    .meta
                    .update(&np.loc, new_name, move |e| *e = entry.clone())
                    .await?;
                self.moved(parent, name, new_parent, new_name, &to);
                self.names.inodes.rebase(&from, &to, &copies);
                self.names.resolver.cache.clear();
                Ok(())
            }
        }
    }

    /// With write-back, a file closed here and not yet stored moves by its
    /// journal entry: no upload, copy and delete in the store first (rsync,
    /// git, editors and pip write a temporary name, close it and rename
    /// it). Its old key is deleted unless no object was ever there. `false`
    /// when the file is not such a one (then the store's way applies).
    async fn rename_queued(&self, at: &Places<'_>, dst: &Entry) -> FsResult<bool> {
        let Some(wb) = self.names.files.write_back() else {
            return Ok(false);
        };
        let source = self.names.open().written_under(at.from);
        let [(ino, file)] = source.as_slice() else {
            return Ok(false);
        };
        if wb.file(*ino).is_none_or(|f| !Arc::ptr_eq(&f, file)) {
            return Ok(false);
        }
        let replaced = if matches!(dst, Entry::File(_)) {
            self.names
                .keep_open_content(at.new_parent, at.new_name)
                .await?
        } else {
            None
        };
        // No upload of the file runs while it moves; one that ran before
        // may have stored it, and an edit's upload copies from its base at
        // its key: those move in the store.
        let paused = file.pause_commits().await;
        if file.has_base() || !file.is_dirty() {
            return Ok(false);
        }
        let paused_replaced = match &replaced {
            Some(f) => Some(f.pause_commits().await),
            None => None,
        };
        if let Some(f) = &replaced {
            f.unlink();
            wb.unlinked(f, self.names.open()).await?;
        }
        let delete_old = !file.never_stored();
        self.names.open().relocate(at.from, at.to, &[]);
        if replaced.is_some() || matches!(dst, Entry::File(_)) {
            // An object is at the new key until the upload replaces it.
            file.set_fresh(false);
        }
        self.moved(at.parent, at.name, at.new_parent, at.new_name, at.to);
        let rekeyed = wb.rekey(*ino, file).await;
        drop((paused, paused_replaced));
        if !matches!(rekeyed, Ok(true)) {
            // Not journaled under the new name (a full disk): stored there
            // now instead, and the old entries go with that.
            if let Err(e) = rekeyed {
                tracing::warn!(key = %at.to.key, error = %e, "a renamed queued file not journaled again; uploading it");
            }
            self.names.commit(*ino, file).await?;
            wb.sync().await?;
        }
        if delete_old {
            match self
                .names
                .client
                .delete_object(&at.from.bucket, &at.from.key, None)
                .await
            {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.names.changed(at.from, Entry::Missing);
        self.names.changed(
            at.to,
            Entry::File(Stat {
                size: file.size(),
                mtime: SystemTime::now(),
                etag: None,
            }),
        );
        // The entry follows the name (modes and times set on the temporary
        // name, as rsync and tar do); it names the object once uploaded.
        let (pdir, ndir) = (self.names.meta_home(at.from), self.names.meta_home(at.to));
        if let (Some((pdir, _)), Some((ndir, _))) = (pdir, ndir) {
            let table = self.names.meta.table(&pdir).await?;
            let entry = described(&table, at.name, Kind::File, None, true).cloned();
            self.names
                .meta
                .update(&pdir, at.name, |e| *e = None)
                .await?;
            self.names
                .meta
                .update(&ndir, at.new_name, move |e| *e = entry.clone())
                .await?;
        }
        Ok(true)
    }

    /// The inode of `name` now lives at `to`.
    pub(super) fn moved(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        to: &Location,
    ) {
        self.names.entries_changed(&[parent, new_parent]);
        self.names.inodes.moved(
            (parent, name),
            (new_parent, new_name),
            to,
            SystemTime::now(),
        );
    }

    /// Copies every key under `from` to `to`, moves the open files along,
    /// then deletes the sources. Returns what was copied.
    pub(super) async fn rename_dir(&self, from: &Location, to: &Location) -> FsResult<Copies> {
        for (ino, file) in self.names.open().written_under(from) {
            self.names.commit(ino, &file).await?;
        }
        if let Some(wb) = self.names.files.write_back() {
            wb.sync().await?;
        }
        self.names.meta.flush_under(&from.bucket, &from.key).await?;
        let mut keys = Vec::new();
        let mut params = ListObjectsParams {
            prefix: from.key.clone(),
            ..Default::default()
        };
        loop {
            let page = self
                .names
                .client
                .list_objects(&from.bucket, &params)
                .await?;
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
            Names::key_fits(&moved(&o.key))?;
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
        self.names.meta.forget_under(&from.bucket, &from.key);
        self.names.meta.forget_under(&to.bucket, &to.key);
        // Open files follow their objects before the sources go.
        self.names.open().relocate(from, to, &copied);
        // Every copy is in place: only now do the sources go.
        let ids: Vec<ObjectIdentifier> =
            keys.iter().map(|o| ObjectIdentifier::key(&o.key)).collect();
        for batch in ids.chunks(limits::MAX_DELETE_OBJECTS) {
            let out = self
                .names
                .client
                .delete_objects(&from.bucket, batch)
                .await?;
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
    pub(super) async fn move_meta(
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
            .names
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
        self.names
            .client
            .put_object_typed(&to.bucket, &new_key, body, "application/json")
            .await?;
        Ok(())
    }

    /// Server-side copy, guarded by the source ETag: PUT Object Copy up to
    /// 5 GiB, multipart UploadPartCopy above. Returns the copy's ETag.
    pub(super) async fn copy_object(
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
                .names
                .client
                .copy_object(&to.bucket, &to.key, &source)
                .await?;
            return Ok(out.etag);
        }
        let pieces = (0..size.div_ceil(COPY_PART))
            .map(|i| PartSource::Copy(i * COPY_PART..((i + 1) * COPY_PART).min(size)))
            .collect();
        let upload = Multipart::create(
            self.names.client.clone(),
            &self.names.files.uploads().open,
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
