//! `tocsin-sim sip`: a simulated SIP trunk far end on UDP. Every number it is called on
//! rings, answers after `--answer-ms` and presses `--key` `--press-ms` later; numbers
//! listed with `--busy` answer 486. Point a `type = "sip"` device's `trunk` at the
//! printed address.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tocsin_sip::sim::{Behaviour, SimConfig};
use tocsin_sip::udp::spawn_far_end;
use tokio_util::sync::CancellationToken;

/// Options of `tocsin-sim sip`.
#[derive(clap::Args, Debug)]
pub struct SipArgs {
    /// Where the far end's SIP socket listens.
    #[arg(long, default_value = "127.0.0.1:5070")]
    bind: SocketAddr,
    /// Time from INVITE to answer, milliseconds; 0 never answers.
    #[arg(long, default_value_t = 2000)]
    answer_ms: u64,
    /// Key pressed after answering (`1` acks); `none` presses nothing.
    #[arg(long, default_value = "1")]
    key: String,
    /// Time from answer to the key press, milliseconds.
    #[arg(long, default_value_t = 5000)]
    press_ms: u64,
    /// Hang up this long after answering, milliseconds (0: wait for the gateway's BYE).
    #[arg(long, default_value_t = 0)]
    hangup_ms: u64,
    /// Numbers (as dialled, e.g. 13800138000) that are busy.
    #[arg(long)]
    busy: Vec<String>,
    /// Demand Digest authentication with `user:password`.
    #[arg(long)]
    auth: Option<String>,
    /// Probability of dropping a SIP datagram from the gateway.
    #[arg(long, default_value_t = 0.0)]
    drop_sip: f64,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs the far end until Ctrl-C, printing one line per finished call.
pub async fn sip(args: SipArgs) -> anyhow::Result<()> {
    let press = match args.key.as_str() {
        "none" => None,
        k => Some((
            k.chars().next().context("--key is empty")?,
            Duration::from_millis(args.press_ms),
        )),
    };
    let default = Behaviour {
        reject: None,
        answer_after: (args.answer_ms > 0).then(|| Duration::from_millis(args.answer_ms)),
        press,
        hangup_after: (args.hangup_ms > 0).then(|| Duration::from_millis(args.hangup_ms)),
    };
    let busy = Behaviour {
        reject: Some(486),
        ..default.clone()
    };
    let auth = match args.auth {
        Some(a) => {
            let (u, p) = a.split_once(':').context("--auth takes user:password")?;
            Some((u.to_owned(), p.to_owned()))
        }
        None => None,
    };
    let cfg = SimConfig {
        phones: args.busy.into_iter().map(|n| (n, busy.clone())).collect(),
        default,
        auth,
        drop_sip: args.drop_sip,
        seed: args.seed,
        ..SimConfig::default()
    };
    let cancel = CancellationToken::new();
    let mut far = spawn_far_end(args.bind, cfg, cancel.clone())
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    println!("sip far end: SIP {} RTP {}", far.sip, far.rtp);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            r = far.reports.recv() => match r {
                Some(r) => println!(
                    "call {} to {}: answered={} frames={} underruns={} tone_frames={} keys={:?} ended_by={}",
                    r.call_id, r.user, r.answered, r.frames, r.underruns, r.loud_frames, r.pressed, r.ended_by
                ),
                None => break,
            },
        }
    }
    cancel.cancel();
    Ok(())
}
