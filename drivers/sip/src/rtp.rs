//! RTP (RFC 3550) packets and RFC 4733 telephone-events.
//!
//! The gateway writes the 12-byte fixed header itself (no CSRCs, no extension) and reads
//! any valid header, skipping CSRCs, extensions and padding. DTMF digits arrive as
//! telephone-event packets: all packets of one key press share the RTP timestamp of its
//! start and the end packet is sent three times, so [`DigitDetector`] counts a digit once
//! per (SSRC, timestamp).

/// Why bytes are not an RTP packet we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than the 12-byte header (plus CSRCs and extension).
    #[error("RTP packet of {0} bytes is truncated")]
    Truncated(usize),
    /// The version field is not 2.
    #[error("RTP version {0} is not 2")]
    BadVersion(u8),
    /// The padding count is larger than the payload.
    #[error("RTP padding longer than the payload")]
    BadPadding,
}

/// An RTP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpPacket {
    /// Marker bit (first packet of a talk spurt, first packet of a DTMF event).
    pub marker: bool,
    /// Payload type, 7 bits.
    pub payload_type: u8,
    /// Sequence number.
    pub seq: u16,
    /// Media timestamp (8 kHz units for G.711).
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// The payload, without padding.
    pub payload: Vec<u8>,
}

impl RtpPacket {
    /// Writes the packet (12-byte header, then the payload).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(0x80);
        out.push((u8::from(self.marker) << 7) | (self.payload_type & 0x7F));
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The packet as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.payload.len());
        self.emit(&mut out);
        out
    }

    /// Reads one datagram.
    pub fn parse(b: &[u8]) -> Result<RtpPacket, RtpError> {
        let t = || RtpError::Truncated(b.len());
        let (&b0, &b1) = (b.first().ok_or_else(t)?, b.get(1).ok_or_else(t)?);
        if b0 >> 6 != 2 {
            return Err(RtpError::BadVersion(b0 >> 6));
        }
        let word = |i: usize| -> Result<u32, RtpError> {
            let s = b.get(i..i + 4).ok_or_else(t)?;
            Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        };
        let seq = u16::from_be_bytes([*b.get(2).ok_or_else(t)?, *b.get(3).ok_or_else(t)?]);
        let timestamp = word(4)?;
        let ssrc = word(8)?;
        let mut start = 12 + 4 * usize::from(b0 & 0x0F);
        if b0 & 0x10 != 0 {
            let ext = b.get(start..start + 4).ok_or_else(t)?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            start += 4 + 4 * words;
        }
        let mut end = b.len();
        if b0 & 0x20 != 0 {
            let pad = usize::from(*b.last().ok_or_else(t)?);
            end = end.checked_sub(pad).ok_or(RtpError::BadPadding)?;
        }
        if start > b.len() {
            return Err(t());
        }
        let payload = b.get(start..end).ok_or(RtpError::BadPadding)?.to_vec();
        Ok(RtpPacket {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7F,
            seq,
            timestamp,
            ssrc,
            payload,
        })
    }
}

/// An RFC 4733 §2.3 telephone-event payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0–9 digits, 10 `*`, 11 `#`, 12–15 A–D.
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Volume in −dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Reads the first 4 bytes of a payload (more bytes are redundant events, ignored).
    pub fn parse(p: &[u8]) -> Option<TelephoneEvent> {
        let (&event, &flags, &d0, &d1) = (p.first()?, p.get(1)?, p.get(2)?, p.get(3)?);
        Some(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4-byte payload.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }

    /// The key of the event, if it is a DTMF key.
    pub fn key(self) -> Option<char> {
        key_of_event(self.event)
    }
}

/// The DTMF key of an RFC 4733 event code.
pub fn key_of_event(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// The RFC 4733 event code of a DTMF key.
pub fn event_of_key(key: char) -> Option<u8> {
    match key {
        '0'..='9' => Some(key as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(key as u8 - b'A' + 12),
        _ => None,
    }
}

/// Turns a stream of telephone-event packets into key presses, each counted once.
///
/// A press is reported on its first packet (start or end): waiting for the end would lose
/// a digit whose end packets were all dropped. Later packets with the same (SSRC, RTP
/// timestamp) are the same press and are ignored, including the triple end packet.
#[derive(Clone, Debug, Default)]
pub struct DigitDetector {
    /// Events already counted; a handful at most, kept for the life of the call.
    seen: Vec<(u32, u32)>,
}

impl DigitDetector {
    /// Feeds one RTP packet already known to carry telephone-event; returns a new key.
    pub fn feed(&mut self, pkt: &RtpPacket) -> Option<char> {
        let ev = TelephoneEvent::parse(&pkt.payload)?;
        let key = ev.key()?;
        let id = (pkt.ssrc, pkt.timestamp);
        if self.seen.contains(&id) {
            return None;
        }
        if self.seen.len() >= 64 {
            self.seen.remove(0);
        }
        self.seen.push(id);
        Some(key)
    }
}

/// The packets a sender emits for one key press (RFC 4733 §2.5.1): a start with the
/// marker, one update per 50 ms, and the end packet three times. `seq` is the first
/// sequence number; the caller sends them 50 ms apart (the end copies back to back).
pub fn key_press_packets(
    key: char,
    pt: u8,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    duration_ms: u16,
) -> Vec<RtpPacket> {
    let Some(event) = event_of_key(key) else {
        return Vec::new();
    };
    let total = duration_ms.saturating_mul(8);
    let mut out = Vec::new();
    let mut d: u16 = 0;
    let mut s = seq;
    loop {
        let end = d >= total;
        let ev = TelephoneEvent {
            event,
            end,
            volume: 10,
            duration: d.min(total).max(160),
        };
        let copies = if end { 3 } else { 1 };
        for _ in 0..copies {
            out.push(RtpPacket {
                marker: out.is_empty(),
                payload_type: pt,
                seq: s,
                timestamp,
                ssrc,
                payload: ev.to_bytes().to_vec(),
            });
            s = s.wrapping_add(1);
        }
        if end {
            return out;
        }
        d = d.saturating_add(400);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START_1: [u8; 16] = [
        0x80, 0xE5, 0x00, 0x64, 0x00, 0x00, 0x3E, 0x80, 0x12, 0x34, 0x56, 0x78, 0x01, 0x0A, 0x00,
        0xA0,
    ];
    const END_1: [u8; 16] = [
        0x80, 0x65, 0x00, 0x69, 0x00, 0x00, 0x3E, 0x80, 0x12, 0x34, 0x56, 0x78, 0x01, 0x8A, 0x03,
        0x20,
    ];

    #[test]
    fn brief_vectors_parse_and_emit_byte_for_byte() {
        let start = RtpPacket::parse(&START_1).unwrap();
        assert!(start.marker);
        assert_eq!(
            (start.payload_type, start.seq, start.timestamp),
            (101, 100, 16000)
        );
        assert_eq!(start.ssrc, 0x1234_5678);
        let ev = TelephoneEvent::parse(&start.payload).unwrap();
        assert_eq!(
            ev,
            TelephoneEvent {
                event: 1,
                end: false,
                volume: 10,
                duration: 160
            }
        );
        assert_eq!(ev.key(), Some('1'));
        assert_eq!(start.to_bytes(), START_1);

        let end = RtpPacket::parse(&END_1).unwrap();
        assert!(!end.marker);
        let ev = TelephoneEvent::parse(&end.payload).unwrap();
        assert_eq!(
            ev,
            TelephoneEvent {
                event: 1,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(end.to_bytes(), END_1);
    }

    #[test]
    fn repeated_end_packets_count_once() {
        let mut d = DigitDetector::default();
        let start = RtpPacket::parse(&START_1).unwrap();
        let end = RtpPacket::parse(&END_1).unwrap();
        assert_eq!(d.feed(&start), Some('1'));
        for _ in 0..3 {
            assert_eq!(d.feed(&end), None);
        }
        // A second press has a new timestamp and counts.
        let mut again = end.clone();
        again.timestamp += 8000;
        assert_eq!(d.feed(&again), Some('1'));
        assert_eq!(d.feed(&again), None);
    }

    #[test]
    fn generated_presses_decode_to_one_key_each() {
        let pkts = key_press_packets('#', 101, 7, 10, 4000, 200);
        assert!(pkts[0].marker && pkts.iter().skip(1).all(|p| !p.marker));
        let ends = pkts
            .iter()
            .filter(|p| TelephoneEvent::parse(&p.payload).unwrap().end)
            .count();
        assert_eq!(ends, 3);
        let mut d = DigitDetector::default();
        let keys: Vec<char> = pkts
            .iter()
            .filter_map(|p| d.feed(&RtpPacket::parse(&p.to_bytes()).unwrap()))
            .collect();
        assert_eq!(keys, vec!['#']);
        assert!(key_press_packets('x', 101, 7, 10, 4000, 200).is_empty());
        for k in "0123456789*#ABCD".chars() {
            assert_eq!(key_of_event(event_of_key(k).unwrap()), Some(k));
        }
    }

    #[test]
    fn headers_with_csrcs_extension_and_padding_are_read() {
        let mut b = vec![0xB1, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        b.extend_from_slice(&[0xBE, 0xDE, 0, 1, 5, 5, 5, 5]); // extension of one word
        b.extend_from_slice(&[0xAA, 0xBB, 0, 2]); // payload + 2 bytes padding
        let p = RtpPacket::parse(&b).unwrap();
        assert_eq!(p.payload, vec![0xAA, 0xBB]);
        assert_eq!(RtpPacket::parse(&[0x80, 0]), Err(RtpError::Truncated(2)));
        assert_eq!(RtpPacket::parse(&[0x40; 12]), Err(RtpError::BadVersion(1)));
        let mut pad = vec![0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        pad.push(200);
        assert_eq!(RtpPacket::parse(&pad), Err(RtpError::BadPadding));
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..100)) {
            if let Ok(p) = RtpPacket::parse(&bytes) {
                let _ = TelephoneEvent::parse(&p.payload);
            }
        }
    }
}
