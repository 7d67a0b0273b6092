//! Directory handles: opendir, readdir(plus), releasedir. A handle lists
//! its directory once, streaming pages from the store (`fs/dir.rs`), and
//! hands entries to the kernel with the attributes `Names` gives them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::attr::{self, Attr, described, shown_kind};
use super::dir::DirHandle;
use super::error::{FsError, FsResult};
use super::inode::{self, Ino, Kind, Tree, View};
use super::meta::Table;
use super::names::Names;

/// One entry handed to the kernel by `Fs::readdir`.
pub struct ReaddirEntry<'a> {
    pub ino: Ino,
    /// The offset the kernel passes back to continue after this entry.
    pub next_offset: u64,
    pub name: &'a str,
    pub kind: Kind,
    /// Present for readdirplus.
    pub attr: Option<Attr>,
}

/// Entries taken from a directory handle per round of filling a reply.
const READDIR_BATCH: usize = 256;

pub struct Directories {
    names: Arc<Names>,
    handles: Mutex<HashMap<u64, Arc<DirHandle>>>,
}

impl Directories {
    pub fn new(names: Arc<Names>) -> Self {
        Directories {
            names,
            handles: Mutex::new(HashMap::new()),
        }
    }

    pub async fn opendir(&self, ino: Ino) -> FsResult<u64> {
        let node = self.names.inode(ino)?;
        if node.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let handle = match node.tree() {
            Tree::History => {
                let entries = self
                    .names
                    .history
                    .list(
                        self.names.client.as_ref(),
                        &node.loc,
                        &node.view,
                        self.names.resolver.mount_time(),
                    )
                    .await?;
                Arc::new(DirHandle::history(ino, node.loc, &entries))
            }
            Tree::Buckets => Arc::new(DirHandle::complete(
                ino,
                node.loc,
                self.names.resolver.bucket_listing().await?.to_vec(),
            )),
            Tree::Live => {
                // Asked first, whatever the cache holds: the open moves
                // the walk on.
                let ahead = self.names.resolver.listed_ahead(&node.loc).await;
                let cached = self
                    .names
                    .resolver
                    .cache
                    .listing(&node.loc.bucket, &node.loc.key);
                match (cached, ahead) {
                    (Some(listing), _) => {
                        Arc::new(DirHandle::complete(ino, node.loc, listing.to_vec()))
                    }
                    (None, Some(handle)) => handle,
                    (None, None) => {
                        let local = self.names.resolver.local_files_in(&node.loc);
                        Arc::new(DirHandle::streaming(ino, node.loc, local))
                    }
                }
            }
        };
        let fh = self.names.open().next_handle();
        self.handles.lock().expect("dirs lock").insert(fh, handle);
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.lock().expect("dirs lock").remove(&fh);
    }

    /// Hands entries from `offset` on to `fill` until it reports the reply
    /// full (returns true) or the directory ends. Offsets: 0 is `.`, 1 is
    /// `..`, then the listing in order. With `plus`, each entry handed over
    /// counts as a lookup.
    pub async fn readdir(
        &self,
        ino: Ino,
        fh: u64,
        offset: u64,
        plus: bool,
        mut fill: impl FnMut(ReaddirEntry<'_>) -> bool,
    ) -> FsResult<()> {
        let dir = self
            .handles
            .lock()
            .expect("dirs lock")
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        let mut offset = offset;
        let node = self.names.inode(ino)?;
        for (off, name, target) in [(0u64, ".", ino), (1, "..", node.parent)] {
            if offset == off {
                let attr = plus.then(|| {
                    attr::plain_dir(target, &self.names.dir_stat(), &self.names.defaults())
                });
                let full = fill(ReaddirEntry {
                    ino: target,
                    next_offset: off + 1,
                    name,
                    kind: Kind::Dir,
                    attr,
                });
                if full {
                    return Ok(());
                }
                offset += 1;
            }
        }
        let mut table: Option<Arc<Table>> = None;
        loop {
            let (batch, complete) = dir.settled((offset - 2) as usize, READDIR_BATCH);
            if !batch.is_empty() && table.is_none() {
                table = Some(self.listing_table(&node, &dir).await?);
            }
            let table = table.clone().unwrap_or_default();
            // Asked once per batch: with nothing open, no entry's location
            // is built just to learn that it is not being written here.
            let any_live = self.names.open().any_live();
            for e in &batch {
                let (entry_ino, attr) = if plus {
                    let attr = match dir.place((offset - 2) as usize, &e.name, e.kind) {
                        (loc, View::Live) => {
                            self.names
                                .remember(ino, &e.name, e.kind, loc, e.stat.clone(), &table)
                        }
                        (loc, view) => self
                            .names
                            .remember_history(ino, &e.name, e.kind, loc, view, &e.stat),
                    };
                    (attr.ino, Some(attr))
                } else {
                    let known = self.names.inodes.child_ino(ino, &e.name);
                    // An inode number for display only; lookups assign the real one.
                    (known.unwrap_or(u64::MAX - offset), None)
                };
                let kind = match &attr {
                    Some(a) => a.kind,
                    None => {
                        let writing = any_live
                            && e.kind != Kind::Dir
                            && self
                                .names
                                .open()
                                .written_at(&node.loc.child(&e.name, e.kind))
                                .is_some();
                        described(&table, &e.name, e.kind, e.stat.etag.as_deref(), writing)
                            .map_or(e.kind, |m| shown_kind(e.kind, m))
                    }
                };
                let full = fill(ReaddirEntry {
                    ino: entry_ino,
                    next_offset: offset + 1,
                    name: &e.name,
                    kind,
                    attr,
                });
                if full {
                    if plus {
                        // The kernel did not take it: no reference was made.
                        self.names.forget(entry_ino, 1);
                    }
                    return Ok(());
                }
                offset += 1;
            }
            if complete {
                // A directory read to its end may be walked next (the
                // walker keeps the directory open meanwhile: tar, fts).
                dir.when_listed(|loc, entries| {
                    self.names.files.walk().listed(loc, entries);
                    self.names.resolver.list_ahead.listed(loc, entries);
                });
                if let Some(all) = dir.finished() {
                    self.names.resolver.cache.put_listing(
                        &dir.location().bucket,
                        &dir.location().key,
                        Arc::new(all),
                    );
                }
                self.names.reclaim();
                return Ok(());
            }
            if batch.is_empty() {
                let skipped = dir
                    .fetch_more(&self.names.client, &self.names.dir_stat())
                    .await?;
                self.names.resolver.log_skipped(skipped);
            }
        }
    }

    /// The metadata table for a directory being listed: what the listing
    /// showed of its object saves the GET when unchanged (history has none).
    pub(super) async fn listing_table(
        &self,
        node: &inode::Inode,
        dir: &DirHandle,
    ) -> FsResult<Arc<Table>> {
        if node.tree() != Tree::Live {
            return Ok(Arc::default());
        }
        if let Some(seen) = dir.meta_seen() {
            self.names.meta.seen_in_listing(&node.loc, &seen);
        }
        self.names.meta.table(&node.loc).await
    }
}
