//! Publishing a volume: a bladefs daemon mounted at the pod's target path,
//! its credentials in a private file, and taking it down again. The one
//! owner of the plugin's state directory.
//!
//! Rules:
//! - Each published (volume, target) has a directory of its own under the
//!   state directory (0700): `credentials` (0600, the secret's keys; never
//!   on a command line, in the environment or in a log), `log` (the
//!   daemon's log), `metrics.sock` (the daemon's metrics) and `volume`
//!   (the volume id and target, for the node's metrics).
//! - The bladefs daemon detaches into its own session: it is not the
//!   plugin's child once mounted, so a plugin that exits, crashes or is
//!   upgraded leaves every mount serving. With a daemon cgroup
//!   (`crate::cgroup`) it also leaves the container's cgroup, so the end of
//!   the container spares it too. A new plugin needs nothing from the old
//!   one: the mount table says what is mounted.
//! - Publish and unpublish are idempotent: a target already mounted by
//!   bladefs is published; one not mounted is unpublished.
//! - A publish that fails leaves nothing mounted and nothing on disk.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cgroup::DaemonCgroup;
use crate::options::Volume;

/// Why a call failed, as the gRPC status it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Invalid(String),
    Denied(String),
    NotFound(String),
    Unavailable(String),
    Timeout(String),
    Internal(String),
}

pub struct Mounter {
    /// The bladefs program.
    pub bladefs: PathBuf,
    pub state: PathBuf,
    /// How long a mount may take before it is given up.
    pub timeout: Duration,
    /// Where daemons are moved so that the container's end spares them
    /// (`None`: they stay in the plugin's cgroup).
    pub cgroup: Option<DaemonCgroup>,
}

/// `path` as /proc/self/mountinfo writes it (space, tab, newline and
/// backslash in octal).
fn mangled(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The file system type mounted at `path`, if any (the last mount wins).
pub fn mounted_type(path: &Path) -> Option<String> {
    let want = mangled(path);
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table
        .lines()
        .rev()
        .filter_map(|l| {
            let mut fields = l.split(' ');
            let point = fields.nth(4)?;
            let (_, rest) = l.split_once(" - ")?;
            (point == want).then(|| rest.split(' ').next().unwrap_or("").to_string())
        })
        .next()
}

/// A name for the state of (volume, target): FNV-1a of both, in hex.
fn state_name(volume_id: &str, target: &Path) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in volume_id
        .bytes()
        .chain([0])
        .chain(target.to_string_lossy().bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn check_target(target: &Path) -> Result<(), Failure> {
    let plain = target.is_absolute()
        && target
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain {
        return Err(Failure::Invalid(format!(
            "target path {} must be absolute, without . or ..",
            target.display()
        )));
    }
    Ok(())
}

/// The status a failed mount's message calls for.
fn classify(message: &str) -> Failure {
    let m = message.to_string();
    let has = |words: &[&str]| words.iter().any(|w| message.contains(w));
    if has(&[
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "access denied",
        "403",
    ]) {
        Failure::Denied(m)
    } else if has(&["NoSuchBucket", "no such bucket", "does not exist"]) {
        Failure::NotFound(m)
    } else if has(&["connect", "unreachable", "timed out", "refused", "resolve"]) {
        Failure::Unavailable(m)
    } else {
        Failure::Internal(m)
    }
}

impl Mounter {
    fn dir(&self, volume_id: &str, target: &Path) -> PathBuf {
        self.state.join(state_name(volume_id, target))
    }

    /// Mounts `vol` at `target` with the keys of `secrets`.
    pub fn publish(
        &self,
        volume_id: &str,
        target: &Path,
        vol: &Volume,
        secrets: &HashMap<String, String>,
    ) -> Result<(), Failure> {
        check_target(target)?;
        match mounted_type(target).as_deref() {
            // Published already, by this volume: its state is there.
            Some("fuse.bladefs") if self.dir(volume_id, target).is_dir() => return Ok(()),
            Some("fuse.bladefs") => {
                return Err(Failure::Invalid(format!(
                    "target path {} already holds another bladefs volume",
                    target.display()
                )));
            }
            Some(other) => {
                return Err(Failure::Invalid(format!(
                    "target path {} is already mounted ({other})",
                    target.display()
                )));
            }
            None => {}
        }
        let key = |name: &str| {
            secrets
                .get(name)
                .filter(|v| !v.is_empty() && !v.contains(['\n', '\r']))
                .ok_or_else(|| {
                    Failure::Invalid(format!("the volume's secret lacks a usable {name}"))
                })
        };
        let (id, secret) = (key("access_key_id")?, key("secret_access_key")?);
        let created = !target.exists();
        std::fs::create_dir_all(target)
            .map_err(|e| Failure::Internal(format!("cannot create {}: {e}", target.display())))?;
        let empty = std::fs::read_dir(target)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(Failure::Invalid(format!(
                "target path {} is not an empty directory",
                target.display()
            )));
        }
        let dir = self.dir(volume_id, target);
        let undo = |dir: &Path| {
            let _ = std::fs::remove_dir_all(dir);
            if created {
                let _ = std::fs::remove_dir(target);
            }
        };
        let result = self.mount(&dir, volume_id, target, vol, id, secret);
        if result.is_err() {
            if mounted_type(target).is_some() {
                let _ = self.unmount(target);
            }
            undo(&dir);
        }
        result
    }

    fn mount(
        &self,
        dir: &Path,
        volume_id: &str,
        target: &Path,
        vol: &Volume,
        id: &str,
        secret: &str,
    ) -> Result<(), Failure> {
        let internal = |what: &str, e: std::io::Error| Failure::Internal(format!("{what}: {e}"));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| internal("state directory", e))?;
        let creds = dir.join("credentials");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&creds)
            .map_err(|e| internal("credentials file", e))?;
        write!(
            f,
            "[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"
        )
        .map_err(|e| internal("credentials file", e))?;
        drop(f);
        // What the node's metrics call this volume (crate::metrics).
        std::fs::write(
            dir.join(crate::metrics::LABELS),
            format!("{volume_id}\n{}\n", target.display()),
        )
        .map_err(|e| internal("state directory", e))?;
        let mut cmd = Command::new(&self.bladefs);
        if let Some(cg) = &self.cgroup {
            cg.enter_on_spawn(&mut cmd)
                .map_err(|e| internal("daemon cgroup", e))?;
        }
        let mut child = cmd
            .arg(&vol.source)
            .arg(target)
            .arg("--endpoint")
            .arg(&vol.endpoint)
            .arg("--credentials-file")
            .arg(&creds)
            .arg("--log-file")
            .arg(dir.join("log"))
            .arg("--metrics-socket")
            .arg(dir.join(crate::metrics::SOCKET))
            .args(&vol.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                let into = self.cgroup.as_ref().map_or(String::new(), |cg| {
                    format!(" in cgroup {}", cg.dir().display())
                });
                internal(&format!("cannot run {}{into}", self.bladefs.display()), e)
            })?;
        // bladefs returns once mounted (or failed): its daemon carries on
        // in a session of its own. Polled, since the child has no other
        // way to say it is stuck.
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| internal("waiting", e))? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::Timeout(format!(
                    "bladefs did not mount {} within {} s",
                    vol.source,
                    self.timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        if !status.success() {
            let msg = err.trim();
            return Err(classify(&format!("bladefs could not mount: {msg}")));
        }
        match mounted_type(target).as_deref() {
            Some("fuse.bladefs") => Ok(()),
            _ => Err(Failure::Internal(format!(
                "bladefs exited without a mount at {}",
                target.display()
            ))),
        }
    }

    /// Unmounts `target` and waits for its daemon to store what it holds
    /// and exit; forgets the volume's state.
    pub fn unpublish(&self, volume_id: &str, target: &Path) -> Result<(), Failure> {
        check_target(target)?;
        if mounted_type(target).as_deref() == Some("fuse.bladefs") {
            self.unmount(target)?;
        }
        let _ = std::fs::remove_dir_all(self.dir(volume_id, target));
        let _ = std::fs::remove_dir(target);
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), Failure> {
        let pid = bladefs::mount::daemon_pid(target);
        let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|_| Failure::Invalid("target path holds a NUL".to_string()))?;
        // SAFETY: a plain syscall on a NUL-terminated path.
        let mut rc = unsafe { libc::umount2(c.as_ptr(), 0) };
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY) {
            // Files still open: detached now; the daemon stores what is
            // closed and exits after the last close.
            // SAFETY: as above.
            rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Failure::Internal(format!(
                "cannot unmount {}: {e}",
                target.display()
            )));
        }
        // The daemon uploads what it still holds before it exits.
        let deadline = Instant::now() + self.timeout;
        while let Some(p) = pid.filter(|p| Path::new(&format!("/proc/{p}")).exists()) {
            let zombie = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            if zombie || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_written_as_the_mount_table_writes_them() {
        assert_eq!(mangled(Path::new("/a b\\c")), "/a\\040b\\134c");
        assert!(check_target(Path::new("relative")).is_err());
        assert!(check_target(Path::new("/a/../b")).is_err());
        assert!(check_target(Path::new("/var/lib/kubelet/pods/x/mount")).is_ok());
        assert_ne!(
            state_name("v", Path::new("/a")),
            state_name("v", Path::new("/b"))
        );
    }

    #[test]
    fn failures_are_classified_by_what_bladefs_said() {
        assert!(matches!(
            classify("... InvalidAccessKeyId ..."),
            Failure::Denied(_)
        ));
        assert!(matches!(
            classify("NoSuchBucket: nope"),
            Failure::NotFound(_)
        ));
        assert!(matches!(
            classify("connection refused"),
            Failure::Unavailable(_)
        ));
        assert!(matches!(classify("odd"), Failure::Internal(_)));
    }
}
