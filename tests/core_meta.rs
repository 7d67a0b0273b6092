//! POSIX metadata the store cannot hold (symlinks, special files, modes,
//! owners, times), driven through the filesystem core on the in-memory
//! store: what persists across a new mount on the same bucket, what a
//! change by another client undoes, the request counts, and the format
//! other tools read.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bladefs::fs::cache::Ttl;
use bladefs::fs::inode::Kind;
use bladefs::fs::meta::{META_NAME, is_meta_name, read_all};
use bladefs::fs::{Attr, Creator, SetAttr};
use bladefs::s3::faults::{Fault, FaultClient, Gate};
use bladefs::s3::mem::MemoryClient;
use bladefs::s3::{ObjectClient, Op};

mod core_support;
use core_support::{BUCKET, Mount, USER, at};

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

/// A mount of `mem` (a new one on the same store is a remount).
fn mount(mem: &Arc<MemoryClient>) -> Core {
    mount_through(mem, mem.clone(), Duration::from_secs(60))
}

/// A mount of `mem` through `client` (faults), with metadata TTL `ttl`.
fn mount_through(mem: &Arc<MemoryClient>, client: Arc<dyn ObjectClient>, ttl: Duration) -> Core {
    let mount = core_support::mount(client, |cfg| {
        cfg.metadata_ttl = Ttl(Some(ttl));
        cfg.uid = 1000;
        cfg.gid = 1000;
    });
    Core {
        mem: mem.clone(),
        mount,
    }
}

fn fresh() -> Core {
    mount(&Arc::new(MemoryClient::with_bucket(BUCKET)))
}

impl Core {
    async fn dir(&self, path: &str) -> u64 {
        self.attr(path).await.ino
    }

    /// Names and kinds of a directory, from readdir (plus: attributes too).
    async fn list(&self, path: &str, plus: bool) -> Vec<(String, Kind, Option<u16>)> {
        let ino = self.dir(path).await;
        let fh = self.fs.opendir(ino).await.expect("opendir");
        let mut out = Vec::new();
        self.fs
            .readdir(ino, fh, 0, plus, |e| {
                if e.name != "." && e.name != ".." {
                    out.push((e.name.to_string(), e.kind, e.attr.map(|a| a.perm)));
                }
                false
            })
            .await
            .expect("readdir");
        self.fs.releasedir(fh);
        out
    }

    async fn write(&self, dir: &str, name: &str, data: &[u8], who: &Creator) -> u64 {
        let parent = self.dir(dir).await;
        let (attr, fh) = self
            .fs
            .create_as(parent, OsStr::new(name), who)
            .await
            .expect("create");
        self.fs.write(fh, 0, data.to_vec()).await.expect("write");
        self.fs.flush(fh).await.expect("close");
        self.fs.release(fh).await;
        attr.ino
    }

    async fn chmod(&self, path: &str, mode: u16) -> Attr {
        let ino = self.attr(path).await.ino;
        self.fs
            .setattr(
                ino,
                None,
                SetAttr {
                    perm: Some(mode),
                    ..Default::default()
                },
            )
            .await
            .expect("chmod")
    }

    async fn utime(&self, path: &str, t: SystemTime) -> Attr {
        let ino = self.attr(path).await.ino;
        self.fs
            .setattr(
                ino,
                None,
                SetAttr {
                    mtime: Some(t),
                    ..Default::default()
                },
            )
            .await
            .expect("utimes")
    }

    async fn readlink(&self, path: &str) -> String {
        let ino = self.attr(path).await.ino;
        self.fs.readlink(ino).await.expect("readlink")
    }

    /// What a remount sees: pending metadata written, a new mount made.
    async fn remount(&self) -> Core {
        self.fs.flush_metadata().await.expect("flush metadata");
        mount(&self.mem)
    }

    fn requests(&self, op: Op) -> u64 {
        self.mem.stats().snapshot().get(op).requests
    }

    /// What any mount reads of `dir`'s metadata: every object merged.
    fn meta_table(&self, dir: &str) -> bladefs::fs::meta::Entries {
        let objects = self.mem.objects(BUCKET);
        let bodies: Vec<&[u8]> = objects
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix(dir)
                    .is_some_and(|n| !n.contains('/') && is_meta_name(n))
            })
            .map(|(_, b)| &b[..])
            .collect();
        assert!(!bodies.is_empty(), "metadata objects in {dir:?}");
        read_all(bodies)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_are_objects_holding_their_target_and_survive_a_remount() {
    let c = fresh();
    let root = c.fs.root_ino();
    c.fs.mkdir(root, OsStr::new("lib")).await.unwrap();
    let made =
        c.fs.symlink(root, OsStr::new("lib64"), Path::new("lib"), &USER)
            .await
            .expect("symlink");
    assert_eq!(made.kind, Kind::Symlink);
    assert_eq!(made.size, 3);
    assert_eq!(made.perm, 0o777);
    let dangling = c.dir("lib").await;
    c.fs.symlink(
        dangling,
        OsStr::new("abs"),
        Path::new("/nowhere/at all"),
        &USER,
    )
    .await
    .unwrap();
    assert_eq!(c.readlink("lib64").await, "lib");
    let exists =
        c.fs.symlink(root, OsStr::new("lib64"), Path::new("x"), &USER)
            .await
            .expect_err("taken");
    assert_eq!(exists.errno(), libc::EEXIST);
    // Other clients see an object holding the target.
    assert_eq!(&c.mem.objects(BUCKET)["lib64"][..], b"lib");

    let d = c.remount().await;
    assert_eq!(d.attr("lib64").await.kind, Kind::Symlink);
    assert_eq!(d.readlink("lib64").await, "lib");
    assert_eq!(d.readlink("lib/abs").await, "/nowhere/at all");
    // Listed as links, with and without attributes, and the metadata
    // object is no name of the directory.
    let listed = d.list("", false).await;
    assert_eq!(
        listed,
        vec![
            ("lib".to_string(), Kind::Dir, None),
            ("lib64".to_string(), Kind::Symlink, None)
        ]
    );
    let plus = d.list("lib", true).await;
    assert_eq!(plus, vec![("abs".to_string(), Kind::Symlink, Some(0o777))]);
    assert_eq!(d.walk(META_NAME).await.unwrap_err(), libc::ENOENT);
    let refused =
        d.fs.create(d.fs.root_ino(), OsStr::new(META_NAME))
            .await
            .expect_err("reserved");
    assert_eq!(refused.errno(), libc::EINVAL);
    // The format, as another tool reads it.
    let table = d.meta_table("");
    assert_eq!(table["lib64"].target.as_deref(), Some("lib"));
    assert!(table["lib64"].etag.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_owners_and_times_persist_and_a_directory_s_changes_are_one_put() {
    let c = fresh();
    for i in 0..200 {
        c.mem.put(BUCKET, &format!("d/f{i:03}"), vec![b'x'; 10]);
    }
    let d_ino = c.dir("d").await;
    let names: Vec<u64> = {
        let mut v = Vec::new();
        for i in 0..200 {
            v.push(c.attr(&format!("d/f{i:03}")).await.ino);
        }
        v
    };
    // chmod -R and touch -d of the whole directory.
    let puts_before = c.requests(Op::PutObject);
    for ino in &names {
        c.fs.setattr(
            *ino,
            None,
            SetAttr {
                perm: Some(0o750),
                gid: Some(2000),
                mtime: Some(at(1_000_000_000)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    c.fs.fsyncdir(d_ino).await.unwrap();
    let puts = c.requests(Op::PutObject) - puts_before;
    assert!(
        (1..=20).contains(&puts),
        "200 changes coalesced into a few PUTs, not one each: {puts}"
    );
    let a = c.attr("d/f007").await;
    assert_eq!((a.perm, a.uid, a.gid), (0o750, 1000, 2000));
    assert_eq!(a.mtime, at(1_000_000_000));

    let r = c.remount().await;
    let a = r.attr("d/f123").await;
    assert_eq!((a.perm, a.uid, a.gid), (0o750, 1000, 2000));
    assert_eq!(a.mtime, at(1_000_000_000));
    // Listing the directory: its pages and one GET of its metadata, and
    // the attributes come with the listing.
    let gets = r.mem.stats().snapshot().get(Op::GetObject).requests;
    let lists = r.mem.stats().snapshot().get(Op::ListObjectsV2).requests;
    let r2 = mount(&r.mem);
    let plus = r2.list("d", true).await;
    assert_eq!(plus.len(), 200);
    assert!(
        plus.iter()
            .all(|(_, k, p)| *k == Kind::File && *p == Some(0o750))
    );
    let snap = r2.mem.stats().snapshot();
    // The root lookup of `d` reads the root's (absent) metadata too.
    assert!(
        snap.get(Op::GetObject).requests - gets <= 2,
        "one GET per directory"
    );
    assert!(snap.get(Op::ListObjectsV2).requests - lists <= 3);
    // A directory's own mode lives in its parent's metadata.
    r2.chmod("d", 0o700).await;
    let r3 = r2.remount().await;
    assert_eq!(r3.attr("d").await.perm, 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mode_given_at_create_is_kept_and_the_default_costs_nothing() {
    let c = fresh();
    c.write("", "plain", b"a", &USER).await;
    let exec = Creator {
        mode: Some(0o755),
        ..USER
    };
    c.write("", "run.sh", b"#!/bin/sh\n", &exec).await;
    let root = c.fs.root_ino();
    let dir =
        c.fs.mkdir_as(
            root,
            OsStr::new("private"),
            &Creator {
                mode: Some(0o700),
                uid: 0,
                gid: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!((dir.perm, dir.uid, dir.gid), (0o700, 0, 0));
    c.fs.flush_metadata().await.unwrap();
    let table = c.meta_table("");
    assert!(!table.contains_key("plain"), "defaults are not recorded");
    assert_eq!(table["run.sh"].mode, Some(0o755));
    assert!(table["run.sh"].etag.is_some(), "the entry names the upload");
    let r = c.remount().await;
    assert_eq!(r.attr("run.sh").await.perm, 0o755);
    assert_eq!(r.attr("plain").await.perm, 0o644);
    let p = r.attr("private").await;
    assert_eq!((p.perm, p.uid, p.gid), (0o700, 0, 0));
}

/// cp -p and rsync set the time on a file they are still writing (or
/// just wrote): the time is the one set, once the upload is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_set_before_close_is_kept_and_a_later_write_makes_it_now() {
    let c = fresh();
    let root = c.fs.root_ino();
    let (attr, fh) = c.fs.create(root, OsStr::new("copy")).await.unwrap();
    c.fs.write(fh, 0, b"data".to_vec()).await.unwrap();
    c.fs.setattr(
        attr.ino,
        Some(fh),
        SetAttr {
            mtime: Some(at(1_234_567_890)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.fs.flush(fh).await.unwrap();
    c.fs.release(fh).await;
    assert_eq!(c.attr("copy").await.mtime, at(1_234_567_890));
    let r = c.remount().await;
    assert_eq!(r.attr("copy").await.mtime, at(1_234_567_890));
    // Written again: now, not the old time.
    let ino = r.attr("copy").await.ino;
    let (fh, _) = r.fs.open(ino, true, false).await.unwrap();
    r.fs.write(fh, 4, b"more".to_vec()).await.unwrap();
    r.fs.flush(fh).await.unwrap();
    r.fs.release(fh).await;
    let now = r.attr("copy").await.mtime;
    assert!(now > at(1_700_000_000), "{now:?}");
    let r2 = r.remount().await;
    assert!(r2.attr("copy").await.mtime > at(1_700_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_by_another_client_is_a_plain_file_again() {
    let c = fresh();
    c.mem.put(BUCKET, "f", b"one".to_vec());
    c.chmod("f", 0o600).await;
    c.utime("f", at(1_000)).await;
    let root = c.fs.root_ino();
    c.fs.symlink(root, OsStr::new("l"), Path::new("f"), &USER)
        .await
        .unwrap();
    c.fs.flush_metadata().await.unwrap();
    // Another client writes both names.
    c.mem.put(BUCKET, "f", b"two".to_vec());
    c.mem.put(BUCKET, "l", b"not a link".to_vec());
    let r = mount(&c.mem);
    let f = r.attr("f").await;
    assert_eq!(f.perm, 0o644);
    assert!(
        f.mtime > at(1_700_000_000),
        "LastModified, not the old time"
    );
    let l = r.attr("l").await;
    assert_eq!((l.kind, l.size), (Kind::File, 10));
}

/// A directory moved onto an empty one: the target's metadata goes first,
/// so that a removal recorded there (later than the moved entries) does not
/// hide what moved in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_moved_onto_an_empty_one_keeps_its_entries() {
    let c = fresh();
    c.mem.put(BUCKET, "s/x", b"x".to_vec());
    c.mem.put(BUCKET, "t/x", b"y".to_vec());
    c.chmod("s/x", 0o600).await;
    c.chmod("t/x", 0o640).await;
    let t = c.dir("t").await;
    c.fs.fsyncdir(t).await.unwrap();
    // Removed after the chmod of s/x: its removal is the later change.
    c.fs.unlink(t, OsStr::new("x")).await.unwrap();
    c.fs.fsyncdir(t).await.unwrap();
    let root = c.fs.root_ino();
    c.fs.rename(root, OsStr::new("s"), root, OsStr::new("t"), false)
        .await
        .expect("rename onto an empty directory");
    let r = c.remount().await;
    assert_eq!(r.attr("t/x").await.perm, 0o600);
    assert_eq!(&r.mem.objects(BUCKET)["t/x"][..], b"x");
}

/// rmdir lists the directory once: the same listing that finds it empty
/// names the metadata objects it then deletes in one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmdir_lists_once_and_deletes_its_metadata_in_one_request() {
    let c = fresh();
    c.mem.put(BUCKET, "d/", Vec::new());
    c.mem.put(BUCKET, "d/f", b"x".to_vec());
    c.chmod("d/f", 0o600).await;
    let d = c.dir("d").await;
    c.fs.fsyncdir(d).await.unwrap();
    c.fs.unlink(d, OsStr::new("f")).await.unwrap();
    // And a segment another mount wrote.
    c.mem.put(
        BUCKET,
        "d/.bladefs-meta.00000000000000aa.0000000000000001",
        {
            let mut e = bladefs::fs::meta::Entries::new();
            e.insert("gone".into(), Default::default());
            bladefs::fs::meta::render_v1(&e).to_vec()
        },
    );
    let before = c.mem.stats().snapshot();
    c.fs.rmdir(c.fs.root_ino(), OsStr::new("d"))
        .await
        .expect("rmdir");
    let after = c.mem.stats().snapshot();
    let delta = |op| after.get(op).requests - before.get(op).requests;
    assert_eq!(delta(Op::ListObjectsV2), 1);
    assert_eq!(delta(Op::DeleteObjects), 1);
    assert_eq!(delta(Op::GetObject), 0);
    assert!(
        !c.mem.objects(BUCKET).keys().any(|k| k.starts_with("d/")),
        "{:?}",
        c.mem.objects(BUCKET).keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_carry_kind_mode_and_time_and_deletes_drop_entries() {
    let c = fresh();
    let root = c.fs.root_ino();
    c.mem.put(BUCKET, "a/file", b"content".to_vec());
    // A multipart-sized ETag is not needed: the copy's ETag is recorded.
    c.chmod("a/file", 0o751).await;
    c.utime("a/file", at(999_999_999)).await;
    let a = c.dir("a").await;
    c.fs.symlink(a, OsStr::new("link"), Path::new("file"), &USER)
        .await
        .unwrap();
    c.fs.mkdir(root, OsStr::new("b")).await.unwrap();
    let b = c.dir("b").await;
    c.fs.rename(a, OsStr::new("file"), b, OsStr::new("moved"), false)
        .await
        .unwrap();
    c.fs.rename(a, OsStr::new("link"), b, OsStr::new("link2"), false)
        .await
        .unwrap();
    // A plain file moved keeps its time too (rename(2) does not touch it).
    c.mem.put(BUCKET, "a/plain", b"p".to_vec());
    let before = c.attr("a/plain").await.mtime;
    c.fs.rename(a, OsStr::new("plain"), b, OsStr::new("plain"), false)
        .await
        .unwrap();
    let r = c.remount().await;
    let m = r.attr("b/moved").await;
    assert_eq!((m.perm, m.mtime), (0o751, at(999_999_999)));
    assert_eq!(r.attr("b/link2").await.kind, Kind::Symlink);
    assert_eq!(r.readlink("b/link2").await, "file");
    let p = r.attr("b/plain").await.mtime;
    let diff = p.duration_since(before).unwrap_or_else(|e| e.duration());
    assert!(diff < Duration::from_secs(1), "{before:?} {p:?}");
    // The old directory's entries went with the names.
    assert!(!r.mem.objects(BUCKET).contains_key("a/.bladefs-meta"));
    // A directory moved takes its metadata along.
    let b = r.dir("b").await;
    let root = r.fs.root_ino();
    r.chmod("b", 0o711).await;
    r.fs.rename(root, OsStr::new("b"), root, OsStr::new("c"), false)
        .await
        .unwrap();
    let r2 = r.remount().await;
    let _ = b;
    assert_eq!(r2.attr("c").await.perm, 0o711);
    assert_eq!(r2.attr("c/moved").await.perm, 0o751);
    assert_eq!(r2.readlink("c/link2").await, "file");
    // unlink drops the entry; rmdir takes the metadata object along.
    let c_ino = r2.dir("c").await;
    for name in ["moved", "link2", "plain"] {
        r2.fs.unlink(c_ino, OsStr::new(name)).await.unwrap();
    }
    r2.fs.flush_metadata().await.unwrap();
    r2.fs
        .rmdir(r2.fs.root_ino(), OsStr::new("c"))
        .await
        .expect("a directory holding only its metadata is empty");
    r2.fs.flush_metadata().await.unwrap();
    let keys: Vec<String> = r2.mem.objects(BUCKET).keys().cloned().collect();
    assert!(keys.iter().all(|k| !k.starts_with("c/")), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_sockets_and_devices_are_entries() {
    let c = fresh();
    let root = c.fs.root_ino();
    for (name, kind) in [
        ("fifo", Kind::Fifo),
        ("sock", Kind::Socket),
        ("tty", Kind::CharDev),
    ] {
        let a =
            c.fs.mknod(root, OsStr::new(name), kind, 0x0501, &USER)
                .await
                .unwrap();
        assert_eq!(a.kind, kind);
    }
    let r = c.remount().await;
    assert_eq!(r.attr("fifo").await.kind, Kind::Fifo);
    assert_eq!(r.attr("sock").await.kind, Kind::Socket);
    let tty = r.attr("tty").await;
    assert_eq!((tty.kind, tty.rdev), (Kind::CharDev, 0x0501));
    assert_eq!(r.attr("fifo").await.rdev, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_metadata_object_means_defaults_and_is_replaced() {
    let c = fresh();
    c.mem.put(BUCKET, "f", b"x".to_vec());
    c.mem.put(BUCKET, META_NAME, b"{ not json".to_vec());
    assert_eq!(c.attr("f").await.perm, 0o644);
    assert_eq!(c.list("", true).await.len(), 1);
    c.chmod("f", 0o640).await;
    let r = c.remount().await;
    assert_eq!(r.attr("f").await.perm, 0o640);
    assert_eq!(r.meta_table("")["f"].mode, Some(0o640));
}

/// Found with rsync on Ceph RGW: a read of the metadata object that began
/// before this mount wrote it, and ended after, put the older content back
/// in memory, and the next write stored it (times set by rsync lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_overtaken_by_a_write_does_not_bring_back_older_metadata() {
    let mem = Arc::new(MemoryClient::with_bucket(BUCKET));
    let faults = Arc::new(FaultClient::new(mem.clone()));
    let c = mount_through(&mem, faults.clone(), Duration::from_secs(60));
    let root = c.fs.root_ino();
    let link =
        c.fs.symlink(root, OsStr::new("l"), Path::new("t"), &USER)
            .await
            .unwrap();
    c.fs.fsyncdir(root).await.unwrap();
    // Another mount adds an entry: the next listing shows another ETag,
    // and the object is read again, slowly.
    let mut theirs = c.meta_table("");
    theirs.insert(
        "other".into(),
        bladefs::fs::meta::MetaEntry {
            mode: Some(0o600),
            ..Default::default()
        },
    );
    mem.put(BUCKET, META_NAME, bladefs::fs::meta::render_v1(&theirs));
    let gate = Gate::new();
    faults.on_call(Op::GetObject, 1, Fault::HoldAnswer(gate.clone()));
    let fs = c.fs.clone();
    let slow = tokio::spawn(async move {
        let fh = fs.opendir(root).await.unwrap();
        let r = fs.readdir(root, fh, 0, false, |_| false).await;
        fs.releasedir(fh);
        r
    });
    gate.arrived().await;
    // Meanwhile: a time set and written.
    c.fs.setattr(
        link.ino,
        None,
        SetAttr {
            mtime: Some(at(1_000)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.fs.fsyncdir(root).await.unwrap();
    gate.open();
    slow.await.unwrap().unwrap();
    // Another change, written from what is in memory.
    c.fs.setattr(
        link.ino,
        None,
        SetAttr {
            gid: Some(77),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = c.remount().await;
    let l = r.attr("l").await;
    assert_eq!((l.kind, l.gid, l.mtime), (Kind::Symlink, 77, at(1_000)));
    assert_eq!(r.meta_table("")["other"].mode, Some(0o600), "theirs kept");
}

/// The cost bound: `ls -l` of 10 000 objects stays at the listing's
/// pages plus one GET of the directory's metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_l_of_ten_thousand_objects_is_its_pages_and_one_get() {
    let c = fresh();
    for i in 0..10_000 {
        c.mem.put(BUCKET, &format!("big/f{i:05}"), vec![b'x'; 3]);
    }
    c.chmod("big/f04321", 0o700).await;
    let r = c.remount().await;
    r.dir("big").await;
    let before = r.mem.stats().snapshot();
    let listed = r.list("big", true).await;
    let after = r.mem.stats().snapshot();
    assert_eq!(listed.len(), 10_000);
    assert_eq!(listed[4321].2, Some(0o700));
    let delta = |op| after.get(op).requests - before.get(op).requests;
    assert!(
        delta(Op::ListObjectsV2) <= 11,
        "{}",
        delta(Op::ListObjectsV2)
    );
    assert_eq!(delta(Op::GetObject), 1, "the metadata, once");
    assert_eq!(delta(Op::HeadObject), 0, "nothing per entry");
}

/// Access, modification and change times as POSIX has them (pjdfstest's
/// utimensat and ctime tests, found on Ceph RGW): utimes sets atime and
/// mtime apart and both persist; chmod moves ctime (persisted with the
/// entry) but not mtime; adding or removing a name moves its directory's
/// mtime and ctime, and a time set on the directory wins and persists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atime_mtime_and_ctime_follow_posix() {
    let c = fresh();
    let root = c.fs.root_ino();
    c.fs.mkdir_as(root, OsStr::new("d"), &USER).await.unwrap();
    c.write("d", "f", b"data", &USER).await;
    let f = c.attr("d/f").await;
    let set = SetAttr {
        atime: Some(at(500)),
        mtime: Some(at(1_000)),
        ..Default::default()
    };
    let before_utimes = SystemTime::now();
    let a = c.fs.setattr(f.ino, None, set).await.unwrap();
    assert_eq!((a.atime, a.mtime), (at(500), at(1_000)));
    assert!(a.ctime >= before_utimes, "utimes is a change of status");
    let before_chmod = SystemTime::now();
    let a = c.chmod("d/f", 0o600).await;
    assert_eq!(
        (a.atime, a.mtime),
        (at(500), at(1_000)),
        "chmod leaves times"
    );
    assert!(a.ctime >= before_chmod);

    // The directory: a new name makes its times now; a set time wins.
    let d = c.utime("d", at(2_000)).await;
    assert_eq!(d.mtime, at(2_000));
    let before_create = SystemTime::now();
    c.write("d", "g", b"", &USER).await;
    let d = c.attr("d").await;
    assert!(
        d.mtime >= before_create && d.ctime >= before_create,
        "{d:?}"
    );
    let before_unlink = SystemTime::now();
    c.fs.unlink(d.ino, OsStr::new("g")).await.unwrap();
    let d = c.fs.getattr(d.ino).await.unwrap();
    assert!(d.mtime >= before_unlink, "{d:?}");
    c.utime("d", at(3_000)).await;
    assert_eq!(c.attr("d").await.mtime, at(3_000));

    let r = c.remount().await;
    let f = r.attr("d/f").await;
    assert_eq!((f.atime, f.mtime, f.perm), (at(500), at(1_000), 0o600));
    assert!(f.ctime >= before_chmod, "the change time persists: {f:?}");
    assert_eq!(r.attr("d").await.mtime, at(3_000));
}

/// A set-group-ID directory gives new names its group, and new
/// directories the bit as well (as Linux file systems do; the kernel
/// leaves it to the file system under FUSE). Nothing is asked of the store
/// for it: the directory was looked up to make a name in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setgid_directory_passes_its_group_on() {
    let c = fresh();
    let root = c.fs.root_ino();
    c.fs.mkdir_as(root, OsStr::new("shared"), &USER)
        .await
        .unwrap();
    let shared = c.dir("shared").await;
    let set = SetAttr {
        perm: Some(0o2775),
        gid: Some(500),
        ..Default::default()
    };
    c.fs.setattr(shared, None, set).await.unwrap();
    let gets = c.requests(Op::GetObject);
    c.write("shared", "f", b"x", &USER).await;
    let sub =
        c.fs.mkdir_as(shared, OsStr::new("sub"), &USER)
            .await
            .unwrap();
    let link =
        c.fs.symlink(shared, OsStr::new("l"), Path::new("f"), &USER)
            .await
            .unwrap();
    assert_eq!(c.requests(Op::GetObject), gets, "nothing read for it");
    assert_eq!(
        (sub.gid, sub.perm),
        (500, 0o2644),
        "the mode asked, and the bit"
    );
    assert_eq!(link.gid, 500);
    let r = c.remount().await;
    assert_eq!(r.attr("shared/f").await.gid, 500);
    assert_eq!(
        r.attr("shared/f").await.perm,
        0o644,
        "files do not take the bit"
    );
    let sub = r.attr("shared/sub").await;
    assert_eq!((sub.gid, sub.perm & 0o2000), (500, 0o2000));
    // A directory without the bit: the maker's group.
    c.write("", "plain", b"", &USER).await;
    assert_eq!(c.attr("plain").await.gid, 1000);
}
