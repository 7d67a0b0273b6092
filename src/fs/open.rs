//! Open files: the one owner of what is open, per inode and per handle.
//!
//! Design:
//! - Each inode with open handles has one entry. Its write-back buffer
//!   ([`DirtyFile`]) is created at most once, under this table's lock with
//!   no await between looking and inserting, so two opens racing for one
//!   inode share one buffer.
//! - A handle opened read-only reads through its own [`FileReader`]
//!   (read-ahead, ETag-guarded) until the inode gets a buffer; from then on
//!   every handle of the inode reads the buffer, so all of them see the
//!   same bytes: writes made through any handle, truncations, and the
//!   content kept for a file whose name was removed while it is open.
//! - The buffer lives until the inode's last handle is released.
//! - The lock guards only maps and counters: no I/O and no await under it,
//!   and callers take what they need (`Arc`s) and let go before working.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::{FsError, FsResult};
use super::inode::Ino;
use super::prefetch::FileReader;
use super::upload::DirtyFile;

struct Entry {
    handles: usize,
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

#[derive(Default)]
struct Table {
    inodes: HashMap<Ino, Entry>,
    handles: HashMap<u64, HandleInfo>,
    next_fh: u64,
}

#[derive(Default)]
pub struct OpenFiles {
    table: Mutex<Table>,
}

fn release(t: &mut Table, fh: u64) -> Option<Released> {
    let h = t.handles.remove(&fh)?;
    let entry = t.inodes.get_mut(&h.ino)?;
    entry.handles -= 1;
    let last_buffer = if entry.handles == 0 {
        t.inodes.remove(&h.ino).and_then(|e| e.buffer)
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

impl OpenFiles {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("open files lock")
    }

    /// Registers a handle of `ino`. With `new_buffer`, the inode gets that
    /// buffer unless it has one already (which is then shared, and
    /// returned); without, the handle reads through `reader` until the
    /// inode gets a buffer.
    pub fn open(
        &self,
        ino: Ino,
        reader: Option<Arc<FileReader>>,
        new_buffer: Option<Arc<DirtyFile>>,
        writable: bool,
    ) -> (u64, Option<Arc<DirtyFile>>) {
        let mut t = self.table();
        t.next_fh += 1;
        let fh = t.next_fh;
        let entry = t.inodes.entry(ino).or_insert(Entry {
            handles: 0,
            buffer: None,
        });
        entry.handles += 1;
        if entry.buffer.is_none() {
            entry.buffer = new_buffer;
        }
        let buffer = entry.buffer.clone();
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
    /// the inode has no open handle (then nothing is built).
    pub fn buffer_or_insert(
        &self,
        ino: Ino,
        make: impl FnOnce() -> FsResult<Arc<DirtyFile>>,
    ) -> FsResult<Option<Arc<DirtyFile>>> {
        let mut t = self.table();
        let Some(entry) = t.inodes.get_mut(&ino) else {
            return Ok(None);
        };
        if entry.buffer.is_none() {
            entry.buffer = Some(make()?);
        }
        Ok(entry.buffer.clone())
    }

    pub fn buffer(&self, ino: Ino) -> Option<Arc<DirtyFile>> {
        self.table().inodes.get(&ino).and_then(|e| e.buffer.clone())
    }

    /// A reader of one of `ino`'s handles, if any reads the object itself.
    pub fn any_reader(&self, ino: Ino) -> Option<Arc<FileReader>> {
        self.table()
            .handles
            .values()
            .find(|h| h.ino == ino)
            .and_then(|h| h.reader.clone())
    }

    /// Every handle's reader of its object.
    pub fn readers(&self) -> Vec<Arc<FileReader>> {
        self.table()
            .handles
            .values()
            .filter_map(|h| h.reader.clone())
            .collect()
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

    /// Every buffer, with its inode.
    pub fn buffers(&self) -> Vec<(Ino, Arc<DirtyFile>)> {
        self.table()
            .inodes
            .iter()
            .filter_map(|(ino, e)| e.buffer.clone().map(|b| (*ino, b)))
            .collect()
    }

    pub fn handle_count(&self) -> usize {
        self.table().handles.len()
    }
}
