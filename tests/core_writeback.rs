//! Write-back (`--write-back DIR`) driven through the core on the in-memory
//! store, with the fault client to hold or fail uploads: a close returns
//! once the file is journaled, the mount shows it meanwhile, other hosts
//! see it once uploaded; after a crash the next mount with the journal
//! uploads every file whose close returned, once and in its latest state,
//! and nothing else; failures stay journaled and are reported.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

use bladefs::fs::writeback::WriteBackConfig;
use bladefs::fs::{Creator, Fs};
use bladefs::s3::faults::{Fault, FaultClient, Gate};
use bladefs::s3::mem::MemoryClient;
use bladefs::s3::{ListVersionsParams, ObjectClient, Op, S3Error, S3ErrorCode};

mod core_support;
use core_support::{BUCKET, Mount};

const ME: Creator = Creator {
    uid: 0,
    gid: 0,
    mode: Some(0o644),
};

fn injected() -> S3Error {
    S3Error::service(
        "PutObject",
        500,
        S3ErrorCode::InternalError,
        "injected",
        None,
    )
}

/// A mount with write-back into `journal`, not yet started.
fn wb_mount(
    client: Arc<dyn ObjectClient>,
    journal: &Path,
    edit: impl FnOnce(&mut WriteBackConfig),
) -> Mount {
    core_support::mount(client, |cfg| {
        cfg.uid = 0;
        cfg.gid = 0;
        let mut wb = WriteBackConfig::new(journal.to_path_buf(), "mem".to_string());
        edit(&mut wb);
        cfg.write_back = Some(wb);
    })
}

/// Another host, caching nothing (it looks again for each step).
fn plain_mount(client: Arc<dyn ObjectClient>) -> Mount {
    core_support::mount(client, |cfg| {
        cfg.uid = 0;
        cfg.gid = 0;
        cfg.metadata_ttl = bladefs::fs::cache::Ttl(Some(std::time::Duration::ZERO));
    })
}

/// Creates `name` in the root, writes `data`, closes it.
async fn write_new(fs: &Fs, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = fs
        .create_as(fs.root_ino(), OsStr::new(name), &ME)
        .await
        .expect("create");
    if !data.is_empty() {
        fs.write(fh, 0, data.to_vec()).await.expect("write");
    }
    fs.flush(fh).await.expect("close");
    fs.release(fh).await;
    attr.ino
}

/// Opens `name` (emptied), writes `data`, closes it.
async fn rewrite(fs: &Fs, name: &str, data: &[u8]) {
    let ino = fs
        .lookup(fs.root_ino(), OsStr::new(name))
        .await
        .expect("lookup")
        .ino;
    let (fh, _) = fs.open(ino, true, true).await.expect("open");
    fs.write(fh, 0, data.to_vec()).await.expect("write");
    fs.flush(fh).await.expect("close");
    fs.release(fh).await;
}

async fn read_all(fs: &Fs, name: &str) -> Vec<u8> {
    let ino = fs
        .lookup(fs.root_ino(), OsStr::new(name))
        .await
        .expect("lookup")
        .ino;
    let (fh, _) = fs.open(ino, false, false).await.expect("open");
    let mut out = Vec::new();
    loop {
        let got = fs.read(fh, out.len() as u64, 1 << 20).await.expect("read");
        if got.is_empty() {
            break;
        }
        out.extend_from_slice(&got);
    }
    fs.release(fh).await;
    out
}

async fn names(fs: &Fs) -> Vec<String> {
    let root = fs.root_ino();
    let fh = fs.opendir(root).await.expect("opendir");
    let mut names = Vec::new();
    fs.readdir(root, fh, 0, false, |e| {
        if e.name != "." && e.name != ".." {
            names.push(e.name.to_string());
        }
        false
    })
    .await
    .expect("readdir");
    fs.releasedir(fh);
    names.sort();
    names
}

fn object(mem: &MemoryClient, key: &str) -> Option<Vec<u8>> {
    mem.objects(BUCKET).get(key).map(|b| b.to_vec())
}

/// Files this mount has journaled and not yet stored.
fn queued(m: &Mount) -> u64 {
    m.fs.gauges().write_back_queued_files
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn a_close_returns_before_the_upload_and_this_mount_shows_the_file_meanwhile() {
    let mem = Arc::new(MemoryClient::with_bucket(BUCKET));
    let faults = Arc::new(FaultClient::new(mem.clone()));
    let gate = Gate::new();
    faults.always(Op::PutObject, Fault::Hold(gate.clone()));
    let journal = tempfile::tempdir().unwrap();
    let m = wb_mount(faults.clone(), journal.path(), |_| {});
    assert_eq!(m.fs.start_write_back().await.unwrap(), 0);
    let other = plain_mount(mem.clone());

    let content = data(100_000, 7);
    write_new(&m.fs, "a", &content).await;
    // The upload is held at the gate: the close returned without it.
    gate.arrived().await;
    assert_eq!(object(&mem, "a"), None);
    assert_eq!(queued(&m), 1);
    let g = m.fs.gauges();
    assert_eq!(
        (g.write_back_queued_files, g.write_back_queued_bytes),
        (1, 100_000)
    );
    // This mount shows it: stat, read, listing.
    assert_eq!(m.attr("a").await.size, 100_000);
    assert_eq!(read_all(&m.fs, "a").await, content);
    assert_eq!(names(&m.fs).await, vec!["a"]);
    // Another host does not, until it is uploaded.
    assert_eq!(other.walk("a").await.unwrap_err(), libc::ENOENT);

    gate.open();
    assert_eq!(m.fs.drain_write_back().await, 0);
    assert_eq!(object(&mem, "a"), Some(content.clone()));
    assert_eq!(queued(&m), 0);
    let g = m.fs.gauges();
    assert_eq!((g.write_back_queued_files, g.write_back_uploaded), (0, 1));
    assert_eq!(read_all(&other.fs, "a").await, content);
    // Once uploaded the queue lets the file go.
    assert_eq!(m.fs.open_file_count(), 0);
}

/// A mount "crashes": its runtime is dropped with uploads failing, so its
/// queue never drains; the journal alone is left.
#[test]
fn after_a_crash_the_next_mount_uploads_every_closed_file_once_in_its_latest_state() {
    let mem = Arc::new(MemoryClient::with_bucket(BUCKET));
    let journal = tempfile::tempdir().unwrap();
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mem = mem.clone();
        let dir = journal.path().to_path_buf();
        rt.block_on(async move {
            mem.put_bucket_versioning(BUCKET, true).await.unwrap();
            let faults = Arc::new(FaultClient::new(mem.clone()));
            faults.always(Op::PutObject, Fault::Fail(injected()));
            let m = wb_mount(faults.clone(), &dir, |_| {});
            m.fs.start_write_back().await.unwrap();
            write_new(&m.fs, "x", b"first").await;
            rewrite(&m.fs, "x", b"second, the latest").await;
            write_new(&m.fs, "y", &data(3 << 20, 1)).await;
            write_new(&m.fs, "empty", b"").await;
            // Unlinked after its close: gone for good.
            write_new(&m.fs, "u", b"unlinked").await;
            m.fs.unlink(m.fs.root_ino(), OsStr::new("u")).await.unwrap();
            // Written, never closed: not a file anyone was promised.
            let (_, fh) =
                m.fs.create_as(m.fs.root_ino(), OsStr::new("open"), &ME)
                    .await
                    .unwrap();
            m.fs.write(fh, 0, b"half written".to_vec()).await.unwrap();
            assert_eq!(object(&mem, "x"), None);
            drop(m);
        });
        drop(rt);
    }
    // The next mount, on a store that works, with the same journal.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let m = wb_mount(mem.clone(), journal.path(), |_| {});
        assert_eq!(m.fs.start_write_back().await.unwrap(), 3);
        assert_eq!(m.fs.gauges().write_back_replayed, 3);
        let objects = mem.objects(BUCKET);
        let keys: Vec<&str> = objects
            .keys()
            .map(String::as_str)
            .filter(|k| !k.contains(".bladefs"))
            .collect();
        assert_eq!(keys, vec!["empty", "x", "y"]);
        assert_eq!(object(&mem, "x").unwrap(), b"second, the latest");
        assert_eq!(object(&mem, "y").unwrap(), data(3 << 20, 1));
        assert_eq!(object(&mem, "empty").unwrap(), b"");
        let versions = mem
            .list_object_versions(
                BUCKET,
                &ListVersionsParams {
                    prefix: "x".to_string(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(versions.versions.len(), 1, "x uploaded once");
        assert_eq!(read_all(&m.fs, "x").await, b"second, the latest");
        // The journal is empty now: the next mount has nothing to upload.
        drop(m);
        let again = wb_mount(mem.clone(), journal.path(), |_| {});
        assert_eq!(again.fs.start_write_back().await.unwrap(), 0);
    });
}

/// rsync, git, editors: a temporary name written, closed, renamed over
/// the real one. Queued, the file moves by its journal entry (no upload
/// first: here the store refuses every PUT), and a replay after a crash
/// stores it under the new name only.
#[test]
fn a_queued_file_renamed_moves_by_its_journal_entry_and_a_replay_honours_it() {
    let mem = Arc::new(MemoryClient::with_bucket(BUCKET));
    mem.put(BUCKET, "target", b"old content".to_vec());
    mem.put(BUCKET, "stale", b"stored before".to_vec());
    let journal = tempfile::tempdir().unwrap();
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (mem, dir) = (mem.clone(), journal.path().to_path_buf());
        rt.block_on(async move {
            let faults = Arc::new(FaultClient::new(mem.clone()));
            faults.always(Op::PutObject, Fault::Fail(injected()));
            let m = wb_mount(faults.clone(), &dir, |_| {});
            m.fs.start_write_back().await.unwrap();
            let root = m.fs.root_ino();
            write_new(&m.fs, "tmp.123", b"content").await;
            m.fs.rename(
                root,
                OsStr::new("tmp.123"),
                root,
                OsStr::new("target"),
                false,
            )
            .await
            .unwrap();
            // An existing object rewritten, then renamed: its old key goes.
            rewrite(&m.fs, "stale", b"rewritten").await;
            m.fs.rename(root, OsStr::new("stale"), root, OsStr::new("moved"), false)
                .await
                .unwrap();
            assert_eq!(read_all(&m.fs, "target").await, b"content");
            assert_eq!(read_all(&m.fs, "moved").await, b"rewritten");
            assert_eq!(names(&m.fs).await, vec!["moved", "target"]);
            assert_eq!(object(&mem, "target").unwrap(), b"old content");
            assert_eq!(object(&mem, "stale"), None);
            drop(m);
        });
        drop(rt);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let m = wb_mount(mem.clone(), journal.path(), |_| {});
        assert_eq!(m.fs.start_write_back().await.unwrap(), 2);
        assert_eq!(object(&mem, "tmp.123"), None);
        assert_eq!(object(&mem, "target").unwrap(), b"content");
        assert_eq!(object(&mem, "moved").unwrap(), b"rewritten");
        assert_eq!(object(&mem, "stale"), None);
    });
}

#[tokio::test]
async fn a_failed_upload_stays_journaled_is_counted_and_fsync_reports_it() {
    let mem = Arc::new(MemoryClient::with_bucket(BUCKET));
    let faults = Arc::new(FaultClient::new(mem.clone()));
    faults.always(Op::PutObject, Fault::Fail(injected()));
    let journal = tempfile::tempdir().unwrap();
    let m = wb_mount(faults.clone(), journal.path(), |_| {});
    m.fs.start_write_back().await.unwrap();
    let ino = write_new(&m.fs, "f", b"kept").await;

    // fsync means "in the bucket": it tries and reports.
    let (fh, _) = m.fs.open(ino, true, false).await.unwrap();
    assert_eq!(m.fs.fsync(fh).await.unwrap_err().errno(), libc::EIO);
    m.fs.release(fh).await;
    // A drain gives up on what keeps failing, and leaves it journaled.
    assert_eq!(m.fs.drain_write_back().await, 1);
    let g = m.fs.gauges();
    assert_eq!(g.write_back_failed_files, 1);
    assert!(g.write_back_failures >= 1);
    assert_eq!(queued(&m), 1);
    assert_eq!(read_all(&m.fs, "f").await, b"kept");

    faults.clear();
    assert_eq!(m.fs.drain_write_back().await, 0);
    assert_eq!(object(&mem, "f").unwrap(), b"kept");
    assert_eq!(queued(&m), 0);
    assert_eq!(m.fs.gauges().write_back_failed_files, 0);
}

#[tokio::test]
async fn closes_wait_for_room_and_a_file_larger_than_the_queue_is_uploaded_at_close() {
    let mem = Arc::new(MemoryClient::with_bucket(BUCKET));
    let faults = Arc::new(FaultClient::new(mem.clone()));
    let gate = Gate::new();
    faults.always(Op::PutObject, Fault::Hold(gate.clone()));
    let journal = tempfile::tempdir().unwrap();
    let m = Arc::new(wb_mount(faults.clone(), journal.path(), |wb| {
        wb.max_bytes = 10_000;
    }));
    m.fs.start_write_back().await.unwrap();
    write_new(&m.fs, "a", &data(8_000, 1)).await;
    gate.arrived().await;
    // No room for b until a is uploaded, and a is held.
    let m2 = m.clone();
    let b = tokio::spawn(async move { write_new(&m2.fs, "b", &data(8_000, 2)).await });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!b.is_finished(), "a close went past a full queue");
    assert_eq!(queued(&m), 1);
    gate.open();
    b.await.unwrap();
    // Larger than the whole queue: uploaded before its close returns.
    write_new(&m.fs, "c", &data(20_000, 3)).await;
    assert_eq!(object(&mem, "c").unwrap(), data(20_000, 3));
    assert_eq!(m.fs.drain_write_back().await, 0);
    assert_eq!(object(&mem, "a").unwrap(), data(8_000, 1));
    assert_eq!(object(&mem, "b").unwrap(), data(8_000, 2));
}

#[tokio::test]
async fn a_journal_is_refused_to_a_second_mount_and_another_endpoint() {
    let mem = Arc::new(MemoryClient::with_bucket(BUCKET));
    let journal = tempfile::tempdir().unwrap();
    let a = wb_mount(mem.clone(), journal.path(), |_| {});
    a.fs.start_write_back().await.unwrap();
    let b = wb_mount(mem.clone(), journal.path(), |_| {});
    let e = b.fs.start_write_back().await.unwrap_err();
    assert!(e.to_string().contains("in use by another bladefs"), "{e}");
    drop(a);
    let c = wb_mount(mem.clone(), journal.path(), |wb| {
        wb.endpoint = "http://elsewhere".to_string()
    });
    let e = c.fs.start_write_back().await.unwrap_err();
    assert!(e.to_string().contains("belongs to endpoint mem"), "{e}");
}

#[tokio::test]
async fn an_edit_of_a_small_object_is_journaled_whole() {
    let mem = Arc::new(MemoryClient::with_bucket(BUCKET));
    mem.put(BUCKET, "log", b"line one\n".to_vec());
    let faults = Arc::new(FaultClient::new(mem.clone()));
    let gate = Gate::new();
    faults.always(Op::PutObject, Fault::Hold(gate.clone()));
    let journal = tempfile::tempdir().unwrap();
    let m = wb_mount(faults.clone(), journal.path(), |_| {});
    m.fs.start_write_back().await.unwrap();
    let ino = m.attr("log").await.ino;
    // An append (>>): the rest of the object is fetched, then journaled.
    let (fh, _) = m.fs.open(ino, true, false).await.unwrap();
    m.fs.write(fh, 9, b"line two\n".to_vec()).await.unwrap();
    m.fs.flush(fh).await.unwrap();
    m.fs.release(fh).await;
    gate.arrived().await;
    assert_eq!(object(&mem, "log").unwrap(), b"line one\n");
    assert_eq!(read_all(&m.fs, "log").await, b"line one\nline two\n");
    gate.open();
    assert_eq!(m.fs.drain_write_back().await, 0);
    assert_eq!(object(&mem, "log").unwrap(), b"line one\nline two\n");
}
