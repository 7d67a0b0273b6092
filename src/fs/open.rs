//! Open files: the one owner of what is open, per inode and per handle,
//! and of where each open file is.
//!
//! Design:
//! - Each inode with open handles has one entry. Its write-back buffer
//!   ([`DirtyFile`]) is set at most once, under this table's lock with no
//!   await between looking and inserting, so two opens racing for one
//!   inode share one buffer (a candidate built outside the lock, because
//!   it creates a staging file, is dropped unused).
//! - Each live entry has the file's one current location, indexed by
//!   location: "is this file being written here?" ([`OpenFiles::written_at`])
//!   and "which files are open under this directory?" are lookups, not
//!   scans. A rename moves them with one [`OpenFiles::relocate`], which is
//!   also the only thing that tells buffers and readers their new place.
//! - A handle opened read-only reads through its own [`FileReader`]
//!   (read-ahead, ETag-guarded) until the inode gets a buffer; from then on
//!   every handle of the inode reads the buffer, so all of them see the
//!   same bytes: writes made through any handle, truncations, and the
//!   content kept for a file whose name was removed while it is open.
//! - The buffer lives until the inode's last handle is released.
//! - The lock guards only maps and counters: no I/O and no await under it,
//!   and callers take what they need (`Arc`s) and let go before working.
//! - Handle numbers, files' and directories', come from one counter.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::error::{FsError, FsResult};
use super::inode::{Ino, Location};
use super::prefetch::FileReader;
use super::upload::DirtyFile;

struct Entry {
    handles: usize,
    /// Where the file is now: the one current location of a live open
    /// file (`None` for a version, which never moves).
    loc: Option<Location>,
    buffer: Option<Arc<DirtyFile>>,
}

struct HandleInfo {
    ino: Ino,
    reader: Option<Arc<FileReader>>,
    writable: bool,
}

/// What a handle reads from and writes to.
pub enum Target {
    Reader(Arc<FileReader>),
    Buffer(Arc<DirtyFile>),
}

/// A key's place in the index: bucket, then key, so that the files under a
/// prefix are one range.
type Place = (Arc<str>, String);

#[derive(Default)]
struct Table {
    inodes: HashMap<Ino, Entry>,
    /// Live open files by location: "is this file open here?" without a
    /// scan, and the files under a directory as one range.
    by_loc: BTreeMap<Place, Ino>,
    handles: HashMap<u64, HandleInfo>,
}

impl Table {
    /// Open files at `loc` (a file: that key; a directory: every key under
    /// it), with their buffers.
    fn under<'a>(&'a self, loc: &'a Location) -> impl Iterator<Item = (Ino, &'a Entry)> + 'a {
        let start: Place = (loc.bucket.clone(), loc.key.clone());
        self.by_loc
            .range(start..)
            .take_while(move |((b, k), _)| *b == loc.bucket && k.starts_with(&loc.key))
            .filter(move |((_, k), _)| loc.is_dir() || *k == loc.key)
            .filter_map(|(_, ino)| self.inodes.get(ino).map(|e| (*ino, e)))
    }
}

#[derive(Default)]
pub struct OpenFiles {
    table: Mutex<Table>,
    /// The mount's one counter of handles, files' and directories'.
    next_fh: AtomicU64,
}

fn release(t: &mut Table, fh: u64) -> Option<Released> {
    let h = t.handles.remove(&fh)?;
    let entry = t.inodes.get_mut(&h.ino)?;
    entry.handles -= 1;
    let last_buffer = if entry.handles == 0 {
        let e = t.inodes.remove(&h.ino)?;
        if let Some(loc) = e.loc {
            let place = (loc.bucket, loc.key);
            if t.by_loc.get(&place) == Some(&h.ino) {
                t.by_loc.remove(&place);
            }
        }
        e.buffer
    } else {
        None
    };
    Some(Released {
        ino: h.ino,
        last_buffer,
    })
}

/// What releasing a handle left behind.
pub struct Released {
    pub ino: Ino,
    /// The inode's buffer, when this was its last handle.
    pub last_buffer: Option<Arc<DirtyFile>>,
}

/// One file that moved: its key before, the ETag copied, and the copy's.
pub type Copied = (String, Option<String>, Option<String>);

impl OpenFiles {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("open files lock")
    }

    /// A new handle number, for a file or a directory.
    pub fn next_handle(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a handle of `ino`, a live file at `loc` or (without) a
    /// version. With `new_buffer`, the inode gets that buffer unless it has
    /// one already (which is then shared, and returned); without, the
    /// handle reads through `reader` until the inode gets a buffer.
    pub fn open(
        &self,
        ino: Ino,
        loc: Option<&Location>,
        reader: Option<Arc<FileReader>>,
        new_buffer: Option<Arc<DirtyFile>>,
        writable: bool,
    ) -> (u64, Option<Arc<DirtyFile>>) {
        let fh = self.next_handle();
        let mut t = self.table();
        let entry = t.inodes.entry(ino).or_insert_with(|| Entry {
            handles: 0,
            loc: loc.cloned(),
            buffer: None,
        });
        entry.handles += 1;
        if entry.buffer.is_none() {
            entry.buffer = new_buffer;
        }
        let buffer = entry.buffer.clone();
        let first_loc = (entry.handles == 1).then(|| entry.loc.clone()).flatten();
        if let Some(loc) = first_loc {
            // A name reused while an unlinked file of it is still open: the
            // name is the new file's.
            t.by_loc.insert((loc.bucket, loc.key), ino);
        }
        t.handles.insert(
            fh,
            HandleInfo {
                ino,
                reader,
                writable,
            },
        );
        (fh, buffer)
    }

    /// Gives `ino` the buffer `make` builds, unless it has one; `None` when
    /// the inode has no open handle (then nothing is built). `make` runs
    /// outside the lock (it creates a staging file); if another caller
    /// got there first, its buffer is the one returned.
    pub fn buffer_or_insert(
        &self,
        ino: Ino,
        make: impl FnOnce() -> FsResult<Arc<DirtyFile>>,
    ) -> FsResult<Option<Arc<DirtyFile>>> {
        match self.table().inodes.get(&ino) {
            None => return Ok(None),
            Some(Entry {
                buffer: Some(b), ..
            }) => return Ok(Some(b.clone())),
            Some(_) => {}
        }
        let candidate = make()?;
        let mut t = self.table();
        let Some(entry) = t.inodes.get_mut(&ino) else {
            return Ok(None);
        };
        Ok(Some(entry.buffer.get_or_insert(candidate).clone()))
    }

    pub fn buffer(&self, ino: Ino) -> Option<Arc<DirtyFile>> {
        self.table().inodes.get(&ino).and_then(|e| e.buffer.clone())
    }

    /// Whether any file of a bucket is open here: when none is, no name is
    /// being written here and a listing need not ask name by name.
    pub fn any_live(&self) -> bool {
        !self.table().by_loc.is_empty()
    }

    /// The buffer of the file being written here at `loc`, if any: whether
    /// this mount, not the store, knows what the file is.
    pub fn written_at(&self, loc: &Location) -> Option<Arc<DirtyFile>> {
        let t = self.table();
        if t.by_loc.is_empty() {
            // Nothing open: no key to build (asked per listed name).
            return None;
        }
        let ino = t.by_loc.get(&(loc.bucket.clone(), loc.key.clone()))?;
        t.inodes
            .get(ino)?
            .buffer
            .clone()
            .filter(|b| !b.is_unlinked())
    }

    /// The buffers of files being written here at `loc` (a file) or under
    /// it (a directory), with their inodes.
    pub fn written_under(&self, loc: &Location) -> Vec<(Ino, Arc<DirtyFile>)> {
        self.table()
            .under(loc)
            .filter_map(|(ino, e)| Some((ino, e.buffer.clone()?)))
            .filter(|(_, b)| !b.is_unlinked())
            .collect()
    }

    /// Open files under `from` follow their objects to `to` (a file's
    /// location to another, or a directory's). Buffers and readers of a
    /// copied key (`copied`) read the copy from now on; a buffer never
    /// committed (no object yet) only changes its name.
    pub fn relocate(&self, from: &Location, to: &Location, copied: &[Copied]) {
        let (buffers, readers) = {
            let mut t = self.table();
            let moved: Vec<(Ino, Location, Location)> = t
                .under(from)
                .filter_map(|(ino, e)| {
                    let old = e.loc.clone()?;
                    let new = old.rebased(from, to)?;
                    Some((ino, old, new))
                })
                .collect();
            let mut buffers = Vec::new();
            let mut inos = HashMap::new();
            for (ino, old, new) in moved {
                if t.by_loc.get(&(old.bucket.clone(), old.key.clone())) == Some(&ino) {
                    t.by_loc.remove(&(old.bucket.clone(), old.key.clone()));
                }
                t.by_loc.insert((new.bucket.clone(), new.key.clone()), ino);
                let copy = copied.iter().find(|(k, _, _)| *k == old.key);
                if let Some(e) = t.inodes.get_mut(&ino) {
                    e.loc = Some(new.clone());
                    if let Some(b) = &e.buffer {
                        buffers.push((b.clone(), new.clone(), copy.cloned()));
                    }
                }
                inos.insert(ino, (new, copy.cloned()));
            }
            let readers: Vec<_> = t
                .handles
                .values()
                .filter_map(|h| {
                    let (new, copy) = inos.get(&h.ino)?;
                    Some((h.reader.clone()?, new.clone(), copy.clone()?))
                })
                .collect();
            (buffers, readers)
        };
        // The files' own locks, after the table's.
        for (file, new, copy) in buffers {
            match copy {
                Some((_, old, new_etag)) => file.rebase(new, &old, new_etag),
                None => file.set_location(new),
            }
        }
        for (reader, new, (_, old, new_etag)) in readers {
            if reader.etag() == old {
                reader.relocate(new, new_etag);
            }
        }
    }

    /// A reader of one of `ino`'s handles, if any reads the object itself.
    pub fn any_reader(&self, ino: Ino) -> Option<Arc<FileReader>> {
        self.table()
            .handles
            .values()
            .find(|h| h.ino == ino)
            .and_then(|h| h.reader.clone())
    }

    /// Where handle `fh` reads and writes, and its inode.
    pub fn target(&self, fh: u64) -> FsResult<(Ino, Target, bool)> {
        let t = self.table();
        let h = t.handles.get(&fh).ok_or(FsError::BadHandle)?;
        let buffer = t.inodes.get(&h.ino).and_then(|e| e.buffer.clone());
        let target = match (buffer, &h.reader) {
            (Some(b), _) => Target::Buffer(b),
            (None, Some(r)) => Target::Reader(r.clone()),
            (None, None) => return Err(FsError::Internal("a handle with nothing to read")),
        };
        Ok((h.ino, target, h.writable))
    }

    pub fn release(&self, fh: u64) -> Option<Released> {
        release(&mut self.table(), fh)
    }

    /// Releases `fh`, unless it is the last handle of an inode that has a
    /// buffer: that one stays, and the buffer is returned, for its owner to
    /// save before it releases the handle. Decided and done under one lock,
    /// so of two handles released at once exactly one is the last.
    pub fn release_unless_last_buffer(&self, fh: u64) -> Option<(Ino, Arc<DirtyFile>)> {
        let mut t = self.table();
        let h = t.handles.get(&fh)?;
        if let Some(e) = t.inodes.get(&h.ino)
            && e.handles == 1
            && let Some(b) = &e.buffer
        {
            return Some((h.ino, b.clone()));
        }
        release(&mut t, fh);
        None
    }

    /// How many files have changes not yet in the bucket.
    pub fn dirty_count(&self) -> usize {
        self.table()
            .inodes
            .values()
            .filter(|e| e.buffer.as_ref().is_some_and(|b| b.is_dirty()))
            .count()
    }

    /// The inodes with open handles now.
    pub fn open_inodes(&self) -> std::collections::HashSet<Ino> {
        self.table().inodes.keys().copied().collect()
    }

    pub fn handle_count(&self) -> usize {
        self.table().handles.len()
    }
}
