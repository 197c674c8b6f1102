//! SDP (RFC 4566) offers and answers for one audio stream (RFC 3264): G.711 A-law/µ-law
//! and RFC 4733 telephone-event.
//!
//! The gateway always offers; the far end answers. [`negotiate`] reads an answer (or a far
//! end's offer, for the simulator) and picks the first G.711 payload type listed in it that
//! was offered, and the telephone-event payload type if there is one.

use std::net::{IpAddr, SocketAddr};

use crate::g711::Codec;

/// Why an SDP cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is not UTF-8 text.
    #[error("SDP is not UTF-8")]
    NotUtf8,
    /// No `c=IN IP4/IP6 <addr>` line (session or media level).
    #[error("SDP has no usable connection address")]
    NoConnection,
    /// No `m=audio` line, or its port is not a number.
    #[error("SDP has no usable m=audio line")]
    NoAudio,
    /// The audio stream is refused (port 0) or lists no G.711 codec we offered.
    #[error("no common codec: the far end offers payload types {0:?}")]
    NoCommonCodec(Vec<u8>),
}

/// What one side's SDP says about its audio stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Where to send RTP.
    pub remote: SocketAddr,
    /// The voice codec both sides take.
    pub codec: Codec,
    /// The RFC 4733 payload type, when the SDP lists `telephone-event/8000`.
    pub telephone_event: Option<u8>,
    /// The SSRC the far end declares for its audio (`a=ssrc:`, RFC 5576), if it does:
    /// only RTP carrying it is the far end's.
    pub ssrc: Option<u32>,
}

/// The offer of the gateway: `codecs` in order of preference, then telephone-event.
pub fn offer(
    session_id: u64,
    ip: IpAddr,
    rtp_port: u16,
    codecs: &[Codec],
    telephone_event_pt: u8,
) -> String {
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let mut pts: Vec<String> = codecs
        .iter()
        .map(|c| c.payload_type().to_string())
        .collect();
    pts.push(telephone_event_pt.to_string());
    let mut s = format!(
        "v=0\r\no=tocsin {session_id} {session_id} IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP {}\r\n",
        pts.join(" ")
    );
    for c in codecs {
        s.push_str(&format!(
            "a=rtpmap:{} {}/8000\r\n",
            c.payload_type(),
            c.rtpmap_name()
        ));
    }
    s.push_str(&format!(
        "a=rtpmap:{telephone_event_pt} telephone-event/8000\r\na=fmtp:{telephone_event_pt} 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
    ));
    s
}

/// The answer to an offer: the chosen codec and telephone-event, nothing else.
pub fn answer(session_id: u64, ip: IpAddr, rtp_port: u16, chosen: &Negotiated) -> String {
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let pt = chosen.codec.payload_type();
    let mut s = format!(
        "v=0\r\no=far {session_id} {session_id} IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
    );
    match chosen.telephone_event {
        Some(te) => s.push_str(&format!(
            "m=audio {rtp_port} RTP/AVP {pt} {te}\r\na=rtpmap:{pt} {}/8000\r\na=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-15\r\n",
            chosen.codec.rtpmap_name()
        )),
        None => s.push_str(&format!(
            "m=audio {rtp_port} RTP/AVP {pt}\r\na=rtpmap:{pt} {}/8000\r\n",
            chosen.codec.rtpmap_name()
        )),
    }
    if let Some(ssrc) = chosen.ssrc {
        s.push_str(&format!("a=ssrc:{ssrc} cname:far\r\n"));
    }
    s.push_str("a=ptime:20\r\na=sendrecv\r\n");
    s
}

/// Reads the far end's SDP and picks what both sides take. `acceptable` lists the G.711
/// codecs we offered; the far end's order wins (RFC 3264 §6.1: the answer's first format
/// is the one it prefers).
pub fn negotiate(body: &[u8], acceptable: &[Codec]) -> Result<Negotiated, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut session_c: Option<IpAddr> = None;
    let mut media_c: Option<IpAddr> = None;
    let mut audio: Option<(u16, Vec<u8>)> = None;
    let mut rtpmap: Vec<(u8, String)> = Vec::new();
    let mut ssrc: Option<u32> = None;
    // Only the first audio stream is ours; lines of later m= sections are ignored.
    let mut in_audio = false;
    let mut seen_media = false;
    for line in text.lines().map(str::trim) {
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        match kind {
            "m" => {
                seen_media = true;
                in_audio = false;
                if audio.is_none()
                    && let Some(rest) = value.strip_prefix("audio ")
                {
                    let mut parts = rest.split_whitespace();
                    let port = parts.next().and_then(|p| p.split('/').next()?.parse().ok());
                    let _proto = parts.next();
                    let pts: Vec<u8> = parts.filter_map(|p| p.parse().ok()).collect();
                    let Some(port) = port else {
                        return Err(SdpError::NoAudio);
                    };
                    audio = Some((port, pts));
                    in_audio = true;
                }
            }
            "c" => {
                let addr = value
                    .split_whitespace()
                    .nth(2)
                    .and_then(|a| a.split('/').next()?.parse::<IpAddr>().ok());
                if in_audio {
                    media_c = addr.or(media_c);
                } else if !seen_media {
                    session_c = addr;
                }
            }
            "a" if in_audio => {
                if let Some(id) = value.strip_prefix("ssrc:") {
                    // Several a=ssrc lines name attributes of one source; the first is it.
                    let id = id.split_whitespace().next().and_then(|i| i.parse().ok());
                    ssrc = ssrc.or(id);
                } else if let Some(map) = value.strip_prefix("rtpmap:") {
                    let mut it = map.split_whitespace();
                    if let (Some(pt), Some(name)) =
                        (it.next().and_then(|p| p.parse().ok()), it.next())
                    {
                        rtpmap.push((pt, name.to_ascii_lowercase()));
                    }
                }
            }
            _ => {}
        }
    }
    let (port, pts) = audio.ok_or(SdpError::NoAudio)?;
    let ip = media_c.or(session_c).ok_or(SdpError::NoConnection)?;
    if port == 0 {
        return Err(SdpError::NoCommonCodec(pts));
    }
    let name_of = |pt: u8| {
        rtpmap
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, n)| n.as_str())
    };
    let codec = pts
        .iter()
        .find_map(|&pt| {
            // Static types may come without rtpmap; a dynamic rtpmap may rename them.
            let c = match name_of(pt) {
                Some(n) if n.starts_with("pcmu/") => Some(Codec::Pcmu),
                Some(n) if n.starts_with("pcma/") => Some(Codec::Pcma),
                Some(_) => None,
                None => Codec::from_payload_type(pt),
            }?;
            acceptable.contains(&c).then_some(c)
        })
        .ok_or_else(|| SdpError::NoCommonCodec(pts.clone()))?;
    let telephone_event = pts
        .iter()
        .copied()
        .find(|&pt| name_of(pt).is_some_and(|n| n.starts_with("telephone-event/8000")));
    Ok(Negotiated {
        remote: SocketAddr::new(ip, port),
        codec,
        telephone_event,
        ssrc,
    })
}

/// Whether RTP can be sent to, and expected from, the SDP's `media` address as it stands,
/// seen from a trunk at `trunk`. A far end behind NAT writes its private address into
/// its SDP (a phone on 192.168.x.x, an SBC's inside leg); from a trunk on a public
/// address that is not where its packets come from, so the call latches on the first
/// packet instead (symmetric RTP, RFC 4961). A private address is taken as it stands
/// when the trunk itself is on a private or loopback network (the same site), a loopback
/// one only when the trunk is on loopback too. Unspecified (`0.0.0.0`, the old hold
/// marker), multicast and broadcast addresses are never a far end.
pub fn media_address_usable(media: IpAddr, trunk: IpAddr) -> bool {
    match (scope(media), scope(trunk)) {
        (Scope::Unusable, _) => false,
        (Scope::Public, _) => true,
        (Scope::Private, Scope::Private | Scope::Loopback) => true,
        (Scope::Loopback, Scope::Loopback) => true,
        _ => false,
    }
}

/// Where an address lives, for [`media_address_usable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Unspecified, multicast or broadcast.
    Unusable,
    /// This host.
    Loopback,
    /// RFC 1918, shared (CGNAT, RFC 6598), link-local, unique local (RFC 4193).
    Private,
    /// Anything else.
    Public,
}

fn scope(ip: IpAddr) -> Scope {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() {
                Scope::Unusable
            } else if v4.is_loopback() {
                Scope::Loopback
            } else if v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
            {
                Scope::Private
            } else {
                Scope::Public
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments().first().copied().unwrap_or(0);
            if v6.is_unspecified() || v6.is_multicast() {
                Scope::Unusable
            } else if v6.is_loopback() {
                Scope::Loopback
            } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80 {
                Scope::Private
            } else {
                Scope::Public
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIEF_OFFER: &str = "v=0\r\no=gw 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

    #[test]
    fn our_offer_matches_the_brief_layout() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let o = offer(1, ip, 40000, &[Codec::Pcma, Codec::Pcmu], 101);
        assert_eq!(o.replace("o=tocsin", "o=gw"), BRIEF_OFFER);
    }

    #[test]
    fn the_far_ends_first_common_codec_wins() {
        let n = negotiate(BRIEF_OFFER.as_bytes(), &[Codec::Pcmu, Codec::Pcma]).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.remote, "10.0.0.5:40000".parse().unwrap());
        assert_eq!(n.telephone_event, Some(101));
        let n = negotiate(BRIEF_OFFER.as_bytes(), &[Codec::Pcmu]).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
    }

    #[test]
    fn answers_from_sipp_style_far_ends_negotiate() {
        // Media-level c= overrides the session one; no rtpmap for PT 0; dynamic PT 96.
        let a = "v=0\no=user1 53655765 2353687637 IN IP4 127.0.0.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n\
m=audio 6000 RTP/AVP 0 96\nc=IN IP4 127.0.0.1\na=rtpmap:96 telephone-event/8000\n\
m=video 7000 RTP/AVP 31\nc=IN IP4 192.0.2.9\na=rtpmap:101 telephone-event/8000\n";
        let n = negotiate(a.as_bytes(), &[Codec::Pcma, Codec::Pcmu]).unwrap();
        assert_eq!(n.remote, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.telephone_event, Some(96));
        // Round trip through our own answer.
        let back = answer(9, "127.0.0.1".parse().unwrap(), 6000, &n);
        assert_eq!(negotiate(back.as_bytes(), &[Codec::Pcmu]).unwrap(), n);
    }

    #[test]
    fn a_declared_ssrc_is_read_from_the_audio_stream() {
        let a = "v=0\r\nc=IN IP4 203.0.113.20\r\nm=audio 30000 RTP/AVP 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\na=ssrc:4207869953 cname:phone\r\na=ssrc:4207869953 msid:x\r\n\
m=video 7000 RTP/AVP 31\r\na=ssrc:17 cname:cam\r\n";
        let n = negotiate(a.as_bytes(), &[Codec::Pcma]).unwrap();
        assert_eq!(n.ssrc, Some(4_207_869_953));
        let back = answer(9, "203.0.113.20".parse().unwrap(), 30000, &n);
        assert_eq!(negotiate(back.as_bytes(), &[Codec::Pcma]).unwrap(), n);
        let n = negotiate(BRIEF_OFFER.as_bytes(), &[Codec::Pcma]).unwrap();
        assert_eq!(n.ssrc, None);
    }

    #[test]
    fn private_media_addresses_are_usable_only_from_the_same_kind_of_network() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let public_trunk = ip("203.0.113.1");
        let lan_trunk = ip("10.0.0.1");
        let local_trunk = ip("127.0.0.1");
        for (media, trunk, usable) in [
            ("198.51.100.7", public_trunk, true),
            ("198.51.100.7", lan_trunk, true),
            ("192.168.1.20", public_trunk, false),
            ("172.16.4.4", public_trunk, false),
            ("100.64.0.9", public_trunk, false),
            ("169.254.1.1", public_trunk, false),
            ("192.168.1.20", lan_trunk, true),
            ("192.168.1.20", local_trunk, true),
            ("127.0.0.1", local_trunk, true),
            ("127.0.0.1", lan_trunk, false),
            ("127.0.0.1", public_trunk, false),
            ("0.0.0.0", local_trunk, false),
            ("224.0.1.1", lan_trunk, false),
            ("255.255.255.255", lan_trunk, false),
            ("2001:db8::7", public_trunk, true),
            ("fd00::7", public_trunk, false),
            ("fe80::7", ip("fd00::1"), true),
            ("::", ip("::1"), false),
            ("::ffff:192.168.1.20", public_trunk, false),
        ] {
            assert_eq!(
                media_address_usable(ip(media), trunk),
                usable,
                "{media} from {trunk}"
            );
        }
    }

    #[test]
    fn unusable_sdps_say_why() {
        assert_eq!(negotiate(b"\xff", &[Codec::Pcmu]), Err(SdpError::NotUtf8));
        assert_eq!(
            negotiate(b"v=0\r\nc=IN IP4 1.2.3.4\r\n", &[Codec::Pcmu]),
            Err(SdpError::NoAudio)
        );
        assert_eq!(
            negotiate(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n", &[Codec::Pcmu]),
            Err(SdpError::NoConnection)
        );
        assert_eq!(
            negotiate(
                b"c=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18 3\r\n",
                &[Codec::Pcmu]
            ),
            Err(SdpError::NoCommonCodec(vec![18, 3]))
        );
        assert_eq!(
            negotiate(
                b"c=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n",
                &[Codec::Pcmu]
            ),
            Err(SdpError::NoCommonCodec(vec![0]))
        );
        assert_eq!(
            negotiate(
                b"c=IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n",
                &[Codec::Pcmu]
            ),
            Err(SdpError::NoAudio)
        );
    }
}
