//! Field-crew check-ins over the mesh.
//!
//! Crews (people with role `field_crew` and a Meshtastic node in the directory) carry mesh
//! radios. Every packet the gateway's radio hears from a crew's node counts as a check-in
//! and, when it carries one, updates the crew's position. A crew that stays silent longer
//! than its policy's `period + grace` has *missed* its check-in: the engine turns that
//! into an alert of its own (kind `checkin`) to the crew's supervisor, through the same
//! 叫应 machinery as any warning. A crew heard again later has its clock reset; it is
//! reported again only after its next full silence.
//!
//! [`CheckIns`] is the sans-IO state machine (time is an argument). The thin task
//! [`forward_radio_nodes`] turns a radio's node table into news about every node in it;
//! the engine hands crews' news to [`CheckIns`] and everyone's to [`HeardNodes`], which
//! says whose node has not been heard lately, so that [`stale_mesh_to_leave_out`] can
//! have such a person tried on their BeiDou card or SBD modem first.
//!
//! Positions and clocks are soft state: nothing here is persisted beyond the alert
//! records a miss produces. After a restart every crew's clock starts again at the
//! daemon's start, and a crew's position is unknown until its radio is heard (or the
//! radio's node database reports it at the handshake).

use crate::config::{CheckinsConfig, CrewCheckin};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;
use tocsin_core::directory::Directory;
use tocsin_core::{Address, Alert, AlertId, AreaSpec, Bearer, Grade, PersonId, Role, Timestamp};
use tocsin_meshtastic::proto::MeshNode;
use tocsin_router::plan::NamedAreaRef;
use tocsin_router::{AlertPlan, Contact, Target, TargetReason};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The alert kind of a missed check-in.
pub const CHECKIN_KIND: &str = "checkin";

/// Who issues missed-check-in alerts (shown as the alert's issuer).
pub const CHECKIN_ISSUER: &str = "tocsind:checkins";

/// Radius of the area drawn around a crew's last position on its missed-check-in alert.
const LAST_POSITION_RADIUS_M: f64 = 1_000.0;

/// Longest crew name put into a headline (the API allows 60 characters per headline).
const HEADLINE_NAME_CHARS: usize = 40;

/// How often a crew must be heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckInPolicy {
    /// Expected time between two check-ins.
    pub period: Duration,
    /// Extra time allowed after the period before the check-in counts as missed.
    pub grace: Duration,
}

impl CheckInPolicy {
    /// How long a crew may stay silent before it has missed its check-in.
    pub fn allowance(&self) -> Duration {
        self.period.saturating_add(self.grace)
    }
}

/// A crew's radio was heard (a check-in), or reported a position.
#[derive(Clone, Debug, PartialEq)]
pub struct Heard {
    /// The crew member.
    pub person: PersonId,
    /// When the radio was heard, on the gateway's clock; `None` when only a position is
    /// known (a node database entry without a time), which is not a check-in.
    pub heard_at: Option<Timestamp>,
    /// `[lon, lat]`, when the packet or database entry carried one.
    pub position: Option<[f64; 2]>,
}

/// A crew that missed its check-in.
#[derive(Clone, Debug, PartialEq)]
pub struct Missed {
    /// The crew member.
    pub person: PersonId,
    /// When their radio was last heard (`None`: never, as far as this gateway knows).
    pub last_heard: Option<Timestamp>,
    /// Their last known `[lon, lat]`.
    pub last_position: Option<[f64; 2]>,
    /// When the check-in became overdue.
    pub due: Timestamp,
}

/// One crew's check-in state.
#[derive(Clone, Debug)]
struct Crew {
    policy: CheckInPolicy,
    last_heard: Option<Timestamp>,
    position: Option<[f64; 2]>,
    /// When the current silence becomes a miss; `None` once it has been reported missed
    /// (until the crew is heard again).
    due: Option<Timestamp>,
}

/// Check-in clocks for every crew: fed heard facts and timeouts, yields missed check-ins.
#[derive(Clone, Debug)]
pub struct CheckIns {
    /// The daemon's start: no clock starts earlier, so a restart never reports a miss for
    /// a silence that began before the gateway was watching.
    started: Timestamp,
    crews: BTreeMap<PersonId, Crew>,
    /// Armed deadlines, earliest first.
    deadlines: BTreeSet<(Timestamp, PersonId)>,
    missed: VecDeque<Missed>,
}

impl CheckIns {
    /// No crews yet; every clock starts at `started` at the earliest.
    pub fn new(started: Timestamp) -> CheckIns {
        CheckIns {
            started,
            crews: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            missed: VecDeque::new(),
        }
    }

    /// Watches a crew member with this policy; a crew never heard is due `allowance` after
    /// the start. Adding a crew again replaces its policy and restarts its clock.
    pub fn add_crew(&mut self, person: PersonId, policy: CheckInPolicy) {
        let due = self.started + policy.allowance();
        if let Some(old) = self.crews.get(&person).and_then(|c| c.due) {
            self.deadlines.remove(&(old, person.clone()));
        }
        self.deadlines.insert((due, person.clone()));
        self.crews.insert(
            person,
            Crew {
                policy,
                last_heard: None,
                position: None,
                due: Some(due),
            },
        );
    }

    /// Whether this person is a watched crew member.
    pub fn is_crew(&self, person: &PersonId) -> bool {
        self.crews.contains_key(person)
    }

    /// How many crew members are watched.
    pub fn len(&self) -> usize {
        self.crews.len()
    }

    /// Whether no crew is watched.
    pub fn is_empty(&self) -> bool {
        self.crews.is_empty()
    }

    /// Takes a heard fact. A time later than the last one heard resets the crew's clock
    /// (a time in the future is taken as `now`); an older one changes nothing, so a radio
    /// database replayed at a reconnect cannot move a clock back. Returns whether anything
    /// changed. Unknown people are ignored.
    pub fn handle_heard(&mut self, now: Timestamp, heard: Heard) -> bool {
        let Some(crew) = self.crews.get_mut(&heard.person) else {
            return false;
        };
        let Some(at) = heard.heard_at.map(|t| t.min(now)) else {
            // A position without a time only fills in what is not known yet.
            if crew.position.is_none() && heard.position.is_some() {
                crew.position = heard.position;
                return true;
            }
            return false;
        };
        if crew.last_heard.is_some_and(|last| at <= last) {
            if crew.last_heard == Some(at) && heard.position.is_some() {
                let changed = crew.position != heard.position;
                crew.position = heard.position;
                return changed;
            }
            return false;
        }
        crew.last_heard = Some(at);
        if heard.position.is_some() {
            crew.position = heard.position;
        }
        let due = at.max(self.started) + crew.policy.allowance();
        let overdue = crew.due.is_none();
        if overdue && due <= now {
            // Still silent past its deadline and already reported: no second alert.
            return true;
        }
        if let Some(old) = crew.due.replace(due) {
            self.deadlines.remove(&(old, heard.person.clone()));
        }
        self.deadlines.insert((due, heard.person));
        true
    }

    /// Reports every crew whose deadline is at or before `now` as missed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some((due, person)) = self.deadlines.first().cloned() {
            if due > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(crew) = self.crews.get_mut(&person) else {
                continue;
            };
            crew.due = None;
            self.missed.push_back(Missed {
                person,
                last_heard: crew.last_heard,
                last_position: crew.position,
                due,
            });
        }
    }

    /// The next missed check-in to act on.
    pub fn poll_missed(&mut self) -> Option<Missed> {
        self.missed.pop_front()
    }

    /// When [`CheckIns::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Every crew member with a known position.
    pub fn positions(&self) -> impl Iterator<Item = (&PersonId, [f64; 2])> {
        self.crews
            .iter()
            .filter_map(|(p, c)| c.position.map(|pos| (p, pos)))
    }
}

/// The crews a directory holds under a `[checkins]` config: the check-in clocks (started
/// at `started`), the crew members by radio, and what an operator should fix (an override
/// naming no crew, a crew nobody would be told about). Crews are people with role
/// `field_crew` and at least one mesh node; a crew without a mesh radio cannot check in
/// and is not watched.
pub fn watch_crews(
    cfg: &CheckinsConfig,
    directory: &Directory,
    started: Timestamp,
) -> (CheckIns, CrewRadios, Vec<String>) {
    let mut checkins = CheckIns::new(started);
    let mut radios = CrewRadios::new();
    let mut problems = Vec::new();
    let overrides: HashMap<&str, &CrewCheckin> =
        cfg.crews.iter().map(|c| (c.person.as_str(), c)).collect();
    for p in directory.people().with_role(Role::FieldCrew) {
        if p.role != Role::FieldCrew {
            continue;
        }
        let nodes: Vec<u32> = p
            .addresses
            .iter()
            .filter_map(|a| match a {
                Address::MeshNode(n) => Some(*n),
                _ => None,
            })
            .collect();
        if nodes.is_empty() {
            continue;
        }
        let own = overrides.get(p.id.as_str());
        let policy = CheckInPolicy {
            period: Duration::from_secs(own.and_then(|o| o.period_secs).unwrap_or(cfg.period_secs)),
            grace: Duration::from_secs(own.and_then(|o| o.grace_secs).unwrap_or(cfg.grace_secs)),
        };
        checkins.add_crew(p.id.clone(), policy);
        for n in nodes {
            radios.entry(n).or_default().push(p.id.clone());
        }
        match &p.supervisor {
            None => problems.push(format!(
                "crew member {} has no supervisor: a missed check-in alerts nobody",
                p.id
            )),
            Some(s) if directory.person(s).is_none() => problems.push(format!(
                "crew member {}: supervisor {s} is not in the directory",
                p.id
            )),
            Some(_) => {}
        }
    }
    for (i, c) in cfg.crews.iter().enumerate() {
        if !checkins.is_crew(&PersonId::from(c.person.as_str())) {
            problems.push(format!(
                "checkins.crews[{i}].person: {:?} is not a field_crew with a mesh node in the directory",
                c.person
            ));
        }
    }
    (checkins, radios, problems)
}

/// Why a missed check-in could not become an alert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MissedAlertError {
    /// The crew member is no longer in the directory.
    #[error("crew member {0} is not in the directory")]
    UnknownCrew(PersonId),
    /// The crew member has no supervisor to tell.
    #[error("crew member {0} has no supervisor to alert")]
    NoSupervisor(PersonId),
    /// The supervisor named in the directory does not exist.
    #[error("supervisor {supervisor} of crew member {crew} is not in the directory")]
    UnknownSupervisor {
        /// The crew member.
        crew: PersonId,
        /// The missing supervisor.
        supervisor: PersonId,
    },
}

/// The alert for a missed check-in: its only target is the crew member's supervisor,
/// who must acknowledge it like any warning and is escalated up their own chain.
///
/// The supervisor is targeted as `Responsible` for the crew's first named area (they
/// answer for their crew there); a crew with no named area makes it `Located` (the
/// supervisor's own role still decides that an ack is required). The alert's area is a
/// 1 km circle around the crew's last position when one is known, else the crew's first
/// named area, else none.
pub fn missed_alert(
    directory: &Directory,
    missed: &Missed,
    grade: Grade,
    id: AlertId,
    now: Timestamp,
) -> Result<AlertPlan, MissedAlertError> {
    let crew = directory
        .person(&missed.person)
        .ok_or_else(|| MissedAlertError::UnknownCrew(missed.person.clone()))?;
    let sup_id = crew
        .supervisor
        .as_ref()
        .ok_or_else(|| MissedAlertError::NoSupervisor(crew.id.clone()))?;
    let supervisor =
        directory
            .person(sup_id)
            .ok_or_else(|| MissedAlertError::UnknownSupervisor {
                crew: crew.id.clone(),
                supervisor: sup_id.clone(),
            })?;
    let first_area = crew.areas.first().and_then(|a| directory.area(a));
    let reason = match first_area {
        Some(a) => TargetReason::Responsible { area: a.id.clone() },
        None => TargetReason::Located,
    };
    let area = match (missed.last_position, first_area) {
        (Some(center), _) => vec![AreaSpec::Circle {
            center,
            radius_m: LAST_POSITION_RADIUS_M,
        }],
        (None, Some(a)) => vec![AreaSpec::Named { id: a.id.clone() }],
        (None, None) => Vec::new(),
    };
    let mut contacts = vec![contact(&supervisor)];
    contacts.extend(
        directory
            .supervisor_chain(&supervisor.id)
            .iter()
            .map(contact),
    );
    let name: String = crew.name.chars().take(HEADLINE_NAME_CHARS).collect();
    Ok(AlertPlan {
        alert: Alert {
            id,
            grade,
            kind: CHECKIN_KIND.to_owned(),
            headline: format!("外勤组 {name} 未按时报到"),
            text: missed_text(&crew.name, &crew.id, missed),
            area,
            exercise: false,
            issuer: CHECKIN_ISSUER.to_owned(),
            accepted_at: now,
            reference: None,
        },
        targets: vec![Target {
            person: supervisor.id.clone(),
            reason,
        }],
        contacts,
        areas: first_area.map(NamedAreaRef::from).into_iter().collect(),
        speakers: Vec::new(),
        kits: Vec::new(),
        uplink: None,
    })
}

fn contact(p: &tocsin_core::Person) -> Contact {
    Contact {
        person: p.id.clone(),
        name: p.name.clone(),
        role: p.role,
        town: p.town.clone(),
        addresses: p.addresses.clone(),
        supervisor: p.supervisor.clone(),
    }
}

/// The warning text: who, when last heard, where last seen, what to do.
fn missed_text(name: &str, id: &PersonId, missed: &Missed) -> String {
    let heard = match missed.last_heard {
        Some(t) => format!("最后报到 {}（北京时间）", beijing_time(t)),
        None => "本网关启动以来未收到其报到".to_owned(),
    };
    let place = match missed.last_position {
        Some([lon, lat]) => format!("最后位置 北纬{lat:.5} 东经{lon:.5}"),
        None => "位置不明".to_owned(),
    };
    format!("外勤组 {name}（{id}）{heard}，{place}。请立即联系确认其安全。")
}

/// `YYYY-MM-DD HH:MM` in UTC+8 (China has one time zone and no daylight saving).
fn beijing_time(t: Timestamp) -> String {
    let secs = t.as_millis().div_euclid(1000).saturating_add(8 * 3600);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        of_day / 3600,
        (of_day % 3600) / 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A mesh node heard, as a radio's forwarder reports it: how long ago in real time (so
/// that the engine can place it on its own, possibly sped-up, clock), how many hops away
/// and where.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeHeard {
    /// The node number.
    pub num: u32,
    /// How long ago, in real time, the radio last heard the node; `None` if never.
    pub ago: Option<Duration>,
    /// Hops away it was last heard, when the radio knows.
    pub hops: Option<u32>,
    /// `[lon, lat]`, when known.
    pub position: Option<[f64; 2]>,
}

impl NodeHeard {
    /// When the node was last heard on the gateway's clock, which runs `speed` times real
    /// time; `None` if never.
    pub fn heard_at(&self, now: Timestamp, speed: f64) -> Option<Timestamp> {
        self.ago.map(|ago| {
            let ms = ago.as_secs_f64() * 1000.0 * speed;
            // Casts saturate; an absurd age lands far in the past, which is what it is.
            Timestamp(now.0.saturating_sub(ms as i64))
        })
    }

    /// The check-in fact this is for a crew member carrying the node.
    pub fn for_crew(&self, person: PersonId, now: Timestamp, speed: f64) -> Heard {
        Heard {
            person,
            heard_at: self.heard_at(now, speed),
            position: self.position,
        }
    }
}

/// Crew members by the node number of the radio they carry.
pub type CrewRadios = BTreeMap<u32, Vec<PersonId>>;

/// What one node's table entry said when last reported: last heard, hops, position.
pub type NodeEntry = (Option<Timestamp>, Option<u32>, Option<[f64; 2]>);

/// What a radio's node table says that is new since `seen`: one fact per node whose entry
/// (last heard, hops, position) changed, for every node in the table, crews or not. `now`
/// and the table's `last_heard` are on the driver's real-time clock.
pub fn node_news(
    table: &[MeshNode],
    seen: &mut HashMap<u32, NodeEntry>,
    now: Timestamp,
) -> Vec<NodeHeard> {
    let mut news = Vec::new();
    for node in table {
        let position = node
            .position
            .map(|p| [p.longitude, p.latitude])
            .filter(|&pos| tocsin_core::area::validate_position(pos, String::new).is_ok());
        let entry = (node.last_heard, node.hops_away, position);
        if seen.get(&node.num) == Some(&entry) {
            continue;
        }
        seen.insert(node.num, entry);
        news.push(NodeHeard {
            num: node.num,
            ago: node.last_heard.map(|t| now.since(t)),
            hops: node.hops_away,
            position,
        });
    }
    news
}

/// Depth of the channel from the radios' forwarders into the engine. A full channel only
/// delays a forwarder; the node table it watches keeps the latest state meanwhile.
pub const RADIO_HEARD_QUEUE: usize = 64;

/// Follows one radio's node table and sends the engine what is new about every node in
/// it, until `cancel` fires, the radio's task ends or the engine stops listening. An
/// empty table (the radio not connected yet) sends nothing.
pub async fn forward_radio_nodes(
    mut nodes: watch::Receiver<Vec<MeshNode>>,
    out: mpsc::Sender<Vec<NodeHeard>>,
    cancel: CancellationToken,
) {
    // The driver's clock: its `last_heard` values are on it.
    let clock = tocsin_meshtastic::io::Clock::start();
    let mut seen = HashMap::new();
    loop {
        let news = {
            let table = nodes.borrow_and_update();
            node_news(&table, &mut seen, clock.now())
        };
        if !news.is_empty() && out.send(news).await.is_err() {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = nodes.changed() => if changed.is_err() { return },
        }
    }
}

/// What the gateway knows of one mesh node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeState {
    /// Latest time any radio heard it, on the gateway's clock; `None`: in a table, never
    /// heard.
    pub last_heard: Option<Timestamp>,
    /// Hops away when last heard (as reported with the latest news).
    pub hops: Option<u32>,
}

/// Whether a node is worth trying first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// No radio has handed over a node table yet: the gateway knows nothing and judges
    /// nothing (the mesh is tried as the policy says).
    Unknown,
    /// Heard within the stale time.
    Fresh,
    /// Not heard within the stale time, or never: in no radio's table, or in one with no
    /// time heard.
    Stale,
}

/// Last heard and hops of every mesh node the radios' tables hold (soft state, never
/// persisted), and the rule that says which nodes are stale.
///
/// Decision on "never heard": once any radio has handed over its node table, a node in
/// no table (or in one without a time heard) counts as stale. A Meshtastic radio keeps
/// every node it has heard in its database, across its own reboots, so a node absent
/// from it has not been in range of this gateway; before the first table the gateway
/// knows nothing and leaves the mesh where the policy puts it. Ages are the radios':
/// a node heard two hours before the daemon started is two hours old (reachability is
/// about the air, not about this process). Times from several radios keep the latest.
#[derive(Clone, Debug)]
pub struct HeardNodes {
    stale_after: Duration,
    table_received: bool,
    nodes: BTreeMap<u32, NodeState>,
}

impl HeardNodes {
    /// Nothing heard yet; a node silent for longer than `stale_after` is stale.
    pub fn new(stale_after: Duration) -> HeardNodes {
        HeardNodes {
            stale_after,
            table_received: false,
            nodes: BTreeMap::new(),
        }
    }

    /// Takes one node's news from a radio's table: `heard_at` on the gateway's clock (a
    /// time in the future is taken as `now`). An older time than one already known
    /// (another radio, or a database replayed at a reconnect) keeps the newer one; hops
    /// follow the newest time.
    pub fn handle_heard(
        &mut self,
        now: Timestamp,
        num: u32,
        heard_at: Option<Timestamp>,
        hops: Option<u32>,
    ) {
        self.table_received = true;
        let heard_at = heard_at.map(|t| t.min(now));
        let state = self.nodes.entry(num).or_insert(NodeState {
            last_heard: None,
            hops: None,
        });
        match (state.last_heard, heard_at) {
            (Some(known), Some(at)) if at < known => {}
            (Some(_), None) => {}
            _ => {
                state.last_heard = heard_at.or(state.last_heard);
                if hops.is_some() {
                    state.hops = hops;
                }
            }
        }
    }

    /// What is known of a node.
    pub fn node(&self, num: u32) -> Option<NodeState> {
        self.nodes.get(&num).copied()
    }

    /// Whether the node is worth trying first at `now` (see the type's docs).
    pub fn freshness(&self, num: u32, now: Timestamp) -> Freshness {
        if !self.table_received {
            return Freshness::Unknown;
        }
        match self.nodes.get(&num).and_then(|s| s.last_heard) {
            Some(t) if now.since(t) <= self.stale_after => Freshness::Fresh,
            _ => Freshness::Stale,
        }
    }
}

/// The stale mesh nodes to leave out of one person's contact addresses, so that the
/// router tries them on another bearer first; empty when nothing would change for the
/// better.
///
/// The router's `best_of` picks the first bearer in the *policy's* order for which the
/// person has an address and the gateway a device; the order of a person's addresses
/// does not matter. So the one honest lever the plan has is the address list itself:
/// - stale nodes are left out when the person also has a fresh node (mesh is still
///   tried, on the node that is heard);
/// - otherwise they are left out only when `best_of` would pick the mesh and, without
///   it, would pick BeiDou or SBD instead (the person has that address, the gateway that
///   device);
/// - a person whose mesh node is their only off-grid way keeps it (still tried); mesh in
///   `parallel` is tried alongside the rest anyway and is kept too; so is every node
///   while no radio has handed over its table.
///
/// What leaving a node out costs: that alert never tries it (it is not in its fallbacks
/// either), and a reply sent from it later is not recognised as this person's for that
/// alert (recorded as from an unknown sender) unless another open alert lists the node.
pub fn stale_mesh_to_leave_out(
    addresses: &[Address],
    policy: &tocsin_router::policy::ResolvedPolicy,
    has_device: impl Fn(Bearer) -> bool,
    freshness: impl Fn(u32) -> Freshness,
) -> Vec<u32> {
    if !has_device(Bearer::Mesh) || policy.parallel.contains(&Bearer::Mesh) {
        return Vec::new();
    }
    let (stale, fresh): (Vec<u32>, Vec<u32>) = addresses
        .iter()
        .filter_map(|a| match a {
            Address::MeshNode(n) => Some(*n),
            _ => None,
        })
        .partition(|n| freshness(*n) == Freshness::Stale);
    if stale.is_empty() {
        return Vec::new();
    }
    if !fresh.is_empty() {
        return stale;
    }
    let usable = |b: Bearer, with_mesh: bool| {
        (with_mesh || b != Bearer::Mesh) && has_device(b) && addresses.iter().any(|a| a.serves(b))
    };
    // As the router does: bearers already tried in parallel are not picked again.
    let pick = |with_mesh: bool| {
        policy
            .best_of
            .iter()
            .copied()
            .filter(|b| !(policy.parallel.contains(b) && usable(*b, with_mesh)))
            .find(|b| usable(*b, with_mesh))
    };
    match (pick(true), pick(false)) {
        (Some(Bearer::Mesh), Some(Bearer::Beidou | Bearer::Sbd)) => stale,
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_core::{AreaId, NamedArea, Person, PhoneNumber};
    use tocsin_meshtastic::proto::NodePosition;

    const MIN: Duration = Duration::from_secs(60);

    fn policy(period_min: u64, grace_min: u64) -> CheckInPolicy {
        CheckInPolicy {
            period: MIN * period_min as u32,
            grace: MIN * grace_min as u32,
        }
    }

    fn at(min: u64) -> Timestamp {
        Timestamp::ZERO + MIN * min as u32
    }

    fn heard(p: &str, min: u64, pos: Option<[f64; 2]>) -> Heard {
        Heard {
            person: PersonId::from(p),
            heard_at: Some(at(min)),
            position: pos,
        }
    }

    fn position(c: &CheckIns, person: &str) -> Option<[f64; 2]> {
        c.positions()
            .find(|(p, _)| p.as_str() == person)
            .map(|(_, pos)| pos)
    }

    fn missed_all(c: &mut CheckIns) -> Vec<Missed> {
        std::iter::from_fn(|| c.poll_missed()).collect()
    }

    #[test]
    fn a_crew_never_heard_is_missed_period_plus_grace_after_the_start() {
        let mut c = CheckIns::new(at(0));
        c.add_crew(PersonId::from("F1"), policy(30, 10));
        assert_eq!(c.poll_timeout(), Some(at(40)));
        c.handle_timeout(at(39));
        assert!(missed_all(&mut c).is_empty());
        c.handle_timeout(at(40));
        let m = missed_all(&mut c);
        assert_eq!(
            m,
            vec![Missed {
                person: PersonId::from("F1"),
                last_heard: None,
                last_position: None,
                due: at(40),
            }]
        );
        // Reported once: no deadline left, no second miss while the crew stays silent.
        assert_eq!(c.poll_timeout(), None);
        c.handle_timeout(at(500));
        assert!(missed_all(&mut c).is_empty());
    }

    #[test]
    fn hearing_a_crew_resets_its_clock_and_keeps_the_last_position() {
        let mut c = CheckIns::new(at(0));
        c.add_crew(PersonId::from("F1"), policy(30, 10));
        c.add_crew(PersonId::from("F2"), policy(60, 0));
        assert!(c.handle_heard(at(25), heard("F1", 25, Some([116.1, 40.2]))));
        assert_eq!(c.poll_timeout(), Some(at(60)), "F2 at 60, F1 now at 65");
        c.handle_timeout(at(60));
        assert_eq!(missed_all(&mut c)[0].person, PersonId::from("F2"));
        // A packet without a position keeps the last one.
        assert!(c.handle_heard(at(50), heard("F1", 50, None)));
        c.handle_timeout(at(89));
        assert!(missed_all(&mut c).is_empty());
        c.handle_timeout(at(90));
        let m = missed_all(&mut c);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].last_heard, Some(at(50)));
        assert_eq!(m[0].last_position, Some([116.1, 40.2]));
        assert_eq!(position(&c, "F1"), Some([116.1, 40.2]));
    }

    #[test]
    fn a_missed_crew_heard_again_is_watched_again() {
        let mut c = CheckIns::new(at(0));
        c.add_crew(PersonId::from("F1"), policy(30, 10));
        c.handle_timeout(at(40));
        assert_eq!(missed_all(&mut c).len(), 1);
        assert!(c.handle_heard(at(70), heard("F1", 70, None)));
        assert_eq!(c.poll_timeout(), Some(at(110)));
        c.handle_timeout(at(110));
        assert_eq!(missed_all(&mut c)[0].last_heard, Some(at(70)));
    }

    #[test]
    fn old_news_neither_moves_a_clock_back_nor_raises_a_second_alert() {
        let mut c = CheckIns::new(at(100));
        c.add_crew(PersonId::from("F1"), policy(30, 10));
        // The radio's database says it heard F1 long before the daemon started: the
        // clock still starts at the start.
        assert!(c.handle_heard(at(100), heard("F1", 5, Some([116.0, 40.0]))));
        assert_eq!(c.poll_timeout(), Some(at(140)));
        assert!(c.handle_heard(at(120), heard("F1", 120, None)));
        // The same database replayed at a reconnect changes nothing.
        assert!(!c.handle_heard(at(121), heard("F1", 5, Some([117.0, 41.0]))));
        assert_eq!(c.poll_timeout(), Some(at(160)));
        assert_eq!(position(&c, "F1"), Some([116.0, 40.0]));
        c.handle_timeout(at(160));
        assert_eq!(missed_all(&mut c).len(), 1);
        // A newer fact that is itself already overdue does not report the same silence
        // twice.
        assert!(c.handle_heard(at(300), heard("F1", 130, None)));
        assert_eq!(c.poll_timeout(), None);
        c.handle_timeout(at(300));
        assert!(missed_all(&mut c).is_empty());
    }

    #[test]
    fn a_time_in_the_future_counts_as_now_and_strangers_are_ignored() {
        let mut c = CheckIns::new(at(0));
        c.add_crew(PersonId::from("F1"), policy(30, 0));
        assert!(c.handle_heard(at(10), heard("F1", 1_000, None)));
        assert_eq!(c.poll_timeout(), Some(at(40)));
        assert!(!c.handle_heard(at(10), heard("X9", 10, Some([1.0, 1.0]))));
        assert!(!c.is_crew(&PersonId::from("X9")));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_position_without_a_time_only_fills_in_the_unknown() {
        let mut c = CheckIns::new(at(0));
        c.add_crew(PersonId::from("F1"), policy(30, 0));
        let pos_only = |pos| Heard {
            person: PersonId::from("F1"),
            heard_at: None,
            position: Some(pos),
        };
        assert!(c.handle_heard(at(1), pos_only([116.0, 40.0])));
        assert!(!c.handle_heard(at(2), pos_only([117.0, 41.0])));
        assert_eq!(
            c.positions().collect::<Vec<_>>(),
            vec![(&PersonId::from("F1"), [116.0, 40.0])]
        );
        // Not a check-in: the clock is unchanged.
        assert_eq!(c.poll_timeout(), Some(at(30)));
    }

    fn directory() -> Directory {
        let phone = |n: &str| Address::Phone(PhoneNumber::parse(n, "86").unwrap());
        let person = |id: &str, role, sup: Option<&str>, areas: Vec<&str>, addr| Person {
            id: PersonId::from(id),
            name: format!("名{id}"),
            role,
            supervisor: sup.map(PersonId::from),
            areas: areas.into_iter().map(AreaId::from).collect(),
            location: Some([116.05, 40.05]),
            town: "石门镇".into(),
            addresses: vec![addr],
        };
        let area = NamedArea {
            id: AreaId::from("v-1"),
            name: "王家沟村".into(),
            kind: tocsin_core::AreaKind::Village,
            town: "石门镇".into(),
            geometry: AreaSpec::Circle {
                center: [116.05, 40.05],
                radius_m: 500.0,
            },
        };
        Directory::new(
            vec![
                person(
                    "d1",
                    Role::DistrictOfficial,
                    None,
                    vec![],
                    phone("+8619900000001"),
                ),
                person(
                    "t1",
                    Role::TownOfficial,
                    Some("d1"),
                    vec![],
                    phone("+8619900000002"),
                ),
                person(
                    "F1",
                    Role::FieldCrew,
                    Some("t1"),
                    vec!["v-1"],
                    Address::MeshNode(7),
                ),
                person("F2", Role::FieldCrew, None, vec![], Address::MeshNode(8)),
                person(
                    "F3",
                    Role::FieldCrew,
                    Some("t1"),
                    vec![],
                    Address::MeshNode(9),
                ),
            ],
            vec![area],
        )
        .unwrap()
    }

    #[test]
    fn a_miss_becomes_an_alert_to_the_supervisor_with_the_escalation_chain() {
        let dir = directory();
        let missed = Missed {
            person: PersonId::from("F1"),
            // 2024-03-01 02:30 UTC is 10:30 in Beijing.
            last_heard: Some(Timestamp(1_709_260_200_000)),
            last_position: Some([116.12345, 40.54321]),
            due: Timestamp(1_709_262_000_000),
        };
        let plan = missed_alert(
            &dir,
            &missed,
            Grade::Orange,
            AlertId::from("a-1"),
            Timestamp(1_709_262_000_000),
        )
        .unwrap();
        assert_eq!(plan.alert.kind, "checkin");
        assert_eq!(plan.alert.grade, Grade::Orange);
        assert_eq!(plan.alert.headline, "外勤组 名F1 未按时报到");
        assert_eq!(
            plan.alert.text,
            "外勤组 名F1（F1）最后报到 2024-03-01 10:30（北京时间），最后位置 北纬40.54321 东经116.12345。请立即联系确认其安全。"
        );
        assert_eq!(
            plan.targets,
            vec![Target {
                person: PersonId::from("t1"),
                reason: TargetReason::Responsible {
                    area: AreaId::from("v-1")
                },
            }]
        );
        let contacts: Vec<&str> = plan.contacts.iter().map(|c| c.person.as_str()).collect();
        assert_eq!(contacts, ["t1", "d1"]);
        assert_eq!(
            plan.alert.area,
            vec![AreaSpec::Circle {
                center: [116.12345, 40.54321],
                radius_m: 1_000.0
            }]
        );
        assert_eq!(plan.areas[0].name, "王家沟村");
    }

    #[test]
    fn a_crew_never_heard_without_area_is_reported_located_without_position() {
        let dir = directory();
        let missed = Missed {
            person: PersonId::from("F3"),
            last_heard: None,
            last_position: None,
            due: at(40),
        };
        let plan = missed_alert(&dir, &missed, Grade::Red, AlertId::from("a"), at(40)).unwrap();
        assert_eq!(plan.targets[0].reason, TargetReason::Located);
        assert!(plan.alert.area.is_empty());
        assert!(
            plan.alert.text.contains("未收到其报到"),
            "{}",
            plan.alert.text
        );
        assert!(plan.alert.text.contains("位置不明"), "{}", plan.alert.text);
        let no_sup = Missed {
            person: PersonId::from("F2"),
            ..missed.clone()
        };
        assert_eq!(
            missed_alert(&dir, &no_sup, Grade::Red, AlertId::from("b"), at(40)),
            Err(MissedAlertError::NoSupervisor(PersonId::from("F2")))
        );
        let gone = Missed {
            person: PersonId::from("F9"),
            ..missed
        };
        assert!(matches!(
            missed_alert(&dir, &gone, Grade::Red, AlertId::from("c"), at(40)),
            Err(MissedAlertError::UnknownCrew(_))
        ));
    }

    #[test]
    fn crews_with_mesh_radios_are_watched_with_their_own_policy() {
        let dir = directory();
        let cfg = CheckinsConfig {
            period_secs: 1800,
            grace_secs: 600,
            crews: vec![
                CrewCheckin {
                    person: "F3".into(),
                    period_secs: Some(600),
                    grace_secs: None,
                },
                CrewCheckin {
                    person: "t1".into(),
                    period_secs: Some(600),
                    grace_secs: None,
                },
            ],
            ..CheckinsConfig::default()
        };
        let (c, radios, problems) = watch_crews(&cfg, &dir, at(0));
        assert_eq!(c.len(), 3);
        assert_eq!(radios.get(&9), Some(&vec![PersonId::from("F3")]));
        // F3's own period: due at 600 + 600 s; F1 and F2 at 1800 + 600 s.
        assert_eq!(c.poll_timeout(), Some(at(20)));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("F2") && problems[0].contains("no supervisor"));
        assert!(problems[1].contains("checkins.crews[1].person"));
    }

    #[test]
    fn dates_in_beijing_time() {
        assert_eq!(beijing_time(Timestamp::ZERO), "1970-01-01 08:00");
        // 2000-02-29 23:59:59 UTC is already 1 March in Beijing.
        assert_eq!(beijing_time(Timestamp(951_868_799_000)), "2000-03-01 07:59");
        assert_eq!(beijing_time(Timestamp(-1_000)), "1970-01-01 07:59");
    }

    fn node(num: u32, heard: Option<i64>, pos: Option<(f64, f64)>) -> MeshNode {
        let mut n: MeshNode = serde_json::from_value(serde_json::json!({
            "num": num, "long_name": "", "short_name": "", "last_heard": null, "snr": null,
            "hops_away": null, "position": null, "has_public_key": false
        }))
        .unwrap();
        n.last_heard = heard.map(Timestamp);
        n.position = pos.map(|(lat, lon)| NodePosition {
            latitude: lat,
            longitude: lon,
            altitude: None,
        });
        n
    }

    #[test]
    fn the_node_table_yields_news_about_every_node_only_when_it_changes() {
        let mut seen = HashMap::new();
        let now = Timestamp(100_000);
        let mut far = node(99, Some(99_000), None);
        far.hops_away = Some(2);
        let table = vec![node(7, Some(40_000), Some((40.5, 116.2))), far.clone()];
        let news = node_news(&table, &mut seen, now);
        assert_eq!(news.len(), 2, "crews or not, every node is news");
        assert_eq!(news[0].num, 7);
        assert_eq!(news[0].ago, Some(Duration::from_secs(60)));
        assert_eq!(news[0].position, Some([116.2, 40.5]));
        assert_eq!((news[1].num, news[1].hops), (99, Some(2)));
        assert_eq!(news[1].ago, Some(Duration::from_secs(1)));
        assert!(node_news(&table, &mut seen, now).is_empty());
        // Only the hops changed: still news (the mesh around the node moved).
        far.hops_away = Some(0);
        let news = node_news(&[far], &mut seen, now);
        assert_eq!((news.len(), news[0].hops), (1, Some(0)));
        // A fresh packet, no fix (an impossible position is dropped).
        let table = vec![node(7, Some(100_000), Some((95.0, 116.2)))];
        let news = node_news(&table, &mut seen, now);
        assert_eq!(news[0].ago, Some(Duration::ZERO));
        assert_eq!(news[0].position, None);
        // On a clock 60 times real time, one real minute ago is an hour ago.
        let h = news[0].for_crew(PersonId::from("F1"), Timestamp(10_000_000), 60.0);
        assert_eq!(h.heard_at, Some(Timestamp(10_000_000)));
        let minute_ago = NodeHeard {
            ago: Some(Duration::from_secs(60)),
            ..news[0].clone()
        };
        assert_eq!(
            minute_ago.heard_at(Timestamp(10_000_000), 60.0),
            Some(Timestamp(10_000_000 - 3_600_000))
        );
        let never = NodeHeard {
            ago: None,
            ..minute_ago
        };
        assert_eq!(never.heard_at(Timestamp(10_000_000), 60.0), None);
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn nodes_are_stale_after_the_stale_time_or_never_heard_once_a_table_came() {
        let mut n = HeardNodes::new(HOUR);
        // No table yet: nothing is judged.
        assert_eq!(n.freshness(7, at(0)), Freshness::Unknown);
        n.handle_heard(at(20), 7, Some(at(20)), Some(1));
        n.handle_heard(at(20), 8, None, None);
        assert_eq!(
            n.node(8),
            Some(NodeState {
                last_heard: None,
                hops: None
            })
        );
        assert_eq!(n.freshness(7, at(80)), Freshness::Fresh);
        assert_eq!(n.freshness(7, at(81)), Freshness::Stale);
        // In a table but never heard, or in no table at all.
        assert_eq!(n.freshness(8, at(21)), Freshness::Stale);
        assert_eq!(n.freshness(9, at(21)), Freshness::Stale);
        // An older time (another radio, a replayed database) keeps the newer one and
        // its hops; a newer one moves both; a future time counts as now.
        n.handle_heard(at(70), 7, Some(at(10)), Some(3));
        assert_eq!(
            n.node(7),
            Some(NodeState {
                last_heard: Some(at(20)),
                hops: Some(1)
            })
        );
        n.handle_heard(at(70), 7, Some(at(500)), Some(2));
        assert_eq!(
            n.node(7),
            Some(NodeState {
                last_heard: Some(at(70)),
                hops: Some(2)
            })
        );
        n.handle_heard(at(80), 7, None, None);
        assert_eq!(n.node(7).and_then(|s| s.last_heard), Some(at(70)));
        assert_eq!(n.freshness(7, at(130)), Freshness::Fresh);
    }

    fn red() -> tocsin_router::policy::ResolvedPolicy {
        let mut p = tocsin_router::Policies::default();
        p.red.best_of = vec![Bearer::Mesh, Bearer::Beidou, Bearer::Sbd];
        p.resolve(Grade::Red, Role::GridLead)
    }

    #[test]
    fn a_stale_node_is_left_out_only_when_another_off_grid_bearer_takes_its_turn() {
        let card = Address::BeidouCard("9900001".into());
        let phone = Address::Phone(PhoneNumber::parse("+8619900000001", "86").unwrap());
        let all = |_: Bearer| true;
        let stale7 = |n: u32| {
            if n == 7 {
                Freshness::Stale
            } else {
                Freshness::Fresh
            }
        };
        let pol = red();
        // Mesh first in best_of, a BeiDou card too: the card takes the turn.
        let both = [phone.clone(), Address::MeshNode(7), card.clone()];
        assert_eq!(stale_mesh_to_leave_out(&both, &pol, all, stale7), vec![7]);
        // Heard lately, or nothing known yet: kept.
        assert!(stale_mesh_to_leave_out(&both, &pol, all, |_| Freshness::Fresh).is_empty());
        assert!(stale_mesh_to_leave_out(&both, &pol, all, |_| Freshness::Unknown).is_empty());
        // Mesh the only off-grid way (SMS and voice run in parallel anyway): kept.
        let mesh_only = [phone.clone(), Address::MeshNode(7)];
        assert!(stale_mesh_to_leave_out(&mesh_only, &pol, all, stale7).is_empty());
        // A card but no BeiDou terminal: kept.
        let no_beidou = |b: Bearer| b != Bearer::Beidou;
        assert!(stale_mesh_to_leave_out(&both, &pol, no_beidou, stale7).is_empty());
        // A second node that is heard: the stale one goes, mesh stays on the fresh one.
        let two = [Address::MeshNode(7), Address::MeshNode(8)];
        assert_eq!(stale_mesh_to_leave_out(&two, &pol, all, stale7), vec![7]);
        // The default red tries BeiDou before the mesh already: nothing to change, and
        // the node stays so that a reply from it is still recognised.
        let default_red = tocsin_router::Policies::default().resolve(Grade::Red, Role::GridLead);
        assert!(stale_mesh_to_leave_out(&both, &default_red, all, stale7).is_empty());
        // Mesh in parallel is tried alongside the rest: kept.
        let mut parallel = red();
        parallel.parallel.push(Bearer::Mesh);
        assert!(stale_mesh_to_leave_out(&both, &parallel, all, stale7).is_empty());
        // No mesh device at all: nothing to judge.
        let no_mesh = |b: Bearer| b != Bearer::Mesh;
        assert!(stale_mesh_to_leave_out(&both, &pol, no_mesh, stale7).is_empty());
        // SBD counts as off-grid too.
        let kit = [
            Address::MeshNode(7),
            Address::SbdImei("300234010753370".into()),
        ];
        assert_eq!(stale_mesh_to_leave_out(&kit, &pol, all, stale7), vec![7]);
    }
}
