//! Reading through real kernel mounts with ordinary tools, against real
//! servers: Garage where the server must check what is tested (If-Match,
//! URL-encoded listings, `x` beside `x/`), s3s-fs where it need not.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bladefs::s3::{CompletedPart, ObjectClient, S3Client};
use bytes::Bytes;
use common::mount::{
    Mounted, bladefs_command, bladefs_command_at, credentials_file, daemon_pid, is_mounted,
    requests, run,
};
use common::{Kind, Server, data, proxy};
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

/// Creates `bucket` and puts every object, 16 at a time; large ones go up
/// in 8 MiB parts.
fn seed(server: &Server, bucket: &str, objects: Vec<(String, Vec<u8>)>) -> Arc<S3Client> {
    let client = server.client();
    let rt = common::background_runtime();
    rt.block_on(async {
        client.create_bucket(bucket).await.expect("create bucket");
        futures::stream::iter(objects)
            .map(|(key, body)| {
                let client = client.clone();
                async move { put(&client, bucket, &key, body).await }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await
            .expect("seed");
    });
    client
}

async fn put(
    client: &S3Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(), bladefs::s3::S3Error> {
    const PART: usize = 8 * MIB;
    if body.len() <= PART {
        client.put_object(bucket, key, Bytes::from(body)).await?;
        return Ok(());
    }
    let upload = client.create_multipart_upload(bucket, key).await?;
    let body = Bytes::from(body);
    let parts = futures::stream::iter(0..body.len().div_ceil(PART))
        .map(|i| {
            let chunk = body.slice(i * PART..((i + 1) * PART).min(body.len()));
            let upload = upload.clone();
            async move {
                let etag = client
                    .upload_part(bucket, key, &upload, i as u32 + 1, chunk)
                    .await?;
                Ok::<_, bladefs::s3::S3Error>(CompletedPart {
                    part_number: i as u32 + 1,
                    etag,
                })
            }
        })
        .buffered(4)
        .try_collect::<Vec<_>>()
        .await?;
    client
        .complete_multipart_upload(bucket, key, &upload, &parts)
        .await?;
    Ok(())
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn sha256_of_file(path: &Path) -> String {
    let out = run("sha256sum", &[path.to_str().unwrap()]);
    out.split_whitespace().next().unwrap().to_string()
}

/// A tree with files of many sizes at many depths, some names odd.
fn sample_tree() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let sizes = [0usize, 1, 1000, 4096, 65_537, MIB + 3, 3 * MIB];
    for (i, size) in sizes.iter().enumerate() {
        files.push((format!("top{i}.bin"), data(*size, i as u64)));
        files.push((format!("a/b/c/deep{i}.dat"), data(*size, 100 + i as u64)));
    }
    files.push(("docs/read me.txt".into(), b"spaces\n".to_vec()));
    files.push(("docs/é日本 + 100% #1?.txt".into(), b"odd\n".to_vec()));
    files.push(("a/sibling.txt".into(), b"sibling\n".to_vec()));
    files
}

#[test]
fn a_seeded_tree_reads_back_identical() {
    let server = common::start(Kind::Garage);
    let tree = sample_tree();
    seed(&server, "tree", tree.clone());
    let local = tempfile::tempdir().unwrap();
    for (key, body) in &tree {
        let path = local.path().join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let m = Mounted::new(&server, "tree", &[]);
    run(
        "diff",
        &[
            "-r",
            local.path().to_str().unwrap(),
            m.path.to_str().unwrap(),
        ],
    );
    // Sizes and types come through stat as well as content.
    let meta = std::fs::metadata(m.join("a/b/c/deep6.dat")).unwrap();
    assert_eq!(meta.len(), 3 * MIB as u64);
    assert!(std::fs::metadata(m.join("a/b")).unwrap().is_dir());
    assert_eq!(
        std::fs::read(m.join("nope.txt")).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    m.unmount();
}

#[test]
fn a_200_mib_object_reads_right_sequentially_and_at_random() {
    let server = common::start(Kind::Garage);
    let body = data(200 * MIB, 42);
    let want = sha256_hex(&body);
    seed(&server, "big", vec![("big.bin".into(), body.clone())]);
    let m = Mounted::new(&server, "big", &[]);
    let file = m.join("big.bin");
    assert_eq!(sha256_of_file(&file), want);

    // dd at offsets spread over the object, in blocks of several sizes.
    let mut state = 7u64;
    for bs in [4096usize, 65_536, MIB] {
        for _ in 0..6 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let blocks = body.len() / bs;
            let skip = (state >> 33) as usize % blocks;
            let out = Command::new("dd")
                .arg(format!("if={}", file.display()))
                .arg(format!("bs={bs}"))
                .arg(format!("skip={skip}"))
                .arg("count=2")
                .arg("status=none")
                .output()
                .unwrap();
            assert!(out.status.success());
            let end = ((skip + 2) * bs).min(body.len());
            assert!(
                out.stdout == body[skip * bs..end],
                "dd bs={bs} skip={skip} differs"
            );
        }
    }
    // pread at unaligned offsets, the last one running past the end.
    let f = std::fs::File::open(&file).unwrap();
    for (offset, len) in [
        (1usize, 10usize),
        (123_456_789, 70_000),
        (200 * MIB - 5, 100),
    ] {
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, offset as u64).unwrap();
        let want = &body[offset..(offset + len).min(body.len())];
        assert_eq!(&buf[..n], want, "pread at {offset}");
    }
    drop(f);
    let log = m.unmount();
    // Sequential reading fetched in large parts, not per kernel read.
    assert!(requests(&log, "GetObject") < 200, "{log}");
}

#[test]
fn a_directory_of_2500_entries_is_listed_once_with_few_requests() {
    // Garage: it answers the lookup's HEAD of a directory name with a plain
    // 404 (s3s-fs answers 500, and the retries would muddle the count).
    let server = common::start(Kind::Garage);
    let names: BTreeSet<String> = (0..2500).map(|i| format!("entry-{i:05}.txt")).collect();
    let mut objects: Vec<(String, Vec<u8>)> = names
        .iter()
        .map(|n| (format!("many/{n}"), n.as_bytes().to_vec()))
        .collect();
    objects.push(("other.txt".into(), b"x".to_vec()));
    seed(&server, "listing", objects);

    let m = Mounted::new(&server, "listing", &[]);
    let dir = m.join("many");
    let ls = run("ls", &["-f", dir.to_str().unwrap()]);
    let listed: Vec<&str> = ls.lines().filter(|l| *l != "." && *l != "..").collect();
    assert_eq!(listed.len(), 2500, "each entry exactly once");
    assert_eq!(
        listed
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        names
    );
    let find = run("find", &[dir.to_str().unwrap(), "-type", "f"]);
    let found: Vec<&str> = find.lines().collect();
    assert_eq!(found.len(), 2500);
    assert_eq!(found.iter().collect::<BTreeSet<_>>().len(), 2500);
    m.unmount();

    // ls -l on a fresh mount: the listing carries every attribute.
    let m = Mounted::new(&server, "listing", &["--metadata-ttl", "60"]);
    let long = run("ls", &["-l", m.join("many").to_str().unwrap()]);
    assert_eq!(long.lines().filter(|l| l.starts_with('-')).count(), 2500);
    assert!(long.contains(" 15 "), "sizes shown: {}", &long[..200]);
    let log = m.unmount();
    let lists = requests(&log, "ListObjectsV2");
    let heads = requests(&log, "HeadObject");
    println!("ls -l of 2500 entries: {lists} ListObjectsV2, {heads} HeadObject");
    // 3 pages of 1000, plus the lookup of `many` itself (a LIST and a HEAD)
    // and beside it the list of the root's metadata segments.
    assert!(lists <= 5, "{lists} listings");
    assert!(heads <= 1, "{heads} HEADs: one per entry would be 2500");
}

on_servers_blocking!(odd_names_implicit_and_marker_directories: garage => Kind::Garage, rgw => Kind::CephRgw);
fn odd_names_implicit_and_marker_directories(kind: Kind) {
    let server = common::start(kind);
    let long_name = "n".repeat(300);
    let objects: Vec<(String, Vec<u8>)> = vec![
        ("sp ace/file one.txt".into(), b"1".to_vec()),
        ("uni/é日本.txt".into(), b"2".to_vec()),
        ("plus+and%41percent#hash?q=1&r.txt".into(), b"3".to_vec()),
        ("implicit/deep/er/leaf".into(), b"4".to_vec()),
        ("marker/".into(), Vec::new()),
        ("both".into(), b"file".to_vec()),
        ("both/inner".into(), b"5".to_vec()),
        (format!("long/{long_name}"), b"6".to_vec()),
        ("long/fine".into(), b"7".to_vec()),
        ("empty//seg".into(), b"8".to_vec()),
    ];
    seed(&server, "odd", objects);
    let m = Mounted::new(&server, "odd", &[]);
    let root: BTreeSet<String> = std::fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = [
        "sp ace",
        "uni",
        "plus+and%41percent#hash?q=1&r.txt",
        "implicit",
        "marker",
        "both",
        "long",
        "empty",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(root, want);
    for (path, content) in [
        ("sp ace/file one.txt", "1"),
        ("uni/é日本.txt", "2"),
        ("plus+and%41percent#hash?q=1&r.txt", "3"),
        ("implicit/deep/er/leaf", "4"),
        ("both/inner", "5"),
        ("long/fine", "7"),
    ] {
        assert_eq!(
            std::fs::read_to_string(m.join(path)).unwrap(),
            content,
            "{path}"
        );
    }
    // The directory wins over the file of the same name.
    assert!(std::fs::metadata(m.join("both")).unwrap().is_dir());
    // A marker object makes an empty directory.
    assert!(std::fs::metadata(m.join("marker")).unwrap().is_dir());
    assert_eq!(std::fs::read_dir(m.join("marker")).unwrap().count(), 0);
    // A name longer than NAME_MAX (255) is a name (FUSE allows 1024).
    let mut long: Vec<String> = std::fs::read_dir(m.join("long"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    long.sort();
    assert_eq!(long, ["fine".to_string(), long_name.clone()]);
    assert_eq!(
        std::fs::read_to_string(m.join(&format!("long/{long_name}"))).unwrap(),
        "6"
    );
    // Keys that cannot be names are left out, not fatal.
    assert_eq!(std::fs::read_dir(m.join("empty")).unwrap().count(), 0);
    let log = m.unmount();
    assert!(log.contains("left out of the listing"), "{log}");
}

#[test]
fn prefix_mount_shows_only_the_prefix() {
    let server = common::start(Kind::S3sFs);
    seed(
        &server,
        "pfx",
        vec![
            ("team/a/report.txt".into(), b"inside".to_vec()),
            ("team/top.txt".into(), b"top".to_vec()),
            ("teammate.txt".into(), b"not under team/".to_vec()),
            ("outside.txt".into(), b"no".to_vec()),
        ],
    );
    let m = Mounted::new(&server, "pfx:team/", &[]);
    let mut names: Vec<String> = std::fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "top.txt"]);
    assert_eq!(
        std::fs::read_to_string(m.join("a/report.txt")).unwrap(),
        "inside"
    );
    assert!(std::fs::metadata(m.join("outside.txt")).is_err());
    m.unmount();
}

#[test]
fn all_buckets_mount_lists_every_bucket() {
    let server = common::start(Kind::S3sFs);
    seed(&server, "first", vec![("f.txt".into(), b"one".to_vec())]);
    seed(&server, "second", vec![("d/s.txt".into(), b"two".to_vec())]);
    let m = Mounted::new(&server, "store", &["--all-buckets"]);
    let mut names: Vec<String> = std::fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(
        std::fs::read_to_string(m.join("first/f.txt")).unwrap(),
        "one"
    );
    assert_eq!(
        std::fs::read_to_string(m.join("second/d/s.txt")).unwrap(),
        "two"
    );
    assert!(std::fs::metadata(m.join("third")).is_err());
    m.unmount();
}

#[test]
fn read_only_refuses_every_change() {
    let server = common::start(Kind::S3sFs);
    seed(
        &server,
        "readonly",
        vec![("keep.txt".into(), b"keep".to_vec())],
    );
    let m = Mounted::new(&server, "readonly", &["--read-only"]);
    let erofs = Some(libc::EROFS);
    assert_eq!(
        std::fs::write(m.join("new.txt"), b"x")
            .unwrap_err()
            .raw_os_error(),
        erofs
    );
    assert_eq!(
        std::fs::create_dir(m.join("dir"))
            .unwrap_err()
            .raw_os_error(),
        erofs
    );
    assert_eq!(
        std::fs::remove_file(m.join("keep.txt"))
            .unwrap_err()
            .raw_os_error(),
        erofs
    );
    assert_eq!(
        std::fs::OpenOptions::new()
            .append(true)
            .open(m.join("keep.txt"))
            .unwrap_err()
            .raw_os_error(),
        erofs
    );
    assert_eq!(std::fs::read_to_string(m.join("keep.txt")).unwrap(), "keep");
    m.unmount();
}

on_servers_blocking!(a_file_replaced_while_open_fails_instead_of_mixing: garage => Kind::Garage, rgw => Kind::CephRgw);
fn a_file_replaced_while_open_fails_instead_of_mixing(kind: Kind) {
    let server = common::start(kind);
    let old = data(64 * MIB, 1);
    let client = seed(&server, "replace", vec![("f.bin".into(), old.clone())]);
    // TTL 0: every open asks the store, so the re-open below sees the new
    // object without waiting for a cache to expire.
    let m = Mounted::new(&server, "replace", &["--metadata-ttl", "0"]);
    let f = std::fs::File::open(m.join("f.bin")).unwrap();
    let mut head = vec![0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, old[..4096]);

    // Another client replaces the object with new content of the same size.
    let new = data(64 * MIB, 2);
    common::background_runtime()
        .block_on(put(&client, "replace", "f.bin", new.clone()))
        .unwrap();

    // Far from what was read ahead: a fresh ranged GET, refused by If-Match.
    let mut tail = vec![0u8; 4096];
    let err = f.read_exact_at(&mut tail, 48 * MIB as u64).unwrap_err();
    assert!(
        matches!(err.raw_os_error(), Some(libc::ESTALE) | Some(libc::EIO)),
        "{err:?}"
    );
    drop(f);
    // Opened again, the file is the new one.
    let f = std::fs::File::open(m.join("f.bin")).unwrap();
    f.read_exact_at(&mut tail, 48 * MIB as u64).unwrap();
    assert_eq!(tail, new[48 * MIB..48 * MIB + 4096]);
    drop(f);
    m.unmount();
}

/// Runs the detached mount command and expects it to fail with one line.
fn expect_mount_failure(
    server: &Server,
    source: &str,
    secret: &str,
    endpoint: Option<&str>,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let creds = credentials_file(dir.path(), server, secret);
    let mut cmd = bladefs_command_at(
        endpoint.unwrap_or(&server.endpoint),
        server.kind,
        &creds,
        source,
        &mnt,
    );
    let start = Instant::now();
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    assert!(!is_mounted(&mnt));
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(
        !err.contains(&server.secret_key) && !err.contains(secret),
        "{err}"
    );
    err
}

#[test]
fn clear_failures_for_bad_secret_missing_bucket_closed_port_busy_mountpoint() {
    let server = common::start(Kind::S3sFs);
    seed(&server, "exists", vec![("k".into(), b"v".to_vec())]);
    let err = expect_mount_failure(&server, "exists", "wrong-secret-wrong-secret", None);
    assert!(
        err.contains("refused") && err.contains("SignatureDoesNotMatch"),
        "{err}"
    );
    let err = expect_mount_failure(&server, "missing", &server.secret_key, None);
    assert!(err.contains("does not exist"), "{err}");
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let err = expect_mount_failure(&server, "exists", &server.secret_key, Some(&closed));
    assert!(err.contains("cannot reach"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("occupied"), b"x").unwrap();
    let creds = credentials_file(dir.path(), &server, &server.secret_key);
    let out = bladefs_command(&server, &creds, "exists", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an empty directory"));
}

#[test]
fn detached_by_default_and_stopped_by_unmount_or_signal() {
    let server = common::start(Kind::S3sFs);
    seed(
        &server,
        "daemon",
        vec![("hello.txt".into(), b"hello".to_vec())],
    );
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let creds = credentials_file(dir.path(), &server, &server.secret_key);
    let out = bladefs_command(&server, &creds, "daemon", &mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Returned only once live: usable at once, without waiting.
    assert!(is_mounted(&mnt));
    assert_eq!(
        std::fs::read_to_string(mnt.join("hello.txt")).unwrap(),
        "hello"
    );
    let pid = daemon_pid(&mnt).expect("a bladefs process serving the mount");
    run("fusermount3", &["-u", mnt.to_str().unwrap()]);
    common::wait_for("the daemon to exit", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });

    // In the foreground, SIGTERM unmounts and exits 0.
    let m = Mounted::new(&server, "daemon", &[]);
    let path = m.path.clone();
    assert_eq!(
        std::fs::read_to_string(m.join("hello.txt")).unwrap(),
        "hello"
    );
    let (status, log) = m.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}: {log}");
    assert!(!is_mounted(&path));
    assert!(log.contains("SIGTERM"), "{log}");
}

#[test]
fn reads_of_different_files_proceed_concurrently() {
    let server = common::start(Kind::S3sFs);
    let slow = data(MIB, 1);
    let fast = data(MIB, 2);
    seed(
        &server,
        "concurrent",
        vec![
            ("slow.bin".into(), slow.clone()),
            ("fast.bin".into(), fast.clone()),
        ],
    );
    let rt = common::background_runtime();
    // Every GET of slow.bin waits at the proxy until released.
    let proxy = rt.block_on(proxy::start_rules(
        server.addr,
        vec![proxy::Rule {
            when: vec!["get /concurrent/slow.bin"],
            fault: proxy::Fault::Hold,
            count: usize::MAX,
        }],
    ));
    let m = Mounted::at(&server, &proxy.endpoint, "concurrent", &[]);
    let slow_path = m.join("slow.bin");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let got = std::fs::read(slow_path);
        let _ = done_tx.send(());
        got
    });
    common::wait_for("the request to reach the proxy", || proxy.injected() > 0);
    // While that read is stuck in the store, another file reads in full.
    assert!(std::fs::read(m.join("fast.bin")).unwrap() == fast);
    assert!(
        done_rx.try_recv().is_err(),
        "the slow read was held all along"
    );
    proxy.release(1000);
    assert!(reader.join().unwrap().unwrap() == slow);
    m.unmount();
}

/// The last inode count the daemon logged on SIGUSR1.
fn logged_inodes(log: &str) -> Option<usize> {
    log.rsplit("stats: inodes ")
        .next()?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn inodes_are_freed_when_the_kernel_forgets_them() {
    let server = common::start(Kind::S3sFs);
    let objects = (0..600)
        .map(|i| (format!("walk/d{}/f{i}", i % 6), vec![1u8]))
        .collect();
    seed(&server, "forget", objects);
    let m = Mounted::new(&server, "forget", &[]);
    let found = run("find", &[m.path.to_str().unwrap()]);
    assert_eq!(found.lines().count(), 1 + 1 + 6 + 600);
    let count_after = |m: &Mounted, want: &dyn Fn(usize) -> bool| {
        let start = Instant::now();
        loop {
            m.signal(libc::SIGUSR1);
            std::thread::sleep(Duration::from_millis(20));
            if let Some(n) = logged_inodes(&m.log_text()).filter(|n| want(*n)) {
                return n;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{}",
                m.log_text()
            );
        }
    };
    let walked = count_after(&m, &|n| n > 600);
    // The kernel lets go of its dentries and inodes: FORGETs follow.
    std::fs::write("/proc/sys/vm/drop_caches", "2").expect("drop caches (root)");
    let after = count_after(&m, &|n| n < 50);
    println!("inodes: {walked} after find, {after} after the kernel forgot them");
    m.unmount();
}

/// Read-ahead across files through the kernel (Garage): `cp -r` of a tree
/// of small files takes most of them from fetches made ahead of its opens
/// (shown by the mount's metrics), copies every byte right, and asks each
/// file once.
#[test]
fn cp_r_of_small_files_reads_them_ahead_of_the_opens() {
    let server = common::start(Kind::Garage);
    let objects: Vec<(String, Vec<u8>)> = (0..240)
        .map(|i| (format!("tree/d{}/f{i:03}", i % 3), data(4096 + i, i as u64)))
        .collect();
    seed(&server, "walk", objects.clone());
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let m = Mounted::new(&server, "walk", &["--metrics-addr", &addr]);
    let out = tempfile::tempdir().unwrap();
    run(
        "cp",
        &[
            "-r",
            m.join("tree").to_str().unwrap(),
            out.path().to_str().unwrap(),
        ],
    );
    for (key, body) in &objects {
        let copied = std::fs::read(out.path().join(key)).unwrap();
        assert!(&copied == body, "{key}");
    }
    let (_, metrics) = common::mount::scrape(port, "/metrics");
    let used = common::mount::sample(&metrics, "bladefs_read_ahead_files_total{outcome=\"used\"}");
    let fetched = common::mount::sample(
        &metrics,
        "bladefs_read_ahead_files_total{outcome=\"fetched\"}",
    );
    assert!(used >= 200.0, "{used} of 240 files read ahead\n{metrics}");
    assert!(fetched - used <= 16.0, "{fetched} fetched, {used} used");
    let log = m.unmount();
    // A GET per file, and a few for the directories' metadata objects.
    assert!(requests(&log, "GetObject") <= 240 + 8, "{log}");
}

/// `--data-cache` (issue 14) on Garage: a second mount of the bucket reads
/// the files the first one read, sequentially and at random, with no GET of
/// their data, and the same bytes; a file replaced while unmounted is read
/// as it is now; a second mount using the cache directory while the first
/// lives is refused with the reason; what the first mount wrote is read back
/// by the second from the cache.
#[test]
fn the_data_cache_serves_a_remount_and_refuses_a_second_user() {
    let server = common::start(Kind::Garage);
    let big = data(6 * 1024 * 1024 + 1, 1);
    let mut objects = vec![("big".to_string(), big.clone())];
    for i in 0..10u64 {
        objects.push((format!("small/f{i}"), data(3000 + i as usize, i + 2)));
    }
    let client = seed(&server, "dcache", objects.clone());
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let m = Mounted::new(&server, "dcache", &["--data-cache", cache_dir]);
    for (key, body) in &objects {
        assert!(&std::fs::read(m.join(key)).unwrap() == body, "{key}");
    }
    let written = data(2 * 1024 * 1024 + 7, 99);
    std::fs::write(m.join("written"), &written).unwrap();

    let err = expect_mount_failure_with(&server, "dcache", &["--data-cache", cache_dir]);
    assert!(err.contains("in use by another bladefs (pid"), "{err}");
    let first = m.unmount();
    assert!(data_gets(&first) >= 11, "{first}");

    let changed = data(5000, 77);
    common::background_runtime()
        .block_on(client.put_object("dcache", "small/f3", Bytes::from(changed.clone())))
        .unwrap();
    objects[4].1 = changed;
    objects.push(("written".to_string(), written));
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let m = Mounted::new(
        &server,
        "dcache",
        &["--data-cache", cache_dir, "--metrics-addr", &addr],
    );
    for (key, body) in &objects {
        assert!(&std::fs::read(m.join(key)).unwrap() == body, "{key}");
    }
    // Random 4 KiB reads of the big file.
    let f = std::fs::File::open(m.join("big")).unwrap();
    let mut buf = vec![0u8; 4096];
    for i in 0..300u64 {
        let at = (i * 1_000_003) % (big.len() as u64 - 4096);
        f.read_exact_at(&mut buf, at).unwrap();
        assert!(buf[..] == big[at as usize..at as usize + 4096], "at {at}");
    }
    drop(f);
    let (_, metrics) = common::mount::scrape(port, "/metrics");
    let hits = common::mount::sample(&metrics, "bladefs_data_cache_blocks_total{outcome=\"hit\"}");
    // 7 blocks of big, 9 small files, 3 blocks of what was written.
    assert!(hits >= 19.0, "{metrics}");
    let second = m.unmount();
    // One GET of data: the file replaced while unmounted.
    assert_eq!(data_gets(&second), 1, "{second}");
}

/// GETs of objects other than directories' metadata, in a debug log.
fn data_gets(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("s3 request") && l.contains("GetObject"))
        .filter(|l| !l.contains(".bladefs-meta"))
        .count()
}

/// Mounts `source` of `server` with `extra` options, expecting a refusal;
/// returns what bladefs said.
fn expect_mount_failure_with(server: &Server, source: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let creds = credentials_file(dir.path(), server, &server.secret_key);
    let out = bladefs_command(server, &creds, source, &mnt)
        .args(extra)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!is_mounted(&mnt));
    String::from_utf8_lossy(&out.stderr).into_owned()
}
