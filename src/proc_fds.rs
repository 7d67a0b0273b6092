//! What a process still holds open, read from `/proc/PID/fdinfo`.
//!
//! A FLUSH comes at every `close()` and does not say whether it was the
//! process's last descriptor of the file. That matters for a file only
//! emptied at open (`fs::Closer`): bash's `echo x > f` closes a dup of the
//! descriptor before it writes (another descriptor still holds the file:
//! publishing the empty file then would show other hosts an empty file),
//! while `touch new` or `: > f` closes its only one (publishing at once
//! makes the file visible and durable when `close()` returns, and its
//! error reaches `close()`).
//!
//! The kernel removes a descriptor from the table before it sends the
//! FLUSH, so the closing process holds the file still exactly when another
//! of its descriptors names the same inode. Every doubt answers `None`
//! (the caller then holds the file back, the safe side): the pid is 0 or
//! not ours to read, the process is gone, or it has too many descriptors
//! to scan cheaply. A descriptor of another file system with the same
//! inode number answers "holds": the safe side too.

use std::collections::HashSet;
use std::fs;

/// More descriptors than this are not scanned: `None`.
const MAX_SCANNED: usize = 4096;

/// Whether process `pid` has a descriptor open on inode `ino` of the file
/// system whose device is `dev` (`st_dev`; 0 when not known, and then any
/// file with that inode number counts). FUSE inode numbers are the ones
/// this daemon gives in attributes; other file systems' small inode
/// numbers (devpts, pipes, /dev) collide with them, so a descriptor with
/// the inode number is checked against the mount it was opened through.
pub fn holds(pid: u32, dev: u64, ino: u64) -> Option<bool> {
    if pid == 0 {
        return None;
    }
    let dir = format!("/proc/{pid}/fdinfo");
    let mut scanned = 0;
    let mut mounts = HashSet::new();
    for entry in fs::read_dir(&dir).ok()? {
        scanned += 1;
        if scanned > MAX_SCANNED {
            return None;
        }
        let entry = entry.ok()?;
        // A descriptor closed since the listing is simply not there.
        let Ok(info) = fs::read_to_string(entry.path()) else {
            continue;
        };
        let Some(found) = field(&info, "ino:") else {
            // A kernel before 5.14 does not say.
            return None;
        };
        if found == ino {
            match field(&info, "mnt_id:") {
                Some(mnt) if dev != 0 => {
                    mounts.insert(mnt);
                }
                _ => return Some(true),
            }
        }
    }
    // An exiting process has no table any more; a live one has at least
    // the descriptor it closes from, so zero entries is no answer.
    if scanned == 0 {
        return None;
    }
    if mounts.is_empty() {
        return Some(false);
    }
    let table = fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    let want = format!("{}:{}", libc::major(dev), libc::minor(dev));
    Some(table.lines().any(|line| {
        let mut f = line.split(' ');
        let id = f.next().and_then(|v| v.parse::<u64>().ok());
        let device = f.nth(1);
        id.is_some_and(|id| mounts.contains(&id)) && device == Some(want.as_str())
    }))
}

/// A numeric line of one `/proc/PID/fdinfo/FD` (`ino:` since Linux 5.14).
fn field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn parses_the_inode_and_mount_lines() {
        let info = "pos:\t0\nflags:\t0100002\nmnt_id:\t24\nino:\t1234567\n";
        assert_eq!(field(info, "ino:"), Some(1234567));
        assert_eq!(field(info, "mnt_id:"), Some(24));
        assert_eq!(field("pos:\t0\nflags:\t02\n", "ino:"), None);
    }

    #[test]
    fn sees_a_file_this_process_holds_and_not_one_it_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let (dev, ino) = (meta.dev(), meta.ino());
        let me = std::process::id();
        assert_eq!(holds(me, dev, ino), Some(true));
        let dup = file.try_clone().unwrap();
        drop(file);
        assert_eq!(holds(me, dev, ino), Some(true), "a dup still holds it");
        // The same inode number on another device is another file.
        assert_eq!(holds(me, dev + 1, ino), Some(false));
        drop(dup);
        // Other tests of this binary open files too, never this one.
        assert_eq!(holds(me, dev, ino), Some(false));
        assert_eq!(holds(me, 0, ino), Some(false));
    }

    #[test]
    fn no_answer_for_pid_zero_or_a_process_that_is_gone() {
        assert_eq!(holds(0, 1, 1), None);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(holds(pid, 1, 1), None);
    }
}
