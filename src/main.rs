//! The `flowrun` binary: parse the command line, run the command, map the result to an exit
//! code. Everything else lives in the library crates.

mod cli;
mod commands;
mod diag_render;
mod exit;
mod logging;
mod style;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if let Err(exit) = logging::install(cli.log_format) {
        return exit.into();
    }
    commands::dispatch(cli).into()
}
