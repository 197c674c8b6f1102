//! `tocsin-sim app`: a simulated app backend on 127.0.0.1. It takes a `type = "webhook"`
//! device's signed pushes on `POST /push`, and everyone it is pushed to answers with the
//! code from the text after `--reply-after-ms` (by signed callback, token callback or
//! ack link, `--via`), except subscribers listed with `--ignore`. Faults: `--fail-first`,
//! `--error-rate` (503s), `--slow-ms`, `--bad-signature-rate` (callbacks the gateway must
//! refuse). Point the device's `url` at the printed address and give both the same key.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tocsin_webhook::backend::spawn_backend;
use tocsin_webhook::sign::Secret;
use tocsin_webhook::sim::{Behaviour, Faults, Report, SimConfig, Via};
use tokio_util::sync::CancellationToken;

/// Options of `tocsin-sim app`.
#[derive(clap::Args, Debug)]
pub struct AppArgs {
    /// Where the backend listens; pushes go to `http://<bind>/push`.
    #[arg(long, default_value = "127.0.0.1:9000")]
    bind: SocketAddr,
    /// The HMAC key shared with the gateway's webhook device (at least 16 bytes).
    #[arg(long, default_value = "tocsin-demo-app-key-0000")]
    secret: String,
    /// Time from a push to the person's answer, milliseconds; 0 answers nothing.
    #[arg(long, default_value_t = 5000)]
    reply_after_ms: u64,
    /// How people answer: callback (signed, with the code), token, or link (tap and confirm).
    #[arg(long, default_value = "callback", value_parser = parse_via)]
    via: Via,
    /// Subscribers who read and never answer.
    #[arg(long)]
    ignore: Vec<String>,
    /// Answer the first N pushes 503.
    #[arg(long, default_value_t = 0)]
    fail_first: u32,
    /// Probability of answering a push 503.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Answer every push this late, milliseconds.
    #[arg(long, default_value_t = 0)]
    slow_ms: u64,
    /// Probability of signing a callback with the wrong key.
    #[arg(long, default_value_t = 0.0)]
    bad_signature_rate: f64,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_via(s: &str) -> Result<Via, String> {
    match s {
        "callback" => Ok(Via::Callback),
        "token" => Ok(Via::Token),
        "link" => Ok(Via::Link),
        other => Err(format!("{other:?} is not callback, token or link")),
    }
}

/// Runs the backend until Ctrl-C, printing one line per push and per answer.
pub async fn app(args: AppArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.secret.len() >= 16,
        "--secret must be at least 16 bytes"
    );
    let mut cfg = SimConfig::new(Secret::new(args.secret.clone().into_bytes()));
    cfg.default = if args.reply_after_ms == 0 {
        Behaviour::Ignore
    } else {
        Behaviour::Reply {
            after_ms: args.reply_after_ms,
            text: None,
            via: args.via,
        }
    };
    for sub in args.ignore {
        cfg.people.insert(sub, Behaviour::Ignore);
    }
    cfg.faults = Faults {
        fail_first: args.fail_first,
        error_rate: args.error_rate,
        slow: (args.slow_ms > 0).then(|| Duration::from_millis(args.slow_ms)),
        bad_signature_rate: args.bad_signature_rate,
    };
    cfg.seed = args.seed;
    let cancel = CancellationToken::new();
    let mut backend = spawn_backend(args.bind, cfg, cancel.clone())
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    println!("app backend: push url {}", backend.url);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            r = backend.reports.recv() => match r {
                Some(Report::Pushed { subscriber, text, status, note }) => println!(
                    "push to {} -> {status}{}: {}",
                    subscriber.as_deref().unwrap_or("?"),
                    note.map(|n| format!(" ({n})")).unwrap_or_default(),
                    text.as_deref().unwrap_or("")
                ),
                Some(Report::Answered { subscriber, text, status, forged }) => println!(
                    "answer from {subscriber} {text:?}{} -> gateway {status}",
                    if forged { " (forged signature)" } else { "" }
                ),
                None => break,
            },
        }
    }
    cancel.cancel();
    Ok(())
}
