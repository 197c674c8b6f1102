//! Configuration of the local sound-card output (`[devices.NAME] type = "local_audio"`):
//! a village node whose sound card feeds the village's amplifier and horns.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tocsin_channel::Capabilities;
use tocsin_core::{Bearer, Grade};

use crate::config::{
    default_grade, default_pause_secs, default_per_minute, default_queue_limit, default_repeat,
};

/// One local loudspeaker output: the sound card and the group name sends address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalAudioConfig {
    /// What a send addresses (`Address::Speaker(group)`; the `group` column of the
    /// directory's `speakers.csv`), e.g. the village id. Not `*`, which addresses every
    /// group of every loudspeaker device.
    pub group: String,
    /// The output device by name as the system lists it (e.g. `USB Audio`); default:
    /// the system's default output.
    #[serde(default)]
    pub card: Option<String>,
    /// How many times a programme repeats its siren and spoken warning.
    #[serde(default = "default_repeat")]
    pub repeat: u32,
    /// Silence between repeats, in seconds.
    #[serde(default = "default_pause_secs")]
    pub pause_secs: u64,
    /// The grade assumed when the text names none (e.g. a cancellation notice).
    #[serde(default = "default_grade")]
    pub default_grade: Grade,
    /// Most programmes held (rendering, waiting, playing); beyond that a send is refused
    /// as retryable.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: usize,
    /// Programmes per minute the router may plan for this output.
    #[serde(default = "default_per_minute")]
    pub per_minute: f64,
}

/// A local audio configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LocalAudioConfigError {
    /// `group` is empty.
    #[error("group: must not be empty")]
    EmptyGroup,
    /// `group` is `*`, which addresses every group.
    #[error("group: \"*\" is reserved for a broadcast to every group")]
    ReservedGroup,
    /// `card` is given but empty.
    #[error("card: must not be empty (leave it out for the default output)")]
    EmptyCard,
    /// `repeat` is zero.
    #[error("repeat: must be at least 1")]
    ZeroRepeat,
    /// `queue_limit` is zero.
    #[error("queue_limit: must be at least 1")]
    ZeroQueue,
    /// `per_minute` is not positive.
    #[error("per_minute: must be a positive number")]
    BadRate,
}

impl LocalAudioConfig {
    /// Every default, for the group `group` on the default output.
    pub fn new(group: &str) -> Self {
        LocalAudioConfig {
            group: group.to_owned(),
            card: None,
            repeat: default_repeat(),
            pause_secs: default_pause_secs(),
            default_grade: default_grade(),
            queue_limit: default_queue_limit(),
            per_minute: default_per_minute(),
        }
    }

    /// Checks everything before anything starts.
    pub fn validate(&self) -> Result<(), LocalAudioConfigError> {
        if self.group.trim().is_empty() {
            return Err(LocalAudioConfigError::EmptyGroup);
        }
        if self.group == crate::proto::BROADCAST_GROUP {
            return Err(LocalAudioConfigError::ReservedGroup);
        }
        if self.card.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(LocalAudioConfigError::EmptyCard);
        }
        if self.repeat == 0 {
            return Err(LocalAudioConfigError::ZeroRepeat);
        }
        if self.queue_limit == 0 {
            return Err(LocalAudioConfigError::ZeroQueue);
        }
        if !(self.per_minute.is_finite() && self.per_minute > 0.0) {
            return Err(LocalAudioConfigError::BadRate);
        }
        Ok(())
    }

    /// What this output offers the router: a loudspeaker, like an RTP group.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            bearer: Bearer::Speaker,
            per_minute: self.per_minute,
            // As for RTP speakers: over a minute of speech per repeat.
            max_chars: 300,
            // A loudspeaker sends no messages.
            sender_authenticated: false,
        }
    }

    /// Pause between repeats.
    pub fn pause(&self) -> Duration {
        Duration::from_secs(self.pause_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_unknown_keys_are_refused() {
        let c: LocalAudioConfig = toml::from_str("group = \"T05-V03\"").unwrap();
        assert_eq!(c, LocalAudioConfig::new("T05-V03"));
        assert_eq!(c.repeat, 3);
        assert!(c.validate().is_ok());
        let e = toml::from_str::<LocalAudioConfig>("group = \"a\"\ndevice = \"hw:1\"").unwrap_err();
        assert!(e.to_string().contains("device"), "{e}");
        let c: LocalAudioConfig =
            toml::from_str("group = \"a\"\ncard = \"USB Audio\"\nrepeat = 2").unwrap();
        assert_eq!(c.card.as_deref(), Some("USB Audio"));
        assert_eq!(c.repeat, 2);
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = LocalAudioConfig::new("*");
        assert_eq!(c.validate(), Err(LocalAudioConfigError::ReservedGroup));
        c.group = " ".into();
        assert!(c.validate().unwrap_err().to_string().starts_with("group"));
        c.group = "v".into();
        c.card = Some(String::new());
        assert!(c.validate().unwrap_err().to_string().starts_with("card"));
        c.card = None;
        c.repeat = 0;
        assert!(c.validate().unwrap_err().to_string().starts_with("repeat"));
        c.repeat = 1;
        c.queue_limit = 0;
        assert_eq!(c.validate(), Err(LocalAudioConfigError::ZeroQueue));
        c.queue_limit = 1;
        c.per_minute = f64::NAN;
        assert_eq!(c.validate(), Err(LocalAudioConfigError::BadRate));
    }
}
