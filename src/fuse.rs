//! The thin fuser adapter: the only module that knows fuser's types. Every
//! callback that may reach the store is handed to the tokio runtime and
//! replies from there, so the kernel's request loop never waits on the
//! network and reads of different files proceed at once; cheap ones are
//! first tried on the loop and answered there when nothing has to wait. Errors become an
//! errno here, through `FsError::errno`, and are logged once.

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    Request, TimeOrNow,
};

use crate::fs::inode::{Kind, NAME_MAX};
use crate::fs::{Attr, Closer, Creator, Fs, FsError, SetAttr};
use crate::metrics::FuseStats;

/// Largest read and write the kernel sends in one request: 256 pages, the
/// most this kernel allows.
pub const MAX_IO: u32 = 1024 * 1024;

/// Requests the kernel keeps in flight to us at once (reads ahead included).
const MAX_BACKGROUND: u16 = 64;

pub struct FuseAdapter {
    fs: Arc<Fs>,
    rt: tokio::runtime::Handle,
    stats: Arc<FuseStats>,
    device: Arc<AtomicU64>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<Fs>, rt: tokio::runtime::Handle, stats: Arc<FuseStats>) -> Self {
        FuseAdapter {
            fs,
            rt,
            stats,
            device: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Where the mount's device number (`st_dev` of its root) goes once
    /// the mount is live: it tells this mount's files from other file
    /// systems' with the same inode number in /proc (0 until then).
    pub fn device(&self) -> Arc<AtomicU64> {
        self.device.clone()
    }

    fn ttl(&self) -> Duration {
        self.fs.ttl().kernel()
    }

    /// Runs `work` on the runtime, off the kernel's request loop, and
    /// replies from there: `done` with its result, or the errno (logged
    /// once, in `errno`).
    fn run<R, T, W, Fut>(
        &self,
        op: &'static str,
        ino: u64,
        reply: R,
        work: W,
        done: impl FnOnce(R, T) + Send + 'static,
    ) where
        R: ReplyError + Send + 'static,
        T: Send + 'static,
        W: FnOnce(Arc<Fs>) -> Fut,
        Fut: Future<Output = Result<T, FsError>> + Send + 'static,
    {
        self.run_as(Where::Runtime, op, ino, reply, work, done)
    }

    /// [`Self::run`], with `work` first polled where `at` says.
    fn run_as<R, T, W, Fut>(
        &self,
        at: Where,
        op: &'static str,
        ino: u64,
        reply: R,
        work: W,
        done: impl FnOnce(R, T) + Send + 'static,
    ) where
        R: ReplyError + Send + 'static,
        T: Send + 'static,
        W: FnOnce(Arc<Fs>) -> Fut,
        Fut: Future<Output = Result<T, FsError>> + Send + 'static,
    {
        let fs = self.fs.clone();
        let stats = self.stats.clone();
        let started = std::time::Instant::now();
        let work = work(self.fs.clone());
        let task = async move {
            let result = work.await;
            answer(&fs, &stats, op, ino, started, result, reply, done);
        };
        if at == Where::Runtime {
            self.rt.spawn(task);
            return;
        }
        let mut task = Box::pin(task);
        // The runtime's context, for what the work spawns or times.
        let _runtime = self.rt.enter();
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let first =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.as_mut().poll(&mut cx)));
        match first {
            Ok(std::task::Poll::Ready(())) => {}
            // Polled again at once by the runtime, which registers its own
            // waker: a future must answer to the waker of its latest poll.
            Ok(std::task::Poll::Pending) => {
                self.rt.spawn(task);
            }
            // The reply, dropped in the unwinding, answered EIO; the loop
            // goes on serving other requests.
            Err(_) => tracing::error!(op, ino, "operation panicked"),
        }
    }
}

/// Sends the reply to `op` on `ino`, counted and, when it failed, logged.
#[allow(clippy::too_many_arguments)]
fn answer<R: ReplyError, T>(
    fs: &Fs,
    stats: &FuseStats,
    op: &'static str,
    ino: u64,
    started: std::time::Instant,
    result: Result<T, FsError>,
    reply: R,
    done: impl FnOnce(R, T),
) {
    stats.record(op, started.elapsed(), result.is_err());
    match result {
        Ok(v) => done(reply, v),
        Err(e) => {
            if e.is_failure() {
                // Once per failed operation, with what it was on: the
                // application only sees the errno.
                tracing::warn!(op, path = %fs.path_of(ino), errno = e.errno(), error = %e, "operation failed");
            }
            reply.error_to(errno(op, ino, &e))
        }
    }
}

/// Where [`FuseAdapter::run_as`] first polls an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Where {
    Runtime,
    /// Polled once on the request loop: when it completes at once (its
    /// answer is in memory: cached attributes, a file fetched ahead), the
    /// reply goes out without a hand-off to a runtime thread and back
    /// (measured on Ceph RGW: most of a small file's cost in `cp -r` was
    /// such round trips). Work that would wait continues on the runtime
    /// from where it stopped. Only for operations whose ready answer is
    /// cheap to send: the loop serves every file of the mount.
    HereIfReady,
}

/// A reply the work fills itself (directory entries) yet answered through
/// `run_as` like any other, so its failures are counted and logged in the
/// one place: the work takes the reply out, and puts it back when it fails
/// for `run_as` to answer with the errno.
struct Filled<R>(Arc<std::sync::Mutex<Option<R>>>);

impl<R> Filled<R> {
    fn new(reply: R) -> (Filled<R>, Filled<R>) {
        let slot = Arc::new(std::sync::Mutex::new(Some(reply)));
        (Filled(slot.clone()), Filled(slot))
    }

    fn take(&self) -> R {
        self.0
            .lock()
            .expect("reply slot")
            .take()
            .expect("a reply taken once")
    }

    /// The filled reply for `run_as`'s success path, or the error with the
    /// reply back in its slot.
    fn answered(&self, reply: R, result: Result<(), FsError>) -> Result<R, FsError> {
        match result {
            Ok(()) => Ok(reply),
            Err(e) => {
                *self.0.lock().expect("reply slot") = Some(reply);
                Err(e)
            }
        }
    }
}

impl<R: ReplyError> ReplyError for Filled<R> {
    fn error_to(self, err: Errno) {
        if let Some(reply) = self.0.lock().expect("reply slot").take() {
            reply.error_to(err);
        }
    }
}

/// Reads up to this size are answered on the request loop when their bytes
/// are in memory (small files); larger ones are copied to the kernel from
/// the runtime's threads, in parallel.
const READ_HERE_MAX: u32 = 128 * 1024;

/// The one thing every fuser reply can do, as a trait so that `run` can
/// answer any of them with an error.
trait ReplyError {
    fn error_to(self, err: Errno);
}

macro_rules! reply_error {
    ($($t:ty),*) => {$(
        impl ReplyError for $t {
            fn error_to(self, err: Errno) {
                self.error(err)
            }
        }
    )*};
}

reply_error!(
    ReplyEntry,
    ReplyAttr,
    ReplyOpen,
    ReplyData,
    ReplyEmpty,
    ReplyCreate,
    ReplyDirectory,
    ReplyDirectoryPlus,
    fuser::ReplyWrite
);

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        // Tools size their buffers by st_blksize: large I/O suits the store.
        blksize: MAX_IO,
        flags: 0,
    }
}

/// The caller of a request that makes a name, with the mode the kernel
/// passes (the umask already applied: no FUSE_DONT_MASK).
fn creator(req: &Request, mode: u32) -> Creator {
    Creator {
        uid: req.uid(),
        gid: req.gid(),
        mode: Some((mode & 0o7777) as u16),
    }
}

fn errno(op: &'static str, ino: u64, err: &FsError) -> Errno {
    let code = err.errno();
    if code == libc::ENOENT {
        tracing::trace!(op, ino, "ENOENT");
    } else if !err.is_failure() {
        tracing::debug!(op, ino, errno = code, error = %err, "operation refused");
    }
    Errno::from_i32(code)
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO);
        if let Err(max) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(max);
        }
        for cap in [
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            // O_TRUNC comes with the open, not as a separate setattr
            // without a handle (which reads as truncate(2): saved at once).
            InitFlags::FUSE_ATOMIC_O_TRUNC,
        ] {
            if config.add_capabilities(cap).is_err() {
                tracing::debug!(?cap, "kernel lacks capability");
            }
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_owned();
        let ttl = self.ttl();
        self.run_as(
            Where::HereIfReady,
            "lookup",
            parent.0,
            reply,
            |fs| async move { fs.lookup(parent.0, &name).await },
            move |r, attr| r.entry(&ttl, &file_attr(&attr), Generation(0)),
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ttl = self.ttl();
        self.run_as(
            Where::HereIfReady,
            "getattr",
            ino.0,
            reply,
            |fs| async move { fs.getattr(ino.0).await },
            move |r, attr| r.attr(&ttl, &file_attr(&attr)),
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ttl = self.ttl();
        let perm = mode.map(|m| (m & 0o7777) as u16);
        let time = |t| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => SystemTime::now(),
        };
        let set = SetAttr {
            size,
            perm,
            uid,
            gid,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        let fh = fh.map(|f| f.0);
        self.run(
            "setattr",
            ino.0,
            reply,
            |fs| async move { fs.setattr(ino.0, fh, set).await },
            move |r, attr| r.attr(&ttl, &file_attr(&attr)),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        // Opening for writing makes a staging file: not on the loop.
        let at = if write || truncate {
            Where::Runtime
        } else {
            Where::HereIfReady
        };
        self.run_as(
            at,
            "open",
            ino.0,
            reply,
            |fs| async move { fs.open(ino.0, write, truncate).await },
            move |r, (fh, keep_cache)| {
                let mut flags = if keep_cache {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                // The close of a read-only handle has nothing to save
                // (Fs::flush commits writable handles only): the kernel
                // need not ask, a round trip less per file read.
                if !write && !truncate {
                    flags |= FopenFlags::FOPEN_NOFLUSH;
                }
                r.opened(FileHandle(fh), flags)
            },
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let at = if size <= READ_HERE_MAX {
            Where::HereIfReady
        } else {
            Where::Runtime
        };
        self.run_as(
            at,
            "read",
            ino.0,
            reply,
            |fs| async move { fs.read(fh.0, offset, size).await },
            |r, data| r.data(&data),
        );
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        // A write into the part a file streaming from memory is filling is
        // done here, from the kernel's buffer: no copy of our own, no
        // hand-off (see `Fs::write_now`).
        let started = std::time::Instant::now();
        if let Some(result) = self.fs.write_now(fh.0, offset, data) {
            let (fs, stats) = (&self.fs, &self.stats);
            answer(fs, stats, "write", ino.0, started, result, reply, |r, n| {
                r.written(n)
            });
            return;
        }
        let data = crate::s3::buffers::copy(data);
        self.run(
            "write",
            ino.0,
            reply,
            |fs| async move { fs.write(fh.0, offset, data).await },
            |r, n| r.written(n),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: fuser::ReplyWrite,
    ) {
        self.run(
            "copy_file_range",
            ino_in.0,
            reply,
            move |fs| async move {
                fs.copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
                    .await
            },
            |r, n| r.written(n),
        );
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let pid = req.pid();
        let device = self.device.load(Ordering::Relaxed);
        self.run(
            "flush",
            ino.0,
            reply,
            |fs| async move { fs.flush_from(fh.0, |ino| closer(pid, device, ino)).await },
            |r, ()| r.ok(),
        );
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.run(
            "fsync",
            ino.0,
            reply,
            |fs| async move { fs.fsync(fh.0).await },
            |r, ()| r.ok(),
        );
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Ready at once unless a truncation held back is published.
        self.run_as(
            Where::HereIfReady,
            "release",
            ino.0,
            reply,
            |fs| async move {
                fs.release(fh.0).await;
                Ok(())
            },
            |r, ()| r.ok(),
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.run_as(
            Where::HereIfReady,
            "opendir",
            ino.0,
            reply,
            |fs| async move { fs.opendir(ino.0).await },
            |r, fh| r.opened(FileHandle(fh), FopenFlags::empty()),
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let (slot, back) = Filled::new(reply);
        self.run_as(
            Where::Runtime,
            "readdir",
            ino.0,
            slot,
            move |fs| async move {
                let mut reply = back.take();
                let result = fs
                    .readdir(ino.0, fh.0, offset, false, |e| {
                        reply.add(INodeNo(e.ino), e.next_offset, file_type(e.kind), e.name)
                    })
                    .await;
                back.answered(reply, result)
            },
            |_, reply| reply.ok(),
        );
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.ttl();
        let (slot, back) = Filled::new(reply);
        self.run_as(
            Where::Runtime,
            "readdirplus",
            ino.0,
            slot,
            move |fs| async move {
                let mut reply = back.take();
                let result = fs
                    .readdir(ino.0, fh.0, offset, true, |e| {
                        let attr = e.attr.as_ref().map(file_attr).expect("plus has attrs");
                        reply.add(
                            INodeNo(e.ino),
                            e.next_offset,
                            e.name,
                            &ttl,
                            &attr,
                            Generation(0),
                        )
                    })
                    .await;
                back.answered(reply, result)
            },
            |_, reply| reply.ok(),
        );
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        self.stats.record("releasedir", Duration::ZERO, false);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // An object store has no fixed size: report plenty of room so that
        // tools checking free space before writing go ahead.
        const BLOCKS: u64 = 1 << 40;
        reply.statfs(
            BLOCKS,
            BLOCKS,
            BLOCKS,
            1 << 32,
            1 << 32,
            4096,
            NAME_MAX as u32,
            4096,
        );
    }

    // No extended attributes: ENOSYS tells the kernel once for good, so it
    // stops asking (ls and cp probe for ACLs and SELinux labels).
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => return reply.error(Errno::EINVAL),
        };
        let who = creator(req, mode);
        let name = name.to_owned();
        let ttl = self.ttl();
        self.run(
            "mknod",
            parent.0,
            reply,
            move |fs| async move { fs.mknod(parent.0, &name, kind, rdev, &who).await },
            move |r, attr| r.entry(&ttl, &file_attr(&attr), Generation(0)),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let who = creator(req, mode);
        let name = name.to_owned();
        let ttl = self.ttl();
        self.run(
            "mkdir",
            parent.0,
            reply,
            move |fs| async move { fs.mkdir_as(parent.0, &name, &who).await },
            move |r, attr| r.entry(&ttl, &file_attr(&attr), Generation(0)),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.run(
            "unlink",
            parent.0,
            reply,
            |fs| async move { fs.unlink(parent.0, &name).await },
            |r, ()| r.ok(),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.run(
            "rmdir",
            parent.0,
            reply,
            |fs| async move { fs.rmdir(parent.0, &name).await },
            |r, ()| r.ok(),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let who = creator(req, 0o777);
        let (name, target) = (link_name.to_owned(), target.to_owned());
        let ttl = self.ttl();
        self.run(
            "symlink",
            parent.0,
            reply,
            move |fs| async move { fs.symlink(parent.0, &name, &target, &who).await },
            move |r, attr| r.entry(&ttl, &file_attr(&attr), Generation(0)),
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.run(
            "readlink",
            ino.0,
            reply,
            |fs| async move { fs.readlink(ino.0).await },
            |r, target| r.data(target.as_bytes()),
        );
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.run(
            "fsyncdir",
            ino.0,
            reply,
            |fs| async move { fs.fsyncdir(ino.0).await },
            |r, ()| r.ok(),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(errno("link", ino.0, &FsError::NotPermitted));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.run(
            "rename",
            parent.0,
            reply,
            |fs| async move {
                fs.rename(parent.0, &name, newparent.0, &newname, no_replace)
                    .await
            },
            |r, ()| r.ok(),
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let who = creator(req, mode);
        let name = name.to_owned();
        let ttl = self.ttl();
        self.run(
            "create",
            parent.0,
            reply,
            move |fs| async move { fs.create_as(parent.0, &name, &who).await },
            move |r, (attr, fh)| {
                r.created(
                    &ttl,
                    &file_attr(&attr),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                )
            },
        );
    }
}

/// Whether the process closing a descriptor still holds the file on
/// another (read from /proc only for a file held back at its emptying).
fn closer(pid: u32, device: u64, ino: u64) -> Closer {
    match crate::proc_fds::holds(pid, device, ino) {
        Some(true) => Closer::HoldsAnother,
        Some(false) => Closer::Done,
        None => Closer::Unknown,
    }
}
