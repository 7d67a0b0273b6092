//! Detaching from the terminal. The process forks before any thread
//! exists (tokio, fuser); the child does the real work and reports through
//! a pipe, so the command the user typed returns 0 only once the mount is
//! live, or prints the child's one-line error and returns 1.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The child's end of the status pipe.
pub struct Ready(File);

impl Ready {
    /// The mount is live: the waiting parent prints `note` (if any) and
    /// exits 0.
    pub fn ok(mut self, note: Option<&str>) {
        let _ = self
            .0
            .write_all(format!("OK {}\n", note.unwrap_or_default()).as_bytes());
    }

    /// Starting failed: the parent prints `message` and exits 1.
    pub fn fail(mut self, message: &str) {
        let _ = self.0.write_all(format!("ERR {message}\n").as_bytes());
    }
}

/// Forks. In the parent this never returns: it waits for the child's
/// report and exits. In the child it returns the status pipe, with the
/// child in a new session and its standard input and output on /dev/null
/// (standard error too, unless `keep_stderr`).
pub fn detach(keep_stderr: bool) -> std::io::Result<Ready> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here alone.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (checked by the caller's order of
    // work), so the child may continue with the whole program.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(read_end);
            // SAFETY: plain system calls on the child's own process.
            unsafe {
                libc::setsid();
            }
            redirect_to_null(keep_stderr)?;
            Ok(Ready(File::from(write_end)))
        }
        child => {
            drop(write_end);
            let mut report = String::new();
            let _ = File::from(read_end).read_to_string(&mut report);
            if let Some(note) = report.strip_prefix("OK") {
                let note = note.trim();
                if !note.is_empty() {
                    eprintln!("bladefs: {note}");
                }
                std::process::exit(0);
            }
            let message = report
                .strip_prefix("ERR ")
                .map(str::trim_end)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| {
                    let mut status = 0;
                    // SAFETY: waiting on our own child.
                    unsafe { libc::waitpid(child, &mut status, 0) };
                    format!("the bladefs daemon exited before mounting (status {status})")
                });
            eprintln!("bladefs: {message}");
            std::process::exit(1);
        }
    }
}

fn redirect_to_null(keep_stderr: bool) -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let targets: &[i32] = if keep_stderr { &[0, 1] } else { &[0, 1, 2] };
    for &fd in targets {
        // SAFETY: duplicating an open descriptor onto a standard one.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
