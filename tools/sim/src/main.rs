//! `tocsin-sim`: device simulators for demos, tests and benchmarks.
//!
//! `tocsin-sim gsm --count 2` starts two simulated GSM modems, each on its own
//! pseudo-terminal behind a stable symlink, prints one line per modem
//! (`modem0 /tmp/tocsin-sim/modem0 -> /dev/pts/7`), and serves until Ctrl-C. Point a
//! `tocsind` modem's `path` at the symlink. With `--voice` each modem also takes calls
//! and gets an audio port (`modem0-audio`) for the driver's `audio_path`; one line per
//! finished call reports who answered, the keys and what the listener heard.
//!
//! `tocsin-sim mesh --count 5` starts a simulated Meshtastic radio with five nodes behind
//! it on a pseudo-terminal (`--tcp-port 4403` serves it on 127.0.0.1 instead).
//!
//! `tocsin-sim sbd` starts a simulated Iridium 9603 modem (`sbd0`) with the network and
//! a field kit that acks what it receives.
//!
//! `tocsin-sim speaker --count 2` starts two simulated IP speakers on UDP (RTP on
//! 127.0.0.1:5004 and :5006) that write what they heard to WAV files.
//!
//! `tocsin-sim app` starts a simulated app backend (pushes on 127.0.0.1:9000/push) whose
//! subscribers answer with the code from the text by signed callback or ack link.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use tocsin_at_modem::pty::{spawn_sim, spawn_voice_sim};
use tocsin_at_modem::quirks::Family;
use tocsin_at_modem::sim::{
    CallBehaviour, CallScript, Faults, PhoneScript, ReplyBehaviour, SimConfig,
};
use tokio_util::sync::CancellationToken;

mod app;
mod beidou;
mod sbd;
mod sip;
mod speaker;

/// Tocsin device simulators.
#[derive(Parser, Debug)]
#[command(name = "tocsin-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    kind: Kind,
}

#[derive(Subcommand, Debug)]
enum Kind {
    /// GSM/LTE modems speaking 27.005 SMS in PDU mode, with the network behind them.
    Gsm(GsmArgs),
    /// BeiDou RDSS terminals (2.1 and BDS-3 sentences) on a simulated satellite network.
    Beidou(beidou::BeidouArgs),
    /// A Meshtastic radio with a mesh of nodes behind it, on a pty or on 127.0.0.1 TCP.
    Mesh(MeshArgs),
    /// Iridium 9603 SBD modems with the network and a field kit behind them.
    Sbd(sbd::SbdArgs),
    /// IP speakers receiving RTP G.711, writing what they heard to WAV, sending RTCP reports.
    Speaker(speaker::SpeakerArgs),
    /// A SIP trunk far end on UDP: phones that ring, answer and press a key.
    Sip(sip::SipArgs),
    /// An app backend on 127.0.0.1 taking signed webhook pushes; people ack by callback or link.
    App(app::AppArgs),
}

#[derive(clap::Args, Debug)]
struct GsmArgs {
    /// How many modems.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Directory for the stable symlinks (`modem0`, `modem1`, ...).
    #[arg(long, default_value = "/tmp/tocsin-sim")]
    dir: PathBuf,
    /// RNG seed (modem i uses seed + i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Network time to accept one SMS part, milliseconds (simulated time).
    #[arg(long, default_value_t = 2000)]
    latency_ms: u64,
    /// Time from submit to status report, milliseconds (simulated time).
    #[arg(long, default_value_t = 5000)]
    status_report_ms: u64,
    /// Simulated time runs this many times faster than real time.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// TOML file with `[[phones]]` scripts and an optional `default_script`.
    #[arg(long)]
    phones: Option<PathBuf>,
    /// Shortest reply delay of the default script, seconds.
    #[arg(long, default_value_t = 10.0)]
    reply_min_secs: f64,
    /// Longest reply delay of the default script, seconds.
    #[arg(long, default_value_t = 60.0)]
    reply_max_secs: f64,
    /// Probability of `+CMS ERROR` on a submit.
    #[arg(long, default_value_t = 0.0)]
    cms_error_rate: f64,
    /// The injected `+CMS ERROR` code.
    #[arg(long, default_value_t = 42)]
    cms_error_code: u16,
    /// Probability that a command is never answered.
    #[arg(long, default_value_t = 0.0)]
    silence_rate: f64,
    /// Probability of garbage bytes before a response.
    #[arg(long, default_value_t = 0.0)]
    garbage_rate: f64,
    /// Extra milliseconds per SMS part (a slow modem).
    #[arg(long, default_value_t = 0)]
    slow_ms: u64,
    /// Also take voice calls, with an audio port pty per modem (`modem0-audio`).
    #[arg(long)]
    voice: bool,
    /// How the modems announce calls and keys: quectel, simcom or generic.
    #[arg(long, default_value = "quectel")]
    family: Family,
    /// The handsets report no keys (a satellite phone): calls count as reached only.
    #[arg(long)]
    no_dtmf_reports: bool,
    /// Ringing time before the default callee answers, seconds.
    #[arg(long, default_value_t = 5.0)]
    answer_after_secs: f64,
    /// Seconds after answering that the default callee presses 1 (never when absent).
    #[arg(long)]
    press_after_secs: Option<f64>,
}

/// The `--phones` file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct PhonesFile {
    /// Scripts by number.
    #[serde(default)]
    phones: Vec<PhoneScript>,
    /// What everyone else does.
    default_script: Option<ReplyBehaviour>,
    /// Call scripts by number (`kind = "answer" | "press" | "hang_up" | "never" | "busy"`).
    #[serde(default)]
    calls: Vec<CallScript>,
    /// What everyone else does when called.
    default_call: Option<CallBehaviour>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.kind {
        Kind::Gsm(args) => gsm(args).await,
        Kind::Beidou(args) => beidou::beidou(args).await,
        Kind::Mesh(args) => mesh(args).await,
        Kind::Sbd(args) => sbd::sbd(args).await,
        Kind::Speaker(args) => speaker::speaker(args).await,
        Kind::Sip(args) => sip::sip(args).await,
        Kind::App(args) => app::app(args).await,
    }
}

async fn gsm(args: GsmArgs) -> anyhow::Result<()> {
    let file = match &args.phones {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<PhonesFile>(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => PhonesFile::default(),
    };
    let cfg = SimConfig {
        per_message_latency_ms: args.latency_ms,
        status_report_delay_ms: args.status_report_ms,
        phones: file.phones,
        default_script: file.default_script.unwrap_or(ReplyBehaviour::Reply {
            min_secs: args.reply_min_secs,
            max_secs: args.reply_max_secs,
        }),
        faults: Faults {
            cms_error_rate: args.cms_error_rate,
            cms_error_code: args.cms_error_code,
            silence_rate: args.silence_rate,
            garbage_rate: args.garbage_rate,
            slow_ms_per_message: args.slow_ms,
            ..Faults::default()
        },
        calls: file.calls,
        default_call: file.default_call.unwrap_or(match args.press_after_secs {
            Some(press_after_secs) => CallBehaviour::Press {
                answer_after_secs: args.answer_after_secs,
                digit: '1',
                press_after_secs,
            },
            None => CallBehaviour::Answer {
                answer_after_secs: args.answer_after_secs,
            },
        }),
        family: args.family,
        dtmf_reports: !args.no_dtmf_reports,
        ..SimConfig::default()
    };
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let cancel = CancellationToken::new();
    let mut handles = Vec::new();
    for i in 0..args.count {
        let link = args.dir.join(format!("modem{i}"));
        let seed = args.seed.wrapping_add(u64::from(i));
        let handle = if args.voice {
            let audio = args.dir.join(format!("modem{i}-audio"));
            spawn_voice_sim(
                link.clone(),
                audio,
                cfg.clone(),
                seed,
                args.speed,
                cancel.clone(),
            )
        } else {
            spawn_sim(link.clone(), cfg.clone(), seed, args.speed, cancel.clone())
        }
        .with_context(|| format!("starting simulator {i}"))?;
        let target = std::fs::read_link(&link).unwrap_or_default();
        println!("modem{i} {} -> {}", link.display(), target.display());
        if let Some(audio) = &handle.audio_path {
            let target = std::fs::read_link(audio).unwrap_or_default();
            println!("modem{i} audio {} -> {}", audio.display(), target.display());
        }
        handles.push(handle);
    }
    let mut reported = vec![0usize; handles.len()];
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                r.context("waiting for Ctrl-C")?;
                break;
            }
            _ = tick.tick() => {
                for (i, h) in handles.iter().enumerate() {
                    let calls = h.calls.lock().map(|c| c.clone()).unwrap_or_default();
                    for c in calls.iter().skip(reported[i]) {
                        println!(
                            "modem{i} call {} answered {} keys {:?} heard {:.1} s rms {:.0} underruns {} ended: {}",
                            c.number,
                            c.answered_at.is_some(),
                            c.digits,
                            c.audio.secs(),
                            c.audio.rms,
                            c.audio.underruns,
                            c.ended_by
                        );
                    }
                    reported[i] = calls.len();
                }
            }
        }
    }
    cancel.cancel();
    for h in &handles {
        let _ = std::fs::remove_file(&h.path);
        if let Some(a) = &h.audio_path {
            let _ = std::fs::remove_file(a);
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
struct MeshArgs {
    /// Serve the radio's client API on 127.0.0.1:PORT (4403 is the radio's own) instead of
    /// a pseudo-terminal.
    #[arg(long)]
    tcp_port: Option<u16>,
    /// The stable symlink to the radio's pseudo-terminal.
    #[arg(long, default_value = "/tmp/tocsin-sim/mesh0")]
    link: PathBuf,
    /// How many generated nodes (`!0a000001`, ...), 1 to 3 hops away, when no --nodes file.
    #[arg(long, default_value_t = 5)]
    count: u32,
    /// TOML file with `[[nodes]]` scripts (num, long_name, hops, loss, behaviour, ...).
    #[arg(long)]
    nodes: Option<PathBuf>,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated time runs this many times faster than real time.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Time on air per packet, milliseconds.
    #[arg(long, default_value_t = 2000)]
    airtime_ms: u64,
    /// Travel time per hop, milliseconds.
    #[arg(long, default_value_t = 2500)]
    hop_latency_ms: u64,
    /// Loss probability per hop of the generated nodes.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Shortest reply delay of the generated nodes' people, seconds.
    #[arg(long, default_value_t = 10.0)]
    reply_min_secs: f64,
    /// Longest reply delay, seconds.
    #[arg(long, default_value_t = 60.0)]
    reply_max_secs: f64,
    /// Nodes report their position this often, seconds.
    #[arg(long)]
    position_interval_secs: Option<u64>,
    /// Texts from nodes arrive PKI-encrypted.
    #[arg(long)]
    pki: bool,
    /// Print firmware log lines between frames.
    #[arg(long)]
    log_lines: bool,
}

/// The `--nodes` file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct NodesFile {
    /// The mesh's nodes.
    #[serde(default)]
    nodes: Vec<tocsin_meshtastic::sim::NodeScript>,
}

async fn mesh(args: MeshArgs) -> anyhow::Result<()> {
    use tocsin_meshtastic::sim::{Faults, NodeScript, ReplyBehaviour, SimConfig};
    let nodes = match &args.nodes {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<NodesFile>(&text)
                .with_context(|| format!("in {}", path.display()))?
                .nodes
        }
        None => (0..args.count)
            .map(|i| NodeScript {
                hops: 1 + i % 3,
                loss: args.loss,
                ..NodeScript::new(
                    0x0a00_0001 + i,
                    &format!("村长{}", i + 1),
                    ReplyBehaviour::Reply {
                        min_secs: args.reply_min_secs,
                        max_secs: args.reply_max_secs,
                    },
                )
            })
            .collect(),
    };
    let cfg = SimConfig {
        airtime_ms: args.airtime_ms,
        hop_latency_ms: args.hop_latency_ms,
        nodes,
        position_interval_secs: args.position_interval_secs,
        pki: args.pki,
        faults: Faults {
            log_lines: args.log_lines,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let cancel = CancellationToken::new();
    let handle = match args.tcp_port {
        Some(port) => tocsin_meshtastic::runner::spawn_tcp_sim(
            port,
            cfg.clone(),
            args.seed,
            args.speed,
            cancel.clone(),
        )
        .context("starting the TCP simulator")?,
        None => {
            if let Some(dir) = args.link.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            tocsin_meshtastic::runner::spawn_pty_sim(
                args.link.clone(),
                cfg.clone(),
                args.seed,
                args.speed,
                cancel.clone(),
            )
            .context("starting the pty simulator")?
        }
    };
    println!(
        "mesh radio {} at {}",
        tocsin_meshtastic::mesh::node_id(cfg.my_node_num),
        handle.address()
    );
    for n in &cfg.nodes {
        println!(
            "  node {} {} ({} hops)",
            tocsin_meshtastic::mesh::node_id(n.num),
            n.long_name,
            n.hops
        );
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    cancel.cancel();
    if args.tcp_port.is_none() {
        let _ = std::fs::remove_file(&args.link);
    }
    Ok(())
}
