//! Configuration of one GSM/LTE modem, as the daemon's config file gives it.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tocsin_channel::Capabilities;
use tocsin_core::Bearer;

use crate::quirks::{Family, Model, Quirks};

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
    /// How often to poll signal and registration (`AT+CSQ`, `AT+CREG?`, `AT+CGREG?`,
    /// `AT+CEREG?`), in seconds. Registration changes pushed by the modem count at once.
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
    /// Also place voice calls (the modem then serves two devices: SMS and voice).
    #[serde(default)]
    pub voice: bool,
    /// The AT command family for call control, audio and DTMF (`quectel`, `simcom`,
    /// `generic`).
    #[serde(default)]
    pub family: Family,
    /// The model, for its quirks (`standard`, `tiantong`, `iridium-9555`, `iridium-9575`).
    #[serde(default)]
    pub model: Model,
    /// The port the call's PCM audio is written to (Quectel `AT+QPCMV=1,0` serial port,
    /// SIMCom `AT+CPCMREG` port). Required when `voice` is on.
    #[serde(default)]
    pub audio_path: Option<String>,
    /// Calls per minute the router may plan for this modem's voice side.
    #[serde(default = "default_voice_per_minute")]
    pub voice_per_minute: f64,
    /// Ring time before an unanswered call is hung up, seconds; the model's default when absent.
    #[serde(default)]
    pub ring_timeout_secs: Option<u64>,
    /// How long to wait for a key after the prompt has played, seconds.
    #[serde(default = "default_digit_wait_secs")]
    pub digit_wait_secs: u64,
    /// Longest answered call, seconds; then the gateway hangs up.
    #[serde(default = "default_max_call_secs")]
    pub max_call_secs: u64,
    /// Length of the built-in tone prompt, seconds (when no speech renderer is plugged in).
    #[serde(default = "default_prompt_secs")]
    pub prompt_secs: f64,
    /// Overrides the model's number format for dialling (`national`, `plus`, `zero-zero`).
    #[serde(default)]
    pub number_format: Option<crate::quirks::NumberFormat>,
    /// Overrides the model's dial prefix (digits put before every dialled number).
    #[serde(default)]
    pub dial_prefix: Option<String>,
    /// Overrides whether the model reports DTMF keys during a call (unconfirmed for
    /// satellite handsets).
    #[serde(default)]
    pub dtmf_reports: Option<bool>,
    /// Overrides whether the model supports SMS status reports.
    #[serde(default)]
    pub status_reports: Option<bool>,
    /// Overrides whether the model takes several commands on one line (V.250
    /// concatenation); `false` deletes stored messages one `AT+CMGD` per line.
    #[serde(default)]
    pub concatenation: Option<bool>,
    /// Most stored messages deleted on one command line (`AT+CMGD=3;+CMGD=4;...`). A line
    /// of 10 is about 100 characters, well within what modems buffer; 1 means one per line.
    #[serde(default = "default_delete_batch")]
    pub delete_batch: usize,
    /// How long one reply announced (`+CMTI`) on an idle line waits for others before it
    /// is read on its own, in milliseconds; two or more waiting are listed at once with
    /// `AT+CMGL=0`.
    #[serde(default = "default_inbound_batch_ms")]
    pub inbound_batch_ms: u64,
}

/// 10 deletions per line: about 100 characters.
pub fn default_delete_batch() -> usize {
    10
}
/// 5 ms: nothing to a person waiting on an ack, enough for a burst's next `+CMTI`.
pub fn default_inbound_batch_ms() -> u64 {
    5
}

/// 1.5 calls a minute: a call with a 20 s prompt takes 30–60 s.
pub fn default_voice_per_minute() -> f64 {
    1.5
}
/// 8 s to press a key after the prompt.
pub fn default_digit_wait_secs() -> u64 {
    8
}
/// Three minutes: a prompt, one replay and the wait for a key fit easily.
pub fn default_max_call_secs() -> u64 {
    180
}
/// 20 s, the length of a spoken red warning.
pub fn default_prompt_secs() -> f64 {
    20.0
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
/// 10 s between health polls: a lost network stops sends within one poll even on a
/// modem that does not push registration changes.
pub fn default_health_interval_secs() -> u64 {
    10
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
    /// `delete_batch` is zero.
    #[error("delete_batch: must be at least 1")]
    ZeroDeleteBatch,
    /// `inbound_batch_ms` is longer than a second: a reply would wait for nothing.
    #[error("inbound_batch_ms: must be at most 1000")]
    LongInboundBatch,
    /// `default_country` is not 1 to 3 digits.
    #[error("default_country: {0:?} is not a country calling code")]
    BadCountry(String),
    /// `voice` is on but `audio_path` is missing or empty.
    #[error("audio_path: must name the audio port when voice is on")]
    NoAudioPath,
    /// `audio_path` is the command port itself.
    #[error("audio_path: must not be the command port {0:?}")]
    AudioIsCommandPort(String),
    /// `voice_per_minute` or `prompt_secs` is not a positive number.
    #[error("{0}: must be a positive number")]
    BadVoiceNumber(&'static str),
    /// `dial_prefix` holds something other than digits, `*` and `#`.
    #[error("dial_prefix: {0:?} may hold only digits, * and #")]
    BadDialPrefix(String),
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
            voice: false,
            family: Family::default(),
            model: Model::default(),
            audio_path: None,
            voice_per_minute: default_voice_per_minute(),
            ring_timeout_secs: None,
            digit_wait_secs: default_digit_wait_secs(),
            max_call_secs: default_max_call_secs(),
            prompt_secs: default_prompt_secs(),
            number_format: None,
            dial_prefix: None,
            dtmf_reports: None,
            status_reports: None,
            concatenation: None,
            delete_batch: default_delete_batch(),
            inbound_batch_ms: default_inbound_batch_ms(),
        }
    }

    /// The model's quirks with this config's overrides applied.
    pub fn quirks(&self) -> Quirks {
        let mut q = self.model.quirks();
        if let Some(f) = self.number_format {
            q.number_format = f;
        }
        if let Some(p) = &self.dial_prefix {
            q.dial_prefix = p.clone();
        }
        if let Some(d) = self.dtmf_reports {
            q.dtmf_reports = d;
        }
        if let Some(s) = self.status_reports {
            q.status_reports = s;
        }
        if let Some(r) = self.ring_timeout_secs {
            q.ring_timeout_secs = r;
        }
        if let Some(c) = self.concatenation {
            q.concatenation = c;
        }
        q
    }

    /// Whether submits ask for status reports: wanted and the model has them.
    pub fn wants_status_reports(&self) -> bool {
        self.status_report && self.quirks().status_reports
    }

    /// What the modem's voice side offers the router (a second device on the same task).
    pub fn voice_capabilities(&self) -> Capabilities {
        Capabilities {
            bearer: Bearer::Voice,
            per_minute: self.voice_per_minute,
            max_chars: 500,
            // The callee is the one who pressed the key, in the call we placed to them.
            sender_authenticated: true,
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
        if self.delete_batch == 0 {
            return Err(ConfigError::ZeroDeleteBatch);
        }
        if self.inbound_batch_ms > 1000 {
            return Err(ConfigError::LongInboundBatch);
        }
        let c = &self.default_country;
        if c.is_empty() || c.len() > 3 || !c.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::BadCountry(c.clone()));
        }
        for (name, v) in [
            ("voice_per_minute", self.voice_per_minute),
            ("prompt_secs", self.prompt_secs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::BadVoiceNumber(name));
            }
        }
        for (name, v) in [
            ("ring_timeout_secs", self.ring_timeout_secs.unwrap_or(1)),
            ("digit_wait_secs", self.digit_wait_secs),
            ("max_call_secs", self.max_call_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if let Some(p) = &self.dial_prefix
            && !p
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
        {
            return Err(ConfigError::BadDialPrefix(p.clone()));
        }
        if self.voice {
            match self.audio_path.as_deref().map(str::trim) {
                None | Some("") => return Err(ConfigError::NoAudioPath),
                Some(a) if a == self.path.trim() => {
                    return Err(ConfigError::AudioIsCommandPort(a.to_owned()));
                }
                Some(_) => {}
            }
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

    /// The submit timeout (at least the model's: satellite networks answer slowly).
    pub fn cmgs_timeout(&self) -> Duration {
        Duration::from_secs(
            self.cmgs_timeout_secs
                .max(self.model.quirks().min_submit_timeout_secs),
        )
    }

    /// The timeout of ordinary commands.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }

    /// The interval between health polls.
    pub fn health_interval(&self) -> Duration {
        Duration::from_secs(self.health_interval_secs)
    }

    /// How long a lone announced reply waits for others before it is read on its own.
    pub fn inbound_batch(&self) -> Duration {
        Duration::from_millis(self.inbound_batch_ms)
    }

    /// Most deletions on one command line: 1 when the model does not concatenate.
    pub fn deletes_per_line(&self) -> usize {
        if self.quirks().concatenation {
            self.delete_batch.max(1)
        } else {
            1
        }
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

    #[test]
    fn storage_batching_defaults_and_limits() {
        let c: ModemConfig = toml::from_str("path = \"/dev/ttyUSB2\"").unwrap();
        assert_eq!((c.delete_batch, c.inbound_batch_ms), (10, 5));
        assert_eq!(c.deletes_per_line(), 10);
        assert_eq!(c.inbound_batch(), Duration::from_millis(5));
        let c: ModemConfig =
            toml::from_str("path = \"/dev/x\"\nconcatenation = false\ndelete_batch = 4").unwrap();
        assert_eq!(c.deletes_per_line(), 1);
        let mut bad = ModemConfig::new("/dev/x");
        bad.delete_batch = 0;
        assert_eq!(bad.validate(), Err(ConfigError::ZeroDeleteBatch));
        bad.delete_batch = 1;
        bad.inbound_batch_ms = 5_000;
        assert_eq!(bad.validate(), Err(ConfigError::LongInboundBatch));
    }

    #[test]
    fn voice_needs_an_audio_port_and_models_bring_their_quirks() {
        let c: ModemConfig = toml::from_str(
            "path = \"/dev/ttyUSB2\"\nvoice = true\nfamily = \"quectel\"\naudio_path = \"/dev/ttyUSB1\"",
        )
        .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.family, Family::Quectel);
        let mut bad = c.clone();
        bad.audio_path = None;
        assert_eq!(bad.validate(), Err(ConfigError::NoAudioPath));
        bad.audio_path = Some("/dev/ttyUSB2".into());
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::AudioIsCommandPort(_))
        ));

        let sat: ModemConfig =
            toml::from_str("path = \"/dev/x\"\nmodel = \"iridium-9555\"\ndtmf_reports = true")
                .unwrap();
        let q = sat.quirks();
        assert!(q.dtmf_reports, "the override wins");
        assert!(!q.status_reports);
        assert!(!sat.wants_status_reports());
        assert!(sat.cmgs_timeout() >= Duration::from_secs(120));
        let err = toml::from_str::<ModemConfig>("path = \"x\"\nmodel = \"nokia\"").unwrap_err();
        assert!(err.to_string().contains("nokia"), "{err}");
    }
}
