//! A real mount behind the fault-injecting proxy, in front of Garage: with
//! a tenth of all requests faulted nothing is lost; faults that outlast the
//! retry deadline are EIO, and the mount works again once they stop; a
//! server that falls silent costs the configured timeout, not a hang, and
//! does not keep `fusermount -u` from ending the daemon.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::mount::{Mounted, run};
use common::proxy::{self, Fault, FaultProxy};
use common::store::{Store, sha};
use common::{Kind, Server, data};

const MIB: usize = 1024 * 1024;

fn start_proxy(rt: &tokio::runtime::Runtime, server: &Server) -> FaultProxy {
    rt.block_on(proxy::start_rules(server.addr, vec![]))
}

/// 500 small files of 0 to 40 000 bytes in 20 directories.
fn small_tree(root: &Path) {
    for i in 0..500u64 {
        let p = root.join(format!("d{:02}/f{i:03}.bin", i % 20));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data((i as usize * 7919) % 40_000, i)).unwrap();
    }
}

fn sha_of_file(path: &Path) -> String {
    sha(&std::fs::read(path).unwrap())
}

/// The error of `f`, which must fail, and how long it took.
fn failure<T: std::fmt::Debug>(f: impl FnOnce() -> std::io::Result<T>) -> (i32, Duration) {
    let start = Instant::now();
    let err = f().expect_err("the operation must fail");
    (err.raw_os_error().unwrap_or(0), start.elapsed())
}

#[test]
fn a_tenth_of_requests_faulted_loses_nothing() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "faulty");
    let rt = common::background_runtime();
    let proxy = start_proxy(&rt, &server);
    let seed = std::env::var("BLADEFS_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261124);
    eprintln!("fault seed {seed} (BLADEFS_FAULT_SEED reproduces the draw)");

    let local = tempfile::tempdir().unwrap();
    let big = local.path().join("big.bin");
    std::fs::write(&big, data(256 * MIB, 9)).unwrap();
    let tree = local.path().join("tree");
    small_tree(&tree);
    let want_big = sha_of_file(&big);

    // In, through one mount; faults from the first request on.
    proxy.set_rate(10, seed);
    let m = Mounted::at(&server, &proxy.endpoint, "faulty", &[]);
    let mnt = m.path.to_str().unwrap().to_string();
    run("cp", &[big.to_str().unwrap(), &format!("{mnt}/big.bin")]);
    run(
        "cp",
        &["-r", tree.to_str().unwrap(), &format!("{mnt}/tree")],
    );
    m.unmount();
    let after_in = proxy.injected();

    // Out, through a fresh mount, so nothing comes from the page cache.
    let m = Mounted::at(&server, &proxy.endpoint, "faulty", &[]);
    let mnt = m.path.to_str().unwrap().to_string();
    let out = tempfile::tempdir().unwrap();
    let big_out = out.path().join("big.bin");
    run(
        "cp",
        &[&format!("{mnt}/big.bin"), big_out.to_str().unwrap()],
    );
    run(
        "cp",
        &["-r", &format!("{mnt}/tree"), out.path().to_str().unwrap()],
    );
    m.unmount();
    proxy.set_rate(0, seed);

    assert_eq!(sha_of_file(&big_out), want_big);
    run(
        "diff",
        &[
            "-r",
            tree.to_str().unwrap(),
            out.path().join("tree").to_str().unwrap(),
        ],
    );
    // And in the bucket itself, read past the proxy.
    assert_eq!(sha(&store.get("big.bin")), want_big);
    let keys = store.keys();
    let files = keys
        .keys()
        .filter(|k| k.starts_with("tree/") && !k.ends_with('/') && !k.contains("/.bladefs-meta"));
    assert_eq!(files.count(), 500);
    assert_eq!(
        store.get("tree/d07/f487.bin"),
        std::fs::read(tree.join("d07/f487.bin")).unwrap()
    );
    store.assert_no_uploads_left();

    let injected = proxy.injected();
    eprintln!(
        "faults injected: {injected} of {} requests ({after_in} while copying in): {:?}",
        proxy.seen(),
        proxy.injected_by_kind()
    );
    // A tenth of a few thousand requests: far more than a handful.
    assert!(after_in >= 20 && injected - after_in >= 20, "{injected}");
}

#[test]
fn faults_past_the_retry_deadline_are_eio_and_the_mount_recovers() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "outage");
    store.put("old.bin", data(MIB, 1));
    let rt = common::background_runtime();
    let proxy = start_proxy(&rt, &server);
    let m = Mounted::at(
        &server,
        &proxy.endpoint,
        "outage",
        &["--retries", "1000", "--retry-deadline", "3"],
    );

    // A file being written when the server starts failing every request.
    let mut f = std::fs::File::create(m.join("new.txt")).unwrap();
    f.write_all(b"written during the outage").unwrap();
    proxy.set_outage(Some(Fault::InternalError));

    let (errno, took) = failure(|| f.sync_all());
    assert_eq!(errno, libc::EIO);
    eprintln!("fsync failed after {took:?}");
    let (errno, took) = failure(|| std::fs::read(m.join("old.bin")));
    assert_eq!(errno, libc::EIO);
    eprintln!("read failed after {took:?}");
    // Bounded: the deadline, one last backoff, no hang.
    assert!(took < Duration::from_secs(30), "{took:?}");
    let (errno, _) =
        failure(|| std::fs::read_dir(m.join("")).and_then(|d| d.collect::<Result<Vec<_>, _>>()));
    assert_eq!(errno, libc::EIO);
    assert!(proxy.injected() > 10, "retried until the deadline");

    // The server is back: the same calls work, nothing was remembered as
    // missing, and the failed write never landed.
    proxy.set_outage(None);
    assert_eq!(std::fs::read(m.join("old.bin")).unwrap(), data(MIB, 1));
    f.write_all(b" and after it").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(
        store.get("new.txt"),
        b"written during the outage and after it"
    );
    std::fs::write(m.join("later.txt"), b"later").unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["later.txt", "new.txt", "old.bin"]);
    m.unmount();
    store.assert_no_uploads_left();
}

#[test]
fn a_silent_server_costs_the_timeout_and_unmount_still_ends_the_daemon() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "silent");
    store.put("there.bin", data(300_000, 2));
    let rt = common::background_runtime();
    let proxy = start_proxy(&rt, &server);
    let m = Mounted::at(
        &server,
        &proxy.endpoint,
        "silent",
        &["--timeout", "2", "--retries", "2", "--retry-deadline", "3"],
    );
    std::fs::write(m.join("before.txt"), b"closed before").unwrap();
    let mut f = std::fs::File::create(m.join("during.txt")).unwrap();
    f.write_all(b"never acknowledged").unwrap();
    // A large file streaming when the server falls silent: parts in flight,
    // the last part and the complete still to come.
    let mut big = std::fs::File::create(m.join("big.bin")).unwrap();
    big.write_all(&data(20 * MIB, 5)).unwrap();

    proxy.set_outage(Some(Fault::Silent));
    big.write_all(&data(20 * MIB, 6)).unwrap();
    let (errno, took) = failure(|| big.sync_all());
    assert_eq!(errno, libc::EIO);
    eprintln!("fsync of a streaming file on a silent server failed after {took:?}");
    // The stated bound: the retry deadline plus one timeout for the
    // requests (they run side by side), plus at most 5 s waiting for the
    // abort; a little slack for a loaded machine.
    assert!(took < Duration::from_secs(3 + 2 + 5 + 5), "{took:?}");
    drop(big);
    let (errno, took) = failure(|| std::fs::read(m.join("there.bin")));
    assert_eq!(errno, libc::EIO);
    eprintln!("read from a silent server failed after {took:?}");
    // Two attempts of 2 s each and a backoff: seconds, not a hang.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(30),
        "{took:?}"
    );
    // EIO, unless a flush from a child process of a test running beside
    // this one saved it before the outage (such a child holds this
    // process's descriptors for an instant, and their close at its exec
    // is a FUSE flush): then there is nothing left to save, and the store
    // must hold it whole (checked below).
    let saved_early = match f.sync_all() {
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
            false
        }
        Ok(()) => true,
    };
    drop(f);

    // Still silent: unmounting must not wait on the server.
    let log = m.unmount();
    assert!(log.contains("unmounted"), "{log}");
    proxy.set_outage(None);
    assert_eq!(store.get("before.txt"), b"closed before");
    // Nothing partial: no object, or (if a flush from a child process of a
    // test running beside this one saved it before the outage: such a child
    // holds this process's descriptors for an instant, and their close at
    // exec is a FUSE flush) exactly what was written then.
    assert!(
        !store.keys().contains_key("during.txt")
            || store.get("during.txt") == b"never acknowledged",
        "nothing partial"
    );
    if saved_early {
        assert_eq!(store.get("during.txt"), b"never acknowledged");
    }
    assert!(
        !store.keys().contains_key("big.bin") || store.get("big.bin") == data(20 * MIB, 5),
        "nothing partial"
    );
}
