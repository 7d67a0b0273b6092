//! Several hosts on one bucket through real mounts: three bladefs daemons
//! (default options) on one bucket of Ceph RGW or Garage stand for three
//! hosts, driven by shell tools (the layer below: tests/core_hosts.rs).
//! What docs/SEMANTICS.md "Several hosts" promises: an open after another
//! mount's close reads what was closed; symlinks, modes and times made at
//! once by all three in one directory all survive; a mount killed with
//! kill -9 costs the others nothing; `echo x > f` adds one version.

#[macro_use]
mod common;

use std::os::unix::fs::MetadataExt;

use bladefs::s3::{ListVersionsParams, ObjectClient};
use common::mount::Mounted;
use common::store::{Store, runtime, sh};
use common::{Kind, Server};

fn three(server: &Server, bucket: &str) -> Vec<Mounted> {
    (0..3).map(|_| Mounted::new(server, bucket, &[])).collect()
}

on_servers_blocking!(an_open_after_another_mount_s_close_reads_what_was_closed: garage => Kind::Garage, rgw => Kind::CephRgw);
fn an_open_after_another_mount_s_close_reads_what_was_closed(kind: Kind) {
    let server = common::start(kind);
    let _store = Store::new(&server, "c2o");
    let m = three(&server, "c2o");
    std::fs::write(m[0].join("c2o.txt"), b"first").unwrap();
    for r in &m {
        // Every mount has the file's attributes and pages cached.
        assert_eq!(std::fs::read(r.join("c2o.txt")).unwrap(), b"first");
    }
    let mut stale = Vec::new();
    for round in 0..20 {
        let want = format!("round {round} {}\n", "x".repeat(round * 37 % 101));
        let (writer, reader) = (&m[round % 3], &m[(round + 1) % 3]);
        std::fs::write(writer.join("c2o.txt"), &want).unwrap();
        match std::fs::read(reader.join("c2o.txt")) {
            Ok(got) if got == want.as_bytes() => {}
            other => stale.push((round, other.map(|b| b.len()))),
        }
    }
    assert!(stale.is_empty(), "stale or failed reads: {stale:?}");
    for r in m {
        r.unmount();
    }
}

on_servers_blocking!(three_mounts_making_links_modes_and_times_at_once_lose_nothing: garage => Kind::Garage, rgw => Kind::CephRgw);
fn three_mounts_making_links_modes_and_times_at_once_lose_nothing(kind: Kind) {
    let server = common::start(kind);
    let store = Store::new(&server, "meta3");
    for m in 0..3 {
        for i in 0..40 {
            store.put(&format!("shared/f{m}_{i:02}"), b"data".to_vec());
        }
    }
    let mounts = three(&server, "meta3");
    std::thread::scope(|s| {
        for (m, mount) in mounts.iter().enumerate() {
            let dir = mount.join("shared");
            s.spawn(move || {
                sh(&format!(
                    "set -e; cd '{}'; for n in $(seq 0 39); do
                       i=$(printf %02d $n)
                       ln -s f{m}_$i l{m}_$i
                       chmod 60{m} f{m}_$i
                       touch -d @$((1000000 + n)) f{m}_$i
                     done",
                    dir.display()
                ));
            });
        }
    });
    for m in mounts {
        m.unmount();
    }
    let fresh = Mounted::new(&server, "meta3", &[]);
    let (mut links, mut modes, mut times) = (0, 0, 0);
    for m in 0..3u32 {
        for i in 0..40i64 {
            let l = std::fs::symlink_metadata(fresh.join(&format!("shared/l{m}_{i:02}"))).unwrap();
            links += usize::from(l.file_type().is_symlink());
            let f = std::fs::metadata(fresh.join(&format!("shared/f{m}_{i:02}"))).unwrap();
            modes += usize::from(f.mode() & 0o7777 == 0o600 + m);
            times += usize::from(f.mtime() == 1_000_000 + i);
        }
    }
    assert_eq!((links, modes, times), (120, 120, 120));
    fresh.unmount();
}

/// One mount is killed (kill -9) while it changes a directory that the
/// two others keep changing: after a fresh mount every change of the
/// survivors is there, and nothing the killed one wrote broke anything.
#[test]
fn a_killed_mount_costs_the_others_nothing() {
    let server = common::start(Kind::CephRgw);
    let store = Store::new(&server, "killed");
    for i in 0..90 {
        store.put(&format!("d/f{i:02}"), b"data".to_vec());
    }
    let mut mounts = three(&server, "killed");
    let doomed = mounts.pop().unwrap();
    let mut busy = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && while :; do for i in $(seq -w 60 89); do chmod 700 f$i; chmod 711 f$i; done; done",
            doomed.join("d").display()
        ))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for("a segment of the doomed mount", || {
        store
            .keys()
            .keys()
            .any(|k| k.starts_with("d/.bladefs-meta."))
    });
    std::thread::scope(|s| {
        for (m, mount) in mounts.iter().enumerate() {
            let dir = mount.join("d");
            s.spawn(move || {
                sh(&format!(
                    "set -e; cd '{}'; for i in $(seq -w {} 3 59); do chmod 64{m} f$i; ln -s f$i l{m}_$i; done",
                    dir.display(),
                    m,
                ));
            });
        }
        // Killed while the others are at work.
        doomed.kill_9();
    });
    let _ = busy.kill();
    let _ = busy.wait();
    // The survivors go on after the kill.
    for (m, mount) in mounts.iter().enumerate() {
        sh(&format!(
            "set -e; cd '{}'; for i in $(seq -w {} 3 59); do touch -d @{} f$i; done",
            mount.join("d").display(),
            m,
            2_000_000 + m
        ));
    }
    for m in mounts {
        m.unmount();
    }
    let fresh = Mounted::new(&server, "killed", &[]);
    let mut lost = Vec::new();
    for i in 0..60usize {
        let m = i % 3;
        if m == 2 {
            continue;
        }
        let f = std::fs::metadata(fresh.join(&format!("d/f{i:02}"))).unwrap();
        let l = std::fs::symlink_metadata(fresh.join(&format!("d/l{m}_{i:02}"))).unwrap();
        if f.mode() & 0o7777 != 0o640 + m as u32
            || f.mtime() != 2_000_000 + m as i64
            || !l.file_type().is_symlink()
        {
            lost.push(i);
        }
    }
    assert!(lost.is_empty(), "survivors' changes lost: {lost:?}");
    // What the dead one was changing is in one of its states.
    for i in 60..90 {
        let mode = std::fs::metadata(fresh.join(&format!("d/f{i:02}")))
            .unwrap()
            .mode()
            & 0o7777;
        assert!([0o644, 0o700, 0o711].contains(&mode), "f{i}: {mode:o}");
    }
    fresh.unmount();
}

/// `echo x > f` on a versioned bucket: one new version, never an empty
/// one (bash closes a dup of the truncated file before it writes).
#[test]
fn a_redirection_into_a_file_adds_exactly_one_version() {
    let server = common::start(Kind::CephRgw);
    let store = Store::new(&server, "redirect");
    runtime()
        .block_on(store.client.put_bucket_versioning("redirect", true))
        .unwrap();
    let m = Mounted::new(&server, "redirect", &[]);
    let f = m.join("hello.txt");
    let versions = || -> Vec<u64> {
        runtime()
            .block_on(store.client.list_object_versions(
                "redirect",
                &ListVersionsParams {
                    prefix: "hello.txt".into(),
                    ..Default::default()
                },
            ))
            .unwrap()
            .versions
            .iter()
            .map(|v| v.size)
            .collect()
    };
    sh(&format!("echo 'hello, world' > '{}'", f.display()));
    assert_eq!(versions(), vec![13]);
    sh(&format!("echo 'hello again' > '{}'", f.display()));
    assert_eq!(versions().len(), 2, "{:?}", versions());
    assert!(!versions().contains(&0), "{:?}", versions());
    assert_eq!(std::fs::read(&f).unwrap(), b"hello again\n");
    // `: > f` still ends as an empty file, published by the shell's last
    // close of it (the daemon reads in /proc that no other descriptor
    // holds it), so it is in the bucket when the command returns.
    sh(&format!(": > '{}'", f.display()));
    assert_eq!(versions(), vec![0, 12, 13]);
    // A new file: `touch` is there at once, `echo x > new` one version.
    let touched = m.join("touched");
    sh(&format!("touch '{}'", touched.display()));
    let head = |key: &str| runtime().block_on(store.client.head_object("redirect", key, None));
    assert_eq!(head("touched").expect("touched file in the bucket").size, 0);
    sh(&format!("echo new > '{}'", m.join("new.txt").display()));
    let new_versions = runtime()
        .block_on(store.client.list_object_versions(
            "redirect",
            &ListVersionsParams {
                prefix: "new.txt".into(),
                ..Default::default()
            },
        ))
        .unwrap()
        .versions;
    assert_eq!(
        new_versions.iter().map(|v| v.size).collect::<Vec<_>>(),
        vec![4]
    );
    m.unmount();
}
