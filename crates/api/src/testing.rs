//! An in-memory gateway for the API's tests: keeps alerts in a map, records who did what,
//! and lets a test push events and flip health.

use crate::gateway::{Gateway, GatewayError};
use crate::model::{
    Accepted, AlertPatch, DeviceView, GatewayEvent, HealthReport, NewAlert, add_reference,
};
use std::collections::BTreeMap;
use std::sync::Mutex;
use tocsin_core::{AckCode, Alert, AlertId, Bearer, DeviceId, Grade, PersonId, Role, Timestamp};
use tocsin_router::{
    AlertState, AlertSummary, Counts, DeliveryState, DeliveryView, Preview, SpeakerCounts,
    SpeakerState, SpeakerView,
};

/// The issuer token of the tests' API config.
pub(crate) const ISSUER: &str = "issuer-token-0123456789";
/// The viewer token of the tests' API config.
pub(crate) const VIEWER: &str = "viewer-token-0123456789";

/// An API config with one issuer ("ops-desk") and one viewer ("wall") token.
pub(crate) fn config() -> crate::ApiConfig {
    crate::ApiConfig {
        tokens: vec![
            crate::ApiToken {
                name: "ops-desk".into(),
                token: ISSUER.into(),
                role: crate::config::Role::Issuer,
            },
            crate::ApiToken {
                name: "wall".into(),
                token: VIEWER.into(),
                role: crate::config::Role::Viewer,
            },
        ],
        ..crate::ApiConfig::default()
    }
}

/// A fake gateway. Alert ids are `alert-1`, `alert-2`, ...
pub(crate) struct FakeGateway {
    inner: Mutex<Inner>,
    events: tokio::sync::broadcast::Sender<GatewayEvent>,
}

#[derive(Default)]
struct Inner {
    alerts: BTreeMap<AlertId, AlertSummary>,
    next: u32,
    /// (action, alert id, who) in order, so tests can check the issuer passed.
    log: Vec<(String, String, String)>,
    healthy: bool,
    /// When set, every mutating call fails with this error.
    fail_with: Option<GatewayError>,
}

impl FakeGateway {
    /// A healthy, empty gateway whose event channel holds `capacity` events.
    pub(crate) fn new(capacity: usize) -> Self {
        let (events, _) = tokio::sync::broadcast::channel(capacity);
        FakeGateway {
            inner: Mutex::new(Inner {
                healthy: true,
                ..Inner::default()
            }),
            events,
        }
    }

    /// Pushes an event to every subscriber.
    pub(crate) fn push(&self, seq: u64, kind: &str) {
        let _ = self.events.send(GatewayEvent {
            seq,
            kind: kind.into(),
            alert: Some(AlertId::from("alert-1")),
            at: Timestamp(1_700_000_000_000 + i64::try_from(seq).unwrap_or(0)),
            data: serde_json::json!({"n": seq}),
        });
    }

    /// Pushes an event carrying `data` to every subscriber.
    pub(crate) fn push_data(&self, seq: u64, kind: &str, data: serde_json::Value) {
        let _ = self.events.send(GatewayEvent {
            seq,
            kind: kind.into(),
            alert: Some(AlertId::from("alert-1")),
            at: Timestamp(1_700_000_000_000),
            data,
        });
    }

    /// How many event streams are subscribed.
    pub(crate) fn subscribers(&self) -> usize {
        self.events.receiver_count()
    }

    /// Marks the store healthy or not.
    pub(crate) fn set_healthy(&self, ok: bool) {
        self.lock().healthy = ok;
    }

    /// Makes every mutating call fail.
    pub(crate) fn fail_with(&self, e: GatewayError) {
        self.lock().fail_with = Some(e);
    }

    /// What was done, by whom.
    pub(crate) fn log(&self) -> Vec<(String, String, String)> {
        self.lock().log.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn summary(id: &AlertId, alert: &NewAlert, issuer: &str) -> AlertSummary {
    AlertSummary {
        alert: Alert {
            id: id.clone(),
            grade: alert.grade,
            kind: alert.kind.clone(),
            headline: alert.headline.clone(),
            text: alert.text.clone(),
            area: alert.area.clone(),
            exercise: alert.exercise,
            issuer: issuer.into(),
            accepted_at: Timestamp(1_700_000_000_000),
            reference: alert.reference.clone(),
        },
        state: AlertState::Active,
        counts: Counts {
            targets: 2,
            ..Counts::default()
        },
        by_town: BTreeMap::new(),
        finished_at: None,
        speakers: SpeakerCounts::default(),
    }
}

fn speaker(id: &str, state: SpeakerState, evidence: Option<&str>) -> SpeakerView {
    SpeakerView {
        id: id.into(),
        name: format!("speaker {id}"),
        town: "town".into(),
        device: DeviceId::from("spk-1"),
        state,
        evidence: evidence.map(str::to_owned),
        reports: u32::from(evidence.is_some()),
        reason: None,
        attempt: None,
        since: Timestamp(1_700_000_000_000),
    }
}

fn delivery(person: &str, state: DeliveryState) -> DeliveryView {
    DeliveryView {
        person: PersonId::from(person),
        name: format!("name of {person}"),
        role: Role::VillageHead,
        town: "town".into(),
        state,
        code: AckCode::try_from("K7XY".to_owned()).unwrap_or_else(|_| panic!("fixture code")),
        attempts: Vec::new(),
        acked_at: None,
        // As the router records it: the bearer, the address and the reply as typed.
        ack_evidence: (state == DeliveryState::Acknowledged)
            .then(|| "sms +8613800000001: 1 k7xy".to_owned()),
        late: false,
        escalated_to: None,
        since: Timestamp(1_700_000_000_000),
        // Neither record was escalated, so neither has a door-knock task.
        door_knock: None,
    }
}

impl Gateway for FakeGateway {
    async fn submit(&self, alert: NewAlert, issuer: &str) -> Result<Accepted, GatewayError> {
        let mut inner = self.lock();
        if let Some(e) = inner.fail_with.clone() {
            return Err(e);
        }
        inner.next += 1;
        let id = AlertId::from(format!("alert-{}", inner.next));
        let s = summary(&id, &alert, issuer);
        inner.alerts.insert(id.clone(), s);
        inner
            .log
            .push(("submit".into(), id.to_string(), issuer.into()));
        Ok(Accepted {
            id,
            people: 2,
            responsible: 1,
            located: 1,
        })
    }

    async fn preview(&self, alert: NewAlert) -> Result<Preview, GatewayError> {
        Ok(Preview {
            people: u32::try_from(alert.area.len()).unwrap_or(u32::MAX),
            responsible: 1,
            bearers: Vec::new(),
            unreachable: 0,
            seconds_to_first_attempt_all: 12.5,
            speakers: 3,
            speakers_sound: alert.grade == Grade::Red,
            population: Some(1250),
            population_unknown_areas: 1,
        })
    }

    async fn alerts(&self) -> Vec<AlertSummary> {
        self.lock().alerts.values().rev().cloned().collect()
    }

    async fn alert(&self, id: &AlertId) -> Option<AlertSummary> {
        self.lock().alerts.get(id).cloned()
    }

    async fn deliveries(
        &self,
        id: &AlertId,
        state: Option<DeliveryState>,
    ) -> Option<Vec<DeliveryView>> {
        if !self.lock().alerts.contains_key(id) {
            return None;
        }
        let all = vec![
            delivery("p1", DeliveryState::Acknowledged),
            delivery("p2", DeliveryState::Attempting),
        ];
        Some(
            all.into_iter()
                .filter(|d| state.is_none_or(|s| d.state == s))
                .collect(),
        )
    }

    async fn speakers(&self, id: &AlertId) -> Option<Vec<SpeakerView>> {
        if !self.lock().alerts.contains_key(id) {
            return None;
        }
        Some(vec![
            speaker(
                "s1",
                SpeakerState::Reached,
                Some("RTCP RR from speaker 10.0.3.21:5005"),
            ),
            speaker("s2", SpeakerState::NoEvidence, None),
        ])
    }

    async fn relays(&self, id: &AlertId) -> Option<Vec<tocsin_router::RelayView>> {
        if !self.lock().alerts.contains_key(id) {
            return None;
        }
        Some(vec![tocsin_router::RelayView {
            kit: "upper".into(),
            device: tocsin_core::DeviceId::from("bd-0"),
            address: tocsin_core::Address::BeidouCard("0242407".into()),
            state: tocsin_router::RelayState::Confirmed,
            frame: tocsin_router::RelayFrame::Alert,
            tries: 1,
            people: 2,
            acks: 2,
            since: tocsin_core::Timestamp(0),
            reason: None,
        }])
    }

    async fn cancel(&self, id: &AlertId, by: &str) -> Result<AlertSummary, GatewayError> {
        let mut inner = self.lock();
        if let Some(e) = inner.fail_with.clone() {
            return Err(e);
        }
        let s = inner
            .alerts
            .get_mut(id)
            .ok_or_else(|| GatewayError::NotFound(format!("alert {id}")))?;
        if s.state == AlertState::Cancelled {
            return Err(GatewayError::Conflict(format!(
                "alert {id} is already cancelled"
            )));
        }
        s.state = AlertState::Cancelled;
        let s = s.clone();
        inner.log.push(("cancel".into(), id.to_string(), by.into()));
        Ok(s)
    }

    async fn update(
        &self,
        id: &AlertId,
        patch: AlertPatch,
        by: &str,
    ) -> Result<AlertSummary, GatewayError> {
        let mut inner = self.lock();
        if let Some(e) = inner.fail_with.clone() {
            return Err(e);
        }
        let s = inner
            .alerts
            .get_mut(id)
            .ok_or_else(|| GatewayError::NotFound(format!("alert {id}")))?;
        // As the daemon's router: a cancelled alert takes no update.
        if s.state == AlertState::Cancelled {
            return Err(GatewayError::Conflict(format!("alert {id} is cancelled")));
        }
        // The reference the daemon's update path would add, the same way.
        if let Some(r) = &patch.reference
            && let Some(list) = add_reference(s.alert.reference.as_deref(), r)
        {
            s.alert.reference = Some(list);
        }
        if let Some(g) = patch.grade {
            s.alert.grade = g;
        }
        if let Some(h) = patch.headline {
            s.alert.headline = h;
        }
        if let Some(t) = patch.text {
            s.alert.text = t;
        }
        if let Some(a) = patch.area {
            s.alert.area = a;
        }
        let s = s.clone();
        inner.log.push(("update".into(), id.to_string(), by.into()));
        Ok(s)
    }

    async fn devices(&self) -> Vec<DeviceView> {
        vec![DeviceView {
            id: DeviceId::from("modem-1"),
            bearer: Bearer::Sms,
            up: true,
            registered: true,
            signal: Some(21),
            last_error: None,
            sent: 40,
            received: 12,
            per_minute: 8.0,
        }]
    }

    fn events(&self) -> tokio::sync::broadcast::Receiver<GatewayEvent> {
        self.events.subscribe()
    }

    async fn metrics(&self) -> String {
        "# TYPE tocsin_alerts_total counter\ntocsin_alerts_total 3\n".into()
    }

    async fn health(&self) -> HealthReport {
        let ok = self.lock().healthy;
        HealthReport {
            ok,
            store: ok,
            devices_up: 1,
            devices_total: 2,
        }
    }
}
