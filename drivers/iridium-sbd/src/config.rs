//! Configuration of one Iridium SBD modem, as the daemon's config file gives it
//! (`[devices.NAME] type = "iridium_sbd" ...`).

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tocsin_channel::Capabilities;
use tocsin_core::Bearer;

/// One 9602/9603 modem: where it is and how to drive it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SbdConfig {
    /// Serial device path, preferably stable (`/dev/serial/by-id/...`).
    pub path: String,
    /// Baud rate (the 9602/9603 default is 19200).
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Messages per minute the router may plan for this modem. A session takes 5–20 s
    /// and may need retries, so about two a minute.
    #[serde(default = "default_per_minute")]
    pub per_minute: f64,
    /// Largest mobile-originated message in bytes (340 on the 9602/9603; 1960 on the
    /// 9522B/9523).
    #[serde(default = "default_mo_max")]
    pub mo_max: usize,
    /// Largest mobile-terminated message in bytes (270 on the 9602/9603).
    #[serde(default = "default_mt_max")]
    pub mt_max: usize,
    /// Seconds between mailbox checks when nothing is sent (0: only after sends and rings).
    #[serde(default = "default_mailbox_interval_secs")]
    pub mailbox_interval_secs: u64,
    /// Seconds between signal polls (`AT+CSQ`).
    #[serde(default = "default_health_interval_secs")]
    pub health_interval_secs: u64,
    /// How long to wait for the result of a session (`AT+SBDIX`), in seconds.
    #[serde(default = "default_session_timeout_secs")]
    pub session_timeout_secs: u64,
    /// How long to wait for any other command, in seconds.
    #[serde(default = "default_command_timeout_secs")]
    pub command_timeout_secs: u64,
    /// Sessions tried for one message before it is reported failed (retryable).
    #[serde(default = "default_session_attempts")]
    pub session_attempts: u32,
    /// First pause after a failed session, seconds; it doubles up to `retry_max_secs`.
    /// The IridiumSBD library waits 10 s (30 s on USB power).
    #[serde(default = "default_retry_secs")]
    pub retry_secs: u64,
    /// Longest pause between session retries, seconds.
    #[serde(default = "default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// How long a received MT message may wait for its release before the next session
    /// (which would overwrite the modem's MT buffer) goes ahead anyway, seconds.
    #[serde(default = "default_mt_hold_secs")]
    pub mt_hold_secs: u64,
    /// Field kits this modem talks to. Empty: every message goes to the destination the
    /// service provider has configured for this modem. Otherwise a send must name one of
    /// them, and its `prefix` (if any) is put in front of the message so the provider
    /// routes it (e.g. RockBLOCK cross-delivery) **[U: provider specific]**.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// Most sends waiting in the driver; beyond that a send is refused as retryable.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: usize,
}

/// A field kit reachable through this modem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The kit modem's IMEI (15 digits): its address.
    pub imei: String,
    /// Hex bytes to put in front of every message to it (routing at the provider).
    #[serde(default)]
    pub prefix: String,
}

/// 19200 baud, the 9602/9603 default.
pub fn default_baud() -> u32 {
    19_200
}
/// Two messages a minute.
pub fn default_per_minute() -> f64 {
    2.0
}
/// 340 bytes, the 9602/9603 MO limit.
pub fn default_mo_max() -> usize {
    340
}
/// 270 bytes, the 9602/9603 MT limit.
pub fn default_mt_max() -> usize {
    270
}
/// A mailbox check every 5 minutes when idle: replies from kits without ring alerts
/// still come in within a red alert's ack deadline.
pub fn default_mailbox_interval_secs() -> u64 {
    300
}
/// A signal poll a minute.
pub fn default_health_interval_secs() -> u64 {
    60
}
/// 90 s: sessions take seconds to tens of seconds.
pub fn default_session_timeout_secs() -> u64 {
    90
}
/// 10 s; `AT+CSQ` alone may take up to 10 s and gets twice this.
pub fn default_command_timeout_secs() -> u64 {
    10
}
/// Five sessions per message.
pub fn default_session_attempts() -> u32 {
    5
}
/// 10 s, as the IridiumSBD library.
pub fn default_retry_secs() -> u64 {
    10
}
/// Two minutes.
pub fn default_retry_max_secs() -> u64 {
    120
}
/// 30 s: the gateway commits a reply in milliseconds; a stuck gateway must not stop sends.
pub fn default_mt_hold_secs() -> u64 {
    30
}
/// 1024, the depth of a driver's command channel.
pub fn default_queue_limit() -> usize {
    tocsin_channel::COMMAND_QUEUE
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `path` is empty.
    #[error("path: must name a serial device")]
    EmptyPath,
    /// `baud` is zero.
    #[error("baud: must be positive")]
    ZeroBaud,
    /// `per_minute` is not a positive number.
    #[error("per_minute: must be a positive number")]
    BadRate,
    /// A size limit is out of range.
    #[error("{0}: must be 1 to 1960 bytes")]
    BadSize(&'static str),
    /// A timeout, interval or count that must be positive is zero.
    #[error("{0}: must be at least 1")]
    Zero(&'static str),
    /// `retry_max_secs` is below `retry_secs`.
    #[error("retry_max_secs: must be at least retry_secs")]
    RetryRange,
    /// A peer's IMEI is not 15 digits.
    #[error("peers: {0:?} is not a 15-digit IMEI")]
    BadImei(String),
    /// A peer's prefix is not hex, or leaves no room for a message.
    #[error("peers: prefix {0:?} must be an even number of hex digits, shorter than mo_max")]
    BadPrefix(String),
    /// The same IMEI is listed twice.
    #[error("peers: {0} is listed twice")]
    DuplicatePeer(String),
}

impl SbdConfig {
    /// A configuration with every default, for a modem at `path`.
    pub fn new(path: impl Into<String>) -> Self {
        SbdConfig {
            path: path.into(),
            baud: default_baud(),
            per_minute: default_per_minute(),
            mo_max: default_mo_max(),
            mt_max: default_mt_max(),
            mailbox_interval_secs: default_mailbox_interval_secs(),
            health_interval_secs: default_health_interval_secs(),
            session_timeout_secs: default_session_timeout_secs(),
            command_timeout_secs: default_command_timeout_secs(),
            session_attempts: default_session_attempts(),
            retry_secs: default_retry_secs(),
            retry_max_secs: default_retry_max_secs(),
            mt_hold_secs: default_mt_hold_secs(),
            peers: Vec::new(),
            queue_limit: default_queue_limit(),
        }
    }

    /// Checks everything before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.path.trim().is_empty() {
            return Err(ConfigError::EmptyPath);
        }
        if self.baud == 0 {
            return Err(ConfigError::ZeroBaud);
        }
        if !(self.per_minute.is_finite() && self.per_minute > 0.0) {
            return Err(ConfigError::BadRate);
        }
        for (name, v) in [("mo_max", self.mo_max), ("mt_max", self.mt_max)] {
            if !(1..=1960).contains(&v) {
                return Err(ConfigError::BadSize(name));
            }
        }
        for (name, v) in [
            ("health_interval_secs", self.health_interval_secs),
            ("session_timeout_secs", self.session_timeout_secs),
            ("command_timeout_secs", self.command_timeout_secs),
            ("session_attempts", u64::from(self.session_attempts)),
            ("retry_secs", self.retry_secs),
            ("mt_hold_secs", self.mt_hold_secs),
            ("queue_limit", self.queue_limit as u64),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.retry_max_secs < self.retry_secs {
            return Err(ConfigError::RetryRange);
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.peers {
            if tocsin_compact::Imei::parse(&p.imei).is_none() {
                return Err(ConfigError::BadImei(p.imei.clone()));
            }
            match p.prefix_bytes() {
                Some(b) if b.len() < self.mo_max => {}
                _ => return Err(ConfigError::BadPrefix(p.prefix.clone())),
            }
            if !seen.insert(&p.imei) {
                return Err(ConfigError::DuplicatePeer(p.imei.clone()));
            }
        }
        Ok(())
    }

    /// What this modem offers the router.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            bearer: Bearer::Sbd,
            per_minute: self.per_minute,
            // A text frame spends 2 bytes of header; Chinese takes 2 bytes a character.
            max_chars: self.mo_max.saturating_sub(2) / 2,
            // Who sent an MT message is only what our own frame says.
            sender_authenticated: false,
        }
    }

    /// The peer with this IMEI.
    pub fn peer(&self, imei: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.imei == imei)
    }

    /// The session timeout.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_secs(self.session_timeout_secs)
    }

    /// The timeout of other commands.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }
}

impl Peer {
    /// The prefix as bytes; `None` if it is not hex.
    pub fn prefix_bytes(&self) -> Option<Vec<u8>> {
        let p = self.prefix.trim();
        if !p.len().is_multiple_of(2) {
            return None;
        }
        (0..p.len())
            .step_by(2)
            .map(|i| p.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_unknown_keys_are_refused() {
        let c: SbdConfig = toml::from_str("path = \"/dev/ttyUSB3\"").unwrap();
        assert_eq!(c, SbdConfig::new("/dev/ttyUSB3"));
        assert_eq!(c.baud, 19_200);
        assert!(c.validate().is_ok());
        let err = toml::from_str::<SbdConfig>("path = \"x\"\nmailbox_secs = 9").unwrap_err();
        assert!(err.to_string().contains("mailbox_secs"), "{err}");
        let c: SbdConfig = toml::from_str(
            "path = \"x\"\n[[peers]]\nimei = \"300234010753370\"\nprefix = \"5242\"\n",
        )
        .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.peers[0].prefix_bytes(), Some(vec![0x52, 0x42]));
        assert_eq!(c.capabilities().max_chars, 169);
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = SbdConfig::new("/dev/x");
        c.mo_max = 0;
        assert!(c.validate().unwrap_err().to_string().starts_with("mo_max"));
        let mut c = SbdConfig::new("/dev/x");
        c.session_attempts = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("session_attempts")
        );
        let mut c = SbdConfig::new("/dev/x");
        c.peers.push(Peer {
            imei: "12345".into(),
            prefix: String::new(),
        });
        assert!(c.validate().unwrap_err().to_string().starts_with("peers"));
        let mut c = SbdConfig::new("/dev/x");
        c.peers.push(Peer {
            imei: "300234010753370".into(),
            prefix: "5G".into(),
        });
        assert_eq!(c.validate(), Err(ConfigError::BadPrefix("5G".into())));
    }
}
