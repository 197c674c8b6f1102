//! `tocsind`: the Tocsin gateway daemon.
//!
//! - `tocsind --config FILE` runs the gateway.
//! - `tocsind check --config FILE` validates a config and the directory it names.
//! - `tocsind audit --config FILE` (or `--db FILE`) verifies the log's hash chain.
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
    /// Verify the 叫应 record's hash chain (read-only; safe beside a running gateway):
    /// exits 0 when every record chains to the one before it, 1 at the first break.
    Audit {
        /// The log file itself, instead of the one in the config's `node.data_dir`.
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Run the whole gateway against simulated GSM modems on pseudo-terminals: a red flood
    /// alert for a mountain valley in a synthetic district, live progress, the 叫应 report.
    Demo(demo::DemoArgs),
}

/// `tocsind audit`: walks the chain of the log at `db` and prints what it found.
fn audit(db: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let report =
        tocsin_store::verify_file(db).with_context(|| format!("reading {}", db.display()))?;
    let hex = |h: &[u8]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
    println!("log: {}", db.display());
    println!(
        "records verified: {} of {}",
        report.records_verified,
        report.last_seq.unwrap_or(0)
    );
    if let Some(head) = &report.head_hash {
        println!(
            "head hash: {} (keep it elsewhere: a rewritten tail changes it)",
            hex(head)
        );
    }
    match &report.first_broken {
        None => {
            println!("chain intact");
            Ok(())
        }
        Some(b) => anyhow::bail!("chain broken at record {}: {:?}", b.seq, b.reason),
    }
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
            Some(Command::Audit { db }) => {
                let db = match (db, cli.config) {
                    (Some(db), _) => db,
                    (None, Some(path)) => {
                        config::Config::load(&path)?.node.data_dir.join("tocsin.db")
                    }
                    (None, None) => anyhow::bail!("audit needs --config FILE or --db FILE"),
                };
                audit(&db)
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
