//! Buckets of millions of objects, driven through the filesystem core: a
//! walk of a million objects (a store that makes them up on the fly,
//! `s3::generated`) stays within the metadata budget, gives it back when
//! the kernel forgets, and lists each directory once — ahead of the walk
//! when it enters subdirectories in order, never for a single `ls`.
//!
//! The kernel is played by [`Kernel`]: it holds the references that
//! readdirplus and lookups hand it, and forgets a name when the mount asks
//! it to (as FUSE's entry invalidation makes the real one do), unless it
//! is using that directory.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bladefs::fs::Fs;
use bladefs::fs::cache::Ttl;
use bladefs::fs::inode::Kind;
use bladefs::s3::generated::GeneratedTree;
use bladefs::s3::mem::MemoryClient;
use bladefs::s3::{ObjectClient, Op};

mod core_support;
use core_support::{BUCKET, Mount};

type Asked = Arc<Mutex<Vec<(u64, Arc<str>)>>>;

/// The kernel's side: references held per inode, and the names it knows.
struct Kernel {
    fs: Arc<Fs>,
    refs: HashMap<u64, u64>,
    names: HashMap<(u64, Arc<str>), u64>,
    asked: Asked,
    /// Directories being read (a walk's path): not forgotten meanwhile.
    busy: Vec<u64>,
}

impl Kernel {
    fn new(fs: Arc<Fs>) -> Self {
        let asked: Asked = Arc::default();
        let to = asked.clone();
        fs.set_kernel_evict(Box::new(move |names| {
            to.lock().unwrap().extend(names);
        }));
        Kernel {
            fs,
            refs: HashMap::new(),
            names: HashMap::new(),
            asked,
            busy: Vec::new(),
        }
    }

    fn hold(&mut self, parent: u64, name: &str, ino: u64) {
        *self.refs.entry(ino).or_default() += 1;
        self.names.insert((parent, Arc::from(name)), ino);
    }

    /// Forgets what the mount asked it to.
    fn evict(&mut self) {
        let asked = std::mem::take(&mut *self.asked.lock().unwrap());
        for (parent, name) in asked {
            let Some(&ino) = self.names.get(&(parent, name.clone())) else {
                continue;
            };
            if self.busy.contains(&ino) {
                continue;
            }
            self.names.remove(&(parent, name));
            if let Some(n) = self.refs.remove(&ino) {
                self.fs.forget(ino, n);
            }
        }
    }

    /// Forgets everything (`echo 2 > /proc/sys/vm/drop_caches`).
    fn drop_caches(&mut self) {
        for (ino, n) in self.refs.drain() {
            self.fs.forget(ino, n);
        }
        self.names.clear();
    }

    async fn lookup(&mut self, parent: u64, name: &str) -> u64 {
        if let Some(&ino) = self.names.get(&(parent, Arc::from(name))) {
            return ino;
        }
        let attr = self.fs.lookup(parent, OsStr::new(name)).await.unwrap();
        self.hold(parent, name, attr.ino);
        attr.ino
    }

    /// readdirplus of `dir` to its end, as the kernel reads it (a few
    /// dozen entries per call), forgetting what it is asked to between
    /// calls. Returns the names and kinds.
    async fn readdir(&mut self, dir: u64) -> Vec<(String, Kind)> {
        self.busy.push(dir);
        let fh = self.fs.opendir(dir).await.unwrap();
        let mut out = Vec::new();
        let mut offset = 2;
        loop {
            let mut batch = Vec::new();
            self.fs
                .readdir(dir, fh, offset, true, |e| {
                    // Full: the entry is not taken (nor counted).
                    if batch.len() == 48 {
                        return true;
                    }
                    batch.push((e.name.to_string(), e.kind, e.ino, e.next_offset));
                    false
                })
                .await
                .unwrap();
            let Some(&(_, _, _, next)) = batch.last() else {
                break;
            };
            offset = next;
            for (name, kind, ino, _) in batch {
                self.hold(dir, &name, ino);
                out.push((name, kind));
            }
            self.evict();
        }
        self.fs.releasedir(fh);
        self.busy.pop();
        out
    }
}

fn lists(stats: &bladefs::s3::ClientStats) -> u64 {
    stats.snapshot().get(Op::ListObjectsV2).requests
}

const BUDGET: u64 = 8 << 20;

/// `find` over 1 000 000 objects in 1 000 directories with an 8 MiB
/// metadata budget: never more charged than the budget, every directory
/// listed exactly once (all but the first two ahead of the walk), and
/// after the kernel forgets, little left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_of_a_million_objects_stays_within_the_metadata_budget() {
    let store = Arc::new(GeneratedTree::new(BUCKET, 1000, 1000));
    let m = core_support::mount(store.clone() as Arc<dyn ObjectClient>, |cfg| {
        // Listings kept for the whole walk: nothing is listed again
        // because it went stale.
        cfg.metadata_ttl = Ttl(Some(Duration::from_secs(3600)));
        cfg.metadata_cache_bytes = BUDGET;
    });
    let mut k = Kernel::new(m.fs.clone());
    let root = m.fs.root_ino();
    let top = k.readdir(root).await;
    assert_eq!(top.len(), 1000);
    let mut files = 0usize;
    for (name, kind) in &top {
        assert_eq!(*kind, Kind::Dir);
        // An inode forgotten meanwhile is looked up again, as the kernel
        // would.
        let ino = k.lookup(root, name).await;
        let entries = k.readdir(ino).await;
        assert_eq!(entries.len(), 1000, "{name}");
        files += entries.len();
    }
    assert_eq!(files, 1_000_000);
    let (charged, peak, limit) = m.fs.metadata_charged();
    eprintln!(
        "walk: peak charged {peak} of {limit}, {charged} at the end, {} inodes",
        m.fs.inode_count()
    );
    assert!(peak <= limit, "peak {peak} over the budget {limit}");
    assert!(peak > limit / 2, "the walk filled the budget: {peak}");
    assert_eq!(lists(store.stats()), 1001, "each directory listed once");
    let (ahead, used) = m.fs.list_ahead_counts();
    assert_eq!((ahead, used), (998, 998), "listed ahead, and used");
    k.drop_caches();
    let (after, _, _) = m.fs.metadata_charged();
    eprintln!("after the kernel forgot: {after} charged");
    assert_eq!(m.fs.inode_count(), 1);
    assert!(after <= limit / 4, "{after} still charged");
}

/// `ls` of a directory of directories lists that one directory; opening
/// its subdirectories out of order lists each as it is opened; a walk in
/// order lists ahead, never more than the window past the last one
/// entered, and each directory once.
#[tokio::test]
async fn only_a_walk_in_order_lists_ahead() {
    let store = Arc::new(GeneratedTree::new(BUCKET, 40, 3));
    let m = core_support::mount(store.clone() as Arc<dyn ObjectClient>, |cfg| {
        cfg.metadata_ttl = Ttl(Some(Duration::from_secs(3600)));
    });
    let window = m.fs.config().walk.dirs_ahead as u64;
    let mut k = Kernel::new(m.fs.clone());
    let root = m.fs.root_ino();
    assert_eq!(k.readdir(root).await.len(), 40);
    assert_eq!(lists(store.stats()), 1);
    assert_eq!(m.fs.list_ahead_counts(), (0, 0), "ls lists nothing ahead");
    for name in ["d0030", "d0025", "d0035", "d0003"] {
        let ino = k.lookup(root, name).await;
        assert_eq!(k.readdir(ino).await.len(), 3);
    }
    assert_eq!(lists(store.stats()), 5);
    assert_eq!(m.fs.list_ahead_counts(), (0, 0), "out of order");
    // d0005 after d0003: within reach, a walk.
    for d in 5..=10 {
        let ino = k.lookup(root, &format!("d{d:04}")).await;
        assert_eq!(k.readdir(ino).await.len(), 3);
    }
    let (ahead, used) = m.fs.list_ahead_counts();
    assert_eq!(used, 5, "d0006 to d0010 were listed ahead");
    // d0011 .. d0010 + window are in flight or listed, no further.
    assert_eq!(ahead, used + window);
    // The walk stops: one open elsewhere out of order gives up the rest.
    let ino = k.lookup(root, "d0000").await;
    k.readdir(ino).await;
    let ino = k.lookup(root, "d0011").await;
    k.readdir(ino).await;
    assert_eq!(m.fs.list_ahead_counts().1, used, "given up, listed again");
    // Every directory opened was listed once (the root, four out of
    // order, d0005, d0000 and d0011 by their opens, d0006 to d0010
    // ahead); beyond them, at most the window given up.
    let listed = lists(store.stats());
    assert!((13..=13 + window).contains(&listed), "{listed} listings");
}

/// A change made through the mount after a subdirectory was listed ahead
/// is in what the walk then reads there.
#[tokio::test]
async fn a_change_made_here_is_not_hidden_by_a_listing_ahead() {
    let mem = Arc::new(MemoryClient::with_bucket(BUCKET));
    for d in 0..6 {
        mem.put(BUCKET, &format!("d{d}/f"), b"x".to_vec());
    }
    let m: Mount = core_support::mount(mem.clone(), |cfg| {
        cfg.metadata_ttl = Ttl(Some(Duration::from_secs(3600)));
    });
    let mut k = Kernel::new(m.fs.clone());
    let root = m.fs.root_ino();
    k.readdir(root).await;
    for d in ["d0", "d1"] {
        let ino = k.lookup(root, d).await;
        k.readdir(ino).await;
    }
    assert!(m.fs.list_ahead_counts().0 >= 3, "d2.. listed ahead");
    let d3 = k.lookup(root, "d3").await;
    let (_, fh) = m.fs.create(d3, OsStr::new("new")).await.unwrap();
    m.fs.flush(fh).await.unwrap();
    m.fs.release(fh).await;
    let d2 = k.lookup(root, "d2").await;
    k.readdir(d2).await;
    let names: Vec<String> = k.readdir(d3).await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["f", "new"]);
}
