//! Command-line options shared by the commands: how to reach the store and
//! with which credentials. Every option also reads an environment variable,
//! so scripts and fstab helpers can set them once.

use std::path::PathBuf;

use clap::Args;

use crate::s3::config::{Addressing, PayloadSigning, S3Config, SignatureVersion};
use crate::s3::credentials::{self, CredentialsError, CredentialsSource};
use crate::s3::{Credentials, S3Client, S3Error};

#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3 endpoint, e.g. http://flashblade-data-vip:80
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub endpoint: String,
    /// Region used in SigV4 signatures.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Profile of ~/.aws/credentials (or of --credentials-file).
    #[arg(long, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// Credentials file in the AWS format; refused unless mode 0600.
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Sign with AWS Signature Version 2 instead of 4.
    #[arg(long)]
    pub sigv2: bool,
    /// Address buckets as bucket.endpoint instead of endpoint/bucket.
    #[arg(long)]
    pub virtual_hosted: bool,
    /// Send object bodies as UNSIGNED-PAYLOAD: no SHA-256 of each body. Over
    /// https TLS guards them; over http they carry Content-MD5 instead.
    #[arg(long, conflicts_with = "chunked_signing")]
    pub unsigned_payload: bool,
    /// Send object bodies as UNSIGNED-PAYLOAD guarded by
    /// x-amz-checksum-crc32c: a twentieth of the SHA-256's CPU. Only where
    /// the server checks it (Garage, AWS; not the FlashBlade contract, not
    /// Ceph RGW 16.2): the mount checks that first and refuses otherwise.
    #[arg(long, conflicts_with_all = ["chunked_signing", "unsigned_payload", "sigv2"])]
    pub checksum_crc32c: bool,
    /// Send object bodies as aws-chunked, each 64 KiB chunk signed.
    #[arg(long)]
    pub chunked_signing: bool,
    /// Do not ask for URL-encoded listings (for servers that claim to
    /// encode keys but do not; detected by itself in most cases).
    #[arg(long)]
    pub no_list_url_encoding: bool,
    /// Attempts per request before an operation fails (1: no retries).
    #[arg(long, default_value_t = 10)]
    pub retries: u32,
    /// Time in seconds after which no retry starts.
    #[arg(long, default_value_t = 60)]
    pub retry_deadline: u64,
    /// Seconds of silence from the server (waiting for an answer or in the
    /// middle of one) after which a request is abandoned and retried.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Seconds allowed to connect (TCP and TLS).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
    /// Extra CA certificates (PEM) to trust for https endpoints.
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
}

/// The chunk size of `--chunked-signing`: AWS's examples and SDKs use 64 KiB.
const SIGNED_CHUNK_SIZE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Client(#[from] S3Error),
}

impl S3Args {
    pub fn config(&self) -> S3Config {
        let mut cfg = S3Config::new(&self.endpoint);
        cfg.region.clone_from(&self.region);
        if self.sigv2 {
            cfg.signature = SignatureVersion::V2;
        }
        if self.virtual_hosted {
            cfg.addressing = Addressing::VirtualHosted;
        }
        if self.unsigned_payload {
            cfg.payload_signing = PayloadSigning::Unsigned;
        }
        if self.checksum_crc32c {
            cfg.payload_signing = PayloadSigning::Crc32c;
        }
        if self.chunked_signing {
            cfg.payload_signing = PayloadSigning::Chunked {
                chunk_size: SIGNED_CHUNK_SIZE,
            };
        }
        cfg.list_url_encoding = !self.no_list_url_encoding;
        cfg.retry.max_attempts = self.retries.max(1);
        cfg.retry.deadline = std::time::Duration::from_secs(self.retry_deadline);
        cfg.read_timeout = std::time::Duration::from_secs(self.timeout);
        cfg.connect_timeout = std::time::Duration::from_secs(self.connect_timeout);
        cfg.ca_bundle.clone_from(&self.ca_bundle);
        cfg
    }

    pub fn credentials(&self) -> Result<Credentials, CredentialsError> {
        credentials::load(&CredentialsSource {
            file: self.credentials_file.clone(),
            profile: self.profile.clone(),
        })
    }

    pub fn client(&self) -> Result<S3Client, SetupError> {
        Ok(S3Client::new(self.config(), self.credentials()?)?)
    }
}

/// `bladefs [OPTIONS] SOURCE MOUNTPOINT`
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "bladefs",
    version,
    about = "Mount an S3 bucket (FlashBlade or any S3-compatible store) as a directory",
    after_help = "SOURCE is BUCKET or BUCKET:PREFIX; with --all-buckets, any label.\n\
                  Every option may also be given as -o name[=value] (fstab: type fuse.bladefs)."
)]
pub struct MountArgs {
    /// BUCKET, BUCKET:PREFIX, or a label with --all-buckets.
    pub source: String,
    /// An empty directory to mount on.
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub s3: S3Args,
    /// Show every bucket of the store as a directory of the root.
    #[arg(long)]
    pub all_buckets: bool,
    /// Stay in the foreground instead of detaching once mounted.
    #[arg(short, long)]
    pub foreground: bool,
    /// Refuse every change (EROFS).
    #[arg(long)]
    pub read_only: bool,
    /// Let other users use the mount (the kernel then checks mode bits);
    /// needs user_allow_other in /etc/fuse.conf unless run as root.
    #[arg(long)]
    pub allow_other: bool,
    /// Owner of every file and directory. Default: the mounting user.
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group of every file and directory. Default: the mounting user's group.
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permission bits of files, in octal.
    #[arg(long, default_value = "0644", value_parser = parse_mode)]
    pub file_mode: u16,
    /// Permission bits of directories, in octal.
    #[arg(long, default_value = "0755", value_parser = parse_mode)]
    pub dir_mode: u16,
    /// How long names and attributes are trusted, in seconds (fractions
    /// allowed), or "never" for data that does not change.
    #[arg(long, default_value = "1", value_parser = parse_ttl)]
    pub metadata_ttl: crate::fs::cache::Ttl,
    /// Let an open for reading trust attributes cached within the metadata
    /// TTL instead of asking the store (one HEAD less per open), for data
    /// that other hosts do not change: an open may then read a version
    /// up to one TTL old, or fail with ESTALE, after another host's close.
    #[arg(long)]
    pub no_close_to_open: bool,
    /// Memory for read-ahead across all open files, in MiB.
    #[arg(long, default_value_t = 256)]
    pub prefetch_memory_mib: u64,
    /// Memory for what the mount remembers of names, in MiB: the inodes
    /// the kernel holds, cached names and attributes, listings and
    /// metadata tables. Beyond it the least recently used go (the kernel
    /// is asked to forget inodes), so a walk of any size stays within it.
    #[arg(long, default_value_t = 64)]
    pub metadata_cache_mib: u64,
    /// When files of a directory are opened in listing order (cp -r, tar,
    /// rsync, diff -r), fetch up to this many next files of 1 MiB or less
    /// before they are opened; 0 turns it off.
    #[arg(long, default_value_t = 16)]
    pub read_ahead_files: usize,
    /// When subdirectories are entered in listing order (find, du, ls -R,
    /// rsync), list up to this many next ones before they are entered; 0
    /// turns it off.
    #[arg(long, default_value_t = 8)]
    pub read_ahead_dirs: usize,
    /// Where files being written are staged (sparse temp files, removed
    /// at once). Default: $TMPDIR or /tmp.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Staging space all files being written may use, in MiB (ENOSPC beyond).
    #[arg(long, default_value_t = 10240)]
    pub cache_size_mib: u64,
    /// Keep blocks of the objects read and written on local disk in DIR
    /// (validated by ETag and checksum; one mount per DIR), so re-reads and
    /// random reads of them need no request.
    #[arg(long, value_name = "DIR")]
    pub data_cache: Option<PathBuf>,
    /// Disk space the data cache may use (bytes, or with K, M, G, T);
    /// the least recently used blocks go beyond it.
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
    pub data_cache_size: u64,
    /// Write-back: close() returns once the file's content is journaled
    /// (fsync'd) in DIR, and uploads run in the background. Other hosts see
    /// a file once it is uploaded; fsync still waits for the bucket. After
    /// a crash the next mount with the same DIR uploads what is left first.
    /// One mount per DIR.
    #[arg(long, value_name = "DIR")]
    pub write_back: Option<PathBuf>,
    /// Bytes the write-back journal may hold not yet uploaded (with K, M,
    /// G, T); closes wait for room beyond, and a larger file is uploaded
    /// at its close.
    #[arg(long, value_name = "SIZE", default_value = "4G", value_parser = parse_size)]
    pub write_back_max_bytes: u64,
    /// At unmount, leave what the write-back queue holds in its journal
    /// for the next mount instead of uploading it before exiting.
    #[arg(long)]
    pub write_back_leave: bool,
    /// Memory for parts being uploaded, in MiB (writers wait beyond).
    #[arg(long, default_value_t = 128)]
    pub upload_memory_mib: u64,
    /// At mount, abort multipart uploads under the mounted prefix older than
    /// this many seconds (left by a crash). Negative: never.
    #[arg(long, default_value_t = 86400, allow_negative_numbers = true)]
    pub abort_uploads_after: i64,
    /// Name of the hidden, read-only directory of every file's versions at
    /// the root of a bucket with versioning (`.versions/PATH/TIME`).
    #[arg(long, default_value = crate::fs::versions::DEFAULT_VERSIONS_DIR, value_parser = parse_dir_name)]
    pub versions_dir: String,
    /// Name of the hidden, read-only directory of the whole tree at any
    /// time, at the root of a bucket with versioning (`.snapshots/TIME/`).
    #[arg(long, default_value = crate::fs::versions::DEFAULT_SNAPSHOTS_DIR, value_parser = parse_dir_name)]
    pub snapshots_dir: String,
    /// Show no history directories, even on versioned buckets.
    #[arg(long)]
    pub no_versions: bool,
    /// Kernel read-ahead of the mount, in KiB.
    #[arg(long, default_value_t = 1024)]
    pub read_ahead_kb: u32,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (SIGUSR1 logs
    /// the same figures).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the same metrics on a unix socket at PATH (mode 0600), for a
    /// supervisor on this host such as bladefs-csi.
    #[arg(long, value_name = "PATH")]
    pub metrics_socket: Option<PathBuf>,
    /// Log at debug level (BLADEFS_LOG=... sets any filter).
    #[arg(long)]
    pub debug: bool,
    /// Append logs to this file (default: standard error, which a
    /// detached daemon no longer has).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

fn parse_mode(s: &str) -> Result<u16, String> {
    u16::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode such as 0644"))
}

/// `4096`, `512K`, `100M`, `10G`, `1T` (binary multiples; `MiB`, `GB` and
/// the like read the same).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 512M or 10G"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches(['B', 'I'])
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{s:?} is not a size such as 512M or 10G")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_dir_name(s: &str) -> Result<String, String> {
    if crate::fs::inode::valid_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} cannot be a directory name"))
    }
}

fn parse_ttl(s: &str) -> Result<crate::fs::cache::Ttl, String> {
    if s == "never" || s == "inf" {
        return Ok(crate::fs::cache::Ttl(None));
    }
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds or \"never\""))?;
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(crate::fs::cache::Ttl(Some(
        std::time::Duration::from_secs_f64(secs),
    )))
}

/// Mount words that mean nothing to bladefs itself (mount(8), fstab and
/// mount.fuse3 pass them along); they are accepted and ignored.
const IGNORED_MOUNT_WORDS: &[&str] = &[
    "rw",
    "_netdev",
    "nofail",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "defaults",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "diratime",
    "nodiratime",
    "sync",
    "async",
    "loud",
    "silent",
    "comment",
];

/// Long options that take no value.
const FLAG_OPTIONS: &[&str] = &[
    "all-buckets",
    "foreground",
    "read-only",
    "allow-other",
    "debug",
    "sigv2",
    "virtual-hosted",
    "unsigned-payload",
    "chunked-signing",
    "no-list-url-encoding",
    "no-versions",
    "checksum-crc32c",
    "write-back-leave",
];

/// What a command line asks for, once mount options are expanded.
#[derive(Debug, PartialEq, Eq)]
pub enum Helper {
    /// Mount, with these arguments.
    Mount(Vec<std::ffi::OsString>),
    /// `mount -f` (fake): do everything but mount, i.e. nothing.
    Fake,
}

/// Rewrites `-o a,b=c` (as fstab and mount.fuse3 pass options) into the
/// long options `--a --b=c`, so every option can be given either way.
/// Called as `mount.bladefs` (by `mount -t bladefs` or an fstab line of
/// type `bladefs`), it also takes what mount(8) passes its helpers:
/// `-s`, `-n`, `-v` (ignored), `-f` (fake: no mount), `-t TYPE`, `-N NS`.
pub fn expand_mount_options(args: Vec<std::ffi::OsString>) -> Result<Helper, String> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    let helper = match iter.next() {
        Some(program) => {
            let helper = std::path::Path::new(&program)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("mount."));
            out.push(program);
            helper
        }
        None => false,
    };
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy().into_owned();
        if helper {
            match text.as_str() {
                "-s" | "-n" | "-v" => continue,
                "-f" => return Ok(Helper::Fake),
                "-t" | "-N" => {
                    iter.next();
                    continue;
                }
                _ => {}
            }
        }
        let list = if text == "-o" {
            iter.next()
                .ok_or("-o needs a value")?
                .to_string_lossy()
                .into_owned()
        } else if let Some(rest) = text
            .strip_prefix("-o")
            .filter(|r| !r.is_empty() && !text.starts_with("--"))
        {
            rest.to_string()
        } else {
            out.push(arg);
            continue;
        };
        for word in list.split(',').filter(|w| !w.is_empty()) {
            let (name, value) = match word.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (word, None),
            };
            if IGNORED_MOUNT_WORDS.contains(&name) || name.starts_with("x-") {
                continue;
            }
            let long = match name {
                "ro" => "read-only".to_string(),
                "fsname" | "subtype" => continue,
                other => other.replace('_', "-"),
            };
            match value {
                Some(v) => out.push(format!("--{long}={v}").into()),
                None if FLAG_OPTIONS.contains(&long.as_str()) || name == "ro" => {
                    out.push(format!("--{long}").into())
                }
                None => return Err(format!("mount option {name} needs a value ({name}=...)")),
            }
        }
    }
    Ok(Helper::Mount(out))
}

impl MountArgs {
    /// The core's configuration from the options (the local data cache,
    /// which opens files, is opened by the caller).
    pub fn fs_config(&self) -> crate::fs::FsConfig {
        use crate::fs::FsConfig;
        FsConfig {
            uid: self.uid.unwrap_or(FsConfig::default().uid),
            gid: self.gid.unwrap_or(FsConfig::default().gid),
            file_mode: self.file_mode,
            dir_mode: self.dir_mode,
            metadata_ttl: self.metadata_ttl,
            metadata_cache_bytes: self.metadata_cache_mib.max(4) << 20,
            close_to_open: !self.no_close_to_open,
            read_only: self.read_only,
            prefetch: crate::fs::prefetch::PrefetchConfig {
                max_memory: self.prefetch_memory_mib.max(16) * 1024 * 1024,
                ..Default::default()
            },
            walk: crate::fs::walk::WalkConfig {
                files_ahead: self.read_ahead_files,
                dirs_ahead: self.read_ahead_dirs,
                ..Default::default()
            },
            write_back: self.write_back.as_ref().map(|dir| {
                let mut wb = crate::fs::writeback::WriteBackConfig::new(
                    dir.clone(),
                    self.s3.endpoint.clone(),
                );
                wb.max_bytes = self.write_back_max_bytes;
                wb.leave_queued = self.write_back_leave;
                wb
            }),
            write: crate::fs::upload::WriteConfig {
                // With write-back, staging shares the journal's disk: a
                // full disk shows at write(), not as a close that cannot
                // be journaled.
                cache_dir: self
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| match &self.write_back {
                        Some(dir) => dir.join(crate::fs::writeback::STAGING_SUBDIR),
                        None => std::env::temp_dir(),
                    }),
                max_staged: self.cache_size_mib * 1024 * 1024,
                max_memory: self.upload_memory_mib.max(16) * 1024 * 1024,
                ..Default::default()
            },
            versions_dir: (!self.no_versions).then(|| self.versions_dir.clone()),
            snapshots_dir: (!self.no_versions).then(|| self.snapshots_dir.clone()),
            ..Default::default()
        }
    }

    /// What the mount shows, from SOURCE.
    pub fn mount_source(&self) -> Result<crate::fs::MountSource, String> {
        if self.all_buckets {
            return Ok(crate::fs::MountSource::AllBuckets);
        }
        let (bucket, prefix) = match self.source.split_once(':') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (self.source.as_str(), ""),
        };
        if bucket.is_empty() {
            return Err(format!(
                "{:?} names no bucket (BUCKET or BUCKET:PREFIX)",
                self.source
            ));
        }
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(crate::fs::MountSource::Bucket {
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn expand(args: &[&str]) -> Vec<String> {
        match expand_mount_options(args.iter().map(Into::into).collect()).unwrap() {
            Helper::Mount(a) => a
                .into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            Helper::Fake => vec!["(fake)".to_string()],
        }
    }

    #[test]
    fn sizes_take_binary_multiples() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("10g"), Ok(10 << 30));
        assert_eq!(parse_size("2 TB"), Ok(2 << 40));
        for bad in ["", "G", "10X", "-1G", "1.5G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn as_mount_helper_it_takes_what_mount_8_passes() {
        assert_eq!(
            expand(&[
                "/sbin/mount.bladefs",
                "bkt",
                "/mnt",
                "-s",
                "-n",
                "-v",
                "-o",
                "endpoint=http://h:80,credentials_file=/etc/bladefs/k",
                "-t",
                "bladefs",
                "-N",
                "/proc/1/ns/mnt"
            ]),
            [
                "/sbin/mount.bladefs",
                "bkt",
                "/mnt",
                "--endpoint=http://h:80",
                "--credentials-file=/etc/bladefs/k"
            ]
        );
        assert_eq!(
            expand(&["mount.bladefs", "bkt", "/mnt", "-f", "-o", "endpoint=x"]),
            ["(fake)"]
        );
        // Only the helper takes these: for bladefs itself -f is --foreground.
        assert_eq!(expand(&["bladefs", "bkt", "/mnt", "-f"])[3], "-f");
    }

    #[test]
    fn fstab_options_become_long_options() {
        assert_eq!(
            expand(&[
                "bladefs",
                "bkt:pre",
                "/mnt",
                "-o",
                "rw,ro,_netdev,endpoint=http://h:80,allow_other,metadata_ttl=never,x-systemd.automount",
                "-oforeground"
            ]),
            [
                "bladefs",
                "bkt:pre",
                "/mnt",
                "--read-only",
                "--endpoint=http://h:80",
                "--allow-other",
                "--metadata-ttl=never",
                "--foreground"
            ]
        );
        assert!(expand_mount_options(vec!["b".into(), "-o".into(), "uid".into()]).is_err());
    }

    #[test]
    fn parses_a_full_command_line() {
        let args = MountArgs::try_parse_from(expand(&[
            "bladefs",
            "bkt:/some/prefix/",
            "/mnt",
            "-o",
            "endpoint=http://127.0.0.1:9000,uid=1000,file_mode=0600,metadata_ttl=0.5",
        ]))
        .unwrap();
        assert_eq!(args.uid, Some(1000));
        assert_eq!(args.file_mode, 0o600);
        assert_eq!(
            args.metadata_ttl,
            crate::fs::cache::Ttl(Some(std::time::Duration::from_millis(500)))
        );
        assert_eq!(
            args.mount_source().unwrap(),
            crate::fs::MountSource::Bucket {
                bucket: "bkt".into(),
                prefix: "some/prefix/".into()
            }
        );
        assert!(parse_mode("999").is_err());
        assert!(parse_ttl("soon").is_err());
    }
}
