//! The `bladefs-s3` command against a real s3s-fs (and Ceph RGW for
//! versioning): it works end to end,
//! refuses a credentials file others can read, fails clearly on a wrong
//! secret, and never prints a secret, even with every log level on.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{Kind, Server};

fn credentials_file(dir: &Path, key: &str, secret: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join(format!("creds-{mode:o}"));
    std::fs::write(
        &path,
        format!("[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn run(server: &Server, creds: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bladefs-s3"))
        .args(["--endpoint", &server.endpoint, "--credentials-file"])
        .arg(creds)
        .args(args)
        .env("BLADEFS_LOG", "trace")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("run bladefs-s3")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn works_and_never_prints_the_secret() {
    let server = common::start(Kind::S3sFs);
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &server.access_key, &server.secret_key, 0o600);
    let file = dir.path().join("in.bin");
    let body = common::data(12 * 1024 * 1024, 11);
    std::fs::write(&file, &body).unwrap();
    let back = dir.path().join("out.bin");

    let mut all = String::new();
    for args in [
        vec!["mb", "clitest"],
        vec![
            "--part-size-mib",
            "5",
            "put",
            file.to_str().unwrap(),
            "clitest/dir/in.bin",
        ],
        vec!["ls", "clitest/dir/"],
        vec![
            "--stats",
            "--part-size-mib",
            "5",
            "get",
            "clitest/dir/in.bin",
            back.to_str().unwrap(),
        ],
        vec!["stat", "clitest/dir/in.bin"],
    ] {
        let out = run(&server, &creds, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        all.push_str(&text(&out));
    }
    assert!(all.contains("dir/in.bin"), "{all}");
    assert!(all.contains("size 12582912"), "{all}");
    assert!(
        std::fs::read(&back).unwrap() == body,
        "downloaded bytes differ"
    );
    // Multipart was used (3 parts of 5 MiB) and counted.
    assert!(
        all.contains("GetObject") && all.contains("requests      3"),
        "{all}"
    );
    // Trace logging was really on, and still no secret anywhere.
    assert!(all.contains("s3 request"), "trace logs missing:\n{all}");
    assert!(!all.contains(&server.secret_key), "secret printed");
}

#[test]
fn refuses_an_open_credentials_file() {
    let server = common::start(Kind::S3sFs);
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &server.access_key, &server.secret_key, 0o644);
    let out = run(&server, &creds, &["ls"]);
    assert!(!out.status.success());
    let shown = text(&out);
    assert!(shown.contains("chmod 600"), "{shown}");
    assert!(!shown.contains(&server.secret_key));
}

#[test]
fn wrong_secret_fails_clearly() {
    let server = common::start(Kind::S3sFs);
    let dir = tempfile::tempdir().unwrap();
    let wrong = "0000wrong0000secret0000wrong0000secret00";
    let creds = credentials_file(dir.path(), &server.access_key, wrong, 0o600);
    let out = run(&server, &creds, &["mb", "nope"]);
    assert!(!out.status.success());
    let shown = text(&out);
    assert!(shown.contains("SignatureDoesNotMatch"), "{shown}");
    assert!(!shown.contains(wrong), "{shown}");
}

#[test]
fn versioning_is_shown_and_turned_on_and_off() {
    let server = common::start(Kind::CephRgw);
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &server.access_key, &server.secret_key, 0o600);
    let ok = |args: &[&str]| {
        let out = run(&server, &creds, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    ok(&["mb", "vercli"]);
    assert_eq!(ok(&["versioning", "vercli"]), "Unversioned");
    assert_eq!(ok(&["versioning", "vercli", "on"]), "Enabled");
    assert_eq!(ok(&["versioning", "vercli", "off"]), "Suspended");
    let bad = run(&server, &creds, &["versioning", "vercli", "maybe"]);
    assert!(!bad.status.success());
}
