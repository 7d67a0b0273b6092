//! `bladefs [OPTIONS] SOURCE MOUNTPOINT`: see `bladefs --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match bladefs::cli::expand_mount_options(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bladefs: {e}");
            return ExitCode::from(2);
        }
    };
    bladefs::mount::run(bladefs::cli::MountArgs::parse_from(args))
}
