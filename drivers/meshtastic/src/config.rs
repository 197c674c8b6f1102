//! Configuration of one Meshtastic radio, as the daemon's config file gives it:
//!
//! ```toml
//! [devices.mesh0]
//! type = "meshtastic"
//! path = "/dev/serial/by-id/usb-Silicon_Labs_CP2102-if00-port0"   # or: tcp = "127.0.0.1:4403"
//! hop_limit = 3
//! per_minute = 4.0
//! ```

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tocsin_channel::Capabilities;
use tocsin_core::Bearer;

use crate::mesh::MAX_PAYLOAD;

/// The TCP port of the radio's client API.
pub const DEFAULT_TCP_PORT: u16 = 4403;

/// One radio: where it is and how to drive it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// Serial device path of a USB-attached radio (prefer `/dev/serial/by-id/...`).
    /// Exactly one of `path` and `tcp` is given.
    #[serde(default)]
    pub path: Option<String>,
    /// `host:port` of a networked radio's client API (`host` alone means port 4403). The
    /// radio serves one client at a time: a second client displaces the first.
    #[serde(default)]
    pub tcp: Option<String>,
    /// Baud rate of the serial line.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Hops a text may travel (1 to 7); each hop costs the whole mesh airtime again.
    #[serde(default = "default_hop_limit")]
    pub hop_limit: u32,
    /// The radio's channel index to send on (0 = primary).
    #[serde(default)]
    pub channel: u32,
    /// Texts per minute this radio may put on the air: the router's send budget and the
    /// driver's own pacing. LoRa takes seconds per packet (about 2 s for a full packet on
    /// LongFast) and every hop and every ack spends airtime again.
    #[serde(default = "default_per_minute")]
    pub per_minute: f64,
    /// How many texts may go out back to back before pacing applies.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Most payload bytes per text (at most 233). Longer texts are shortened, keeping the
    /// reply instruction and its code.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// How long to wait for the routing ack (or NAK) of a text, in seconds. The firmware
    /// retransmits on its own and normally NAKs first; this covers a radio that never says.
    #[serde(default = "default_ack_timeout_secs")]
    pub ack_timeout_secs: u64,
    /// How long to wait for the want_config handshake to complete, in seconds.
    #[serde(default = "default_handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
    /// How often to send a heartbeat to keep the link alive, in seconds.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    /// How long to wait for the radio's queue status after handing it a packet, in
    /// seconds; older firmware sends none, and the packet is then taken as queued.
    #[serde(default = "default_queue_status_timeout_secs")]
    pub queue_status_timeout_secs: u64,
    /// Whether replies are reported as coming from an authenticated sender. Meshtastic
    /// node numbers are not authenticated: anyone with the channel key can send as any
    /// node number. Only with PKI direct messages (firmware 2.5+, keys exchanged) does the
    /// radio know who sent a text. Set this true only when every lead's node uses PKI;
    /// the driver then passes up only texts that arrived PKI-encrypted and reports any
    /// other text as unrecognized, so a forged reply is never counted as an ack.
    #[serde(default)]
    pub sender_authenticated: bool,
    /// Most sends waiting in the driver; beyond that a send is refused as retryable.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: usize,
}

/// 115200 baud, what Meshtastic radios use on USB serial.
pub fn default_baud() -> u32 {
    115_200
}
/// 3 hops, the firmware's own default.
pub fn default_hop_limit() -> u32 {
    3
}
/// 4 texts a minute: with the ack coming back, about 15 % of a LongFast channel's airtime.
pub fn default_per_minute() -> f64 {
    4.0
}
/// 2 texts back to back, then paced.
pub fn default_burst() -> u32 {
    2
}
/// The largest payload a packet carries.
pub fn default_max_payload_bytes() -> usize {
    MAX_PAYLOAD
}
/// 180 s: three retransmissions over several hops of a slow preset fit well inside.
pub fn default_ack_timeout_secs() -> u64 {
    180
}
/// 30 s: a radio with a full node database streams a few hundred frames.
pub fn default_handshake_timeout_secs() -> u64 {
    30
}
/// 300 s between heartbeats.
pub fn default_heartbeat_secs() -> u64 {
    300
}
/// 5 s for the queue status.
pub fn default_queue_status_timeout_secs() -> u64 {
    5
}
/// 1024 sends, the depth of a driver's command channel.
pub fn default_queue_limit() -> usize {
    tocsin_channel::COMMAND_QUEUE
}

/// A radio configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// Neither `path` nor `tcp` is given, or both are.
    #[error("path, tcp: give exactly one of them")]
    Transport,
    /// `path` is empty.
    #[error("path: must name a serial device")]
    EmptyPath,
    /// `tcp` is not `host` or `host:port`.
    #[error("tcp: {0:?} is not host or host:port")]
    BadTcp(String),
    /// `baud` is zero.
    #[error("baud: must be positive")]
    ZeroBaud,
    /// `hop_limit` is not 1 to 7.
    #[error("hop_limit: {0} is not 1 to 7")]
    BadHopLimit(u32),
    /// `channel` is not a channel index 0 to 7.
    #[error("channel: {0} is not a channel index 0 to 7")]
    BadChannel(u32),
    /// `per_minute` is not a positive number.
    #[error("per_minute: must be a positive number")]
    BadRate,
    /// `burst` is zero.
    #[error("burst: must be at least 1")]
    ZeroBurst,
    /// `max_payload_bytes` is out of range.
    #[error("max_payload_bytes: {0} is not 40 to 233")]
    BadPayload(usize),
    /// A timeout or interval is zero.
    #[error("{0}: must be at least 1 second")]
    ZeroDuration(&'static str),
    /// `queue_limit` is zero.
    #[error("queue_limit: must be at least 1")]
    ZeroQueue,
}

/// Where the radio is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A serial device path.
    Serial(String),
    /// A `host:port` to connect to.
    Tcp(String),
}

impl MeshConfig {
    /// Every default, for a radio at `path_or_addr`: a path starting with `/` is a
    /// serial device, anything else a TCP `host[:port]`.
    pub fn new(path_or_addr: impl Into<String>) -> Self {
        let s = path_or_addr.into();
        if s.starts_with('/') {
            Self::with(Some(s), None)
        } else {
            Self::with(None, Some(s))
        }
    }

    /// Every default, for a radio on the serial device `path`.
    pub fn serial(path: impl Into<String>) -> Self {
        Self::with(Some(path.into()), None)
    }

    /// Every default, for a radio reached at TCP `addr` (`host` or `host:port`).
    pub fn tcp(addr: impl Into<String>) -> Self {
        Self::with(None, Some(addr.into()))
    }

    fn with(path: Option<String>, tcp: Option<String>) -> Self {
        MeshConfig {
            path,
            tcp,
            baud: default_baud(),
            hop_limit: default_hop_limit(),
            channel: 0,
            per_minute: default_per_minute(),
            burst: default_burst(),
            max_payload_bytes: default_max_payload_bytes(),
            ack_timeout_secs: default_ack_timeout_secs(),
            handshake_timeout_secs: default_handshake_timeout_secs(),
            heartbeat_secs: default_heartbeat_secs(),
            queue_status_timeout_secs: default_queue_status_timeout_secs(),
            sender_authenticated: false,
            queue_limit: default_queue_limit(),
        }
    }

    /// Checks everything before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.path, &self.tcp) {
            (Some(p), None) if p.trim().is_empty() => return Err(ConfigError::EmptyPath),
            (Some(_), None) => {}
            (None, Some(t)) => {
                if split_host_port(t).is_none() {
                    return Err(ConfigError::BadTcp(t.clone()));
                }
            }
            _ => return Err(ConfigError::Transport),
        }
        if self.baud == 0 {
            return Err(ConfigError::ZeroBaud);
        }
        if !(1..=7).contains(&self.hop_limit) {
            return Err(ConfigError::BadHopLimit(self.hop_limit));
        }
        if self.channel > 7 {
            return Err(ConfigError::BadChannel(self.channel));
        }
        if !(self.per_minute.is_finite() && self.per_minute > 0.0) {
            return Err(ConfigError::BadRate);
        }
        if self.burst == 0 {
            return Err(ConfigError::ZeroBurst);
        }
        if !(40..=MAX_PAYLOAD).contains(&self.max_payload_bytes) {
            return Err(ConfigError::BadPayload(self.max_payload_bytes));
        }
        for (name, v) in [
            ("ack_timeout_secs", self.ack_timeout_secs),
            ("handshake_timeout_secs", self.handshake_timeout_secs),
            ("heartbeat_secs", self.heartbeat_secs),
            ("queue_status_timeout_secs", self.queue_status_timeout_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if self.queue_limit == 0 {
            return Err(ConfigError::ZeroQueue);
        }
        Ok(())
    }

    /// Where the radio is; `None` when the configuration is invalid.
    pub fn transport(&self) -> Option<Transport> {
        match (&self.path, &self.tcp) {
            (Some(p), None) => Some(Transport::Serial(p.clone())),
            (None, Some(t)) => {
                let (host, port) = split_host_port(t)?;
                Some(Transport::Tcp(format!("{host}:{port}")))
            }
            _ => None,
        }
    }

    /// What this radio offers the router.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            bearer: Bearer::Mesh,
            per_minute: self.per_minute,
            // Characters, counted for Chinese (3 bytes each in UTF-8): a text of this many
            // characters always fits one packet.
            max_chars: self.max_payload_bytes / 3,
            sender_authenticated: self.sender_authenticated,
        }
    }

    /// The routing-ack timeout.
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_secs(self.ack_timeout_secs)
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// How long to wait for a queue status.
    pub fn queue_status_timeout(&self) -> Duration {
        Duration::from_secs(self.queue_status_timeout_secs)
    }

    /// The spacing between texts that `per_minute` allows.
    pub fn send_interval(&self) -> Duration {
        if self.per_minute.is_finite() && self.per_minute > 0.0 {
            Duration::from_secs_f64((60.0 / self.per_minute).min(86_400.0))
        } else {
            Duration::from_secs(60)
        }
    }
}

/// Splits `host[:port]` (IPv6 as `[::1]:4403`); the port defaults to 4403.
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let s = s.trim();
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if host.is_empty() {
            return None;
        }
        let port = match after {
            "" => DEFAULT_TCP_PORT,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        return Some((format!("[{host}]"), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Some((host.to_owned(), port.parse().ok().filter(|p| *p != 0)?))
        }
        Some(_) => None,
        None => Some((s.to_owned(), DEFAULT_TCP_PORT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_unknown_keys_are_refused() {
        let c: MeshConfig = toml::from_str("path = \"/dev/ttyACM0\"").unwrap();
        assert_eq!(c, MeshConfig::serial("/dev/ttyACM0"));
        assert_eq!(c.hop_limit, 3);
        assert!(c.validate().is_ok());
        assert_eq!(
            c.transport(),
            Some(Transport::Serial("/dev/ttyACM0".into()))
        );
        let err = toml::from_str::<MeshConfig>("path = \"x\"\nhops = 3").unwrap_err();
        assert!(err.to_string().contains("hops"), "{err}");
    }

    #[test]
    fn tcp_addresses_take_the_default_port() {
        let c: MeshConfig = toml::from_str("tcp = \"192.0.2.7\"").unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.transport(), Some(Transport::Tcp("192.0.2.7:4403".into())));
        assert_eq!(
            MeshConfig::new("[::1]:4000").transport(),
            Some(Transport::Tcp("[::1]:4000".into()))
        );
        assert_eq!(
            MeshConfig::new("/dev/ttyUSB0").transport(),
            Some(Transport::Serial("/dev/ttyUSB0".into()))
        );
        for bad in ["", "host:", "host:x", "a:b:c", "[]:1", "host:0"] {
            assert_eq!(
                MeshConfig::tcp(bad).validate(),
                Err(ConfigError::BadTcp(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = MeshConfig::serial("/dev/ttyACM0");
        c.tcp = Some("127.0.0.1".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("path, tcp")
        );
        let mut c = MeshConfig::serial("/dev/ttyACM0");
        c.hop_limit = 8;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("hop_limit")
        );
        let mut c = MeshConfig::serial("/dev/ttyACM0");
        c.max_payload_bytes = 300;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("max_payload_bytes")
        );
        let mut c = MeshConfig::serial("/dev/ttyACM0");
        c.ack_timeout_secs = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("ack_timeout_secs")
        );
    }

    #[test]
    fn capabilities_follow_the_config() {
        let mut c = MeshConfig::serial("/dev/ttyACM0");
        let caps = c.capabilities();
        assert_eq!(caps.bearer, Bearer::Mesh);
        assert_eq!(caps.max_chars, 77);
        assert!(!caps.sender_authenticated);
        c.sender_authenticated = true;
        c.per_minute = 6.0;
        assert!(c.capabilities().sender_authenticated);
        assert_eq!(c.send_interval(), Duration::from_secs(10));
    }
}
