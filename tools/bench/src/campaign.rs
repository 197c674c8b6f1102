//! `tocsin-bench campaign`: a red alert to a few thousand responsible persons, run through
//! the REAL router on a virtual clock. The benchmark plays the devices (SMS modems, BeiDou
//! cards, Meshtastic radios, each with its rate and latencies) and the people (who answer
//! after a while, over whatever reached them first, or never; supervisors who go and knock
//! on doors) in memory. The real modem drivers are benchmarked separately (`sms`).
//!
//! Figures are printed one per line as `name value unit`; the names are listed in
//! docs/benchmarks.md and must stay stable. Virtual-time figures are seconds after the
//! alert was accepted; wall-clock figures are what the router costs on this machine.

use anyhow::{Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tocsin_channel::{Capabilities, DeviceEvent, DriverCommand, DriverEvent};
use tocsin_core::{
    AckKey, Address, Alert, AlertId, AreaId, AttemptId, Bearer, DeviceId, Grade, PersonId,
    PhoneNumber, Role, Timestamp,
};
use tocsin_router::{
    AlertPlan, Contact, DeviceInfo, Output, Policies, Purpose, Record, Router, RouterConfig,
    Target, TargetReason, Verdict, door_code,
};

/// Options of the campaign benchmark.
#[derive(Debug, clap::Args)]
pub struct CampaignArgs {
    /// Responsible persons targeted by the red alert.
    #[arg(long, default_value_t = 3000)]
    pub responsible: u32,
    /// GSM modems in the pool.
    #[arg(long, default_value_t = 24)]
    pub modems: u32,
    /// Slowest modem, SMS per minute (rates are spread evenly from slowest to fastest).
    #[arg(long, default_value_t = 6.0)]
    pub sms_min: f64,
    /// Fastest modem, SMS per minute.
    #[arg(long, default_value_t = 10.0)]
    pub sms_max: f64,
    /// BeiDou cards at the gateway.
    #[arg(long, default_value_t = 20)]
    pub beidou_cards: u32,
    /// BeiDou service period of each card, seconds per message.
    #[arg(long, default_value_t = 60.0)]
    pub beidou_period_s: f64,
    /// Meshtastic radios at the gateway.
    #[arg(long, default_value_t = 2)]
    pub mesh_nodes: u32,
    /// Mesh airtime per packet, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub mesh_airtime_s: f64,
    /// Share of people who carry a BeiDou card.
    #[arg(long, default_value_t = 0.3)]
    pub beidou_share: f64,
    /// Share of people who have a mesh node.
    #[arg(long, default_value_t = 0.25)]
    pub mesh_share: f64,
    /// Share of people who never answer.
    #[arg(long, default_value_t = 0.05)]
    pub never: f64,
    /// Share of people who answer late: 5 to 15 minutes after the message reached them
    /// (the others answer after 15 s to 4 min).
    #[arg(long, default_value_t = 0.10)]
    pub late: f64,
    /// Share of SMS attempts that fail (retryable, e.g. network congestion).
    #[arg(long, default_value_t = 0.02)]
    pub sms_fail: f64,
    /// Timed repetitions of accepting the alert (fresh routers) for the wall-clock figures.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Seed for people, addresses and latencies.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Town officials the responsible persons report to (the demo district has 16 towns).
const TOWNS: u32 = 16;

/// The wall clock: what a benchmark measures.
#[allow(
    clippy::disallowed_methods,
    reason = "a benchmark binary reads the wall clock"
)]
fn wall() -> Instant {
    Instant::now()
}

fn phone(n: u32) -> Result<Address> {
    Ok(Address::Phone(PhoneNumber::parse(
        &format!("+86139{n:08}"),
        "86",
    )?))
}

/// How one simulated person answers.
#[derive(Clone, Copy, Debug)]
struct Behaviour {
    /// Seconds after their first delivered message; `None`: never.
    ack_after_s: Option<f64>,
    /// Over a bearer that vouches for the sender, reply a bare "1" instead of the code.
    bare: bool,
}

/// The synthetic district: the plan and how each person behaves.
struct District {
    plan: AlertPlan,
    people: HashMap<PersonId, Behaviour>,
}

fn district(args: &CampaignArgs) -> Result<District> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut contacts = Vec::new();
    let mut targets = Vec::new();
    let mut people = HashMap::new();
    contacts.push(Contact {
        person: PersonId::from("D"),
        name: "区应急局值班".into(),
        role: Role::DistrictOfficial,
        town: "区应急局".into(),
        addresses: vec![phone(0)?],
        supervisor: None,
    });
    for t in 0..TOWNS {
        let id = PersonId(format!("T{t:02}"));
        contacts.push(Contact {
            person: id.clone(),
            name: format!("镇值班{t}"),
            role: Role::TownOfficial,
            town: format!("镇{t}"),
            addresses: vec![phone(1 + t)?],
            supervisor: Some(PersonId::from("D")),
        });
        // Town officials go and knock most of the time, after a walk.
        let knocks = rng.random::<f64>() < 0.9;
        people.insert(
            id,
            Behaviour {
                ack_after_s: knocks.then(|| rng.random_range(120.0..900.0)),
                bare: false,
            },
        );
    }
    let roles = [
        Role::VillageHead,
        Role::GridLead,
        Role::HazardWarden,
        Role::ReservoirWarden,
    ];
    for i in 0..args.responsible {
        let id = PersonId(format!("P{i:05}"));
        let town = i % TOWNS;
        let mut addresses = vec![phone(1000 + i)?];
        if rng.random::<f64>() < args.beidou_share {
            addresses.push(Address::BeidouCard(format!("{:07}", 4_000_000 + i)));
        }
        if rng.random::<f64>() < args.mesh_share {
            addresses.push(Address::MeshNode(0x1000_0000 + i));
        }
        let role = roles.get(i as usize % roles.len()).copied();
        contacts.push(Contact {
            person: id.clone(),
            name: format!("负责人{i}"),
            role: role.unwrap_or(Role::VillageHead),
            town: format!("镇{town}"),
            addresses,
            supervisor: Some(PersonId(format!("T{town:02}"))),
        });
        targets.push(Target {
            person: id.clone(),
            reason: TargetReason::Responsible {
                area: AreaId(format!("V{town:02}-{:03}", i % 20)),
            },
        });
        // Most answer within minutes, some late, a few never.
        let x = rng.random::<f64>();
        let ack_after_s = if x < args.never {
            None
        } else if x < args.never + args.late {
            Some(rng.random_range(300.0..900.0))
        } else {
            Some(rng.random_range(15.0..240.0))
        };
        people.insert(
            id,
            Behaviour {
                ack_after_s,
                bare: rng.random::<f64>() < 0.5,
            },
        );
    }
    let alert = Alert {
        id: AlertId::from("bench-red-1"),
        grade: Grade::Red,
        kind: "flood".into(),
        headline: "山洪红色预警".into(),
        text: "沿河各村立即组织人员向高处转移，切勿涉水过河，关注村广播。".into(),
        area: vec![],
        exercise: false,
        issuer: "bench".into(),
        accepted_at: Timestamp::ZERO,
        reference: None,
    };
    Ok(District {
        plan: AlertPlan {
            alert,
            targets,
            contacts,
            areas: vec![],
            speakers: vec![],
            kits: vec![],
            uplink: None,
        },
        people,
    })
}

/// A simulated device: its rate and latencies, and when it is free again.
#[derive(Clone, Debug)]
struct DeviceModel {
    info: DeviceInfo,
    /// How long one message occupies the device, ms.
    service_ms: i64,
    /// From start of service until the network has it, ms (range).
    sent_ms: (i64, i64),
    /// From the network having it until the handset reports it, ms (range).
    delivered_ms: (i64, i64),
    /// Share of attempts that fail (retryable).
    fail: f64,
    free_at: Timestamp,
}

fn devices(args: &CampaignArgs) -> Result<Vec<DeviceModel>> {
    if args.modems == 0 {
        bail!("--modems must be at least 1: everyone has a phone");
    }
    let mut out = Vec::new();
    let caps = |bearer, per_minute: f64, max_chars, sender_authenticated| Capabilities {
        bearer,
        per_minute,
        max_chars,
        sender_authenticated,
    };
    let model = |id: String, caps: Capabilities, sent_ms, delivered_ms, fail| {
        let service_ms = (60_000.0 / caps.per_minute).round() as i64;
        DeviceModel {
            info: DeviceInfo {
                id: DeviceId(id),
                caps,
                line: None,
            },
            service_ms,
            sent_ms,
            delivered_ms,
            fail,
            free_at: Timestamp::ZERO,
        }
    };
    for m in 0..args.modems {
        let f = if args.modems > 1 {
            f64::from(m) / f64::from(args.modems - 1)
        } else {
            0.0
        };
        let rate = args.sms_min + (args.sms_max - args.sms_min) * f;
        out.push(model(
            format!("gsm-{m:02}"),
            caps(Bearer::Sms, rate, 670, false),
            (2_000, 6_000),
            (2_000, 15_000),
            args.sms_fail,
        ));
    }
    for c in 0..args.beidou_cards {
        out.push(model(
            format!("bd-{c:02}"),
            caps(Bearer::Beidou, 60.0 / args.beidou_period_s, 38, true),
            (500, 1_500),
            (3_000, 10_000),
            0.0,
        ));
    }
    for n in 0..args.mesh_nodes {
        let airtime = (args.mesh_airtime_s * 1000.0).round() as i64;
        out.push(model(
            format!("mesh-{n}"),
            caps(Bearer::Mesh, 60.0 / args.mesh_airtime_s, 200, true),
            (airtime, airtime),
            (1_000, 5_000),
            0.0,
        ));
    }
    for d in &out {
        let r = d.info.caps.per_minute;
        if !(r.is_finite() && r > 0.0) {
            bail!("device {} has no usable rate ({r}/min)", d.info.id);
        }
    }
    Ok(out)
}

/// Everything the run observed, for the figures.
#[derive(Default)]
struct Observed {
    /// Per bearer: first warning attempts (one per person), and the last one's start.
    first: BTreeMap<Bearer, (u32, Timestamp)>,
    /// People whose first attempt on a bearer has been seen.
    seen: HashSet<(PersonId, Bearer)>,
    /// First warning attempt per person, any bearer.
    first_any: HashMap<PersonId, Timestamp>,
    /// Times of the persons' own acks.
    acks: Vec<Timestamp>,
    /// Times records were answered: the person's first ack, or a door-knock confirmation.
    answered: HashMap<PersonId, Timestamp>,
    late: u32,
    /// People who acked in time or were escalated (or both: escalated before anything
    /// could reach them, then acked within their own first attempt's window).
    settled: HashSet<PersonId>,
    escalations: u32,
    escalations_all: u32,
    confirmed: u32,
    unreached: u32,
    attempts: u32,
    records: u64,
    rejected: u32,
    last_close: Timestamp,
}

/// The run: router, devices, people, the virtual clock.
struct Run {
    router: Router,
    devices: Vec<DeviceModel>,
    device_ix: HashMap<DeviceId, usize>,
    people: HashMap<PersonId, Behaviour>,
    /// Who an address belongs to (the bench knows its district).
    owner: HashMap<Address, PersonId>,
    key: AckKey,
    alert: AlertId,
    rng: ChaCha8Rng,
    now: Timestamp,
    /// Driver reports (replies included) waiting for their virtual time.
    pending: BTreeMap<(Timestamp, u64), DeviceEvent>,
    seq: u64,
    /// Attempts: (whose record, purpose, bearer, to).
    attempts: HashMap<AttemptId, (PersonId, Purpose, Address)>,
    /// Attempts the network has taken (a cancel no longer stops them).
    sent: HashSet<AttemptId>,
    cancelled: HashSet<AttemptId>,
    /// People (and door-knock tasks: (record, level)) who already decided to answer.
    answered: HashSet<PersonId>,
    knocked: HashSet<(PersonId, u32)>,
    obs: Observed,
    router_time: Duration,
}

impl Run {
    fn new(
        config: RouterConfig,
        models: &[DeviceModel],
        d: &District,
        key: AckKey,
        seed: u64,
    ) -> Run {
        let mut owner = HashMap::new();
        for c in &d.plan.contacts {
            for a in &c.addresses {
                owner.insert(a.clone(), c.person.clone());
            }
        }
        Run {
            router: Router::new(config),
            devices: models.to_vec(),
            device_ix: models
                .iter()
                .enumerate()
                .map(|(i, m)| (m.info.id.clone(), i))
                .collect(),
            people: d.people.clone(),
            owner,
            key,
            alert: d.plan.alert.id.clone(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: Timestamp::ZERO,
            pending: BTreeMap::new(),
            seq: 0,
            attempts: HashMap::new(),
            sent: HashSet::new(),
            cancelled: HashSet::new(),
            answered: HashSet::new(),
            knocked: HashSet::new(),
            obs: Observed::default(),
            router_time: Duration::ZERO,
        }
    }

    /// Accepts the alert and runs the campaign to its end.
    fn campaign(&mut self, plan: AlertPlan) -> Result<()> {
        let t = wall();
        self.router.handle_alert(Timestamp::ZERO, plan)?;
        self.router_time += t.elapsed();
        self.drain();
        self.run()
    }

    fn push(&mut self, at: Timestamp, e: DeviceEvent) {
        self.seq += 1;
        self.pending.insert((at, self.seq), e);
    }

    fn ms(&mut self, range: (i64, i64)) -> Duration {
        let (lo, hi) = range;
        let v = if hi > lo {
            self.rng.random_range(lo..=hi)
        } else {
            lo
        };
        Duration::from_millis(u64::try_from(v).unwrap_or(0))
    }

    /// Drains the router's outputs: bookkeeping for records, device models for commands.
    fn drain(&mut self) {
        loop {
            let t = wall();
            let out = self.router.poll_output();
            self.router_time += t.elapsed();
            let Some(out) = out else { break };
            match out {
                Output::Record(r) => self.observe(r),
                Output::Command { device, command } => self.command(device, command),
            }
        }
    }

    fn observe(&mut self, r: Record) {
        let o = &mut self.obs;
        o.records += 1;
        match r {
            Record::AttemptStarted {
                at,
                person,
                attempt,
                purpose,
                bearer,
                to,
                ..
            } => {
                o.attempts += 1;
                if purpose == Purpose::Alert && o.seen.insert((person.clone(), bearer)) {
                    let e = o.first.entry(bearer).or_insert((0, at));
                    e.0 += 1;
                    e.1 = e.1.max(at);
                    o.first_any.entry(person.clone()).or_insert(at);
                }
                self.attempts.insert(attempt, (person, purpose, to));
            }
            Record::Escalated { task, person, .. } => {
                o.settled.insert(person);
                o.escalations_all += 1;
                o.escalations += u32::from(task.level == 0);
            }
            Record::Reply { at, verdict, .. } => match verdict {
                Verdict::Ack { late, person, .. } => {
                    o.acks.push(at);
                    o.answered.entry(person.clone()).or_insert(at);
                    o.late += u32::from(late);
                    if !late {
                        o.settled.insert(person.clone());
                    }
                    o.last_close = o.last_close.max(at);
                }
                Verdict::DoorKnockConfirmed { person, .. } => {
                    o.answered.entry(person).or_insert(at);
                    o.confirmed += 1;
                    o.last_close = o.last_close.max(at);
                }
                // Accepting a door-knock task closes nothing: the visit is still owed.
                Verdict::DoorKnockAccepted { .. } | Verdict::Duplicate { .. } => {}
                Verdict::Rejected { .. } => o.rejected += 1,
            },
            Record::DeliveryClosed { at, state, .. } => {
                if state == tocsin_router::DeliveryState::Unreached {
                    o.unreached += 1;
                }
                o.last_close = o.last_close.max(at);
            }
            _ => {}
        }
    }

    fn command(&mut self, device: DeviceId, command: DriverCommand) {
        match command {
            DriverCommand::Send(out) => {
                let Some(&i) = self.device_ix.get(&device) else {
                    return;
                };
                let now = self.now;
                let attempt = out.attempt;
                let ev = |event| DeviceEvent {
                    device: device.clone(),
                    at: now,
                    event,
                };
                self.push(now, ev(DriverEvent::Accepted { attempt }));
                let Some(d) = self.devices.get(i).cloned() else {
                    return;
                };
                // The device works one message at a time at its own pace.
                let start = now.max(d.free_at);
                let service = Duration::from_millis(u64::try_from(d.service_ms).unwrap_or(0));
                if let Some(dm) = self.devices.get_mut(i) {
                    dm.free_at = start + service;
                }
                if d.fail > 0.0 && self.rng.random::<f64>() < d.fail {
                    let failed = DriverEvent::Failed {
                        attempt,
                        retryable: true,
                        reason: "+CMS ERROR: 42 (congestion)".into(),
                    };
                    let at = start + self.ms((3_000, 8_000));
                    self.push(at, ev(failed));
                    return;
                }
                let sent_at = start + self.ms(d.sent_ms);
                let reference = format!("mr{}", attempt.0);
                self.push(sent_at, ev(DriverEvent::Sent { attempt, reference }));
                let delivered_at = sent_at + self.ms(d.delivered_ms);
                let evidence = "status-report".to_owned();
                self.push(
                    delivered_at,
                    ev(DriverEvent::Delivered { attempt, evidence }),
                );
            }
            DriverCommand::Cancel(attempt) => {
                if !self.sent.contains(&attempt) {
                    self.cancelled.insert(attempt);
                }
            }
            DriverCommand::Release(_) | DriverCommand::SendFrame(_) => {}
        }
    }

    /// A delivery reached someone: they may answer.
    fn delivered(&mut self, device: &DeviceId, attempt: AttemptId) {
        let Some((person, purpose, to)) = self.attempts.get(&attempt).cloned() else {
            return;
        };
        let authenticated = self
            .device_ix
            .get(device)
            .and_then(|&i| self.devices.get(i))
            .is_some_and(|d| d.info.caps.sender_authenticated);
        match purpose {
            Purpose::Alert => {
                let Some(b) = self.people.get(&person).copied() else {
                    return;
                };
                let Some(after) = b.ack_after_s else { return };
                if !self.answered.insert(person.clone()) {
                    return;
                }
                let code = tocsin_core::AckCode::derive(&self.key, &self.alert, &person);
                let text = if authenticated && b.bare {
                    "1".to_owned()
                } else {
                    format!("1 {code}")
                };
                let at = self.now + Duration::from_secs_f64(after);
                self.reply(at, device.clone(), to, text);
            }
            Purpose::DoorKnock { level } => {
                if !self.knocked.insert((person.clone(), level)) {
                    return;
                }
                let Some(assignee) = self.owner.get(&to).cloned() else {
                    return;
                };
                let Some(after) = self.people.get(&assignee).and_then(|b| b.ack_after_s) else {
                    return;
                };
                let code = door_code(&self.key, &self.alert, &person);
                let at = self.now + Duration::from_secs_f64(after);
                self.reply(at, device.clone(), to, format!("1 {code} 已上门"));
            }
            Purpose::Notice { .. } => {}
        }
    }

    fn reply(&mut self, at: Timestamp, device: DeviceId, from: Address, text: String) {
        let event = DriverEvent::Inbound {
            from,
            text,
            evidence: "bench".into(),
            sent_at: None,
            receipt: None,
            in_reply_to: None,
        };
        self.push(at, DeviceEvent { device, at, event });
    }

    /// Runs the virtual clock until nothing is left to do (or a day has passed).
    fn run(&mut self) -> Result<()> {
        let horizon = Timestamp(24 * 3600 * 1000);
        loop {
            let timer = self.router.poll_timeout();
            let event = self.pending.keys().next().map(|k| k.0);
            let next = match (timer, event) {
                (Some(t), Some(e)) => t.min(e),
                (Some(t), None) => t,
                (None, Some(e)) => e,
                (None, None) => return Ok(()),
            };
            if next > horizon {
                bail!("the campaign did not settle within a virtual day");
            }
            self.now = next.max(self.now);
            let first = self.pending.keys().next().copied();
            match first {
                Some(k) if k.0 <= self.now => {
                    let Some(ev) = self.pending.remove(&k) else {
                        continue;
                    };
                    if let Some(a) = attempt_of(&ev.event) {
                        // A cancelled send that the network had not taken never happens.
                        if self.cancelled.contains(&a) && !self.sent.contains(&a) {
                            continue;
                        }
                        match &ev.event {
                            DriverEvent::Sent { .. } => {
                                self.sent.insert(a);
                            }
                            DriverEvent::Delivered { .. } => self.delivered(&ev.device, a),
                            _ => {}
                        }
                    }
                    let now = self.now;
                    let t = wall();
                    self.router.handle_device_event(now, ev);
                    self.router_time += t.elapsed();
                }
                _ => {
                    let now = self.now;
                    let t = wall();
                    self.router.handle_timeout(now);
                    self.router_time += t.elapsed();
                }
            }
            self.drain();
        }
    }
}

fn attempt_of(e: &DriverEvent) -> Option<AttemptId> {
    match e {
        DriverEvent::Accepted { attempt }
        | DriverEvent::Sent { attempt, .. }
        | DriverEvent::Delivered { attempt, .. }
        | DriverEvent::Failed { attempt, .. } => Some(*attempt),
        _ => None,
    }
}

/// When the last of `messages` sends can start on devices with these intervals (ms), each
/// sending its first at 0: the smallest `t` with `sum(floor(t / interval) + 1) >= messages`.
/// This is the capacity bound: per device, ceil(share) − 1 intervals.
fn bound_ms(messages: u32, intervals_us: &[i64]) -> f64 {
    if messages == 0 || intervals_us.is_empty() {
        return 0.0;
    }
    let need = i64::from(messages);
    let sent = |t: i64| intervals_us.iter().map(|i| t / i + 1).sum::<i64>();
    let hi0 = intervals_us.iter().copied().min().unwrap_or(1);
    let (mut lo, mut hi) = (0i64, hi0.saturating_mul(need));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if sent(mid) >= need {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo as f64 / 1e3
}

/// The router's send interval for a rate, in microseconds (as the router computes it).
fn interval_us(per_minute: f64) -> i64 {
    (60_000_000.0 / per_minute).round() as i64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn secs(t: Timestamp) -> f64 {
    t.0 as f64 / 1e3
}

/// Runs the benchmark and prints its figures.
pub fn run(args: &CampaignArgs) -> Result<()> {
    let d = district(args)?;
    let models = devices(args)?;
    let key = AckKey::new(b"bench-district-secret".to_vec());
    let config = RouterConfig {
        policies: Policies::default(),
        ack_key: key.clone(),
        devices: models.iter().map(|m| m.info.clone()).collect(),
    };
    let n = |bearer| {
        models
            .iter()
            .filter(|m| m.info.caps.bearer == bearer)
            .count()
    };
    println!("campaign.input.targets {} count", d.plan.targets.len());
    println!("campaign.input.sms_modems {} count", n(Bearer::Sms));
    println!("campaign.input.beidou_cards {} count", n(Bearer::Beidou));
    println!("campaign.input.mesh_nodes {} count", n(Bearer::Mesh));

    // Accepting the alert: how long until the first Send per bearer is in hand.
    let mut accept = Vec::new();
    let mut first_send: BTreeMap<Bearer, Vec<f64>> = BTreeMap::new();
    for _ in 0..args.runs.max(1) {
        let mut router = Router::new(config.clone());
        let plan = d.plan.clone();
        let t = wall();
        router.handle_alert(Timestamp::ZERO, plan)?;
        accept.push(t.elapsed().as_secs_f64() * 1e3);
        let mut seen = HashSet::new();
        while let Some(o) = router.poll_output() {
            if let Output::Command {
                device,
                command: DriverCommand::Send(_),
            } = o
                && let Some(m) = models.iter().find(|m| m.info.id == device)
                && seen.insert(m.info.caps.bearer)
            {
                first_send
                    .entry(m.info.caps.bearer)
                    .or_default()
                    .push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    println!("campaign.accept.median {:.3} ms", median(accept));
    for (bearer, v) in first_send {
        println!("campaign.first_send.{bearer}.median {:.3} ms", median(v));
    }

    // The whole campaign on the virtual clock.
    let preview = Router::new(config.clone()).preview(&d.plan);
    let mut run = Run::new(config, &models, &d, key, args.seed ^ 0x5eed);
    let start = wall();
    run.campaign(d.plan.clone())?;
    let total = start.elapsed();

    let o = &run.obs;
    let (mut out_all, mut bound_all) = (0.0f64, 0.0f64);
    for load in &preview.bearers {
        println!(
            "campaign.planned_first_attempts.{} {} count",
            load.bearer, load.messages
        );
    }
    for (bearer, (count, last)) in &o.first {
        let intervals: Vec<i64> = models
            .iter()
            .filter(|m| m.info.caps.bearer == *bearer)
            .map(|m| interval_us(m.info.caps.per_minute))
            .collect();
        let bound = bound_ms(*count, &intervals) / 1e3;
        let out = secs(*last);
        out_all = out_all.max(out);
        bound_all = bound_all.max(bound);
        println!("campaign.first_attempts.{bearer} {count} count");
        println!("campaign.all_first_out.{bearer} {out:.1} s");
        println!("campaign.bound.{bearer} {bound:.1} s");
        println!("campaign.ratio.{bearer} {:.4} ratio", ratio(out, bound));
    }
    println!("campaign.all_first_out {out_all:.1} s");
    println!("campaign.bound {bound_all:.1} s");
    println!("campaign.ratio {:.4} ratio", ratio(out_all, bound_all));
    let woken = o
        .first_any
        .values()
        .filter(|t| **t <= Timestamp(300_000))
        .count();
    println!("campaign.first_attempt_within_300s {woken} count");

    let targets = d.plan.targets.len();
    let answered: Vec<Timestamp> = o.answered.values().copied().collect();
    for (what, mut times) in [("acked", o.acks.clone()), ("answered", answered)] {
        times.sort();
        for (name, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
            println!(
                "campaign.{what}.{name} {:.1} s",
                quantile(&times, targets, q)
            );
        }
    }
    println!("campaign.acked {} count", o.acks.len());
    println!("campaign.acked_late {} count", o.late);
    println!("campaign.escalations {} count", o.escalations);
    println!(
        "campaign.escalations_all_levels {} count",
        o.escalations_all
    );
    println!("campaign.door_knock_confirmed {} count", o.confirmed);
    println!("campaign.unreached {} count", o.unreached);
    println!("campaign.rejected_replies {} count", o.rejected);
    println!("campaign.attempts {} count", o.attempts);
    println!("campaign.records {} count", o.records);
    println!("campaign.done_at {:.1} s", secs(o.last_close));
    println!(
        "campaign.router_time {:.1} ms",
        run.router_time.as_secs_f64() * 1e3
    );
    println!("campaign.wall {:.1} ms", total.as_secs_f64() * 1e3);

    Ok(())
}

/// When the share `q` of `targets` was reached in sorted `times` (seconds); infinite if
/// it never was.
fn quantile(times: &[Timestamp], targets: usize, q: f64) -> f64 {
    let need = ((targets as f64) * q).ceil() as usize;
    need.checked_sub(1)
        .and_then(|i| times.get(i))
        .map_or(f64::INFINITY, |t| secs(*t))
}

/// Measured over bound; 1 when both are 0 (every message went in the first instant).
fn ratio(out: f64, bound: f64) -> f64 {
    if bound > 0.0 {
        out / bound
    } else if out > 0.0 {
        f64::INFINITY
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_is_the_token_bucket_capacity() {
        // Two devices every 10 s: 100 messages, the last at floor(99 / 2) × 10 s.
        assert_eq!(bound_ms(100, &[10_000_000, 10_000_000]), 490_000.0);
        // 10/min and 5/min: sends at 0,0,6,12,12,18,24,24 → the 8th at 24 s.
        assert_eq!(bound_ms(8, &[6_000_000, 12_000_000]), 24_000.0);
        assert_eq!(bound_ms(0, &[1]), 0.0);
    }

    #[test]
    fn a_small_campaign_meets_its_bound_and_settles() {
        let args = CampaignArgs {
            responsible: 200,
            modems: 3,
            sms_min: 6.0,
            sms_max: 10.0,
            beidou_cards: 2,
            beidou_period_s: 60.0,
            mesh_nodes: 1,
            mesh_airtime_s: 2.0,
            beidou_share: 0.3,
            mesh_share: 0.25,
            never: 0.05,
            late: 0.10,
            sms_fail: 0.02,
            runs: 1,
            seed: 7,
        };
        let d = district(&args).unwrap();
        let models = devices(&args).unwrap();
        let key = AckKey::new(b"k".to_vec());
        let config = RouterConfig {
            policies: Policies::default(),
            ack_key: key.clone(),
            devices: models.iter().map(|m| m.info.clone()).collect(),
        };
        let mut run = Run::new(config, &models, &d, key, 1);
        run.campaign(d.plan.clone()).unwrap();
        let o = &run.obs;
        // The SMS went out packed at the modems' capacity (people who had already answered
        // over mesh or BeiDou were dropped from the queue).
        let (count, last) = o.first[&Bearer::Sms];
        assert!((150..=200).contains(&count), "{count}");
        let intervals: Vec<i64> = models
            .iter()
            .filter(|m| m.info.caps.bearer == Bearer::Sms)
            .map(|m| interval_us(m.info.caps.per_minute))
            .collect();
        let bound = bound_ms(count, &intervals) / 1e3;
        assert!(
            ratio(secs(last), bound) <= 1.001,
            "{} vs {bound}",
            secs(last)
        );
        // Everyone either acked in time or was escalated (late acks were escalated first;
        // some escalated before anything could reach them then acked in their own
        // window), BeiDou and mesh replies without a code included; and the campaign ended.
        assert!(o.acks.len() >= 170, "{}", o.acks.len());
        assert_eq!(o.settled.len(), 200);
        assert_eq!(o.rejected, 0);
        assert!(o.first.contains_key(&Bearer::Beidou) && o.first.contains_key(&Bearer::Mesh));
        assert!(run.router.poll_timeout().is_none() && run.pending.is_empty());
    }
}
