//! The gateway engine: one task that owns the router, commits its records to the store
//! and only then acts on them — dispatching driver commands, answering API callers and
//! publishing events. This ordering is what makes "nothing accepted is lost" hold:
//!
//! 1. take a batch of inputs (API requests, device events, a due timer);
//! 2. feed them to the router, then drain every output;
//! 3. append all records of the batch to the store in one transaction (one fsync);
//! 4. after the commit: send driver commands, answer callers, publish events.
//!
//! A crash before 3 loses nothing that anyone was told about: the API caller got no 202,
//! an inbound SMS was not released from the modem and is read again after restart, a due
//! timer fires again. A crash after 3 is repaired by the router's restore, which re-issues
//! attempts that have no outcome yet.

use crate::checkin::{CHECKIN_KIND, CheckIns, CrewRadios, HeardNodes, NodeHeard};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::uplink::{FrameAction, Links};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use tocsin_api::model::{add_reference, check_reference};
use tocsin_api::{
    Accepted, AlertPatch, DeviceView, GatewayError, GatewayEvent, HealthReport, NewAlert,
};
use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, DriverHandle};
use tocsin_core::directory::Directory;
use tocsin_core::{
    Address, Alert, AlertId, AreaSpec, Bearer, DeviceId, Grade, PersonId, Timestamp,
};
use tocsin_router::plan::NamedAreaRef;
use tocsin_router::{
    AlertPlan, AlertSummary, Contact, DeliveryState, DeliveryView, Output, Preview, Record, Router,
    SpeakerTarget, SpeakerView, Target, TargetReason,
};
use tocsin_store::Store;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How many inputs one batch takes at most before committing (bounds commit latency).
const BATCH_INPUTS: usize = 512;

/// Depth of the API's request queue into the engine.
pub const REQUEST_QUEUE: usize = 4096;

/// Depth of the event broadcast to SSE subscribers (a slower client is told it lagged).
pub const EVENT_BROADCAST: usize = 16384;

type Reply<T> = oneshot::Sender<T>;

/// A request from the API to the engine.
pub enum Request {
    /// Issue an alert.
    Submit(NewAlert, String, Reply<Result<Accepted, GatewayError>>),
    /// What an alert would do.
    Preview(NewAlert, Reply<Result<Preview, GatewayError>>),
    /// Every alert.
    Alerts(Reply<Vec<AlertSummary>>),
    /// One alert.
    Alert(AlertId, Reply<Option<AlertSummary>>),
    /// One alert's records.
    Deliveries(
        AlertId,
        Option<DeliveryState>,
        Reply<Option<Vec<DeliveryView>>>,
    ),
    /// One alert's loudspeaker announcements.
    Speakers(AlertId, Reply<Option<Vec<SpeakerView>>>),
    /// One alert's relays to field kits.
    Relays(AlertId, Reply<Option<Vec<tocsin_router::RelayView>>>),
    /// Cancel an alert.
    Cancel(AlertId, String, Reply<Result<AlertSummary, GatewayError>>),
    /// Change an alert's grade, text or area, or add a reference it is also known under.
    Update(
        AlertId,
        AlertPatch,
        String,
        Reply<Result<AlertSummary, GatewayError>>,
    ),
    /// Device health.
    Devices(Reply<Vec<DeviceView>>),
    /// Prometheus text.
    Metrics(Reply<String>),
    /// Liveness.
    Health(Reply<HealthReport>),
}

/// An answer that waits for the batch's commit.
enum Deferred {
    Accepted(Reply<Result<Accepted, GatewayError>>, Accepted),
    Summary(Reply<Result<AlertSummary, GatewayError>>, AlertId),
}

/// The engine's state.
pub struct Engine {
    router: Router,
    store: Store<Logged>,
    directory: Arc<Directory>,
    drivers: BTreeMap<DeviceId, DriverHandle>,
    clock: Clock,
    events: broadcast::Sender<GatewayEvent>,
    event_seq: u64,
    metrics: Metrics,
    /// Driver facts the engine makes up itself (a full driver queue), fed back next turn.
    synthetic: VecDeque<DeviceEvent>,
    store_ok: bool,
    /// Field-crew check-ins and positions, when crews are watched.
    crews: Option<CrewWatch>,
    /// What the mesh radios hear, when the gateway has any.
    mesh: Option<MeshWatch>,
    /// News from the mesh radios' node tables; taken by `run`.
    radio_news: Option<mpsc::Receiver<Vec<NodeHeard>>>,
    /// Field kits this node relays to, and the uplink it takes alerts from.
    links: Arc<Links>,
    /// Receipts of frames the engine judged itself, released after the next commit.
    releases: Vec<(DeviceId, tocsin_channel::InboundReceipt)>,
}

/// The engine's field-crew state: check-in clocks and latest positions (soft state,
/// never persisted; only the alerts a miss raises are).
struct CrewWatch {
    checkins: CheckIns,
    /// Crew members by the node they carry.
    radios: CrewRadios,
    grade: Grade,
}

/// Last heard and hops of every mesh node (soft state), and the policies that say
/// whether leaving a stale node out of a plan lets another bearer go first.
struct MeshWatch {
    nodes: HeardNodes,
    policies: tocsin_router::Policies,
}

/// A stale mesh node left out of a person's contact in a plan (for the log).
struct LeftOut {
    person: PersonId,
    node: u32,
    last_heard: Option<Timestamp>,
    hops: Option<u32>,
}

impl Engine {
    /// Where the start-time check of the log's chain reports (see `daemon::start`).
    pub fn audit_state(&self) -> crate::metrics::AuditState {
        self.metrics.audit.clone()
    }

    /// Wires an engine; `router` is already restored from `store`.
    pub fn new(
        router: Router,
        store: Store<Logged>,
        directory: Arc<Directory>,
        drivers: Vec<DriverHandle>,
        clock: Clock,
        events: broadcast::Sender<GatewayEvent>,
    ) -> Engine {
        Engine {
            router,
            store,
            directory,
            drivers: drivers.into_iter().map(|d| (d.device.clone(), d)).collect(),
            clock,
            events,
            event_seq: 0,
            metrics: Metrics::default(),
            synthetic: VecDeque::new(),
            store_ok: true,
            crews: None,
            mesh: None,
            radio_news: None,
            links: Arc::new(Links::default()),
            releases: Vec::new(),
        }
    }

    /// Relays alerts to field kits (`[kits]`) and takes alerts from the district over a
    /// kit's uplink (`[uplink]`).
    pub fn with_links(mut self, links: Links) -> Engine {
        self.links = Arc::new(links);
        self
    }

    /// Listens to the mesh radios: `news` brings what their node tables say about every
    /// node, `nodes` keeps it and says which nodes are stale. A plan then leaves a
    /// person's stale node out when `policies` would try the mesh before the BeiDou card
    /// or SBD modem they also have (see [`crate::checkin::stale_mesh_to_leave_out`]).
    pub fn with_mesh_nodes(
        mut self,
        nodes: HeardNodes,
        policies: tocsin_router::Policies,
        news: mpsc::Receiver<Vec<NodeHeard>>,
    ) -> Engine {
        self.mesh = Some(MeshWatch { nodes, policies });
        self.radio_news = Some(news);
        self
    }

    /// Watches field crews: `checkins` holds their clocks, `radios` says which node each
    /// carries (the mesh news set up by [`Engine::with_mesh_nodes`] brings what is heard
    /// from them), and a missed check-in raises an alert of `grade` to the crew's
    /// supervisor. Crews' latest positions also join geofenced alerts.
    pub fn with_check_ins(
        mut self,
        checkins: CheckIns,
        radios: CrewRadios,
        grade: Grade,
    ) -> Engine {
        self.crews = Some(CrewWatch {
            checkins,
            radios,
            grade,
        });
        self
    }

    /// Runs until `shutdown` is cancelled or the store fails. Returns an error if the
    /// store failed: the daemon must stop and be restarted, restoring from the log.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut device_events: mpsc::Receiver<DeviceEvent>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        // Outputs of the restore (re-issued attempts) are committed and dispatched first.
        self.flush(Vec::new()).await?;
        let mut radios = self.radio_news.take();
        loop {
            let mut deferred = Vec::new();
            // The earliest of the router's and the check-ins' deadlines.
            let check_in_due = self.crews.as_ref().and_then(|w| w.checkins.poll_timeout());
            let deadline = match (self.router.poll_timeout(), check_in_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map(|t| self.clock.instant_at(t));
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(req) = requests.recv() => {
                    self.handle_request(req, &mut deferred);
                    for _ in 1..BATCH_INPUTS {
                        match requests.try_recv() {
                            Ok(req) => self.handle_request(req, &mut deferred),
                            Err(_) => break,
                        }
                    }
                }
                Some(ev) = device_events.recv() => {
                    self.handle_device_event(ev);
                    for _ in 1..BATCH_INPUTS {
                        match device_events.try_recv() {
                            Ok(ev) => self.handle_device_event(ev),
                            Err(_) => break,
                        }
                    }
                }
                heard = recv_or_pending(&mut radios) => match heard {
                    Some(batch) => {
                        self.handle_radio_heard(batch);
                        for _ in 1..BATCH_INPUTS {
                            match radios.as_mut().map(|r| r.try_recv()) {
                                Some(Ok(batch)) => self.handle_radio_heard(batch),
                                _ => break,
                            }
                        }
                    }
                    // Every forwarder has stopped (no radio left): nothing more to hear.
                    None => radios = None,
                },
                () = sleep => {
                    let now = self.clock.now();
                    self.router.handle_timeout(now);
                    if let Some(w) = self.crews.as_mut() {
                        w.checkins.handle_timeout(now);
                    }
                }
            }
            while let Some(ev) = self.synthetic.pop_front() {
                self.handle_device_event(ev);
            }
            self.raise_missed_check_ins();
            self.flush(deferred).await?;
        }
        Ok(())
    }

    fn handle_device_event(&mut self, mut ev: DeviceEvent) {
        // Drivers stamp events with real time; the router lives on the gateway's clock.
        ev.at = self.clock.now();
        self.metrics.device_event(&ev);
        let now = ev.at;
        match ev.event {
            DriverEvent::Frame {
                from,
                bytes,
                evidence,
                receipt,
            } => self.handle_frame(now, ev.device, from, &bytes, &evidence, receipt),
            _ => self.router.handle_device_event(now, ev),
        }
    }

    /// A compact frame from another Tocsin node: relayed acks, an ordinary reply, or (on
    /// a kit) an alert from the district. Its receipt is released after the commit.
    fn handle_frame(
        &mut self,
        now: Timestamp,
        device: DeviceId,
        from: Address,
        bytes: &[u8],
        evidence: &str,
        receipt: Option<tocsin_channel::InboundReceipt>,
    ) {
        if let Some(r) = receipt {
            self.releases.push((device.clone(), r));
        }
        match self.links.judge(&device, &from, bytes, evidence) {
            FrameAction::Relayed(acks) => {
                tracing::info!(%device, %from, acks = acks.len(), "acks relayed by a field kit");
                self.router.handle_relayed_acks(now, &device, &from, acks);
            }
            FrameAction::Replies(events) => {
                for event in events {
                    self.router.handle_device_event(
                        now,
                        DeviceEvent {
                            device: device.clone(),
                            at: now,
                            event,
                        },
                    );
                }
            }
            FrameAction::Alert { id, new, uplink } => {
                if self.router.summary(&id).is_some() {
                    tracing::info!(alert = %id, %from, "district alert frame again: already taken");
                    return;
                }
                let planned = new
                    .validate()
                    .and_then(|()| self.plan(id.clone(), &new, &format!("district {from}"), now));
                match planned {
                    Ok((mut plan, left)) => {
                        plan.uplink = Some(Box::new(uplink));
                        let people = plan.targets.len();
                        match self.router.handle_alert(now, plan) {
                            Ok(()) => {
                                tracing::warn!(alert = %id, %from, people, "alert from the district over the uplink");
                                self.log_left_out(&id, &left);
                            }
                            Err(e) => {
                                tracing::error!(alert = %id, error = %e, "district alert refused")
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(alert = %id, error = %e, "district alert cannot be planned")
                    }
                }
            }
            FrameAction::Update { replaces, new } => {
                let Some(id) = self.router.uplinked_alert(&from, replaces) else {
                    tracing::warn!(%from, short = replaces, "update of a district alert this kit never got");
                    return;
                };
                let Some(current) = self.router.summary(&id) else {
                    return;
                };
                let planned = new.validate().and_then(|()| {
                    self.plan(
                        id.clone(),
                        &new,
                        &format!("district {from}"),
                        current.alert.accepted_at,
                    )
                });
                match planned {
                    Ok((mut plan, left)) => {
                        plan.uplink = self.router.uplink_of(&id).map(Box::new);
                        match self.router.handle_update(now, plan) {
                            Ok(()) => self.log_left_out(&id, &left),
                            Err(e) => {
                                tracing::error!(alert = %id, error = %e, "district update refused")
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(alert = %id, error = %e, "district update cannot be planned")
                    }
                }
            }
            FrameAction::Cancel { short } => {
                let Some(id) = self.router.uplinked_alert(&from, short) else {
                    tracing::warn!(%from, short, "cancel of a district alert this kit never got");
                    return;
                };
                match self
                    .router
                    .handle_cancel(now, &id, &format!("district {from}"))
                {
                    Ok(()) => tracing::warn!(alert = %id, "district cancelled the alert"),
                    Err(e) => {
                        tracing::info!(alert = %id, error = %e, "district cancel not applied")
                    }
                }
            }
            FrameAction::Ignore(why) => tracing::warn!(%device, %from, "frame ignored: {why}"),
        }
    }

    /// Mesh nodes heard, placed on the gateway's clock: every node's last heard and hops,
    /// and crews' check-ins and positions.
    fn handle_radio_heard(&mut self, batch: Vec<NodeHeard>) {
        let (now, speed) = (self.clock.now(), self.clock.speed());
        for heard in batch {
            if let Some(m) = self.mesh.as_mut() {
                m.nodes
                    .handle_heard(now, heard.num, heard.heard_at(now, speed), heard.hops);
            }
            if let Some(w) = self.crews.as_mut() {
                for person in w.radios.get(&heard.num).into_iter().flatten() {
                    w.checkins
                        .handle_heard(now, heard.for_crew(person.clone(), now, speed));
                }
            }
        }
    }

    /// Leaves stale mesh nodes out of the plan's contacts where that lets another
    /// off-grid bearer go first (the rule and its cost: see
    /// [`crate::checkin::stale_mesh_to_leave_out`]); returns what was left out. The
    /// delivery view then simply shows those people's attempts on BeiDou or SBD.
    fn leave_out_stale_mesh(&self, plan: &mut AlertPlan) -> Vec<LeftOut> {
        let Some(m) = self.mesh.as_ref() else {
            return Vec::new();
        };
        // Staleness is judged now, also when an update re-plans an older alert.
        let now = self.clock.now();
        let has_device = |b: Bearer| self.drivers.values().any(|d| d.caps.bearer == b);
        let mut left = Vec::new();
        for c in &mut plan.contacts {
            let policy = m
                .policies
                .resolve_for(plan.alert.grade, &plan.alert.kind, c.role);
            let out =
                crate::checkin::stale_mesh_to_leave_out(&c.addresses, &policy, has_device, |n| {
                    m.nodes.freshness(n, now)
                });
            if out.is_empty() {
                continue;
            }
            c.addresses
                .retain(|a| !matches!(a, Address::MeshNode(n) if out.contains(n)));
            for node in out {
                let known = m.nodes.node(node);
                left.push(LeftOut {
                    person: c.person.clone(),
                    node,
                    last_heard: known.and_then(|s| s.last_heard),
                    hops: known.and_then(|s| s.hops),
                });
            }
        }
        left
    }

    /// Logs who is tried on another bearer because their mesh node is stale.
    fn log_left_out(&self, alert: &AlertId, left: &[LeftOut]) {
        let now = self.clock.now();
        for l in left {
            let silent_secs = l.last_heard.map(|t| now.since(t).as_secs());
            tracing::info!(
                %alert,
                person = %l.person,
                node = %format!("!{:08x}", l.node),
                silent_secs = ?silent_secs,
                hops = ?l.hops,
                "mesh node not heard lately: tried on the next off-grid bearer first"
            );
        }
    }

    /// Turns every missed check-in into an alert to the crew's supervisor, through the
    /// router like any alert (its records are committed by the next flush before anything
    /// is sent).
    fn raise_missed_check_ins(&mut self) {
        let Some(w) = self.crews.as_mut() else {
            return;
        };
        let grade = w.grade;
        let missed: Vec<_> = std::iter::from_fn(|| w.checkins.poll_missed()).collect();
        let now = self.clock.now();
        for missed in missed {
            let id = AlertId(uuid::Uuid::now_v7().to_string());
            let plan =
                crate::checkin::missed_alert(&self.directory, &missed, grade, id.clone(), now);
            let plan = plan.map(|mut p| {
                let left = self.leave_out_stale_mesh(&mut p);
                (p, left)
            });
            match plan.map(|(p, left)| (self.router.handle_alert(now, p), left)) {
                Ok((Ok(()), left)) => {
                    tracing::warn!(
                        person = %missed.person,
                        alert = %id,
                        "field crew missed its check-in; supervisor alerted"
                    );
                    self.log_left_out(&id, &left);
                }
                Ok((Err(e), _)) => tracing::error!(
                    person = %missed.person,
                    error = %e,
                    "field crew missed its check-in; the alert was refused"
                ),
                Err(e) => tracing::error!(
                    person = %missed.person,
                    error = %e,
                    "field crew missed its check-in; nobody can be alerted"
                ),
            }
        }
    }

    fn handle_request(&mut self, req: Request, deferred: &mut Vec<Deferred>) {
        let now = self.clock.now();
        match req {
            Request::Submit(new, issuer, reply) => {
                let id = AlertId(uuid::Uuid::now_v7().to_string());
                match self.plan(id.clone(), &new, &issuer, now) {
                    Ok((plan, left)) => {
                        let accepted = Accepted {
                            id: id.clone(),
                            people: plan.targets.len() as u32,
                            responsible: plan
                                .targets
                                .iter()
                                .filter(|t| matches!(t.reason, TargetReason::Responsible { .. }))
                                .count() as u32,
                            located: plan
                                .targets
                                .iter()
                                .filter(|t| matches!(t.reason, TargetReason::Located))
                                .count() as u32,
                        };
                        match self.router.handle_alert(now, plan) {
                            Ok(()) => {
                                self.log_left_out(&id, &left);
                                deferred.push(Deferred::Accepted(reply, accepted));
                            }
                            Err(e) => {
                                let _ = reply.send(Err(GatewayError::Conflict(e.to_string())));
                            }
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::Preview(new, reply) => {
                let id = AlertId("preview".into());
                let _ = reply.send(self.plan(id, &new, "preview", now).map(|(p, _)| {
                    let mut preview = self.router.preview(&p);
                    // The router has no directory: the population of the named areas the
                    // plan touches comes from it here.
                    let areas: Vec<_> = p.areas.iter().map(|a| a.id.clone()).collect();
                    let estimate = self.directory.estimate_population(&areas);
                    preview.population = estimate.population;
                    preview.population_unknown_areas = estimate.unknown_areas;
                    preview
                }));
            }
            Request::Alerts(reply) => {
                let _ = reply.send(self.router.alerts());
            }
            Request::Alert(id, reply) => {
                let _ = reply.send(self.router.summary(&id));
            }
            Request::Deliveries(id, state, reply) => {
                let _ = reply.send(self.router.deliveries(&id, state));
            }
            Request::Speakers(id, reply) => {
                let _ = reply.send(self.router.speakers(&id));
            }
            Request::Relays(id, reply) => {
                let _ = reply.send(self.router.relays(&id));
            }
            Request::Cancel(id, by, reply) => match self.router.handle_cancel(now, &id, &by) {
                Ok(()) => deferred.push(Deferred::Summary(reply, id)),
                Err(e) => {
                    let _ = reply.send(Err(router_error(&id, e)));
                }
            },
            Request::Update(id, patch, by, reply) => {
                let Some(current) = self.router.summary(&id) else {
                    let _ = reply.send(Err(GatewayError::NotFound(format!("alert {id}"))));
                    return;
                };
                if current.alert.kind == CHECKIN_KIND {
                    // Its one target is a supervisor, not whoever is inside its area: a
                    // re-plan from the area would withdraw them.
                    let _ = reply.send(Err(GatewayError::Conflict(
                        "a missed check-in alert is raised by the gateway; cancel it rather than change it"
                            .into(),
                    )));
                    return;
                }
                if let Some(Err(e)) = patch.reference.as_deref().map(check_reference) {
                    let _ = reply.send(Err(e));
                    return;
                }
                // The alert's references with the patch's appended; `None` when the patch
                // brings none it is not known under already.
                let references = patch
                    .reference
                    .as_deref()
                    .and_then(|r| add_reference(current.alert.reference.as_deref(), r));
                let content = patch.grade.is_some()
                    || patch.headline.is_some()
                    || patch.text.is_some()
                    || patch.area.is_some()
                    || patch.re_notify;
                if !content {
                    self.add_references(id, current, references, reply, now, deferred);
                    return;
                }
                let a = current.alert;
                let re_notify = patch.re_notify;
                let new = NewAlert {
                    grade: patch.grade.unwrap_or(a.grade),
                    kind: a.kind.clone(),
                    headline: patch.headline.unwrap_or(a.headline),
                    text: patch.text.unwrap_or(a.text),
                    area: patch.area.unwrap_or(a.area),
                    exercise: a.exercise,
                    // The list is set on the plan below: a submitted alert's reference is
                    // one token, and a list is several.
                    reference: None,
                };
                let result = new
                    .validate()
                    .and_then(|()| self.plan(id.clone(), &new, &by, a.accepted_at));
                match result {
                    Ok((mut plan, left)) => {
                        plan.alert.reference = references.or(a.reference);
                        match self.router.handle_update_with(now, plan, re_notify) {
                            Ok(()) => {
                                self.log_left_out(&id, &left);
                                deferred.push(Deferred::Summary(reply, id));
                            }
                            Err(e) => {
                                let _ = reply.send(Err(router_error(&id, e)));
                            }
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::Devices(reply) => {
                let views = self
                    .router
                    .device_health()
                    .into_iter()
                    .map(|(id, caps, h)| DeviceView {
                        // Drivers report health only when it changes; the engine counts
                        // every send and reply itself, so these are always current.
                        sent: self.metrics.device_count(&id, "sent"),
                        received: self.metrics.device_count(&id, "inbound"),
                        id,
                        bearer: caps.bearer,
                        up: h.up,
                        registered: h.registered,
                        signal: h.signal,
                        last_error: h.last_error,
                        per_minute: caps.per_minute,
                    })
                    .collect();
                let _ = reply.send(views);
            }
            Request::Metrics(reply) => {
                let _ = reply.send(self.metrics.render(&self.router, &self.drivers));
            }
            Request::Health(reply) => {
                let devices = self.router.device_health();
                let up = devices.iter().filter(|(_, _, h)| h.up).count() as u32;
                let _ = reply.send(HealthReport {
                    ok: self.store_ok,
                    store: self.store_ok,
                    devices_up: up,
                    devices_total: devices.len() as u32,
                });
            }
        }
    }

    /// A patch that only adds an upstream reference: the alert keeps the plan it runs
    /// under, so nobody is re-planned, re-notified or withdrawn and kits are sent nothing;
    /// only the update record carrying the longer list is logged. A reference the alert is
    /// known under already (`references` is `None`) logs nothing at all.
    fn add_references(
        &mut self,
        id: AlertId,
        current: AlertSummary,
        references: Option<String>,
        reply: Reply<Result<AlertSummary, GatewayError>>,
        now: Timestamp,
        deferred: &mut Vec<Deferred>,
    ) {
        let Some(list) = references else {
            let _ = reply.send(Ok(current));
            return;
        };
        let Some(mut plan) = self.router.plan(&id).cloned() else {
            let _ = reply.send(Err(GatewayError::NotFound(format!("alert {id}"))));
            return;
        };
        plan.alert.reference = Some(list);
        match self.router.handle_update_with(now, plan, false) {
            Ok(()) => deferred.push(Deferred::Summary(reply, id)),
            Err(e) => {
                let _ = reply.send(Err(router_error(&id, e)));
            }
        }
    }

    /// Resolves an alert's area to its targets and the contacts escalation may need,
    /// leaving out stale mesh nodes where another off-grid bearer can go first (returned
    /// for the log).
    fn plan(
        &self,
        id: AlertId,
        new: &NewAlert,
        issuer: &str,
        accepted_at: Timestamp,
    ) -> Result<(AlertPlan, Vec<LeftOut>), GatewayError> {
        new.validate()?;
        let resolution = self
            .directory
            .resolve(&new.area)
            .map_err(|e| GatewayError::Invalid {
                field: "area".into(),
                message: e.to_string(),
            })?;
        let mut targets =
            Vec::with_capacity(resolution.located.len() + resolution.responsible.len());
        for (person, area) in &resolution.responsible {
            targets.push(Target {
                person: person.clone(),
                reason: TargetReason::Responsible { area: area.clone() },
            });
        }
        for person in &resolution.located {
            targets.push(Target {
                person: person.clone(),
                reason: TargetReason::Located,
            });
        }
        for person in self.crews_inside(&new.area) {
            if !targets.iter().any(|t| t.person == person) {
                targets.push(Target {
                    person,
                    reason: TargetReason::Located,
                });
            }
        }
        let mut wanted: BTreeSet<PersonId> = BTreeSet::new();
        for t in &targets {
            wanted.insert(t.person.clone());
            for sup in self.directory.supervisor_chain(&t.person) {
                wanted.insert(sup.id.clone());
            }
        }
        let contacts = wanted
            .iter()
            .filter_map(|id| self.directory.person(id))
            .map(|p| Contact {
                person: p.id.clone(),
                name: p.name.clone(),
                role: p.role,
                town: p.town.clone(),
                addresses: p.addresses.clone(),
                supervisor: p.supervisor.clone(),
            })
            .collect();
        let areas = resolution
            .areas
            .iter()
            .filter_map(|a| self.directory.area(a))
            .map(NamedAreaRef::from)
            .collect();
        let speakers = resolution
            .speakers
            .iter()
            .filter_map(|s| self.directory.speaker(s))
            .map(|s| SpeakerTarget {
                id: s.id.clone(),
                name: s.name.clone(),
                town: s.town.clone(),
                device: s.device.clone(),
                address: Address::Speaker(s.group.clone()),
            })
            .collect();
        let mut plan = AlertPlan {
            alert: Alert {
                id,
                grade: new.grade,
                kind: new.kind.clone(),
                headline: new.headline.clone(),
                text: new.text.clone(),
                area: new.area.clone(),
                exercise: new.exercise,
                issuer: issuer.to_owned(),
                accepted_at,
                reference: new.reference.clone(),
            },
            targets,
            contacts,
            areas,
            speakers,
            kits: Vec::new(),
            uplink: None,
        };
        plan.kits = self.links.kit_targets(&plan.targets);
        let left = self.leave_out_stale_mesh(&mut plan);
        Ok((plan, left))
    }

    /// Crew members whose latest reported position lies inside `area`, wherever the
    /// directory places them.
    fn crews_inside(&self, area: &[AreaSpec]) -> Vec<PersonId> {
        let Some(w) = self.crews.as_ref() else {
            return Vec::new();
        };
        let mut positions = w.checkins.positions().peekable();
        if positions.peek().is_none() {
            return Vec::new();
        }
        // The area was resolved already, so every spec is valid; named areas use the
        // directory's prepared regions.
        let drawn: Vec<tocsin_core::Region> = area
            .iter()
            .filter(|s| !matches!(s, AreaSpec::Named { .. }))
            .filter_map(|s| s.to_region_unnamed().ok())
            .collect();
        let named: Vec<&tocsin_core::Region> = area
            .iter()
            .filter_map(|s| match s {
                AreaSpec::Named { id } => self.directory.region(id),
                _ => None,
            })
            .collect();
        positions
            .filter(|(_, pos)| {
                drawn
                    .iter()
                    .chain(named.iter().copied())
                    .any(|r| r.contains(*pos))
            })
            .filter(|(p, _)| self.directory.person(p).is_some())
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Drains the router, commits the records, then acts.
    async fn flush(&mut self, deferred: Vec<Deferred>) -> anyhow::Result<()> {
        let mut records = Vec::new();
        let mut commands = Vec::new();
        while let Some(out) = self.router.poll_output() {
            match out {
                Output::Record(r) => records.push(r),
                Output::Command { device, command } => commands.push((device, command)),
            }
        }
        if !records.is_empty() {
            let started = std::time::Instant::now();
            if let Err(e) = self
                .store
                .append(records.iter().cloned().map(Logged).collect())
                .await
            {
                self.store_ok = false;
                for d in deferred {
                    match d {
                        Deferred::Accepted(reply, _) => {
                            let _ = reply.send(Err(GatewayError::Unavailable(
                                "the store failed; not accepted".into(),
                            )));
                        }
                        Deferred::Summary(reply, _) => {
                            let _ = reply.send(Err(GatewayError::Unavailable(
                                "the store failed; not applied".into(),
                            )));
                        }
                    }
                }
                anyhow::bail!("store append failed, stopping so the log stays the truth: {e}");
            }
            self.metrics.committed(&records, started.elapsed());
        }
        for (device, command) in commands {
            self.dispatch(device, command);
        }
        for (device, receipt) in std::mem::take(&mut self.releases) {
            self.dispatch(device, DriverCommand::Release(receipt));
        }
        for d in deferred {
            match d {
                Deferred::Accepted(reply, accepted) => {
                    let _ = reply.send(Ok(accepted));
                }
                Deferred::Summary(reply, id) => {
                    let summary = self
                        .router
                        .summary(&id)
                        .ok_or_else(|| GatewayError::NotFound(format!("alert {id}")));
                    let _ = reply.send(summary);
                }
            }
        }
        for r in records {
            self.event_seq += 1;
            let ev = GatewayEvent {
                seq: self.event_seq,
                kind: r.kind().to_owned(),
                alert: r.alert().cloned(),
                at: r.at(),
                data: serde_json::to_value(&r).unwrap_or(serde_json::Value::Null),
            };
            // Nobody listening is fine.
            let _ = self.events.send(ev);
        }
        Ok(())
    }

    fn dispatch(&mut self, device: DeviceId, command: DriverCommand) {
        let attempt = match &command {
            DriverCommand::Send(o) => Some(o.attempt),
            _ => None,
        };
        let sent = match self.drivers.get(&device) {
            Some(d) => d.commands.try_send(command).map_err(|e| e.to_string()),
            None => Err("no such device".to_owned()),
        };
        if let (Err(reason), Some(attempt)) = (sent, attempt) {
            tracing::warn!(%device, %attempt, %reason, "driver did not take the send");
            self.synthetic.push_back(DeviceEvent {
                device,
                at: self.clock.now(),
                event: DriverEvent::Failed {
                    attempt,
                    retryable: true,
                    reason: format!("driver queue: {reason}"),
                },
            });
        }
    }
}

/// The next item from an optional channel, or never when there is none.
async fn recv_or_pending<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

fn router_error(id: &AlertId, e: tocsin_router::RouterError) -> GatewayError {
    match e {
        tocsin_router::RouterError::UnknownAlert(_) => {
            GatewayError::NotFound(format!("alert {id}"))
        }
        other => GatewayError::Conflict(other.to_string()),
    }
}

/// The API's view of the engine: requests over a bounded channel, answers on oneshots.
#[derive(Clone)]
pub struct GatewayHandle {
    requests: mpsc::Sender<Request>,
    events: broadcast::Sender<GatewayEvent>,
}

impl GatewayHandle {
    /// A handle on an engine fed by `requests`.
    pub fn new(requests: mpsc::Sender<Request>, events: broadcast::Sender<GatewayEvent>) -> Self {
        GatewayHandle { requests, events }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, GatewayError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(make(tx))
            .await
            .map_err(|_| GatewayError::Unavailable("the gateway is shutting down".into()))?;
        rx.await
            .map_err(|_| GatewayError::Unavailable("the gateway stopped before answering".into()))
    }
}

impl tocsin_api::Gateway for GatewayHandle {
    async fn submit(&self, alert: NewAlert, issuer: &str) -> Result<Accepted, GatewayError> {
        let issuer = issuer.to_owned();
        self.ask(|r| Request::Submit(alert, issuer, r)).await?
    }
    async fn preview(&self, alert: NewAlert) -> Result<Preview, GatewayError> {
        self.ask(|r| Request::Preview(alert, r)).await?
    }
    async fn alerts(&self) -> Vec<AlertSummary> {
        self.ask(Request::Alerts).await.unwrap_or_default()
    }
    async fn alert(&self, id: &AlertId) -> Option<AlertSummary> {
        let id = id.clone();
        self.ask(|r| Request::Alert(id, r)).await.ok().flatten()
    }
    async fn deliveries(
        &self,
        id: &AlertId,
        state: Option<DeliveryState>,
    ) -> Option<Vec<DeliveryView>> {
        let id = id.clone();
        self.ask(|r| Request::Deliveries(id, state, r))
            .await
            .ok()
            .flatten()
    }
    async fn speakers(&self, id: &AlertId) -> Option<Vec<SpeakerView>> {
        let id = id.clone();
        self.ask(|r| Request::Speakers(id, r)).await.ok().flatten()
    }
    async fn relays(&self, id: &AlertId) -> Option<Vec<tocsin_router::RelayView>> {
        let id = id.clone();
        self.ask(|r| Request::Relays(id, r)).await.ok().flatten()
    }
    async fn cancel(&self, id: &AlertId, by: &str) -> Result<AlertSummary, GatewayError> {
        let (id, by) = (id.clone(), by.to_owned());
        self.ask(|r| Request::Cancel(id, by, r)).await?
    }
    async fn update(
        &self,
        id: &AlertId,
        patch: AlertPatch,
        by: &str,
    ) -> Result<AlertSummary, GatewayError> {
        let (id, by) = (id.clone(), by.to_owned());
        self.ask(|r| Request::Update(id, patch, by, r)).await?
    }
    async fn devices(&self) -> Vec<DeviceView> {
        self.ask(Request::Devices).await.unwrap_or_default()
    }
    fn events(&self) -> broadcast::Receiver<GatewayEvent> {
        self.events.subscribe()
    }
    async fn metrics(&self) -> String {
        self.ask(Request::Metrics).await.unwrap_or_default()
    }
    async fn health(&self) -> HealthReport {
        self.ask(Request::Health).await.unwrap_or(HealthReport {
            ok: false,
            store: false,
            devices_up: 0,
            devices_total: 0,
        })
    }
}

/// A router record as the store logs it (the store is generic over what it logs).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Logged(pub Record);

impl tocsin_store::LogRecord for Logged {
    fn kind(&self) -> &str {
        self.0.kind()
    }
    fn alert(&self) -> Option<&str> {
        self.0.alert().map(AlertId::as_str)
    }
    fn at_millis(&self) -> i64 {
        self.0.at().as_millis()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test: a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use tocsin_api::Gateway;
    use tocsin_core::{AckKey, AreaId, NamedArea, Person, PhoneNumber, Role};
    use tocsin_router::RouterConfig;

    const ISSUED: &str = "qx,A-1,2024-07-01T10:30:00+08:00";
    const UPDATE_1: &str = "qx,U-1,2024-07-01T11:00:00+08:00";
    const UPDATE_2: &str = "qx,U-2,2024-07-01T12:00:00+08:00";

    fn directory() -> Directory {
        let person = |id: &str, phone: &str| Person {
            id: PersonId::from(id),
            name: format!("名{id}"),
            role: Role::VillageHead,
            supervisor: None,
            areas: vec![AreaId::from("v-1")],
            location: Some([116.05, 40.05]),
            town: "石门镇".into(),
            addresses: vec![Address::Phone(PhoneNumber::parse(phone, "86").unwrap())],
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
                person("p1", "+8613800000001"),
                person("p2", "+8613800000002"),
            ],
            vec![area],
        )
        .unwrap()
    }

    fn router_config() -> RouterConfig {
        RouterConfig {
            policies: tocsin_router::Policies::default(),
            ack_key: AckKey::new(b"test-key".to_vec()),
            devices: Vec::new(),
        }
    }

    /// An engine on `store` with no devices, and the handle the API would use.
    fn start(
        router: Router,
        store: Store<Logged>,
    ) -> (
        GatewayHandle,
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
        mpsc::Sender<DeviceEvent>,
    ) {
        let (req_tx, req_rx) = mpsc::channel(16);
        let (dev_tx, dev_rx) = mpsc::channel(16);
        let (events, _) = broadcast::channel(64);
        let engine = Engine::new(
            router,
            store,
            Arc::new(directory()),
            Vec::new(),
            Clock::new(1.0, None),
            events.clone(),
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(engine.run(req_rx, dev_rx, shutdown.clone()));
        (GatewayHandle::new(req_tx, events), shutdown, task, dev_tx)
    }

    fn kinds(store: &Store<Logged>) -> Vec<String> {
        store
            .load_all()
            .unwrap()
            .iter()
            .map(|l| l.0.kind().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_patch_reference_is_added_without_a_re_plan_and_survives_a_restart() {
        let store: Store<Logged> = Store::open_in_memory().unwrap();
        let (gw, shutdown, task, _devices) = start(Router::new(router_config()), store.clone());
        let accepted = gw
            .submit(
                NewAlert {
                    grade: Grade::Yellow,
                    kind: "flood".into(),
                    headline: "洪水黄色预警".into(),
                    text: "注意防范".into(),
                    area: vec![AreaSpec::Named {
                        id: AreaId::from("v-1"),
                    }],
                    exercise: false,
                    reference: Some(ISSUED.into()),
                },
                "weather-bureau",
            )
            .await
            .unwrap();
        assert_eq!(accepted.people, 2);
        let id = accepted.id;
        let before = kinds(&store);

        // A reference alone: one record, the update itself; nobody re-planned.
        let also = |r: &str| AlertPatch {
            reference: Some(r.into()),
            ..AlertPatch::default()
        };
        let s = gw.update(&id, also(UPDATE_1), "cap").await.unwrap();
        let both = format!("{ISSUED} {UPDATE_1}");
        assert_eq!(s.alert.reference.as_deref(), Some(both.as_str()));
        assert_eq!(s.alert.grade, Grade::Yellow);
        let after = kinds(&store);
        assert_eq!(after[..before.len()], before[..]);
        assert_eq!(after[before.len()..], ["alert_updated"]);
        // Known already: nothing logged at all.
        let s = gw.update(&id, also(ISSUED), "cap").await.unwrap();
        assert_eq!(s.alert.reference.as_deref(), Some(both.as_str()));
        assert_eq!(kinds(&store).len(), after.len());
        // Not one token: refused, nothing logged.
        let e = gw.update(&id, also("qx U-9"), "cap").await.unwrap_err();
        assert!(
            matches!(&e, GatewayError::Invalid { field, .. } if field == "reference"),
            "{e:?}"
        );
        // The API finds the alert by the update's reference.
        let found = gw.alert_by_reference(UPDATE_1).await.unwrap();
        assert_eq!(found.alert.id, id);

        // With a change: the grade goes up and the list grows by one.
        let s = gw
            .update(
                &id,
                AlertPatch {
                    grade: Some(Grade::Orange),
                    reference: Some(UPDATE_2.into()),
                    ..AlertPatch::default()
                },
                "cap",
            )
            .await
            .unwrap();
        let all = format!("{ISSUED} {UPDATE_1} {UPDATE_2}");
        assert_eq!(s.alert.grade, Grade::Orange);
        assert_eq!(s.alert.reference.as_deref(), Some(all.as_str()));
        // An edit from the console without a reference keeps the list.
        let s = gw
            .update(
                &id,
                AlertPatch {
                    text: Some("立即转移".into()),
                    ..AlertPatch::default()
                },
                "ops",
            )
            .await
            .unwrap();
        assert_eq!(s.alert.reference.as_deref(), Some(all.as_str()));

        shutdown.cancel();
        task.await.unwrap().unwrap();

        // Restarted from the log: the alert is known under all three.
        let records: Vec<Record> = store.load_all().unwrap().into_iter().map(|l| l.0).collect();
        let at = records.iter().map(Record::at).max().unwrap();
        let router = Router::restore(router_config(), records, at).unwrap();
        let back = router.summary(&id).unwrap();
        assert_eq!(back.alert.reference.as_deref(), Some(all.as_str()));
        assert_eq!(back.alert.grade, Grade::Orange);
        let (gw, shutdown, task, _devices) = start(router, store.clone());
        for r in [ISSUED, UPDATE_1, UPDATE_2] {
            assert_eq!(gw.alert_by_reference(r).await.unwrap().alert.id, id, "{r}");
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}
