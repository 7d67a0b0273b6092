//! Directory listings for readdir: one ListObjectsV2 page (1000 names) at a
//! time with delimiter `/`, attributes taken from the listing itself (no
//! request per entry), offsets that stay stable while the kernel reads a
//! big directory in several calls.
//!
//! Names come in key order, where a file `x` comes before `x!y` and both
//! before the prefix `x/`. When `x` and `x/` both exist the directory wins,
//! so a file name is held back ("pending") until the listing has passed
//! `x/`; only settled names are handed to the kernel, and nothing it was
//! given is ever taken back.
//!
//! While the kernel takes in one page, the next is already being fetched:
//! a large directory costs about one page's round trip, not one per page.

use std::sync::{Arc, Mutex};

use super::cache::DirEntry;
use super::error::{FsError, FsResult};
use super::inode::{self, Kind, Location, Stat, View, valid_name};
use super::meta::{self, Segment};
use super::versions::HistEntry;
use crate::s3::{ListObjectsParams, ObjectClient};

struct ListState {
    entries: Vec<DirEntry>,
    /// `entries[..settled]` are final.
    settled: usize,
    token: Option<String>,
    done: bool,
    /// The page after `token`, already on its way.
    ahead: Option<tokio::task::JoinHandle<FsResult<Page>>>,
    /// Files open here whose objects may not exist yet (created, not yet
    /// closed): listed at the end unless the store listed them.
    local: Vec<DirEntry>,
    /// The directory's metadata objects as the listing shows them, and
    /// whether the listing has passed every name they can have.
    meta: Vec<Segment>,
    meta_done: bool,
}

pub struct DirHandle {
    pub ino: u64,
    loc: Location,
    state: Mutex<ListState>,
    /// Listed from the store by this handle (not handed a cached listing).
    listed_here: bool,
    /// For a history directory: where each entry leads (live entries are
    /// found from the directory's own location).
    places: Vec<(Location, View)>,
}

/// A page of a listing turned into names.
pub struct Page {
    /// Names and kinds in key order.
    pub entries: Vec<DirEntry>,
    /// The relative name of the greatest key or prefix in the page.
    pub last: Option<String>,
    pub token: Option<String>,
    /// Keys that are no file name (`a//b`, `.`, too long), for a log line.
    pub skipped: Vec<String>,
    /// The directory's metadata objects in this page.
    pub meta: Vec<Segment>,
}

impl DirHandle {
    /// A handle over a listing already known in full.
    pub fn complete(ino: u64, loc: Location, entries: Vec<DirEntry>) -> Self {
        let settled = entries.len();
        DirHandle {
            ino,
            loc,
            state: Mutex::new(ListState {
                entries,
                settled,
                token: None,
                done: true,
                ahead: None,
                local: Vec::new(),
                meta: Vec::new(),
                meta_done: false,
            }),
            listed_here: false,
            places: Vec::new(),
        }
    }

    /// A handle over a history directory's entries (`fs/versions.rs`).
    pub fn history(ino: u64, loc: Location, entries: &[HistEntry]) -> Self {
        let mut handle = Self::complete(ino, loc, entries.iter().map(|e| e.dir_entry()).collect());
        handle.places = entries
            .iter()
            .map(|e| (e.location(&handle.loc.bucket), e.view.clone()))
            .collect();
        handle
    }

    /// Where entry `index` leads, and in which view.
    pub fn place(&self, index: usize, name: &str, kind: Kind) -> (Location, View) {
        match self.places.get(index) {
            Some(p) => p.clone(),
            None => (self.loc.child(name, kind), View::Live),
        }
    }

    /// A handle that lists from the store as the kernel reads, then adds
    /// the `local` files the store did not list.
    pub fn streaming(ino: u64, loc: Location, local: Vec<DirEntry>) -> Self {
        DirHandle {
            ino,
            loc,
            state: Mutex::new(ListState {
                entries: Vec::new(),
                settled: 0,
                token: None,
                done: false,
                ahead: None,
                local,
                meta: Vec::new(),
                meta_done: false,
            }),
            listed_here: true,
            places: Vec::new(),
        }
    }

    pub fn location(&self) -> &Location {
        &self.loc
    }

    /// The directory's metadata objects, once the listing has shown them
    /// all (`None` before, or when not listed here).
    pub fn meta_seen(&self) -> Option<Vec<Segment>> {
        if !self.listed_here {
            return None;
        }
        let st = self.state.lock().expect("dir lock");
        st.meta_done.then(|| st.meta.clone())
    }

    /// Settled entries from index `from` on (at most `max`), and whether
    /// the listing is complete past them.
    pub fn settled(&self, from: usize, max: usize) -> (Vec<DirEntry>, bool) {
        let st = self.state.lock().expect("dir lock");
        let end = st.settled.min(from.saturating_add(max));
        let out = if from < end {
            st.entries[from..end].to_vec()
        } else {
            Vec::new()
        };
        (out, st.done && end == st.settled)
    }

    /// Hands a live directory's location and entries, in listing order,
    /// to `f` once the handle has read it to its end (for read-ahead
    /// across files); the entries are lent, not copied.
    pub fn when_listed(&self, f: impl FnOnce(&Location, &[DirEntry])) {
        if !self.places.is_empty() {
            return;
        }
        let st = self.state.lock().expect("dir lock");
        if st.done && st.settled == st.entries.len() {
            f(&self.loc, &st.entries);
        }
    }

    /// The whole listing this handle fetched, once complete, sorted by name
    /// (for the cache).
    pub fn finished(&self) -> Option<Vec<DirEntry>> {
        let st = self.state.lock().expect("dir lock");
        if !st.done || !self.listed_here {
            return None;
        }
        let mut all = st.entries.clone();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Some(all)
    }

    /// Fetches the next page (or takes the one fetched ahead), settles what
    /// it can, and starts fetching the page after. Returns the keys that
    /// could not be names.
    pub async fn fetch_more(
        &self,
        client: &Arc<dyn ObjectClient>,
        dir_stat: &Stat,
    ) -> FsResult<Vec<String>> {
        let (token, ahead) = {
            let mut st = self.state.lock().expect("dir lock");
            if st.done {
                return Ok(Vec::new());
            }
            (st.token.clone(), st.ahead.take())
        };
        let page = match ahead {
            Some(task) => task.await.map_err(|_| FsError::Cancelled)??,
            None => list_page(client.as_ref(), &self.loc, token, dir_stat).await?,
        };
        let mut st = self.state.lock().expect("dir lock");
        st.meta.extend(page.meta);
        if page.token.is_none() || page.last.as_deref().is_some_and(meta::past_meta) {
            st.meta_done = true;
        }
        for entry in page.entries {
            if entry.kind == Kind::Dir {
                // The directory wins over a pending file of the same name.
                let settled = st.settled;
                if let Some(pos) = st.entries[settled..]
                    .iter()
                    .position(|e| e.kind == Kind::File && e.name == entry.name)
                {
                    st.entries.remove(settled + pos);
                }
            }
            st.entries.push(entry);
        }
        st.token = page.token;
        st.done = st.token.is_none();
        if st.done {
            for e in std::mem::take(&mut st.local) {
                if !st.entries.iter().any(|x| x.name == e.name) {
                    st.entries.push(e);
                }
            }
            st.settled = st.entries.len();
        } else if let Some(last) = page.last {
            while st.settled < st.entries.len() {
                let e = &st.entries[st.settled];
                let safe = e.kind == Kind::Dir || format!("{}/", e.name) <= last;
                if !safe {
                    break;
                }
                st.settled += 1;
            }
        }
        if let Some(token) = st.token.clone() {
            let (client, loc, stat) = (client.clone(), self.loc.clone(), dir_stat.clone());
            st.ahead = Some(tokio::spawn(async move {
                list_page(client.as_ref(), &loc, Some(token), &stat).await
            }));
        }
        Ok(page.skipped)
    }
}

impl Drop for DirHandle {
    /// A listing given up part way (`ls | head`) stops fetching.
    fn drop(&mut self) {
        if let Ok(st) = self.state.get_mut()
            && let Some(task) = st.ahead.take()
        {
            task.abort();
        }
    }
}

/// One page of the directory `loc`, as names.
pub async fn list_page(
    client: &dyn ObjectClient,
    loc: &Location,
    token: Option<String>,
    dir_stat: &Stat,
) -> FsResult<Page> {
    let prefix = &loc.key;
    let out = client
        .list_objects(
            &loc.bucket,
            &ListObjectsParams {
                prefix: prefix.clone(),
                delimiter: Some("/".to_string()),
                continuation_token: token,
                ..Default::default()
            },
        )
        .await?;
    let mut items: Vec<(String, DirEntry)> = Vec::new();
    let mut skipped = Vec::new();
    let mut last: Option<String> = None;
    let mut meta = Vec::new();
    for o in out.objects {
        let Some(name) = o.key.strip_prefix(prefix.as_str()) else {
            continue;
        };
        last = last.max(Some(name.to_string()));
        if name.is_empty() {
            // The directory's own marker object.
            continue;
        }
        if meta::is_meta_name(name) {
            meta.push(Segment {
                name: name.to_string(),
                etag: o.etag,
                size: o.size,
            });
            continue;
        }
        if !valid_name(name) {
            skipped.push(o.key.clone());
            continue;
        }
        let entry = DirEntry {
            name: Arc::from(name),
            kind: Kind::File,
            stat: Stat {
                size: o.size,
                mtime: inode::object_mtime(o.last_modified, dir_stat.mtime),
                etag: o.etag,
            },
        };
        items.push((o.key, entry));
    }
    for p in out.common_prefixes {
        let Some(rel) = p.strip_prefix(prefix.as_str()) else {
            continue;
        };
        last = last.max(Some(rel.to_string()));
        let name = rel.strip_suffix('/').unwrap_or(rel);
        if !valid_name(name) {
            skipped.push(p.clone());
            continue;
        }
        let entry = DirEntry {
            name: Arc::from(name),
            kind: Kind::Dir,
            stat: Stat {
                size: 0,
                mtime: dir_stat.mtime,
                etag: None,
            },
        };
        items.push((p, entry));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Page {
        entries: items.into_iter().map(|(_, e)| e).collect(),
        last,
        token: out.next_continuation_token,
        skipped,
        meta,
    })
}
