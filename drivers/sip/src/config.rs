//! Configuration of one SIP trunk, as the daemon's config file gives it
//! (`[devices.NAME] type = "sip" ...`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tocsin_channel::Capabilities;
use tocsin_core::{Bearer, PhoneNumber};

use crate::g711::Codec;

/// How a phone number becomes the user part of the Request-URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialPlan {
    /// National form for home numbers (`+8613800138000` → `13800138000`), `00` and the
    /// full number for foreign ones. What Chinese operator trunks expect **[U]**.
    National,
    /// Country code and number without `+` (`8613800138000`).
    International,
    /// E.164 with the `+` (`+8613800138000`).
    E164,
}

/// One SIP trunk: where it is, who we are on it, and how many calls it carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// The trunk (or outbound proxy) every request is sent to, `ip:port`.
    pub trunk: String,
    /// Host part of the URIs we call (`sip:<number>@<domain>`) and of our From; the
    /// trunk's address when absent.
    #[serde(default)]
    pub domain: Option<String>,
    /// Local address of the SIP socket, `ip:port` (port 0 lets the system choose).
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Address written in Via, Contact and SDP; required when `bind` is a wildcard address.
    #[serde(default)]
    pub advertise: Option<String>,
    /// First local RTP port; call slot `i` uses `rtp_port_base + 2 i` (RTCP would be the odd
    /// port; none is sent). 0 lets the system choose a port per slot.
    #[serde(default = "default_rtp_port_base")]
    pub rtp_port_base: u16,
    /// User part of our From and Contact, and the digest user name.
    #[serde(default = "default_user")]
    pub user: String,
    /// Digest password; without it a 401/407 challenge fails the call.
    #[serde(default)]
    pub password: Option<String>,
    /// Digest user name when it differs from `user`.
    #[serde(default)]
    pub auth_user: Option<String>,
    /// Send REGISTER to the trunk and keep it refreshed.
    #[serde(default)]
    pub register: bool,
    /// Registration lifetime asked for, seconds.
    #[serde(default = "default_register_expires_secs")]
    pub register_expires_secs: u64,
    /// Calls in progress at once; more sends wait in the driver's queue.
    #[serde(default = "default_concurrent_calls")]
    pub concurrent_calls: usize,
    /// Calls per minute the router may plan for; `concurrent_calls × 1.5` when absent.
    #[serde(default)]
    pub per_minute: Option<f64>,
    /// Ring time before the call is cancelled as unanswered, seconds.
    #[serde(default = "default_ring_timeout_secs")]
    pub ring_timeout_secs: u64,
    /// Longest answered call, seconds; then the gateway hangs up.
    #[serde(default = "default_max_call_secs")]
    pub max_call_secs: u64,
    /// How long to wait for a key after the prompt has played, seconds.
    #[serde(default = "default_digit_wait_secs")]
    pub digit_wait_secs: u64,
    /// SIP timer T1 (round-trip estimate) for UDP retransmissions, milliseconds.
    #[serde(default = "default_t1_ms")]
    pub t1_ms: u64,
    /// Codecs offered, in order of preference (`pcma`, `pcmu`).
    #[serde(default = "default_codecs")]
    pub codecs: Vec<Codec>,
    /// Payload type offered for RFC 4733 telephone-event.
    #[serde(default = "default_telephone_event_pt")]
    pub telephone_event_pt: u8,
    /// How numbers are written in the Request-URI.
    #[serde(default = "default_dial_plan")]
    pub dial_plan: DialPlan,
    /// Country calling code of home numbers, for the national dial plan.
    #[serde(default = "default_country")]
    pub default_country: String,
    /// Length of the built-in tone prompt, seconds (used when no speech renderer is plugged in).
    #[serde(default = "default_prompt_secs")]
    pub prompt_secs: f64,
    /// Most sends waiting in the driver; beyond that a send fails as retryable.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: usize,
}

/// Any local address, the standard SIP port.
pub fn default_bind() -> String {
    "0.0.0.0:5060".to_owned()
}
/// 40000, a common start of RTP ranges.
pub fn default_rtp_port_base() -> u16 {
    40000
}
/// `tocsin`.
pub fn default_user() -> String {
    "tocsin".to_owned()
}
/// One hour.
pub fn default_register_expires_secs() -> u64 {
    3600
}
/// Four calls, what a small business trunk usually allows.
pub fn default_concurrent_calls() -> usize {
    4
}
/// 30 s of ringing, about what a mobile network allows before its own no-answer.
pub fn default_ring_timeout_secs() -> u64 {
    30
}
/// Three minutes: a prompt, one replay and the wait for a key fit easily.
pub fn default_max_call_secs() -> u64 {
    180
}
/// 8 s to press a key after the prompt.
pub fn default_digit_wait_secs() -> u64 {
    8
}
/// RFC 3261's 500 ms.
pub fn default_t1_ms() -> u64 {
    500
}
/// A-law first (Chinese trunks), then µ-law.
pub fn default_codecs() -> Vec<Codec> {
    vec![Codec::Pcma, Codec::Pcmu]
}
/// 101, the usual dynamic type for telephone-event.
pub fn default_telephone_event_pt() -> u8 {
    101
}
/// National numbers.
pub fn default_dial_plan() -> DialPlan {
    DialPlan::National
}
/// China.
pub fn default_country() -> String {
    "86".to_owned()
}
/// 20 s of tone.
pub fn default_prompt_secs() -> f64 {
    20.0
}
/// 1024 sends, the depth of a driver's command channel.
pub fn default_queue_limit() -> usize {
    tocsin_channel::COMMAND_QUEUE
}

/// A trunk configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `trunk` is not `ip:port`.
    #[error("trunk: {0:?} is not an ip:port address")]
    BadTrunk(String),
    /// `bind` is not `ip:port`.
    #[error("bind: {0:?} is not an ip:port address")]
    BadBind(String),
    /// `advertise` is not an IP address, or is missing while `bind` is a wildcard.
    #[error("advertise: {0}")]
    BadAdvertise(String),
    /// `user` is empty or has characters a SIP URI user part cannot hold unescaped.
    #[error("user: {0:?} must be letters, digits, '-', '_' or '.'")]
    BadUser(String),
    /// `concurrent_calls` is zero or above 1000.
    #[error("concurrent_calls: must be 1 to 1000")]
    BadConcurrency,
    /// `rtp_port_base` leaves no room for the call slots.
    #[error("rtp_port_base: {0} + 2 × concurrent_calls passes 65535")]
    BadRtpPorts(u16),
    /// `per_minute` is not a positive number.
    #[error("per_minute: must be a positive number")]
    BadRate,
    /// A duration is zero.
    #[error("{0}: must be positive")]
    ZeroDuration(&'static str),
    /// `codecs` is empty.
    #[error("codecs: name at least one of \"pcma\", \"pcmu\"")]
    NoCodecs,
    /// `telephone_event_pt` is not a dynamic payload type (96–127).
    #[error("telephone_event_pt: {0} is not a dynamic payload type 96-127")]
    BadEventPt(u8),
    /// `default_country` is not 1 to 3 digits.
    #[error("default_country: {0:?} is not a country calling code")]
    BadCountry(String),
    /// `prompt_secs` is not between 0.1 and 600.
    #[error("prompt_secs: must be between 0.1 and 600")]
    BadPrompt,
    /// `queue_limit` is zero.
    #[error("queue_limit: must be at least 1")]
    ZeroQueue,
}

impl SipConfig {
    /// A configuration with every default, for the trunk at `trunk` (`ip:port`).
    pub fn new(trunk: impl Into<String>) -> Self {
        SipConfig {
            trunk: trunk.into(),
            domain: None,
            bind: default_bind(),
            advertise: None,
            rtp_port_base: default_rtp_port_base(),
            user: default_user(),
            password: None,
            auth_user: None,
            register: false,
            register_expires_secs: default_register_expires_secs(),
            concurrent_calls: default_concurrent_calls(),
            per_minute: None,
            ring_timeout_secs: default_ring_timeout_secs(),
            max_call_secs: default_max_call_secs(),
            digit_wait_secs: default_digit_wait_secs(),
            t1_ms: default_t1_ms(),
            codecs: default_codecs(),
            telephone_event_pt: default_telephone_event_pt(),
            dial_plan: default_dial_plan(),
            default_country: default_country(),
            prompt_secs: default_prompt_secs(),
            queue_limit: default_queue_limit(),
        }
    }

    /// Checks everything before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.trunk_addr()?;
        let bind = self.bind_addr()?;
        self.advertise_ip(bind.ip())?;
        if self.user.is_empty()
            || !self
                .user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(ConfigError::BadUser(self.user.clone()));
        }
        if !(1..=1000).contains(&self.concurrent_calls) {
            return Err(ConfigError::BadConcurrency);
        }
        if self.rtp_port_base != 0
            && usize::from(self.rtp_port_base) + 2 * self.concurrent_calls > 65535
        {
            return Err(ConfigError::BadRtpPorts(self.rtp_port_base));
        }
        if let Some(r) = self.per_minute
            && !(r.is_finite() && r > 0.0)
        {
            return Err(ConfigError::BadRate);
        }
        for (name, v) in [
            ("ring_timeout_secs", self.ring_timeout_secs),
            ("max_call_secs", self.max_call_secs),
            ("digit_wait_secs", self.digit_wait_secs),
            ("t1_ms", self.t1_ms),
            ("register_expires_secs", self.register_expires_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if self.codecs.is_empty() {
            return Err(ConfigError::NoCodecs);
        }
        if !(96..=127).contains(&self.telephone_event_pt) {
            return Err(ConfigError::BadEventPt(self.telephone_event_pt));
        }
        let c = &self.default_country;
        if c.is_empty() || c.len() > 3 || !c.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::BadCountry(c.clone()));
        }
        if !(0.1..=600.0).contains(&self.prompt_secs) {
            return Err(ConfigError::BadPrompt);
        }
        if self.queue_limit == 0 {
            return Err(ConfigError::ZeroQueue);
        }
        Ok(())
    }

    /// The trunk's socket address.
    pub fn trunk_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.trunk
            .parse()
            .map_err(|_| ConfigError::BadTrunk(self.trunk.clone()))
    }

    /// The SIP socket's local address.
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.bind
            .parse()
            .map_err(|_| ConfigError::BadBind(self.bind.clone()))
    }

    /// The IP written into Via, Contact and SDP, given the address actually bound.
    pub fn advertise_ip(&self, bound: IpAddr) -> Result<IpAddr, ConfigError> {
        match &self.advertise {
            Some(a) => a
                .parse()
                .map_err(|_| ConfigError::BadAdvertise(format!("{a:?} is not an IP address"))),
            None if bound.is_unspecified() => Err(ConfigError::BadAdvertise(
                "required when bind is a wildcard address".to_owned(),
            )),
            None => Ok(bound),
        }
    }

    /// Host part of request URIs and of our From.
    pub fn domain(&self) -> String {
        self.domain.clone().unwrap_or_else(|| self.trunk.clone())
    }

    /// The user part of the Request-URI for a number.
    pub fn dial_string(&self, number: &PhoneNumber) -> String {
        let digits = number.digits();
        match self.dial_plan {
            DialPlan::National => match digits.strip_prefix(self.default_country.as_str()) {
                Some(national) => national.to_owned(),
                None => format!("00{digits}"),
            },
            DialPlan::International => digits.to_owned(),
            DialPlan::E164 => format!("+{digits}"),
        }
    }

    /// What this trunk offers the router: voice, one call per attempt, the callee
    /// authenticated by the fact that the call reached their registered number.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            bearer: Bearer::Voice,
            per_minute: self
                .per_minute
                .unwrap_or(self.concurrent_calls as f64 * 1.5),
            // The text is spoken; a warning longer than this would not fit a call.
            max_chars: 500,
            sender_authenticated: true,
        }
    }

    /// Timer T1.
    pub fn t1(&self) -> Duration {
        Duration::from_millis(self.t1_ms)
    }

    /// The longest a dialled call can last before its attempt gets its outcome
    /// (`Delivered` or `Failed`), whatever the far end or the network does: ringing up to
    /// `ring_timeout_secs`, then a CANCEL transaction (64×T1, RFC 3261 timer F) during
    /// which a late 2xx may still answer; an answered call lasts at most `max_call_secs`,
    /// then a BYE transaction (64×T1). With the defaults 30 + 32 + 180 + 32 = 274 s. A
    /// call queued behind `concurrent_calls` waits for a slot first.
    pub fn outcome_bound(&self) -> Duration {
        Duration::from_secs(self.ring_timeout_secs + self.max_call_secs) + self.t1() * 128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_unknown_keys_are_refused() {
        let c: SipConfig =
            toml::from_str("trunk = \"10.0.0.1:5060\"\nadvertise = \"10.0.0.5\"").unwrap();
        let mut want = SipConfig::new("10.0.0.1:5060");
        want.advertise = Some("10.0.0.5".into());
        assert_eq!(c, want);
        assert!(c.validate().is_ok());
        assert_eq!(c.capabilities().per_minute, 6.0);
        assert!(c.capabilities().sender_authenticated);
        let err = toml::from_str::<SipConfig>("trunk = \"x\"\nring_timeout = 3").unwrap_err();
        assert!(err.to_string().contains("ring_timeout"), "{err}");
        let c: SipConfig = toml::from_str("trunk = \"1.2.3.4:5060\"\ncodecs = [\"pcmu\"]").unwrap();
        assert_eq!(c.codecs, vec![Codec::Pcmu]);
    }

    #[test]
    fn validation_names_the_key() {
        let c = SipConfig::new("10.0.0.1:5060");
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("advertise")
        );
        let mut c = SipConfig::new("trunk.example");
        c.bind = "127.0.0.1:0".into();
        assert!(c.validate().unwrap_err().to_string().starts_with("trunk"));
        let mut c = SipConfig::new("10.0.0.1:5060");
        c.bind = "127.0.0.1:0".into();
        assert!(c.validate().is_ok());
        c.telephone_event_pt = 13;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("telephone_event_pt")
        );
        c.telephone_event_pt = 101;
        c.t1_ms = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroDuration("t1_ms")));
        c.t1_ms = 500;
        c.rtp_port_base = 65000;
        c.concurrent_calls = 400;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("rtp_port_base")
        );
    }

    #[test]
    fn numbers_follow_the_dial_plan() {
        let p = PhoneNumber::parse("+8613800138000", "86").unwrap();
        let f = PhoneNumber::parse("+447700900123", "86").unwrap();
        let mut c = SipConfig::new("10.0.0.1:5060");
        assert_eq!(c.dial_string(&p), "13800138000");
        assert_eq!(c.dial_string(&f), "00447700900123");
        c.dial_plan = DialPlan::International;
        assert_eq!(c.dial_string(&p), "8613800138000");
        c.dial_plan = DialPlan::E164;
        assert_eq!(c.dial_string(&p), "+8613800138000");
    }
}
