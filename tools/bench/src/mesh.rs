//! `tocsin-bench mesh`: a red alert to the leads of a Meshtastic mesh, through the REAL
//! router, the REAL mesh driver state machine (`tocsin_meshtastic::proto::Radio`) and the
//! REAL simulated radio and mesh (`tocsin_meshtastic::sim::SimRadio`), stepped together on
//! a virtual clock with a serial-line delay between driver and radio.
//!
//! The radio puts one packet on the air at a time (`--airtime-ms` each); a text reaches a
//! lead `hops × hop latency` after it left the air, the lead's node acks it back over the
//! same path, and the lead answers `1 <code>` after `--reply-secs`. The figure is the
//! time from the alert being accepted until the last lead's ack is counted by the router,
//! against the lower bound the airtime allows: an oracle that puts every text on the air
//! back to back, farthest leads first, and whose leads all answer on time.

use anyhow::{Result, bail};
use std::time::Duration;
use tocsin_channel::DeviceEvent;
use tocsin_core::{AckKey, Address, DeviceId};
use tocsin_meshtastic::config::MeshConfig;
use tocsin_meshtastic::proto::Radio;
use tocsin_meshtastic::sim::{NodeScript, ReplyBehaviour, SimConfig, SimRadio};
use tocsin_router::{DeviceInfo, Output, Router, RouterConfig};

use crate::beidou::{Observed, T0, Wire, plan, policies, ratio};

/// Options of the mesh benchmark.
#[derive(Debug, clap::Args)]
pub struct MeshArgs {
    /// Leads with a node on the mesh.
    #[arg(long, default_value_t = 60)]
    pub leads: u32,
    /// Time on air of one packet, ms (about 2 s for a full packet on LongFast).
    #[arg(long, default_value_t = 2_000)]
    pub airtime_ms: u64,
    /// Time per hop for a packet to travel, ms.
    #[arg(long, default_value_t = 2_500)]
    pub hop_latency_ms: u64,
    /// Farthest lead, in hops (leads are spread evenly from 1 to this).
    #[arg(long, default_value_t = 3)]
    pub max_hops: u32,
    /// How long a lead takes to answer once the text reached the node, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub reply_secs: f64,
    /// Texts per minute the driver and router may put on the air; 0: as fast as the
    /// airtime allows (60 000 / airtime-ms).
    #[arg(long, default_value_t = 0.0)]
    pub per_minute: f64,
    /// One-way delay of the serial line between the driver and its radio, ms.
    #[arg(long, default_value_t = 20)]
    pub link_ms: u64,
    /// Seed of the simulated mesh.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Which end of the serial line receives a chunk.
#[derive(Clone, Copy, Debug)]
enum End {
    Driver,
    Radio,
}

/// Figures of one run.
#[derive(Debug)]
pub(crate) struct MeshFigures {
    pub first_attempts: usize,
    pub all_first_out: f64,
    pub acked: usize,
    pub last_ack: f64,
    pub bound: f64,
    pub airtime_bound: f64,
    pub attempts: u32,
    pub failed: u32,
    pub rejected: u32,
    pub refusals: u32,
}

fn node(i: u32) -> u32 {
    0x1000_0000 + i
}

/// Hops to lead `i`: spread evenly from 1 to `max_hops`.
fn hops(i: u32, max_hops: u32) -> u32 {
    1 + i % max_hops.max(1)
}

/// The oracle's time to the last ack: texts on the air back to back from the alert,
/// longest tails first (tail: both ways over the path plus the lead's answer), each ack
/// counted when it reaches the radio.
fn bound_s(args: &MeshArgs) -> f64 {
    let air = args.airtime_ms as f64 / 1e3;
    let mut tails: Vec<f64> = (0..args.leads)
        .map(|i| {
            2.0 * f64::from(hops(i, args.max_hops)) * args.hop_latency_ms as f64 / 1e3
                + args.reply_secs
        })
        .collect();
    tails.sort_by(|a, b| b.total_cmp(a));
    tails
        .iter()
        .enumerate()
        .map(|(k, tail)| (k as f64 + 1.0) * air + tail)
        .fold(0.0, f64::max)
}

/// Runs the campaign until every lead's ack is counted (or a virtual day passed).
pub(crate) fn run_mesh(args: &MeshArgs) -> Result<MeshFigures> {
    if args.leads == 0 || args.airtime_ms == 0 {
        bail!("--leads and --airtime-ms must be at least 1");
    }
    let per_minute = if args.per_minute > 0.0 {
        args.per_minute
    } else {
        60_000.0 / args.airtime_ms as f64
    };
    let nodes = (0..args.leads)
        .map(|i| NodeScript {
            hops: hops(i, args.max_hops),
            ..NodeScript::new(
                node(i),
                &format!("组长{i}"),
                ReplyBehaviour::Reply {
                    min_secs: args.reply_secs,
                    max_secs: args.reply_secs,
                },
            )
        })
        .collect();
    let mut sim = SimRadio::new(
        SimConfig {
            airtime_ms: args.airtime_ms,
            hop_latency_ms: args.hop_latency_ms,
            nodes,
            ..SimConfig::default()
        },
        args.seed,
        T0,
    );
    sim.handle_client_connected(T0);
    let mut cfg = MeshConfig::serial("sim");
    cfg.per_minute = per_minute;
    let device = DeviceId::from("mesh-0");
    let mut radio = Radio::new(cfg.clone(), T0);
    radio.handle_port_opened(T0);
    let mut router = Router::new(RouterConfig {
        policies: policies((f64::from(args.leads) * 60.0 / per_minute) as u64),
        ack_key: AckKey::new(b"bench-district-secret".to_vec()),
        devices: vec![DeviceInfo {
            id: device.clone(),
            caps: cfg.capabilities(),
            line: None,
        }],
    });
    let mut wire = Wire::new(Duration::from_millis(args.link_ms));
    let mut obs = Observed::default();
    let mut now = T0;
    let mut alerted = false;
    let mut start = T0;
    let n = args.leads as usize;
    let horizon = T0 + Duration::from_secs(24 * 3600);
    loop {
        // Settle at `now`.
        loop {
            let mut moved = false;
            while let Some((to, bytes)) = wire.take_due(now) {
                moved = true;
                match to {
                    End::Radio => sim.handle_rx(now, &bytes),
                    End::Driver => radio.handle_rx(now, &bytes),
                }
            }
            while let Some(b) = radio.poll_transmit() {
                wire.put(now, End::Radio, b);
                moved = true;
            }
            while let Some(b) = sim.poll_transmit() {
                wire.put(now, End::Driver, b);
                moved = true;
            }
            while let Some(event) = radio.poll_event() {
                moved = true;
                obs.event(now, &event);
                router.handle_device_event(
                    now,
                    DeviceEvent {
                        device: device.clone(),
                        at: now,
                        event,
                    },
                );
            }
            while let Some(out) = router.poll_output() {
                moved = true;
                match out {
                    Output::Record(r) => obs.record(r),
                    Output::Command { command, .. } => radio.submit(now, command),
                }
            }
            if !moved {
                break;
            }
        }
        if !alerted && radio.is_ready() {
            // The alert is accepted once the radio has streamed its node table, as in a
            // running gateway; the figures' clock starts here.
            alerted = true;
            start = now;
            router.handle_alert(
                now,
                plan("bench-mesh-1", now, args.leads, |i| {
                    Address::MeshNode(node(i))
                }),
            )?;
            continue;
        }
        if obs.all_sent(n) && obs.acks.len() >= n {
            break;
        }
        let next = [
            radio.poll_timeout(),
            sim.poll_timeout(),
            router.poll_timeout(),
            wire.next(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next.filter(|t| *t <= horizon) else {
            break;
        };
        now = next.max(now);
        sim.handle_timeout(now);
        if radio.poll_timeout().is_some_and(|t| t <= now) {
            radio.handle_timeout(now);
        }
        if router.poll_timeout().is_some_and(|t| t <= now) {
            router.handle_timeout(now);
        }
    }
    if !alerted {
        bail!("the simulated radio never completed its handshake");
    }
    let air = args.airtime_ms as f64 / 1e3;
    Ok(MeshFigures {
        first_attempts: obs.first.len(),
        all_first_out: Observed::last(start, obs.sent.values().copied()),
        acked: obs.acks.len(),
        last_ack: Observed::last(start, obs.acks.iter().copied()),
        bound: bound_s(args),
        airtime_bound: f64::from(args.leads) * air,
        attempts: obs.attempts,
        failed: obs.failed,
        rejected: obs.rejected,
        refusals: sim.refusals(),
    })
}

/// Runs the benchmark and prints its figures.
pub fn run(args: &MeshArgs) -> Result<()> {
    let f = run_mesh(args)?;
    println!("mesh.input.leads {} count", args.leads);
    println!("mesh.input.airtime {:.1} s", args.airtime_ms as f64 / 1e3);
    println!("mesh.first_attempts {} count", f.first_attempts);
    println!("mesh.all_first_out {:.1} s", f.all_first_out);
    println!("mesh.airtime_bound {:.1} s", f.airtime_bound);
    println!("mesh.acked {} count", f.acked);
    println!("mesh.last_ack {:.1} s", f.last_ack);
    println!("mesh.bound {:.1} s", f.bound);
    println!("mesh.ratio {:.4} ratio", ratio(f.last_ack, f.bound));
    println!("mesh.attempts {} count", f.attempts);
    println!("mesh.failed {} count", f.failed);
    println!("mesh.rejected_replies {} count", f.rejected);
    println!("mesh.radio_refusals {} count", f.refusals);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(leads: u32) -> MeshArgs {
        MeshArgs {
            leads,
            airtime_ms: 2_000,
            hop_latency_ms: 2_500,
            max_hops: 3,
            reply_secs: 30.0,
            per_minute: 0.0,
            link_ms: 20,
            seed: 1,
        }
    }

    #[test]
    fn the_bound_puts_the_farthest_leads_first() {
        // 3 leads at 1, 2, 3 hops: tails 35, 40, 45 s; slots end at 2, 4, 6 s.
        assert_eq!(bound_s(&args(3)), 47.0);
    }

    #[test]
    fn every_lead_acks_close_to_the_airtime_bound() {
        let a = args(12);
        let f = run_mesh(&a).unwrap();
        assert_eq!((f.first_attempts, f.acked), (12, 12), "{f:?}");
        assert_eq!((f.failed, f.rejected, f.refusals), (0, 0, 0), "{f:?}");
        // Texts go out back to back (one per airtime slot from the alert).
        assert!((22.0..23.0).contains(&f.all_first_out), "{f:?}");
        // The router sends in target order, not farthest first as the oracle does: the
        // last lead (3 hops) costs 10 s more than the bound's last (1 hop).
        assert!(f.last_ack >= f.bound, "{f:?}");
        assert!(ratio(f.last_ack, f.bound) < 1.2, "{f:?}");
    }
}
