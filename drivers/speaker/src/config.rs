//! Configuration of one loudspeaker driver: the RTP streams it sends (one per multicast
//! group or unicast speaker), the codec and the programme's shape.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tocsin_channel::Capabilities;
use tocsin_core::{Bearer, Grade};
use tocsin_voice::Codec;

/// One RTP destination: a multicast group many speakers join, or one unicast speaker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// What a send addresses (`Address::Speaker(name)`; in the directory's
    /// `speakers.csv`, the `group` column), and the name in reports and logs — e.g. the
    /// village id. Not `*`, which addresses every group.
    pub name: String,
    /// RTP destination `ip:port`, e.g. `239.1.1.10:5004` or `10.0.3.21:5004`.
    pub rtp: SocketAddr,
    /// Where sender reports go; default: the RTP address with port + 1 (RFC 3550).
    #[serde(default)]
    pub rtcp: Option<SocketAddr>,
    /// Speakers expected to send receiver reports (`ip` or `ip:port`); those that send
    /// none during a programme are listed as "no evidence" in its report.
    #[serde(default)]
    pub speakers: Vec<String>,
}

impl GroupConfig {
    /// The sender-report destination.
    pub fn rtcp_addr(&self) -> SocketAddr {
        self.rtcp.unwrap_or_else(|| {
            let mut a = self.rtp;
            a.set_port(a.port().wrapping_add(1));
            a
        })
    }
}

/// One loudspeaker driver (`[devices.NAME] type = "speaker"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakerConfig {
    /// The streams. A send plays on the group its `Address::Speaker` names, or on all
    /// of them for the reserved name `*` ([`crate::proto::BROADCAST_GROUP`]).
    pub groups: Vec<GroupConfig>,
    /// `pcma` (China's trunks, the default) or `pcmu`.
    #[serde(default = "default_codec")]
    pub codec: Codec,
    /// Local address RTP is sent from.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// Local address RTCP is sent from and receiver reports arrive at. For multicast
    /// groups whose speakers report to the group, use the group's RTCP port here.
    #[serde(default = "default_bind")]
    pub rtcp_bind: SocketAddr,
    /// Multicast TTL: 1 keeps the stream on the local network segment.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// The IPv4 address of the network card multicast goes out on and groups are joined
    /// on: the village LAN's, on a gateway that also has an uplink. Unset, the kernel
    /// chooses by its routing table — usually the default route's card, which is the
    /// uplink on such a gateway. Only used when some group is a multicast address.
    #[serde(default)]
    pub multicast_interface: Option<Ipv4Addr>,
    /// How many times a programme repeats its siren and spoken warning.
    #[serde(default = "default_repeat")]
    pub repeat: u32,
    /// Silence between repeats, in seconds.
    #[serde(default = "default_pause_secs")]
    pub pause_secs: u64,
    /// Seconds between sender reports while streaming (RFC 3550 suggests 5).
    #[serde(default = "default_rtcp_interval_secs")]
    pub rtcp_interval_secs: u64,
    /// Seconds after a programme ends during which late receiver reports still count.
    #[serde(default = "default_report_grace_secs")]
    pub report_grace_secs: u64,
    /// The grade assumed when the text names none (e.g. a cancellation notice).
    #[serde(default = "default_grade")]
    pub default_grade: Grade,
    /// Most programmes waiting per driver; beyond that a send is refused as retryable.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: usize,
    /// Programmes per minute the router may plan for this driver.
    #[serde(default = "default_per_minute")]
    pub per_minute: f64,
}

/// PCMA: what Chinese trunks and most domestic IP PA systems expect.
pub fn default_codec() -> Codec {
    Codec::Pcma
}
/// Any local address and port.
pub fn default_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}
/// TTL 1: the village LAN.
pub fn default_ttl() -> u32 {
    1
}
/// Three times: a warning heard once in the rain is easily missed.
pub fn default_repeat() -> u32 {
    3
}
/// 10 s between repeats.
pub fn default_pause_secs() -> u64 {
    10
}
/// 5 s, RFC 3550's minimum interval.
pub fn default_rtcp_interval_secs() -> u64 {
    5
}
/// 10 s: two report intervals of a speaker at RFC 3550's pace.
pub fn default_report_grace_secs() -> u64 {
    10
}
/// Orange: an unmarked text is treated as serious but does not interrupt a red alert.
pub fn default_grade() -> Grade {
    Grade::Orange
}
/// 64 programmes.
pub fn default_queue_limit() -> usize {
    64
}
/// 2 a minute: a programme lasts about a minute.
pub fn default_per_minute() -> f64 {
    2.0
}

/// A speaker configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `groups` is empty.
    #[error("groups: at least one RTP destination is needed")]
    NoGroups,
    /// A group has an empty name.
    #[error("groups[{0}].name: must not be empty")]
    EmptyName(usize),
    /// A group is named `*`, which addresses every group.
    #[error("groups[{0}].name: \"*\" is reserved for a broadcast to every group")]
    ReservedName(usize),
    /// Two groups share a name.
    #[error("groups[{0}].name: {1:?} is used twice")]
    DuplicateName(usize, String),
    /// Two groups stream to the same address.
    #[error("groups[{0}].rtp: {1} is used twice")]
    DuplicateDestination(usize, SocketAddr),
    /// A destination port is zero.
    #[error("groups[{0}].rtp: port must not be 0")]
    ZeroPort(usize),
    /// An expected speaker is not an IP address.
    #[error("groups[{0}].speakers: {1:?} is not an ip or ip:port")]
    BadSpeaker(usize, String),
    /// `repeat` is zero.
    #[error("repeat: must be at least 1")]
    ZeroRepeat,
    /// An interval that must be positive is zero.
    #[error("{0}: must be at least 1 second")]
    ZeroDuration(&'static str),
    /// `ttl` is not 1 to 255.
    #[error("ttl: must be 1 to 255")]
    BadTtl,
    /// `multicast_interface` is not the unicast address of a network card.
    #[error(
        "multicast_interface: {0} is not a network card's unicast address (omit the key to let the kernel choose)"
    )]
    BadInterface(Ipv4Addr),
    /// `multicast_interface` is not an address of this host.
    #[error("multicast_interface: {0} is not an address of this host ({1})")]
    InterfaceNotLocal(Ipv4Addr, String),
    /// `queue_limit` is zero.
    #[error("queue_limit: must be at least 1")]
    ZeroQueue,
    /// `per_minute` is not positive.
    #[error("per_minute: must be a positive number")]
    BadRate,
}

impl SpeakerConfig {
    /// Every default, streaming to `rtp` (a group named `speaker`).
    pub fn new(rtp: SocketAddr) -> Self {
        SpeakerConfig {
            groups: vec![GroupConfig {
                name: "speaker".to_owned(),
                rtp,
                rtcp: None,
                speakers: Vec::new(),
            }],
            codec: default_codec(),
            bind: default_bind(),
            rtcp_bind: default_bind(),
            ttl: default_ttl(),
            multicast_interface: None,
            repeat: default_repeat(),
            pause_secs: default_pause_secs(),
            rtcp_interval_secs: default_rtcp_interval_secs(),
            report_grace_secs: default_report_grace_secs(),
            default_grade: default_grade(),
            queue_limit: default_queue_limit(),
            per_minute: default_per_minute(),
        }
    }

    /// Checks everything before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.groups.is_empty() {
            return Err(ConfigError::NoGroups);
        }
        for (i, g) in self.groups.iter().enumerate() {
            if g.name.trim().is_empty() {
                return Err(ConfigError::EmptyName(i));
            }
            if g.name == crate::proto::BROADCAST_GROUP {
                return Err(ConfigError::ReservedName(i));
            }
            if g.rtp.port() == 0 {
                return Err(ConfigError::ZeroPort(i));
            }
            if let Some(prev) = self.groups.get(..i) {
                if prev.iter().any(|p| p.name == g.name) {
                    return Err(ConfigError::DuplicateName(i, g.name.clone()));
                }
                if prev.iter().any(|p| p.rtp == g.rtp) {
                    return Err(ConfigError::DuplicateDestination(i, g.rtp));
                }
            }
            for s in &g.speakers {
                if s.parse::<SocketAddr>().is_err() && s.parse::<std::net::IpAddr>().is_err() {
                    return Err(ConfigError::BadSpeaker(i, s.clone()));
                }
            }
        }
        if self.repeat == 0 {
            return Err(ConfigError::ZeroRepeat);
        }
        for (name, v) in [
            ("rtcp_interval_secs", self.rtcp_interval_secs),
            ("report_grace_secs", self.report_grace_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if !(1..=255).contains(&self.ttl) {
            return Err(ConfigError::BadTtl);
        }
        if let Some(ip) = self.multicast_interface
            && (ip.is_multicast() || ip.is_broadcast() || ip.is_unspecified())
        {
            return Err(ConfigError::BadInterface(ip));
        }
        if self.queue_limit == 0 {
            return Err(ConfigError::ZeroQueue);
        }
        if !(self.per_minute.is_finite() && self.per_minute > 0.0) {
            return Err(ConfigError::BadRate);
        }
        Ok(())
    }

    /// Whether any group streams or hears reports on a multicast address.
    pub fn has_multicast(&self) -> bool {
        self.groups
            .iter()
            .flat_map(|g| [g.rtp.ip(), g.rtcp_addr().ip()])
            .any(|ip| ip.is_multicast())
    }

    /// Checks that `multicast_interface` is an address of this host, when some group is
    /// multicast: a socket is bound to it, which the kernel refuses for an address no
    /// network card has. Not part of [`SpeakerConfig::validate`]: a card whose address
    /// is not up yet at boot (cable out, DHCP late) must not stop the daemon and its
    /// other bearers; the driver checks this when it opens its sockets, reports itself
    /// down with this error, and retries.
    pub fn check_interface(&self) -> Result<(), ConfigError> {
        let Some(ip) = self.multicast_interface else {
            return Ok(());
        };
        if !self.has_multicast() {
            return Ok(());
        }
        std::net::UdpSocket::bind(SocketAddr::new(IpAddr::V4(ip), 0))
            .map(drop)
            .map_err(|e| ConfigError::InterfaceNotLocal(ip, e.to_string()))
    }

    /// What this driver offers the router.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            bearer: Bearer::Speaker,
            per_minute: self.per_minute,
            // Spoken at about 4 characters a second, 300 characters is over a minute per
            // repeat: long enough for any warning.
            max_chars: 300,
            // Speakers send no messages, only reception reports.
            sender_authenticated: false,
        }
    }

    /// Pause between repeats.
    pub fn pause(&self) -> Duration {
        Duration::from_secs(self.pause_secs)
    }

    /// Interval between sender reports.
    pub fn rtcp_interval(&self) -> Duration {
        Duration::from_secs(self.rtcp_interval_secs)
    }

    /// How long late receiver reports count.
    pub fn report_grace(&self) -> Duration {
        Duration::from_secs(self.report_grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_unknown_keys_are_refused() {
        let c: SpeakerConfig =
            toml::from_str("[[groups]]\nname = \"speaker\"\nrtp = \"239.1.1.10:5004\"").unwrap();
        assert_eq!(c, SpeakerConfig::new("239.1.1.10:5004".parse().unwrap()));
        assert_eq!(c.codec, Codec::Pcma);
        assert_eq!(c.groups[0].rtcp_addr(), "239.1.1.10:5005".parse().unwrap());
        assert!(c.validate().is_ok());
        let e = toml::from_str::<SpeakerConfig>(
            "repeats = 2\n[[groups]]\nname = \"a\"\nrtp = \"239.1.1.10:5004\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("repeats"), "{e}");
        let e = toml::from_str::<SpeakerConfig>(
            "codec = \"opus\"\n[[groups]]\nname = \"a\"\nrtp = \"239.1.1.10:5004\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("opus"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = SpeakerConfig::new("127.0.0.1:5004".parse().unwrap());
        c.groups.push(c.groups[0].clone());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("groups[1].name")
        );
        c.groups[1].name = "*".into();
        assert_eq!(c.validate(), Err(ConfigError::ReservedName(1)));
        c.groups[1].name = "b".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("groups[1].rtp")
        );
        c.groups[1].rtp = "127.0.0.1:6004".parse().unwrap();
        c.groups[1].speakers = vec!["village-pole".into()];
        assert_eq!(
            c.validate(),
            Err(ConfigError::BadSpeaker(1, "village-pole".into()))
        );
        c.groups[1].speakers = vec!["10.0.0.5".into(), "10.0.0.6:5005".into()];
        assert!(c.validate().is_ok());
        c.repeat = 0;
        assert!(c.validate().unwrap_err().to_string().starts_with("repeat"));
        c.repeat = 1;
        c.ttl = 0;
        assert_eq!(c.validate(), Err(ConfigError::BadTtl));
        c.ttl = 1;
        c.groups.clear();
        assert_eq!(c.validate(), Err(ConfigError::NoGroups));
    }

    #[test]
    fn the_multicast_interface_is_a_unicast_address_of_this_host() {
        let c: SpeakerConfig = toml::from_str(
            "multicast_interface = \"127.0.0.1\"\n[[groups]]\nname = \"v1\"\nrtp = \"239.1.1.10:5004\"",
        )
        .unwrap();
        assert_eq!(c.multicast_interface, Some(Ipv4Addr::LOCALHOST));
        assert!(c.has_multicast());
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.check_interface(), Ok(()));
        // Not an address at all: refused by the config parser, naming the key.
        let e = toml::from_str::<SpeakerConfig>(
            "multicast_interface = \"eth1\"\n[[groups]]\nname = \"v1\"\nrtp = \"239.1.1.10:5004\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("multicast_interface"), "{e}");
        // A group, the broadcast address or "any" do not name a card.
        for bad in [
            Ipv4Addr::new(239, 1, 1, 10),
            Ipv4Addr::BROADCAST,
            Ipv4Addr::UNSPECIFIED,
        ] {
            let mut c = c.clone();
            c.multicast_interface = Some(bad);
            assert_eq!(c.validate(), Err(ConfigError::BadInterface(bad)));
            assert!(
                c.validate()
                    .unwrap_err()
                    .to_string()
                    .starts_with("multicast_interface: ")
            );
        }
        // Well-formed but no card of this host has it (TEST-NET-2): a clear error from
        // the check, not a panic and not the kernel's bare errno.
        let mut far = c.clone();
        far.multicast_interface = Some(Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!(far.validate(), Ok(()), "the form is fine");
        let e = far.check_interface().unwrap_err();
        assert!(
            matches!(&e, ConfigError::InterfaceNotLocal(ip, _) if *ip == Ipv4Addr::new(198, 51, 100, 7)),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("multicast_interface: 198.51.100.7 is not an address of this host ("),
            "{e}"
        );
        // Only unicast speakers: the interface is never used, so never a reason to fail.
        far.groups[0].rtp = "10.0.3.21:5004".parse().unwrap();
        assert!(!far.has_multicast());
        assert_eq!(far.check_interface(), Ok(()));
        // Unicast RTP but speakers reporting to a group still joins that group.
        far.groups[0].rtcp = Some("239.1.1.10:5005".parse().unwrap());
        assert!(far.has_multicast());
        assert!(far.check_interface().is_err());
    }
}
