//! What a mount is told (its configuration and what it shows) and what it
//! reports (its gauges).

use super::cache::Ttl;
use super::prefetch::PrefetchConfig;
use super::upload::WriteConfig;
use super::writeback::WriteBackConfig;
use super::{versions, walk};

/// What a mount shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// One bucket, or the keys under `prefix` (empty, or ending in `/`).
    Bucket { bucket: String, prefix: String },
    /// Every bucket of the store, each a directory of the root.
    AllBuckets,
}

#[derive(Debug, Clone)]
pub struct FsConfig {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits of files. Default 0644.
    pub file_mode: u16,
    /// Permission bits of directories. Default 0755.
    pub dir_mode: u16,
    pub metadata_ttl: Ttl,
    /// An open for reading asks the store what the file is now, unless
    /// this mount is writing it or a walk just listed it (default), so
    /// that it reads what another host closed before it.
    pub close_to_open: bool,
    pub read_only: bool,
    pub prefetch: PrefetchConfig,
    /// Read-ahead across the files of a directory being walked.
    pub walk: walk::WalkConfig,
    pub write: WriteConfig,
    /// `--write-back`: closes journaled on local disk, uploads in the
    /// background (`fs/writeback`). Active once `Fs::start_write_back`
    /// has run.
    pub write_back: Option<WriteBackConfig>,
    /// The metadata budget (`fs/budget.rs`): bytes for the inodes, names,
    /// attributes, listings and metadata tables a mount remembers.
    /// Default 64 MiB.
    pub metadata_cache_bytes: u64,
    /// Longest listing kept in the cache, in entries. Default 100 000.
    pub max_cached_listing_len: usize,
    /// Names of the history directories at each versioned bucket's root
    /// (`None`: not shown). Defaults `.versions` and `.snapshots`.
    pub versions_dir: Option<String>,
    pub snapshots_dir: Option<String>,
}

impl Default for FsConfig {
    fn default() -> Self {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        FsConfig {
            uid,
            gid,
            file_mode: 0o644,
            dir_mode: 0o755,
            metadata_ttl: Ttl(Some(std::time::Duration::from_secs(1))),
            close_to_open: true,
            read_only: false,
            prefetch: PrefetchConfig::default(),
            walk: walk::WalkConfig::default(),
            write: WriteConfig::default(),
            write_back: None,
            metadata_cache_bytes: super::budget::DEFAULT_BYTES,
            max_cached_listing_len: 100_000,
            versions_dir: Some(versions::DEFAULT_VERSIONS_DIR.to_string()),
            snapshots_dir: Some(versions::DEFAULT_SNAPSHOTS_DIR.to_string()),
        }
    }
}

/// What the mount holds now, and how its metadata cache has done.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub inodes: u64,
    pub open_handles: u64,
    /// Files open here with changes not yet in the bucket.
    pub dirty_files: u64,
    /// Bytes of those changes in staging files.
    pub staged_bytes: u64,
    pub multipart_uploads: u64,
    pub read_ahead_bytes: u64,
    pub transfer_bytes: u64,
    pub memory_peak_bytes: u64,
    pub name_hits: u64,
    pub name_misses: u64,
    pub listing_hits: u64,
    pub listing_misses: u64,
    /// Write-back: files queued (journaled, not yet in the bucket), their
    /// bytes, those whose last upload failed; uploads done, failures, and
    /// files uploaded from an earlier mount's journal.
    pub write_back_queued_files: u64,
    pub write_back_queued_bytes: u64,
    pub write_back_failed_files: u64,
    pub write_back_uploaded: u64,
    pub write_back_failures: u64,
    pub write_back_replayed: u64,
    /// Files fetched ahead of a directory walk, and those then opened.
    pub walk_fetched: u64,
    pub walk_used: u64,
    /// Subdirectories listed ahead of a walk, and those then used.
    pub list_ahead_started: u64,
    pub list_ahead_used: u64,
    /// The metadata budget: bytes charged now, and its limit.
    pub metadata_charged_bytes: u64,
    pub metadata_limit_bytes: u64,
    /// The local data cache (zeros without one): blocks served and not,
    /// bytes served, stored and on disk, blocks evicted and found invalid.
    pub data_cache_hits: u64,
    pub data_cache_misses: u64,
    pub data_cache_hit_bytes: u64,
    pub data_cache_stored_bytes: u64,
    pub data_cache_evicted: u64,
    pub data_cache_invalid: u64,
    pub data_cache_used_bytes: u64,
}
