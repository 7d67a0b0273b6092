//! History as files, on real mounts of Ceph RGW (which keeps versions and
//! checks signatures): `.versions/PATH/TIME`, `.snapshots/TIME/`, restores
//! by server-side copy, readers pinned to their version, and the buckets
//! where there is no history.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bladefs::fs::versions::{parse_time, time_name};
use bladefs::s3::ObjectClient;
use common::mount::{Mounted, requests, run};
use common::store::{Store, runtime};
use common::{Kind, Server, data};

fn versioned(server: &Server, bucket: &str) -> Store {
    let store = Store::new(server, bucket);
    runtime()
        .block_on(store.client.put_bucket_versioning(bucket, true))
        .unwrap();
    store
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn errno(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// Waits until the clock has passed `t` by a millisecond, so that the next
/// write gets a later LastModified (names and snapshots are by time).
fn after(t: SystemTime) {
    while SystemTime::now() <= t + Duration::from_millis(2) {
        std::thread::yield_now();
    }
}

#[test]
fn every_version_is_a_read_only_file_named_by_its_time() {
    let server = common::start(Kind::CephRgw);
    let store = versioned(&server, "history");
    let m = Mounted::new(&server, "history", &[]);
    let mut written = Vec::new();
    for i in 0..3 {
        let body = data(1000 + i * 100, i as u64);
        std::fs::write(m.join("doc.txt"), &body).unwrap();
        written.push(body);
    }
    // Another client writes a fourth version.
    let theirs = data(5000, 99);
    store.put("doc.txt", theirs.clone());
    written.push(theirs);
    std::fs::write(m.join("other.txt"), b"other").unwrap();

    let vdir = m.join(".versions/doc.txt");
    let versions = names(&vdir);
    assert_eq!(versions.len(), 4, "{versions:?}");
    for (name, body) in versions.iter().zip(&written) {
        let path = vdir.join(name);
        assert_eq!(&std::fs::read(&path).unwrap(), body, "{name}");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), body.len() as u64);
        assert_eq!(meta.permissions().mode() & 0o222, 0, "read-only bits");
        // The name is the version's time, in UTC with milliseconds.
        let base = name.split('~').next().unwrap();
        let t = parse_time(base).unwrap_or_else(|| panic!("{name} is a time"));
        assert_eq!(time_name(t), base);
        assert_eq!(meta.modified().unwrap(), t);
    }
    assert_eq!(names(&m.join(".versions")), ["doc.txt", "other.txt"]);

    // Hidden from the root, reachable by name.
    let root = names(&m.path);
    assert_eq!(root, ["doc.txt", "other.txt"]);
    let found = run("find", &[m.path.to_str().unwrap()]);
    assert!(
        !found.contains(".versions") && !found.contains(".snapshots"),
        "{found}"
    );
    let du = run("du", &["-a", m.path.to_str().unwrap()]);
    assert!(!du.contains(".versions"), "{du}");
    assert!(m.join(".snapshots").is_dir());

    // Every change under them is refused with EROFS.
    let one = vdir.join(&versions[0]);
    let erofs = libc::EROFS;
    assert_eq!(errno(std::fs::write(vdir.join("new"), b"x")), erofs);
    assert_eq!(
        errno(std::fs::OpenOptions::new().write(true).open(&one)),
        erofs
    );
    assert_eq!(errno(std::fs::remove_file(&one)), erofs);
    assert_eq!(errno(std::fs::create_dir(vdir.join("d"))), erofs);
    assert_eq!(errno(std::fs::rename(&one, vdir.join("renamed"))), erofs);
    assert_eq!(
        errno(std::fs::rename(m.join("other.txt"), vdir.join("x"))),
        erofs
    );
    assert_eq!(
        errno(std::fs::set_permissions(
            &one,
            std::fs::Permissions::from_mode(0o777)
        )),
        erofs
    );
    assert_eq!(
        errno(std::fs::remove_dir(m.join(".versions/doc.txt"))),
        erofs
    );
    let snap = m.join(&format!(".snapshots/{}", time_name(SystemTime::now())));
    assert_eq!(errno(std::fs::write(snap.join("new"), b"x")), erofs);
    assert_eq!(errno(std::fs::remove_file(snap.join("doc.txt"))), erofs);
    assert_eq!(std::fs::read(snap.join("doc.txt")).unwrap(), written[3]);
    drop(m.unmount());
    assert_eq!(
        store.keys().len(),
        2,
        "nothing written by the refused changes"
    );
}

#[test]
fn a_deleted_file_and_a_deleted_tree_are_browsed_and_restored_by_server_side_copy() {
    let server = common::start(Kind::CephRgw);
    let store = versioned(&server, "restore");
    let m = Mounted::new(&server, "restore", &[]);
    std::fs::create_dir_all(m.join("tree/sub")).unwrap();
    let files = [
        ("tree/a.txt", data(3000, 1)),
        ("tree/sub/b.bin", data(7 << 20, 2)),
        ("tree/sub/c.txt", data(10, 3)),
    ];
    for (path, body) in &files {
        std::fs::write(m.join(path), body).unwrap();
    }
    std::fs::write(m.join("note.txt"), b"first").unwrap();
    let before_delete = SystemTime::now();
    after(before_delete);
    std::fs::remove_dir_all(m.join("tree")).unwrap();
    std::fs::remove_file(m.join("note.txt")).unwrap();
    assert!(!m.join("tree").exists());

    // Deleted names stay in .versions, with their delete markers.
    assert_eq!(names(&m.join(".versions")), ["note.txt", "tree"]);
    assert_eq!(names(&m.join(".versions/tree")), ["a.txt", "sub"]);
    assert_eq!(names(&m.join(".versions/tree/sub")), ["b.bin", "c.txt"]);
    let note = names(&m.join(".versions/note.txt"));
    assert_eq!(note.len(), 2, "{note:?}");
    assert!(note[1].ends_with(".deleted"), "{note:?}");
    assert_eq!(
        std::fs::metadata(m.join(".versions/note.txt").join(&note[1]))
            .unwrap()
            .len(),
        0
    );
    drop(m.unmount());

    // Restores in a mount of their own, to count its requests.
    let m = Mounted::new(&server, "restore", &[]);
    let v = m.join(".versions/note.txt").join(&note[0]);
    run(
        "cp",
        &[v.to_str().unwrap(), m.join("note.txt").to_str().unwrap()],
    );
    let snap = m.join(&format!(".snapshots/{}/tree", time_name(before_delete)));
    run(
        "cp",
        &[
            "-r",
            snap.to_str().unwrap(),
            m.join("tree").to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::metadata(m.join("note.txt")).unwrap().len(), 5);
    let log = m.unmount();
    // (Directories' metadata objects are read on lookups: not data.)
    let data_gets = log
        .lines()
        .filter(|l| l.contains("op=\"GetObject\"") && l.contains("s3 request"))
        .filter(|l| !l.contains(".bladefs-meta"))
        .count();
    assert_eq!(data_gets, 0, "no byte through the client: {log}");
    assert_eq!(requests(&log, "CopyObject"), 4);
    // Only the markers of the two directories cp made (and the metadata
    // recording the read-only modes cp gave the copies, as it would on
    // any file system).
    let data_puts = log
        .lines()
        .filter(|l| l.contains("op=\"PutObject\"") && l.contains("s3 request"))
        .filter(|l| !l.contains(".bladefs-meta"))
        .count();
    assert_eq!(data_puts, 2);
    assert_eq!(requests(&log, "UploadPart"), 0);
    for (path, body) in &files {
        assert_eq!(&store.get(path), body, "{path}");
    }
    assert_eq!(store.get("note.txt"), b"first");
    store.assert_no_uploads_left();
}

#[test]
fn snapshots_show_the_tree_before_between_and_after_versions() {
    let server = common::start(Kind::CephRgw);
    let store = versioned(&server, "snapshots");
    let m = Mounted::new(&server, "snapshots", &["--sigv2"]);
    let start = SystemTime::now();
    after(start);
    std::fs::write(m.join("f.txt"), b"one").unwrap();
    let v = names(&m.join(".versions/f.txt"));
    let t1 = parse_time(&v[0]).unwrap();
    after(t1);
    std::fs::create_dir(m.join("later")).unwrap();
    std::fs::write(m.join("later/g.txt"), b"g").unwrap();
    std::fs::write(m.join("f.txt"), b"two!").unwrap();
    let v = names(&m.join(".versions/f.txt"));
    assert_eq!(v.len(), 2, "{v:?}");
    let t2 = parse_time(&v[1]).unwrap();
    after(t2);
    std::fs::remove_file(m.join("f.txt")).unwrap();
    let v = names(&m.join(".versions/f.txt"));
    let t3 = parse_time(v[2].trim_end_matches(".deleted")).unwrap();

    let at = |t: SystemTime| m.join(&format!(".snapshots/{}", time_name(t)));
    assert_eq!(names(&at(start)), Vec::<String>::new(), "before anything");
    assert_eq!(
        names(&at(t1)),
        ["f.txt"],
        "a directory made later is not there"
    );
    assert_eq!(std::fs::read(at(t1).join("f.txt")).unwrap(), b"one");
    assert_eq!(errno(std::fs::metadata(at(t1).join("later"))), libc::ENOENT);
    assert_eq!(names(&at(t2)), ["f.txt", "later"]);
    assert_eq!(std::fs::read(at(t2).join("f.txt")).unwrap(), b"two!");
    assert_eq!(std::fs::read(at(t2).join("later/g.txt")).unwrap(), b"g");
    assert_eq!(names(&at(t3)), ["later"], "deleted then");
    assert_eq!(errno(std::fs::metadata(at(t3).join("f.txt"))), libc::ENOENT);
    // Any RFC 3339 spelling of a time, offsets included.
    let t1_plus_one = time::OffsetDateTime::from(t1)
        .to_offset(time::UtcOffset::from_hms(1, 0, 0).unwrap())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(
        std::fs::read(m.join(&format!(".snapshots/{t1_plus_one}/f.txt"))).unwrap(),
        b"one"
    );
    assert_eq!(
        errno(std::fs::metadata(m.join(".snapshots/yesterday"))),
        libc::ENOENT
    );
    assert_eq!(names(&m.join(".snapshots")), Vec::<String>::new());
    drop(m.unmount());
    assert!(!store.keys().contains_key("f.txt"));
}

#[test]
fn a_reader_keeps_its_version_while_the_file_is_overwritten_and_deleted() {
    let server = common::start(Kind::CephRgw);
    let store = versioned(&server, "pinned");
    let old = data(3 << 20, 1);
    store.put("f.bin", old.clone());
    store.put("g.bin", old.clone());
    let m = Mounted::new(&server, "pinned", &[]);

    // Overwritten and then deleted by another client between reads.
    let mut f = std::fs::File::open(m.join("f.bin")).unwrap();
    let mut head = vec![0u8; 4096];
    f.read_exact(&mut head).unwrap();
    store.put("f.bin", data(3 << 20, 2));
    f.seek(SeekFrom::Start(2 << 20)).unwrap();
    let mut mid = vec![0u8; 4096];
    f.read_exact(&mut mid).unwrap();
    runtime()
        .block_on(store.client.delete_object("pinned", "f.bin", None))
        .unwrap();
    let mut rest = Vec::new();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.read_to_end(&mut rest).unwrap();
    assert_eq!(head, old[..4096]);
    assert_eq!(mid, old[2 << 20..(2 << 20) + 4096]);
    assert!(rest == old[1 << 20..], "the rest of the old version");

    // Overwritten before the first read: the version with the ETag seen
    // at open is found and read.
    let mut g = std::fs::File::open(m.join("g.bin")).unwrap();
    store.put("g.bin", data(100, 3));
    let mut all = Vec::new();
    g.read_to_end(&mut all).unwrap();
    assert!(all == old, "the version that was current at open");
    drop((f, g));
    drop(m.unmount());
}

#[test]
fn no_history_without_versioning_or_when_turned_off_and_suspended_keeps_it() {
    let server = common::start(Kind::CephRgw);
    let plain = Store::new(&server, "plain");
    plain.put("a", b"a".to_vec());
    let m = Mounted::new(&server, "plain", &[]);
    assert_eq!(errno(std::fs::read_dir(m.join(".versions"))), libc::ENOENT);
    assert_eq!(
        errno(std::fs::read_dir(m.join(".snapshots/2026-01-01T00:00:00Z"))),
        libc::ENOENT
    );
    drop(m.unmount());

    let store = versioned(&server, "suspended");
    store.put("a", b"one".to_vec());
    store.put("a", b"two".to_vec());
    runtime()
        .block_on(store.client.put_bucket_versioning("suspended", false))
        .unwrap();
    store.put("a", b"three".to_vec());
    let m = Mounted::new(&server, "suspended", &["--versions-dir", ".history"]);
    assert_eq!(errno(std::fs::read_dir(m.join(".versions"))), libc::ENOENT);
    let v = names(&m.join(".history/a"));
    assert_eq!(v.len(), 3, "{v:?}");
    let bodies: Vec<Vec<u8>> = v
        .iter()
        .map(|n| std::fs::read(m.join(".history/a").join(n)).unwrap())
        .collect();
    assert_eq!(
        bodies,
        [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
    drop(m.unmount());

    let m = Mounted::new(&server, "suspended", &["--no-versions"]);
    assert_eq!(errno(std::fs::read_dir(m.join(".versions"))), libc::ENOENT);
    assert_eq!(errno(std::fs::read_dir(m.join(".snapshots"))), libc::ENOENT);
    drop(m.unmount());

    // Each bucket of an all-buckets mount has its own.
    let m = Mounted::new(&server, "all", &["--all-buckets"]);
    assert_eq!(names(&m.join("suspended/.snapshots")), Vec::<String>::new());
    assert_eq!(names(&m.join("suspended/.versions")), ["a"]);
    assert_eq!(
        errno(std::fs::read_dir(m.join("plain/.versions"))),
        libc::ENOENT
    );
    drop(m.unmount());
}
