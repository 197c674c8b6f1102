//! RTP (RFC 3550 §5) and RTCP (RFC 3550 §6) as parsed frames with `parse` and `emit` that
//! mirror each other.
//!
//! Speakers' packets are untrusted: every length is checked before it is used, garbage
//! is an error (the driver reports it as `Unrecognized`), never a panic. RTCP arrives as
//! compound packets; [`RtcpPacket::parse`] takes one at a time and says how many bytes it
//! used, returning `Ok(None)` when the bytes end inside a packet.

/// RTP version 2, the only one in use.
pub const VERSION: u8 = 2;
/// RTCP packet types.
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;
/// SDES item type of the canonical name.
pub const SDES_CNAME: u8 = 1;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Why bytes are not a valid RTP or RTCP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The version bits are not 2.
    #[error("RTP/RTCP version {0}, expected 2")]
    BadVersion(u8),
    /// Shorter than its headers say.
    #[error("packet truncated: {0}")]
    Truncated(&'static str),
    /// Padding longer than the packet.
    #[error("bad padding length {0}")]
    BadPadding(u8),
    /// An RTCP packet whose type is not RTCP (an RTP packet on the RTCP port).
    #[error("not an RTCP packet type: {0}")]
    NotRtcp(u8),
}

/// One RTP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpPacket {
    /// M bit: set on the first packet of a talk spurt (an announcement).
    pub marker: bool,
    /// Payload type (0 PCMU, 8 PCMA).
    pub payload_type: u8,
    /// Sequence number, +1 per packet, wrapping.
    pub sequence: u16,
    /// Sampling instant of the first sample, in 8 kHz units for G.711, wrapping.
    pub timestamp: u32,
    /// The stream's synchronisation source.
    pub ssrc: u32,
    /// Contributing sources (none from Tocsin).
    pub csrc: Vec<u32>,
    /// The payload (padding and header extension removed).
    pub payload: Vec<u8>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(s.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(s.try_into().ok()?))
}

impl RtpPacket {
    /// Parses one datagram (RTP over UDP carries exactly one packet per datagram).
    pub fn parse(b: &[u8]) -> Result<RtpPacket, WireError> {
        let first = *b.first().ok_or(WireError::Truncated("RTP header"))?;
        let version = first >> 6;
        if version != VERSION {
            return Err(WireError::BadVersion(version));
        }
        let padding = first & 0x20 != 0;
        let extension = first & 0x10 != 0;
        let cc = usize::from(first & 0x0F);
        let second = *b.get(1).ok_or(WireError::Truncated("RTP header"))?;
        let sequence = be16(b, 2).ok_or(WireError::Truncated("RTP header"))?;
        let timestamp = be32(b, 4).ok_or(WireError::Truncated("RTP header"))?;
        let ssrc = be32(b, 8).ok_or(WireError::Truncated("RTP header"))?;
        let mut at = 12usize;
        let mut csrc = Vec::with_capacity(cc);
        for _ in 0..cc {
            csrc.push(be32(b, at).ok_or(WireError::Truncated("CSRC list"))?);
            at += 4;
        }
        if extension {
            let words = be16(b, at + 2).ok_or(WireError::Truncated("header extension"))?;
            at += 4 + 4 * usize::from(words);
            if at > b.len() {
                return Err(WireError::Truncated("header extension"));
            }
        }
        let mut end = b.len();
        if padding {
            let pad = *b.last().ok_or(WireError::Truncated("padding"))?;
            if pad == 0 || usize::from(pad) > end.saturating_sub(at) {
                return Err(WireError::BadPadding(pad));
            }
            end -= usize::from(pad);
        }
        Ok(RtpPacket {
            marker: second & 0x80 != 0,
            payload_type: second & 0x7F,
            sequence,
            timestamp,
            ssrc,
            csrc,
            payload: b.get(at..end).unwrap_or(&[]).to_vec(),
        })
    }

    /// Appends the packet: the 12-byte header, CSRCs, payload (no padding, no extension).
    pub fn emit(&self, out: &mut Vec<u8>) {
        let cc = self.csrc.len().min(15);
        out.push((VERSION << 6) | cc as u8);
        out.push((u8::from(self.marker) << 7) | (self.payload_type & 0x7F));
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for c in self.csrc.iter().take(cc) {
            out.extend_from_slice(&c.to_be_bytes());
        }
        out.extend_from_slice(&self.payload);
    }
}

/// One reception report block (24 bytes): what a receiver saw of one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source reported on (our stream's SSRC).
    pub ssrc: u32,
    /// Packets lost since the previous report, as a fraction of 256.
    pub fraction_lost: u8,
    /// Packets lost since the start (24-bit signed; duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Highest sequence number received, extended with the count of wrap-arounds.
    pub highest_sequence: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (0 if none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn parse(b: &[u8], at: usize) -> Option<ReportBlock> {
        let lost_word = be32(b, at.checked_add(4)?)?;
        // Sign-extend the 24-bit cumulative count.
        let cum = ((lost_word << 8) as i32) >> 8;
        Some(ReportBlock {
            ssrc: be32(b, at)?,
            fraction_lost: (lost_word >> 24) as u8,
            cumulative_lost: cum,
            highest_sequence: be32(b, at.checked_add(8)?)?,
            jitter: be32(b, at.checked_add(12)?)?,
            last_sr: be32(b, at.checked_add(16)?)?,
            delay_since_last_sr: be32(b, at.checked_add(20)?)?,
        })
    }

    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        let cum = (self.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0x00FF_FFFF;
        out.extend_from_slice(&((u32::from(self.fraction_lost) << 24) | cum).to_be_bytes());
        out.extend_from_slice(&self.highest_sequence.to_be_bytes());
        out.extend_from_slice(&self.jitter.to_be_bytes());
        out.extend_from_slice(&self.last_sr.to_be_bytes());
        out.extend_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// A sender report: what we sent, stamped with wall-clock and RTP time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderReport {
    /// The sender's SSRC.
    pub ssrc: u32,
    /// NTP timestamp (seconds since 1900 in the high 32 bits, fraction in the low).
    pub ntp: u64,
    /// The RTP timestamp of the same instant.
    pub rtp_timestamp: u32,
    /// Packets sent so far.
    pub packet_count: u32,
    /// Payload octets sent so far.
    pub octet_count: u32,
    /// Reception reports (a sender that also receives).
    pub reports: Vec<ReportBlock>,
}

/// A receiver report: what a speaker received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverReport {
    /// The reporting speaker's SSRC.
    pub ssrc: u32,
    /// One block per source it hears.
    pub reports: Vec<ReportBlock>,
}

/// One SDES chunk: a source and its items (only CNAME is kept by name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdesChunk {
    /// The source described.
    pub ssrc: u32,
    /// Items as (type, text); type 1 is CNAME.
    pub items: Vec<(u8, String)>,
}

/// One RTCP packet of a compound packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RtcpPacket {
    /// SR (200).
    SenderReport(SenderReport),
    /// RR (201).
    ReceiverReport(ReceiverReport),
    /// SDES (202).
    SourceDescription(Vec<SdesChunk>),
    /// BYE (203).
    Goodbye {
        /// Sources leaving.
        sources: Vec<u32>,
        /// Why, if said.
        reason: Option<String>,
    },
    /// Another RTCP type (APP, XR, feedback), kept raw.
    Other {
        /// Packet type.
        packet_type: u8,
        /// The count / subtype field.
        count: u8,
        /// The body after the 4-byte header.
        body: Vec<u8>,
    },
}

impl RtcpPacket {
    /// Parses the first packet of `b`. `Ok(None)`: the bytes end inside it.
    pub fn parse(b: &[u8]) -> Result<Option<(RtcpPacket, usize)>, WireError> {
        let (Some(&first), Some(&pt), Some(words)) = (b.first(), b.get(1), be16(b, 2)) else {
            return Ok(None);
        };
        let version = first >> 6;
        if version != VERSION {
            return Err(WireError::BadVersion(version));
        }
        // RTP payload types 72-76 collide with RTCP 200-204 under the marker bit;
        // RTCP lives in 192..=223 (RFC 5761).
        if !(192..=223).contains(&pt) {
            return Err(WireError::NotRtcp(pt));
        }
        let len = (usize::from(words) + 1) * 4;
        let Some(pkt) = b.get(..len) else {
            return Ok(None);
        };
        let count = first & 0x1F;
        let mut end = len;
        if first & 0x20 != 0 {
            let pad = *pkt.last().unwrap_or(&0);
            if pad == 0 || usize::from(pad) > len - 4 {
                return Err(WireError::BadPadding(pad));
            }
            end -= usize::from(pad);
        }
        let body = pkt.get(4..end).unwrap_or(&[]);
        let n = usize::from(count);
        let parsed = match pt {
            PT_SR => {
                let ssrc = be32(body, 0).ok_or(WireError::Truncated("SR sender info"))?;
                let hi = be32(body, 4).ok_or(WireError::Truncated("SR sender info"))?;
                let lo = be32(body, 8).ok_or(WireError::Truncated("SR sender info"))?;
                let rtp_timestamp = be32(body, 12).ok_or(WireError::Truncated("SR sender info"))?;
                let packet_count = be32(body, 16).ok_or(WireError::Truncated("SR sender info"))?;
                let octet_count = be32(body, 20).ok_or(WireError::Truncated("SR sender info"))?;
                let reports = blocks(body, 24, n)?;
                RtcpPacket::SenderReport(SenderReport {
                    ssrc,
                    ntp: (u64::from(hi) << 32) | u64::from(lo),
                    rtp_timestamp,
                    packet_count,
                    octet_count,
                    reports,
                })
            }
            PT_RR => {
                let ssrc = be32(body, 0).ok_or(WireError::Truncated("RR header"))?;
                RtcpPacket::ReceiverReport(ReceiverReport {
                    ssrc,
                    reports: blocks(body, 4, n)?,
                })
            }
            PT_SDES => RtcpPacket::SourceDescription(sdes(body, n)?),
            PT_BYE => {
                let mut sources = Vec::with_capacity(n);
                for i in 0..n {
                    sources.push(be32(body, i * 4).ok_or(WireError::Truncated("BYE sources"))?);
                }
                let at = n * 4;
                let reason = match body.get(at) {
                    Some(&rl) if rl > 0 => {
                        let text = body
                            .get(at + 1..at + 1 + usize::from(rl))
                            .ok_or(WireError::Truncated("BYE reason"))?;
                        Some(String::from_utf8_lossy(text).into_owned())
                    }
                    _ => None,
                };
                RtcpPacket::Goodbye { sources, reason }
            }
            _ => RtcpPacket::Other {
                packet_type: pt,
                count,
                body: body.to_vec(),
            },
        };
        Ok(Some((parsed, len)))
    }

    /// Appends the packet (no padding).
    pub fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let (count, pt) = match self {
            RtcpPacket::SenderReport(sr) => (sr.reports.len(), PT_SR),
            RtcpPacket::ReceiverReport(rr) => (rr.reports.len(), PT_RR),
            RtcpPacket::SourceDescription(c) => (c.len(), PT_SDES),
            RtcpPacket::Goodbye { sources, .. } => (sources.len(), PT_BYE),
            RtcpPacket::Other {
                count, packet_type, ..
            } => (usize::from(*count), *packet_type),
        };
        out.push((VERSION << 6) | (count.min(31) as u8));
        out.push(pt);
        out.extend_from_slice(&[0, 0]); // length, filled in below
        match self {
            RtcpPacket::SenderReport(sr) => {
                out.extend_from_slice(&sr.ssrc.to_be_bytes());
                out.extend_from_slice(&sr.ntp.to_be_bytes());
                out.extend_from_slice(&sr.rtp_timestamp.to_be_bytes());
                out.extend_from_slice(&sr.packet_count.to_be_bytes());
                out.extend_from_slice(&sr.octet_count.to_be_bytes());
                for r in sr.reports.iter().take(31) {
                    r.emit(out);
                }
            }
            RtcpPacket::ReceiverReport(rr) => {
                out.extend_from_slice(&rr.ssrc.to_be_bytes());
                for r in rr.reports.iter().take(31) {
                    r.emit(out);
                }
            }
            RtcpPacket::SourceDescription(chunks) => {
                for c in chunks.iter().take(31) {
                    let chunk_start = out.len();
                    out.extend_from_slice(&c.ssrc.to_be_bytes());
                    for (ty, text) in &c.items {
                        let t = text.as_bytes();
                        let t = t.get(..t.len().min(255)).unwrap_or(&[]);
                        out.push(*ty);
                        out.push(t.len() as u8);
                        out.extend_from_slice(t);
                    }
                    // A null item ends the list; pad the chunk to a 32-bit boundary.
                    out.push(0);
                    while !(out.len() - chunk_start).is_multiple_of(4) {
                        out.push(0);
                    }
                }
            }
            RtcpPacket::Goodbye { sources, reason } => {
                for s in sources.iter().take(31) {
                    out.extend_from_slice(&s.to_be_bytes());
                }
                if let Some(r) = reason {
                    let t = r.as_bytes();
                    let t = t.get(..t.len().min(255)).unwrap_or(&[]);
                    out.push(t.len() as u8);
                    out.extend_from_slice(t);
                }
            }
            RtcpPacket::Other { body, .. } => out.extend_from_slice(body),
        }
        while !(out.len() - start).is_multiple_of(4) {
            out.push(0);
        }
        let words = ((out.len() - start) / 4 - 1) as u16;
        if let Some(len) = out.get_mut(start + 2..start + 4) {
            len.copy_from_slice(&words.to_be_bytes());
        }
    }
}

fn blocks(body: &[u8], from: usize, n: usize) -> Result<Vec<ReportBlock>, WireError> {
    (0..n)
        .map(|i| {
            ReportBlock::parse(body, from + i * 24).ok_or(WireError::Truncated("report block"))
        })
        .collect()
}

fn sdes(body: &[u8], n: usize) -> Result<Vec<SdesChunk>, WireError> {
    let mut chunks = Vec::with_capacity(n);
    let mut at = 0usize;
    for _ in 0..n {
        let ssrc = be32(body, at).ok_or(WireError::Truncated("SDES chunk"))?;
        let chunk_start = at;
        at += 4;
        let mut items = Vec::new();
        loop {
            let ty = *body.get(at).ok_or(WireError::Truncated("SDES item"))?;
            if ty == 0 {
                at += 1;
                break;
            }
            let len = usize::from(*body.get(at + 1).ok_or(WireError::Truncated("SDES item"))?);
            let text = body
                .get(at + 2..at + 2 + len)
                .ok_or(WireError::Truncated("SDES item"))?;
            items.push((ty, String::from_utf8_lossy(text).into_owned()));
            at += 2 + len;
        }
        // Chunks end on a 32-bit boundary.
        while !(at - chunk_start).is_multiple_of(4) {
            at += 1;
        }
        chunks.push(SdesChunk { ssrc, items });
    }
    Ok(chunks)
}

/// Parses a whole compound RTCP datagram: the packets it holds, and the error that
/// stopped parsing if the rest was not RTCP (what came before is still returned).
pub fn parse_compound(mut b: &[u8]) -> (Vec<RtcpPacket>, Option<WireError>) {
    let mut out = Vec::new();
    while !b.is_empty() {
        match RtcpPacket::parse(b) {
            Ok(Some((p, used))) => {
                out.push(p);
                b = b.get(used..).unwrap_or(&[]);
            }
            Ok(None) => return (out, Some(WireError::Truncated("compound RTCP"))),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// The NTP timestamp of a Unix time in milliseconds.
pub fn ntp_from_unix_ms(ms: i64) -> u64 {
    let ms = u64::try_from(ms).unwrap_or(0);
    let secs = ms / 1000 + NTP_UNIX_OFFSET;
    let frac = ((ms % 1000) << 32) / 1000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp, as RR `last_sr` echoes them.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rtp_vectors_from_the_protocol_brief() {
        // First PCMU packet and the next PCMA one (protocols.md §7.1).
        let mut a = hex("80 80 00 01 00 00 00 00 12 34 56 78");
        a.extend(std::iter::repeat_n(0xFF, 160));
        let p = RtpPacket::parse(&a).unwrap();
        assert_eq!(
            (p.marker, p.payload_type, p.sequence, p.timestamp, p.ssrc),
            (true, 0, 1, 0, 0x1234_5678)
        );
        assert_eq!(p.payload, vec![0xFF; 160]);
        let mut out = Vec::new();
        p.emit(&mut out);
        assert_eq!(out, a);

        let mut b = hex("80 08 00 02 00 00 00 A0 12 34 56 78");
        b.extend(std::iter::repeat_n(0xD5, 160));
        let q = RtpPacket::parse(&b).unwrap();
        assert_eq!(
            (q.marker, q.payload_type, q.sequence, q.timestamp),
            (false, 8, 2, 160)
        );
        let mut out = Vec::new();
        q.emit(&mut out);
        assert_eq!(out, b);
    }

    #[test]
    fn rtp_with_csrc_extension_and_padding() {
        // CC=1, X=1, P=1: one CSRC, a one-word extension, 2 bytes of payload, 2 of padding.
        let b = hex(
            "B1 00 00 05 00 00 00 10 00 00 00 01 AA AA AA AA BE DE 00 01 11 22 33 44 7F 7E 00 02",
        );
        let p = RtpPacket::parse(&b).unwrap();
        assert_eq!(p.csrc, vec![0xAAAA_AAAA]);
        assert_eq!(p.payload, vec![0x7F, 0x7E]);
        assert_eq!(
            RtpPacket::parse(&hex("A0 00 00 05 00 00 00 10 00 00 00 01 05")),
            Err(WireError::BadPadding(5))
        );
        assert_eq!(
            RtpPacket::parse(&hex("40 00")),
            Err(WireError::BadVersion(1))
        );
        assert!(matches!(
            RtpPacket::parse(&hex("80 00 00")),
            Err(WireError::Truncated(_))
        ));
    }

    /// A receiver report as a speaker sends it, composed byte by byte from RFC 3550
    /// §6.4.2: reporter 0xDEADBEEF about source 0x12345678, 5/256 lost lately, 10 lost in
    /// all, one wrap then sequence 42, jitter 16, LSR 0x11223344, DLSR 1.5 s (0x18000).
    const RR: &str = "81 C9 00 07 DE AD BE EF 12 34 56 78 05 00 00 0A 00 01 00 2A 00 00 00 10 11 22 33 44 00 01 80 00";

    #[test]
    fn receiver_report_known_bytes() {
        let b = hex(RR);
        let (p, used) = RtcpPacket::parse(&b).unwrap().unwrap();
        assert_eq!(used, 32);
        let RtcpPacket::ReceiverReport(rr) = &p else {
            panic!("{p:?}")
        };
        assert_eq!(rr.ssrc, 0xDEAD_BEEF);
        assert_eq!(
            rr.reports,
            vec![ReportBlock {
                ssrc: 0x1234_5678,
                fraction_lost: 5,
                cumulative_lost: 10,
                highest_sequence: 0x0001_002A,
                jitter: 16,
                last_sr: 0x1122_3344,
                delay_since_last_sr: 0x1_8000,
            }]
        );
        let mut out = Vec::new();
        p.emit(&mut out);
        assert_eq!(out, b);
        // Duplicates make the cumulative count negative: 0xFFFFFE is -2.
        let mut neg = b.clone();
        neg[13..16].copy_from_slice(&[0xFF, 0xFF, 0xFE]);
        let Some((RtcpPacket::ReceiverReport(rr), _)) = RtcpPacket::parse(&neg).unwrap() else {
            panic!()
        };
        assert_eq!(rr.reports[0].cumulative_lost, -2);
    }

    #[test]
    fn compound_sr_sdes_bye_known_bytes() {
        // SR from 0x12345678 at NTP 0xE8A1B2C3.80000000, RTP ts 160000, 1000 packets,
        // 160000 octets; SDES CNAME "tocsin"; BYE with reason "end".
        let b = hex(
            "80 C8 00 06 12 34 56 78 E8 A1 B2 C3 80 00 00 00 00 02 71 00 00 00 03 E8 00 02 71 00
             81 CA 00 04 12 34 56 78 01 06 74 6F 63 73 69 6E 00 00 00 00
             81 CB 00 02 12 34 56 78 03 65 6E 64",
        );
        let (pkts, err) = parse_compound(&b);
        assert_eq!(err, None);
        assert_eq!(pkts.len(), 3);
        assert_eq!(
            pkts[0],
            RtcpPacket::SenderReport(SenderReport {
                ssrc: 0x1234_5678,
                ntp: 0xE8A1_B2C3_8000_0000,
                rtp_timestamp: 160_000,
                packet_count: 1000,
                octet_count: 160_000,
                reports: vec![],
            })
        );
        assert_eq!(
            pkts[1],
            RtcpPacket::SourceDescription(vec![SdesChunk {
                ssrc: 0x1234_5678,
                items: vec![(SDES_CNAME, "tocsin".into())],
            }])
        );
        assert_eq!(
            pkts[2],
            RtcpPacket::Goodbye {
                sources: vec![0x1234_5678],
                reason: Some("end".into())
            }
        );
        let mut out = Vec::new();
        for p in &pkts {
            p.emit(&mut out);
        }
        assert_eq!(out, b);
    }

    #[test]
    fn rtcp_garbage_and_truncation() {
        assert_eq!(RtcpPacket::parse(&[0x81, 0xC9]), Ok(None));
        let b = hex(RR);
        assert_eq!(RtcpPacket::parse(&b[..20]), Ok(None));
        assert_eq!(
            RtcpPacket::parse(&hex("41 C9 00 00")),
            Err(WireError::BadVersion(1))
        );
        // RTP on the RTCP port.
        assert_eq!(
            RtcpPacket::parse(&hex("80 00 00 01")),
            Err(WireError::NotRtcp(0))
        );
        // RC says 2 blocks, the length holds one.
        let mut two = b.clone();
        two[0] = 0x82;
        assert!(matches!(
            RtcpPacket::parse(&two),
            Err(WireError::Truncated(_))
        ));
        // A good RR followed by junk: the RR is kept, the junk reported.
        let mut tail = b.clone();
        tail.extend_from_slice(&[0x00, 0x01, 0x00, 0x00]);
        let (pkts, err) = parse_compound(&tail);
        assert_eq!(pkts.len(), 1);
        assert_eq!(err, Some(WireError::BadVersion(0)));
    }

    #[test]
    fn ntp_conversion() {
        // 2024-01-01T00:00:00.500Z.
        let ntp = ntp_from_unix_ms(1_704_067_200_500);
        assert_eq!(ntp >> 32, 1_704_067_200 + NTP_UNIX_OFFSET);
        assert_eq!(ntp & 0xFFFF_FFFF, 0x8000_0000);
        assert_eq!(ntp_middle(0xE8A1_B2C3_8000_0000), 0xB2C3_8000);
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = RtpPacket::parse(&bytes);
            let _ = parse_compound(&bytes);
        }

        #[test]
        fn compound_same_whole_or_split(cut in 0usize..60) {
            // Fed as a stream, a split anywhere gives Ok(None) then the same packets.
            let mut b = hex(RR);
            b.extend(hex(RR));
            let cut = cut.min(b.len());
            let first = RtcpPacket::parse(&b[..cut]).unwrap();
            match first {
                None => proptest::prop_assert!(cut < 32),
                Some((_, used)) => proptest::prop_assert_eq!(used, 32),
            }
            let (pkts, err) = parse_compound(&b);
            proptest::prop_assert_eq!(pkts.len(), 2);
            proptest::prop_assert_eq!(err, None);
        }
    }
}
