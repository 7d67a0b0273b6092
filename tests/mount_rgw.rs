//! Real mounts on Ceph RGW, the test server that verifies SigV2 as well as
//! SigV4: a `--sigv2` mount end to end, and a wrong secret refused at mount
//! with either signature.

mod common;

use common::mount::{Mounted, bladefs_command, credentials_file};
use common::store::{Store, sha};
use common::{Kind, data};

#[test]
fn a_sigv2_mount_reads_and_writes_and_a_wrong_secret_is_refused() {
    let server = common::start(Kind::CephRgw);
    let store = Store::new(&server, "sigtwo");
    store.put("seeded/a.txt", b"from the S3 API".to_vec());
    let m = Mounted::new(&server, "sigtwo", &["--sigv2"]);
    assert_eq!(
        std::fs::read(m.join("seeded/a.txt")).unwrap(),
        b"from the S3 API"
    );
    // Small and multipart (12 MiB: parts of 8 MiB by default), each
    // request signed with SigV2 and checked by the server.
    let small = data(1000, 1);
    let big = data(12 << 20, 2);
    std::fs::write(m.join("small.bin"), &small).unwrap();
    std::fs::create_dir(m.join("dir")).unwrap();
    std::fs::write(m.join("dir/big.bin"), &big).unwrap();
    std::fs::rename(m.join("small.bin"), m.join("dir/moved.bin")).unwrap();
    assert_eq!(
        sha(&std::fs::read(m.join("dir/big.bin")).unwrap()),
        sha(&big)
    );
    let mut names: Vec<String> = std::fs::read_dir(m.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["big.bin", "moved.bin"]);
    let log = m.unmount();
    assert!(
        log.contains("signature=\"SigV2\""),
        "the mount says how it signs: {log}"
    );
    assert_eq!(store.get("dir/moved.bin"), small);
    assert_eq!(sha(&store.get("dir/big.bin")), sha(&big));
    assert!(!store.keys().contains_key("small.bin"));
    store.assert_no_uploads_left();

    for sigv2 in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let creds = credentials_file(dir.path(), &server, "not-the-secret-of-this-key");
        let mut cmd = bladefs_command(&server, &creds, "sigtwo", &mnt);
        cmd.arg("--foreground");
        if sigv2 {
            cmd.arg("--sigv2");
        }
        let out = cmd.output().unwrap();
        assert!(
            !out.status.success(),
            "sigv2={sigv2}: mounted with a wrong secret"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refused"), "sigv2={sigv2}: {err}");
        assert!(!common::mount::is_mounted(&mnt));
    }
}
