//! Mounts one bucket with mountpoint-s3's library, configured as its own
//! `mount-s3` command would be by default (16 FUSE threads, 8 MiB parts, a
//! memory target of 95 % of RAM, CRC32C upload checksums), for benchmarks
//! against a local server.
//!
//! ```text
//! mountpoint-s3-driver BUCKET DIR --endpoint URL [--region R] [--cache DIR]
//!                      [--no-upload-checksums]
//! ```
//! Credentials come from the usual AWS environment variables or files. Runs
//! in the foreground until the file system is unmounted or it is interrupted;
//! warnings and errors go to standard output (`MOUNTPOINT_LOG` sets more).

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use mountpoint_s3_client::config::AddressingStyle;
use mountpoint_s3_client::user_agent::UserAgent;
use mountpoint_s3_fs::data_cache::{
    CacheLimit, DataCacheConfig, DiskDataCacheConfig, ManagedCacheDir,
};
use mountpoint_s3_fs::fs::{CacheConfig, TimeToLive};
use mountpoint_s3_fs::fuse::config::{FuseOptions, FuseSessionConfig, MountPoint};
use mountpoint_s3_fs::logging::{LoggingConfig, init_logging};
use mountpoint_s3_fs::memory::{CandidateSize, PagedPool, effective_total_memory};
use mountpoint_s3_fs::s3::config::{
    ClientConfig, MemoryLimitSetting, PartConfig, Region, TargetThroughputSetting,
};
use mountpoint_s3_fs::s3::{Bucket, Prefix, S3Path, S3Personality};
use mountpoint_s3_fs::{
    MountpointConfig, Runtime, S3FilesystemConfig, Superblock, SuperblockConfig,
};

const PART_SIZE: usize = 8 << 20;

struct Args {
    bucket: String,
    dir: String,
    endpoint: String,
    region: String,
    cache: Option<String>,
    upload_checksums: bool,
}

fn args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut pos, mut endpoint, mut region, mut cache, mut upload_checksums) =
        (vec![], None, "us-east-1".to_string(), None, true);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--endpoint" => endpoint = Some(value()?),
            "--region" => region = value()?,
            "--cache" => cache = Some(value()?),
            "--no-upload-checksums" => upload_checksums = false,
            _ if a.starts_with("--") => bail!("unknown option {a}"),
            _ => pos.push(a),
        }
    }
    let [bucket, dir]: [String; 2] = pos
        .try_into()
        .map_err(|_| anyhow!("usage: mountpoint-s3-driver BUCKET DIR --endpoint URL"))?;
    let endpoint = endpoint.ok_or_else(|| anyhow!("--endpoint is required"))?;
    Ok(Args {
        bucket,
        dir,
        endpoint,
        region,
        cache,
        upload_checksums,
    })
}

fn main() -> Result<()> {
    let args = args()?;
    let _logging = init_logging(LoggingConfig {
        log_file: None,
        log_to_stdout: true,
        default_filter: "warn,awscrt=off".to_string(),
    })?;
    let mem_limit = (effective_total_memory() as f64 * 0.95) as usize;
    let client_config = ClientConfig {
        region: Region::new_user_specified(args.region.clone()),
        endpoint_url: Some(args.endpoint.clone()),
        addressing_style: AddressingStyle::Path,
        dual_stack: false,
        transfer_acceleration: false,
        auth_config: Default::default(),
        requester_pays: false,
        expected_bucket_owner: None,
        throughput_target: TargetThroughputSetting::Default,
        bind: None,
        part_config: PartConfig::with_part_size(PART_SIZE)
            .validate(MemoryLimitSetting::Default(mem_limit))?,
        user_agent: UserAgent::new(Some("bladefs-bench".to_string())),
        tls_config: None,
    };
    let pool = PagedPool::config()
        .with_candidate_sizes([CandidateSize::new(PART_SIZE)])
        .with_memory_limit(mem_limit)
        .build();
    let client = client_config
        .create_client(pool.clone(), None)
        .context("creating the S3 client")?;
    let runtime = Runtime::new(client.event_loop_group());

    // As mount-s3: with a local cache, metadata is kept for a minute.
    let cache_config = match args.cache {
        Some(_) => CacheConfig::new(TimeToLive::Duration(Duration::from_secs(60))),
        None => CacheConfig::default(),
    };
    let mut fs_config = S3FilesystemConfig {
        cache_config: cache_config.clone(),
        allow_delete: true,
        allow_overwrite: true,
        s3_personality: S3Personality::Standard,
        ..Default::default()
    };
    if !args.upload_checksums {
        fs_config.upload_checksum_algorithm = None;
    }
    let mut managed = None;
    let disk_cache_config = match &args.cache {
        Some(dir) => {
            // mount-s3 wants the directory made; the bench names a new one.
            std::fs::create_dir_all(dir).context("creating the cache directory")?;
            let dir = ManagedCacheDir::new_from_parent_with_cache_key(dir, None, true)
                .context("creating the cache directory")?;
            let config = DiskDataCacheConfig {
                cache_directory: dir.as_path_buf(),
                block_size: 1 << 20,
                limit: CacheLimit::default(),
            };
            managed = Some(dir);
            Some(config)
        }
        None => None,
    };
    let data_cache = DataCacheConfig {
        disk_cache_config,
        express_cache_config: None,
    };
    let fuse = FuseSessionConfig::new(
        MountPoint::new(&args.dir)?,
        FuseOptions {
            read_only: false,
            allow_other: false,
            allow_root: false,
            auto_unmount: false,
            clone_fd: false,
        },
        16,
    )?;
    let s3_path = S3Path::new(Bucket::new(args.bucket)?, Prefix::new("")?);
    let superblock = Superblock::new(
        client.clone(),
        s3_path,
        SuperblockConfig {
            cache_config,
            s3_personality: S3Personality::Standard,
        },
    );
    let mut session = MountpointConfig::new(fuse, fs_config, data_cache)?
        .create_fuse_session(superblock, client, runtime, pool)
        .context("mounting")?;
    if let Some(dir) = managed {
        session.run_on_close(Box::new(move || drop(dir)));
    }
    session.join()
}
