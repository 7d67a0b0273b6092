//! Write-back: a daemon killed with `kill -9` in the middle of a 1 GiB
//! write stores, at the next mount with its journal, what was closed
//! before, and not the file being written. Alone in its test binary, one
//! server after the other: a process forked by a test running beside it
//! would inherit the file's descriptor and close it (a FLUSH), and a
//! close, by anyone, journals the file as it stands.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::mount::Mounted;
use common::store::Store;
use common::writeback::{holding_puts, replayed, write_file};
use common::{Kind, data, wait_for};

const MIB: usize = 1 << 20;

#[test]
fn a_kill_9_in_the_middle_of_a_1_gib_write_stores_only_what_was_closed() {
    for kind in [Kind::Garage, Kind::CephRgw] {
        kill_in_a_1_gib_write(kind);
    }
}

fn kill_in_a_1_gib_write(kind: Kind) {
    let server = common::start(kind);
    let store = Store::new(&server, "wbbig");
    store.put("big.bin", b"the old big.bin".to_vec());
    let rt = common::background_runtime();
    let proxy = holding_puts(&rt, &server, "wbbig");
    let journal = tempfile::tempdir().unwrap();
    let wb = ["--write-back", journal.path().to_str().unwrap()];
    let m = Mounted::at(&server, &proxy.endpoint, "wbbig", &wb);

    let ten = data(10 * MIB, 1);
    write_file(&m.join("ten.bin"), &ten).unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (written, path) = (written.clone(), m.join("big.bin"));
        std::thread::spawn(move || {
            let Ok(mut f) = std::fs::File::create(path) else {
                return;
            };
            let chunk = data(MIB, 2);
            for i in 0..1024 {
                if f.write_all(&chunk).is_err() {
                    return;
                }
                written.store(i + 1, Ordering::SeqCst);
            }
            panic!("a 1 GiB write finished before the kill");
        })
    };
    wait_for("256 MiB written", || written.load(Ordering::SeqCst) >= 256);
    let killed = m.kill_9();
    writer.join().unwrap();

    proxy.release(1 << 30);
    let m = Mounted::at(&server, &proxy.endpoint, "wbbig", &wb);
    let got = replayed(&m.log_text());
    if got != 1 {
        let ops: Vec<&str> = killed
            .lines()
            .filter(|l| l.contains("big.bin") || l.contains("write-back"))
            .take(60)
            .collect();
        panic!("replayed {got}:\n{}\n---\n{}", ops.join("\n"), m.log_text());
    }
    assert_eq!(store.get("ten.bin"), ten);
    assert_eq!(store.get("big.bin"), b"the old big.bin", "never closed");
    m.unmount();
}
