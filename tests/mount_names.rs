//! A bucket written by another client (boto3, from the moto venv the
//! harness installs) with keys no file system would make: empty and dot
//! segments, a 1024-byte key, control characters, names differing only in
//! case or in unicode normalisation, `x` beside `x/y`, names longer than
//! NAME_MAX. Through a real mount
//! on Garage the listings must be consistent, every reachable file must
//! read as its own object, and what cannot be shown must be left out as
//! docs/SEMANTICS.md says, never crash the daemon or touch other keys.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::mount::{Mounted, run};
use common::store::Store;
use common::{Kind, Server};

/// Writes each key with its own name as content, with boto3.
fn put_with_boto3(server: &Server, bucket: &str, keys: &[String]) {
    let python = common::tools_dir().join("venv/bin/python");
    let script = r#"
import sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],
                  config=Config(s3={"addressing_style": "path"}))
for line in sys.stdin:
    key = bytes.fromhex(line.strip()).decode("utf-8")
    s3.put_object(Bucket=sys.argv[4], Key=key, Body=key.encode("utf-8"))
"#;
    let mut child = Command::new(&python)
        .args(["-c", script, &server.endpoint, &server.access_key])
        .arg(&server.secret_key)
        .arg(bucket)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/install-test-servers",
                python.display()
            )
        });
    let mut stdin = child.stdin.take().unwrap();
    for k in keys {
        writeln!(stdin, "{}", hex::encode(k.as_bytes())).unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success(), "boto3 put failed");
}

/// Every file under `root` (relative path, content) and every directory.
fn walk(root: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut files = BTreeMap::new();
    let mut dirs = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type().unwrap().is_dir() {
                dirs.push(path.clone());
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(root.join(&path)).unwrap());
            }
        }
    }
    dirs.sort();
    (files, dirs)
}

on_servers_blocking!(hostile_keys_from_another_client: garage => Kind::Garage, rgw => Kind::CephRgw);
fn hostile_keys_from_another_client(kind: Kind) {
    let server = common::start(kind);
    let store = Store::new(&server, "hostile");
    let long = format!(
        "long/{}/{}",
        vec!["L".repeat(200); 4].join("/"),
        "f".repeat(215)
    );
    assert_eq!(long.len(), 1024, "the longest key S3 allows");
    let shown: Vec<String> = [
        long.as_str(),
        "ctl/\u{1}\u{2}",
        "ctl/tab\there",
        "ctl/new\nline",
        "ctl/del\u{7f}",
        "case/Name.txt",
        "case/name.txt",
        "case/NAME.TXT",
        "uni/caf\u{e9}",
        "uni/cafe\u{301}",
        "x/y",
        "odd/sp ace",
        "odd/pct%41",
        "odd/plus+sign",
        "odd/q?a=b&c#d",
        "odd/star*",
        "odd/quote\"'",
        "odd/back\\slash",
        "odd/emoji\u{1f600}",
        "odd/trailing ",
        "odd/ leading",
        "odd/.hidden",
        "odd/...",
        // Longer than NAME_MAX (255) but within FUSE's 1024: shown.
        &format!("longname/{}", "n".repeat(600)),
        &format!("longname/{}", "é".repeat(400)),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let hidden: Vec<String> = ["a//b", "./x", "../x", "d/./y", "d/../z", "x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    put_with_boto3(
        &server,
        "hostile",
        &[shown.clone(), hidden.clone()].concat(),
    );
    let keys = store.keys();
    for k in shown.iter().chain(&hidden) {
        assert!(keys.contains_key(k), "the server kept {k:?}");
    }

    let m = Mounted::new(&server, "hostile", &[]);
    let (files, dirs) = walk(&m.path);
    let want: BTreeMap<String, Vec<u8>> = shown
        .iter()
        .map(|k| (k.clone(), k.clone().into_bytes()))
        .collect();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert!(files == want, "every file reads as its own object");
    // Directories that hold only keys that cannot be shown still show,
    // empty: their keys exist.
    for d in ["a", "d", "x", "ctl", "uni", "longname"] {
        assert!(dirs.contains(&d.to_string()), "{d} in {dirs:?}");
    }
    for d in ["a", "d"] {
        assert_eq!(std::fs::read_dir(m.join(d)).unwrap().count(), 0, "{d}");
    }
    // The directory wins over the object `x`.
    assert!(m.join("x").is_dir());
    // A second walk, now from the caches, agrees with the first.
    assert!(walk(&m.path) == (files.clone(), dirs.clone()));
    // So do find and ls, which go through other calls.
    let found = run("find", &[m.path.to_str().unwrap(), "-type", "f", "-print0"]);
    assert_eq!(
        found.split('\0').filter(|s| !s.is_empty()).count(),
        shown.len()
    );
    run("ls", &["-lR", m.path.to_str().unwrap()]);

    // A directory whose keys cannot all be shown is not empty: rmdir says
    // so and deletes nothing.
    for d in ["a", "d"] {
        let err = std::fs::remove_dir(m.join(d)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY), "{d}");
    }
    // Removing names with control characters removes exactly those keys.
    run("rm", &["-r", m.join("ctl").to_str().unwrap()]);
    // Long names are made too, and listed back.
    let made = format!("longname/{}", "m".repeat(1000));
    std::fs::write(m.join(&made), b"long").unwrap();
    assert_eq!(std::fs::read(m.join(&made)).unwrap(), b"long");
    assert_eq!(std::fs::read_dir(m.join("longname")).unwrap().count(), 3);
    // What pathconf reports: a name that long can be of any kind at the top.
    let name_max = run("getconf", &["NAME_MAX", m.path.to_str().unwrap()]);
    assert_eq!(name_max.trim(), "1023");
    // A name that would make a key longer than 1024 bytes is refused.
    let over = format!("{}/{}", long.rsplit_once('/').unwrap().0, "g".repeat(216));
    let err = std::fs::write(m.join(&over), b"no").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG));
    let log = m.unmount();
    assert!(log.contains("WARN"), "left-out keys are logged");

    let after = store.keys();
    for k in shown.iter().chain(&hidden) {
        assert_eq!(after.contains_key(k), !k.starts_with("ctl/"), "{k:?}");
    }
    assert_eq!(store.get("x"), b"x", "the hidden object is untouched");
    assert_eq!(store.get(&made), b"long");
}
