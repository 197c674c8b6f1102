//! A campaign on a virtual clock: the router, fake drivers that answer sends after virtual
//! delays, and scripted people and operators. Every record and command goes into a
//! readable transcript, one line each, stamped with virtual time.

#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    reason = "test harness: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use tocsin_channel::{
    Capabilities, DeviceEvent, DriverCommand, DriverEvent, Health, InboundReceipt,
};
use tocsin_core::{
    AckCode, AckKey, Address, Alert, AlertId, AttemptId, Bearer, DeviceId, Grade, PersonId,
    PhoneNumber, Role, Timestamp,
};
use tocsin_router::{
    AlertPlan, Contact, DeliveryState, DeviceInfo, Output, Policies, Purpose, Record, Router,
    RouterConfig, Target, TargetReason, Verdict,
};

pub const KEY: &[u8] = b"test-district-secret";

pub fn key() -> AckKey {
    AckKey::new(KEY.to_vec())
}

pub fn secs(s: i64) -> Timestamp {
    Timestamp(s * 1000)
}

pub fn phone(n: u32) -> Address {
    Address::Phone(PhoneNumber::parse(&format!("+86138000{n:05}"), "86").unwrap())
}

pub fn device(id: &str, bearer: Bearer, per_minute: f64) -> DeviceInfo {
    DeviceInfo {
        id: DeviceId::from(id),
        caps: Capabilities {
            bearer,
            per_minute,
            max_chars: 500,
            sender_authenticated: bearer == Bearer::Beidou,
        },
        line: None,
    }
}

pub fn config(devices: Vec<DeviceInfo>) -> RouterConfig {
    RouterConfig {
        policies: Policies::default(),
        ack_key: key(),
        devices,
    }
}

pub fn contact(
    id: &str,
    name: &str,
    role: Role,
    town: &str,
    addresses: Vec<Address>,
    sup: Option<&str>,
) -> Contact {
    Contact {
        person: PersonId::from(id),
        name: name.into(),
        role,
        town: town.into(),
        addresses,
        supervisor: sup.map(PersonId::from),
    }
}

pub fn alert(id: &str, grade: Grade, headline: &str) -> Alert {
    Alert {
        id: AlertId::from(id),
        grade,
        kind: "flood".into(),
        headline: headline.into(),
        text: "请立即组织转移".into(),
        area: vec![],
        exercise: false,
        issuer: "district-ops".into(),
        accepted_at: Timestamp::ZERO,
        reference: None,
    }
}

/// A plan targeting `targets` (ids), with every contact given.
pub fn plan(alert: Alert, targets: &[&str], contacts: &[Contact]) -> AlertPlan {
    AlertPlan {
        alert,
        targets: targets
            .iter()
            .map(|t| Target {
                person: PersonId::from(*t),
                reason: TargetReason::Located,
            })
            .collect(),
        contacts: contacts.to_vec(),
        areas: vec![],
        speakers: vec![],
        kits: vec![],
        uplink: None,
    }
}

pub fn code(alert: &str, person: &str) -> AckCode {
    AckCode::derive(&key(), &AlertId::from(alert), &PersonId::from(person))
}

pub fn task_code(alert: &str, person: &str) -> AckCode {
    tocsin_router::door_code(&key(), &AlertId::from(alert), &PersonId::from(person))
}

/// How a fake device treats sends to one address.
#[derive(Clone, Debug)]
pub enum Fate {
    /// Sent after `sent` ms, delivered `delivered` ms after the send.
    Deliver,
    /// Fails after 1 s.
    Fail { retryable: bool },
    /// Accepted, then nothing (a hung modem).
    Hang,
    /// Sent after `sent` ms, never delivered (a speaker that sends no receiver report).
    SentOnly,
}

/// Something scripted to happen at a virtual time.
#[derive(Clone, Debug)]
pub enum Script {
    /// A new alert.
    Alert(AlertPlan),
    /// An update.
    Update(AlertPlan),
    /// A cancellation.
    Cancel(AlertId),
    /// A person's reply reaches `device`.
    Reply {
        device: String,
        from: Address,
        text: String,
    },
    /// A device's health changes.
    Health { device: String, up: bool },
}

#[derive(Clone, Debug)]
enum Pending {
    Script(usize),
    Driver(DeviceEvent),
}

pub struct Sim {
    pub router: Router,
    pub now: Timestamp,
    pub transcript: String,
    pub records: Vec<Record>,
    /// Every Send handed to a driver: (time, device, attempt, to, text).
    pub sends: Vec<(Timestamp, DeviceId, AttemptId, Address, String)>,
    /// Fates per address (default: delivered).
    pub fates: HashMap<Address, Fate>,
    /// Fates per device, before those per address.
    pub device_fates: HashMap<DeviceId, Fate>,
    /// Attempts whose `Sent` the router has been told.
    sent: std::collections::HashSet<AttemptId>,
    /// Per-bearer driver delays in ms: (sent after, delivered after).
    pub delays: HashMap<Bearer, (i64, i64)>,
    /// Log attempt traffic in the transcript.
    pub verbose: bool,
    /// Batches handled so far.
    pub batches: usize,
    /// Crash after committing this batch: its commands are lost and the router is restored.
    pub crash_after: Option<usize>,
    /// Answer a Cancel of an attempt not yet sent with `Failed{retryable: false}` (as some
    /// drivers do) instead of dropping it silently.
    pub cancel_fails: bool,
    config: RouterConfig,
    script: Vec<(Timestamp, Script)>,
    pending: BTreeMap<(Timestamp, u64), Pending>,
    seq: u64,
    receipts: u64,
}

impl Sim {
    pub fn new(config: RouterConfig, script: Vec<(Timestamp, Script)>) -> Sim {
        let mut sim = Sim {
            router: Router::new(config.clone()),
            now: Timestamp::ZERO,
            transcript: String::new(),
            records: Vec::new(),
            sends: Vec::new(),
            fates: HashMap::new(),
            device_fates: HashMap::new(),
            sent: Default::default(),
            delays: HashMap::from([
                (Bearer::Sms, (2_000, 5_000)),
                (Bearer::Voice, (20_000, 25_000)),
            ]),
            verbose: true,
            batches: 0,
            crash_after: None,
            cancel_fails: false,
            config,
            script: Vec::new(),
            pending: BTreeMap::new(),
            seq: 0,
            receipts: 0,
        };
        for (i, (t, s)) in script.into_iter().enumerate() {
            sim.script.push((t, s));
            sim.push(t, Pending::Script(i));
        }
        sim
    }

    /// A driver reports `event` from `device` now (after what is already due now); for
    /// events that name attempts only known once the campaign runs, e.g. a key pressed in
    /// a call.
    pub fn device_event(&mut self, device: &str, event: DriverEvent) {
        let ev = DeviceEvent {
            device: DeviceId::from(device),
            at: self.now,
            event,
        };
        let now = self.now;
        self.push(now, Pending::Driver(ev));
    }

    fn push(&mut self, at: Timestamp, p: Pending) {
        self.seq += 1;
        self.pending.insert((at, self.seq), p);
    }

    fn line(&mut self, s: String) {
        let t = self.now.0;
        let _ = writeln!(
            self.transcript,
            "[{:02}:{:02}.{:03}] {s}",
            t / 60_000,
            (t / 1000) % 60,
            t % 1000
        );
    }

    /// Runs until nothing is left to do or `until` is reached.
    pub fn run(&mut self, until: Timestamp) {
        for _ in 0..1_000_000 {
            let timer = self.router.poll_timeout();
            let event = self.pending.keys().next().map(|k| k.0);
            let next = match (timer, event) {
                (Some(t), Some(e)) => t.min(e),
                (Some(t), None) => t,
                (None, Some(e)) => e,
                (None, None) => return,
            };
            if next > until {
                return;
            }
            self.now = next.max(self.now);
            let first = self.pending.keys().next().copied();
            match first {
                Some(k) if k.0 <= self.now => {
                    let p = self.pending.remove(&k).unwrap();
                    self.feed(p);
                }
                _ => {
                    let now = self.now;
                    self.router.handle_timeout(now);
                }
            }
            self.drain();
        }
        panic!("campaign did not settle");
    }

    fn feed(&mut self, p: Pending) {
        let now = self.now;
        match p {
            Pending::Script(i) => {
                let s = self.script[i].1.clone();
                match s {
                    Script::Alert(plan) => {
                        self.line(format!(
                            "OPERATOR issues {} ({})",
                            plan.alert.id, plan.alert.grade
                        ));
                        self.router.handle_alert(now, plan).unwrap();
                    }
                    Script::Update(plan) => {
                        self.line(format!(
                            "OPERATOR updates {} ({})",
                            plan.alert.id, plan.alert.grade
                        ));
                        self.router.handle_update(now, plan).unwrap();
                    }
                    Script::Cancel(id) => {
                        self.line(format!("OPERATOR cancels {id}"));
                        self.router.handle_cancel(now, &id, "district-ops").unwrap();
                    }
                    Script::Reply { device, from, text } => {
                        self.receipts += 1;
                        let event = DriverEvent::Inbound {
                            from,
                            text,
                            evidence: "pdu".into(),
                            sent_at: None,
                            receipt: Some(InboundReceipt(format!("sim-{}", self.receipts))),
                            in_reply_to: None,
                        };
                        let ev = DeviceEvent {
                            device: DeviceId::from(device.as_str()),
                            at: now,
                            event,
                        };
                        self.router.handle_device_event(now, ev);
                    }
                    Script::Health { device, up } => {
                        let event = DriverEvent::Health(Health {
                            up,
                            registered: up,
                            ..Health::default()
                        });
                        let ev = DeviceEvent {
                            device: DeviceId::from(device.as_str()),
                            at: now,
                            event,
                        };
                        self.router.handle_device_event(now, ev);
                    }
                }
            }
            Pending::Driver(ev) => {
                if let DriverEvent::Sent { attempt, .. } = &ev.event {
                    self.sent.insert(*attempt);
                }
                self.router.handle_device_event(now, ev)
            }
        }
    }

    fn drain(&mut self) {
        let mut batch = Vec::new();
        while let Some(o) = self.router.poll_output() {
            batch.push(o);
        }
        self.batches += 1;
        let crash = self.crash_after == Some(self.batches);
        for o in batch {
            match o {
                Output::Record(r) => {
                    if self.verbose
                        || !matches!(
                            r,
                            Record::AttemptStarted { .. } | Record::AttemptOutcome { .. }
                        )
                    {
                        let d = describe(&r);
                        self.line(d);
                    }
                    self.records.push(r);
                }
                Output::Command { device, command } if !crash => self.dispatch(device, command),
                Output::Command { .. } => {}
            }
        }
        if crash {
            self.line("CRASH: commands of this batch lost; restoring from the log".into());
            let now = self.now;
            self.router = Router::restore(self.config.clone(), self.records.clone(), now).unwrap();
            self.drain();
        }
    }

    fn dispatch(&mut self, device: DeviceId, command: DriverCommand) {
        let now = self.now;
        match command {
            DriverCommand::Send(out) => {
                if self.verbose {
                    self.line(format!(
                        "  → {device}: send {} to {} «{}»",
                        out.attempt, out.to, out.text
                    ));
                }
                self.sends.push((
                    now,
                    device.clone(),
                    out.attempt,
                    out.to.clone(),
                    out.text.clone(),
                ));
                let bearer = self
                    .config
                    .devices
                    .iter()
                    .find(|d| d.id == device)
                    .map(|d| d.caps.bearer)
                    .unwrap_or(Bearer::Sms);
                let (sent, delivered) = self.delays.get(&bearer).copied().unwrap_or((2_000, 5_000));
                let attempt = out.attempt;
                let ev = |event| DeviceEvent {
                    device: device.clone(),
                    at: now,
                    event,
                };
                self.push(now, Pending::Driver(ev(DriverEvent::Accepted { attempt })));
                let fate = self
                    .device_fates
                    .get(&device)
                    .or_else(|| self.fates.get(&out.to));
                match fate.cloned().unwrap_or(Fate::Deliver) {
                    Fate::Deliver => {
                        let reference = format!("mr{}", attempt.0);
                        self.push(
                            now + ms(sent),
                            Pending::Driver(ev(DriverEvent::Sent { attempt, reference })),
                        );
                        let evidence = "status-report".into();
                        self.push(
                            now + ms(sent + delivered),
                            Pending::Driver(ev(DriverEvent::Delivered { attempt, evidence })),
                        );
                    }
                    Fate::Fail { retryable } => {
                        let reason = if retryable {
                            "+CMS ERROR: 42 (congestion)"
                        } else {
                            "+CMS ERROR: 1 (unassigned number)"
                        };
                        let failed = DriverEvent::Failed {
                            attempt,
                            retryable,
                            reason: reason.into(),
                        };
                        self.push(now + ms(1_000), Pending::Driver(ev(failed)));
                    }
                    Fate::SentOnly => {
                        let reference = format!("ssrc{}", attempt.0);
                        self.push(
                            now + ms(sent),
                            Pending::Driver(ev(DriverEvent::Sent { attempt, reference })),
                        );
                    }
                    Fate::Hang => {}
                }
            }
            DriverCommand::Cancel(attempt) => {
                // The fake device drops what it has not reported as sent yet.
                if self.sent.contains(&attempt) {
                    self.line(format!("  → {device}: cancel {attempt} (already sent)"));
                } else {
                    self.pending.retain(|_, p| !matches!(p, Pending::Driver(DeviceEvent { event, .. }) if event_attempt(event) == Some(attempt)));
                    self.line(format!("  → {device}: cancel {attempt} (dropped)"));
                    if self.cancel_fails {
                        let failed = DriverEvent::Failed {
                            attempt,
                            retryable: false,
                            reason: "cancelled".into(),
                        };
                        let event = DeviceEvent {
                            device: device.clone(),
                            at: now,
                            event: failed,
                        };
                        self.push(now + ms(10), Pending::Driver(event));
                    }
                }
            }
            DriverCommand::Release(r) => self.line(format!("  → {device}: release {}", r.0)),
            DriverCommand::SendFrame(f) => self.line(format!(
                "  → {device}: frame {} to {} ({} bytes)",
                f.attempt,
                f.to,
                f.bytes.len()
            )),
        }
    }

    /// Per record: (alert, person, state, late, escalated_to) — what must survive a restart.
    pub fn outcome(&self) -> Vec<(String, String, DeliveryState, bool, Option<String>)> {
        let mut out = Vec::new();
        for s in self.router.alerts() {
            for d in self.router.deliveries(&s.alert.id, None).unwrap() {
                out.push((
                    s.alert.id.to_string(),
                    d.person.to_string(),
                    d.state,
                    d.late,
                    d.escalated_to.map(|p| p.to_string()),
                ));
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }
}

fn event_attempt(e: &DriverEvent) -> Option<AttemptId> {
    match e {
        DriverEvent::Accepted { attempt }
        | DriverEvent::Sent { attempt, .. }
        | DriverEvent::Delivered { attempt, .. }
        | DriverEvent::Failed { attempt, .. } => Some(*attempt),
        _ => None,
    }
}

fn ms(n: i64) -> std::time::Duration {
    std::time::Duration::from_millis(n as u64)
}

fn t(ts: Timestamp) -> String {
    format!("{:02}:{:02}", ts.0 / 60_000, (ts.0 / 1000) % 60)
}

fn routes(rs: &[tocsin_router::Route]) -> String {
    rs.iter()
        .map(|r| format!("{}:{}", r.bearer, r.to))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One readable line per record.
pub fn describe(r: &Record) -> String {
    match r {
        Record::AlertAccepted { plan, .. } => format!(
            "alert_accepted {} {} «{}» targets={}",
            plan.alert.id,
            plan.alert.grade,
            plan.alert.headline,
            plan.targets.len()
        ),
        Record::AlertUpdated { plan, .. } => format!(
            "alert_updated {} {} «{}» targets={}",
            plan.alert.id,
            plan.alert.grade,
            plan.alert.headline,
            plan.targets.len()
        ),
        Record::AlertCancelled { alert, by, .. } => format!("alert_cancelled {alert} by {by}"),
        Record::DeliveryPlanned { person, plan, .. }
        | Record::DeliveryReplanned { person, plan, .. } => format!(
            "{} {person} code={} ack={} escalate={}{} routes=[{}] fallback=[{}] window={}s{} reminders=[{}]",
            r.kind(),
            plan.code,
            plan.ack_required,
            plan.escalate,
            if plan.responsible { " responsible" } else { "" },
            routes(&plan.routes),
            routes(&plan.fallback),
            plan.window_ms / 1000,
            plan.window_from
                .map(|f| format!(" from={}", t(f)))
                .unwrap_or_default(),
            plan.reminders_ms
                .iter()
                .map(|x| format!("+{}s", x / 1000))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Record::AttemptStarted {
            person,
            attempt,
            purpose,
            bearer,
            device,
            to,
            possible_duplicate,
            ..
        } => {
            let p = match purpose {
                Purpose::Alert => "alert".to_string(),
                Purpose::DoorKnock { level } => format!("door-knock L{level}"),
                Purpose::Notice { notice } => format!("notice {notice:?}"),
            };
            format!(
                "attempt_started {attempt} {person} {p} {bearer} via {device} to {to}{}",
                if *possible_duplicate {
                    " POSSIBLE-DUPLICATE"
                } else {
                    ""
                }
            )
        }
        Record::AttemptOutcome {
            person,
            attempt,
            outcome,
            ..
        } => {
            format!(
                "attempt_outcome {attempt} {person} {}",
                serde_json::to_string(outcome).unwrap()
            )
        }
        Record::AttemptAbandoned {
            person,
            attempt,
            reason,
            possible_duplicate,
            ..
        } => {
            format!(
                "attempt_abandoned {attempt} {person} ({reason}) possible_duplicate={possible_duplicate}"
            )
        }
        Record::AttemptCancelled {
            person,
            attempt,
            device,
            reason,
            ..
        } => format!("attempt_cancelled {attempt} {person} on {device} ({reason})"),
        Record::Reminder { person, n, .. } => format!("reminder {person} #{n}"),
        Record::NextBearer {
            person,
            route,
            wait_ms,
            ..
        } => format!(
            "next_bearer {person} {}:{} wait=+{}s",
            route.bearer,
            route.to,
            wait_ms / 1000
        ),
        Record::Escalated {
            person,
            task,
            reason,
            ..
        } => format!(
            "escalated {person} → {} L{} task_code={} routes=[{}] deadline=+{}s{}",
            task.assignee,
            task.level,
            task.code,
            routes(&task.routes),
            task.deadline_ms / 1000,
            reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        Record::DeliveryClosed {
            person,
            state,
            reason,
            ..
        } => {
            format!("delivery_closed {person} {state:?} ({reason})")
        }
        Record::DeliveryWithdrawn { person, .. } => format!("delivery_withdrawn {person}"),
        Record::NoticePlanned {
            person,
            recipient,
            notice,
            route,
            ..
        } => {
            format!(
                "notice_planned {notice:?} for {person}'s record to {recipient} via {}:{}",
                route.bearer, route.to
            )
        }
        Record::Reply {
            device,
            from,
            text,
            verdict,
            ..
        } => {
            let v = match verdict {
                Verdict::Ack { person, late, .. } => {
                    format!("ACK {person}{}", if *late { " LATE" } else { "" })
                }
                Verdict::DoorKnockAccepted { person, by, .. } => {
                    format!("DOOR-KNOCK ACCEPTED {person} by {by}")
                }
                Verdict::DoorKnockConfirmed {
                    person, by, late, ..
                } => {
                    format!(
                        "DOOR-KNOCK CONFIRMED {person} by {by}{}",
                        if *late { " LATE" } else { "" }
                    )
                }
                Verdict::Duplicate { person, .. } => format!("DUPLICATE {person}"),
                Verdict::Rejected { rejection, .. } => {
                    format!("REJECTED {}", serde_json::to_string(rejection).unwrap())
                }
            };
            format!("reply via {device} from {from} «{text}» → {v}")
        }
        Record::DeviceHealth { device, up, .. } => format!("device_health {device} up={up}"),
        Record::AnnouncementPlanned {
            speaker,
            device,
            to,
            window_ms,
            ..
        } => format!(
            "announcement_planned {speaker} via {device} to {to} window={}s",
            window_ms / 1000
        ),
        Record::AnnouncementStarted {
            speaker,
            attempt,
            device,
            to,
            text,
            notice,
            ..
        } => format!(
            "announcement_started {attempt} {speaker}{} via {device} to {to} «{text}»",
            if *notice { " notice" } else { "" }
        ),
        Record::AnnouncementOutcome {
            speaker,
            attempt,
            outcome,
            ..
        } => format!(
            "announcement_outcome {attempt} {speaker} {}",
            serde_json::to_string(outcome).unwrap()
        ),
        Record::AnnouncementClosed {
            speaker,
            state,
            reason,
            ..
        } => format!("announcement_closed {speaker} {state:?} ({reason})"),
        Record::RelayStarted {
            kit,
            attempt,
            device,
            frame,
            bytes,
            ..
        } => format!("relay_started {kit} {attempt} on {device} {frame:?} {bytes}"),
        Record::RelayOutcome {
            kit,
            attempt,
            outcome,
            ..
        } => format!("relay_outcome {kit} {attempt} {outcome:?}"),
        Record::RelayFailed { kit, reason, .. } => format!("relay_failed {kit} ({reason})"),
        Record::UplinkStarted {
            attempt,
            people,
            bytes,
            ..
        } => format!("uplink_started {attempt} {people:?} {bytes}"),
        Record::UplinkOutcome {
            attempt, outcome, ..
        } => format!("uplink_outcome {attempt} {outcome:?}"),
    }
}

pub fn district() -> Vec<tocsin_router::Contact> {
    vec![
        contact(
            "p1",
            "张伟",
            Role::VillageHead,
            "大庄镇",
            vec![phone(1)],
            Some("t1"),
        ),
        contact(
            "p2",
            "李娜",
            Role::GridLead,
            "大庄镇",
            vec![phone(2)],
            Some("t1"),
        ),
        contact(
            "p3",
            "王强",
            Role::HazardWarden,
            "石门镇",
            vec![phone(3), Address::BeidouCard("0412345".into())],
            Some("t1"),
        ),
        contact(
            "p4",
            "刘洋",
            Role::ReservoirWarden,
            "石门镇",
            vec![phone(4)],
            Some("t1"),
        ),
        contact(
            "p5",
            "陈静",
            Role::VillageHead,
            "大庄镇",
            vec![phone(5)],
            Some("t1"),
        ),
        contact(
            "t1",
            "赵敏",
            Role::TownOfficial,
            "大庄镇",
            vec![phone(10)],
            Some("d1"),
        ),
        contact(
            "d1",
            "孙磊",
            Role::DistrictOfficial,
            "区应急局",
            vec![phone(11)],
            None,
        ),
        contact(
            "r1",
            "周红",
            Role::Resident,
            "大庄镇",
            vec![phone(20)],
            None,
        ),
    ]
}

pub fn reply(
    at: i64,
    device: &str,
    from: Address,
    text: String,
) -> (tocsin_core::Timestamp, Script) {
    (
        secs(at),
        Script::Reply {
            device: device.into(),
            from,
            text,
        },
    )
}

pub fn red_script() -> Vec<(tocsin_core::Timestamp, Script)> {
    let a = "red-1";
    let mut targets = vec!["p1", "p2", "p3", "p4", "p5", "r1"];
    targets.dedup();
    vec![
        (
            secs(0),
            Script::Alert(plan(
                alert(a, Grade::Red, "山洪红色预警"),
                &targets,
                &district(),
            )),
        ),
        reply(60, "gsm-1", phone(1), format!("1 {}", code(a, "p1"))),
        reply(
            90,
            "gsm-1",
            phone(2),
            format!("收到{}", code(a, "p2").as_str().to_lowercase()),
        ),
        reply(
            120,
            "bd-1",
            Address::BeidouCard("0412345".into()),
            code(a, "p3").to_string(),
        ),
        reply(360, "gsm-1", phone(4), format!("1 {}", code(a, "p4"))),
        reply(
            480,
            "gsm-1",
            phone(10),
            format!("1 {} 已上门", task_code(a, "p5")),
        ),
    ]
}
