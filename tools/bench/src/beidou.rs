//! `tocsin-bench beidou`: a red alert to people who carry BeiDou cards, through the REAL
//! router, the REAL BeiDou driver state machine (`tocsin_beidou::proto::Terminal`, one per
//! card at the gateway) and the REAL simulated terminals and satellite network
//! (`tocsin_beidou::sim::SimNetwork`), all stepped together on a virtual clock. The
//! router's commands go to the terminals, the terminals' bytes to the simulator (after a
//! serial-line delay) and back, and the drivers' events to the router; the people at the
//! other end answer `1 <code>` as the simulator's default script does.
//!
//! The figure is the time until every first attempt has been transmitted (the terminal's
//! feedback said so) against the bound the pool allows: each card sends its first at 0
//! and one per service interval after that. Beside it, an Iridium SBD figure: sessions per
//! hour that one 9603 gets through with the real `tocsin_iridium_sbd` driver against its
//! simulator (5–20 s sessions), against the bound the session times allow.

use anyhow::{Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tocsin_beidou::config::BeidouConfig;
use tocsin_beidou::proto::Terminal;
use tocsin_beidou::sim::{SimConfig, SimNetwork, TerminalConfig};
use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{
    AckKey, Address, Alert, AlertId, AreaId, AttemptId, DeviceId, Grade, PersonId, Role, Timestamp,
};
use tocsin_iridium_sbd::config::SbdConfig;
use tocsin_iridium_sbd::proto::Sbd;
use tocsin_iridium_sbd::sim::{SimConfig as SbdSimConfig, SimSbd};
use tocsin_router::{
    AlertPlan, Contact, DeviceInfo, Output, Policies, Purpose, Record, Router, RouterConfig,
    Target, TargetReason, Verdict,
};

/// Options of the BeiDou benchmark.
#[derive(Debug, clap::Args)]
pub struct BeidouArgs {
    /// BeiDou cards (terminals) at the gateway.
    #[arg(long, default_value_t = 2)]
    pub cards: u32,
    /// Service interval of every card, seconds between transmissions.
    #[arg(long, default_value_t = 60)]
    pub interval_secs: u32,
    /// People with a BeiDou card targeted by the red alert.
    #[arg(long, default_value_t = 100)]
    pub recipients: u32,
    /// One-way delay of the serial line between a driver and its terminal, ms.
    #[arg(long, default_value_t = 50)]
    pub link_ms: u64,
    /// Virtual time the SBD modem is run for, seconds.
    #[arg(long, default_value_t = 3600)]
    pub sbd_secs: u64,
    /// Seed of the simulators.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// When the virtual clock starts (the alert is accepted then).
pub(crate) const T0: Timestamp = Timestamp(1_750_000_000_000);

/// Bytes on their way over a serial line.
pub(crate) struct Wire<K> {
    /// (arrival, seq) → (which end receives, bytes).
    chunks: BTreeMap<(Timestamp, u64), (K, Vec<u8>)>,
    seq: u64,
    delay: Duration,
}

impl<K> Wire<K> {
    pub(crate) fn new(delay: Duration) -> Self {
        Wire {
            chunks: BTreeMap::new(),
            seq: 0,
            delay,
        }
    }

    /// `bytes` written now arrive at `to` after the line's delay.
    pub(crate) fn put(&mut self, now: Timestamp, to: K, bytes: Vec<u8>) {
        self.seq += 1;
        self.chunks
            .insert((now + self.delay, self.seq), (to, bytes));
    }

    /// When the next chunk arrives.
    pub(crate) fn next(&self) -> Option<Timestamp> {
        self.chunks.keys().next().map(|k| k.0)
    }

    /// The next chunk that has arrived by `now`.
    pub(crate) fn take_due(&mut self, now: Timestamp) -> Option<(K, Vec<u8>)> {
        let k = *self.chunks.keys().next()?;
        if k.0 > now {
            return None;
        }
        self.chunks.remove(&k)
    }
}

/// Which end of a BeiDou serial line receives a chunk.
#[derive(Clone, Copy, Debug)]
enum End {
    /// The driver of terminal `i`.
    Driver(usize),
    /// Simulated terminal `i`.
    Terminal(usize),
}

/// What the run observed.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// First warning attempt of each person.
    pub first: HashMap<PersonId, AttemptId>,
    /// Those attempts: when the router handed them to a device.
    pub handed: HashMap<AttemptId, Timestamp>,
    /// Those attempts: when the device reported them sent.
    pub sent: HashMap<AttemptId, Timestamp>,
    /// Attempts made, reminders and retries included.
    pub attempts: u32,
    /// People's own acks, by when.
    pub acks: Vec<Timestamp>,
    /// Replies the router rejected.
    pub rejected: u32,
    /// Attempts reported failed.
    pub failed: u32,
}

impl Observed {
    /// Bookkeeping for one router record.
    pub(crate) fn record(&mut self, r: Record) {
        match r {
            Record::AttemptStarted {
                at,
                person,
                attempt,
                purpose,
                ..
            } => {
                self.attempts += 1;
                if purpose == Purpose::Alert && !self.first.contains_key(&person) {
                    self.first.insert(person, attempt);
                    self.handed.insert(attempt, at);
                }
            }
            Record::Reply { at, verdict, .. } => match verdict {
                Verdict::Ack { .. } => self.acks.push(at),
                Verdict::Rejected { .. } => self.rejected += 1,
                _ => {}
            },
            _ => {}
        }
    }

    /// Bookkeeping for one driver event (before the router sees it).
    pub(crate) fn event(&mut self, now: Timestamp, e: &DriverEvent) {
        match e {
            DriverEvent::Sent { attempt, .. } if self.handed.contains_key(attempt) => {
                self.sent.entry(*attempt).or_insert(now);
            }
            DriverEvent::Failed { .. } => self.failed += 1,
            _ => {}
        }
    }

    /// Whether every first attempt has been sent.
    pub(crate) fn all_sent(&self, targets: usize) -> bool {
        self.first.len() == targets && self.sent.len() == targets
    }

    /// Seconds after `start` of the latest of `times`.
    pub(crate) fn last(start: Timestamp, times: impl Iterator<Item = Timestamp>) -> f64 {
        times
            .max()
            .map_or(f64::NAN, |t| t.since(start).as_secs_f64())
    }
}

/// Measured over bound (1 when both are 0).
pub(crate) fn ratio(out: f64, bound: f64) -> f64 {
    if bound > 0.0 {
        out / bound
    } else if out > 0.0 {
        f64::INFINITY
    } else {
        1.0
    }
}

/// A red alert plan for `people`, each with only the address `address(i)`, no supervisor
/// (nobody to escalate to: the figure is about first attempts and acks).
pub(crate) fn plan(
    id: &str,
    at: Timestamp,
    people: u32,
    address: impl Fn(u32) -> Address,
) -> AlertPlan {
    let mut contacts = Vec::new();
    let mut targets = Vec::new();
    for i in 0..people {
        let person = PersonId(format!("P{i:05}"));
        contacts.push(Contact {
            person: person.clone(),
            name: format!("负责人{i}"),
            role: Role::VillageHead,
            town: "镇0".into(),
            addresses: vec![address(i)],
            supervisor: None,
        });
        targets.push(Target {
            person,
            reason: TargetReason::Responsible {
                area: AreaId(format!("V{i:03}")),
            },
        });
    }
    AlertPlan {
        alert: Alert {
            id: AlertId::from(id),
            grade: Grade::Red,
            kind: "flood".into(),
            headline: "山洪红色预警".into(),
            text: "沿河各村立即组织人员向高处转移，切勿涉水过河。".into(),
            area: vec![],
            exercise: false,
            issuer: "bench".into(),
            accepted_at: at,
            reference: None,
        },
        targets,
        contacts,
        areas: vec![],
        speakers: vec![],
        kits: vec![],
        uplink: None,
    }
}

/// The default policies, with the red ack deadline stretched past `queue_secs` (the time
/// the pool needs for the first round). With the default 5 minutes, a record whose first
/// message is still queued at the deadline is escalated — or, with no supervisor, closed
/// unreached — and the pool's throughput could not be measured past that point.
pub(crate) fn policies(queue_secs: u64) -> Policies {
    let mut p = Policies::default();
    p.red.ack_deadline_s = p.red.ack_deadline_s.max(queue_secs + 900);
    p
}

/// The router, the drivers of the gateway's terminals, the simulated network.
struct BeidouRun {
    router: Router,
    router_deadline: u64,
    drivers: Vec<Terminal>,
    ids: Vec<DeviceId>,
    by_id: HashMap<DeviceId, usize>,
    net: SimNetwork,
    wire: Wire<End>,
    now: Timestamp,
    obs: Observed,
}

impl BeidouRun {
    fn new(args: &BeidouArgs) -> Result<Self> {
        if args.cards == 0 || args.interval_secs == 0 {
            bail!("--cards and --interval-secs must be at least 1");
        }
        let mut net = SimNetwork::new(SimConfig::default(), args.seed);
        let mut drivers = Vec::new();
        let mut devices = Vec::new();
        let mut ids = Vec::new();
        for c in 0..args.cards {
            let mut term = TerminalConfig::new(format!("{}", 242_286 + c));
            term.frequency_secs = args.interval_secs;
            net.add_terminal(T0, term);
            let mut cfg = BeidouConfig::new(format!("sim{c}"));
            // Planned as the card will turn out to be: the router's budget and the
            // card's service frequency agree, as they do once configured.
            cfg.assumed_interval_secs = u64::from(args.interval_secs);
            let id = DeviceId(format!("bd-{c:02}"));
            devices.push(DeviceInfo {
                id: id.clone(),
                caps: cfg.capabilities(),
                line: None,
            });
            let mut d = Terminal::new(cfg, T0);
            d.handle_port_opened(T0);
            drivers.push(d);
            ids.push(id);
        }
        let per_card = u64::from(args.recipients.div_ceil(args.cards));
        let config = RouterConfig {
            policies: policies(per_card * u64::from(args.interval_secs)),
            ack_key: AckKey::new(b"bench-district-secret".to_vec()),
            devices,
        };
        Ok(BeidouRun {
            router_deadline: config.policies.red.ack_deadline_s,
            router: Router::new(config),
            by_id: ids
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, d)| (d, i))
                .collect(),
            ids,
            drivers,
            net,
            wire: Wire::new(Duration::from_millis(args.link_ms)),
            now: T0,
            obs: Observed::default(),
        })
    }

    /// Moves everything that can move at `now` until nothing does.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some((to, bytes)) = self.wire.take_due(self.now) {
                moved = true;
                match to {
                    End::Terminal(i) => self.net.handle_rx(self.now, i, &bytes),
                    End::Driver(i) => {
                        if let Some(d) = self.drivers.get_mut(i) {
                            d.handle_rx(self.now, &bytes);
                        }
                    }
                }
            }
            for i in 0..self.drivers.len() {
                while let Some(b) = self.net.poll_transmit(i) {
                    self.wire.put(self.now, End::Driver(i), b);
                    moved = true;
                }
                let (Some(d), Some(device)) = (self.drivers.get_mut(i), self.ids.get(i)) else {
                    continue;
                };
                while let Some(b) = d.poll_transmit() {
                    self.wire.put(self.now, End::Terminal(i), b);
                    moved = true;
                }
                while let Some(event) = d.poll_event() {
                    moved = true;
                    self.obs.event(self.now, &event);
                    self.router.handle_device_event(
                        self.now,
                        DeviceEvent {
                            device: device.clone(),
                            at: self.now,
                            event,
                        },
                    );
                }
            }
            while let Some(out) = self.router.poll_output() {
                moved = true;
                match out {
                    Output::Record(r) => self.obs.record(r),
                    Output::Command { device, command } => {
                        if let Some(d) = self
                            .by_id
                            .get(&device)
                            .and_then(|&i| self.drivers.get_mut(i))
                        {
                            d.submit(self.now, command);
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances the clock to the next thing due (not past `until`); false when none is.
    fn step(&mut self, until: Timestamp) -> bool {
        let next = self
            .drivers
            .iter()
            .map(Terminal::poll_timeout)
            .chain([
                self.net.poll_timeout(),
                self.router.poll_timeout(),
                self.wire.next(),
            ])
            .flatten()
            .min();
        let Some(next) = next.filter(|t| *t <= until) else {
            return false;
        };
        self.now = next.max(self.now);
        self.net.handle_timeout(self.now);
        for d in &mut self.drivers {
            if d.poll_timeout().is_some_and(|t| t <= self.now) {
                d.handle_timeout(self.now);
            }
        }
        if self.router.poll_timeout().is_some_and(|t| t <= self.now) {
            self.router.handle_timeout(self.now);
        }
        self.settle();
        true
    }
}

/// Figures of one BeiDou run.
#[derive(Debug)]
pub(crate) struct BeidouFigures {
    pub ack_deadline: u64,
    pub first_attempts: usize,
    pub all_handed: f64,
    pub all_first_out: f64,
    pub bound: f64,
    pub acked: usize,
    pub last_ack: f64,
    pub attempts: u32,
    pub failed: u32,
    pub rejected: u32,
    pub rescheduled: u64,
}

/// Runs the BeiDou campaign: the alert at `T0`, the clock until every first attempt is
/// out and everyone answered (or a virtual day passed).
pub(crate) fn run_beidou(args: &BeidouArgs) -> Result<BeidouFigures> {
    let mut run = BeidouRun::new(args)?;
    // The terminals are read (cards, beams) before the alert comes in; the figures'
    // clock starts when it does.
    run.settle();
    let ready_by = T0 + Duration::from_secs(60);
    while !run.drivers.iter().all(Terminal::is_ready) {
        if !run.step(ready_by) {
            bail!("a simulated terminal did not answer the card query");
        }
    }
    let start = run.now;
    let n = args.recipients as usize;
    let plan = plan("bench-beidou-1", start, args.recipients, |i| {
        Address::BeidouCard(format!("{:07}", 300_000 + i))
    });
    run.router.handle_alert(start, plan)?;
    run.settle();
    let horizon = T0 + Duration::from_secs(24 * 3600);
    while !(run.obs.all_sent(n) && run.obs.acks.len() >= n) {
        if !run.step(horizon) {
            break;
        }
    }
    if !run.obs.all_sent(n) {
        bail!(
            "only {} of {n} first attempts went out within a virtual day",
            run.obs.sent.len()
        );
    }
    let per_card = n.div_ceil(args.cards as usize);
    let bound = per_card.saturating_sub(1) as f64 * f64::from(args.interval_secs);
    let o = &run.obs;
    Ok(BeidouFigures {
        ack_deadline: run.router_deadline,
        first_attempts: o.first.len(),
        all_handed: Observed::last(start, o.handed.values().copied()),
        all_first_out: Observed::last(start, o.sent.values().copied()),
        bound,
        acked: o.acks.len(),
        last_ack: Observed::last(start, o.acks.iter().copied()),
        attempts: o.attempts,
        failed: o.failed,
        rejected: o.rejected,
        rescheduled: run.drivers.iter().map(|d| d.stats().rescheduled).sum(),
    })
}

/// Figures of the SBD run.
#[derive(Debug)]
pub(crate) struct SbdFigures {
    /// Messages reported sent within the window.
    pub sent: u32,
    /// Sessions (`AT+SBDIX`/`AT+SBDIXA`) finished within the window, mailbox-only included.
    pub sessions: u32,
    /// Mean session time, seconds (from the command to its `+SBDIX:` result).
    pub session_mean: f64,
    /// Acks the kit sent back that the driver reported.
    pub inbound: u32,
    /// The window, seconds.
    pub window: f64,
}

/// One 9603 with more messages queued than an hour can carry: how many go out.
pub(crate) fn run_sbd(window_secs: u64, link_ms: u64, seed: u64) -> Result<SbdFigures> {
    let kit = tocsin_iridium_sbd::sim::default_kit_imei();
    let mut sim = SimSbd::new(SbdSimConfig::default(), seed, T0);
    let mut cfg = SbdConfig::new("sim");
    cfg.queue_limit = 2_000;
    let mut drv = Sbd::new(cfg, T0);
    drv.handle_port_opened(T0);
    // Generous: sessions of 5 s at best, so the window cannot carry more than this.
    let messages = window_secs / 5 + 10;
    for i in 0..messages {
        drv.submit(
            T0,
            DriverCommand::Send(Outbound {
                attempt: AttemptId(i + 1),
                to: Address::SbdImei(kit.clone()),
                text: format!("【红色预警】山洪 立即转移 回复1 {}", code(i)),
                want_report: false,
            }),
        );
    }
    #[derive(Clone, Copy)]
    enum SbdEnd {
        Driver,
        Modem,
    }
    let mut wire = Wire::new(Duration::from_millis(link_ms));
    let end = T0 + Duration::from_secs(window_secs);
    let mut now = T0;
    let (mut sent, mut inbound, mut sessions) = (0u32, 0u32, 0u32);
    let mut session_start: Option<Timestamp> = None;
    let mut session_total = Duration::ZERO;
    loop {
        // Settle at `now`.
        loop {
            let mut moved = false;
            while let Some((to, bytes)) = wire.take_due(now) {
                moved = true;
                match to {
                    SbdEnd::Modem => sim.handle_rx(now, &bytes),
                    SbdEnd::Driver => {
                        if contains(&bytes, b"+SBDIX:")
                            && let Some(s) = session_start.take()
                        {
                            sessions += 1;
                            session_total += now.since(s);
                        }
                        drv.handle_rx(now, &bytes);
                    }
                }
            }
            while let Some(b) = drv.poll_transmit() {
                if contains(&b, b"AT+SBDIX") {
                    session_start = Some(now);
                }
                wire.put(now, SbdEnd::Modem, b);
                moved = true;
            }
            while let Some(b) = sim.poll_transmit() {
                wire.put(now, SbdEnd::Driver, b);
                moved = true;
            }
            while let Some(e) = drv.poll_event() {
                moved = true;
                match e {
                    DriverEvent::Sent { .. } => sent += 1,
                    // The kit's ack batches come as frames (the daemon judges them), a
                    // plain text as an inbound message.
                    DriverEvent::Inbound { receipt, .. } | DriverEvent::Frame { receipt, .. } => {
                        inbound += 1;
                        // The gateway commits the ack and releases the modem's buffer.
                        if let Some(r) = receipt {
                            drv.submit(now, DriverCommand::Release(r));
                        }
                    }
                    _ => {}
                }
            }
            if !moved {
                break;
            }
        }
        let next = [drv.poll_timeout(), sim.poll_timeout(), wire.next()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) if t <= end => {
                now = t.max(now);
                sim.handle_timeout(now);
                if drv.poll_timeout().is_some_and(|t| t <= now) {
                    drv.handle_timeout(now);
                }
            }
            _ => break,
        }
    }
    if !drv.is_ready() && sent == 0 {
        bail!("the SBD driver never got the simulated modem ready");
    }
    let session_mean = if sessions > 0 {
        session_total.as_secs_f64() / f64::from(sessions)
    } else {
        f64::NAN
    };
    Ok(SbdFigures {
        sent,
        sessions,
        session_mean,
        inbound,
        window: window_secs as f64,
    })
}

/// A real ack code for message `i`, so the simulated kit finds it and answers.
fn code(i: u64) -> tocsin_core::AckCode {
    tocsin_core::AckCode::derive(
        &AckKey::new(b"bench-sbd".to_vec()),
        &AlertId::from("bench-sbd-1"),
        &PersonId(format!("crew-{i}")),
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Runs the benchmark and prints its figures.
pub fn run(args: &BeidouArgs) -> Result<()> {
    let f = run_beidou(args)?;
    println!("beidou.input.cards {} count", args.cards);
    println!("beidou.input.interval {} s", args.interval_secs);
    println!("beidou.input.recipients {} count", args.recipients);
    println!("beidou.input.ack_deadline {} s", f.ack_deadline);
    println!("beidou.first_attempts {} count", f.first_attempts);
    println!("beidou.all_handed {:.1} s", f.all_handed);
    println!("beidou.all_first_out {:.1} s", f.all_first_out);
    println!("beidou.bound {:.1} s", f.bound);
    println!("beidou.ratio {:.4} ratio", ratio(f.all_first_out, f.bound));
    println!("beidou.acked {} count", f.acked);
    println!("beidou.last_ack {:.1} s", f.last_ack);
    println!("beidou.attempts {} count", f.attempts);
    println!("beidou.failed {} count", f.failed);
    println!("beidou.rejected_replies {} count", f.rejected);
    println!("beidou.rescheduled {} count", f.rescheduled);

    let s = run_sbd(args.sbd_secs, args.link_ms, args.seed)?;
    let per_hour = 3600.0 / s.window;
    let bound = 3600.0 / s.session_mean;
    let sent_per_hour = f64::from(s.sent) * per_hour;
    println!("sbd.sessions_per_hour {sent_per_hour:.1} count");
    println!(
        "sbd.all_sessions_per_hour {:.1} count",
        f64::from(s.sessions) * per_hour
    );
    println!("sbd.session_mean {:.2} s", s.session_mean);
    println!("sbd.bound_per_hour {bound:.1} count");
    println!("sbd.ratio {:.4} ratio", ratio(sent_per_hour, bound));
    println!("sbd.acks_received {} count", s.inbound);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_attempts_meet_the_pool_bound_and_everyone_answers() {
        let args = BeidouArgs {
            cards: 2,
            interval_secs: 60,
            recipients: 10,
            link_ms: 50,
            sbd_secs: 600,
            seed: 3,
        };
        let f = run_beidou(&args).unwrap();
        assert_eq!(f.first_attempts, 10);
        // 5 per card: the last at 4 intervals, plus the serial round trips the driver
        // paces from (its next send waits for the previous feedback).
        assert_eq!(f.bound, 240.0);
        assert!(f.all_first_out >= 240.0, "{f:?}");
        assert!(ratio(f.all_first_out, f.bound) <= 1.02, "{f:?}");
        assert_eq!(f.acked, 10, "{f:?}");
        assert_eq!((f.failed, f.rejected), (0, 0), "{f:?}");
    }

    #[test]
    fn the_sbd_modem_runs_sessions_back_to_back() {
        let s = run_sbd(600, 50, 1).unwrap();
        assert!((5.0..=20.5).contains(&s.session_mean), "{s:?}");
        // 600 s of 5–20 s sessions, each carrying one message.
        assert!(s.sent >= 25 && s.sessions >= s.sent, "{s:?}");
        let busy = f64::from(s.sessions) * s.session_mean;
        assert!(busy >= 0.9 * s.window, "{s:?}");
        assert!(s.inbound > 0, "{s:?}");
    }
}
