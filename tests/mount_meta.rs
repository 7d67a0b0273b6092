//! POSIX metadata through real mounts on Ceph RGW, driven by the tools that
//! failed without it: `ln -s`, `chmod`, `chown`, `touch -d`, `mkfifo`,
//! `cp -a`, `tar`, `rsync -a` across a remount, `python3 -m venv` with pip
//! installing a wheel. Each checks what persists after a remount, through
//! the kernel forgetting inodes, and what other S3 clients see.

#[macro_use]
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::Kind;
use common::mount::Mounted;
use common::store::{Store, sh};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode()
}

/// What `find` says of every name under `dir`: path, type, mode, owner,
/// mtime and link target; compared between a local tree and the mount.
fn describe(dir: &Path) -> String {
    sh(&format!(
        "cd '{}' && find . -mindepth 1 -printf '%p %y %m %U:%G %T@ %l\\n' | sort",
        dir.display()
    ))
}

/// [`describe`] with times in whole seconds, as tar archives keep them.
fn describe_secs(dir: &Path) -> String {
    describe(dir)
        .lines()
        .map(|l| {
            let mut f: Vec<String> = l.split(' ').map(str::to_string).collect();
            if let Some((secs, _)) = f[4].split_once('.') {
                f[4] = secs.to_string();
            }
            f.join(" ") + "\n"
        })
        .collect()
}

/// A local tree with what real trees hold: executables, a private file,
/// links (relative, absolute, dangling, to a directory), odd times.
fn sample_tree(root: &Path) {
    sh(&format!(
        "set -e; cd '{}'; mkdir -p src/bin src/lib/pkg src/empty
         printf '#!/bin/sh\\necho hi\\n' > src/bin/run; chmod 755 src/bin/run
         echo secret > src/lib/key; chmod 600 src/lib/key
         echo code > src/lib/pkg/mod.py
         ln -s ../lib/pkg/mod.py src/bin/mod-link
         ln -s lib src/lib64
         ln -s /etc/hostname src/abs-link
         ln -s missing/target src/dangling
         chmod 700 src/empty
         touch -h -d '2001-02-03 04:05:06.789' src/bin/run src/lib/key src/lib64 src/empty
         touch -d '1999-12-31 23:59:59' src/lib/pkg/mod.py",
        root.display()
    ));
}

#[test]
fn links_modes_owners_and_times_persist_across_remounts_and_forgotten_inodes() {
    let server = common::start(Kind::CephRgw);
    let store = Store::new(&server, "posix");
    let local = tempfile::tempdir().unwrap();
    sample_tree(local.path());
    let expected = describe(&local.path().join("src"));

    let m = Mounted::new(&server, "posix", &[]);
    sh(&format!(
        "cp -a '{}/src' '{}/cp'",
        local.path().display(),
        m.join("").display()
    ));
    sh(&format!(
        "cd '{}' && tar cf - src | (cd '{}' && mkdir tar && cd tar && tar xpf -)",
        local.path().display(),
        m.join("").display()
    ));
    assert_eq!(describe(&m.join("cp")), expected, "cp -a");
    let expected_secs = describe_secs(&local.path().join("src"));
    assert_eq!(describe_secs(&m.join("tar/src")), expected_secs, "tar x");
    // Links resolve through the kernel: a link to a directory is walked.
    assert_eq!(
        std::fs::read_to_string(m.join("cp/lib64/pkg/mod.py")).unwrap(),
        "code\n"
    );
    assert_eq!(
        sh(&format!(
            "find -L '{}' -name mod.py | sort",
            m.join("cp").display()
        ))
        .lines()
        .count(),
        2,
        "find -L walks the link to a directory"
    );
    // chown (root may give files away), chmod, special files.
    sh(&format!(
        "set -e; cd '{}'; chown 4321:8765 cp/lib/key; chmod 4750 cp/bin/run; mkfifo -m 640 cp/fifo",
        m.join("").display()
    ));
    let changed = describe(&m.join("cp"));
    // The kernel forgets every inode it can: nothing may revert.
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    assert_eq!(describe(&m.join("cp")), changed, "after drop_caches");
    let log = m.unmount();
    assert!(!log.contains("metadata not saved"), "{log}");

    let m = Mounted::new(&server, "posix", &[]);
    assert_eq!(describe(&m.join("cp")), changed, "after a remount");
    assert_eq!(
        describe_secs(&m.join("tar/src")),
        expected_secs,
        "after a remount"
    );
    assert_eq!(mode(&m.join("cp/bin/run")) & 0o7777, 0o4750);
    let key = std::fs::metadata(m.join("cp/lib/key")).unwrap();
    assert_eq!((key.uid(), key.gid()), (4321, 8765));
    let fifo = std::fs::symlink_metadata(m.join("cp/fifo")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&fifo.file_type()),
        "a fifo"
    );
    assert_eq!(fifo.permissions().mode() & 0o777, 0o640);
    drop(m);
    // Other S3 clients see a link as an object holding its target, and
    // the metadata as documented JSON.
    assert_eq!(store.get("cp/lib64"), b"lib");
    let segment = store
        .keys()
        .into_keys()
        .find(|k| k.starts_with("cp/.bladefs-meta."))
        .expect("a metadata segment");
    let meta = String::from_utf8(store.get(&segment)).unwrap();
    assert!(
        meta.starts_with(r#"{"format":"bladefs-dir-meta","version":2,"#),
        "{meta}"
    );
}

/// Incremental backups: the second rsync -a after a remount sends nothing.
#[test]
fn rsync_a_after_a_remount_finds_everything_up_to_date() {
    let server = common::start(Kind::CephRgw);
    let _store = Store::new(&server, "rsync");
    let local = tempfile::tempdir().unwrap();
    sample_tree(local.path());
    // Links and directories get an old time: rsync sets their time only
    // when it differs from the new one's by a second or more (so on a local
    // file system too), and ones made a moment ago keep their making's.
    sh(&format!(
        "set -e; cd '{}/src'; for i in $(seq 1 40); do echo $i > f$i; done; chmod 640 f7; \
         find . -type l -o -type d | xargs touch -h -d @1000000000.5",
        local.path().display()
    ));
    let m = Mounted::new(&server, "rsync", &[]);
    let first = sh(&format!(
        "rsync -a --stats '{}/src/' '{}/'",
        local.path().display(),
        m.join("dst").display()
    ));
    assert!(
        first.contains("Number of regular files transferred: 43"),
        "{first}"
    );
    m.unmount();
    let m = Mounted::new(&server, "rsync", &[]);
    let second = sh(&format!(
        "rsync -a --stats --itemize-changes '{}/src/' '{}/'",
        local.path().display(),
        m.join("dst").display()
    ));
    assert!(
        second.contains("Number of regular files transferred: 0"),
        "{second}"
    );
    assert_eq!(
        describe(&m.join("dst")),
        describe(&local.path().join("src"))
    );
}

/// python3 -m venv makes `lib64 -> lib` and `bin/python -> python3`
/// links, then pip installs a wheel into it (built here: no network).
#[test]
fn a_python_venv_is_made_and_pip_installs_into_it() {
    let server = common::start(Kind::CephRgw);
    let _store = Store::new(&server, "venv");
    let work = tempfile::tempdir().unwrap();
    let wheel = work.path().join("hello_bladefs-1.0-py3-none-any.whl");
    sh(&format!(
        r#"python3 - <<'EOF'
import zipfile, hashlib, base64
files = {{
    "hello_bladefs/__init__.py": "def greet():\n    return 'hello from a bucket'\n",
    "hello_bladefs-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: hello-bladefs\nVersion: 1.0\n",
    "hello_bladefs-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}}
record = []
with zipfile.ZipFile("{wheel}", "w") as z:
    for name, text in files.items():
        data = text.encode()
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{{name}},sha256={{digest}},{{len(data)}}")
    record.append("hello_bladefs-1.0.dist-info/RECORD,,")
    z.writestr("hello_bladefs-1.0.dist-info/RECORD", "\n".join(record) + "\n")
EOF"#,
        wheel = wheel.display()
    ));
    let m = Mounted::new(&server, "venv", &[]);
    let venv = m.join("venv");
    sh(&format!("python3 -m venv '{}'", venv.display()));
    sh(&format!(
        "'{}/bin/python' -m pip install --no-index --disable-pip-version-check -q '{}'",
        venv.display(),
        wheel.display()
    ));
    let greet = "import hello_bladefs; print(hello_bladefs.greet())";
    let out = sh(&format!("'{}/bin/python' -c '{greet}'", venv.display()));
    assert_eq!(out.trim(), "hello from a bucket");
    m.unmount();
    // After a remount the venv still runs: its links and executables kept.
    let m = Mounted::new(&server, "venv", &[]);
    let venv = m.join("venv");
    assert!(
        std::fs::symlink_metadata(venv.join("bin/python"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(mode(&venv.join("bin/pip")) & 0o111, 0o111);
    let out = sh(&format!("'{}/bin/python' -c '{greet}'", venv.display()));
    assert_eq!(out.trim(), "hello from a bucket");
}

/// `n` files in each of `dirs` directories under `top`, as another client
/// would write them (no metadata): key and content.
fn tree_of_files(top: &str, dirs: usize, n: usize) -> Vec<(String, Vec<u8>)> {
    (0..dirs)
        .flat_map(|d| {
            (0..n).map(move |i| {
                (
                    format!("{top}/d{d}/f{i}"),
                    format!("{d}:{i}\n").into_bytes(),
                )
            })
        })
        .collect()
}

/// [`describe`] without directories' times, which a change of a name moves
/// in the memory of the mount that made it only (SEMANTICS: Directories'
/// times).
fn describe_but_dir_times(dir: &Path) -> String {
    describe(dir)
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(' ').collect();
            if f[1] == "d" {
                f[4] = "-";
            }
            f.join(" ") + "\n"
        })
        .collect()
}

/// A second mount sees links, modes, owners, times and special files made
/// by the first once the first has synced the directory and one metadata
/// TTL has passed there: nothing is kept only in the first mount's memory.
/// Files another client wrote show the same time in both (one was looked
/// up by HEAD, the other listed).
#[test]
fn a_second_mount_sees_what_the_first_changed_after_one_ttl() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "two");
    store.put_all(&tree_of_files("t", 1, 3));
    let one = Mounted::new(&server, "two", &[]);
    let two = Mounted::new(&server, "two", &["--metadata-ttl", "1"]);
    // The second mount has seen the directory before the change.
    let before = describe(&two.join("t"));
    assert!(before.contains("./d0/f0 f 644 "), "{before}");
    sh(&format!(
        "set -e; cd '{}/t'; chmod 700 d0/f0; chown 7:8 d0/f1; touch -d '2003-04-05 06:07:08.5' d0/f2; \
         ln -s f0 d0/link; mkfifo -m 600 d0/fifo; chmod 750 d0; sync d0 .",
        one.join("").display()
    ));
    let changed = describe_but_dir_times(&one.join("t"));
    assert_ne!(changed, before);
    let mut seen = String::new();
    let start = std::time::Instant::now();
    while seen != changed {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the second mount shows\n{seen}\nnot\n{changed}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        seen = describe_but_dir_times(&two.join("t"));
    }
    let stat = std::fs::symlink_metadata(two.join("t/d0/f1")).unwrap();
    assert_eq!((stat.uid(), stat.gid()), (7, 8));
    assert_eq!(
        std::fs::read_link(two.join("t/d0/link")).unwrap(),
        Path::new("f0")
    );
    one.unmount();
    two.unmount();
}

/// Runs `cmd` on mount `m` and kills the daemon (SIGKILL) once `started`
/// holds, so that the crash lands in the middle of the command; the
/// command's own failure after that is expected.
fn crash_during(
    m: Mounted,
    cmd: &mut std::process::Command,
    what: &str,
    started: impl FnMut() -> bool,
) {
    let mut child = cmd.stderr(std::process::Stdio::null()).spawn().unwrap();
    common::wait_for(what, started);
    m.kill_9();
    let _ = child.wait();
}

/// A crash in the middle of `chmod -R` (kill -9 once the first coalesced
/// metadata object is in the bucket) leaves every file with its content and
/// either its old or its new mode: never a lost or unreadable file, never
/// a directory that fails to list.
#[test]
fn kill_9_during_chmod_r_leaves_each_file_with_its_old_or_new_mode() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "chmodcrash");
    let files = tree_of_files("t", 10, 30);
    store.put_all(&files);
    let m = Mounted::new(&server, "chmodcrash", &[]);
    let mut chmod = std::process::Command::new("chmod");
    chmod.args(["-R", "u=rwx,go="]).arg(m.join("t"));
    crash_during(m, &mut chmod, "a metadata object in the bucket", || {
        store.keys().keys().any(|k| k.contains("/.bladefs-meta."))
    });

    let m = Mounted::new(&server, "chmodcrash", &[]);
    let mut changed = 0;
    for (key, body) in &files {
        let path = m.join(key);
        assert_eq!(&std::fs::read(&path).unwrap(), body, "{key}");
        match mode(&path) & 0o7777 {
            0o644 => {}
            0o700 => changed += 1,
            other => panic!("{key}: mode {other:o}"),
        }
    }
    for d in 0..10 {
        let dir = m.join(&format!("t/d{d}"));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 30);
        assert!(matches!(mode(&dir) & 0o7777, 0o755 | 0o700), "{dir:?}");
    }
    println!(
        "{changed} of {} files had their new mode saved",
        files.len()
    );
    let log = m.unmount();
    assert!(!log.contains("metadata object unreadable"), "{log}");
}

/// A crash in the middle of a directory move (kill -9 once the first copy
/// is in the bucket) loses no file and points no name at the wrong object:
/// each name is under the old directory, the new one or both, with its
/// content; a link is a link to its target or, where its metadata did not
/// make it, a plain file holding the target (the worst case by design).
#[test]
fn kill_9_during_a_directory_move_with_links_loses_nothing() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "mvcrash");
    let files = tree_of_files("src", 4, 60);
    store.put_all(&files);
    let m = Mounted::new(&server, "mvcrash", &[]);
    sh(&format!(
        "set -e; cd '{}/src'; for d in d0 d1 d2 d3; do ln -s f1 $d/link1; ln -s ../d0/f2 $d/up; chmod 600 $d/f3; done",
        m.join("").display()
    ));
    m.unmount();
    let links: Vec<(String, &str)> = (0..4)
        .flat_map(|d| {
            [
                (format!("d{d}/link1"), "f1"),
                (format!("d{d}/up"), "../d0/f2"),
            ]
        })
        .collect();

    let m = Mounted::new(&server, "mvcrash", &[]);
    let mut mv = std::process::Command::new("mv");
    mv.arg(m.join("src")).arg(m.join("dst"));
    crash_during(m, &mut mv, "a first copy under dst/", || {
        store.keys().keys().any(|k| k.starts_with("dst/"))
    });

    let m = Mounted::new(&server, "mvcrash", &[]);
    let places = |rel: &str| -> Vec<std::path::PathBuf> {
        ["src", "dst"]
            .iter()
            .map(|top| m.join(&format!("{top}/{rel}")))
            .filter(|p| std::fs::symlink_metadata(p).is_ok())
            .collect()
    };
    for (key, body) in &files {
        let rel = key.strip_prefix("src/").unwrap();
        let found = places(rel);
        assert!(!found.is_empty(), "{rel} lost");
        for p in found {
            assert_eq!(&std::fs::read(&p).unwrap(), body, "{p:?}");
        }
    }
    let mut as_links = 0;
    for (rel, target) in &links {
        let found = places(rel);
        assert!(!found.is_empty(), "{rel} lost");
        for p in found {
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                as_links += 1;
                assert_eq!(std::fs::read_link(&p).unwrap(), Path::new(target), "{p:?}");
            } else {
                assert!(meta.is_file(), "{p:?}");
                assert_eq!(std::fs::read(&p).unwrap(), target.as_bytes(), "{p:?}");
            }
        }
    }
    assert!(as_links >= links.len(), "one whole place keeps its links");
    m.unmount();
}
