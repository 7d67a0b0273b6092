//! The staging file of one file being written: a sparse temp file in the
//! cache directory, unlinked at once (a crash leaves nothing behind), as
//! long as the file. [`Held`] is what it holds, kept under the file's
//! lock: the size, the ranges written here (*dirty*) and those of the base
//! object fetched into it (*present*), and the bytes charged against the
//! mount's staging limit. [`blocking`] is the one way its I/O leaves the
//! async workers.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::Uploads;
use crate::fs::error::{FsError, FsResult, local_io};
use crate::fs::memory::{Memory, Permit, Use};
use crate::fs::ranges::RangeSet;

/// Runs `f` (local disk I/O, often under a file's lock) on the blocking
/// pool, so that no async worker waits on the disk.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> FsResult<T> + Send + 'static,
) -> FsResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| FsError::Cancelled)?
}

/// The temp file; shared with the blocking tasks that read and write it.
#[derive(Clone)]
pub(super) struct Staging(Arc<std::fs::File>);

/// Staging files of files gone, emptied, kept for the next ones: making
/// and removing an inode for every small file written costs more than
/// writing it (ext4 searches its inode bitmaps past recently freed ones).
#[derive(Default)]
pub(super) struct Spares(std::sync::Mutex<Vec<std::fs::File>>);

/// Spare staging files kept at most.
const SPARES: usize = 64;
/// Larger staging files are not kept: emptying them costs their extents.
const SPARE_MAX_LEN: u64 = 8 << 20;

impl Spares {
    fn take(&self) -> Option<std::fs::File> {
        self.0.lock().expect("spares lock").pop()
    }

    /// Keeps `staging` (of a file going away) for another file if nobody
    /// else holds it and it is small; it is emptied first.
    pub fn keep(&self, staging: &Staging, len: u64) {
        if len > SPARE_MAX_LEN
            || Arc::strong_count(&staging.0) > 1
            || self.0.lock().expect("spares lock").len() >= SPARES
            || staging.0.set_len(0).is_err()
        {
            return;
        }
        // The descriptor given up with the file closes; this one stays.
        if let Ok(file) = staging.0.try_clone() {
            let mut spares = self.0.lock().expect("spares lock");
            if spares.len() < SPARES {
                spares.push(file);
            }
        }
    }
}

impl Staging {
    /// A staging file in `dir` (a spare one if there is), `size` bytes
    /// long (sparse), so that reads stop at the file's end and nothing
    /// lies beyond it.
    pub fn create(dir: &Path, spares: &Spares, size: u64) -> FsResult<Staging> {
        let file = match spares.take() {
            Some(f) => f,
            None => tempfile::tempfile_in(dir).map_err(|e| {
                local_io(format!("creating a staging file in {}", dir.display()), e)
            })?,
        };
        file.set_len(size)
            .map_err(|e| local_io("sizing the staging file", e))?;
        Ok(Staging(Arc::new(file)))
    }

    pub fn write_at(&self, data: &[u8], offset: u64) -> FsResult<()> {
        self.0
            .write_all_at(data, offset)
            .map_err(|e| local_io("writing the staging file", e))
    }

    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> FsResult<()> {
        self.0
            .read_exact_at(buf, offset)
            .map_err(|e| local_io("reading the staging file", e))
    }

    pub fn read_at(&self, range: Range<u64>) -> FsResult<Vec<u8>> {
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        self.0
            .read_exact_at(&mut buf, range.start)
            .map_err(|e| local_io("reading the staging file", e))?;
        Ok(buf)
    }

    /// Follows the file's size both ways: cut bytes are gone (zeros if it
    /// grows again), added ones read as zeros.
    pub fn set_len(&self, len: u64) -> FsResult<()> {
        self.0
            .set_len(len)
            .map_err(|e| local_io("resizing the staging file", e))
    }

    /// Bytes `range` for a part, holding memory permits while they live.
    pub async fn read_part(&self, range: Range<u64>, memory: &Memory) -> FsResult<(Bytes, Permit)> {
        let len = range.end - range.start;
        let permit = memory.take(Use::Transfer, len).await;
        let file = self.0.clone();
        let bytes = blocking(move || {
            // A reused buffer: a fresh one costs a page fault per 4 KiB.
            let mut buf = crate::s3::buffers::take(len as usize);
            buf.resize(len as usize, 0);
            file.read_exact_at(&mut buf, range.start)
                .map_err(|e| local_io("reading the staging file", e))?;
            Ok(buf)
        })
        .await?;
        Ok((crate::s3::buffers::freeze(bytes), permit))
    }
}

/// What the staging file holds (see the module's notes).
#[derive(Default)]
pub(super) struct Held {
    pub size: u64,
    pub dirty: RangeSet,
    pub present: RangeSet,
    /// Staged bytes counted against the mount's limit.
    charged: u64,
}

impl Held {
    pub fn new(size: u64) -> Held {
        Held {
            size,
            ..Default::default()
        }
    }

    /// Counts `new_size` against the mount's staging limit.
    pub fn charge(&mut self, up: &Uploads, new_size: u64) -> FsResult<()> {
        if new_size <= self.charged {
            return Ok(());
        }
        if new_size > up.max_file_size() {
            return Err(FsError::FileTooBig);
        }
        let more = new_size - self.charged;
        let before = up.staged.fetch_add(more, Ordering::SeqCst);
        if before + more > up.cfg.max_staged {
            up.staged.fetch_sub(more, Ordering::SeqCst);
            return Err(FsError::NoSpace);
        }
        self.charged = new_size;
        Ok(())
    }

    /// Gives the charge back (the file is gone).
    pub fn discharge(&mut self, up: &Uploads) {
        up.staged.fetch_sub(self.charged, Ordering::SeqCst);
        self.charged = 0;
    }

    /// `range` was written here.
    pub fn written(&mut self, range: Range<u64>) {
        self.size = self.size.max(range.end);
        self.dirty.insert(range.clone());
        self.present.insert(range);
    }

    /// The file was cut or grown to `new_size`.
    pub fn resized(&mut self, new_size: u64) {
        if new_size < self.size {
            self.dirty.truncate(new_size);
            self.present.truncate(new_size);
        }
        self.size = new_size;
    }
}
