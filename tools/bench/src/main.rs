//! `tocsin-bench`: Tocsin's benchmark programs and the synthetic demo-district
//! generator. Benchmarks print one line per figure, `name value unit`, with names that
//! stay stable so runs can be compared (see docs/benchmarks.md).

mod campaign;
mod district;
mod geofence;
mod sms;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Tocsin benchmarks and data generators.
#[derive(Debug, Parser)]
#[command(name = "tocsin-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Time geofence resolution: 1,000,000 endpoints, a 200-vertex alert polygon, 300
    /// village polygons.
    Geofence(geofence::GeofenceArgs),
    /// SMS throughput of the real modem driver against the simulator's per-message latency.
    Sms(sms::SmsArgs),
    /// A red alert to a few thousand responsible persons through the real router on a
    /// virtual clock: time to first send, first attempts against the capacity bound, acks.
    Campaign(campaign::CampaignArgs),
    /// Generate the SYNTHETIC demo district (areas.geojson, people.csv, valley.geojson).
    GenDistrict {
        /// Output folder.
        #[arg(long, default_value = "configs/district")]
        out: PathBuf,
        /// Generator seed; the same seed gives the same files.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Geofence(args) => {
            geofence::run(&args)?;
        }
        Command::Sms(args) => sms::run(&args)?,
        Command::Campaign(args) => campaign::run(&args)?,
        Command::GenDistrict { out, seed } => {
            for line in district::write(&out, seed)? {
                println!("{line}");
            }
        }
    }
    Ok(())
}
