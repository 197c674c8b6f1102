//! `tocsin-sim beidou`: simulated BeiDou RDSS terminals on one simulated satellite network.
//!
//! `tocsin-sim beidou --cards 0242286,4207733 --dialects bds2,bds3` starts two terminals,
//! each on its own pseudo-terminal behind a stable symlink (`bd0`, `bd1`), prints one line
//! per terminal (`bd0 0242286 bds2 /tmp/tocsin-sim/bd0 -> /dev/pts/7`), and serves until
//! Ctrl-C. Point a `tocsind` BeiDou device's `path` at the symlink. Cards not on a
//! simulated terminal are people, who reply as their script says (`--people FILE`).

use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;
use tocsin_beidou::pty::spawn_sim;
use tocsin_beidou::sim::{
    CardScript, Faults, ReplyBehaviour, SimConfig, SimDialect, TerminalConfig,
};
use tokio_util::sync::CancellationToken;

/// Arguments of `tocsin-sim beidou`.
#[derive(clap::Args, Debug)]
pub struct BeidouArgs {
    /// Card ids of the simulated terminals, comma-separated (one terminal per card).
    #[arg(long, value_delimiter = ',', default_value = "0242286")]
    cards: Vec<String>,
    /// Dialect of each terminal (`bds2`, `bds3`, `dual`), comma-separated; the last one
    /// repeats for the remaining terminals.
    #[arg(long, value_delimiter = ',', default_value = "bds2")]
    dialects: Vec<String>,
    /// Directory for the stable symlinks (`bd0`, `bd1`, ...).
    #[arg(long, default_value = "/tmp/tocsin-sim")]
    dir: PathBuf,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Service frequency of every card, seconds between transmissions (simulated time).
    #[arg(long, default_value_t = 60)]
    frequency_secs: u32,
    /// Communication level of every card.
    #[arg(long, default_value_t = 3)]
    level: u8,
    /// Shortest network latency, milliseconds (simulated time).
    #[arg(long, default_value_t = 1000)]
    latency_min_ms: u64,
    /// Longest network latency, milliseconds (simulated time).
    #[arg(long, default_value_t = 5000)]
    latency_max_ms: u64,
    /// Probability that the network loses a message.
    #[arg(long, default_value_t = 0.0)]
    loss_rate: f64,
    /// Simulated time runs this many times faster than real time.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// TOML file with `[[cards]]` scripts and an optional `default_script`.
    #[arg(long)]
    people: Option<PathBuf>,
    /// Probability that a sentence goes out with a wrong checksum.
    #[arg(long, default_value_t = 0.0)]
    bad_checksum_rate: f64,
    /// Probability of garbage bytes before a sentence.
    #[arg(long, default_value_t = 0.0)]
    garbage_rate: f64,
    /// Probability that a send's feedback never comes.
    #[arg(long, default_value_t = 0.0)]
    lost_feedback_rate: f64,
}

/// The `--people` file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct PeopleFile {
    /// Scripts by card.
    #[serde(default)]
    cards: Vec<CardScript>,
    /// What everyone else does.
    default_script: Option<ReplyBehaviour>,
}

fn dialect(name: &str) -> anyhow::Result<SimDialect> {
    match name.trim() {
        "bds2" | "2.1" => Ok(SimDialect::Bds2),
        "bds3" => Ok(SimDialect::Bds3),
        "dual" => Ok(SimDialect::Dual),
        other => anyhow::bail!("--dialects: {other:?} is not bds2, bds3 or dual"),
    }
}

/// Runs the simulated terminals until Ctrl-C.
pub async fn beidou(args: BeidouArgs) -> anyhow::Result<()> {
    let file = match &args.people {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<PeopleFile>(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => PeopleFile::default(),
    };
    let cfg = SimConfig {
        latency_min_ms: args.latency_min_ms,
        latency_max_ms: args.latency_max_ms,
        loss_rate: args.loss_rate,
        cards: file.cards,
        default_script: file
            .default_script
            .unwrap_or_else(tocsin_beidou::sim::default_script),
    };
    let faults = Faults {
        bad_checksum_rate: args.bad_checksum_rate,
        garbage_rate: args.garbage_rate,
        lost_feedback_rate: args.lost_feedback_rate,
    };
    let mut terminals = Vec::new();
    let mut links = Vec::new();
    for (i, card) in args.cards.iter().enumerate() {
        let name = args
            .dialects
            .get(i)
            .or(args.dialects.last())
            .map(String::as_str)
            .unwrap_or("bds2");
        let mut t = TerminalConfig::new(card.trim());
        t.dialect = dialect(name)?;
        t.frequency_secs = args.frequency_secs;
        t.level = args.level;
        t.faults = faults.clone();
        terminals.push(t);
        links.push(args.dir.join(format!("bd{i}")));
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let cancel = CancellationToken::new();
    let handle = spawn_sim(
        links.clone(),
        terminals.clone(),
        cfg,
        args.seed,
        args.speed,
        cancel.clone(),
    )
    .context("starting the BeiDou simulator")?;
    for (i, (link, t)) in links.iter().zip(&terminals).enumerate() {
        let target = std::fs::read_link(link).unwrap_or_default();
        println!(
            "bd{i} {} {:?} {} -> {}",
            t.card,
            t.dialect,
            link.display(),
            target.display()
        );
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    cancel.cancel();
    for p in &handle.paths {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
