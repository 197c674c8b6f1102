//! Command families and per-model quirks: what differs between a Quectel LTE module, a
//! SIMCom one, a plain 27.007 modem and the satellite handsets that speak AT.
//!
//! The family decides which vendor commands set up call notifications, the PCM audio port
//! and DTMF detection, and how to hang up. The model carries facts that the protocol brief
//! marks unconfirmed for satellite handsets (number format, timeouts, whether DTMF keys and
//! status reports are reported); each one can be overridden in the modem's config.

use serde::{Deserialize, Serialize};
use tocsin_core::PhoneNumber;

/// The AT command family for call control, audio and DTMF.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Quectel EC2x/EG25: `+QIND: "ccinfo"` call states, `AT+QPCMV=1,0` audio over a USB
    /// serial port, `+QTONEDET` keys, `AT+CHUP`.
    Quectel,
    /// SIMCom SIM7600: `+CLCC` pushed after `AT+CLCC=1`, `VOICE CALL: BEGIN/END`,
    /// `AT+CPCMREG=1` audio after answer, `+RXDTMF` keys after `AT+DDET=1`, `AT+CHUP`.
    Simcom,
    /// Plain 3GPP 27.007 / V.250: call state polled with `AT+CLCC`, `ATH` to hang up.
    #[default]
    Generic,
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "quectel" => Ok(Family::Quectel),
            "simcom" => Ok(Family::Simcom),
            "generic" => Ok(Family::Generic),
            other => Err(format!(
                "{other:?} is not a modem family (quectel, simcom, generic)"
            )),
        }
    }
}

impl Family {
    /// The commands that set up voice after the SMS init, in order. Their failure is
    /// logged, not fatal: a modem that refuses one still places calls.
    pub fn voice_setup(self) -> &'static [&'static str] {
        match self {
            Family::Quectel => &["AT+QPCMV=1,0", "AT+QINDCFG=\"ccinfo\",1,0", "AT+QTONEDET=1"],
            Family::Simcom => &["AT+CLCC=1", "AT+DDET=1"],
            Family::Generic => &[],
        }
    }

    /// The hang-up command.
    pub fn hangup(self) -> &'static str {
        match self {
            Family::Quectel | Family::Simcom => "AT+CHUP",
            Family::Generic => "ATH",
        }
    }

    /// The command that starts the PCM audio channel once the call is answered, if any.
    pub fn audio_on(self) -> Option<&'static str> {
        match self {
            Family::Simcom => Some("AT+CPCMREG=1"),
            Family::Quectel | Family::Generic => None,
        }
    }

    /// The command that stops the PCM audio channel after the call, if any.
    pub fn audio_off(self) -> Option<&'static str> {
        match self {
            Family::Simcom => Some("AT+CPCMREG=0"),
            Family::Quectel | Family::Generic => None,
        }
    }

    /// Whether the modem pushes call state changes; without them the driver polls
    /// `AT+CLCC` every second during a call.
    pub fn pushes_call_state(self) -> bool {
        !matches!(self, Family::Generic)
    }
}

/// How a number is written after `ATD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NumberFormat {
    /// Home numbers without the country code (`13800138000`), others as `+<digits>`.
    National,
    /// Always `+<country><number>`.
    Plus,
    /// Always `00<country><number>` (Iridium handsets dial international this way).
    ZeroZero,
}

/// One model's facts, with the config's overrides applied by
/// [`ModemConfig::quirks`](crate::config::ModemConfig::quirks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quirks {
    /// How numbers are dialled.
    pub number_format: NumberFormat,
    /// Digits put before every dialled number.
    pub dial_prefix: String,
    /// Ring time before an unanswered call is hung up, seconds.
    pub ring_timeout_secs: u64,
    /// The shortest submit timeout that makes sense on this network, seconds.
    pub min_submit_timeout_secs: u64,
    /// Whether keys pressed during a call are reported; without it a call can only count
    /// as "reached" and the ack must come by SMS.
    pub dtmf_reports: bool,
    /// Whether the network returns SMS status reports.
    pub status_reports: bool,
    /// Whether the modem takes several extended commands on one line (V.250
    /// concatenation, `AT+CMGD=3;+CMGD=4`). Without it deletions go one per line.
    pub concatenation: bool,
}

/// The model, for its quirks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// A terrestrial GSM/LTE module: every feature, ordinary timeouts.
    #[default]
    Standard,
    /// A Tiantong-1 handset or module (China Telecom GEO). No public AT manual: the
    /// facts here are assumptions [U] to confirm on a real handset.
    Tiantong,
    /// Iridium 9555 handset (the ISU AT set over its USB data port [U]).
    #[serde(rename = "iridium-9555")]
    Iridium9555,
    /// Iridium 9575 (Extreme) handset, same AT set as the 9555 [U].
    #[serde(rename = "iridium-9575")]
    Iridium9575,
}

impl Model {
    /// The model's quirks before overrides.
    pub fn quirks(self) -> Quirks {
        match self {
            Model::Standard => Quirks {
                number_format: NumberFormat::National,
                dial_prefix: String::new(),
                ring_timeout_secs: 30,
                min_submit_timeout_secs: 0,
                dtmf_reports: true,
                status_reports: true,
                concatenation: true,
            },
            // GEO: about 0.6 s of round trip each way; calls take long to set up.
            Model::Tiantong => Quirks {
                number_format: NumberFormat::National,
                dial_prefix: String::new(),
                ring_timeout_secs: 60,
                min_submit_timeout_secs: 120,
                dtmf_reports: false,
                status_reports: false,
                // Unconfirmed [U]; one command per line is always understood.
                concatenation: false,
            },
            // The ISU reference documents PDU SMS and ATD/ATH, nothing about DTMF reports
            // or status reports; Iridium dials everything internationally with 00.
            Model::Iridium9555 | Model::Iridium9575 => Quirks {
                number_format: NumberFormat::ZeroZero,
                dial_prefix: String::new(),
                ring_timeout_secs: 60,
                min_submit_timeout_secs: 120,
                dtmf_reports: false,
                status_reports: false,
                // Unconfirmed [U] for the handsets' USB AT port; one per line is safe.
                concatenation: false,
            },
        }
    }
}

impl Quirks {
    /// The dial string for `number` (no `ATD`, no `;`).
    pub fn dial_string(&self, number: &PhoneNumber, default_country: &str) -> String {
        let digits = number.digits();
        let body = match self.number_format {
            NumberFormat::National => match digits.strip_prefix(default_country) {
                Some(national) if !default_country.is_empty() => national.to_owned(),
                _ => format!("+{digits}"),
            },
            NumberFormat::Plus => format!("+{digits}"),
            NumberFormat::ZeroZero => format!("00{digits}"),
        };
        format!("{}{body}", self.dial_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_dialled_in_the_model_s_format() {
        let home = PhoneNumber::parse("+8613800138000", "86").unwrap();
        let abroad = PhoneNumber::parse("+4917612345678", "86").unwrap();
        let std = Model::Standard.quirks();
        assert_eq!(std.dial_string(&home, "86"), "13800138000");
        assert_eq!(std.dial_string(&abroad, "86"), "+4917612345678");
        let iridium = Model::Iridium9555.quirks();
        assert_eq!(iridium.dial_string(&home, "86"), "008613800138000");
        let mut q = Model::Tiantong.quirks();
        q.dial_prefix = "17".into();
        q.number_format = NumberFormat::Plus;
        assert_eq!(q.dial_string(&home, "86"), "17+8613800138000");
    }

    #[test]
    fn families_differ_in_setup_hangup_and_audio() {
        assert_eq!(Family::Quectel.voice_setup()[0], "AT+QPCMV=1,0");
        assert_eq!(Family::Simcom.audio_on(), Some("AT+CPCMREG=1"));
        assert_eq!(Family::Generic.hangup(), "ATH");
        assert!(!Family::Generic.pushes_call_state());
        assert_eq!("simcom".parse::<Family>(), Ok(Family::Simcom));
        assert!("huawei".parse::<Family>().is_err());
    }
}
