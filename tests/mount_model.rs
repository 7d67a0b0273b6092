//! Model-based random operations: the same seeded sequence of create,
//! write at offsets, append, truncate, read, unlink, mkdir, rmdir, rename
//! (files and directories) and readdir runs on a real mount (Garage) and on
//! a local directory; results, contents and listings must agree after
//! every step. Reproducible: BLADEFS_MODEL_SEED picks the sequence,
//! BLADEFS_MODEL_OPS its length (scripts/model-test runs a long one).

mod common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bladefs::s3::ObjectClient;
use common::mount::Mounted;
use common::{Kind, data};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const DIRS: &[&str] = &["", "a", "b", "a/c"];
const FILES: &[&str] = &["f1", "f2", "f3", "big"];

fn pick_dir(r: &mut Rng) -> &'static str {
    DIRS[r.below(DIRS.len() as u64) as usize]
}

fn pick_path(r: &mut Rng) -> String {
    let d = pick_dir(r);
    let f = FILES[r.below(FILES.len() as u64) as usize];
    if d.is_empty() {
        f.to_string()
    } else {
        format!("{d}/{f}")
    }
}

/// What an operation returned, comparable across the two trees.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Bytes(Vec<u8>),
    Names(Vec<String>),
    Err(Option<i32>),
}

fn outcome<T>(r: std::io::Result<T>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => ok(v),
        Err(e) => Outcome::Err(e.raw_os_error()),
    }
}

#[derive(Debug, Clone)]
enum Op {
    WriteAt(String, u64, usize, u64),
    Append(String, usize, u64),
    Truncate(String, u64),
    Read(String),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
    RenameFile(String, String),
    RenameDir(String, String),
    List(String),
}

fn random_op(r: &mut Rng) -> Op {
    const MIB: u64 = 1024 * 1024;
    match r.below(20) {
        0..=4 => {
            let p = pick_path(r);
            // Mostly small, sometimes far into a big file.
            let (off, len) = if p.ends_with("big") && r.below(3) == 0 {
                (r.below(12 * MIB), 1 + r.below(2 * MIB) as usize)
            } else {
                (r.below(64 * 1024), 1 + r.below(20_000) as usize)
            };
            Op::WriteAt(p, off, len, r.next())
        }
        5..=6 => Op::Append(pick_path(r), 1 + r.below(30_000) as usize, r.next()),
        7..=8 => Op::Truncate(pick_path(r), r.below(100_000)),
        9..=11 => Op::Read(pick_path(r)),
        12 => Op::Unlink(pick_path(r)),
        13 => Op::Mkdir(pick_dir(r).to_string()),
        14 => Op::Rmdir(pick_dir(r).to_string()),
        15..=16 => Op::RenameFile(pick_path(r), pick_path(r)),
        17 => Op::RenameDir(pick_dir(r).to_string(), pick_dir(r).to_string()),
        _ => Op::List(pick_dir(r).to_string()),
    }
}

fn apply(root: &Path, op: &Op) -> Outcome {
    let p = |rel: &str| -> PathBuf {
        if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        }
    };
    match op {
        Op::WriteAt(path, off, len, seed) => outcome(
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(p(path))
                .and_then(|f| {
                    f.write_all_at(&data(*len, *seed), *off)?;
                    f.sync_all()
                }),
            |_| Outcome::Ok,
        ),
        Op::Append(path, len, seed) => outcome(
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(p(path))
                .and_then(|mut f| {
                    f.write_all(&data(*len, *seed))?;
                    f.sync_all()
                }),
            |_| Outcome::Ok,
        ),
        Op::Truncate(path, size) => outcome(
            std::fs::OpenOptions::new()
                .write(true)
                .open(p(path))
                .and_then(|f| {
                    f.set_len(*size)?;
                    f.sync_all()
                }),
            |_| Outcome::Ok,
        ),
        Op::Read(path) => outcome(std::fs::read(p(path)), Outcome::Bytes),
        Op::Unlink(path) => outcome(std::fs::remove_file(p(path)), |_| Outcome::Ok),
        Op::Mkdir(dir) => outcome(std::fs::create_dir(p(dir)), |_| Outcome::Ok),
        Op::Rmdir(dir) => outcome(std::fs::remove_dir(p(dir)), |_| Outcome::Ok),
        Op::RenameFile(from, to) | Op::RenameDir(from, to) => {
            outcome(std::fs::rename(p(from), p(to)), |_| Outcome::Ok)
        }
        Op::List(dir) => outcome(std::fs::read_dir(p(dir)), |rd| {
            let mut names: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            Outcome::Names(names)
        }),
    }
}

/// Operations whose local result the store cannot give, so they are not
/// generated: renaming the root, renaming a directory into itself.
fn meaningful(op: &Op) -> bool {
    match op {
        Op::RenameDir(from, to) => {
            !from.is_empty() && !to.is_empty() && !to.starts_with(&format!("{from}/")) && from != to
        }
        Op::Rmdir(d) | Op::Mkdir(d) => !d.is_empty(),
        Op::RenameFile(a, b) => a != b,
        _ => true,
    }
}

/// Every file's content and every directory's names, both trees.
fn snapshot(root: &Path) -> Vec<(String, Outcome)> {
    let mut out = Vec::new();
    for d in DIRS {
        out.push((format!("{d}/"), apply(root, &Op::List(d.to_string()))));
        for f in FILES {
            let path = if d.is_empty() {
                f.to_string()
            } else {
                format!("{d}/{f}")
            };
            let got = apply(root, &Op::Read(path.clone()));
            out.push((path, got));
        }
    }
    out
}

#[test]
fn random_operations_agree_with_a_local_directory() {
    let seed: u64 = std::env::var("BLADEFS_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261124);
    let ops: usize = std::env::var("BLADEFS_MODEL_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let server = common::start(Kind::Garage);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(server.client().create_bucket("model")).unwrap();
    let m = Mounted::new(&server, "model", &[]);
    let local = tempfile::tempdir().unwrap();
    let mut r = Rng(seed);
    let mut done = 0;
    let mut bytes_compared = 0usize;
    while done < ops {
        let op = random_op(&mut r);
        if !meaningful(&op) {
            continue;
        }
        let want = apply(local.path(), &op);
        let got = apply(&m.path, &op);
        assert_eq!(
            got, want,
            "seed {seed}, op {done}: {op:?} (BLADEFS_MODEL_SEED={seed} reproduces)"
        );
        if let Outcome::Bytes(b) = &got {
            bytes_compared += b.len();
        }
        done += 1;
        // Everything, every so often (each step compares its own result).
        if done % 500 == 0 {
            let (w, g) = (snapshot(local.path()), snapshot(&m.path));
            for ((path, want), (_, got)) in w.iter().zip(g.iter()) {
                assert_eq!(got, want, "seed {seed}, after op {done}: {path}");
                if let Outcome::Bytes(b) = got {
                    bytes_compared += b.len();
                }
            }
        }
    }
    println!("{ops} random operations agreed (seed {seed}); {bytes_compared} bytes compared");
    m.unmount();
    // A second mount sees what the first one wrote.
    let again = Mounted::new(&server, "model", &[]);
    let (w, g) = (snapshot(local.path()), snapshot(&again.path));
    assert_eq!(g, w, "a fresh mount sees the same tree");
    again.unmount();
}
