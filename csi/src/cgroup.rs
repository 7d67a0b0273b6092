//! The cgroup bladefs daemons live in, outside the plugin's container.
//!
//! A container's end (a crash of the plugin, an upgrade, an eviction)
//! kills every process of its cgroup, and a bladefs daemon started by the
//! plugin is one of them unless it moves: its volumes would fail with
//! ENOTCONN. So each daemon is moved, between fork and exec, into a cgroup
//! v2 directory of the host (`--daemon-cgroup`, the host's cgroup tree
//! mounted into the container): its own daemon process, forked later,
//! stays there, and the container's end no longer reaches it.
//!
//! Rules:
//! - cgroup v2 only (the directory's file system is checked at start); a
//!   v1 hierarchy would move the daemon in one controller and leave it in
//!   the others.
//! - The kernel checks a move against the cgroup namespace of whoever
//!   opened `cgroup.procs` (Linux 5.16 and later) and of the writer; a
//!   container has a namespace of its own, rooted at its cgroup. So when
//!   the host's namespace (that of PID 1, visible with `hostPID`) differs
//!   from ours, the child enters it first, then opens and writes.
//! - A daemon that cannot be moved is not started: the publish fails with
//!   the reason, rather than making a volume that dies with the container.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Where daemons go, checked at the plugin's start.
#[derive(Debug, Clone)]
pub struct DaemonCgroup {
    dir: PathBuf,
    /// The host's cgroup namespace, when it is not ours.
    host_ns: bool,
}

impl DaemonCgroup {
    /// `dir` is created if missing; it must be on a cgroup v2 file system.
    pub fn new(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create cgroup {}: {e}", dir.display()))?;
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| "cgroup path holds a NUL".to_string())?;
        // SAFETY: statfs fills the struct it is given from a C string path.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c.as_ptr(), &mut fs) } != 0 {
            return Err(format!(
                "cannot stat {}: {}",
                dir.display(),
                io::Error::last_os_error()
            ));
        }
        #[allow(clippy::unnecessary_cast)]
        if fs.f_type as i64 != CGROUP2_SUPER_MAGIC {
            return Err(format!(
                "{} is not on a cgroup v2 file system (mount the host's /sys/fs/cgroup; cgroup v1 hosts are not supported)",
                dir.display()
            ));
        }
        let ns = |p: &str| std::fs::read_link(p).ok();
        let host_ns = match (ns("/proc/1/ns/cgroup"), ns("/proc/self/ns/cgroup")) {
            (Some(host), Some(me)) => host != me,
            _ => false,
        };
        Ok(DaemonCgroup {
            dir: dir.to_path_buf(),
            host_ns,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `cmd`'s process move itself here before it runs.
    pub fn enter_on_spawn(&self, cmd: &mut Command) -> io::Result<()> {
        let procs = CString::new(self.dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let ns = if self.host_ns {
            Some(File::open("/proc/1/ns/cgroup")?)
        } else {
            None
        };
        let ns_fd = ns.as_ref().map(|f| f.as_raw_fd());
        // SAFETY: between fork and exec only async-signal-safe calls are
        // made (setns, open, write, close) on memory prepared before the
        // fork. The closure owns `ns`, so its descriptor (O_CLOEXEC) is
        // open in the child until exec.
        unsafe {
            cmd.pre_exec(move || {
                let _keep = &ns;
                if let Some(fd) = ns_fd
                    && libc::setns(fd, libc::CLONE_NEWCGROUP) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let wrote = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if wrote != 1 {
                    return Err(err);
                }
                Ok(())
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_directory_that_is_not_a_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let e = DaemonCgroup::new(dir.path()).unwrap_err();
        assert!(e.contains("not on a cgroup v2 file system"), "{e}");
    }
}
