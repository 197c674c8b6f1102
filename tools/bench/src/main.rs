//! `tocsin-bench`: Tocsin's benchmark programs and the synthetic demo-district
//! generator. Benchmarks print one line per figure, `name value unit`, with names that
//! stay stable so runs can be compared (see docs/benchmarks.md).

mod beidou;
mod campaign;
mod district;
mod footprint;
mod geofence;
mod intake;
mod mesh;
mod pauses;
mod rtp;
mod sms;
mod voice;

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
    /// Durable alerts and acks per second through tocsind's HTTP API and modem pool.
    Intake(intake::IntakeArgs),
    /// Memory and start-up time of tocsind with a district's directory loaded.
    Footprint(footprint::FootprintArgs),
    /// BeiDou: a red alert through the real router and BeiDou driver against simulated
    /// terminals on a virtual clock, first attempts against the card pool's bound; and
    /// Iridium SBD sessions per hour through the real driver and simulator.
    Beidou(beidou::BeidouArgs),
    /// Meshtastic: a red alert to 60 leads through the real router and mesh driver against
    /// a simulated radio on a virtual clock, last ack against the airtime bound.
    Mesh(mesh::MeshArgs),
    /// SIP: call setup to first RTP packet, and concurrent calls paced in real time,
    /// through the real SIP driver against the simulated far end on loopback.
    Voice(voice::VoiceArgs),
    /// IP speakers: concurrent RTP streams paced in real time, and alert to first audio
    /// packet, through the real speaker driver on loopback.
    Rtp(rtp::RtpArgs),
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
        Command::Footprint(args) => footprint::run(&args)?,
        Command::Intake(args) => intake::run(&args)?,
        Command::Beidou(args) => beidou::run(&args)?,
        Command::Mesh(args) => mesh::run(&args)?,
        Command::Voice(args) => voice::run(&args)?,
        Command::Rtp(args) => rtp::run(&args)?,
        Command::GenDistrict { out, seed } => {
            for line in district::write(&out, seed)? {
                println!("{line}");
            }
        }
    }
    Ok(())
}
