//! `tocsin-bench sms`: how close the real SMS driver gets to the modem's own limit.
//!
//! The real driver task (`tocsin_at_modem::io::spawn_modem`, tokio-serial on a real
//! file descriptor) talks to the real GSM simulator on a pseudo-terminal
//! (`tocsin_at_modem::pty::spawn_sim`, real time, speed 1.0). The simulated network takes
//! a fixed time to accept each part (`+CMGS: <mr>`); that latency alone sets a floor on how
//! long a message takes, so one modem can send at most `1 / latency` messages a second and
//! a pool of N modems `N / latency`. The benchmark feeds `DriverCommand::Send` straight to
//! the drivers (no router, no store), counts `Sent` events after a warm-up, and reports the
//! rate and its fraction of that ceiling. With 0 ms latency the ceiling is undefined and
//! only the absolute rate is reported: it measures the driver and the pty, nothing else.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tocsin_at_modem::config::ModemConfig;
use tocsin_at_modem::io::spawn_modem;
use tocsin_at_modem::pty::spawn_sim;
use tocsin_at_modem::sim::{ReplyBehaviour, SimConfig};
use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, DriverHandle, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId, PhoneNumber};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Options of the SMS throughput benchmark.
#[derive(Debug, clap::Args)]
pub struct SmsArgs {
    /// Simulated network latency per message, in ms (one case per value; 0 = no latency).
    #[arg(long, value_delimiter = ',', default_value = "50,0")]
    pub latency_ms: Vec<u64>,
    /// Modem pool sizes (one case per value).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub modems: Vec<usize>,
    /// Measured seconds per run, after the warm-up.
    #[arg(long, default_value_t = 8.0)]
    pub seconds: f64,
    /// `Sent` events per modem ignored at the start of each run (driver init, first
    /// round trips).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Runs per case; figures are medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Most messages per run and modem (a bound in case the rate is higher than expected).
    #[arg(long, default_value_t = 20_000)]
    pub max_messages: usize,
}

/// The outcome of one run.
#[derive(Clone, Copy, Debug)]
struct RunResult {
    /// Messages per second over the measured window.
    rate: f64,
    /// `Sent` events in the measured window.
    sent: usize,
    /// `Failed` events over the whole run.
    failed: usize,
}

/// How many sends one modem may have waiting in its driver: enough that the driver never
/// idles for lack of work, far below its queue limit.
const WINDOW: usize = 64;
/// Longest wait for a modem to come up, or for one event.
const PATIENCE: Duration = Duration::from_secs(20);
/// One SMS part in UCS2 (Chinese), the shape of a short red warning.
const TEXT: &str = "【红色预警】王家沟村山洪，立即转移。回复 1 K7XT 确认";

/// Runs every case and prints the figures.
pub fn run(args: &SmsArgs) -> Result<()> {
    if args.runs == 0 || args.modems.contains(&0) || args.seconds <= 0.0 {
        bail!("--runs, --modems and --seconds must be positive");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    for &latency in &args.latency_ms {
        for &modems in &args.modems {
            let mut results = Vec::new();
            for run in 0..args.runs {
                let r = runtime
                    .block_on(one_run(args, latency, modems, run))
                    .with_context(|| format!("latency {latency} ms, {modems} modem(s)"))?;
                results.push(r);
            }
            print_case(latency, modems, &results);
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(0.0),
        _ => {
            (v.get(n / 2 - 1).copied().unwrap_or(0.0) + v.get(n / 2).copied().unwrap_or(0.0)) / 2.0
        }
    }
}

fn print_case(latency: u64, modems: usize, results: &[RunResult]) {
    let prefix = format!("sms.latency{latency}ms.modems{modems}");
    let rate = median(results.iter().map(|r| r.rate).collect());
    let sent = median(results.iter().map(|r| r.sent as f64).collect());
    let failed: usize = results.iter().map(|r| r.failed).sum();
    println!("{prefix}.rate {rate:.1} sms/s");
    if latency > 0 {
        let floor = floor_rate(latency, modems);
        println!("{prefix}.floor {floor:.1} sms/s");
        println!("{prefix}.of_floor {:.1} %", 100.0 * rate / floor);
    }
    println!("{prefix}.measured {sent:.0} count");
    println!("{prefix}.failed {failed} count");
}

/// The most messages per second the latency alone allows: one per latency per modem.
fn floor_rate(latency_ms: u64, modems: usize) -> f64 {
    if latency_ms == 0 {
        return f64::INFINITY;
    }
    modems as f64 * 1000.0 / latency_ms as f64
}

#[allow(clippy::unwrap_used, reason = "a fixed, valid number")]
fn destination(i: usize) -> Address {
    let n = format!("+86139{:08}", i % 100_000_000);
    Address::Phone(
        PhoneNumber::parse(&n, "86")
            .unwrap_or_else(|_| PhoneNumber::parse("+8613900000000", "86").unwrap()),
    )
}

/// Wall-clock time is what a benchmark measures.
#[allow(
    clippy::disallowed_methods,
    reason = "a benchmark binary reads the wall clock"
)]
fn now() -> Instant {
    Instant::now()
}

async fn one_run(args: &SmsArgs, latency: u64, modems: usize, run: usize) -> Result<RunResult> {
    let dir = scratch_dir(&format!("sms-{latency}-{modems}-{run}"))?;
    let cancel = CancellationToken::new();
    let result = drive(args, latency, modems, &dir, &cancel).await;
    cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A fresh folder under the system temp dir for this process.
pub fn scratch_dir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tocsin-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

async fn drive(
    args: &SmsArgs,
    latency: u64,
    modems: usize,
    dir: &std::path::Path,
    cancel: &CancellationToken,
) -> Result<RunResult> {
    let (ev_tx, mut events) = mpsc::channel::<DeviceEvent>(tocsin_channel::EVENT_QUEUE);
    let mut drivers: Vec<DriverHandle> = Vec::new();
    let mut sims = Vec::new();
    for m in 0..modems {
        let link = dir.join(format!("modem{m}"));
        let sim_cfg = SimConfig {
            per_message_latency_ms: latency,
            status_report_delay_ms: 1_000,
            default_script: ReplyBehaviour::Never,
            ..SimConfig::default()
        };
        // The simulator runs as long as its handle (its command sender) lives.
        sims.push(
            spawn_sim(
                link.clone(),
                sim_cfg,
                m as u64 + 1,
                1.0,
                cancel.child_token(),
            )
            .context("starting a GSM simulator on a pty")?,
        );
        let path = link.to_str().context("temp path is not UTF-8")?;
        drivers.push(spawn_modem(
            DeviceId(format!("modem{m}")),
            ModemConfig::new(path),
            ev_tx.clone(),
            cancel.child_token(),
        ));
    }
    drop(ev_tx);

    // Every modem initialised and registered before the clock starts.
    let mut up = vec![false; modems];
    while up.iter().any(|u| !u) {
        let ev = tokio::time::timeout(PATIENCE, events.recv())
            .await
            .context("a modem did not come up")?
            .context("drivers stopped")?;
        if std::env::var_os("TOCSIN_BENCH_DEBUG").is_some() {
            eprintln!("{ev:?}");
        }
        if let DriverEvent::Health(h) = &ev.event
            && h.up
            && h.registered
            && let Some(slot) = modem_index(&ev.device).and_then(|i| up.get_mut(i))
        {
            *slot = true;
        }
    }

    let per_modem_cap = args.max_messages;
    let mut submitted = vec![0usize; modems];
    let mut done = vec![0usize; modems];
    let mut next_attempt = 0u64;
    let mut failed = 0usize;
    // Times of Sent events after each modem's warm-up.
    let mut sent_after_warmup: Vec<Instant> = Vec::new();
    let mut sent_per_modem = vec![0usize; modems];
    let mut window_end: Option<Instant> = None;
    let measure = Duration::from_secs_f64(args.seconds);
    loop {
        // Keep every driver's queue topped up to WINDOW.
        for (m, d) in drivers.iter().enumerate() {
            while submitted[m] - done[m] < WINDOW && submitted[m] < per_modem_cap {
                let cmd = DriverCommand::Send(Outbound {
                    attempt: AttemptId(next_attempt),
                    to: destination(next_attempt as usize),
                    text: TEXT.to_owned(),
                    want_report: true,
                });
                next_attempt += 1;
                d.commands.send(cmd).await.context("driver stopped")?;
                submitted[m] += 1;
            }
        }
        if done.iter().all(|&d| d >= per_modem_cap) {
            break;
        }
        let ev = tokio::time::timeout(PATIENCE, events.recv())
            .await
            .context("no event from the drivers")?
            .context("drivers stopped")?;
        let Some(m) = modem_index(&ev.device) else {
            continue;
        };
        match ev.event {
            DriverEvent::Sent { .. } => {
                let at = now();
                done[m] += 1;
                sent_per_modem[m] += 1;
                if sent_per_modem.iter().all(|&s| s >= args.warmup) {
                    sent_after_warmup.push(at);
                    if window_end.is_none() {
                        window_end = Some(at + measure);
                    }
                }
                if window_end.is_some_and(|end| at >= end) {
                    break;
                }
            }
            DriverEvent::Failed { .. } => {
                done[m] += 1;
                failed += 1;
            }
            _ => {}
        }
    }
    let (Some(first), Some(last)) = (sent_after_warmup.first(), sent_after_warmup.last()) else {
        bail!("no message was sent after the warm-up");
    };
    drop(sims);
    let span = last.duration_since(*first).as_secs_f64();
    let measured = sent_after_warmup.len().saturating_sub(1);
    let rate = if span > 0.0 {
        measured as f64 / span
    } else {
        0.0
    };
    Ok(RunResult {
        rate,
        sent: measured,
        failed,
    })
}

fn modem_index(device: &DeviceId) -> Option<usize> {
    device.0.strip_prefix("modem")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_is_one_message_per_latency_per_modem() {
        assert_eq!(floor_rate(50, 1), 20.0);
        assert_eq!(floor_rate(50, 4), 80.0);
        assert!(floor_rate(0, 4).is_infinite());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn destinations_are_valid_and_distinct() {
        assert_ne!(destination(1), destination(2));
        assert_eq!(destination(7).to_string(), "+8613900000007");
    }

    #[test]
    fn modem_names_map_to_indexes() {
        assert_eq!(modem_index(&DeviceId("modem3".into())), Some(3));
        assert_eq!(modem_index(&DeviceId("other".into())), None);
    }
}
