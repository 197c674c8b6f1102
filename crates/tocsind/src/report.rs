//! The 叫应 report: what operators read at the end of a campaign, per town, with the list
//! of people not woken.

use std::fmt::Write;
use tocsin_router::{AlertSummary, Counts, DeliveryState, DeliveryView};

fn n(c: &Counts, s: DeliveryState) -> u32 {
    c.by_state.get(&s).copied().unwrap_or(0)
}

/// Renders the final report as plain text.
pub fn render(summary: &AlertSummary, deliveries: &[DeliveryView]) -> String {
    let mut out = String::new();
    let a = &summary.alert;
    let _ = writeln!(
        out,
        "叫应 report — {} ({}{})",
        a.headline,
        a.grade,
        if a.exercise { ", exercise" } else { "" }
    );
    let _ = writeln!(out, "alert {}  state {:?}", a.id, summary.state);
    let _ = writeln!(
        out,
        "{:<14} {:>7} {:>8} {:>8} {:>6} {:>9} {:>9} {:>9}",
        "town", "targets", "reached", "ack", "late", "escalated", "confirmed", "unreached"
    );
    let row = |out: &mut String, name: &str, c: &Counts| {
        let acked = n(c, DeliveryState::Acknowledged);
        // People the warning actually reached (delivered, or they answered): an escalated
        // or door-knock-confirmed record whose own message never arrived is not counted.
        let reached = c.reached;
        let _ = writeln!(
            out,
            "{:<14} {:>7} {:>8} {:>8} {:>6} {:>9} {:>9} {:>9}",
            truncate(name, 14),
            c.targets,
            reached,
            acked.saturating_sub(c.late),
            c.late,
            c.escalated,
            n(c, DeliveryState::Confirmed),
            n(c, DeliveryState::Unreached)
        );
    };
    for (town, c) in &summary.by_town {
        row(&mut out, town, c);
    }
    row(&mut out, "ALL", &summary.counts);
    let _ = writeln!(
        out,
        "attempts {}  rejected replies {}  (ack = in time; late acks counted separately)",
        summary.counts.attempts, summary.counts.rejected_replies
    );
    let not_woken: Vec<&DeliveryView> = deliveries
        .iter()
        .filter(|d| matches!(d.state, DeliveryState::Unreached | DeliveryState::Escalated))
        .collect();
    if !not_woken.is_empty() {
        let _ = writeln!(out, "未叫醒 — not woken ({}):", not_woken.len());
        for d in not_woken.iter().take(40) {
            let _ = writeln!(
                out,
                "  {:<10} {:<8} {:<16} {:?}{}",
                d.person,
                d.name,
                d.town,
                d.state,
                d.escalated_to
                    .as_ref()
                    .map(|s| format!(" → door-knock by {s}"))
                    .unwrap_or_default()
            );
        }
        if not_woken.len() > 40 {
            let _ = writeln!(
                out,
                "  … and {} more (GET /v1/alerts/{}/deliveries?state=unreached)",
                not_woken.len() - 40,
                a.id
            );
        }
    }
    out
}

fn truncate(s: &str, width: usize) -> String {
    s.chars().take(width).collect()
}
