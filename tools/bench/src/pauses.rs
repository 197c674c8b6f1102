//! A probe for pauses of the machine itself, run beside a pacing benchmark.
//!
//! On a virtual machine the hypervisor can stop a virtual core for several milliseconds;
//! nothing running on it, at any priority, makes progress. A pacing figure measured there
//! mixes the driver's own lateness with those pauses. The probe tells them apart the way
//! `cyclictest` does: one thread per core, pinned to it, at a real-time priority above
//! every thread of the benchmark, sleeps to an absolute deadline every millisecond and
//! records each wake-up later than a threshold as a pause `[deadline, woke]`. Nothing in
//! the benchmark can delay that thread, so its lateness is the machine's.
//!
//! A late packet is then charged to the driver only for the part of its lateness that no
//! pause of the driver's core covers (see [`Pauses::unexplained_us`]).

use anyhow::{Context, Result};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, ClockNanosleepFlags, clock_gettime, clock_nanosleep};
use nix::unistd::Pid;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Real-time priority of the probe threads: above the `chrt -f 10` the benchmarks are
/// documented to run under, below the kernel's own threads at 50 and up.
pub(crate) const PROBE_PRIORITY: u32 = 20;

/// The probe's period, µs (cyclictest's usual 1 ms interval).
const PERIOD_US: i64 = 1_000;

/// A wake-up later than this is recorded as a pause, µs.
const THRESHOLD_US: i64 = 200;

/// One stretch when a core's probe could not run: CLOCK_REALTIME µs (the clock of the
/// kernel's `SO_TIMESTAMPNS` receive times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pause {
    pub from_us: i64,
    pub to_us: i64,
}

/// What one core's probe saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct CoreProbe {
    pub core: usize,
    /// Wake-ups in all.
    pub wakes: u64,
    /// Wake-ups later than the threshold, in time order.
    pub pauses: Vec<Pause>,
    /// The latest wake-up, µs.
    pub max_us: i64,
}

impl CoreProbe {
    /// Pauses longer than `limit_us`.
    pub(crate) fn over(&self, limit_us: i64) -> usize {
        self.pauses
            .iter()
            .filter(|p| p.to_us - p.from_us > limit_us)
            .count()
    }
}

/// A running probe; [`Probe::stop`] ends it.
pub(crate) struct Probe {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Result<CoreProbe>>>,
}

/// The pauses the probe found, per core.
#[derive(Debug, Default, Clone)]
pub(crate) struct Pauses {
    pub cores: Vec<CoreProbe>,
}

fn us(t: TimeSpec) -> i64 {
    t.tv_sec() * 1_000_000 + t.tv_nsec() / 1_000
}

/// Gives the calling thread real-time priority `prio` (SCHED_FIFO), through `chrt`
/// (util-linux) so that the workspace stays free of `unsafe`.
fn make_realtime(prio: u32) -> Result<()> {
    let tid = nix::unistd::gettid();
    let out = std::process::Command::new("chrt")
        .args(["-f", "-p", &prio.to_string(), &tid.to_string()])
        .output()
        .context("running chrt")?;
    if !out.status.success() {
        anyhow::bail!(
            "chrt could not raise the probe to SCHED_FIFO {prio}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Pins the calling thread to `core`.
pub(crate) fn pin_to(core: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(core)?;
    sched_setaffinity(Pid::from_raw(0), &set)
        .with_context(|| format!("pinning a thread to core {core}"))
}

/// The cores this process may run on, as first asked (before any thread was pinned:
/// afterwards the pinned thread's own affinity would answer one).
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

impl Probe {
    /// Starts one probe thread on each of `cores`. Fails when a thread cannot be pinned or
    /// given real-time priority (without it the probe would measure the benchmark, not
    /// the machine).
    pub(crate) fn start(cores: &[usize]) -> Result<Probe> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut ready = Vec::new();
        for &core in cores {
            let stop = stop.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            ready.push(rx);
            threads.push(std::thread::spawn(move || {
                let setup = pin_to(core).and_then(|()| make_realtime(PROBE_PRIORITY));
                let failed = setup.as_ref().err().map(|e| format!("{e:#}"));
                let _ = tx.send(failed.clone());
                if let Some(e) = failed {
                    anyhow::bail!(e);
                }
                probe_loop(core, &stop)
            }));
        }
        let probe = Probe { stop, threads };
        for rx in ready {
            if let Some(e) = rx.recv().ok().flatten() {
                let _ = probe.stop();
                anyhow::bail!(e);
            }
        }
        Ok(probe)
    }

    /// Ends the probe and returns what it saw.
    pub(crate) fn stop(self) -> Result<Pauses> {
        self.stop.store(true, Ordering::Relaxed);
        let mut cores = Vec::new();
        for t in self.threads {
            let c = t
                .join()
                .map_err(|_| anyhow::anyhow!("a probe thread panicked"))??;
            cores.push(c);
        }
        Ok(Pauses { cores })
    }
}

fn probe_loop(core: usize, stop: &AtomicBool) -> Result<CoreProbe> {
    let mut seen = CoreProbe {
        core,
        ..CoreProbe::default()
    };
    let mut next = us(clock_gettime(ClockId::CLOCK_MONOTONIC)?) + PERIOD_US;
    while !stop.load(Ordering::Relaxed) {
        let deadline = TimeSpec::new(next / 1_000_000, (next % 1_000_000) * 1_000);
        // EINTR ends the sleep early; the lateness below is then negative and ignored.
        let _ = clock_nanosleep(
            ClockId::CLOCK_MONOTONIC,
            ClockNanosleepFlags::TIMER_ABSTIME,
            &deadline,
        );
        let mono = us(clock_gettime(ClockId::CLOCK_MONOTONIC)?);
        let real = us(clock_gettime(ClockId::CLOCK_REALTIME)?);
        let late = mono - next;
        seen.wakes += 1;
        seen.max_us = seen.max_us.max(late);
        if late > THRESHOLD_US {
            seen.pauses.push(Pause {
                from_us: real - late,
                to_us: real,
            });
        }
        // The next deadline on the grid; deadlines a pause swallowed are skipped (each
        // would only repeat the same pause).
        next += PERIOD_US;
        if next <= mono {
            next = mono - (mono - next) % PERIOD_US + PERIOD_US;
        }
    }
    Ok(seen)
}

impl Pauses {
    /// The probe of `core`, if there was one.
    pub(crate) fn core(&self, core: usize) -> Option<&CoreProbe> {
        self.cores.iter().find(|c| c.core == core)
    }

    /// Of a packet sent at `sent_us` that was due at `sent_us - late_us`, the lateness no
    /// pause of `core` covers, µs: `late_us` minus its overlap with the pauses.
    pub(crate) fn unexplained_us(&self, core: usize, sent_us: i64, late_us: i64) -> i64 {
        let due = sent_us - late_us;
        let covered: i64 = self
            .core(core)
            .map(|c| {
                c.pauses
                    .iter()
                    .map(|p| (p.to_us.min(sent_us) - p.from_us.max(due)).max(0))
                    .sum()
            })
            .unwrap_or(0);
        late_us - covered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pauses(list: &[(i64, i64)]) -> Pauses {
        Pauses {
            cores: vec![CoreProbe {
                core: 0,
                wakes: 100,
                pauses: list
                    .iter()
                    .map(|&(from_us, to_us)| Pause { from_us, to_us })
                    .collect(),
                max_us: 0,
            }],
        }
    }

    #[test]
    fn only_the_lateness_a_pause_covers_is_excused() {
        // The core stopped from 10 ms to 20 ms.
        let p = pauses(&[(10_000, 20_000)]);
        // Due at 12 ms, sent at 21 ms: 8 of its 9 ms are the pause.
        assert_eq!(p.unexplained_us(0, 21_000, 9_000), 1_000);
        // Due at 5 ms, sent at 21 ms: the 5 ms before the pause are the driver's.
        assert_eq!(p.unexplained_us(0, 21_000, 16_000), 6_000);
        // Nothing paused around this one.
        assert_eq!(p.unexplained_us(0, 40_000, 3_000), 3_000);
        // Another core's pauses excuse nothing.
        assert_eq!(p.unexplained_us(1, 21_000, 9_000), 9_000);
        // Two pauses inside one lateness both count.
        let two = pauses(&[(100, 600), (1_000, 2_500)]);
        assert_eq!(two.unexplained_us(0, 3_000, 3_000), 1_000);
    }

    #[test]
    fn pauses_over_a_limit_are_counted() {
        let p = pauses(&[(0, 300), (1_000, 3_500), (9_000, 11_001)]);
        let c = p.core(0).unwrap();
        assert_eq!(c.over(2_000), 2);
        assert_eq!(c.over(5_000), 0);
    }
}
