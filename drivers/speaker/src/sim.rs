//! A simulated IP speaker, as a state machine: it joins a stream, checks sequence, timing
//! and payload, decodes the audio (placed by timestamp, so a lost packet is a gap of
//! silence), and sends RTCP receiver reports (RFC 3550 §6.4.2, with the loss and jitter
//! arithmetic of appendix A.1 and A.8). Seeded faults: packet loss, reordering, and
//! silence (it plays but never reports).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tocsin_core::Timestamp;
use tocsin_voice::{Codec, Pcm, RATE};

use crate::proto::SAMPLES_PER_PACKET;
use crate::wire::{ReceiverReport, ReportBlock, RtcpPacket, RtpPacket, ntp_middle, parse_compound};

/// How long after a BYE the speaker still takes the stream's packets: RTP and RTCP
/// travel on separate sockets, so the last packets can trail the goodbye.
const BYE_HOLD: Duration = Duration::from_millis(100);

/// The longest audio a simulated speaker keeps: 30 minutes.
const MAX_SAMPLES: usize = 30 * 60 * RATE as usize;

/// Injected faults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Probability that an RTP packet is lost on the way.
    #[serde(default)]
    pub loss: f64,
    /// Probability that an RTP packet is held back and arrives after the next one.
    #[serde(default)]
    pub reorder: f64,
    /// Never send receiver reports (the speaker plays, but gives no evidence).
    #[serde(default)]
    pub silent: bool,
}

/// The simulated speaker's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Time between receiver reports while a stream plays, in milliseconds.
    pub report_interval_ms: u64,
    /// Faults.
    #[serde(default)]
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            // RFC 3550's 5 s is long for tests; a real speaker may use that.
            report_interval_ms: 1000,
            faults: Faults::default(),
        }
    }
}

/// What the speaker observed of one stream (one SSRC).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamCheck {
    /// The stream's SSRC.
    pub ssrc: u32,
    /// Payload type of its packets.
    pub payload_type: u8,
    /// Packets received (duplicates included).
    pub received: u64,
    /// Packets expected from the first to the highest sequence number.
    pub expected: u64,
    /// Packets that arrived after a later one.
    pub out_of_order: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// The first packet had the marker bit.
    pub first_marker: bool,
    /// Packets whose timestamp was not 160 per sequence step from the first packet's.
    pub timestamp_errors: u64,
    /// Payloads that were not 160 bytes.
    pub size_errors: u64,
    /// Interarrival jitter (RFC 3550 A.8), timestamp units.
    pub jitter: u32,
    /// A BYE was received.
    pub ended: bool,
    /// Receiver reports sent about it.
    pub reports_sent: u32,
    /// Packets that arrived after its BYE (RTP and RTCP travel separately, so the last
    /// packets can trail the goodbye).
    pub after_bye: u64,
}

impl StreamCheck {
    /// Packets lost (expected less received, never negative).
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

#[derive(Debug)]
struct Rx {
    check: StreamCheck,
    source: SocketAddr,
    codec: Option<Codec>,
    base_seq: u16,
    max_seq: u16,
    cycles: u32,
    first_ts: u32,
    /// Sample index in `audio` where this stream's timestamp `first_ts` lies.
    audio_base: usize,
    transit: Option<i64>,
    jitter: f64,
    expected_prior: u64,
    received_prior: u64,
    last_sr: Option<(u32, Timestamp)>,
    seen: std::collections::HashSet<u32>,
}

impl Rx {
    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }
}

/// A simulated speaker.
#[derive(Debug)]
pub struct SimSpeaker {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    ssrc: u32,
    current: Option<Rx>,
    done: Vec<StreamCheck>,
    audio: Vec<i16>,
    held: Option<(SocketAddr, Vec<u8>)>,
    rtcp_dest: Option<SocketAddr>,
    next_report: Option<Timestamp>,
    /// A BYE arrived: the stream ends then.
    ending_at: Option<Timestamp>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    garbage: u64,
}

impl SimSpeaker {
    /// A speaker; `seed` drives its SSRC and faults.
    pub fn new(cfg: SimConfig, seed: u64, _now: Timestamp) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        SimSpeaker {
            ssrc: rng.random(),
            cfg,
            rng,
            current: None,
            done: Vec::new(),
            audio: Vec::new(),
            held: None,
            rtcp_dest: None,
            next_report: None,
            ending_at: None,
            transmits: VecDeque::new(),
            garbage: 0,
        }
    }

    /// This speaker's own SSRC (in its receiver reports).
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Replaces the faults.
    pub fn set_faults(&mut self, f: Faults) {
        self.cfg.faults = f;
    }

    /// Every stream so far, the current one last.
    pub fn streams(&self) -> Vec<StreamCheck> {
        let mut v = self.done.clone();
        if let Some(rx) = &self.current {
            v.push(rx.check.clone());
        }
        v
    }

    /// Datagrams that were neither RTP nor RTCP.
    pub fn garbage(&self) -> u64 {
        self.garbage
    }

    /// Everything heard, decoded, 8 kHz.
    pub fn audio(&self) -> Pcm {
        Pcm {
            rate: RATE,
            samples: self.audio.clone(),
        }
    }

    /// An RTP datagram arrived from `from`.
    pub fn handle_rtp(&mut self, now: Timestamp, from: SocketAddr, bytes: &[u8]) {
        if self.cfg.faults.loss > 0.0 && self.rng.random_bool(self.cfg.faults.loss.clamp(0.0, 1.0))
        {
            return;
        }
        if self.held.is_none()
            && self.cfg.faults.reorder > 0.0
            && self
                .rng
                .random_bool(self.cfg.faults.reorder.clamp(0.0, 1.0))
        {
            self.held = Some((from, bytes.to_vec()));
            return;
        }
        self.accept_rtp(now, from, bytes);
        if let Some((f, b)) = self.held.take() {
            self.accept_rtp(now, f, &b);
        }
    }

    fn accept_rtp(&mut self, now: Timestamp, from: SocketAddr, bytes: &[u8]) {
        let Ok(p) = RtpPacket::parse(bytes) else {
            self.garbage += 1;
            return;
        };
        if let Some(done) = self.done.iter_mut().rev().find(|s| s.ssrc == p.ssrc) {
            // A stream that said goodbye does not start again under the same SSRC.
            done.after_bye += 1;
            return;
        }
        if self
            .current
            .as_ref()
            .is_none_or(|rx| rx.check.ssrc != p.ssrc)
        {
            self.finish_stream(now);
            self.current = Some(Rx {
                check: StreamCheck {
                    ssrc: p.ssrc,
                    payload_type: p.payload_type,
                    first_marker: p.marker,
                    ..StreamCheck::default()
                },
                source: from,
                codec: Codec::from_payload_type(p.payload_type),
                base_seq: p.sequence,
                max_seq: p.sequence.wrapping_sub(1),
                cycles: 0,
                first_ts: p.timestamp,
                audio_base: self.audio.len(),
                transit: None,
                jitter: 0.0,
                expected_prior: 0,
                received_prior: 0,
                last_sr: None,
                seen: Default::default(),
            });
            self.next_report = Some(now + Duration::from_millis(self.cfg.report_interval_ms));
        }
        let Some(rx) = self.current.as_mut() else {
            return;
        };
        rx.check.received += 1;
        // Extended sequence number relative to the highest so far (RFC 3550 A.1).
        let delta = p.sequence.wrapping_sub(rx.max_seq) as i16;
        let ext = if delta > 0 {
            if p.sequence < rx.max_seq {
                rx.cycles = rx.cycles.wrapping_add(1 << 16);
            }
            rx.max_seq = p.sequence;
            rx.extended_max()
        } else {
            rx.check.out_of_order += u64::from(delta < 0);
            rx.extended_max()
                .wrapping_sub(u32::from(delta.unsigned_abs()))
        };
        if !rx.seen.insert(ext) {
            rx.check.duplicates += 1;
            rx.check.out_of_order -= u64::from(delta < 0);
            return;
        }
        rx.check.expected = u64::from(rx.extended_max().wrapping_sub(u32::from(rx.base_seq))) + 1;
        let steps = ext.wrapping_sub(u32::from(rx.base_seq));
        let offset = p.timestamp.wrapping_sub(rx.first_ts);
        if offset != steps.wrapping_mul(SAMPLES_PER_PACKET as u32) {
            rx.check.timestamp_errors += 1;
        }
        if p.payload.len() != SAMPLES_PER_PACKET {
            rx.check.size_errors += 1;
        }
        // Interarrival jitter in timestamp units (RFC 3550 A.8).
        let arrival = now.as_millis().wrapping_mul(i64::from(RATE) / 1000);
        let transit = arrival.wrapping_sub(i64::from(p.timestamp));
        if let Some(prev) = rx.transit {
            let d = (transit - prev).abs() as f64;
            rx.jitter += (d - rx.jitter) / 16.0;
            rx.check.jitter = rx.jitter as u32;
        }
        rx.transit = Some(transit);
        // Place the audio by timestamp.
        if let Some(codec) = rx.codec {
            let at = rx.audio_base.saturating_add(offset as usize);
            let end = at.saturating_add(p.payload.len());
            if end <= MAX_SAMPLES {
                if self.audio.len() < end {
                    self.audio.resize(end, 0);
                }
                if let Some(dst) = self.audio.get_mut(at..end) {
                    for (d, &c) in dst.iter_mut().zip(&p.payload) {
                        *d = codec.decode_sample(c);
                    }
                }
            }
        }
    }

    /// An RTCP datagram arrived from `from` (sender reports, goodbyes).
    pub fn handle_rtcp(&mut self, now: Timestamp, from: SocketAddr, bytes: &[u8]) {
        let (packets, err) = parse_compound(bytes);
        if err.is_some() {
            self.garbage += 1;
        }
        for p in packets {
            match p {
                RtcpPacket::SenderReport(sr) => {
                    self.rtcp_dest = Some(from);
                    if let Some(rx) = self.current.as_mut().filter(|rx| rx.check.ssrc == sr.ssrc) {
                        rx.last_sr = Some((ntp_middle(sr.ntp), now));
                    }
                }
                RtcpPacket::Goodbye { sources, .. }
                    if self
                        .current
                        .as_ref()
                        .is_some_and(|rx| sources.contains(&rx.check.ssrc)) =>
                {
                    self.ending_at = Some(now + BYE_HOLD);
                }
                _ => {}
            }
        }
    }

    /// Ends the current stream: a last report, then it is kept for inspection.
    fn finish_stream(&mut self, now: Timestamp) {
        if self.current.is_none() {
            return;
        }
        self.report(now);
        if let Some(mut rx) = self.current.take() {
            rx.check.ended = true;
            self.done.push(rx.check);
        }
        self.next_report = None;
        self.ending_at = None;
    }

    fn report(&mut self, now: Timestamp) {
        if self.cfg.faults.silent {
            return;
        }
        let Some(rx) = self.current.as_mut() else {
            return;
        };
        let expected = rx.check.expected;
        let received = rx.check.received.saturating_sub(rx.check.duplicates);
        let exp_int = expected.saturating_sub(rx.expected_prior);
        let rec_int = received.saturating_sub(rx.received_prior);
        rx.expected_prior = expected;
        rx.received_prior = received;
        let lost_int = exp_int.saturating_sub(rec_int);
        let fraction = (lost_int << 8)
            .checked_div(exp_int)
            .map_or(0, |f| f.min(255) as u8);
        let (lsr, dlsr) = match rx.last_sr {
            Some((mid, at)) => (
                mid,
                (now.since(at).as_millis() as u64 * 65536 / 1000) as u32,
            ),
            None => (0, 0),
        };
        let block = ReportBlock {
            ssrc: rx.check.ssrc,
            fraction_lost: fraction,
            cumulative_lost: i32::try_from(expected as i64 - received as i64).unwrap_or(i32::MAX),
            highest_sequence: rx.extended_max(),
            jitter: rx.check.jitter,
            last_sr: lsr,
            delay_since_last_sr: dlsr,
        };
        let mut bytes = Vec::new();
        RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: self.ssrc,
            reports: vec![block],
        })
        .emit(&mut bytes);
        let to = self.rtcp_dest.unwrap_or_else(|| {
            let mut a = rx.source;
            a.set_port(a.port().wrapping_add(1));
            a
        });
        rx.check.reports_sent += 1;
        self.transmits.push_back((to, bytes));
    }

    /// Time passed: a receiver report when one is due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.ending_at.is_some_and(|t| t <= now) {
            self.finish_stream(now);
            return;
        }
        if self.next_report.is_some_and(|t| t <= now) {
            self.report(now);
            self.next_report =
                Some(now + Duration::from_millis(self.cfg.report_interval_ms.max(1)));
        }
    }

    /// The next datagram to send (receiver reports, from the RTCP socket).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// When the next report (or the end of a stream that said goodbye) is due.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        [self.next_report, self.ending_at]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GroupConfig, SpeakerConfig};
    use crate::proto::{Socket, Speakers};
    use tocsin_channel::{DriverCommand, DriverEvent, Outbound};
    use tocsin_core::{Address, AttemptId};

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    /// Driver and speaker stepped together on a virtual clock; returns the speaker, the
    /// driver's events and the speaker's report count.
    fn run(faults: Faults, ms: u64) -> (SimSpeaker, Vec<DriverEvent>) {
        let rtp: SocketAddr = "127.0.0.1:5004".parse().unwrap();
        let speaker_rtcp: SocketAddr = "127.0.0.1:5005".parse().unwrap();
        let driver_rtp: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let driver_rtcp: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let mut cfg = SpeakerConfig::new(rtp);
        cfg.codec = Codec::Pcmu;
        cfg.groups = vec![GroupConfig {
            name: "v".into(),
            rtp,
            rtcp: None,
            speakers: vec![speaker_rtcp.to_string()],
        }];
        let mut d = Speakers::new(cfg, "t", 3, T0);
        d.handle_sockets_opened(T0);
        let mut sp = SimSpeaker::new(
            SimConfig {
                report_interval_ms: 500,
                faults,
            },
            4,
            T0,
        );
        d.submit(
            T0,
            DriverCommand::Send(Outbound {
                attempt: AttemptId(1),
                to: Address::Speaker("v".into()),
                text: "【红色预警】山洪".into(),
                want_report: false,
            }),
        );
        let r = d.poll_render().unwrap();
        // A ramp, so the decoded audio can be compared sample by sample.
        let samples: Vec<i16> = (0..ms * 8).map(|i| ((i % 400) as i16 - 200) * 50).collect();
        d.handle_rendered(
            T0,
            r.id,
            Ok(Pcm {
                rate: 8000,
                samples,
            }),
            vec![],
        );
        let mut now = T0;
        let mut events = Vec::new();
        loop {
            while let Some(t) = d.poll_transmit() {
                match t.socket {
                    Socket::Rtp => sp.handle_rtp(now, driver_rtp, &t.bytes),
                    Socket::Rtcp => sp.handle_rtcp(now, driver_rtcp, &t.bytes),
                }
            }
            while let Some((_, b)) = sp.poll_transmit() {
                d.handle_rtcp(now, speaker_rtcp, &b);
            }
            events.extend(std::iter::from_fn(|| d.poll_event()));
            if let Some(r) = d.poll_report() {
                assert_eq!(r.reached.is_empty(), !r.no_evidence.is_empty());
                break;
            }
            let next = [d.poll_timeout(), sp.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { break };
            now = next;
            d.handle_timeout(now);
            sp.handle_timeout(now);
        }
        (sp, events)
    }

    #[test]
    fn a_clean_stream_is_checked_decoded_and_reported() {
        let (sp, events) = run(Faults::default(), 2000);
        let s = &sp.streams()[0];
        assert_eq!((s.received, s.expected, s.lost()), (100, 100, 0));
        assert!(s.first_marker && s.ended);
        assert_eq!(
            (s.timestamp_errors, s.size_errors, s.out_of_order),
            (0, 0, 0)
        );
        assert_eq!(s.payload_type, 0);
        assert_eq!(s.jitter, 0, "virtual clock: no jitter");
        // The decoded audio is the ramp through µ-law.
        let audio = sp.audio();
        assert_eq!(audio.samples.len(), 16000);
        let want = Codec::Pcmu.decode(&Codec::Pcmu.encode(&[(5 - 200) * 50]));
        assert_eq!(audio.samples[5], want[0]);
        let delivered: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, DriverEvent::Delivered { .. }))
            .collect();
        assert_eq!(delivered.len(), 1);
        // The first report, half a second in: 25 packets (0-480 ms) so far, none lost.
        assert!(
            format!("{delivered:?}").contains(": 25 packets received, 0 lost"),
            "{delivered:?}"
        );
    }

    #[test]
    fn loss_and_reordering_are_seen_by_both_sides() {
        let (sp, events) = run(
            Faults {
                loss: 0.1,
                reorder: 0.1,
                silent: false,
            },
            4000,
        );
        let s = &sp.streams()[0];
        assert!(s.lost() > 5, "{s:?}");
        assert!(s.out_of_order > 3, "{s:?}");
        assert_eq!(s.timestamp_errors, 0, "timestamps follow sequence numbers");
        // Lost packets are silence at their place: the audio is still 4 s long (or
        // ends where the last packet received ends).
        assert!(sp.audio().samples.len() >= 31_000);
        let ev = format!("{events:?}");
        assert!(ev.contains("Delivered"), "{ev}");
    }

    #[test]
    fn a_silent_speaker_gives_no_evidence() {
        let (sp, events) = run(
            Faults {
                silent: true,
                ..Faults::default()
            },
            1000,
        );
        assert_eq!(sp.streams()[0].received, 50);
        assert_eq!(sp.streams()[0].reports_sent, 0);
        assert!(
            events
                .iter()
                .all(|e| !matches!(e, DriverEvent::Delivered { .. }))
        );
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let mut sp = SimSpeaker::new(SimConfig::default(), 1, T0);
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        sp.handle_rtp(T0, from, b"\x00\x01");
        sp.handle_rtcp(T0, from, b"\x00\x01\x02\x03");
        assert_eq!(sp.garbage(), 2);
        assert!(sp.streams().is_empty());
    }
}
