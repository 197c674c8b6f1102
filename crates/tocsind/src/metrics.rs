//! Prometheus metrics, rendered by hand in the text exposition format. Labels are bounded:
//! record kind, bearer, device name — never a phone number or a person.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;
use tocsin_channel::{DeviceEvent, DriverEvent, DriverHandle};
use tocsin_core::DeviceId;
use tocsin_router::{AlertState, Record, Router};

/// The log's hash chain as checked at start: not yet known, intact, or broken.
#[derive(Clone, Default)]
pub struct AuditState(std::sync::Arc<std::sync::atomic::AtomicU8>);

impl AuditState {
    const INTACT: u8 = 1;
    const BROKEN: u8 = 2;

    /// The check finished.
    pub fn set(&self, intact: bool) {
        let v = if intact { Self::INTACT } else { Self::BROKEN };
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    /// `Some(intact)` once the check finished.
    pub fn get(&self) -> Option<bool> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            Self::INTACT => Some(true),
            Self::BROKEN => Some(false),
            _ => None,
        }
    }
}

/// Counters the engine keeps.
#[derive(Default)]
pub struct Metrics {
    /// The start-time check of the log's chain (`tocsind audit` in the background).
    pub audit: AuditState,
    records: BTreeMap<&'static str, u64>,
    commits: u64,
    commit_seconds_sum: f64,
    commit_seconds_max: f64,
    device_events: BTreeMap<(String, &'static str), u64>,
}

impl Metrics {
    /// A batch of records was committed in `took`.
    pub fn committed(&mut self, records: &[Record], took: Duration) {
        for r in records {
            *self.records.entry(r.kind()).or_default() += 1;
        }
        self.commits += 1;
        let s = took.as_secs_f64();
        self.commit_seconds_sum += s;
        self.commit_seconds_max = self.commit_seconds_max.max(s);
    }

    /// A driver reported something.
    pub fn device_event(&mut self, ev: &DeviceEvent) {
        let kind = match ev.event {
            DriverEvent::Accepted { .. } => "accepted",
            DriverEvent::Sent { .. } => "sent",
            DriverEvent::Delivered { .. } => "delivered",
            DriverEvent::Failed { .. } => "failed",
            DriverEvent::Inbound { .. } => "inbound",
            DriverEvent::Health(_) => "health",
            DriverEvent::Unrecognized { .. } => "unrecognized",
            DriverEvent::Frame { .. } => "frame",
        };
        *self
            .device_events
            .entry((ev.device.0.clone(), kind))
            .or_default() += 1;
    }

    /// Reports of one kind (`sent`, `inbound`, ...) from one device since start.
    pub fn device_count(&self, device: &DeviceId, kind: &'static str) -> u64 {
        self.device_events
            .get(&(device.0.clone(), kind))
            .copied()
            .unwrap_or(0)
    }

    /// The text exposition.
    pub fn render(&self, router: &Router, drivers: &BTreeMap<DeviceId, DriverHandle>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tocsin_records_total Records committed to the log, by kind."
        );
        let _ = writeln!(out, "# TYPE tocsin_records_total counter");
        for (kind, n) in &self.records {
            let _ = writeln!(out, "tocsin_records_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP tocsin_store_commits_total Store transactions (group commits)."
        );
        let _ = writeln!(out, "# TYPE tocsin_store_commits_total counter");
        let _ = writeln!(out, "tocsin_store_commits_total {}", self.commits);
        let _ = writeln!(
            out,
            "# HELP tocsin_store_commit_seconds Time spent committing, sum and max."
        );
        let _ = writeln!(out, "# TYPE tocsin_store_commit_seconds gauge");
        let _ = writeln!(
            out,
            "tocsin_store_commit_seconds{{stat=\"sum\"}} {}",
            self.commit_seconds_sum
        );
        let _ = writeln!(
            out,
            "tocsin_store_commit_seconds{{stat=\"max\"}} {}",
            self.commit_seconds_max
        );
        let _ = writeln!(
            out,
            "# HELP tocsin_device_events_total Driver reports, by device and kind."
        );
        let _ = writeln!(out, "# TYPE tocsin_device_events_total counter");
        for ((device, kind), n) in &self.device_events {
            let _ = writeln!(
                out,
                "tocsin_device_events_total{{device=\"{}\",kind=\"{kind}\"}} {n}",
                escape(device)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tocsin_device_up Whether a device answers (1) or not (0)."
        );
        let _ = writeln!(out, "# TYPE tocsin_device_up gauge");
        for (id, caps, h) in router.device_health() {
            let _ = writeln!(
                out,
                "tocsin_device_up{{device=\"{}\",bearer=\"{}\"}} {}",
                escape(id.as_str()),
                caps.bearer,
                u8::from(h.up)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tocsin_driver_queue_free Free slots in each driver's command queue."
        );
        let _ = writeln!(out, "# TYPE tocsin_driver_queue_free gauge");
        for (id, d) in drivers {
            let _ = writeln!(
                out,
                "tocsin_driver_queue_free{{device=\"{}\"}} {}",
                escape(id.as_str()),
                d.commands.capacity()
            );
        }
        let alerts = router.alerts();
        let active = alerts
            .iter()
            .filter(|a| a.state == AlertState::Active)
            .count();
        let _ = writeln!(
            out,
            "# HELP tocsin_alerts_active Alerts with open 叫应 records."
        );
        let _ = writeln!(out, "# TYPE tocsin_alerts_active gauge");
        let _ = writeln!(out, "tocsin_alerts_active {active}");
        if let Some(intact) = self.audit.get() {
            let _ = writeln!(
                out,
                "# HELP tocsin_audit_chain_intact Whether every record of the log chained to the one before it when checked at start (1) or not (0)."
            );
            let _ = writeln!(out, "# TYPE tocsin_audit_chain_intact gauge");
            let _ = writeln!(out, "tocsin_audit_chain_intact {}", u8::from(intact));
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
