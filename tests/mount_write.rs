//! Writing through real kernel mounts with the tools people use, against
//! Garage (a real store that checks digests and conditions and lists
//! multipart uploads). Every result is checked through the S3 API as well:
//! the right objects with the right bytes, no multipart upload left over,
//! no directory marker left behind.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use bladefs::s3::{GetObjectParams, ListUploadsParams, ObjectClient};
use common::mount::{Mounted, requests, run};
use common::store::{Store, runtime, sh, sha};
use common::{Kind, data};

const MIB: usize = 1024 * 1024;

fn local_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let sizes = [0usize, 1, 5000, 70_000, 2 * MIB + 1];
    for d in 0..4 {
        for (i, size) in sizes.iter().enumerate() {
            files.insert(
                format!("dir{d}/sub/f{i}.bin"),
                data(*size, (d * 10 + i) as u64),
            );
        }
    }
    files.insert("top.txt".into(), b"top\n".to_vec());
    files.insert("with space/é.txt".into(), b"odd\n".to_vec());
    for (k, v) in &files {
        let p = root.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v).unwrap();
    }
    files
}

#[test]
fn cp_rsync_tar_round_trips_and_rm_r() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "tools");
    let src = tempfile::tempdir().unwrap();
    let files = local_tree(src.path());
    let m = Mounted::new(&server, "tools", &[]);
    let mnt = m.path.to_str().unwrap().to_string();
    let s = src.path().to_str().unwrap();

    // cp -r in, and back out. Every file is in the bucket when cp
    // returns, its empty ones too: cp's close of each is its last
    // (docs/SEMANTICS.md, "Emptied at open").
    sh(&format!("cp -r '{s}' '{mnt}/cp'"));
    let keys = store.keys();
    for (k, v) in &files {
        assert_eq!(keys.get(&format!("cp/{k}")), Some(&(v.len() as u64)), "{k}");
    }
    assert_eq!(store.get("cp/dir2/sub/f4.bin"), files["dir2/sub/f4.bin"]);
    let out = tempfile::tempdir().unwrap();
    sh(&format!("cp -r '{mnt}/cp' '{}/back'", out.path().display()));
    run(
        "diff",
        &["-r", s, &format!("{}/back", out.path().display())],
    );

    // rsync -a in, twice; the second run changes one file.
    sh(&format!("rsync -a '{s}/' '{mnt}/rsync/'"));
    run("diff", &["-r", s, &format!("{mnt}/rsync")]);
    std::fs::write(src.path().join("top.txt"), b"changed\n").unwrap();
    sh(&format!("rsync -a '{s}/' '{mnt}/rsync/'"));
    assert_eq!(store.get("rsync/top.txt"), b"changed\n");
    run("diff", &["-r", s, &format!("{mnt}/rsync")]);

    // tar x into the mount, tar c out of it.
    let tarball = out.path().join("t.tar");
    sh(&format!("tar -C '{s}' -cf '{}' .", tarball.display()));
    std::fs::create_dir(m.join("tar")).unwrap();
    sh(&format!("tar -C '{mnt}/tar' -xf '{}'", tarball.display()));
    run("diff", &["-r", s, &format!("{mnt}/tar")]);
    sh(&format!(
        "tar -C '{mnt}/tar' -cf '{}/again.tar' .",
        out.path().display()
    ));
    std::fs::create_dir(out.path().join("untar")).unwrap();
    sh(&format!(
        "tar -C '{0}/untar' -xf '{0}/again.tar'",
        out.path().display()
    ));
    run(
        "diff",
        &["-r", s, &format!("{}/untar", out.path().display())],
    );

    // s3fs's test_read_external_object: a directory made through the
    // mount, a file put into it by another client, read at once.
    std::fs::create_dir(m.join("ext")).unwrap();
    store.put("ext/theirs.txt", b"from another client".to_vec());
    assert_eq!(
        std::fs::read(m.join("ext/theirs.txt")).unwrap(),
        b"from another client"
    );
    std::fs::remove_file(m.join("ext/theirs.txt")).unwrap();
    std::fs::remove_dir(m.join("ext")).unwrap();

    // rm -r leaves nothing, markers included.
    sh(&format!("rm -r '{mnt}/cp' '{mnt}/rsync' '{mnt}/tar'"));
    assert_eq!(std::fs::read_dir(&m.path).unwrap().count(), 0);
    m.unmount();
    // (After the unmount: the root's metadata, left with no entry once
    // rmdir dropped theirs, is deleted by its last write.)
    assert!(store.keys().is_empty(), "{:?}", store.keys());
    store.assert_no_uploads_left();
}

#[test]
fn dd_300_mib_in_and_out_and_append_1_mib() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "bigwrite");
    let body = data(300 * MIB, 5);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("in.bin");
    std::fs::write(&local, &body).unwrap();
    let m = Mounted::new(&server, "bigwrite", &[]);
    let target = m.join("big.bin");
    let before = usr1_counters(&m);
    run(
        "dd",
        &[
            &format!("if={}", local.display()),
            &format!("of={}", target.display()),
            "bs=1M",
            "status=none",
        ],
    );
    let written = usr1_counters(&m);
    println!(
        "write 300 MiB (dd bs=1M): {} requests ({} UploadPart, {} CreateMultipartUpload, {} CompleteMultipartUpload, {} PutObject), {} bytes sent",
        counter(&written, "total", "requests") - counter(&before, "total", "requests"),
        counter(&written, "UploadPart", "requests") - counter(&before, "UploadPart", "requests"),
        counter(&written, "CreateMultipartUpload", "requests")
            - counter(&before, "CreateMultipartUpload", "requests"),
        counter(&written, "CompleteMultipartUpload", "requests")
            - counter(&before, "CompleteMultipartUpload", "requests"),
        counter(&written, "PutObject", "requests") - counter(&before, "PutObject", "requests"),
        counter(&written, "total", "sent") - counter(&before, "total", "sent"),
    );
    let sent = counter(&written, "total", "sent") - counter(&before, "total", "sent");
    assert!(
        sent < (300 * MIB + MIB) as u64,
        "{sent} bytes sent for 300 MiB"
    );
    assert_eq!(sha(&store.get("big.bin")), sha(&body));
    let back = dir.path().join("out.bin");
    run(
        "dd",
        &[
            &format!("if={}", target.display()),
            &format!("of={}", back.display()),
            "bs=1M",
            "status=none",
        ],
    );
    assert_eq!(sha(&std::fs::read(&back).unwrap()), sha(&body));

    // Append 1 MiB: the 300 MiB stay on the server (UploadPartCopy).
    let tail = data(MIB, 6);
    let before = usr1_counters(&m);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&target)
        .unwrap();
    f.write_all(&tail).unwrap();
    drop(f);
    let after = usr1_counters(&m);
    let sent = counter(&after, "total", "sent") - counter(&before, "total", "sent");
    println!(
        "append 1 MiB to 300 MiB: {} bytes sent, UploadPartCopy {}, UploadPart {}",
        sent,
        counter(&after, "UploadPartCopy", "requests")
            - counter(&before, "UploadPartCopy", "requests"),
        counter(&after, "UploadPart", "requests") - counter(&before, "UploadPart", "requests"),
    );
    assert!(sent < 3 * MIB as u64, "{sent} bytes sent to append 1 MiB");
    let mut all = body.clone();
    all.extend_from_slice(&tail);
    assert_eq!(sha(&store.get("big.bin")), sha(&all));
    let log = m.unmount();
    assert!(
        requests(&log, "UploadPart") >= 30,
        "streamed in parts: {log}"
    );
    store.assert_no_uploads_left();
}

/// The counters the daemon logs on SIGUSR1, as text (up to the block's
/// closing `total` line; other log lines may follow it).
fn usr1_counters(m: &Mounted) -> String {
    let before = m.log_text().matches("stats: inodes").count();
    m.signal(libc::SIGUSR1);
    let mut block = String::new();
    common::wait_for("the counters in the log", || {
        let log = m.log_text();
        if log.matches("stats: inodes").count() <= before {
            return false;
        }
        let tail = log.rsplit("stats: inodes").next().unwrap_or("");
        match tail.lines().position(|l| l.starts_with("total")) {
            Some(end) => {
                block = tail.lines().take(end + 1).collect::<Vec<_>>().join("\n");
                true
            }
            None => false,
        }
    });
    block
}

fn counter(stats: &str, op: &str, field: &str) -> u64 {
    stats
        .lines()
        .find(|l| l.split_whitespace().next() == Some(op))
        .and_then(|l| {
            let mut w = l.split_whitespace();
            w.position(|x| x == field)?;
            w.next()?.parse().ok()
        })
        .unwrap_or(0)
}

#[test]
fn mv_of_files_and_of_a_directory_of_1500_files() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "moves");
    let m = Mounted::new(&server, "moves", &[]);
    std::fs::create_dir(m.join("src")).unwrap();
    for i in 0..1500 {
        std::fs::write(m.join(&format!("src/f{i:04}")), format!("file {i}")).unwrap();
    }
    std::fs::write(m.join("one.txt"), b"one").unwrap();
    run(
        "mv",
        &[
            m.join("one.txt").to_str().unwrap(),
            m.join("two.txt").to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(m.join("two.txt")).unwrap(), b"one");
    assert!(std::fs::metadata(m.join("one.txt")).is_err());

    let before = usr1_counters(&m);
    run(
        "mv",
        &[
            m.join("src").to_str().unwrap(),
            m.join("dst").to_str().unwrap(),
        ],
    );
    let after = usr1_counters(&m);
    println!(
        "mv of a directory of 1500 files: CopyObject {}, DeleteObjects {}, ListObjectsV2 {}, total requests {}",
        counter(&after, "CopyObject", "requests") - counter(&before, "CopyObject", "requests"),
        counter(&after, "DeleteObjects", "requests")
            - counter(&before, "DeleteObjects", "requests"),
        counter(&after, "ListObjectsV2", "requests")
            - counter(&before, "ListObjectsV2", "requests"),
        counter(&after, "total", "requests") - counter(&before, "total", "requests"),
    );
    assert_eq!(
        counter(&after, "DeleteObjects", "requests")
            - counter(&before, "DeleteObjects", "requests"),
        2
    );
    assert_eq!(std::fs::read_dir(m.join("dst")).unwrap().count(), 1500);
    assert_eq!(
        std::fs::read_to_string(m.join("dst/f0042")).unwrap(),
        "file 42"
    );
    let keys = store.keys();
    assert!(keys.keys().all(|k| !k.starts_with("src/")), "sources left");
    assert_eq!(keys.keys().filter(|k| k.starts_with("dst/f")).count(), 1500);
    assert_eq!(store.get("dst/f1499"), b"file 1499");

    // rename onto an existing file replaces it; mkdir + rmdir leave no marker.
    std::fs::write(m.join("a.txt"), b"A").unwrap();
    std::fs::write(m.join("b.txt"), b"B").unwrap();
    std::fs::rename(m.join("a.txt"), m.join("b.txt")).unwrap();
    assert_eq!(store.get("b.txt"), b"A");
    std::fs::create_dir(m.join("empty")).unwrap();
    assert!(store.keys().contains_key("empty/"), "mkdir writes a marker");
    let marker = runtime()
        .block_on(store.client.head_object(&store.bucket, "empty/", None))
        .unwrap();
    assert_eq!(
        marker.content_type.as_deref(),
        Some("application/x-directory"),
        "the type s3fs and other tools take for a directory"
    );
    assert!(std::fs::metadata(m.join("empty")).unwrap().is_dir());
    assert_eq!(
        std::fs::remove_dir(m.join("dst"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    std::fs::remove_dir(m.join("empty")).unwrap();
    assert!(!store.keys().contains_key("empty/"));
    m.unmount();
    store.assert_no_uploads_left();
}

#[test]
fn appends_in_place_edits_editor_saves_and_truncate() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "edits");
    store.put("notes.txt", b"line one\nline two\n".to_vec());
    let m = Mounted::new(&server, "edits", &[]);
    let notes = m.join("notes.txt");
    let n = notes.to_str().unwrap();
    sh(&format!("echo 'line three' >> '{n}'"));
    assert_eq!(store.get("notes.txt"), b"line one\nline two\nline three\n");
    sh(&format!("sed -i 's/two/2/' '{n}'"));
    assert_eq!(store.get("notes.txt"), b"line one\nline 2\nline three\n");

    // An editor's save: write a temp file, fsync, rename over the original.
    let tmp = m.join(".notes.txt.swp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(b"saved by an editor\n").unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::rename(&tmp, &notes).unwrap();
    assert_eq!(store.get("notes.txt"), b"saved by an editor\n");
    assert!(!store.keys().contains_key(".notes.txt.swp"));

    // Writes at offsets inside an existing object, and truncation both ways.
    store.put("blob.bin", data(12 * MIB, 1));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.join("blob.bin"))
        .unwrap();
    f.write_all_at(b"XYZ", 6 * MIB as u64).unwrap();
    f.sync_all().unwrap();
    let mut want = data(12 * MIB, 1);
    want[6 * MIB..6 * MIB + 3].copy_from_slice(b"XYZ");
    assert_eq!(sha(&store.get("blob.bin")), sha(&want));
    f.set_len(100).unwrap();
    f.sync_all().unwrap();
    assert_eq!(store.get("blob.bin"), want[..100]);
    f.set_len(200).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut grown = want[..100].to_vec();
    grown.extend_from_slice(&[0u8; 100]);
    assert_eq!(store.get("blob.bin"), grown);
    run(
        "truncate",
        &["-s", "10", m.join("blob.bin").to_str().unwrap()],
    );
    assert_eq!(store.get("blob.bin"), grown[..10]);

    // touch makes an empty object, published by its close (touch holds
    // no other descriptor of it: docs/SEMANTICS.md, "Emptied at open");
    // chmod holds in memory.
    run("touch", &[m.join("touched").to_str().unwrap()]);
    assert_eq!(store.keys().get("touched"), Some(&0));
    std::fs::set_permissions(
        m.join("touched"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(m.join("touched"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // O_EXCL on an existing name fails.
    assert_eq!(
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.join("touched"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EEXIST)
    );
    m.unmount();
    store.assert_no_uploads_left();
}

#[test]
fn git_works_on_the_mount() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "gitrepo");
    let m = Mounted::new(&server, "gitrepo", &[]);
    let repo = m.join("repo");
    std::fs::create_dir(&repo).unwrap();
    let r = repo.to_str().unwrap();
    let git = |args: &str| {
        sh(&format!(
            "cd '{r}' && git -c user.name=t -c user.email=t@example.com -c init.defaultBranch=main {args}"
        ))
    };
    git("init -q");
    std::fs::write(repo.join("README"), b"hello git\n").unwrap();
    std::fs::create_dir(repo.join("src")).unwrap();
    std::fs::write(repo.join("src/lib.rs"), b"fn main() {}\n").unwrap();
    git("add -A");
    git("commit -q -m first");
    let status = git("status --porcelain");
    assert!(status.trim().is_empty(), "git status: {status}");
    std::fs::write(repo.join("README"), b"hello again\n").unwrap();
    git("commit -q -am second");
    let log = git("log --oneline");
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(git("status --porcelain").trim().is_empty());
    assert!(store.keys().contains_key("repo/.git/HEAD"));
    assert_eq!(store.get("repo/README"), b"hello again\n");
    m.unmount();
    store.assert_no_uploads_left();
}

/// The patterns that need back what a file streamed from memory already
/// sent (docs/SEMANTICS.md, "Streamed from memory"), through the kernel:
/// a pack writer that reads its file back before it closes it (git's
/// index-pack), and a muxer that patches its header last (zip, mp4). The
/// bytes read are the bytes written, and the close saves the whole. (When
/// the file is saved on the way, by the read or by a FLUSH that any fork
/// of this multi-threaded test process sends, varies: the core tests
/// assert it.)
#[test]
fn a_file_streamed_from_memory_is_read_back_and_patched_before_its_close() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "readback");
    let m = Mounted::new(&server, "readback", &[]);
    let content: Vec<u8> = (0..20).flat_map(|i| data(MIB, 40 + i)).collect();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(m.join("pack"))
        .unwrap();
    for chunk in content.chunks(MIB) {
        f.write_all(chunk).unwrap();
    }
    // Read through O_DIRECT, so that the read reaches the daemon and not
    // the kernel's cache of the writes.
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(m.join("pack"))
        .unwrap();
    let mut back = vec![0u8; MIB];
    direct.read_exact_at(&mut back, 3 * MIB as u64).unwrap();
    assert!(back[..] == content[3 * MIB..4 * MIB], "read back");
    drop(direct);
    f.write_all_at(b"HEADER", 0).unwrap();
    drop(f);
    let mut want = content.clone();
    want[..6].copy_from_slice(b"HEADER");
    assert!(store.get("pack") == want, "the patched whole");
    m.unmount();
    store.assert_no_uploads_left();
}

#[test]
fn a_file_written_and_read_by_two_processes_at_once() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "shared");
    let m = Mounted::new(&server, "shared", &[]);
    let path = m.join("shared.log");
    let writer = std::fs::File::create(&path).unwrap();
    for i in 0..50u32 {
        writer
            .write_all_at(format!("{i:08}\n").as_bytes(), u64::from(i) * 9)
            .unwrap();
        // Another process reads what is written so far, before any close.
        let seen = sh(&format!("cat '{}'", path.display()));
        assert_eq!(seen.lines().count(), i as usize + 1, "{seen}");
        assert_eq!(seen.lines().last().unwrap(), format!("{i:08}"));
    }
    writer.sync_all().unwrap();
    drop(writer);
    assert_eq!(store.get("shared.log").len(), 50 * 9);
    m.unmount();
}

#[test]
fn read_only_still_refuses_and_mkdir_rmdir_make_buckets_at_the_root() {
    let server = common::start(Kind::Garage);
    let m = Mounted::new(&server, "store", &["--all-buckets"]);
    std::fs::create_dir(m.join("newbucket")).unwrap();
    std::fs::write(m.join("newbucket/f.txt"), b"in a new bucket").unwrap();
    let client = server.client();
    let got = runtime()
        .block_on(client.get_object("newbucket", "f.txt", &GetObjectParams::default()))
        .unwrap();
    assert_eq!(&got.body[..], b"in a new bucket");
    assert_eq!(
        std::fs::remove_dir(m.join("newbucket"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    std::fs::remove_file(m.join("newbucket/f.txt")).unwrap();
    std::fs::remove_dir(m.join("newbucket")).unwrap();
    assert!(runtime().block_on(client.head_bucket("newbucket")).is_err());
    assert_eq!(
        std::fs::create_dir(m.join("Bad_Name!"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EINVAL)
    );
    m.unmount();
}

/// Uploads that keep failing: close and fsync report EIO, nothing partial
/// appears, the old content stays, and no multipart upload is left.
#[test]
fn a_failed_upload_is_an_error_and_loses_nothing() {
    use common::proxy;
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "failing");
    store.put("keep.txt", b"old content".to_vec());
    store.put("big.bin", data(MIB, 3));
    let rt = common::background_runtime();
    // Every PUT of an object or a part fails; everything else works.
    let proxy = rt.block_on(proxy::start_rules(
        server.addr,
        vec![proxy::Rule {
            when: vec!["put /failing/"],
            fault: proxy::Fault::InternalError,
            count: usize::MAX,
        }],
    ));
    let m = Mounted::at(&server, &proxy.endpoint, "failing", &["--retries", "3"]);

    // A small file: one PUT at close.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.join("keep.txt"))
        .unwrap();
    f.write_all(b"new content that never lands").unwrap();
    assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
    drop(f);
    assert_eq!(store.get("keep.txt"), b"old content");

    // A large one: streamed parts, then the failing close. Streamed from
    // memory, a part that failed is lost, and the writes after it is known
    // already report it (docs/SEMANTICS.md, "Streamed from memory").
    let mut f = std::fs::File::create(m.join("big.bin")).unwrap();
    for i in 0..24 {
        if let Err(e) = f.write_all(&data(MIB, 100 + i)) {
            assert_eq!(e.raw_os_error(), Some(libc::EIO));
            break;
        }
    }
    // close(2) itself reports the failure (flush), not just fsync.
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    // SAFETY: closing the descriptor we own.
    let rc = unsafe { libc::close(fd) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EIO)
    );
    assert_eq!(store.get("big.bin"), data(MIB, 3), "old content intact");
    store.assert_no_uploads_left();
    assert!(proxy.injected() > 0);
    m.unmount();
    store.assert_no_uploads_left();
}

#[test]
fn staging_limit_noreplace_and_orphaned_uploads() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "limits");
    // An upload left by a crash.
    let orphan = runtime()
        .block_on(
            store
                .client
                .create_multipart_upload("limits", "crashed.bin"),
        )
        .unwrap();
    let m = Mounted::new(
        &server,
        "limits",
        &["--abort-uploads-after", "0", "--cache-size-mib", "4"],
    );
    let left = runtime()
        .block_on(
            store
                .client
                .list_multipart_uploads("limits", &ListUploadsParams::default()),
        )
        .unwrap();
    assert!(
        left.uploads.iter().all(|u| u.upload_id != orphan),
        "the orphaned upload was aborted at mount"
    );

    // Writes beyond the staging space fail clearly, and lose nothing else.
    // (Written from 1 MiB on: a file written in order from its start
    // streams from memory and stages nothing; core.rs shows that, as a
    // fork anywhere in this test process may save a file on the way.)
    let f = std::fs::File::create(m.join("too-big.bin")).unwrap();
    let err = (0..8)
        .map(|i| f.write_all_at(&data(MIB, i), (i + 1) * MIB as u64))
        .find_map(Result::err)
        .expect("ENOSPC before 8 MiB");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    drop(f);
    std::fs::write(m.join("small.txt"), b"fits").unwrap();
    assert_eq!(store.get("small.txt"), b"fits");

    // rename(2) with RENAME_NOREPLACE onto an existing name: EEXIST.
    std::fs::write(m.join("other.txt"), b"other").unwrap();
    let c = |p: std::path::PathBuf| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let (from, to) = (c(m.join("small.txt")), c(m.join("other.txt")));
    // SAFETY: valid NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EEXIST)
    );
    assert_eq!(store.get("other.txt"), b"other");
    m.unmount();
}

#[test]
fn a_slow_upload_does_not_hold_up_writers_of_other_files() {
    use common::proxy;
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "slowput");
    let rt = common::background_runtime();
    let proxy = rt.block_on(proxy::start_rules(
        server.addr,
        vec![proxy::Rule {
            when: vec!["put /slowput/slow.txt"],
            fault: proxy::Fault::Hold,
            count: 1,
        }],
    ));
    let m = Mounted::at(&server, &proxy.endpoint, "slowput", &[]);
    // create() puts the empty object (held), in another thread.
    let slow = m.join("slow.txt");
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let r = std::fs::write(slow, b"slow");
        let _ = tx.send(());
        r
    });
    common::wait_for("the request to reach the proxy", || proxy.injected() > 0);
    std::fs::write(m.join("fast.txt"), b"fast").unwrap();
    assert_eq!(store.get("fast.txt"), b"fast");
    if rx.try_recv().is_ok() {
        panic!(
            "the slow write finished early: {:?}\n{}",
            writer.join().unwrap(),
            m.log_text()
        );
    }
    proxy.release(100);
    writer.join().unwrap().unwrap();
    assert_eq!(store.get("slow.txt"), b"slow");
    m.unmount();
}

#[test]
fn a_file_unlinked_while_open_is_not_written_back_and_new_files_are_visible_while_open() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "unlinked");
    let m = Mounted::new(&server, "unlinked", &["--metadata-ttl", "0"]);
    let mut f = std::fs::File::create(m.join("gone.txt")).unwrap();
    f.write_all(b"never stored").unwrap();
    // Still being written, and no cache to answer: stat finds it locally.
    assert_eq!(std::fs::metadata(m.join("gone.txt")).unwrap().len(), 12);
    std::fs::remove_file(m.join("gone.txt")).unwrap();
    assert!(
        std::fs::metadata(m.join("gone.txt")).is_err(),
        "gone while still open"
    );
    f.write_all(b" more").unwrap();
    drop(f);
    assert!(!store.keys().contains_key("gone.txt"));
    assert!(std::fs::metadata(m.join("gone.txt")).is_err());
    m.unmount();
}

#[test]
fn sequential_writes_stream_parts_before_close() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "streaming");
    let m = Mounted::new(&server, "streaming", &[]);
    let mut want = Vec::new();
    for i in 0..40 {
        want.extend_from_slice(&data(MIB, 500 + i));
    }
    // The writer is a process of its own that forks nothing: a descriptor
    // of this test process would be inherited for an instant by every
    // child the tests running beside it spawn, and the close of that copy
    // (at exec) is a FUSE flush, which saves the file before its close.
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), &want).unwrap();
    let mut writer = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\n\
             src, dst = open(sys.argv[1], 'rb'), open(sys.argv[2], 'wb', buffering=0)\n\
             while chunk := src.read(1 << 20): dst.write(chunk)\n\
             print('written', flush=True)\n\
             sys.stdin.readline()\n\
             dst.close()\n",
        ])
        .arg(src.path())
        .arg(m.join("s.bin"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(writer.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "written");
    // Still open: parts are already going up (the last one waits for close).
    let mut parts = 0;
    common::wait_for("parts uploaded before close", || {
        let stats = usr1_counters(&m);
        parts = counter(&stats, "UploadPart", "requests");
        parts >= 3
    });
    assert!(
        store.keys().get("s.bin").is_none_or(|size| *size == 0),
        "no object before close"
    );
    drop(writer.stdin.take());
    assert!(writer.wait().unwrap().success());
    assert_eq!(sha(&store.get("s.bin")), sha(&want));
    m.unmount();
    store.assert_no_uploads_left();
}

/// Two mounts of one bucket at once: with `--metadata-ttl 0` the second
/// sees every file the first has closed at once (new, overwritten, grown,
/// removed); with the default TTL it does within a TTL of the close.
#[test]
fn a_second_mount_sees_closed_files_within_one_ttl() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "twomounts");
    store.put("old.txt", b"version one".to_vec());
    let a = Mounted::new(&server, "twomounts", &[]);
    let b = Mounted::new(&server, "twomounts", &["--metadata-ttl", "0"]);
    let c = Mounted::new(&server, "twomounts", &[]);
    let names = |m: &Mounted| {
        let mut v: Vec<String> = std::fs::read_dir(&m.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    // Both look first, so stale caches would show.
    assert_eq!(names(&b), ["old.txt"]);
    assert_eq!(names(&c), ["old.txt"]);
    assert_eq!(std::fs::read(b.join("old.txt")).unwrap(), b"version one");
    assert_eq!(std::fs::read(c.join("old.txt")).unwrap(), b"version one");

    std::fs::write(a.join("new.txt"), b"made by a").unwrap();
    std::fs::write(a.join("old.txt"), b"version two, longer").unwrap();
    let closed = std::time::Instant::now();
    assert_eq!(names(&b), ["new.txt", "old.txt"]);
    assert_eq!(std::fs::read(b.join("new.txt")).unwrap(), b"made by a");
    assert_eq!(
        std::fs::read(b.join("old.txt")).unwrap(),
        b"version two, longer"
    );
    common::wait_for("the default-TTL mount to catch up", || {
        names(&c) == ["new.txt", "old.txt"]
            && std::fs::read(c.join("old.txt")).unwrap() == b"version two, longer"
    });
    let caught_up = closed.elapsed();
    // One TTL (1 s) plus the time of the calls themselves, on a busy machine.
    assert!(
        caught_up < std::time::Duration::from_secs(3),
        "{caught_up:?}"
    );

    std::fs::remove_file(a.join("new.txt")).unwrap();
    assert_eq!(names(&b), ["old.txt"]);
    assert!(!b.join("new.txt").exists());
    for m in [a, b, c] {
        m.unmount();
    }
}
