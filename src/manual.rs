//! Man pages and shell completions, made from the same clap definitions as
//! `--help` so that they never drift from it: `bladefs --man`,
//! `bladefs --completions bash|zsh|fish|elvish|powershell` (and the same
//! for `bladefs-s3`). They are answered before the command line is parsed
//! for a mount, whose SOURCE and MOUNTPOINT they do not have.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::Command;
use clap_complete::Shell;

/// Answers `--man` and `--completions SHELL` given as the only arguments;
/// `None` for any other command line.
pub fn answer(mut cmd: Command, section: &str, args: &[OsString]) -> Option<ExitCode> {
    let words: Vec<&str> = args.iter().skip(1).filter_map(|a| a.to_str()).collect();
    let mut out = std::io::stdout().lock();
    let done = match words.as_slice() {
        ["--man"] => clap_mangen::Man::new(cmd)
            .section(section)
            .render(&mut out)
            .and_then(|()| out.flush()),
        ["--completions", shell] => {
            let Ok(shell) = shell.parse::<Shell>() else {
                eprintln!("unknown shell {shell:?}: bash, zsh, fish, elvish or powershell");
                return Some(ExitCode::from(2));
            };
            let name = cmd.get_name().to_string();
            clap_complete::generate(shell, &mut cmd, name, &mut out);
            out.flush()
        }
        _ => return None,
    };
    Some(match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    })
}
