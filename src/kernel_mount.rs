//! Putting the FUSE session on the mountpoint. As root, bladefs calls
//! mount(2) itself with the file system type `fuse.bladefs` and the bucket
//! as the source, as libfuse does with a subtype: fuser's own mount always
//! says `fuse`, so `/proc/mounts`, `findmnt` and `df -T` could not tell what
//! is mounted. Other users go through fuser and `fusermount3`, which is
//! given `subtype=bladefs` and sets the same type.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use fuser::{Config, Session, SessionACL, SessionUnmounter};

use crate::fuse::{FuseAdapter, MAX_IO};

/// The type the kernel shows for a bladefs mount.
pub const FS_TYPE: &str = "fuse.bladefs";

/// Ends a mount made by [`mount`].
pub enum Unmounter {
    Fuser(SessionUnmounter),
    /// Made by mount(2) here: detached by umount2.
    Own(PathBuf),
}

impl Unmounter {
    pub fn unmount(&mut self) -> io::Result<()> {
        match self {
            Unmounter::Fuser(u) => u.unmount(),
            Unmounter::Own(path) => {
                let c = CString::new(path.as_os_str().as_bytes())?;
                // SAFETY: a valid NUL-terminated path.
                if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            }
        }
    }
}

/// What the mount shows besides the session's own options.
pub struct MountSpec<'a> {
    /// The bucket, `bucket:prefix`, or the label of an all-buckets mount.
    pub source: &'a str,
    pub read_only: bool,
}

/// Mounts `adapter` on `mountpoint` and returns the session (handshake
/// done) and what unmounts it.
pub fn mount(
    adapter: FuseAdapter,
    mountpoint: &Path,
    spec: &MountSpec<'_>,
    config: &Config,
) -> io::Result<(Session<FuseAdapter>, Unmounter)> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        let mut session = Session::new(adapter, mountpoint, config)?;
        let unmounter = session.unmount_callable();
        return Ok((session, Unmounter::Fuser(unmounter)));
    }
    let fd = open_dev_fuse()?;
    let root_mode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT
    };
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!(
        "fd={},rootmode={root_mode:o},user_id={uid},group_id={gid},default_permissions,max_read={MAX_IO}",
        fd.as_raw_fd()
    );
    if config.acl == SessionACL::All {
        data.push_str(",allow_other");
    }
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    if spec.read_only {
        flags |= libc::MS_RDONLY;
    }
    let source = CString::new(spec.source)?;
    let target = CString::new(mountpoint.as_os_str().as_bytes())?;
    let fstype = CString::new(FS_TYPE)?;
    let data = CString::new(data)?;
    // SAFETY: NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    match Session::from_fd(adapter, fd, config.acl, config.clone()) {
        Ok(session) => Ok((session, Unmounter::Own(mountpoint.to_path_buf()))),
        Err(e) => {
            let _ = Unmounter::Own(mountpoint.to_path_buf()).unmount();
            Err(e)
        }
    }
}

fn open_dev_fuse() -> io::Result<OwnedFd> {
    let path = CString::new("/dev/fuse").expect("no NUL");
    // SAFETY: a valid path; the descriptor is owned from here on.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
