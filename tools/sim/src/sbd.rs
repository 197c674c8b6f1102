//! `tocsin-sim sbd`: simulated Iridium 9603 modems, each on its own pseudo-terminal behind
//! a stable symlink, with the Iridium network and a field kit that acks what it gets.

use std::path::PathBuf;

use anyhow::Context;
use tocsin_iridium_sbd::pty::spawn_sim;
use tocsin_iridium_sbd::sim::{Faults, KitReply, SimConfig};
use tokio_util::sync::CancellationToken;

/// Options of `tocsin-sim sbd`.
#[derive(clap::Args, Debug)]
pub struct SbdArgs {
    /// How many modems.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Directory for the stable symlinks (`sbd0`, `sbd1`, ...).
    #[arg(long, default_value = "/tmp/tocsin-sim")]
    dir: PathBuf,
    /// RNG seed (modem i uses seed + i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Shortest session, milliseconds (simulated time).
    #[arg(long, default_value_t = 5_000)]
    session_min_ms: u64,
    /// Longest session, milliseconds (simulated time).
    #[arg(long, default_value_t = 20_000)]
    session_max_ms: u64,
    /// Simulated time runs this many times faster than real time.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// The field kit's IMEI (the origin of its ack batches).
    #[arg(long, default_value = "300234010753370")]
    kit_imei: String,
    /// The kit answers: `ack`, `wrong-code` or `never`.
    #[arg(long, default_value = "ack")]
    kit_reply: String,
    /// Shortest kit reply delay, seconds.
    #[arg(long, default_value_t = 10.0)]
    reply_min_secs: f64,
    /// Longest kit reply delay, seconds.
    #[arg(long, default_value_t = 60.0)]
    reply_max_secs: f64,
    /// The network does not ring (replies are found by mailbox checks only).
    #[arg(long)]
    no_rings: bool,
    /// No network service: every session fails with MO status 32.
    #[arg(long)]
    no_network: bool,
    /// Probability that a session fails with one of `--failure-status`.
    #[arg(long, default_value_t = 0.0)]
    session_failure_rate: f64,
    /// MO statuses of failed sessions (repeatable; default 18, RF drop).
    #[arg(long)]
    failure_status: Vec<u8>,
    /// Probability that a command is never answered.
    #[arg(long, default_value_t = 0.0)]
    silence_rate: f64,
    /// Probability of garbage bytes before a response.
    #[arg(long, default_value_t = 0.0)]
    garbage_rate: f64,
    /// Probability that an SBDRB block has a wrong checksum.
    #[arg(long, default_value_t = 0.0)]
    corrupt_mt_rate: f64,
}

/// Runs the simulators until Ctrl-C.
pub async fn sbd(args: SbdArgs) -> anyhow::Result<()> {
    let (min_secs, max_secs) = (args.reply_min_secs, args.reply_max_secs);
    let reply = match args.kit_reply.as_str() {
        "ack" => KitReply::Ack { min_secs, max_secs },
        "wrong-code" => KitReply::WrongCode { min_secs, max_secs },
        "never" => KitReply::Never,
        other => anyhow::bail!("--kit-reply {other:?}: expected ack, wrong-code or never"),
    };
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let cancel = CancellationToken::new();
    let mut links = Vec::new();
    for i in 0..args.count {
        let link = args.dir.join(format!("sbd{i}"));
        let cfg = SimConfig {
            // Each modem its own IMEI: the base one with the index added to the last digits.
            imei: format!("3004340638{:05}", 39_690 + i),
            session_min_ms: args.session_min_ms,
            session_max_ms: args.session_max_ms,
            kit_imei: args.kit_imei.clone(),
            reply: reply.clone(),
            rings: !args.no_rings,
            faults: Faults {
                session_failure_rate: args.session_failure_rate,
                failure_statuses: args.failure_status.clone(),
                no_network: args.no_network,
                silence_rate: args.silence_rate,
                garbage_rate: args.garbage_rate,
                corrupt_mt_rate: args.corrupt_mt_rate,
                ..Faults::default()
            },
            ..SimConfig::default()
        };
        spawn_sim(
            link.clone(),
            cfg,
            args.seed.wrapping_add(u64::from(i)),
            args.speed,
            cancel.clone(),
        )
        .with_context(|| format!("starting SBD simulator {i}"))?;
        let target = std::fs::read_link(&link).unwrap_or_default();
        println!("sbd{i} {} -> {}", link.display(), target.display());
        links.push(link);
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    cancel.cancel();
    for l in &links {
        let _ = std::fs::remove_file(l);
    }
    Ok(())
}
