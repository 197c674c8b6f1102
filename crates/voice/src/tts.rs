//! Text to speech behind the [`Tts`] trait; [`EspeakNg`] runs `espeak-ng` as a subprocess.
//!
//! The Mandarin voice must be `cmn-latn-pinyin`. The plain `cmn` voice of espeak-ng 1.51
//! switches to English for most hanzi and spells their pinyin letter by letter ("hong
//! two"), which no villager understands. [`EspeakNg::check_mandarin`] detects that at
//! start: it asks for the phonemes of a warning and refuses a voice whose transcription
//! switches language (espeak marks a switch as `(en)`).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::pcm::{Pcm, RATE};
use crate::wav;

/// The espeak-ng voice that reads hanzi as Mandarin.
pub const MANDARIN_VOICE: &str = "cmn-latn-pinyin";

/// A text the Mandarin check transcribes: common warning words.
const CHECK_TEXT: &str = "山洪红色预警，请立即转移";

/// The longest text synthesised in one go, in characters; a warning is far shorter, and
/// the bound keeps a runaway text from tying up the synthesizer.
pub const MAX_TEXT_CHARS: usize = 2000;

/// Why speech could not be synthesised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtsError {
    /// The program is not installed (or not executable).
    #[error("speech synthesizer {program:?} not found: {reason}")]
    NotInstalled {
        /// The program name or path.
        program: String,
        /// What the OS said.
        reason: String,
    },
    /// The program ran and failed.
    #[error("speech synthesizer failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// It did not finish in time and was killed.
    #[error("speech synthesizer took longer than {0:?} and was stopped")]
    TimedOut(Duration),
    /// Its output was not audio.
    #[error("speech synthesizer output is not a WAV: {0}")]
    BadOutput(String),
    /// The text is empty or longer than [`MAX_TEXT_CHARS`].
    #[error("text to speak must have 1 to {MAX_TEXT_CHARS} characters, not {0}")]
    BadText(usize),
    /// The voice reads hanzi as spelled-out pinyin (e.g. plain `cmn`).
    #[error(
        "voice {voice:?} does not read Chinese as Mandarin (phonemes: {phonemes}); use {MANDARIN_VOICE:?}"
    )]
    NotMandarin {
        /// The configured voice.
        voice: String,
        /// The transcription that gave it away.
        phonemes: String,
    },
}

/// A speech synthesizer.
pub trait Tts: Send + Sync {
    /// The voice name; rendered prompts are cached per (text, voice).
    fn voice(&self) -> &str;
    /// Speaks `text`; audio at any rate (the caller resamples).
    fn synthesize(&self, text: &str) -> Result<Pcm, TtsError>;
}

/// How to run espeak-ng (the daemon's `[speech]` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EspeakConfig {
    /// Program name or path.
    #[serde(default = "default_program")]
    pub program: String,
    /// Voice; must read Mandarin (see [`MANDARIN_VOICE`]).
    #[serde(default = "default_voice")]
    pub voice: String,
    /// Speed in words per minute (espeak `-s`).
    #[serde(default = "default_speed")]
    pub speed: u32,
    /// Longest a synthesis may take, in seconds, before it is stopped.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

/// `espeak-ng`, found on `PATH`.
pub fn default_program() -> String {
    "espeak-ng".to_owned()
}
/// [`MANDARIN_VOICE`].
pub fn default_voice() -> String {
    MANDARIN_VOICE.to_owned()
}
/// 140 words a minute: a little slower than espeak's 175, clearer over a loudspeaker.
pub fn default_speed() -> u32 {
    140
}
/// 20 s: espeak speaks a warning in well under a second.
pub fn default_timeout_secs() -> u64 {
    20
}

impl Default for EspeakConfig {
    fn default() -> Self {
        EspeakConfig {
            program: default_program(),
            voice: default_voice(),
            speed: default_speed(),
            timeout_secs: default_timeout_secs(),
        }
    }
}

/// espeak-ng as a subprocess: the text goes in on stdin (never as an argument, so a text
/// starting with `-` cannot be taken for an option), a WAV comes out on stdout.
#[derive(Clone, Debug)]
pub struct EspeakNg {
    cfg: EspeakConfig,
}

impl EspeakNg {
    /// A synthesizer with this configuration; nothing is run yet.
    pub fn new(cfg: EspeakConfig) -> Self {
        EspeakNg { cfg }
    }

    /// The configuration.
    pub fn config(&self) -> &EspeakConfig {
        &self.cfg
    }

    /// Runs `--version`: whether the program is installed, and which version.
    pub fn probe(&self) -> Result<String, TtsError> {
        let out = self.run(&["--version"], "")?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// espeak's phoneme transcription of `text` with the configured voice (`-q -x`).
    pub fn phonemes(&self, text: &str) -> Result<String, TtsError> {
        let out = self.run(&["-q", "-x", "-v", &self.cfg.voice], text)?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Refuses a voice that does not read hanzi as Mandarin (see the module docs), or that
    /// does not exist: `--stdout` synthesis silently falls back to an English voice for an
    /// unknown one, so run this once before trusting [`Tts::synthesize`].
    pub fn check_mandarin(&self) -> Result<(), TtsError> {
        let ph = self.phonemes(CHECK_TEXT)?;
        if ph.is_empty() || ph.contains("(en)") {
            return Err(TtsError::NotMandarin {
                voice: self.cfg.voice.clone(),
                phonemes: ph,
            });
        }
        Ok(())
    }

    /// Runs the program with `args`, `input` on stdin; returns stdout. Stdout is read on
    /// a helper thread so the timeout can stop a program that hangs.
    fn run(&self, args: &[&str], input: &str) -> Result<Vec<u8>, TtsError> {
        let mut child = Command::new(&self.cfg.program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| TtsError::NotInstalled {
                program: self.cfg.program.clone(),
                reason: e.to_string(),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A program that exits early closes the pipe; its status tells why.
            let _ = stdin.write_all(input.as_bytes());
        }
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut err = Vec::new();
            if let Some(mut s) = stdout {
                let _ = s.read_to_end(&mut out);
            }
            if let Some(mut s) = stderr {
                let _ = s.read_to_end(&mut err);
            }
            let _ = tx.send((out, err));
        });
        let timeout = Duration::from_secs(self.cfg.timeout_secs.max(1));
        let Ok((out, err)) = rx.recv_timeout(timeout) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TtsError::TimedOut(timeout));
        };
        let status = child.wait().map_err(|e| TtsError::Failed {
            status: "unknown".to_owned(),
            stderr: e.to_string(),
        })?;
        let stderr = String::from_utf8_lossy(&err).trim().to_owned();
        // espeak-ng 1.51 exits 0 on some errors (an unknown voice) and says so on stderr.
        if !status.success() || stderr.starts_with("Error") {
            return Err(TtsError::Failed {
                status: status.to_string(),
                stderr,
            });
        }
        Ok(out)
    }
}

impl Tts for EspeakNg {
    fn voice(&self) -> &str {
        &self.cfg.voice
    }

    fn synthesize(&self, text: &str) -> Result<Pcm, TtsError> {
        let chars = text.chars().count();
        if text.trim().is_empty() || chars > MAX_TEXT_CHARS {
            return Err(TtsError::BadText(chars));
        }
        let speed = self.cfg.speed.to_string();
        let out = self.run(&["-v", &self.cfg.voice, "-s", &speed, "--stdout"], text)?;
        let pcm = wav::read(&out).map_err(|e| TtsError::BadOutput(e.to_string()))?;
        if pcm.samples.is_empty() {
            return Err(TtsError::BadOutput("no samples".to_owned()));
        }
        Ok(if pcm.rate == RATE {
            pcm
        } else {
            pcm.resampled(RATE)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// espeak-ng is installed by `scripts/setup espeak-ng`; without it these tests say so
    /// and pass.
    fn espeak() -> Option<EspeakNg> {
        let e = EspeakNg::new(EspeakConfig::default());
        match e.probe() {
            Ok(v) => Some(e).filter(|_| v.contains("eSpeak")),
            Err(err) => {
                println!("skipping: espeak-ng not available ({err}); run scripts/setup espeak-ng");
                None
            }
        }
    }

    #[test]
    fn the_default_voice_is_mandarin_and_plain_cmn_is_refused() {
        assert_eq!(EspeakConfig::default().voice, "cmn-latn-pinyin");
        let Some(e) = espeak() else { return };
        e.check_mandarin().unwrap();
        let ph = e.phonemes("红色预警").unwrap();
        // Mandarin syllables with tone numbers: hong2 se4 yu4 jing3.
        assert!(ph.contains("X'ong35"), "{ph}");
        // The regression this guards against: plain `cmn` spells most hanzi in English.
        let plain = EspeakNg::new(EspeakConfig {
            voice: "cmn".into(),
            ..EspeakConfig::default()
        });
        let err = plain.check_mandarin().unwrap_err();
        assert!(matches!(err, TtsError::NotMandarin { .. }), "{err}");
        assert!(err.to_string().contains("cmn-latn-pinyin"));
    }

    #[test]
    fn a_warning_is_spoken_at_8khz_and_takes_plausible_time() {
        let Some(e) = espeak() else { return };
        let pcm = e
            .synthesize("山洪红色预警，请立即转移到安全地带。")
            .unwrap();
        assert_eq!(pcm.rate, 8000);
        // 17 syllables at 140 wpm: a few seconds, not the ten-plus of spelled pinyin.
        let secs = pcm.duration().as_secs_f64();
        assert!((1.5..8.0).contains(&secs), "{secs} s");
        assert!(pcm.rms() > 0.02, "rms {}", pcm.rms());
        // A leading dash is text, not an option.
        assert!(e.synthesize("-演练").is_ok());
    }

    #[test]
    fn failures_are_errors() {
        let missing = EspeakNg::new(EspeakConfig {
            program: "/nonexistent/espeak-ng".into(),
            ..EspeakConfig::default()
        });
        assert!(matches!(
            missing.probe(),
            Err(TtsError::NotInstalled { .. })
        ));
        assert!(matches!(
            missing.synthesize("你好"),
            Err(TtsError::NotInstalled { .. })
        ));
        let e = EspeakNg::new(EspeakConfig::default());
        assert_eq!(e.synthesize("  "), Err(TtsError::BadText(2)));
        assert!(matches!(
            e.synthesize(&"字".repeat(2001)),
            Err(TtsError::BadText(2001))
        ));
        if espeak().is_some() {
            let bad = EspeakNg::new(EspeakConfig {
                voice: "no-such-voice".into(),
                ..EspeakConfig::default()
            });
            // espeak-ng 1.51 with `--stdout` silently falls back to its default (English)
            // voice for an unknown one, so the start-up check is what catches it.
            assert!(matches!(
                bad.check_mandarin(),
                Err(TtsError::NotMandarin { .. })
            ));
        }
    }
}
