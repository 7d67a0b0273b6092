//! `bladefs-s3`: the bladefs S3 client on the command line, for seeding
//! and checking buckets, and for measuring what the store gives with no
//! filesystem in between (parallel ranged GETs, parallel multipart PUTs).

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use bladefs::cli::S3Args;
use bladefs::s3::*;
use bytes::Bytes;
use clap::{CommandFactory, Parser, Subcommand};
use futures::{StreamExt, TryStreamExt};

#[derive(Debug, Parser)]
#[command(
    name = "bladefs-s3",
    version,
    about = "S3 operations through the bladefs client"
)]
struct Cli {
    #[command(flatten)]
    s3: S3Args,
    /// Print request counts and throughput to stderr when done.
    #[arg(long, global = true)]
    stats: bool,
    /// Part size for multipart PUT and ranged GET, in MiB.
    #[arg(long, global = true, default_value_t = 8)]
    part_size_mib: u64,
    /// Parts in flight at once.
    #[arg(long, global = true, default_value_t = 8)]
    jobs: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List buckets, or the keys of BUCKET[/PREFIX] one level deep.
    Ls { path: Option<String> },
    /// Create a bucket.
    Mb { bucket: String },
    /// Delete an empty bucket.
    Rb { bucket: String },
    /// Show a bucket's versioning state, or turn it on (Enabled) or off
    /// (Suspended: versions kept, no new ones).
    Versioning {
        bucket: String,
        #[arg(value_parser = ["on", "off"])]
        state: Option<String>,
    },
    /// Upload FILE to BUCKET/KEY (multipart, in parallel, above one part).
    Put { file: PathBuf, target: String },
    /// Download BUCKET/KEY to FILE, or to standard output.
    Get {
        source: String,
        file: Option<PathBuf>,
    },
    /// Show size, ETag and date of BUCKET/KEY.
    Stat { target: String },
    /// Delete objects.
    Rm { targets: Vec<String> },
    /// Create COUNT objects of SIZE bytes under BUCKET/PREFIX, `--jobs` at
    /// a time, spread over DIRS subdirectories (`dNNN/`) if given: for
    /// seeding listings and benchmarks.
    Fill {
        target: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[arg(long)]
        dirs: Option<usize>,
    },
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn split(path: &str) -> Result<(String, String), Error> {
    match path.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b.to_string(), k.to_string())),
        _ => Err(format!("{path:?} is not BUCKET/KEY").into()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Output piped into `head` ends quietly, as for other command-line
    // tools, instead of a panic on the closed pipe.
    // SAFETY: only the default disposition is set; no handler runs our code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args: Vec<_> = std::env::args_os().collect();
    if let Some(done) = bladefs::manual::answer(Cli::command(), "1", &args) {
        return done;
    }
    let cli = Cli::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("BLADEFS_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let client = match cli.s3.client() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("bladefs-s3: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let result = run(&cli, &client).await;
    if cli.stats {
        let stats = client.stats().snapshot();
        let secs = start.elapsed().as_secs_f64();
        let t = stats.total();
        eprintln!("{stats}");
        eprintln!(
            "elapsed {secs:.3} s, {:.1} MiB/s received, {:.1} MiB/s sent",
            t.bytes_received as f64 / secs / 1048576.0,
            t.bytes_sent as f64 / secs / 1048576.0
        );
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bladefs-s3: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli, client: &Arc<S3Client>) -> Result<(), Error> {
    let part_size = cli.part_size_mib.max(5) * 1024 * 1024;
    let jobs = cli.jobs.max(1);
    match &cli.command {
        Command::Ls { path: None } => {
            for b in client.list_buckets().await? {
                println!("{}/", b.name);
            }
        }
        Command::Ls { path: Some(path) } => {
            let (bucket, prefix) = match path.split_once('/') {
                Some((b, p)) => (b.to_string(), p.to_string()),
                None => (path.clone(), String::new()),
            };
            let mut params = ListObjectsParams {
                prefix,
                delimiter: Some("/".into()),
                ..Default::default()
            };
            loop {
                let page = client.list_objects(&bucket, &params).await?;
                for p in &page.common_prefixes {
                    println!("{:>14}  {p}", "DIR");
                }
                for o in &page.objects {
                    println!("{:>14}  {}", o.size, o.key);
                }
                match page.next_continuation_token {
                    Some(t) => params.continuation_token = Some(t),
                    None => break,
                }
            }
        }
        Command::Mb { bucket } => client.create_bucket(bucket).await?,
        Command::Rb { bucket } => client.delete_bucket(bucket).await?,
        Command::Versioning { bucket, state } => {
            if let Some(state) = state {
                client.put_bucket_versioning(bucket, state == "on").await?;
            }
            println!("{:?}", client.get_bucket_versioning(bucket).await?);
        }
        Command::Stat { target } => {
            let (bucket, key) = split(target)?;
            let h = client.head_object(&bucket, &key, None).await?;
            println!(
                "size {}\netag {}\nlast-modified {}",
                h.size,
                h.etag.unwrap_or_default(),
                h.last_modified
                    .map(httpdate::fmt_http_date)
                    .unwrap_or_default()
            );
        }
        Command::Rm { targets } => {
            for t in targets {
                let (bucket, key) = split(t)?;
                client.delete_object(&bucket, &key, None).await?;
            }
        }
        Command::Put { file, target } => {
            let (bucket, key) = split(target)?;
            put(client, file, &bucket, &key, part_size, jobs).await?;
        }
        Command::Get { source, file } => {
            let (bucket, key) = split(source)?;
            get(client, &bucket, &key, file.as_ref(), part_size, jobs).await?;
        }
        Command::Fill {
            target,
            count,
            size,
            dirs,
        } => {
            let (bucket, prefix) = match target.split_once('/') {
                Some((b, p)) => (b.to_string(), p.trim_end_matches('/').to_string()),
                None => (target.clone(), String::new()),
            };
            let body = Bytes::from(vec![b'x'; *size]);
            futures::stream::iter(0..*count)
                .map(|i| {
                    let mut key = prefix.clone();
                    if !key.is_empty() {
                        key.push('/');
                    }
                    if let Some(d) = dirs {
                        key.push_str(&format!("d{:03}/", i % (*d).max(1)));
                    }
                    key.push_str(&format!("f{i:06}"));
                    let (bucket, body) = (&bucket, body.clone());
                    async move { client.put_object(bucket, &key, body).await.map(|_| ()) }
                })
                .buffer_unordered(jobs.max(16))
                .try_collect::<()>()
                .await?;
        }
    }
    Ok(())
}

async fn read_at(file: &Arc<std::fs::File>, offset: u64, len: u64) -> Result<Bytes, Error> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    })
    .await?
}

/// Uploads with at most `jobs` parts in memory at once.
async fn put(
    client: &Arc<S3Client>,
    path: &PathBuf,
    bucket: &str,
    key: &str,
    part_size: u64,
    jobs: usize,
) -> Result<(), Error> {
    let file = Arc::new(std::fs::File::open(path)?);
    let size = file.metadata()?.len();
    if size <= part_size {
        let body = read_at(&file, 0, size).await?;
        client.put_object(bucket, key, body).await?;
        return Ok(());
    }
    let parts_count = size.div_ceil(part_size);
    if parts_count > limits::MAX_PARTS as u64 {
        return Err(format!("{parts_count} parts exceed 10000: raise --part-size-mib").into());
    }
    let upload = client.create_multipart_upload(bucket, key).await?;
    let result: Result<Vec<CompletedPart>, Error> = futures::stream::iter(0..parts_count)
        .map(|i| {
            let file = file.clone();
            let upload = upload.clone();
            async move {
                let offset = i * part_size;
                let body = read_at(&file, offset, part_size.min(size - offset)).await?;
                let number = i as u32 + 1;
                let etag = client
                    .upload_part(bucket, key, &upload, number, body)
                    .await?;
                Ok::<_, Error>(CompletedPart {
                    part_number: number,
                    etag,
                })
            }
        })
        .buffer_unordered(jobs)
        .try_collect()
        .await;
    let completed = match result {
        Ok(mut parts) => {
            parts.sort_by_key(|p| p.part_number);
            client
                .complete_multipart_upload(bucket, key, &upload, &parts)
                .await
                .map_err(Error::from)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = completed {
        // Never leave a half-written upload behind.
        let _ = client.abort_multipart_upload(bucket, key, &upload).await;
        return Err(e);
    }
    Ok(())
}

/// Downloads in ranges, `jobs` in flight, written in order; every range
/// carries If-Match so a concurrent overwrite is an error, not a mix.
async fn get(
    client: &Arc<S3Client>,
    bucket: &str,
    key: &str,
    path: Option<&PathBuf>,
    part_size: u64,
    jobs: usize,
) -> Result<(), Error> {
    let head = client.head_object(bucket, key, None).await?;
    let mut out: Box<dyn Write + Send> = match path {
        Some(p) if p.as_os_str() != "-" => {
            Box::new(std::io::BufWriter::new(std::fs::File::create(p)?))
        }
        _ => Box::new(std::io::stdout()),
    };
    let ranges = (0..head.size.div_ceil(part_size))
        .map(|i| i * part_size..((i + 1) * part_size).min(head.size));
    let mut bodies = futures::stream::iter(ranges)
        .map(|range| {
            let params = GetObjectParams {
                range: Some(range),
                if_match: head.etag.clone(),
                ..Default::default()
            };
            async move { client.get_object(bucket, key, &params).await }
        })
        .buffered(jobs);
    while let Some(part) = bodies.next().await {
        out.write_all(&part?.body)?;
    }
    out.flush()?;
    Ok(())
}
