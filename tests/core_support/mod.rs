//! What the core tests share: a mount of bucket [`BUCKET`] through any
//! client (the in-memory store, or faults in front of it), its staging in
//! a temp dir, and paths walked from its root.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bladefs::fs::data_cache::DataCache;
use bladefs::fs::upload::WriteConfig;
use bladefs::fs::{Attr, Creator, Fs, FsConfig, MountSource};
use bladefs::s3::ObjectClient;

pub const BUCKET: &str = "b";

/// A user making names with the plain file mode (mounts of tests about
/// owners run as uid and gid 1000).
pub const USER: Creator = Creator {
    uid: 1000,
    gid: 1000,
    mode: Some(0o644),
};

/// `secs` seconds after the epoch.
pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub struct Mount {
    pub fs: Arc<Fs>,
    _staging: tempfile::TempDir,
}

/// A mount of the whole bucket through `client`, its configuration the
/// default with staging in a new temp dir, then as `edit` leaves it.
pub fn mount(client: Arc<dyn ObjectClient>, edit: impl FnOnce(&mut FsConfig)) -> Mount {
    mount_cached(client, None, edit)
}

/// [`mount`] with a local data cache.
pub fn mount_cached(
    client: Arc<dyn ObjectClient>,
    data_cache: Option<Arc<DataCache>>,
    edit: impl FnOnce(&mut FsConfig),
) -> Mount {
    let staging = tempfile::tempdir().expect("temp dir");
    let mut cfg = FsConfig {
        write: WriteConfig {
            cache_dir: staging.path().to_path_buf(),
            ..WriteConfig::default()
        },
        ..FsConfig::default()
    };
    edit(&mut cfg);
    let fs = Arc::new(Fs::with_data_cache(
        client,
        MountSource::Bucket {
            bucket: BUCKET.to_string(),
            prefix: String::new(),
        },
        cfg,
        data_cache,
    ));
    Mount {
        fs,
        _staging: staging,
    }
}

impl Mount {
    /// The attributes at `path` (names separated by `/`), or the errno of
    /// the first lookup that fails.
    pub async fn walk(&self, path: &str) -> Result<Attr, i32> {
        let mut attr = self.fs.getattr(self.fs.root_ino()).await.unwrap();
        for name in path.split('/').filter(|n| !n.is_empty()) {
            attr = self
                .fs
                .lookup(attr.ino, OsStr::new(name))
                .await
                .map_err(|e| e.errno())?;
        }
        Ok(attr)
    }

    pub async fn attr(&self, path: &str) -> Attr {
        self.walk(path)
            .await
            .unwrap_or_else(|e| panic!("{path}: errno {e}"))
    }
}
