//! Status reports matched to the messages they are about.
//!
//! A status report names its message by TP-MR, an 8-bit counter the modem wraps after 256
//! submits, and by TP-RA, the recipient. The MR alone is not enough: after 256 sends a late
//! report for a phone that was off would mark another person's warning delivered. So a
//! report matches an awaited part only when both agree, the recipient compared as a number
//! (`13800138000`, `+8613800138000` and an international number sent with an unknown type
//! are the same). A report matching nothing is not applied: it comes back as
//! `Unrecognized`, so it is recorded. When an MR is reused for another recipient both parts
//! stay awaited, each with its own recipient; when two awaited parts share MR and recipient
//! (the same person twice, 256 sends apart) the one submitted nearest the report's TP-SCTS
//! is taken, or the older one when the report carries no usable time.
//!
//! What is awaited is bounded ([`MAX_AWAITED`] parts): past it the oldest message is
//! forgotten (its report, if it ever comes, is unrecognized; the router's deadline decides).

use std::collections::{HashMap, VecDeque};

use tocsin_channel::DriverEvent;
use tocsin_core::{AttemptId, PhoneNumber, Timestamp};

use crate::pdu::{self, StatusClass, StatusReport};

/// Most parts awaiting a status report, across all messages.
pub const MAX_AWAITED: usize = 2048;

/// One submitted part whose report is awaited.
#[derive(Clone, Debug)]
struct Part {
    mr: u8,
    to: PhoneNumber,
    attempt: AttemptId,
    sent_at: Timestamp,
}

/// One message's reports so far.
#[derive(Debug, Default)]
struct Progress {
    /// Parts sent whose final report has not come.
    pending: usize,
    /// Every part is sent (a report before that cannot finish the message).
    complete: bool,
    /// The reports of its parts, as evidence.
    evidence: Vec<String>,
}

/// The status reports a modem awaits. See the module documentation.
#[derive(Debug)]
pub struct Awaited {
    parts: VecDeque<Part>,
    messages: HashMap<AttemptId, Progress>,
    cap: usize,
    default_country: String,
}

impl Awaited {
    /// Nothing awaited; national numbers in reports belong to `default_country`.
    pub fn new(default_country: &str) -> Self {
        Self::with_cap(default_country, MAX_AWAITED)
    }

    /// Like [`Self::new`], with another bound.
    pub fn with_cap(default_country: &str, cap: usize) -> Self {
        Awaited {
            parts: VecDeque::new(),
            messages: HashMap::new(),
            cap: cap.max(1),
            default_country: default_country.to_owned(),
        }
    }

    /// Parts awaiting a report.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether nothing is awaited.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// A part of `attempt` to `to` went out with `mr`: its report is awaited.
    pub fn part_sent(&mut self, attempt: AttemptId, mr: u8, to: &PhoneNumber, at: Timestamp) {
        while self.parts.len() >= self.cap {
            // Full: the oldest message can no longer be told delivered; forget it whole.
            let Some(oldest) = self.parts.front().map(|p| p.attempt) else {
                break;
            };
            tracing::debug!(%oldest, "too many status reports awaited; the oldest is forgotten");
            self.forget(oldest);
        }
        self.parts.push_back(Part {
            mr,
            to: to.clone(),
            attempt,
            sent_at: at,
        });
        self.messages.entry(attempt).or_default().pending += 1;
    }

    /// Every part of `attempt` is out. Its `Delivered` when every report came already.
    pub fn complete(&mut self, attempt: AttemptId) -> Option<DriverEvent> {
        let p = self.messages.get_mut(&attempt)?;
        p.complete = true;
        self.finish_if_delivered(attempt)
    }

    /// `attempt` will not be reported on (it failed or was dropped): stop awaiting it.
    pub fn forget(&mut self, attempt: AttemptId) {
        self.parts.retain(|p| p.attempt != attempt);
        self.messages.remove(&attempt);
    }

    /// A status report (`hex` its PDU, for the evidence): the event it means, if any.
    /// `Unrecognized` when it matches no awaited part.
    pub fn report(&mut self, sr: &StatusReport, hex: &str) -> Option<DriverEvent> {
        let Some(i) = self.find(sr) else {
            let same_mr = self.parts.iter().any(|p| p.mr == sr.mr);
            let raw = if same_mr {
                format!(
                    "status report for MR {} to {:?}, not the recipient of the message with that MR: {hex}",
                    sr.mr, sr.recipient
                )
            } else {
                format!(
                    "status report for unknown MR {} to {:?}: {hex}",
                    sr.mr, sr.recipient
                )
            };
            return Some(DriverEvent::Unrecognized { raw });
        };
        let class = pdu::status_class(sr.status);
        if class == StatusClass::TemporaryRetrying {
            return None; // The SMSC keeps trying; a final report follows.
        }
        let part = self.parts.remove(i)?;
        let attempt = part.attempt;
        let progress = self.messages.get_mut(&attempt)?;
        progress.pending = progress.pending.saturating_sub(1);
        progress.evidence.push(hex.to_owned());
        match class {
            StatusClass::Delivered => self.finish_if_delivered(attempt),
            StatusClass::Permanent | StatusClass::TemporaryStopped => {
                self.forget(attempt);
                Some(DriverEvent::Failed {
                    attempt,
                    retryable: class == StatusClass::TemporaryStopped,
                    reason: format!("status report TP-ST 0x{:02X}", sr.status),
                })
            }
            StatusClass::TemporaryRetrying => None,
        }
    }

    fn finish_if_delivered(&mut self, attempt: AttemptId) -> Option<DriverEvent> {
        let p = self.messages.get(&attempt)?;
        if !(p.complete && p.pending == 0) {
            return None;
        }
        let p = self.messages.remove(&attempt)?;
        Some(DriverEvent::Delivered {
            attempt,
            evidence: p.evidence.join(" "),
        })
    }

    /// The awaited part a report is about: same MR and recipient; of several, the one
    /// submitted nearest the report's TP-SCTS, else the oldest.
    fn find(&self, sr: &StatusReport) -> Option<usize> {
        let mut candidates = self
            .parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.mr == sr.mr && self.same_number(&p.to, &sr.recipient));
        let first = candidates.next()?;
        let Some(submitted) = sr.scts.and_then(|s| s.to_timestamp()) else {
            return Some(first.0);
        };
        let distance = |p: &Part| {
            p.sent_at
                .as_millis()
                .saturating_sub(submitted.as_millis())
                .unsigned_abs()
        };
        let best = std::iter::once(first)
            .chain(candidates)
            .min_by_key(|(i, p)| (distance(p), *i))?;
        Some(best.0)
    }

    /// Whether the reported recipient is `to`: the same number once normalised, or the
    /// same digits (an international number given with an unknown type of number).
    fn same_number(&self, to: &PhoneNumber, reported: &str) -> bool {
        if PhoneNumber::parse(reported, &self.default_country).is_ok_and(|p| &p == to) {
            return true;
        }
        let digits: String = reported.chars().filter(char::is_ascii_digit).collect();
        let digits = digits.strip_prefix("00").unwrap_or(&digits);
        !digits.is_empty() && digits == to.digits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{Scts, Tpdu, encode_status_report, hex_decode, parse_pdu};

    const T0: Timestamp = Timestamp(1_719_801_000_000); // 2024-07-01 02:30:00 UTC

    /// The STATUS-REPORT vector of protocols.md §4.6: MR 0x2A to +8613800138000, delivered.
    const VECTOR: &str = "0891683108100005F0062A0D91683108108300F0427010010300234270100103502300";

    fn number(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s, "86").unwrap()
    }

    fn parse(hex: &str) -> StatusReport {
        match parse_pdu(&hex_decode(hex).unwrap(), true).unwrap().tpdu {
            Tpdu::StatusReport(sr) => sr,
            other => panic!("{other:?}"),
        }
    }

    /// A report as the network would send it: `to` as written (national or `+`), sent at
    /// `submitted`.
    fn report(mr: u8, to: &str, submitted: Timestamp, status: u8) -> String {
        let at = Scts::from_timestamp(submitted, 32).unwrap();
        encode_status_report(Some("+8613800100500"), mr, to, &at, &at, status)
            .unwrap()
            .to_hex()
    }

    fn one_part(a: &mut Awaited, attempt: u64, mr: u8, to: &str, at: Timestamp) {
        a.part_sent(AttemptId(attempt), mr, &number(to), at);
        assert_eq!(a.complete(AttemptId(attempt)), None);
    }

    #[test]
    fn the_protocol_vector_is_delivered_to_its_own_recipient_only() {
        let sr = parse(VECTOR);
        assert_eq!((sr.mr, sr.recipient.as_str()), (0x2A, "+8613800138000"));
        let mut a = Awaited::new("86");
        one_part(&mut a, 1, 0x2A, "+8613900139000", T0);
        let ev = a.report(&sr, VECTOR);
        assert!(
            matches!(&ev, Some(DriverEvent::Unrecognized { raw }) if raw.contains("not the recipient")),
            "{ev:?}"
        );
        assert_eq!(a.len(), 1, "the other person's message is still awaited");
        one_part(&mut a, 2, 0x2A, "+8613800138000", T0);
        assert_eq!(
            a.report(&sr, VECTOR),
            Some(DriverEvent::Delivered {
                attempt: AttemptId(2),
                evidence: VECTOR.into()
            })
        );
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn national_and_international_forms_of_the_number_match() {
        for written in [
            "13800138000",
            "+8613800138000",
            "8613800138000",
            "008613800138000",
        ] {
            let hex = report(7, written, T0, 0x00);
            let mut a = Awaited::new("86");
            one_part(&mut a, 1, 7, "+8613800138000", T0);
            assert!(
                matches!(
                    a.report(&parse(&hex), &hex),
                    Some(DriverEvent::Delivered { .. })
                ),
                "{written}"
            );
        }
        let hex = report(7, "13800138001", T0, 0x00);
        let mut a = Awaited::new("86");
        one_part(&mut a, 1, 7, "+8613800138000", T0);
        assert!(matches!(
            a.report(&parse(&hex), &hex),
            Some(DriverEvent::Unrecognized { .. })
        ));
    }

    #[test]
    fn a_late_report_after_the_mr_wrapped_marks_only_its_own_message() {
        let mut a = Awaited::new("86");
        // MR 5 to person A (phone off), then 256 sends later MR 5 to person B.
        one_part(&mut a, 1, 5, "+8613800000001", T0);
        for i in 0..255u64 {
            let mr = u8::try_from((6 + i) % 256).unwrap();
            one_part(&mut a, 100 + i, mr, "+8613800000099", T0);
        }
        let later = T0 + std::time::Duration::from_secs(600);
        one_part(&mut a, 2, 5, "+8613800000002", later);
        // A's phone comes back: its late report names A.
        let hex = report(5, "+8613800000001", T0, 0x00);
        assert!(matches!(
            a.report(&parse(&hex), &hex),
            Some(DriverEvent::Delivered {
                attempt: AttemptId(1),
                ..
            })
        ));
        // B's is still awaited and still B's.
        let hex = report(5, "+8613800000002", later, 0x00);
        assert!(matches!(
            a.report(&parse(&hex), &hex),
            Some(DriverEvent::Delivered {
                attempt: AttemptId(2),
                ..
            })
        ));
    }

    #[test]
    fn the_same_person_twice_with_one_mr_is_told_apart_by_the_submit_time() {
        let mut a = Awaited::new("86");
        let later = T0 + std::time::Duration::from_secs(3600);
        one_part(&mut a, 1, 9, "+8613800000001", T0);
        one_part(&mut a, 2, 9, "+8613800000001", later);
        let hex = report(9, "13800000001", later, 0x00);
        assert!(matches!(
            a.report(&parse(&hex), &hex),
            Some(DriverEvent::Delivered {
                attempt: AttemptId(2),
                ..
            })
        ));
        // Without a usable time the older one is taken.
        let mut sr = parse(&report(9, "13800000001", T0, 0x00));
        sr.scts = None;
        assert!(matches!(
            a.report(&sr, "x"),
            Some(DriverEvent::Delivered {
                attempt: AttemptId(1),
                ..
            })
        ));
    }

    #[test]
    fn a_message_is_delivered_when_every_part_is_and_fails_on_a_permanent_report() {
        let mut a = Awaited::new("86");
        let to = number("+8613800138000");
        a.part_sent(AttemptId(1), 10, &to, T0);
        // A report before the last part went out does not finish the message.
        let r10 = report(10, "+8613800138000", T0, 0x00);
        assert_eq!(a.report(&parse(&r10), &r10), None);
        a.part_sent(AttemptId(1), 11, &to, T0);
        assert_eq!(a.complete(AttemptId(1)), None);
        let r11 = report(11, "+8613800138000", T0, 0x20);
        assert_eq!(a.report(&parse(&r11), &r11), None, "SMSC still trying");
        let r11 = report(11, "+8613800138000", T0, 0x00);
        assert_eq!(
            a.report(&parse(&r11), &r11),
            Some(DriverEvent::Delivered {
                attempt: AttemptId(1),
                evidence: format!("{r10} {r11}")
            })
        );
        a.part_sent(AttemptId(2), 12, &to, T0);
        a.complete(AttemptId(2));
        let r12 = report(12, "+8613800138000", T0, 0x46);
        assert!(matches!(
            a.report(&parse(&r12), &r12),
            Some(DriverEvent::Failed {
                attempt: AttemptId(2),
                retryable: false,
                ..
            })
        ));
        assert!(a.is_empty());
    }

    #[test]
    fn what_is_awaited_is_bounded_and_the_oldest_message_goes_whole() {
        let mut a = Awaited::with_cap("86", 4);
        let to = number("+8613800138000");
        a.part_sent(AttemptId(1), 1, &to, T0);
        a.part_sent(AttemptId(1), 2, &to, T0);
        a.complete(AttemptId(1));
        for mr in 3..=5 {
            one_part(&mut a, u64::from(mr), mr, "+8613800138000", T0);
        }
        assert_eq!(a.len(), 3, "message 1 forgotten whole to make room");
        let r2 = report(2, "+8613800138000", T0, 0x00);
        assert!(matches!(
            a.report(&parse(&r2), &r2),
            Some(DriverEvent::Unrecognized { .. })
        ));
        for mr in 6..200u8 {
            one_part(&mut a, u64::from(mr), mr, "+8613800138000", T0);
            assert!(a.len() <= 4);
        }
    }
}
