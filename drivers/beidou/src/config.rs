//! Configuration of one BeiDou RDSS terminal, as the daemon's config file gives it
//! (`[devices.NAME] type = "beidou" ...`).
//!
//! Facts the protocol brief marks unconfirmed [U] are settings here: the BDS-3 capacity,
//! the beam-power threshold, what `$CCTCQ` coding 2 means, whether receipts exist.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tocsin_channel::Capabilities;
use tocsin_core::Bearer;

use crate::wire::Dialect;

/// Which sentences to speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialectSetting {
    /// Ask the card in both dialects and speak the one the terminal answers in first.
    #[default]
    Auto,
    /// BDS-2 "2.1" sentences only.
    Bds2,
    /// BDS-3 sentences only.
    Bds3,
}

impl DialectSetting {
    /// The fixed dialect, if not automatic.
    pub fn fixed(self) -> Option<Dialect> {
        match self {
            DialectSetting::Auto => None,
            DialectSetting::Bds2 => Some(Dialect::Bds2),
            DialectSetting::Bds3 => Some(Dialect::Bds3),
        }
    }
}

/// How the data of BDS-3 coding 2 ("code") is read; vendors disagree [U].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeCoding {
    /// Hex of arbitrary bytes (most observed).
    #[default]
    Hex,
    /// Decimal digits that the module BCD-packs.
    Bcd,
}

/// One terminal: where it is and how to drive it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeidouConfig {
    /// Serial device path, preferably a stable one such as `/dev/serial/by-id/...`.
    pub path: String,
    /// Baud rate of the serial line.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Which sentences the terminal speaks; `auto` detects it from the card's answer.
    #[serde(default)]
    pub dialect: DialectSetting,
    /// Seconds between transmissions; overrides what the card reports when set.
    #[serde(default)]
    pub service_interval_secs: Option<u64>,
    /// Seconds between transmissions assumed before the card is read (and for the
    /// router's send budget, which is fixed when the driver starts).
    #[serde(default = "default_assumed_interval_secs")]
    pub assumed_interval_secs: u64,
    /// Communication level assumed for the router's text length before the card is read.
    #[serde(default = "default_assumed_level")]
    pub assumed_level: u8,
    /// Bits per message; overrides the level table when set.
    #[serde(default)]
    pub capacity_bits: Option<u32>,
    /// Bits per message on BDS-3 (per-level figures are not published [U]).
    #[serde(default = "default_bds3_capacity_bits")]
    pub bds3_capacity_bits: u32,
    /// Send 2.1 messages as express (特快, 188 bits) instead of normal.
    #[serde(default)]
    pub express: bool,
    /// Allow GBK characters outside GB2312 (if the terminals on the other end show them).
    #[serde(default)]
    pub allow_gbk: bool,
    /// BDS-3 frequency point 1–5 (Lf0..Lf4).
    #[serde(default = "default_freq_point")]
    pub freq_point: u8,
    /// Ask for receipts (BDS-3 inbound-ack flag) and report `Delivered` from `$BDHZR` [U].
    #[serde(default)]
    pub receipts: bool,
    /// How BDS-3 coding 2 data is read.
    #[serde(default)]
    pub code_coding: CodeCoding,
    /// Beam power (0–4) at which a BDS-2 beam counts as usable [U threshold].
    #[serde(default = "default_min_beam_power")]
    pub min_beam_power: u8,
    /// Interval asked of `$BDBSI` output, seconds.
    #[serde(default = "default_bsi_interval_secs")]
    pub bsi_interval_secs: u32,
    /// A signal report older than this no longer holds sends back, seconds.
    #[serde(default = "default_signal_stale_secs")]
    pub signal_stale_secs: u64,
    /// After this long without signal the terminal is reported down, so the router moves
    /// its sends to another terminal, seconds.
    #[serde(default = "default_down_after_no_signal_secs")]
    pub down_after_no_signal_secs: u64,
    /// How long to wait for `$BDFKI` after a send or for the card's answer, seconds.
    #[serde(default = "default_feedback_timeout_secs")]
    pub feedback_timeout_secs: u64,
    /// Most sends waiting in the driver; beyond that a send is refused as retryable.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: usize,
}

/// 115200 baud, what current modules use.
pub fn default_baud() -> u32 {
    115_200
}
/// 60 s, typical for civil cards.
pub fn default_assumed_interval_secs() -> u64 {
    60
}
/// Level 3, a typical civil card (628 bits, about 38 Chinese characters).
pub fn default_assumed_level() -> u8 {
    3
}
/// 14,000 bits: the official BDS-3 regional figure.
pub fn default_bds3_capacity_bits() -> u32 {
    14_000
}
/// Frequency point 2, what modules usually use.
pub fn default_freq_point() -> u8 {
    2
}
/// Power 2: "at least one beam ≥ 2" as the brief suggests.
pub fn default_min_beam_power() -> u8 {
    2
}
/// 10 s between beam reports.
pub fn default_bsi_interval_secs() -> u32 {
    10
}
/// 30 s: three missed beam reports.
pub fn default_signal_stale_secs() -> u64 {
    30
}
/// 10 s: long enough to ride out a flicker, short enough to move a red alert on.
pub fn default_down_after_no_signal_secs() -> u64 {
    10
}
/// 10 s for the terminal's feedback.
pub fn default_feedback_timeout_secs() -> u64 {
    10
}
/// 1024 sends, the depth of a driver's command channel.
pub fn default_queue_limit() -> usize {
    tocsin_channel::COMMAND_QUEUE
}

/// A terminal configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `path` is empty.
    #[error("path: must name a serial device")]
    EmptyPath,
    /// `baud` is zero.
    #[error("baud: must be positive")]
    ZeroBaud,
    /// An interval or timeout is zero.
    #[error("{0}: must be at least 1 second")]
    ZeroDuration(&'static str),
    /// `assumed_level` is not 1–5.
    #[error("assumed_level: {0} is not a communication level 1-5")]
    BadLevel(u8),
    /// A capacity is too small for any message.
    #[error("{0}: must be at least 24 bits")]
    SmallCapacity(&'static str),
    /// `freq_point` is not 1–5.
    #[error("freq_point: {0} is not 1-5")]
    BadFreqPoint(u8),
    /// `min_beam_power` is above 4.
    #[error("min_beam_power: {0} is above the highest power 4")]
    BadBeamPower(u8),
    /// `queue_limit` is zero.
    #[error("queue_limit: must be at least 1")]
    ZeroQueue,
}

/// Bits per message of a BDS-2 card by level 1–4, unencrypted and encrypted [I].
const BDS2_BITS: [u32; 4] = [110, 408, 628, 848];
const BDS2_BITS_ENCRYPTED: [u32; 4] = [140, 360, 580, 1680];
/// Bits of an express (特快) message.
const EXPRESS_BITS: u32 = 188;

impl BeidouConfig {
    /// A configuration with every default, for a terminal at `path`.
    pub fn new(path: impl Into<String>) -> Self {
        BeidouConfig {
            path: path.into(),
            baud: default_baud(),
            dialect: DialectSetting::Auto,
            service_interval_secs: None,
            assumed_interval_secs: default_assumed_interval_secs(),
            assumed_level: default_assumed_level(),
            capacity_bits: None,
            bds3_capacity_bits: default_bds3_capacity_bits(),
            express: false,
            allow_gbk: false,
            freq_point: default_freq_point(),
            receipts: false,
            code_coding: CodeCoding::Hex,
            min_beam_power: default_min_beam_power(),
            bsi_interval_secs: default_bsi_interval_secs(),
            signal_stale_secs: default_signal_stale_secs(),
            down_after_no_signal_secs: default_down_after_no_signal_secs(),
            feedback_timeout_secs: default_feedback_timeout_secs(),
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
        for (name, v) in [
            (
                "service_interval_secs",
                self.service_interval_secs.unwrap_or(1),
            ),
            ("assumed_interval_secs", self.assumed_interval_secs),
            ("signal_stale_secs", self.signal_stale_secs),
            ("feedback_timeout_secs", self.feedback_timeout_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if !(1..=5).contains(&self.assumed_level) {
            return Err(ConfigError::BadLevel(self.assumed_level));
        }
        if self.capacity_bits.is_some_and(|b| b < 24) {
            return Err(ConfigError::SmallCapacity("capacity_bits"));
        }
        if self.bds3_capacity_bits < 24 {
            return Err(ConfigError::SmallCapacity("bds3_capacity_bits"));
        }
        if !(1..=5).contains(&self.freq_point) {
            return Err(ConfigError::BadFreqPoint(self.freq_point));
        }
        if self.min_beam_power > 4 {
            return Err(ConfigError::BadBeamPower(self.min_beam_power));
        }
        if self.queue_limit == 0 {
            return Err(ConfigError::ZeroQueue);
        }
        Ok(())
    }

    /// Bits per message for a card of `level` in `dialect` (the override wins).
    pub fn capacity_bits(&self, dialect: Dialect, level: u8, encrypted: bool) -> u32 {
        if let Some(bits) = self.capacity_bits {
            return bits;
        }
        match dialect {
            Dialect::Bds3 => self.bds3_capacity_bits,
            Dialect::Bds2 if self.express => EXPRESS_BITS,
            Dialect::Bds2 => {
                let table = if encrypted {
                    BDS2_BITS_ENCRYPTED
                } else {
                    BDS2_BITS
                };
                // An unknown level gets the smallest capacity rather than a guess that
                // the network would refuse.
                match level {
                    1..=4 => table
                        .get(usize::from(level) - 1)
                        .copied()
                        .unwrap_or(table[0]),
                    _ => table[0],
                }
            }
        }
    }

    /// The interval the router plans with: the override, else the assumed one.
    pub fn planned_interval(&self) -> Duration {
        Duration::from_secs(
            self.service_interval_secs
                .unwrap_or(self.assumed_interval_secs)
                .max(1),
        )
    }

    /// What this terminal offers the router.
    pub fn capabilities(&self) -> Capabilities {
        let dialect = self.dialect.fixed().unwrap_or(Dialect::Bds2);
        let bits = self.capacity_bits(dialect, self.assumed_level, false);
        Capabilities {
            bearer: Bearer::Beidou,
            per_minute: 60.0 / self.planned_interval().as_secs_f64(),
            // Every Chinese character takes two bytes in mixed mode.
            max_chars: payload_bytes(bits) / 2,
            sender_authenticated: true,
        }
    }

    /// The feedback timeout.
    pub fn feedback_timeout(&self) -> Duration {
        Duration::from_secs(self.feedback_timeout_secs)
    }
}

/// Bytes of GB2312 text a message of `bits` carries in mixed mode (after the `A4` marker).
pub fn payload_bytes(bits: u32) -> usize {
    usize::try_from(bits.saturating_sub(8) / 8).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_unknown_keys_are_refused() {
        let c: BeidouConfig = toml::from_str("path = \"/dev/ttyUSB3\"").unwrap();
        assert_eq!(c, BeidouConfig::new("/dev/ttyUSB3"));
        assert!(c.validate().is_ok());
        let c: BeidouConfig =
            toml::from_str("path = \"x\"\ndialect = \"bds3\"\ncode_coding = \"bcd\"").unwrap();
        assert_eq!(c.dialect, DialectSetting::Bds3);
        let err = toml::from_str::<BeidouConfig>("path = \"x\"\nservice_freq = 60").unwrap_err();
        assert!(err.to_string().contains("service_freq"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = BeidouConfig::new("/dev/ttyUSB3");
        c.service_interval_secs = Some(0);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("service_interval_secs")
        );
        let mut c = BeidouConfig::new("/dev/ttyUSB3");
        c.min_beam_power = 5;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("min_beam_power")
        );
    }

    #[test]
    fn capacity_follows_the_level_table_and_the_overrides() {
        let c = BeidouConfig::new("x");
        assert_eq!(c.capacity_bits(Dialect::Bds2, 3, false), 628);
        assert_eq!(c.capacity_bits(Dialect::Bds2, 4, true), 1680);
        assert_eq!(c.capacity_bits(Dialect::Bds2, 9, false), 110);
        assert_eq!(c.capacity_bits(Dialect::Bds3, 5, false), 14_000);
        assert_eq!(payload_bytes(628), 77);
        let caps = c.capabilities();
        assert_eq!(caps.max_chars, 38);
        assert_eq!(caps.per_minute, 1.0);
        assert!(caps.sender_authenticated);
        let mut c = BeidouConfig::new("x");
        c.express = true;
        assert_eq!(c.capacity_bits(Dialect::Bds2, 3, false), 188);
        c.capacity_bits = Some(1000);
        c.service_interval_secs = Some(30);
        assert_eq!(c.capabilities().max_chars, 62);
        assert_eq!(c.capabilities().per_minute, 2.0);
    }
}
