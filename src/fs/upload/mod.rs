//! Writing: the write-back buffer and the uploads that empty it.
//!
//! Design:
//! - A file open for writing has one [`DirtyFile`], shared by all its
//!   handles. Written bytes go to a *staging file*: a sparse temp file in
//!   the cache directory, unlinked at once (a crash leaves nothing behind).
//!   RAM holds only parts being uploaded, bounded by a semaphore of bytes
//!   shared by the mount: writers wait for memory instead of growing it.
//!   Staged bytes of all files together are bounded too (ENOSPC beyond).
//! - The file is the *base* object (its ETag and the length of it still in
//!   use) overlaid with *dirty* ranges. Bytes of the base a reader or an
//!   upload needs are fetched into the staging file on demand (*present*).
//! - A new or truncated file written from start to end *streams*: each
//!   part is uploaded in the background as soon as it is complete and more
//!   data follows. Part sizes grow with the part number (8 MiB for the
//!   first thousand, doubling every thousand) so 10 000 parts reach past
//!   5 TiB without knowing the final size.
//! - Such a file keeps no staging file at all while it is written in
//!   order: its parts are filled in memory and sent from there (*memory
//!   mode*, in `file.rs`).
//! - Otherwise `commit` plans the object afresh: unchanged ranges of the
//!   base stay on the server (UploadPartCopy, guarded by If-Match on the
//!   base ETag), changed ones are uploaded; a piece too small to be a part
//!   (under 5 MiB, not the last) is merged into its neighbour, filling its
//!   unchanged bytes from the base. Small files are one PUT.
//! - `commit` (on close and fsync) returns only when the object is
//!   complete in the bucket. A failed multipart upload is aborted, so no
//!   partial object appears and the old content stays; the written data
//!   stays staged and the error goes to close/fsync (EIO).

mod file;
mod plan;
mod staging;
mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use file::{DirtyFile, Journaled};
pub use plan::plan;
pub use staging::blocking;

use std::ops::Range;

use super::error::FsResult;
use super::inode::Location;
use super::memory::{Memory, Use};
use super::multipart;
use super::ranges::RangeSet;
use crate::s3::{ObjectClient, limits};

#[derive(Debug, Clone)]
pub struct WriteConfig {
    /// Where staging files live. Default: `$TMPDIR` (or /var/tmp).
    pub cache_dir: PathBuf,
    /// Bytes all files together may stage. Default 10 GiB.
    pub max_staged: u64,
    /// Part size of the first thousand streamed parts, and the smallest
    /// part of a planned upload. Default 8 MiB.
    pub part_size: u64,
    /// Parts of one file uploading at once. Default 8.
    pub parts_in_flight: usize,
    /// Bytes of parts in memory for all uploads together. Default 128 MiB.
    pub max_memory: u64,
    /// Whether files written in order stream from memory (see
    /// `file.rs`). Off with a data cache: it is filled from the staging
    /// file of what was written.
    pub from_memory: bool,
    /// Whether parts of a new file go up while it is written (*streams*).
    /// Off with write-back: its writes never wait for the store.
    pub stream: bool,
}

impl Default for WriteConfig {
    fn default() -> Self {
        const MIB: u64 = 1024 * 1024;
        WriteConfig {
            cache_dir: std::env::temp_dir(),
            max_staged: 10 * 1024 * MIB,
            part_size: 8 * MIB,
            parts_in_flight: 8,
            max_memory: 128 * MIB,
            from_memory: true,
            stream: true,
        }
    }
}

/// What every dirty file of a mount shares.
pub struct Uploads {
    pub cfg: WriteConfig,
    pub client: Arc<dyn ObjectClient>,
    /// Multipart uploads not yet completed or aborted.
    pub open: multipart::OpenUploads,
    memory: Memory,
    staged: AtomicU64,
    spares: staging::Spares,
}

impl Uploads {
    pub fn new(client: Arc<dyn ObjectClient>, cfg: WriteConfig, memory: Memory) -> Arc<Self> {
        Arc::new(Uploads {
            memory,
            cfg,
            client,
            open: multipart::OpenUploads::default(),
            staged: AtomicU64::new(0),
            spares: staging::Spares::default(),
        })
    }

    /// The largest part memory allows (every part is in memory whole
    /// while it is sent).
    fn largest_part(&self) -> u64 {
        self.memory.largest(Use::Transfer)
    }

    /// The size of streamed part number `n` (1-based): doubling every
    /// thousand parts, up to what memory allows.
    fn stream_part_len(&self, n: u32) -> u64 {
        (self.cfg.part_size << ((n - 1) / 1000).min(10)).min(self.largest_part())
    }

    /// The size of planned parts for an object of `size` bytes.
    fn planned_part_len(&self, size: u64) -> u64 {
        const MIB: u64 = 1024 * 1024;
        let fit = size.div_ceil(u64::from(PLANNED_PARTS)).div_ceil(MIB) * MIB;
        self.cfg
            .part_size
            .max(fit)
            .max(limits::MIN_PART_SIZE)
            .min(self.largest_part())
    }

    /// Bytes of files being written held in staging files, not yet in
    /// the bucket.
    pub fn staged(&self) -> u64 {
        self.staged.load(Ordering::Relaxed)
    }

    /// The largest file that can be written: as many parts as a planned
    /// upload may have, each as large as memory allows.
    pub fn max_file_size(&self) -> u64 {
        u64::from(PLANNED_PARTS) * self.largest_part()
    }
}

/// Uploads `size` bytes that `read` (blocking: local disk) produces, at
/// any offset into a buffer, as the object at `loc`: one PUT, or one
/// multipart upload beyond a part. Returns the object's ETag once it is
/// complete.
pub async fn upload_whole<R>(
    up: &Uploads,
    loc: &Location,
    size: u64,
    read: R,
) -> FsResult<Option<String>>
where
    R: Fn(u64, &mut [u8]) -> FsResult<()> + Clone + Send + Sync + 'static,
{
    let mut dirty = RangeSet::new();
    dirty.insert(0..size);
    let planned = plan::Planned {
        loc,
        size,
        base_etag: None,
        base_len: 0,
        dirty: &dirty,
    };
    plan::upload_planned(up, planned, |r: Range<u64>| {
        let read = read.clone();
        async move {
            let len = (r.end - r.start) as usize;
            let permit = up.memory.take(Use::Transfer, len as u64).await;
            let buf = blocking(move || {
                let mut buf = crate::s3::buffers::take(len);
                buf.resize(len, 0);
                read(r.start, &mut buf)?;
                Ok(buf)
            })
            .await?;
            Ok((crate::s3::buffers::freeze(buf), permit))
        }
    })
    .await
}

/// Parts a planned upload uses at most (a margin below S3's 10 000 for
/// the pieces that planning splits and merges).
const PLANNED_PARTS: u32 = limits::MAX_PARTS - 100;

/// What a successful commit left in the bucket.
#[derive(Debug, Clone)]
pub struct Committed {
    pub size: u64,
    pub etag: Option<String>,
    /// The file's generation, when the staging file holds every byte of
    /// the object saved (see [`DirtyFile::read_saved`]).
    pub staged: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn part_sizes_reach_five_tib() {
        let up = WriteConfig::default();
        let total: u64 = (1..=limits::MAX_PARTS)
            .map(|n| up.part_size << ((n - 1) / 1000).min(10))
            .sum();
        assert!(total >= 5 * 1024 * 1024 * MIB);
    }
}
