//! A real mount walking more names than its metadata budget holds: the
//! kernel is asked to forget (FUSE entry invalidation) and does, so the
//! inodes held stay within the budget while `find` still sees every name;
//! subdirectories are listed ahead of the walk; once the kernel drops its
//! caches, the charges fall back. (The core test `core_scale` walks a
//! million objects; this one checks the kernel's side of it.)

#[macro_use]
mod common;

use common::Kind;
use common::mount::{Mounted, run, sample, scrape};
use common::store::Store;

const DIRS: usize = 20;
const FILES: usize = 1000;

#[test]
fn a_walk_past_the_metadata_budget_is_forgotten_by_the_kernel() {
    let server = common::start(Kind::S3sFs);
    let store = Store::new(&server, "scale");
    let objects: Vec<(String, Vec<u8>)> = (0..DIRS)
        .flat_map(|d| (0..FILES).map(move |f| (format!("d{d:02}/f{f:04}"), Vec::new())))
        .collect();
    store.put_all(&objects);
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    // 4 MiB hold about 9 000 inodes: fewer than half of the walk's.
    let m = Mounted::new(
        &server,
        "scale",
        &["--metrics-addr", &addr, "--metadata-cache-mib", "4"],
    );
    let metric = |series: &str| sample(&scrape(port, "/metrics").1, series);
    let root = m.join("");
    let found = run("find", &[root.to_str().unwrap()]);
    assert_eq!(found.lines().count(), 1 + DIRS + DIRS * FILES);
    let limit = metric("bladefs_metadata_cache_limit_bytes");
    assert_eq!(limit, (4 << 20) as f64);
    let inodes = metric("bladefs_inodes");
    assert!(
        inodes < (DIRS * FILES / 2) as f64,
        "{inodes} inodes held: the kernel forgot none"
    );
    let charged = metric("bladefs_metadata_cache_bytes");
    assert!(charged <= limit, "{charged} charged of {limit}");
    let listed = metric("bladefs_list_ahead_dirs_total{outcome=\"listed\"}");
    let used = metric("bladefs_list_ahead_dirs_total{outcome=\"used\"}");
    assert_eq!(
        (listed, used),
        ((DIRS - 2) as f64, (DIRS - 2) as f64),
        "every subdirectory after the second listed ahead, and used"
    );
    // Every name again, now that most were forgotten.
    let again = run("find", &[root.to_str().unwrap()]);
    assert_eq!(again, found);
    std::fs::write("/proc/sys/vm/drop_caches", "2\n").unwrap();
    common::wait_for("the kernel to forget every inode", || {
        metric("bladefs_inodes") <= 1.0
    });
    let after = metric("bladefs_metadata_cache_bytes");
    assert!(after <= limit / 4.0, "{after} still charged");
    m.unmount();
}
