//! `bladefs [OPTIONS] SOURCE MOUNTPOINT`: see `bladefs --help`.

use std::process::ExitCode;

use bladefs::cli::{Helper, MountArgs};
use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    pin_malloc_thresholds();
    let args: Vec<_> = std::env::args_os().collect();
    if let Some(done) = bladefs::manual::answer(MountArgs::command(), "8", &args) {
        return done;
    }
    let args = match bladefs::cli::expand_mount_options(args) {
        Ok(Helper::Mount(a)) => a,
        // mount -f: everything but the mount itself.
        Ok(Helper::Fake) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bladefs: {e}");
            return ExitCode::from(2);
        }
    };
    bladefs::mount::run(MountArgs::parse_from(args))
}

/// glibc raises its mmap threshold each time a large block is freed, after
/// which the daemon's part-sized buffers (up to the part size, 8 MiB by
/// default) come from per-thread arenas and stay resident after they are
/// freed, one set per blocking-pool thread: the process grew far past the
/// memory budget that bounds the buffers themselves. A fixed threshold
/// keeps every large buffer mapped on its own and unmapped when freed, and
/// fewer arenas bound what small allocations can strand.
fn pin_malloc_thresholds() {
    /// Blocks from this size on are mapped on their own.
    const MMAP_THRESHOLD: i32 = 256 * 1024;
    /// Arenas for small allocations (glibc's default is 8 per core).
    const ARENAS: i32 = 4;
    // SAFETY: mallopt only sets allocator parameters; called before any
    // thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}
