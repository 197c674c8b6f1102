//! `tocsind`: the Tocsin gateway daemon.
//!
//! - `tocsind --config FILE` runs the gateway.
//! - `tocsind check --config FILE` validates a config and the directory it names.
//! - `tocsind demo` runs the whole gateway against simulated modems on pseudo-terminals.

#![allow(
    clippy::disallowed_methods,
    reason = "the daemon binary is where real time enters Tocsin"
)]

mod checkin;
mod clock;
mod config;
mod daemon;
mod demo;
mod gateway;
mod metrics;
mod report;
mod speech;
mod uplink;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Tocsin: graded disaster warnings to every responsible person, over every bearer that
/// still works, until each one answers (叫应).
#[derive(Parser, Debug)]
#[command(name = "tocsind", version, about)]
struct Cli {
    /// The config file (TOML).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway (the default when a --config is given).
    Run,
    /// Validate the config file and the directory it names, then exit.
    Check,
    /// Run the whole gateway against simulated GSM modems on pseudo-terminals: a red flood
    /// alert for a mountain valley in a synthetic district, live progress, the 叫应 report.
    Demo(demo::DemoArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOCSIN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tocsind: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Demo(args)) => demo::run(args).await,
            Some(Command::Check) => {
                let path = cli
                    .config
                    .ok_or_else(|| anyhow::anyhow!("check needs --config FILE"))?;
                daemon::check(&path)
            }
            Some(Command::Run) | None => {
                let path = cli
                    .config
                    .ok_or_else(|| anyhow::anyhow!("give --config FILE, or run `tocsind demo`"))?;
                daemon::run_from_file(&path).await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tocsind: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
