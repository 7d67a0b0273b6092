//! The Debian package, as an operator meets it: built by scripts/package
//! (from this build's binaries), installed with dpkg, mounted with
//! `mount -t bladefs` and from an fstab line of type `bladefs` through the
//! installed helper, man pages found by man(1), then removed with dpkg.

#[macro_use]
mod common;

use std::path::Path;
use std::process::Command;

use common::Kind;
use common::mount::{credentials_file, daemon_pid, is_mounted, run};
use common::store::Store;

/// Files the package must install.
const INSTALLED: &[&str] = &[
    "/usr/bin/bladefs",
    "/usr/bin/bladefs-s3",
    "/sbin/mount.bladefs",
    "/lib/systemd/system/bladefs@.service",
    "/usr/share/bash-completion/completions/bladefs",
    "/usr/share/doc/bladefs/copyright",
    "/usr/share/doc/bladefs/bladefs-dashboard.json",
];

fn unmount_and_wait(mnt: &Path) {
    let pid = daemon_pid(mnt).expect("the daemon serving the mount");
    run("umount", &[mnt.to_str().unwrap()]);
    assert!(!is_mounted(mnt));
    common::wait_for("the daemon to exit", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
}

fn fs_type(mnt: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(mnt.to_str().unwrap()))
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[test]
fn the_package_installs_mounts_and_removes_cleanly() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "dpkg and mount(8) need root");
    let bins = Path::new(env!("CARGO_BIN_EXE_bladefs")).parent().unwrap();
    let work = tempfile::tempdir().unwrap();
    let built = run(
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/package"),
        &[
            "--prebuilt",
            bins.to_str().unwrap(),
            "--out",
            work.path().to_str().unwrap(),
        ],
    );
    let deb = built.trim();
    assert!(deb.ends_with(".deb"), "{built}");
    let info = run("dpkg-deb", &["--field", deb, "Package", "Depends"]);
    assert!(
        info.contains("Package: bladefs") && info.contains("fuse3"),
        "{info}"
    );

    run("dpkg", &["-i", deb]);
    for path in INSTALLED {
        assert!(Path::new(path).exists(), "{path} installed");
    }
    let man = run("man", &["-w", "bladefs"]);
    assert!(man.trim().ends_with("man8/bladefs.8.gz"), "{man}");
    let page = run("man", &["-w", "bladefs-s3"]);
    assert!(page.trim().ends_with("man1/bladefs-s3.1.gz"), "{page}");
    // The man page is the --help of the installed binary, not a copy.
    let text = Command::new("man")
        .args(["-P", "cat", "bladefs"])
        .env("MANWIDTH", "200")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("--metadata-ttl"), "{text}");

    let server = common::start(Kind::S3sFs);
    let store = Store::new(&server, "pkg");
    store.put("hello.txt", b"from the store".to_vec());
    let creds = credentials_file(work.path(), &server, &server.secret_key);
    let options = format!(
        "endpoint={},credentials_file={},no_list_url_encoding,_netdev",
        server.endpoint,
        creds.display()
    );
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();

    // mount -t bladefs: mount(8) runs /sbin/mount.bladefs.
    run(
        "mount",
        &[
            "-t",
            "bladefs",
            "pkg",
            mnt.to_str().unwrap(),
            "-o",
            &options,
        ],
    );
    assert_eq!(fs_type(&mnt), format!("pkg {} fuse.bladefs", mnt.display()));
    assert_eq!(
        std::fs::read_to_string(mnt.join("hello.txt")).unwrap(),
        "from the store"
    );
    std::fs::write(mnt.join("written.txt"), b"through mount -t").unwrap();
    unmount_and_wait(&mnt);
    assert_eq!(store.get("written.txt"), b"through mount -t");

    // An fstab line of type bladefs (a table of its own: mount -T).
    let fstab = work.path().join("fstab");
    std::fs::write(
        &fstab,
        format!("pkg:sub {} bladefs {options} 0 0\n", mnt.display()),
    )
    .unwrap();
    run(
        "mount",
        &["-T", fstab.to_str().unwrap(), mnt.to_str().unwrap()],
    );
    assert_eq!(
        fs_type(&mnt),
        format!("pkg:sub {} fuse.bladefs", mnt.display())
    );
    std::fs::write(mnt.join("f"), b"through fstab").unwrap();
    unmount_and_wait(&mnt);
    assert_eq!(store.get("sub/f"), b"through fstab");

    run("dpkg", &["-r", "bladefs"]);
    for path in INSTALLED {
        assert!(!Path::new(path).exists(), "{path} removed");
    }
    let status = Command::new("dpkg")
        .args(["-s", "bladefs"])
        .output()
        .unwrap();
    assert!(!status.status.success(), "no longer installed");
}
