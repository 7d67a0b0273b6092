//! The filesystem core driven directly, on the in-memory store, with faults
//! and held calls where a test needs to stand in the middle of something:
//! one test per finding of the correctness issue that this layer can show
//! (the random sequences are in core_model.rs).

use std::ffi::OsStr;
use std::sync::Arc;

use bladefs::fs::cache::Ttl;
use bladefs::fs::data_cache::DataCache;
use bladefs::fs::{FsConfig, SetAttr};
use bladefs::s3::faults::{Fault, FaultClient, Gate};
use bladefs::s3::mem::MemoryClient;
use bladefs::s3::{Op, S3Error, S3ErrorCode};

const MIB: usize = 1024 * 1024;
mod core_support;
use core_support::{BUCKET, Mount};

struct Core {
    mem: Arc<MemoryClient>,
    faults: Arc<FaultClient>,
    mount: Mount,
}

impl std::ops::Deref for Core {
    type Target = Mount;
    fn deref(&self) -> &Mount {
        &self.mount
    }
}

fn core_with(edit: impl FnOnce(&mut FsConfig)) -> Core {
    core_on(Arc::new(MemoryClient::with_bucket(BUCKET)), edit)
}

/// A mount of the store `mem` (a remount, when another used it before).
fn core_on(mem: Arc<MemoryClient>, edit: impl FnOnce(&mut FsConfig)) -> Core {
    core_cached(mem, None, edit)
}

/// [`core_on`] with a local data cache.
fn core_cached(
    mem: Arc<MemoryClient>,
    cache: Option<Arc<DataCache>>,
    edit: impl FnOnce(&mut FsConfig),
) -> Core {
    let faults = Arc::new(FaultClient::new(mem.clone()));
    let mount = core_support::mount_cached(faults.clone(), cache, |cfg| {
        cfg.write.part_size = 5 * MIB as u64;
        edit(cfg);
    });
    Core { mem, faults, mount }
}

fn core() -> Core {
    core_with(|_| {})
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed ^ (i >> 10) as u8)
        .collect()
}

impl Core {
    async fn ino(&self, name: &str) -> u64 {
        self.fs
            .lookup(self.fs.root_ino(), OsStr::new(name))
            .await
            .expect("lookup")
            .ino
    }

    fn requests(&self, op: Op) -> u64 {
        self.mem.stats().snapshot().get(op).requests
    }
}

fn internal_error(op: Op) -> S3Error {
    S3Error::service(op.name(), 500, S3ErrorCode::InternalError, "injected", None)
}

/// Finding 2 and 4: a file unlinked while open stays readable through its
/// handle, for reading and for writing, and has no link left; nothing is
/// written back at its close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlinked_open_file_stays_readable_and_has_no_link() {
    let c = core();
    let content = data(3 * MIB, 1);
    for write in [false, true] {
        let name = format!("f{write}");
        c.mem.put(BUCKET, &name, content.clone());
        let ino = c.ino(&name).await;
        let (fh, _) = c.fs.open(ino, write, false).await.expect("open");
        // Some of it read before (read-ahead state), the rest after.
        let head = c.fs.read(fh, 0, 4096).await.expect("read");
        assert_eq!(&head[..], &content[..4096]);
        c.fs.unlink(c.fs.root_ino(), OsStr::new(&name))
            .await
            .expect("unlink");
        assert!(
            !c.mem.objects(BUCKET).contains_key(&name),
            "the object is gone"
        );
        let all = c.fs.read(fh, 0, (4 * MIB) as u32).await.expect("read");
        assert!(
            all[..] == content[..],
            "write={write}: the content lives on"
        );
        assert_eq!(c.fs.getattr(ino).await.expect("fstat").nlink, 0);
        if write {
            c.fs.write(fh, 10, b"changed".to_vec())
                .await
                .expect("write");
            let back = c.fs.read(fh, 10, 7).await.expect("read");
            assert_eq!(&back[..], b"changed");
        }
        c.fs.flush(fh).await.expect("close");
        c.fs.release(fh).await;
        assert!(
            !c.mem.objects(BUCKET).contains_key(&name),
            "write={write}: an unlinked file is not written back"
        );
        assert!(
            c.fs.lookup(c.fs.root_ino(), OsStr::new(&name))
                .await
                .is_err(),
            "the name is gone"
        );
    }
}

/// Finding 3: a read overlapping a truncation that happens while its fetch
/// is in flight returns short (or the bytes from before), never an error,
/// and never bytes from past the new end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_a_truncate_is_short_not_an_error() {
    let c = core();
    let content = data(4 * MIB, 2);
    c.mem.put(BUCKET, "f", content.clone());
    let ino = c.ino("f").await;
    let (fh, _) = c.fs.open(ino, true, false).await.expect("open");
    let gate = Gate::new();
    c.faults
        .on_call(Op::GetObject, 1, Fault::Hold(gate.clone()));
    let fs = c.fs.clone();
    let read = tokio::spawn(async move { fs.read(fh, 0, (4 * MIB) as u32).await });
    gate.arrived().await;
    c.fs.setattr(
        ino,
        Some(fh),
        SetAttr {
            size: Some(1000),
            ..Default::default()
        },
    )
    .await
    .expect("ftruncate");
    gate.open();
    let got = read.await.expect("task").expect("a short read, not EIO");
    assert!(
        got[..] == content[..1000] || got[..] == content[..],
        "got {} bytes",
        got.len()
    );
    // Finding 1: growing the file again shows zeros, not the old bytes.
    c.fs.write(fh, 3 * MIB as u64, vec![9])
        .await
        .expect("write");
    c.fs.flush(fh).await.expect("close");
    c.fs.release(fh).await;
    let stored = &c.mem.objects(BUCKET)["f"];
    assert_eq!(stored.len(), 3 * MIB + 1);
    assert_eq!(&stored[..1000], &content[..1000]);
    assert!(
        stored[1000..3 * MIB].iter().all(|&b| b == 0),
        "the hole holds bytes from before the truncation"
    );
}

/// Finding 7: two opens for writing racing on one inode share one buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_opens_share_one_buffer() {
    // A TTL of 0 makes each open ask the store, so both can be held there.
    let c = core_with(|cfg| cfg.metadata_ttl = Ttl(Some(std::time::Duration::ZERO)));
    c.mem.put(BUCKET, "f", data(100, 3));
    let ino = c.ino("f").await;
    let gate = Gate::new();
    c.faults.always(Op::HeadObject, Fault::Hold(gate.clone()));
    let opens: Vec<_> = (0..2)
        .map(|_| {
            let fs = c.fs.clone();
            tokio::spawn(async move { fs.open(ino, true, false).await })
        })
        .collect();
    gate.arrived().await;
    gate.arrived().await;
    gate.open();
    let mut fhs = Vec::new();
    for o in opens {
        fhs.push(o.await.expect("task").expect("open").0);
    }
    c.faults.clear();
    c.fs.write(fhs[0], 0, b"from the first".to_vec())
        .await
        .expect("write");
    let seen = c.fs.read(fhs[1], 0, 14).await.expect("read");
    assert_eq!(&seen[..], b"from the first", "one buffer for both handles");
    for fh in fhs {
        c.fs.flush(fh).await.expect("close");
        c.fs.release(fh).await;
    }
    assert_eq!(&c.mem.objects(BUCKET)["f"][..14], b"from the first");
}

/// Finding 6: the last part of a stream goes up while an earlier part is
/// still in flight (a commit is not a sequence of waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_part_goes_up_beside_earlier_ones() {
    let c = core();
    let ino = {
        c.mem.put(BUCKET, "f", b"old".to_vec());
        c.ino("f").await
    };
    let (fh, _) = c.fs.open(ino, true, true).await.expect("open");
    let first = Gate::new();
    let last = Gate::new();
    c.faults
        .on_call(Op::UploadPart, 1, Fault::Hold(first.clone()));
    c.faults
        .on_call(Op::UploadPart, 2, Fault::Hold(last.clone()));
    // 5 MiB + 1 streams part 1, leaving 1 byte for the commit.
    let content = data(5 * MIB + 1, 4);
    c.fs.write(fh, 0, content.clone()).await.expect("write");
    first.arrived().await;
    let fs = c.fs.clone();
    let close = tokio::spawn(async move { fs.flush(fh).await });
    // The last part reaches the store while part 1 is still held.
    last.arrived().await;
    last.open();
    first.open();
    close.await.expect("task").expect("close");
    c.fs.release(fh).await;
    assert!(c.mem.objects(BUCKET)["f"][..] == content[..]);
}

/// Finding 6: a part that fails for good ends the commit: no
/// CompleteMultipartUpload is sent, the upload is aborted, the old object
/// stays, and close reports EIO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_part_fails_the_close_and_leaves_nothing() {
    let c = core();
    c.mem.put(BUCKET, "f", b"old".to_vec());
    let ino = c.ino("f").await;
    let (fh, _) = c.fs.open(ino, true, true).await.expect("open");
    c.faults.on_call(
        Op::UploadPart,
        1,
        Fault::Fail(internal_error(Op::UploadPart)),
    );
    c.fs.write(fh, 0, data(12 * MIB, 4)).await.expect("write");
    let err =
        c.fs.flush(fh)
            .await
            .expect_err("the failed part fails the close");
    assert_eq!(err.errno(), libc::EIO);
    assert_eq!(c.requests(Op::CompleteMultipartUpload), 0);
    c.fs.release(fh).await;
    c.fs.settle().await;
    assert_eq!(c.mem.open_uploads(BUCKET), 0, "the upload was aborted");
    assert_eq!(&c.mem.objects(BUCKET)["f"][..], b"old");
}

/// Finding 5's other half: a request the store refuses as malformed is EIO
/// (the client's fault), not EINVAL (the caller's).
#[tokio::test]
async fn a_refused_request_is_eio() {
    let c = core();
    c.faults.always(
        Op::PutObject,
        Fault::Fail(S3Error::service(
            "PutObject",
            411,
            S3ErrorCode::MissingContentLength,
            "injected",
            None,
        )),
    );
    let err =
        c.fs.mkdir(c.fs.root_ino(), OsStr::new("d"))
            .await
            .expect_err("refused");
    assert_eq!(err.errno(), libc::EIO);
}

/// A rename of an open file keeps its readers: they read the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_open_file_keeps_its_readers() {
    let c = core();
    let content = data(2 * MIB, 5);
    c.mem.put(BUCKET, "a", content.clone());
    let ino = c.ino("a").await;
    let (fh, _) = c.fs.open(ino, false, false).await.expect("open");
    let head = c.fs.read(fh, 0, 1000).await.expect("read");
    assert_eq!(&head[..], &content[..1000]);
    let _ = c.ino("a").await;
    c.fs.rename(
        c.fs.root_ino(),
        OsStr::new("a"),
        c.fs.root_ino(),
        OsStr::new("b"),
        false,
    )
    .await
    .expect("rename");
    let rest = c.fs.read(fh, 1000, (2 * MIB) as u32).await.expect("read");
    assert!(rest[..] == content[1000..]);
    c.fs.release(fh).await;
}

/// The memory bound holds for a file many times larger than the budget:
/// streamed, edited in the middle (fills and planned parts), and read back
/// with read-ahead; every part fits the budget, and the most held at once
/// never passes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_holds_for_a_file_larger_than_it() {
    let read_ahead = 2 * MIB as u64;
    let transfer = 6 * MIB as u64;
    let c = core_with(|cfg| {
        cfg.prefetch.max_memory = read_ahead;
        cfg.write.max_memory = transfer;
        cfg.write.part_size = 8 * MIB as u64;
    });
    let content = data(40 * MIB, 6);
    let (_, fh) =
        c.fs.create(c.fs.root_ino(), OsStr::new("big"))
            .await
            .expect("create");
    for (i, chunk) in content.chunks(MIB).enumerate() {
        c.fs.write(fh, (i * MIB) as u64, chunk.to_vec())
            .await
            .expect("write");
    }
    c.fs.flush(fh).await.expect("close");
    c.fs.release(fh).await;
    assert!(c.mem.objects(BUCKET)["big"][..] == content[..]);
    // An edit in the middle: fills from the object, copies, one part sent.
    let ino = c.ino("big").await;
    let (fh, _) = c.fs.open(ino, true, false).await.expect("open");
    c.fs.write(fh, 20 * MIB as u64, b"edit".to_vec())
        .await
        .expect("write");
    c.fs.flush(fh).await.expect("close");
    c.fs.release(fh).await;
    let mut edited = content.clone();
    edited[20 * MIB..20 * MIB + 4].copy_from_slice(b"edit");
    assert!(c.mem.objects(BUCKET)["big"][..] == edited[..]);
    let (fh, _) = c.fs.open(ino, false, false).await.expect("open");
    for i in 0..40 {
        let got =
            c.fs.read(fh, (i * MIB) as u64, MIB as u32)
                .await
                .expect("read");
        assert!(got[..] == edited[i * MIB..(i + 1) * MIB]);
    }
    c.fs.release(fh).await;
    let peak = c.fs.memory().peak();
    assert!(peak > 0);
    assert!(
        peak <= read_ahead + transfer,
        "{peak} bytes held at once, budget {}",
        read_ahead + transfer
    );
    let sent = c.mem.stats().snapshot().get(Op::UploadPart);
    assert!(
        sent.bytes_sent <= sent.requests * transfer,
        "a part larger than the budget was sent"
    );
}

/// copy_file_range of a whole object into an empty new file (what `cp`
/// does, and how a version is restored) is one PUT Object Copy: no GET,
/// no upload at close, and the copy is what the file then reads. Anything
/// else is refused with NotSupported, so the kernel copies the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_copy_into_an_empty_file_is_a_server_side_copy() {
    let c = core();
    let content = data(3 * MIB, 7);
    c.mem.put(BUCKET, "src", content.clone());
    let src = c.ino("src").await;
    let (fh_in, _) = c.fs.open(src, false, false).await.expect("open src");
    let (_, fh_out) =
        c.fs.create(c.fs.root_ino(), OsStr::new("dst"))
            .await
            .expect("create");
    let len = u64::MAX >> 1;
    // (Looking names up read the directory's metadata: that GET is not
    // one of the copy's.)
    let gets = c.requests(Op::GetObject);
    // Not from the start, or not the whole object: the kernel's job.
    for (off_in, off_out, n) in [(1, 0, len), (0, 1, len), (0, 0, 100)] {
        let err =
            c.fs.copy_file_range(fh_in, off_in, fh_out, off_out, n)
                .await
                .expect_err("refused");
        assert_eq!(err.errno(), libc::EOPNOTSUPP, "{off_in} {off_out} {n}");
    }
    let copied =
        c.fs.copy_file_range(fh_in, 0, fh_out, 0, len)
            .await
            .expect("copy");
    assert_eq!(copied as usize, content.len());
    assert_eq!(c.requests(Op::CopyObject), 1);
    assert_eq!(
        c.requests(Op::GetObject),
        gets,
        "no byte through the client"
    );
    assert!(c.mem.objects(BUCKET)["dst"][..] == content[..]);
    // The file reads as the copy, and its close uploads nothing.
    let back = c.fs.read(fh_out, 1000, 5000).await.expect("read");
    assert_eq!(&back[..], &content[1000..6000]);
    let puts = c.requests(Op::PutObject);
    c.fs.flush(fh_out).await.expect("close");
    c.fs.release(fh_out).await;
    assert_eq!(c.requests(Op::PutObject), puts);
    assert_eq!(c.requests(Op::CreateMultipartUpload), 0);
    // Into a file that holds something: refused, nothing copied.
    let (_, fh_out) =
        c.fs.create(c.fs.root_ino(), OsStr::new("full"))
            .await
            .expect("create");
    c.fs.write(fh_out, 0, b"x".to_vec()).await.expect("write");
    let err =
        c.fs.copy_file_range(fh_in, 0, fh_out, 0, len)
            .await
            .expect_err("refused");
    assert_eq!(err.errno(), libc::EOPNOTSUPP);
    assert_eq!(c.requests(Op::CopyObject), 1);
    c.fs.flush(fh_out).await.expect("close");
    c.fs.release(fh_out).await;
    c.fs.release(fh_in).await;
    assert_eq!(&c.mem.objects(BUCKET)["full"][..], b"x");
}

/// A directory made through the mount is not "known empty" to the point
/// of hiding what another client puts in it (s3fs's test_read_external_object):
/// a name it lacks is checked with one listing of the directory, which then
/// answers the following lookups, so filling it (cp -r) costs one LIST in
/// all, not a request per name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_directory_shows_what_another_client_put_in_it() {
    let c = core_with(|cfg| cfg.metadata_ttl = Ttl(Some(std::time::Duration::from_secs(60))));
    let root = c.fs.root_ino();
    let d = c.fs.mkdir(root, OsStr::new("d")).await.expect("mkdir").ino;
    c.mem.put(BUCKET, "d/theirs.txt", b"external".to_vec());
    let attr =
        c.fs.lookup(d, OsStr::new("theirs.txt"))
            .await
            .expect("visible at once");
    let (fh, _) = c.fs.open(attr.ino, false, false).await.expect("open");
    assert_eq!(&c.fs.read(fh, 0, 100).await.expect("read")[..], b"external");
    c.fs.release(fh).await;

    let e = c.fs.mkdir(root, OsStr::new("e")).await.expect("mkdir").ino;
    let lists = c.requests(Op::ListObjectsV2);
    let heads = c.requests(Op::HeadObject);
    for i in 0..50 {
        let name = format!("f{i}");
        assert!(c.fs.lookup(e, OsStr::new(&name)).await.is_err(), "{name}");
        let (_, fh) = c.fs.create(e, OsStr::new(&name)).await.expect("create");
        c.fs.write(fh, 0, name.clone().into_bytes())
            .await
            .expect("write");
        c.fs.flush(fh).await.expect("close");
        c.fs.release(fh).await;
    }
    assert_eq!(
        c.requests(Op::ListObjectsV2) - lists,
        1,
        "one listing for 50 names"
    );
    assert_eq!(c.requests(Op::HeadObject), heads, "no HEAD per name");
    assert_eq!(
        c.mem
            .objects(BUCKET)
            .keys()
            .filter(|k| k.starts_with("e/"))
            .count(),
        51
    );
}

/// Filling a small directory after its listing went stale (cp -r that
/// takes longer than the TTL) lists it again, one request, instead of a
/// HEAD and a LIST per name looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_small_listing_is_listed_again_not_probed_name_by_name() {
    // A TTL that runs out between nearly every two steps.
    let c = core_with(|cfg| cfg.metadata_ttl = Ttl(Some(std::time::Duration::from_micros(1))));
    let root = c.fs.root_ino();
    let d = c.fs.mkdir(root, OsStr::new("d")).await.expect("mkdir").ino;
    let heads = c.requests(Op::HeadObject);
    for i in 0..50 {
        let name = format!("f{i}");
        assert!(c.fs.lookup(d, OsStr::new(&name)).await.is_err(), "{name}");
        let (_, fh) = c.fs.create(d, OsStr::new(&name)).await.expect("create");
        c.fs.flush(fh).await.expect("close");
        c.fs.release(fh).await;
    }
    assert_eq!(c.requests(Op::HeadObject), heads, "no name asked alone");
    // Each stale lookup: the directory's listing, and beside it the list
    // of its metadata segments (the TTL ran out for both).
    let lists = c.requests(Op::ListObjectsV2);
    assert!(lists <= 2 * 51, "{lists}");
    assert_eq!(
        c.mem
            .objects(BUCKET)
            .keys()
            .filter(|k| k.starts_with("d/f"))
            .count(),
        50
    );
}

/// Names up to S3's key limit (pjdfstest's NAME_MAX tests, found on Ceph
/// RGW): NAME_MAX is 1023, so a name that long can be a file or a
/// directory at the top of a bucket; an existing file with a 1024-byte key
/// is shown, and a missing name that long is ENAMETOOLONG, not ENOENT. A
/// directory whose metadata object would pass the key limit is removed
/// without touching that key (the store refuses it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_up_to_the_key_limit() {
    let c = core();
    let root = c.fs.root_ino();
    let longest = "f".repeat(1024);
    c.mem.put(BUCKET, &longest, b"x".to_vec());
    let attr =
        c.fs.lookup(root, OsStr::new(&longest))
            .await
            .expect("1024-byte file");
    assert_eq!(attr.size, 1);
    let missing = "m".repeat(1024);
    let e = c.fs.lookup(root, OsStr::new(&missing)).await.unwrap_err();
    assert_eq!(e.errno(), libc::ENAMETOOLONG);

    let dir = "d".repeat(1023);
    c.fs.mkdir(root, OsStr::new(&dir))
        .await
        .expect("mkdir of NAME_MAX bytes");
    let file = "g".repeat(1023);
    let (_, fh) =
        c.fs.create(root, OsStr::new(&file))
            .await
            .expect("create of NAME_MAX bytes");
    c.fs.flush(fh).await.expect("close");
    c.fs.release(fh).await;
    assert!(c.mem.objects(BUCKET).contains_key(&file));
    c.fs.rmdir(root, OsStr::new(&dir)).await.expect("rmdir");
    assert!(!c.mem.objects(BUCKET).contains_key(&format!("{dir}/")));
    // Its metadata could not exist: nothing in it may be a symlink.
    let near = "n".repeat(1015);
    let d =
        c.fs.mkdir(root, OsStr::new(&near))
            .await
            .expect("mkdir")
            .ino;
    let e =
        c.fs.symlink(
            d,
            OsStr::new("l"),
            std::path::Path::new("t"),
            &c.fs.creator(None),
        )
        .await
        .unwrap_err();
    assert_eq!(e.errno(), libc::ENAMETOOLONG);
    // The 1024-byte file, the 1023-byte one and the new directory's marker.
    let mut left: Vec<_> = c.mem.objects(BUCKET).into_keys().map(|k| k.len()).collect();
    left.sort();
    assert_eq!(
        left,
        [1016, 1023, 1024],
        "no object left by the refused link"
    );
}

/// `n` files of `size` bytes in directory `dir`, as another client put
/// them; their names in listing order.
fn put_files(c: &Core, dir: &str, n: usize, size: usize) -> Vec<String> {
    let mut names: Vec<String> = (0..n).map(|i| format!("f{i:03}")).collect();
    names.sort();
    for (i, name) in names.iter().enumerate() {
        c.mem
            .put(BUCKET, &format!("{dir}/{name}"), data(size, i as u8));
    }
    names
}

impl Core {
    /// Lists directory `ino` to its end, as `ls` or `cp -r` does.
    async fn list(&self, ino: u64) -> Vec<String> {
        let (fh, names) = self.list_open(ino).await;
        self.fs.releasedir(fh);
        names
    }

    /// Lists directory `ino` to its end and keeps it open, as `tar c` and
    /// fts-based tools do while they open its files.
    async fn list_open(&self, ino: u64) -> (u64, Vec<String>) {
        let fh = self.fs.opendir(ino).await.expect("opendir");
        let mut names = Vec::new();
        self.fs
            .readdir(ino, fh, 0, false, |e| {
                names.push(e.name.to_string());
                false
            })
            .await
            .expect("readdir");
        (fh, names)
    }

    /// Opens `name` in `dir` read-only, reads it whole, closes it.
    async fn cat(&self, dir: u64, name: &str) -> Vec<u8> {
        let ino = self
            .fs
            .lookup(dir, OsStr::new(name))
            .await
            .expect("lookup")
            .ino;
        let (fh, _) = self.fs.open(ino, false, false).await.expect("open");
        let mut out = Vec::new();
        loop {
            let got = self
                .fs
                .read(fh, out.len() as u64, 128 * 1024)
                .await
                .expect("read");
            if got.is_empty() {
                break;
            }
            out.extend_from_slice(&got);
        }
        self.fs.release(fh).await;
        out
    }
}

/// Read-ahead across files (issue 14): a directory listed, then its files
/// opened in listing order (`cp -r`, `tar c`, `diff -r`), has the next 16
/// files fetched ahead from the second open on, and each file costs exactly
/// one GET: the open takes the bytes fetched ahead instead of asking again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_in_listing_order_fetches_the_next_files_ahead() {
    let c = core();
    let names = put_files(&c, "w", 40, 4096);
    let w = c.ino("w").await;
    assert_eq!(&c.list(w).await[2..], &names[..]);
    assert_eq!(c.mem.gets_under("w/f"), 0, "listing fetches nothing");
    for (i, name) in names.iter().enumerate() {
        assert_eq!(c.cat(w, name).await, data(4096, i as u8), "{name}");
        match i {
            0 => assert_eq!(c.fs.walk_ahead(), 0, "one open is no walk yet"),
            1..=23 => assert_eq!(c.fs.walk_ahead(), 16, "after {name}"),
            _ => assert_eq!(c.fs.walk_ahead(), 39 - i, "after {name}"),
        }
    }
    assert_eq!(
        c.mem.gets_under("w/f"),
        40,
        "one GET per file: none fetched twice"
    );
}

/// `tar c`, `grep -r` and other fts-based walkers keep the directory open
/// while they open its files: the walk starts from the end of the listing,
/// not from its close (these tools got no read-ahead before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_while_the_directory_is_still_open_reads_ahead_too() {
    let c = core();
    let names = put_files(&c, "w", 20, 100);
    let w = c.ino("w").await;
    let (dir, _) = c.list_open(w).await;
    for (i, name) in names.iter().enumerate() {
        assert_eq!(c.cat(w, name).await, data(100, i as u8), "{name}");
        if i == 1 {
            assert_eq!(c.fs.walk_ahead(), 16);
        }
    }
    c.fs.releasedir(dir);
    assert_eq!(c.mem.gets_under("w/f"), 20);
}

/// Without the pattern nothing is fetched ahead: files opened against the
/// listing's order (or at random), a listing never followed by opens, a
/// directory never listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_out_of_listing_order_fetch_nothing_ahead() {
    let c = core();
    let names = put_files(&c, "w", 30, 4096);
    let w = c.ino("w").await;
    c.list(w).await;
    for (i, name) in names.iter().enumerate().rev() {
        assert_eq!(c.cat(w, name).await, data(4096, i as u8));
        assert_eq!(c.fs.walk_ahead(), 0, "after {name}");
    }
    assert_eq!(c.mem.gets_under("w/f"), 30);
    // Unlisted: opened in order, but no listing to walk.
    let others = put_files(&c, "u", 5, 10);
    let u = c.ino("u").await;
    for name in &others {
        c.cat(u, name).await;
        assert_eq!(c.fs.walk_ahead(), 0);
    }
    assert_eq!(c.mem.gets_under("u/f"), 5);
}

/// Files fetched ahead hold read-ahead memory, taken only while half the
/// share stays free for readers: a 4 MiB share holds at most two 1 MiB
/// files ahead, and the walk reads every file right (with the whole share
/// taken, a reader waited for ever for memory held by files ahead of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_fetched_ahead_leave_readers_memory() {
    let c = core_with(|cfg| cfg.prefetch.max_memory = 4 * MIB as u64);
    let names = put_files(&c, "w", 12, MIB);
    let w = c.ino("w").await;
    c.list(w).await;
    for (i, name) in names.iter().enumerate() {
        let read = tokio::time::timeout(std::time::Duration::from_secs(60), c.cat(w, name));
        assert_eq!(
            read.await.expect("no reader waits for ever"),
            data(MIB, i as u8),
            "{name}"
        );
        let ahead = c.fs.walk_ahead();
        assert!(ahead <= 2, "{ahead} ahead after {name}");
        if (1..9).contains(&i) {
            assert!(ahead > 0, "nothing ahead after {name}");
        }
    }
}

/// A file another client replaced after it was fetched ahead is read as it
/// is now once the mount sees the new ETag: bytes fetched ahead are used
/// only under the ETag the open sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_after_it_was_fetched_ahead_is_read_as_it_is_now() {
    let c = core_with(|cfg| cfg.metadata_ttl = Ttl(Some(std::time::Duration::ZERO)));
    let names = put_files(&c, "w", 10, 4096);
    let w = c.ino("w").await;
    c.list(w).await;
    c.cat(w, &names[0]).await;
    c.cat(w, &names[1]).await;
    assert_eq!(c.fs.walk_ahead(), 8);
    c.mem
        .put(BUCKET, &format!("w/{}", names[2]), b"replaced".to_vec());
    assert_eq!(c.cat(w, &names[2]).await, b"replaced");
    assert_eq!(c.cat(w, &names[3]).await, data(4096, 3));
}

/// A fetch ahead that fails (the store answers 500 to it) is no error: the
/// file it was for is read as usual when opened, and the walk goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_ahead_leaves_its_file_to_be_read_as_usual() {
    // Metadata trusted for ever: no request but the walk's and the
    // readers' GETs of the files.
    let c = core_with(|cfg| cfg.metadata_ttl = Ttl(None));
    let names = put_files(&c, "w", 12, 1000);
    // The second file is empty: its open starts the walk and reads nothing,
    // so the next GET to reach the store is one of the walk's.
    c.mem.put(BUCKET, &format!("w/{}", names[1]), Vec::new());
    let w = c.ino("w").await;
    c.list(w).await;
    c.cat(w, &names[0]).await;
    c.faults
        .on_call(Op::GetObject, 1, Fault::Fail(internal_error(Op::GetObject)));
    assert!(c.cat(w, &names[1]).await.is_empty());
    for (i, name) in names.iter().enumerate().skip(2) {
        assert_eq!(c.cat(w, name).await, data(1000, i as u8), "{name}");
    }
    assert_eq!(c.faults.injected(Op::GetObject), 1);
    // The failed GET never reached the store; the reader of its file asked
    // again: each of the 11 non-empty files reached it once.
    assert_eq!(c.mem.gets_under("w/f"), 11);
}

/// The data cache in `dir` (64 MiB), opened as a mount opens it: it fails
/// while another holder has it.
fn data_cache(dir: &std::path::Path) -> Arc<DataCache> {
    DataCache::open(dir, 64 * MIB as u64, "mem").expect("data cache")
}

/// With a local data cache (issue 14), a remount reads again what the
/// first mount read — big files, small files fetched ahead of a walk,
/// bytes of random reads — with no GET, and the same bytes. The cache is
/// reopened from its directory in between, which also shows that the first
/// mount let go of it (a second holder would be refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remount_with_the_data_cache_reads_again_without_gets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mem = Arc::new(MemoryClient::with_bucket(BUCKET));
    let big = data(5 * MIB + 100, 7);
    mem.put(BUCKET, "big", big.clone());
    let first = core_cached(mem.clone(), Some(data_cache(dir.path())), |_| {});
    let names = put_files(&first, "w", 30, 4096);
    assert!(first.cat(first.fs.root_ino(), "big").await == big);
    let w = first.ino("w").await;
    first.list(w).await;
    for (i, name) in names.iter().enumerate() {
        assert_eq!(first.cat(w, name).await, data(4096, i as u8));
    }
    let gets = (first.mem.gets_under("big"), first.mem.gets_under("w/f"));
    first.fs.settle().await;
    drop(first);

    let again = core_cached(mem.clone(), Some(data_cache(dir.path())), |_| {});
    assert!(again.cat(again.fs.root_ino(), "big").await == big);
    let w = again.ino("w").await;
    again.list(w).await;
    for (i, name) in names.iter().enumerate() {
        assert_eq!(again.cat(w, name).await, data(4096, i as u8), "{name}");
    }
    // Random reads, in a reopened file.
    let ino = again.ino("big").await;
    let (fh, _) = again.fs.open(ino, false, false).await.expect("open");
    for i in 0..200u64 {
        let at = (i * 7_919 * 4096) % big.len() as u64;
        let got = again.fs.read(fh, at, 4096).await.expect("read");
        let end = big.len().min(at as usize + 4096);
        assert!(got[..] == big[at as usize..end], "at {at}");
    }
    again.fs.release(fh).await;
    assert_eq!(
        (again.mem.gets_under("big"), again.mem.gets_under("w/f")),
        gets,
        "the remount asked no GET"
    );
}

/// Random 4 KiB reads of a cold file with the data cache fetch whole
/// blocks, so that the next reads in a block are local; reading the file
/// again then costs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reads_fill_the_data_cache_by_blocks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = core_cached(
        Arc::new(MemoryClient::with_bucket(BUCKET)),
        Some(data_cache(dir.path())),
        |_| {},
    );
    let content = data(4 * MIB, 9);
    c.mem.put(BUCKET, "f", content.clone());
    let ino = c.ino("f").await;
    let (fh, _) = c.fs.open(ino, false, false).await.expect("open");
    let mut gets = Vec::new();
    for round in 0..2 {
        for i in 0..64u64 {
            // Far apart, so that none reads as sequential.
            let at = ((i * 37) % 64) * 64 * 1024 + 100;
            let got = c.fs.read(fh, at, 4096).await.expect("read");
            assert!(
                got[..] == content[at as usize..at as usize + 4096],
                "round {round} at {at}"
            );
        }
        c.fs.settle().await;
        gets.push(c.mem.gets_under("f"));
    }
    c.fs.release(fh).await;
    // Without block fills, 64 GETs; a few more than the 4 blocks when a
    // read inside a fetched block looks sequential and starts read-ahead
    // that the next jump abandons.
    assert!(gets[0] <= 8, "{gets:?}");
    assert_eq!(gets[1], gets[0], "the second round was local");
}

/// The data cache is keyed by ETag: an object replaced by another client
/// is read as it is now, not from blocks of the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_object_is_not_served_from_the_data_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = core_cached(
        Arc::new(MemoryClient::with_bucket(BUCKET)),
        Some(data_cache(dir.path())),
        |cfg| cfg.metadata_ttl = Ttl(Some(std::time::Duration::ZERO)),
    );
    let root = c.fs.root_ino();
    let old = data(2 * MIB + 3, 1);
    c.mem.put(BUCKET, "f", old.clone());
    assert!(c.cat(root, "f").await == old);
    c.fs.settle().await;
    let gets = c.mem.gets_under("f");
    assert!(c.cat(root, "f").await == old);
    assert_eq!(c.mem.gets_under("f"), gets, "the second read was local");
    let new = data(2 * MIB + 3, 2);
    c.mem.put(BUCKET, "f", new.clone());
    assert!(
        c.cat(root, "f").await == new,
        "the new content, not the cached"
    );
}

/// What is written through the mount lands in the data cache as it is
/// saved: reading it back after the close asks no GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_through_the_mount_is_read_back_from_the_data_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = core_cached(
        Arc::new(MemoryClient::with_bucket(BUCKET)),
        Some(data_cache(dir.path())),
        |_| {},
    );
    let root = c.fs.root_ino();
    let content = data(11 * MIB + 5, 4);
    let (attr, fh) = c.fs.create(root, OsStr::new("new")).await.expect("create");
    for (i, chunk) in content.chunks(MIB).enumerate() {
        c.fs.write(fh, (i * MIB) as u64, chunk.to_vec())
            .await
            .expect("write");
    }
    c.fs.flush(fh).await.expect("close");
    c.fs.release(fh).await;
    c.fs.settle().await;
    assert!(c.mem.objects(BUCKET)["new"][..] == content[..]);
    assert!(c.cat(root, "new").await == content);
    assert_eq!(c.mem.gets_under("new"), 0, "read back from the cache");
    // A file rewritten in place (its base stays on the server) is not
    // wholly staged: it is read from the store, and correctly.
    let (fh, _) = c.fs.open(attr.ino, true, false).await.expect("open");
    c.fs.write(fh, 5, b"edit".to_vec()).await.expect("write");
    c.fs.flush(fh).await.expect("close");
    c.fs.release(fh).await;
    c.fs.settle().await;
    let mut edited = content.clone();
    edited[5..9].copy_from_slice(b"edit");
    assert!(c.cat(root, "new").await == edited);
}

/// Renaming file `a` moves `a` alone: a file `ab` being written beside
/// it, not yet in the bucket, keeps its name (open files are found by
/// location, and a file's location is not a prefix of its neighbours').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_file_leaves_an_open_neighbour_whose_name_it_prefixes() {
    let c = core();
    let root = c.fs.root_ino();
    let (_, ab) = c.fs.create(root, OsStr::new("ab")).await.expect("create");
    c.fs.write(ab, 0, b"neighbour".to_vec())
        .await
        .expect("write");
    c.mem.put(BUCKET, "a", b"moved".to_vec());
    c.fs.rename(root, OsStr::new("a"), root, OsStr::new("b"), false)
        .await
        .expect("rename");
    c.fs.flush(ab).await.expect("close");
    c.fs.release(ab).await;
    let objects = c.mem.objects(BUCKET);
    assert_eq!(objects.get("ab").map(|o| &o[..]), Some(&b"neighbour"[..]));
    assert_eq!(objects.get("b").map(|o| &o[..]), Some(&b"moved"[..]));
    assert!(!objects.contains_key("bb"), "{:?}", objects.keys());
}

/// A file open for reading follows a rename into another bucket (an
/// all-buckets mount): its handle reads the copy, not a key of the same
/// name in the bucket it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_file_moved_to_another_bucket_reads_on() {
    let mem = Arc::new(MemoryClient::with_bucket("a"));
    mem.put("a", "f", data(3 * MIB, 9));
    mem.put("b", "keep", b"x".to_vec());
    let staging = tempfile::tempdir().expect("temp dir");
    let fs = bladefs::fs::Fs::new(
        mem.clone(),
        bladefs::fs::MountSource::AllBuckets,
        FsConfig {
            write: bladefs::fs::upload::WriteConfig {
                cache_dir: staging.path().to_path_buf(),
                ..Default::default()
            },
            ..FsConfig::default()
        },
    );
    let root = fs.root_ino();
    let a = fs
        .lookup(root, OsStr::new("a"))
        .await
        .expect("bucket a")
        .ino;
    let b = fs
        .lookup(root, OsStr::new("b"))
        .await
        .expect("bucket b")
        .ino;
    let f = fs.lookup(a, OsStr::new("f")).await.expect("f").ino;
    let (fh, _) = fs.open(f, false, false).await.expect("open");
    let head = fs.read(fh, 0, 4096).await.expect("read");
    assert_eq!(&head[..], &data(3 * MIB, 9)[..4096]);
    fs.rename(a, OsStr::new("f"), b, OsStr::new("f"), false)
        .await
        .expect("rename across buckets");
    assert!(!mem.objects("a").contains_key("f"));
    // Someone puts another f where the file was.
    mem.put("a", "f", b"another".to_vec());
    let all = fs.read(fh, 0, (4 * MIB) as u32).await.expect("read on");
    assert!(all[..] == data(3 * MIB, 9)[..], "the moved file's bytes");
    fs.release(fh).await;
}

/// Writes `content` through `fh` from its start, 1 MiB at a time (as `cp`
/// and `dd` do).
async fn write_in_order(c: &Core, fh: u64, content: &[u8]) {
    for (i, chunk) in content.chunks(MIB).enumerate() {
        c.fs.write(fh, (i * MIB) as u64, chunk.to_vec())
            .await
            .expect("write");
    }
}

/// A new file written in order streams from memory: its parts go up while
/// it is written and nothing is staged on disk (a staging space smaller
/// than the file is enough: only the last part passes through it at the
/// close); the memory bound holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_order_streams_from_memory_and_stages_nothing() {
    let c = core_with(|cfg| cfg.write.max_staged = 6 * MIB as u64);
    let content = data(23 * MIB + 7, 3);
    let (_, fh) =
        c.fs.create(c.fs.root_ino(), OsStr::new("f"))
            .await
            .expect("create");
    write_in_order(&c, fh, &content).await;
    let g = c.fs.gauges();
    assert_eq!(g.staged_bytes, 0, "nothing staged");
    assert_eq!(g.multipart_uploads, 1);
    c.fs.flush(fh).await.expect("close");
    c.fs.release(fh).await;
    assert!(c.mem.objects(BUCKET)["f"][..] == content[..]);
    // Four 5 MiB parts before the close, the last at it.
    assert_eq!(c.requests(Op::UploadPart), 5);
    let cfg = FsConfig::default();
    assert!(c.fs.gauges().memory_peak_bytes <= cfg.prefetch.max_memory + cfg.write.max_memory);
}

/// What went up from memory is needed again (a read or a write below it,
/// a truncation into it): the file is saved as it stands first, and then
/// read and changed like any file; the close saves the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_went_up_from_memory_is_saved_before_it_is_read_or_changed() {
    let c = core();
    let content = data(12 * MIB + 5, 4);
    let (attr, fh) =
        c.fs.create(c.fs.root_ino(), OsStr::new("f"))
            .await
            .expect("create");
    write_in_order(&c, fh, &content).await;
    assert!(!c.mem.objects(BUCKET).contains_key("f"), "still streaming");
    let head = c.fs.read(fh, 100, 1000).await.expect("read back");
    assert_eq!(&head[..], &content[100..1100]);
    assert!(
        c.mem.objects(BUCKET)["f"][..] == content[..],
        "saved as it stood"
    );
    // A header patched at the start, after the fact (zip, mp4).
    c.fs.write(fh, 0, b"HEAD".to_vec()).await.expect("write");
    c.fs.flush(fh).await.expect("close");
    c.fs.release(fh).await;
    let mut want = content.clone();
    want[..4].copy_from_slice(b"HEAD");
    assert!(c.mem.objects(BUCKET)["f"][..] == want[..]);

    // A truncation into what went up.
    let (fh, _) = c.fs.open(attr.ino, true, true).await.expect("open O_TRUNC");
    write_in_order(&c, fh, &content).await;
    let set = SetAttr {
        size: Some(7 * MIB as u64),
        ..Default::default()
    };
    c.fs.setattr(attr.ino, Some(fh), set)
        .await
        .expect("ftruncate");
    let tail =
        c.fs.read(fh, (7 * MIB - 10) as u64, 100)
            .await
            .expect("read");
    assert_eq!(&tail[..], &content[7 * MIB - 10..7 * MIB]);
    c.fs.flush(fh).await.expect("close");
    c.fs.release(fh).await;
    assert!(c.mem.objects(BUCKET)["f"][..] == content[..7 * MIB]);
    c.fs.settle().await;
    assert_eq!(c.mem.open_uploads(BUCKET), 0);
}

/// A file unlinked while it streams from memory stays readable through
/// its handle, and nothing of it is left in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_unlinked_while_streaming_from_memory_stays_readable() {
    let c = core();
    let content = data(11 * MIB, 5);
    let (_, fh) =
        c.fs.create(c.fs.root_ino(), OsStr::new("f"))
            .await
            .expect("create");
    write_in_order(&c, fh, &content).await;
    c.fs.unlink(c.fs.root_ino(), OsStr::new("f"))
        .await
        .expect("unlink");
    let all = c.fs.read(fh, 0, (12 * MIB) as u32).await.expect("read");
    assert!(all[..] == content[..]);
    c.fs.flush(fh).await.expect("close");
    c.fs.release(fh).await;
    c.fs.settle().await;
    assert!(!c.mem.objects(BUCKET).contains_key("f"));
    assert_eq!(c.mem.open_uploads(BUCKET), 0);
}

/// A part sent from memory fails for good: its bytes are nowhere else, so
/// the close and every later fsync report EIO, and nothing partial is
/// stored; emptying the file starts it afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_part_sent_from_memory_fails_every_save_until_emptied() {
    let c = core();
    c.mem.put(BUCKET, "f", b"old".to_vec());
    let ino = c.ino("f").await;
    let (fh, _) = c.fs.open(ino, true, true).await.expect("open O_TRUNC");
    c.faults.on_call(
        Op::UploadPart,
        1,
        Fault::Fail(internal_error(Op::UploadPart)),
    );
    let content = data(17 * MIB, 6);
    // The writes after the failure is seen may already report it.
    for (i, chunk) in content.chunks(MIB).enumerate() {
        if let Err(e) = c.fs.write(fh, (i * MIB) as u64, chunk.to_vec()).await {
            assert_eq!(e.errno(), libc::EIO);
            break;
        }
    }
    assert_eq!(c.fs.flush(fh).await.expect_err("close").errno(), libc::EIO);
    assert_eq!(c.fs.fsync(fh).await.expect_err("fsync").errno(), libc::EIO);
    assert_eq!(&c.mem.objects(BUCKET)["f"][..], b"old");
    let set = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    c.fs.setattr(ino, Some(fh), set).await.expect("ftruncate 0");
    write_in_order(&c, fh, &content).await;
    c.fs.flush(fh).await.expect("close after emptying");
    c.fs.release(fh).await;
    c.fs.settle().await;
    assert!(c.mem.objects(BUCKET)["f"][..] == content[..]);
    assert_eq!(c.mem.open_uploads(BUCKET), 0);
}

/// Creates `f`, writes `content[..at]` in order, and closes it (a FLUSH)
/// while the rest is written: that save is held at its first `held`
/// request until the rest is in and `meanwhile` has looked. Returns the
/// handle once that close has succeeded.
async fn save_held_while_writing(
    c: &Core,
    content: &[u8],
    at: usize,
    held: Op,
    meanwhile: impl FnOnce(),
) -> u64 {
    let (_, fh) =
        c.fs.create(c.fs.root_ino(), OsStr::new("f"))
            .await
            .expect("create");
    write_in_order(c, fh, &content[..at]).await;
    let gate = Gate::new();
    c.faults.on_call(held, 1, Fault::Hold(gate.clone()));
    let fs = c.fs.clone();
    let close = tokio::spawn(async move { fs.flush(fh).await });
    gate.arrived().await;
    for (i, chunk) in content[at..].chunks(MIB).enumerate() {
        c.fs.write(fh, (at + i * MIB) as u64, chunk.to_vec())
            .await
            .expect("write");
    }
    meanwhile();
    gate.open();
    close.await.expect("task").expect("the first close");
    fh
}

/// A close (a FLUSH: any process that forks while holding the file sends
/// one) saves a file streamed from memory while its writer goes on: the
/// writes made while that commit is in flight are staged, and the file
/// starts no new stream from its staging file, which lacks the bytes the
/// first stream sent. Found by a real mount, where such a stream sent
/// zeros for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_while_a_stream_from_memory_is_being_saved_lose_nothing() {
    let c = core();
    let content = data(24 * MIB, 7);
    let fh =
        save_held_while_writing(&c, &content, 12 * MIB, Op::CompleteMultipartUpload, || {}).await;
    c.fs.flush(fh).await.expect("the last close");
    c.fs.release(fh).await;
    c.fs.settle().await;
    assert!(c.mem.objects(BUCKET)["f"][..] == content[..]);
    assert_eq!(c.mem.open_uploads(BUCKET), 0);
}

/// A close saves a file while its writer goes on, then the writer patches
/// the head: no stream starts from the staging file while that commit is
/// in flight (its end makes the object the base under such a stream), and
/// the last close saves every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_saved_while_written_then_patched_saves_every_byte() {
    let c = core();
    let content = data(16 * MIB, 8);
    let no_stream = || {
        let streams = c.requests(Op::CreateMultipartUpload);
        assert_eq!(streams, 0, "no stream meanwhile");
    };
    let fh = save_held_while_writing(&c, &content, 3 * MIB, Op::PutObject, no_stream).await;
    c.fs.write(fh, 0, b"HEAD".to_vec()).await.expect("patch");
    c.fs.flush(fh).await.expect("the last close");
    c.fs.release(fh).await;
    c.fs.settle().await;
    let mut want = content.clone();
    want[..4].copy_from_slice(b"HEAD");
    assert!(c.mem.objects(BUCKET)["f"][..] == want[..]);
    assert_eq!(c.mem.open_uploads(BUCKET), 0);
}
