//! The mount command from start to end: check the arguments and the
//! mountpoint, detach, check the store (endpoint, credentials, bucket) with
//! one listing request, mount, report ready, serve until `fusermount -u` or
//! SIGTERM/SIGINT, then end cleanly with exit status 0.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::MountArgs;
use crate::daemon::{self, Ready};
use crate::fs::{Fs, MountSource};
use crate::fuse::FuseAdapter;
use crate::logging::Destination;
use crate::metrics::{Exporter, FuseStats};
use crate::s3::config::PayloadSigning;
use crate::s3::{ErrorKind, ListObjectsParams, ObjectClient, S3Client, S3Error};

/// The store check at start fails fast: a user waiting for `mount` wants
/// to hear about a closed port in seconds, not after a minute of retries.
const CHECK_ATTEMPTS: u32 = 3;
const CHECK_DEADLINE: Duration = Duration::from_secs(10);
const CHECK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time given to requests still running once the kernel has let go.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long unmount waits for pending metadata to reach the store.
const METADATA_GRACE: Duration = Duration::from_secs(60);

pub fn run(args: MountArgs) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("bladefs: {msg}");
        ExitCode::FAILURE
    };
    let source = match args.mount_source() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mountpoint = match check_mountpoint(&args.mountpoint) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    // Credentials are read before detaching: a refused file is reported
    // on the terminal, and the child needs no access to the user's files.
    let creds = match args.s3.credentials() {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let ready = if args.foreground {
        None
    } else {
        match daemon::detach(false) {
            Ok(r) => Some(r),
            Err(e) => return fail(format!("cannot detach: {e}")),
        }
    };
    let report_fail = |ready: Option<Ready>, msg: String| {
        match ready {
            Some(r) => r.fail(&msg),
            None => eprintln!("bladefs: {msg}"),
        }
        ExitCode::FAILURE
    };
    let log_to = Destination::choose(args.log_file.as_deref(), args.foreground, &mountpoint);
    let level = match crate::logging::init(&log_to, args.debug) {
        Ok(l) => l,
        Err(e) => return report_fail(ready, e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bladefs")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report_fail(ready, format!("cannot start the runtime: {e}")),
    };

    let config = args.s3.config();
    let signature = format!("Sig{:?}", config.signature);
    let client = match S3Client::new(config.clone(), creds.clone()) {
        Ok(c) => Arc::new(c),
        Err(e) => return report_fail(ready, e.to_string()),
    };
    let config_crc32c = config.payload_signing == PayloadSigning::Crc32c;
    let mut check_config = config;
    check_config.retry.max_attempts = CHECK_ATTEMPTS;
    check_config.retry.deadline = CHECK_DEADLINE;
    check_config.connect_timeout = CHECK_CONNECT_TIMEOUT;
    let checked = S3Client::new(check_config, creds)
        .and_then(|checker| runtime.block_on(check_store(&checker, &source)));
    if let Err(e) = checked {
        return report_fail(ready, describe_check_failure(&e, &source));
    }
    if config_crc32c && let Err(e) = runtime.block_on(check_crc32c(&client, &source)) {
        return report_fail(ready, e);
    }

    raise_open_files_limit();
    // Absolute, so that it means the same whatever the daemon's directory.
    let mut args = args;
    if let Some(dir) = &args.write_back {
        match std::fs::create_dir_all(dir).and_then(|()| dir.canonicalize()) {
            Ok(abs) => args.write_back = Some(abs),
            Err(e) => {
                return report_fail(ready, format!("write-back journal {}: {e}", dir.display()));
            }
        }
    }
    let data_cache = match &args.data_cache {
        Some(dir) => match crate::fs::data_cache::DataCache::open(
            dir,
            args.data_cache_size,
            &args.s3.endpoint,
        ) {
            Ok(c) => Some(c),
            Err(e) => return report_fail(ready, e.to_string()),
        },
        None => None,
    };
    if args.abort_uploads_after >= 0 {
        let age = Duration::from_secs(args.abort_uploads_after as u64);
        runtime.block_on(abort_orphaned_uploads(client.as_ref(), &source, age));
    }
    let fs = Arc::new(Fs::with_data_cache(
        client.clone(),
        source,
        args.fs_config(),
        data_cache,
    ));
    // What an earlier mount journaled and did not store goes up before
    // anything is served: nothing here may show or change those files first.
    match runtime.block_on(fs.start_write_back()) {
        Ok(0) => {}
        Ok(files) => tracing::info!(
            files,
            "write-back: files journaled by an earlier mount are stored"
        ),
        Err(e) => return report_fail(ready, e.to_string()),
    }
    let fuse_stats = Arc::new(FuseStats::default());
    let adapter = FuseAdapter::new(fs.clone(), runtime.handle().clone(), fuse_stats.clone());
    let device = adapter.device();
    let exporter = Arc::new(Exporter {
        fs: fs.clone(),
        s3: client.stats().clone(),
        fuse: fuse_stats,
    });
    // Bound before mounting: a port in use fails the mount command.
    if let Some(addr) = args.metrics_addr
        && let Err(e) = runtime.block_on(crate::metrics::serve(addr, exporter.clone()))
    {
        return report_fail(ready, format!("cannot serve metrics on {addr}: {e}"));
    }
    if let Some(path) = &args.metrics_socket
        && let Err(e) = runtime.block_on(crate::metrics::serve_unix(path, exporter.clone()))
    {
        return report_fail(
            ready,
            format!("cannot serve metrics on {}: {e}", path.display()),
        );
    }
    let mut options = vec![
        fuser::MountOption::FSName(args.source.clone()),
        fuser::MountOption::Subtype("bladefs".to_string()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::CUSTOM(format!("max_read={}", crate::fuse::MAX_IO)),
    ];
    if args.read_only {
        options.push(fuser::MountOption::RO);
    }
    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options = options;
    fuse_config.acl = if args.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    // Signal handlers go in before the mount appears: whoever sees it may
    // signal at once, and SIGUSR1 unhandled would end the daemon.
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        let _guard = runtime.enter();
        [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::user_defined1(),
            SignalKind::user_defined2(),
        ]
        .map(|kind| signal(kind).expect("signal handler"))
    };
    let spec = crate::kernel_mount::MountSpec {
        source: &args.source,
        read_only: args.read_only,
    };
    let (session, mut unmounter) =
        match crate::kernel_mount::mount(adapter, &mountpoint, &spec, &fuse_config) {
            Ok(s) => s,
            Err(e) => {
                return report_fail(
                    ready,
                    format!(
                        "cannot mount on {}: {e}{}",
                        mountpoint.display(),
                        dev_fuse_hint()
                    ),
                );
            }
        };
    // Attributes only (offset -1): dropping pages here could wait on a
    // page whose read waits for this daemon; an open that finds a change
    // also drops the pages by not keeping the cache.
    let notifier = session.notifier();
    fs.set_kernel_forget(Box::new(move |ino| {
        if let Err(e) = notifier.inval_inode(fuser::INodeNo(ino), -1, 0) {
            tracing::debug!(ino, error = %e, "kernel attribute invalidation refused");
        }
    }));
    // The metadata budget's requests to forget names: sent from a thread
    // of their own, since the kernel takes each parent directory's lock,
    // which a request this daemon is answering may hold.
    let notifier = session.notifier();
    let (evict_tx, evict_rx) = std::sync::mpsc::channel::<Vec<(u64, Arc<str>)>>();
    let evictor = std::thread::Builder::new()
        .name("evict".to_string())
        .spawn(move || {
            for batch in evict_rx {
                for (parent, name) in batch {
                    if let Err(e) =
                        notifier.inval_entry(fuser::INodeNo(parent), std::ffi::OsStr::new(&*name))
                    {
                        tracing::debug!(parent, error = %e, "kernel entry invalidation refused");
                    }
                }
            }
        });
    if evictor.is_ok() {
        fs.set_kernel_evict(Box::new(move |batch| {
            let _ = evict_tx.send(batch);
        }));
    }
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let serving = std::thread::Builder::new()
        .name("fuse".to_string())
        .spawn(move || {
            let _ = ended_tx.send(session.run());
        });
    if let Err(e) = serving {
        return report_fail(ready, format!("cannot start serving: {e}"));
    }
    // Only now: the mountpoint's stat asks this daemon.
    match std::fs::metadata(&mountpoint) {
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt;
            device.store(meta.dev(), std::sync::atomic::Ordering::Relaxed);
            raise_read_ahead(meta.dev(), args.read_ahead_kb);
        }
        Err(e) => tracing::warn!(error = %e, "the new mount's root cannot be stat'ed"),
    }
    tracing::info!(mountpoint = %mountpoint.display(), source = %args.source, endpoint = %args.s3.endpoint, signature, log = %log_to.describe(), "mounted (SIGUSR1 logs counters, SIGUSR2 switches debug logging)");
    if let Some(r) = ready {
        // A place the user did not choose is worth saying.
        let note = (args.log_file.is_none()).then(|| format!("logging to {}", log_to.describe()));
        r.ok(note.as_deref());
    }
    crate::notify::notify(&format!(
        "READY=1\nSTATUS=mounted {} on {}",
        args.source,
        mountpoint.display()
    ));

    let stats = client.stats().clone();
    let at_exit = fs.clone();
    let mounted_on = mountpoint.clone();
    let ended = runtime.block_on(async move {
        let [mut term, mut int, mut usr1, mut usr2] = signals;
        let mut ended_rx = ended_rx;
        loop {
            tokio::select! {
                r = &mut ended_rx => return r,
                _ = usr1.recv() => {
                    tracing::info!(
                        "stats: inodes {}, open files {}; requests:\n{}\nmetrics:\n{}",
                        fs.inode_count(),
                        fs.open_file_count(),
                        stats.snapshot(),
                        crate::metrics::render(exporter.clone())
                    );
                    continue;
                }
                _ = usr2.recv() => {
                    level.toggle();
                    continue;
                }
                _ = term.recv() => tracing::info!("SIGTERM: unmounting"),
                _ = int.recv() => tracing::info!("SIGINT: unmounting"),
            }
            break;
        }
        crate::notify::notify("STOPPING=1\nSTATUS=unmounting");
        if let Err(e) = unmounter.unmount() {
            // Busy (open files): detach now, let the kernel finish later.
            tracing::warn!(error = %e, "unmount failed; detaching lazily");
            lazy_unmount(&mountpoint);
        }
        ended_rx.await
    });
    // Uploads given up as the last files closed are still being aborted:
    // a moment for them, rather than leaving them to the next mount.
    runtime.block_on(async {
        if let Some(wb) = at_exit.write_back() {
            if wb.leave_queued() {
                let (files, bytes, _) = wb.counts();
                tracing::info!(files, bytes, dir = %wb.dir().display(), "write-back: the queue is left in the journal for the next mount");
            } else {
                let left = at_exit.drain_write_back().await;
                if left > 0 {
                    tracing::error!(files = left, dir = %wb.dir().display(), "write-back: files not uploaded stay in the journal; the next mount with it uploads them");
                }
            }
        }
        // Attributes changed in the last moments (chmod, utimes, symlinks)
        // are written before the daemon goes.
        match tokio::time::timeout(METADATA_GRACE, at_exit.flush_metadata()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "metadata not saved at unmount"),
            Err(_) => {
                tracing::error!("metadata not saved at unmount: the store did not answer in time")
            }
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, at_exit.settle()).await;
    });
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    tracing::info!("unmounted; requests:\n{}", client.stats().snapshot());
    match ended {
        Ok(Ok(())) | Err(_) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the FUSE session ended with an error");
            // A mount made by mount(2) here is not undone by the session:
            // leave no dead mount behind.
            lazy_unmount(&mounted_on);
            ExitCode::FAILURE
        }
    }
}

fn check_mountpoint(path: &Path) -> Result<PathBuf, String> {
    let abs = path
        .canonicalize()
        .map_err(|e| format!("mountpoint {}: {e}", path.display()))?;
    if !abs.is_dir() {
        return Err(format!("mountpoint {} is not a directory", path.display()));
    }
    let mut entries =
        std::fs::read_dir(&abs).map_err(|e| format!("mountpoint {}: {e}", path.display()))?;
    if entries.next().is_some() {
        return Err(format!(
            "mountpoint {} is not an empty directory",
            path.display()
        ));
    }
    Ok(abs)
}

/// One request that proves the endpoint answers, the credentials are good
/// and the bucket exists and may be listed.
async fn check_store(client: &S3Client, source: &MountSource) -> Result<(), S3Error> {
    match source {
        MountSource::AllBuckets => client.list_buckets().await.map(drop),
        MountSource::Bucket { bucket, prefix } => client
            .list_objects(
                bucket,
                &ListObjectsParams {
                    prefix: prefix.clone(),
                    max_keys: Some(1),
                    ..Default::default()
                },
            )
            .await
            .map(drop),
    }
}

/// With `--checksum-crc32c`, the checksum is the bodies' only guard: a
/// server that ignores it (Ceph RGW 16.2 does) must not be written to so.
async fn check_crc32c(client: &S3Client, source: &MountSource) -> Result<(), String> {
    let refuse = |why: String| format!("--checksum-crc32c: {why}; mount without it");
    let MountSource::Bucket { bucket, prefix } = source else {
        return Err(refuse("needs a bucket to check the server on".into()));
    };
    let key = format!("{prefix}.bladefs-crc32c-probe-{:016x}", fastrand::u64(..));
    match client.checks_crc32c(bucket, &key).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(refuse(
            "this server ignores x-amz-checksum-crc32c, so nothing would guard the bytes sent"
                .into(),
        )),
        Err(e) => Err(refuse(format!("checking the server failed: {e}"))),
    }
}

/// Multipart uploads under the mount older than `age` were left by a
/// crash (bladefs completes or aborts its own): abort them so they do not
/// pile up. Best effort: stores without ListMultipartUploads are skipped.
async fn abort_orphaned_uploads(client: &S3Client, source: &MountSource, age: Duration) {
    let MountSource::Bucket { bucket, prefix } = source else {
        return;
    };
    let now = std::time::SystemTime::now();
    let mut params = crate::s3::ListUploadsParams {
        prefix: prefix.clone(),
        ..Default::default()
    };
    let mut aborted = 0;
    loop {
        let page = match client.list_multipart_uploads(bucket, &params).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list multipart uploads; none aborted");
                return;
            }
        };
        for u in page.uploads {
            let old = u
                .initiated
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|d| d >= age);
            if old {
                match client
                    .abort_multipart_upload(bucket, &u.key, &u.upload_id)
                    .await
                {
                    Ok(()) => aborted += 1,
                    Err(e) => {
                        tracing::warn!(key = %u.key, error = %e, "could not abort an old upload")
                    }
                }
            }
        }
        match (page.next_key_marker, page.next_upload_id_marker) {
            (Some(k), u) => {
                params.key_marker = Some(k);
                params.upload_id_marker = u;
            }
            _ => break,
        }
    }
    if aborted > 0 {
        tracing::info!(
            aborted,
            "aborted multipart uploads left by an earlier crash"
        );
    }
}

fn describe_check_failure(e: &S3Error, source: &MountSource) -> String {
    let bucket = match source {
        MountSource::Bucket { bucket, .. } => format!("bucket {bucket:?}"),
        MountSource::AllBuckets => "the bucket list".to_string(),
    };
    match e.kind() {
        ErrorKind::NoSuchBucket => format!("{bucket} does not exist ({e})"),
        ErrorKind::AccessDenied => {
            format!("access to {bucket} refused: check the access key and secret ({e})")
        }
        _ => e.to_string(),
    }
}

/// Raises the soft limit of open descriptors to the hard one: every file
/// being written holds its staging file open, and with `--write-back`
/// every queued file too (up to 4096), well past the usual soft 1024.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls with a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!("the open files limit could not be raised");
            }
        }
    }
}

/// Kernel read-ahead decides how big the reads reaching us are; FUSE
/// cannot raise it at INIT, so it is set through the mount's BDI. Best
/// effort: it needs root.
fn raise_read_ahead(dev: u64, kb: u32) {
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    match std::fs::write(&path, kb.to_string()) {
        Ok(()) => tracing::debug!(path, kb, "kernel read-ahead set"),
        Err(e) => tracing::debug!(path, error = %e, "kernel read-ahead left as is"),
    }
}

/// Why a user other than root may be refused: distributions open
/// `/dev/fuse` to everyone (a udev rule), but hosts without udev leave it
/// root's, and then neither bladefs nor fusermount3 can use it.
fn dev_fuse_hint() -> &'static str {
    let path = c"/dev/fuse";
    // SAFETY: a valid NUL-terminated path; access(2) only checks.
    let usable = unsafe { libc::access(path.as_ptr(), libc::R_OK | libc::W_OK) } == 0;
    if usable {
        ""
    } else {
        " (this user cannot open /dev/fuse: distributions make it mode 0666 \
         with a udev rule; ask the administrator, or mount as root with --allow-other)"
    }
}

fn lazy_unmount(mountpoint: &Path) {
    let status = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mountpoint)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        tracing::error!(mountpoint = %mountpoint.display(), "lazy unmount failed");
    }
}

/// The bladefs daemon serving `mountpoint`, found by its command line
/// (`bladefs SOURCE MOUNTPOINT ...`): for whoever must wait for it to end
/// after an unmount (bladefs-csi) or signal it.
pub fn daemon_pid(mountpoint: &Path) -> Option<u32> {
    let wanted = mountpoint.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (args.first()?.ends_with("bladefs") && args.contains(&wanted)).then_some(pid)
    })
}
