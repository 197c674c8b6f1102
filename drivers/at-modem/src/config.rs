//! Configuration of one GSM/LTE modem, as the daemon's config file gives it.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tocsin_channel::Capabilities;
use tocsin_core::Bearer;

/// One modem: where it is and how to drive it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModemConfig {
    /// Serial device path, preferably a stable one such as `/dev/serial/by-id/...`.
    pub path: String,
    /// Baud rate of the serial line.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Message storage for `AT+CPMS` (`ME` modem memory, `SM` SIM, `MT` both).
    #[serde(default = "default_storage")]
    pub storage: String,
    /// Messages per minute the router may plan for this modem (its send budget). The
    /// driver itself does not throttle: it sends as fast as the modem answers.
    #[serde(default = "default_per_minute")]
    pub per_minute: f64,
    /// How long to wait for `+CMGS: <mr>` after a PDU body, in seconds.
    #[serde(default = "default_cmgs_timeout_secs")]
    pub cmgs_timeout_secs: u64,
    /// How long to wait for any other command's final result, in seconds.
    #[serde(default = "default_command_timeout_secs")]
    pub command_timeout_secs: u64,
    /// How often to poll signal and registration (`AT+CSQ`, `AT+CREG?`), in seconds.
    #[serde(default = "default_health_interval_secs")]
    pub health_interval_secs: u64,
    /// TP-VP relative validity octet (0xAA = 4 days).
    #[serde(default = "default_validity")]
    pub validity: u8,
    /// Ask the network for status reports (delivered to the handset).
    #[serde(default = "default_status_report")]
    pub status_report: bool,
    /// Most sends waiting in the driver; beyond that a send is refused as retryable.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: usize,
    /// Country code for senders the network gives in national form (TOA 0x81).
    #[serde(default = "default_country")]
    pub default_country: String,
}

/// 115200 baud, what USB modems use.
pub fn default_baud() -> u32 {
    115_200
}
/// Modem memory: it holds more than the SIM and survives a SIM swap.
pub fn default_storage() -> String {
    "ME".to_owned()
}
/// 8 messages a minute, within what one GSM modem sustains (6–10).
pub fn default_per_minute() -> f64 {
    8.0
}
/// 60 s: the network can take long to answer a submit under load.
pub fn default_cmgs_timeout_secs() -> u64 {
    60
}
/// 10 s for ordinary commands.
pub fn default_command_timeout_secs() -> u64 {
    10
}
/// 30 s between health polls.
pub fn default_health_interval_secs() -> u64 {
    30
}
/// 0xAA: valid for 4 days.
pub fn default_validity() -> u8 {
    0xAA
}
/// Status reports on: they are how a delivery is known.
pub fn default_status_report() -> bool {
    true
}
/// 1024 sends, the depth of a driver's command channel.
pub fn default_queue_limit() -> usize {
    tocsin_channel::COMMAND_QUEUE
}

/// China: `13912345678` from the network means `+8613912345678`.
pub fn default_country() -> String {
    "86".to_owned()
}

/// A modem configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `path` is empty.
    #[error("path: must name a serial device")]
    EmptyPath,
    /// `baud` is zero.
    #[error("baud: must be positive")]
    ZeroBaud,
    /// `storage` is not two capital letters.
    #[error("storage: {0:?} is not a storage name such as \"ME\" or \"SM\"")]
    BadStorage(String),
    /// `per_minute` is not a positive number.
    #[error("per_minute: must be a positive number")]
    BadRate,
    /// A timeout or interval is zero.
    #[error("{0}: must be at least 1 second")]
    ZeroDuration(&'static str),
    /// `queue_limit` is zero.
    #[error("queue_limit: must be at least 1")]
    ZeroQueue,
    /// `default_country` is not 1 to 3 digits.
    #[error("default_country: {0:?} is not a country calling code")]
    BadCountry(String),
}

impl ModemConfig {
    /// A configuration with every default, for a modem at `path`.
    pub fn new(path: impl Into<String>) -> Self {
        ModemConfig {
            path: path.into(),
            baud: default_baud(),
            storage: default_storage(),
            per_minute: default_per_minute(),
            cmgs_timeout_secs: default_cmgs_timeout_secs(),
            command_timeout_secs: default_command_timeout_secs(),
            health_interval_secs: default_health_interval_secs(),
            validity: default_validity(),
            status_report: default_status_report(),
            queue_limit: default_queue_limit(),
            default_country: default_country(),
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
        if self.storage.len() != 2 || !self.storage.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::BadStorage(self.storage.clone()));
        }
        if !(self.per_minute.is_finite() && self.per_minute > 0.0) {
            return Err(ConfigError::BadRate);
        }
        for (name, v) in [
            ("cmgs_timeout_secs", self.cmgs_timeout_secs),
            ("command_timeout_secs", self.command_timeout_secs),
            ("health_interval_secs", self.health_interval_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if self.queue_limit == 0 {
            return Err(ConfigError::ZeroQueue);
        }
        let c = &self.default_country;
        if c.is_empty() || c.len() > 3 || !c.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::BadCountry(c.clone()));
        }
        Ok(())
    }

    /// What this modem offers the router.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            bearer: Bearer::Sms,
            per_minute: self.per_minute,
            // Up to 10 concatenated UCS2 parts of 67 characters: long enough for any
            // warning, short enough not to hog the modem.
            max_chars: 670,
            sender_authenticated: false,
        }
    }

    /// The submit timeout.
    pub fn cmgs_timeout(&self) -> Duration {
        Duration::from_secs(self.cmgs_timeout_secs)
    }

    /// The timeout of ordinary commands.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }

    /// The interval between health polls.
    pub fn health_interval(&self) -> Duration {
        Duration::from_secs(self.health_interval_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_unknown_keys_are_refused() {
        let c: ModemConfig = toml::from_str("path = \"/dev/ttyUSB2\"").unwrap();
        assert_eq!(c, ModemConfig::new("/dev/ttyUSB2"));
        assert_eq!(c.validity, 0xAA);
        assert!(c.validate().is_ok());
        let err = toml::from_str::<ModemConfig>("path = \"x\"\nbaudrate = 9600").unwrap_err();
        assert!(err.to_string().contains("baudrate"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = ModemConfig::new("/dev/ttyUSB2");
        c.storage = "me".into();
        assert_eq!(c.validate(), Err(ConfigError::BadStorage("me".into())));
        let mut c = ModemConfig::new("/dev/ttyUSB2");
        c.cmgs_timeout_secs = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("cmgs_timeout_secs")
        );
    }
}
