//! `tocsin-sim speaker`: simulated IP speakers on UDP. Each listens for RTP G.711 on its
//! port (RTCP on the next), checks the stream, writes what it heard to
//! `<dir>/speaker<i>.wav` after each stream, and sends RTCP receiver reports. Point a
//! `type = "speaker"` device's group `rtp` at a printed address.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tocsin_speaker::sim::{Faults, SimConfig};
use tocsin_speaker::udp::spawn_sim_speaker;
use tokio_util::sync::CancellationToken;

/// Options of `tocsin-sim speaker`.
#[derive(clap::Args, Debug)]
pub struct SpeakerArgs {
    /// How many speakers.
    #[arg(long, default_value_t = 1)]
    count: u16,
    /// RTP address of the first speaker; speaker i listens on port + 2i (a multicast
    /// group address makes them all join it, on the same port).
    #[arg(long, default_value = "127.0.0.1:5004")]
    rtp: SocketAddr,
    /// Directory for the WAV files of what each speaker heard.
    #[arg(long, default_value = "/tmp/tocsin-sim")]
    dir: PathBuf,
    /// RNG seed (speaker i uses seed + i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Milliseconds between receiver reports while a stream plays.
    #[arg(long, default_value_t = 5000)]
    report_ms: u64,
    /// Probability that an RTP packet is lost.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Probability that an RTP packet arrives after the next one.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// Never send receiver reports (no evidence).
    #[arg(long)]
    silent: bool,
}

/// Runs the speakers until Ctrl-C.
pub async fn speaker(args: SpeakerArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let cancel = CancellationToken::new();
    for i in 0..args.count {
        let mut rtp = args.rtp;
        if !rtp.ip().is_multicast() && rtp.port() != 0 {
            let port = rtp
                .port()
                .checked_add(i.saturating_mul(2))
                .context("--rtp port too high for --count")?;
            rtp.set_port(port);
        }
        let cfg = SimConfig {
            report_interval_ms: args.report_ms,
            faults: Faults {
                loss: args.loss,
                reorder: args.reorder,
                silent: args.silent,
            },
        };
        let wav = args.dir.join(format!("speaker{i}.wav"));
        let h = spawn_sim_speaker(
            rtp,
            cfg,
            args.seed.wrapping_add(u64::from(i)),
            Some(wav.clone()),
            cancel.clone(),
        )
        .await
        .with_context(|| format!("starting speaker {i} on {rtp}"))?;
        println!(
            "speaker{i} rtp {} rtcp {} wav {}",
            h.rtp,
            h.rtcp,
            wav.display()
        );
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    cancel.cancel();
    // Let the runners write their WAV files.
    tokio::task::yield_now().await;
    Ok(())
}
