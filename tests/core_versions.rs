//! History (`.versions`, `.snapshots`) driven through the filesystem core
//! on the in-memory store with versioning on: the layer below the Ceph RGW
//! mount tests, for naming, selection, request counts, restores by copy,
//! readers pinned to their version, and the findings of those mount tests.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bladefs::fs::SetAttr;
use bladefs::fs::cache::Ttl;
use bladefs::fs::versions::{parse_time, time_name};
use bladefs::s3::mem::MemoryClient;
use bladefs::s3::{ObjectClient, Op};

mod core_support;
use core_support::{BUCKET, Mount};

struct Core {
    mem: Arc<MemoryClient>,
    mount: Mount,
}

impl std::ops::Deref for Core {
    type Target = Mount;
    fn deref(&self) -> &Mount {
        &self.mount
    }
}

async fn core(versioned: bool) -> Core {
    let mem = Arc::new(MemoryClient::with_bucket(BUCKET));
    if versioned {
        mem.put_bucket_versioning(BUCKET, true).await.unwrap();
    }
    let mount = core_support::mount(mem.clone(), |cfg| {
        cfg.metadata_ttl = Ttl(Some(Duration::from_secs(60)));
    });
    Core { mem, mount }
}

impl Core {
    /// The inode at `path` (components separated by `/`).
    async fn walk(&self, path: &str) -> Result<u64, i32> {
        let mut ino = self.fs.root_ino();
        for name in path.split('/').filter(|n| !n.is_empty()) {
            ino = self
                .fs
                .lookup(ino, OsStr::new(name))
                .await
                .map_err(|e| e.errno())?
                .ino;
        }
        Ok(ino)
    }

    async fn names(&self, path: &str) -> Vec<String> {
        let ino = self.walk(path).await.expect(path);
        self.names_of(ino).await
    }

    async fn names_of(&self, ino: u64) -> Vec<String> {
        let fh = self.fs.opendir(ino).await.expect("opendir");
        let mut names = Vec::new();
        self.fs
            .readdir(ino, fh, 0, false, |e| {
                if e.name != "." && e.name != ".." {
                    names.push(e.name.to_string());
                }
                false
            })
            .await
            .expect("readdir");
        self.fs.releasedir(fh);
        names
    }

    async fn read(&self, path: &str) -> Vec<u8> {
        let ino = self.walk(path).await.expect(path);
        let (fh, _) = self.fs.open(ino, false, false).await.expect("open");
        let data = self.fs.read(fh, 0, 1 << 20).await.expect("read");
        self.fs.release(fh).await;
        data.to_vec()
    }

    /// Writes `data` to `path` through the file system (create or
    /// truncate, write, close).
    async fn write(&self, name: &str, data: &[u8]) {
        let root = self.fs.root_ino();
        let fh = match self.fs.lookup(root, OsStr::new(name)).await {
            Ok(a) => self.fs.open(a.ino, true, true).await.expect("open").0,
            Err(_) => {
                self.fs
                    .create(root, OsStr::new(name))
                    .await
                    .expect("create")
                    .1
            }
        };
        self.fs.write(fh, 0, data.to_vec()).await.expect("write");
        self.fs.flush(fh).await.expect("close");
        self.fs.release(fh).await;
    }

    fn requests(&self, op: Op) -> u64 {
        self.mem.stats().snapshot().get(op).requests
    }
}

/// Until the clock is past `t`, so the next write gets a later time.
fn after(t: SystemTime) {
    while SystemTime::now() <= t + Duration::from_millis(2) {
        std::thread::yield_now();
    }
}

/// The version names in `.versions/f` follow every write made through the
/// mount at once (found on RGW: a cached listing hid the newest version),
/// read back as written, and refuse every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_follow_writes_through_the_mount_and_are_read_only() {
    let c = core(true).await;
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("version {i}").into_bytes())
        .collect();
    c.write("f", &bodies[0]).await;
    // Held as the kernel holds it between lookups, so the listing is what
    // the cache has, not what a new lookup would find.
    let held = c.walk(".versions/f").await.unwrap();
    for (i, b) in bodies.iter().enumerate() {
        if i > 0 {
            c.write("f", b).await;
        }
        let names = c.names_of(held).await;
        assert_eq!(
            names.len(),
            i + 1,
            "{names:?}: the newest is listed at once"
        );
    }
    let names = c.names(".versions/f").await;
    for (name, body) in names.iter().zip(&bodies) {
        assert_eq!(
            &c.read(&format!(".versions/f/{name}")).await,
            body,
            "{name}"
        );
        let base = name.split('~').next().unwrap();
        assert_eq!(time_name(parse_time(base).expect("a time")), base);
    }
    assert_eq!(c.names("").await, ["f"], "hidden from the root");
    let v = c.walk(".versions/f").await.unwrap();
    let one = c.walk(&format!(".versions/f/{}", names[0])).await.unwrap();
    let erofs = libc::EROFS;
    assert_eq!(
        c.fs.create(v, OsStr::new("x")).await.unwrap_err().errno(),
        erofs
    );
    assert_eq!(
        c.fs.unlink(v, OsStr::new(&names[0]))
            .await
            .unwrap_err()
            .errno(),
        erofs
    );
    assert_eq!(
        c.fs.open(one, true, false).await.unwrap_err().errno(),
        erofs
    );
    assert_eq!(
        c.fs.setattr(
            one,
            None,
            SetAttr {
                size: Some(0),
                ..Default::default()
            }
        )
        .await
        .unwrap_err()
        .errno(),
        erofs
    );
    assert_eq!(c.mem.objects(BUCKET).len(), 1);

    // No history on a bucket that never had versioning.
    let plain = core(false).await;
    plain.write("f", b"x").await;
    assert_eq!(plain.walk(".versions").await, Err(libc::ENOENT));
    assert_eq!(
        plain.walk(".snapshots/2026-01-01T00:00:00Z").await,
        Err(libc::ENOENT)
    );
}

/// A snapshot shows each key as it was, and a directory only if something
/// in it existed then (found on RGW: `cp -r` of a snapshot into the tree
/// it shows found its own copy without end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_select_by_time_and_leave_out_later_directories() {
    let c = core(true).await;
    let start = SystemTime::now();
    after(start);
    c.write("f", b"one").await;
    let t1 = SystemTime::now();
    after(t1);
    c.mem.put(BUCKET, "later/g", "g");
    c.write("f", b"two").await;
    let t2 = SystemTime::now();
    after(t2);
    c.mem.delete(BUCKET, "f");
    let t3 = SystemTime::now();
    let at = |t: SystemTime| format!(".snapshots/{}", time_name(t));
    assert!(c.names(&at(start)).await.is_empty());
    assert_eq!(c.names(&at(t1)).await, ["f"]);
    assert_eq!(c.read(&format!("{}/f", at(t1))).await, b"one");
    assert_eq!(
        c.walk(&format!("{}/later", at(t1))).await,
        Err(libc::ENOENT)
    );
    assert_eq!(c.names(&at(t2)).await, ["f", "later"]);
    assert_eq!(c.read(&format!("{}/f", at(t2))).await, b"two");
    assert_eq!(c.names(&at(t3)).await, ["later"]);
}

/// A version restored with copy_file_range is one PUT Object Copy of that
/// version: no GET, nothing uploaded at close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_is_a_server_side_copy_of_the_version() {
    let c = core(true).await;
    c.write("f", b"the first").await;
    c.write("f", b"the second").await;
    let names = c.names(".versions/f").await;
    let v = c.walk(&format!(".versions/f/{}", names[0])).await.unwrap();
    let (fh_in, keep) = c.fs.open(v, false, false).await.unwrap();
    assert!(keep, "a version's pages may be kept");
    let (_, fh_out) =
        c.fs.create(c.fs.root_ino(), OsStr::new("restored"))
            .await
            .unwrap();
    let (gets, puts) = (c.requests(Op::GetObject), c.requests(Op::PutObject));
    let n =
        c.fs.copy_file_range(fh_in, 0, fh_out, 0, 1 << 40)
            .await
            .unwrap();
    assert_eq!(n, 9);
    c.fs.flush(fh_out).await.unwrap();
    c.fs.release(fh_out).await;
    c.fs.release(fh_in).await;
    assert_eq!(c.requests(Op::GetObject), gets);
    assert_eq!(c.requests(Op::PutObject), puts);
    assert_eq!(c.requests(Op::CopyObject), 1);
    assert_eq!(&c.mem.objects(BUCKET)["restored"][..], b"the first");
}

/// A reader keeps the version it opened while the key is overwritten and
/// deleted, and finds it by its ETag if it changed before the first read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_is_pinned_to_its_version() {
    let c = core(true).await;
    let old: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    c.mem.put(BUCKET, "f", old.clone());
    c.mem.put(BUCKET, "g", old.clone());
    let f = c.walk("f").await.unwrap();
    let (fh, _) = c.fs.open(f, false, false).await.unwrap();
    assert_eq!(c.fs.read(fh, 0, 4096).await.unwrap()[..], old[..4096]);
    c.mem.put(BUCKET, "f", "new");
    c.mem.delete(BUCKET, "f");
    let rest = c.fs.read(fh, 2 << 20, 1 << 20).await.expect("not ESTALE");
    assert!(rest[..] == old[2 << 20..]);
    c.fs.release(fh).await;

    let g = c.walk("g").await.unwrap();
    let (fh, _) = c.fs.open(g, false, false).await.unwrap();
    c.mem.put(BUCKET, "g", "replaced before the first read");
    let all = c.fs.read(fh, 0, 1 << 20).await.expect("the version opened");
    assert!(all[..] == old[..1 << 20]);
    c.fs.release(fh).await;
}

/// What history costs: listing a file of 100 versions is one
/// ListObjectVersions; a snapshot of a directory of 1 000 files with 3
/// versions each is 3 pages, plus what looking up the directory takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_listings_cost_a_request_per_page_not_per_entry() {
    let c = core(true).await;
    for i in 0..100 {
        c.mem.put(BUCKET, "hundred", format!("{i}"));
    }
    for r in 0..3 {
        for i in 0..1000 {
            c.mem.put(BUCKET, &format!("dir/f{i:04}"), format!("{r}"));
        }
    }
    let lists = c.requests(Op::ListObjectVersions);
    assert_eq!(c.names(".versions/hundred").await.len(), 100);
    assert_eq!(c.requests(Op::ListObjectVersions) - lists, 1);

    let now = time_name(SystemTime::now() + Duration::from_secs(1));
    let lists = c.requests(Op::ListObjectVersions);
    let dir = c.walk(&format!(".snapshots/{now}/dir")).await.unwrap();
    // The lookup of `dir`: its name as prefix, then whether it existed.
    assert_eq!(c.requests(Op::ListObjectVersions) - lists, 2);
    let lists = c.requests(Op::ListObjectVersions);
    assert_eq!(c.names_of(dir).await.len(), 1000);
    assert_eq!(c.requests(Op::ListObjectVersions) - lists, 3);
    assert_eq!(c.read(&format!(".snapshots/{now}/dir/f0999")).await, b"2");
    assert_eq!(c.requests(Op::HeadObject), 0, "nothing asked per entry");
}
