//! Write-back (`--write-back DIR`) through real mounts on real servers
//! (the layer below: tests/core_writeback.rs). A daemon killed with
//! `kill -9` in the middle of copying 1000 files, and in the middle of a
//! 1 GiB write: the next mount with the same journal stores every file
//! whose close returned, byte for byte, and nothing else as complete. A
//! full journal disk is ENOSPC at write, and loses nothing closed.

#[macro_use]
mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::mount::Mounted;
use common::store::Store;
use common::writeback::{holding_puts, replayed, write_file};
use common::{Kind, data, wait_for};

const FILES: usize = 1000;
const MIB: usize = 1 << 20;

fn small(i: usize) -> Vec<u8> {
    data(4096, i as u64)
}

on_servers_blocking!(a_kill_9_in_the_middle_of_cp_of_1000_files_loses_no_closed_file: garage => Kind::Garage, rgw => Kind::CephRgw);
fn a_kill_9_in_the_middle_of_cp_of_1000_files_loses_no_closed_file(kind: Kind) {
    let server = common::start(kind);
    let store = Store::new(&server, "wbcp");
    store.put("f0007", b"an older f0007".to_vec());
    let rt = common::background_runtime();
    let proxy = holding_puts(&rt, &server, "wbcp");
    let journal = tempfile::tempdir().unwrap();
    let wb = ["--write-back", journal.path().to_str().unwrap()];
    let m = Mounted::at(&server, &proxy.endpoint, "wbcp", &wb);

    let closed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (closed, stop, root) = (closed.clone(), stop.clone(), m.path.clone());
        std::thread::spawn(move || {
            for i in 0..FILES {
                if stop.load(Ordering::SeqCst)
                    || write_file(&root.join(format!("f{i:04}")), &small(i)).is_err()
                {
                    return;
                }
                closed.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    wait_for("half the files closed", || {
        closed.load(Ordering::SeqCst) >= FILES / 2
    });
    m.kill_9();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let done = closed.load(Ordering::SeqCst);
    assert!(done < FILES, "the kill came after the copy");
    let files = |keys: std::collections::BTreeMap<String, u64>| -> Vec<String> {
        keys.into_keys()
            .filter(|k| !k.starts_with(".bladefs"))
            .collect()
    };
    assert_eq!(files(store.keys()), vec!["f0007"], "uploads were held");

    // The next mount, the store reachable, the same journal.
    proxy.release(1 << 30);
    let m = Mounted::at(&server, &proxy.endpoint, "wbcp", &wb);
    assert!(replayed(&m.log_text()) >= done as u64, "{}", m.log_text());
    let keys = files(store.keys());
    for i in 0..done {
        let key = format!("f{i:04}");
        assert_eq!(store.get(&key), small(i), "{key}, closed before the kill");
    }
    for key in &keys {
        let i: usize = key[1..].parse().unwrap();
        assert_eq!(
            store.get(key),
            small(i),
            "{key} is stored whole or not at all"
        );
    }
    assert_eq!(std::fs::read(m.join("f0001")).unwrap(), small(1));
    let log = m.unmount();
    // Nothing is left for a third mount.
    let m = Mounted::at(&server, &proxy.endpoint, "wbcp", &wb);
    assert_eq!(replayed(&m.log_text()), 0, "{log}");
    m.unmount();
}

/// The journal on a disk that fills: the write that finds no room gets
/// ENOSPC; what was closed before is stored; once room is made again,
/// writes go on.
#[test]
fn a_full_journal_disk_is_enospc_at_write_and_loses_nothing() {
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "wbfull");
    let disk = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(disk.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "mount tmpfs: {out:?}");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _tmpfs = Unmount(disk.path());
    let m = Mounted::new(
        &server,
        "wbfull",
        &["--write-back", disk.path().to_str().unwrap()],
    );
    let before = data(MIB, 5);
    write_file(&m.join("before.bin"), &before).unwrap();
    // Larger than the disk: some write fails, and with ENOSPC.
    let mut f = std::fs::File::create(m.join("huge.bin")).unwrap();
    let chunk = data(MIB, 6);
    let err = (0..64)
        .find_map(|_| f.write_all(&chunk).err())
        .expect("a write past the disk's size failed");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(f);
    std::fs::remove_file(m.join("huge.bin")).unwrap();
    let after = data(MIB, 7);
    write_file(&m.join("after.bin"), &after).unwrap();
    m.unmount();
    assert_eq!(store.get("before.bin"), before);
    assert_eq!(store.get("after.bin"), after);
    assert!(!store.keys().contains_key("huge.bin"));
}

/// rsync writes each file under a temporary name, sets its mode and time,
/// and renames it: with write-back, queued files move by their journal
/// entries. After the unmount (the queue drained) the bucket holds every
/// file under its own name, and a fresh mount shows their modes and times.
#[test]
fn rsync_into_a_write_back_mount_stores_every_file_with_its_attributes() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let server = common::start(Kind::Garage);
    let store = Store::new(&server, "wbrsync");
    let src = tempfile::tempdir().unwrap();
    for i in 0..50 {
        let p = src.path().join(format!("f{i:02}"));
        std::fs::write(&p, small(i)).unwrap();
        std::fs::set_permissions(
            &p,
            std::fs::Permissions::from_mode(0o600 + (i as u32 % 2) * 0o40),
        )
        .unwrap();
    }
    let journal = tempfile::tempdir().unwrap();
    let rt = common::background_runtime();
    let proxy = holding_puts(&rt, &server, "wbrsync");
    let m = Mounted::at(
        &server,
        &proxy.endpoint,
        "wbrsync",
        &["--write-back", journal.path().to_str().unwrap()],
    );
    store.put("dst/", Vec::new());
    let out = std::process::Command::new("rsync")
        .args(["-a", &format!("{}/", src.path().display())])
        .arg(m.join("dst"))
        .output()
        .unwrap();
    assert!(out.status.success(), "rsync: {out:?}");
    // Every file was renamed while its upload was held: all still queued.
    proxy.release(1 << 30);
    let log = m.unmount();
    // The renames moved journal entries: nothing was copied in the store.
    assert_eq!(common::mount::requests(&log, "CopyObject"), 0);
    assert!(common::mount::requests(&log, "PutObject") >= 50);
    let keys: Vec<String> = store
        .keys()
        .into_keys()
        .filter(|k| !k.contains(".bladefs"))
        .collect();
    let want: Vec<String> = std::iter::once("dst/".to_string())
        .chain((0..50).map(|i| format!("dst/f{i:02}")))
        .collect();
    assert_eq!(keys, want, "no temporary names left");
    let m = Mounted::new(&server, "wbrsync", &[]);
    for i in 0..50 {
        let name = format!("f{i:02}");
        let (a, b) = (
            std::fs::metadata(src.path().join(&name)).unwrap(),
            std::fs::metadata(m.join(&format!("dst/{name}"))).unwrap(),
        );
        assert_eq!(store.get(&format!("dst/{name}")), small(i));
        assert_eq!(b.mode() & 0o7777, a.mode() & 0o7777, "{name}");
        assert_eq!(b.mtime(), a.mtime(), "{name}");
    }
    m.unmount();
}
