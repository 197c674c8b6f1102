//! Renders an alert to audio: an attention tone or siren, then the warning spoken in
//! Mandarin, then the instruction (按1确认), with 演练 first and last for exercises.
//!
//! Each phrase comes from a recorded clip when one is configured for exactly that text,
//! otherwise from the synthesizer; synthesised phrases are cached per (text, voice). When
//! no synthesizer is installed the prompt still renders, from clips and the tone, and
//! lists the phrases it could not speak, so a field kit without espeak-ng still sounds
//! its sirens.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tocsin_core::Grade;

use crate::decode::{DecodeError, decode_file};
use crate::pcm::{Pcm, RATE};
use crate::tone;
use crate::tts::{EspeakConfig, EspeakNg, Tts, TtsError};

/// The word said first and last in an exercise.
pub const EXERCISE_WORD: &str = "演练";
/// The instruction at the end of a prompt on a call.
pub const DEFAULT_INSTRUCTION: &str = "按1确认";
/// What a speaker says when a warning is cancelled.
pub const DEFAULT_CANCEL_TEXT: &str = "刚才播发的预警已经取消。";
/// Pause between the phrases of a prompt.
const PHRASE_GAP: Duration = Duration::from_millis(300);

/// Which synthesizer to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Synthesizer {
    /// espeak-ng as a subprocess.
    EspeakNg,
    /// None: recorded clips and tones only.
    None,
}

/// One recorded clip and the exact text it speaks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipConfig {
    /// The phrase the recording says; a prompt phrase equal to it (after trimming) is
    /// played from the clip instead of being synthesised.
    pub text: String,
    /// WAV, MP3, FLAC or Ogg Vorbis file; relative paths are taken from the config
    /// file's directory.
    pub file: PathBuf,
}

/// The daemon's `[speech]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeechConfig {
    /// `espeak-ng` or `none`.
    #[serde(default = "default_synthesizer")]
    pub synthesizer: Synthesizer,
    /// How to run espeak-ng.
    #[serde(default)]
    pub espeak: EspeakConfig,
    /// Recorded clips, preferred over synthesis.
    #[serde(default)]
    pub clips: Vec<ClipConfig>,
    /// How many synthesised phrases to keep.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// The spoken instruction at the end of a prompt on a call.
    #[serde(default = "default_instruction")]
    pub instruction: String,
    /// What loudspeakers say when a warning is cancelled.
    #[serde(default = "default_cancel_text")]
    pub cancel_text: String,
}

/// espeak-ng.
pub fn default_synthesizer() -> Synthesizer {
    Synthesizer::EspeakNg
}
/// 256 phrases: a few campaigns' worth of distinct sentences.
pub fn default_cache_entries() -> usize {
    256
}
/// [`DEFAULT_INSTRUCTION`].
pub fn default_instruction() -> String {
    DEFAULT_INSTRUCTION.to_owned()
}
/// [`DEFAULT_CANCEL_TEXT`].
pub fn default_cancel_text() -> String {
    DEFAULT_CANCEL_TEXT.to_owned()
}

impl Default for SpeechConfig {
    fn default() -> Self {
        SpeechConfig {
            synthesizer: default_synthesizer(),
            espeak: EspeakConfig::default(),
            clips: Vec::new(),
            cache_entries: default_cache_entries(),
            instruction: default_instruction(),
            cancel_text: default_cancel_text(),
        }
    }
}

/// Why speech could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    /// A clip file could not be decoded.
    #[error("speech.clips[{index}]: {source}")]
    Clip {
        /// Which clip.
        index: usize,
        /// Why.
        source: DecodeError,
    },
    /// A clip's text is empty.
    #[error("speech.clips[{0}].text: must not be empty")]
    EmptyClipText(usize),
    /// The configured voice does not read Mandarin.
    #[error("speech.espeak.voice: {0}")]
    Voice(TtsError),
    /// `cache_entries` is zero.
    #[error("speech.cache_entries: must be at least 1")]
    ZeroCache,
}

/// What opens a prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    /// Nothing.
    None,
    /// The short attention chime (calls).
    Tone,
    /// The grade's siren pattern (loudspeakers).
    Siren(Grade),
}

/// One prompt to render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    /// What opens it.
    pub attention: Attention,
    /// The warning text.
    pub text: String,
    /// Said after the text (e.g. 按1确认); none on loudspeakers.
    pub instruction: Option<String>,
    /// An exercise: 演练 first and last.
    pub exercise: bool,
}

/// A rendered prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The audio, 8 kHz mono.
    pub audio: Pcm,
    /// Phrases that could be neither played from a clip nor synthesised.
    pub missing: Vec<String>,
}

/// Synthesised phrases by (text, voice), oldest dropped first.
#[derive(Debug, Default)]
struct PromptCache {
    map: HashMap<(String, String), Arc<Pcm>>,
    order: VecDeque<(String, String)>,
    capacity: usize,
    hits: u64,
}

impl PromptCache {
    fn get(&mut self, key: &(String, String)) -> Option<Arc<Pcm>> {
        let hit = self.map.get(key).cloned();
        if hit.is_some() {
            self.hits += 1;
        }
        hit
    }

    fn put(&mut self, key: (String, String), pcm: Arc<Pcm>) {
        if self.map.insert(key.clone(), pcm).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// The speech renderer, shared by every driver that speaks (calls, loudspeakers).
pub struct Speech {
    tts: Option<Arc<dyn Tts>>,
    clips: HashMap<String, Arc<Pcm>>,
    cache: Mutex<PromptCache>,
    notice: Option<String>,
    cancel_text: String,
    instruction: String,
}

impl std::fmt::Debug for Speech {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speech")
            .field("voice", &self.tts.as_ref().map(|t| t.voice().to_owned()))
            .field("clips", &self.clips.len())
            .field("notice", &self.notice)
            .finish()
    }
}

impl Speech {
    /// A renderer with an optional synthesizer and clips (already at 8 kHz or not).
    pub fn new(
        tts: Option<Arc<dyn Tts>>,
        clips: HashMap<String, Pcm>,
        cache_entries: usize,
    ) -> Self {
        let notice = tts.is_none().then(|| {
            "no speech synthesizer: spoken warnings use recorded clips and the attention tone only"
                .to_owned()
        });
        Speech {
            tts,
            clips: clips
                .into_iter()
                .map(|(k, v)| {
                    let v = if v.rate == RATE { v } else { v.resampled(RATE) };
                    (k.trim().to_owned(), Arc::new(v))
                })
                .collect(),
            cache: Mutex::new(PromptCache {
                capacity: cache_entries.max(1),
                ..PromptCache::default()
            }),
            notice,
            cancel_text: default_cancel_text(),
            instruction: default_instruction(),
        }
    }

    /// Builds the renderer from config: decodes every clip (an undecodable clip is an
    /// error naming it), probes the synthesizer and checks that its voice reads Mandarin.
    /// A synthesizer that is not installed is not an error: [`Speech::notice`] says so
    /// and prompts use clips and tones. `base` resolves relative clip paths.
    pub fn from_config(cfg: &SpeechConfig, base: &Path) -> Result<Self, SpeechError> {
        if cfg.cache_entries == 0 {
            return Err(SpeechError::ZeroCache);
        }
        let mut clips = HashMap::new();
        for (index, c) in cfg.clips.iter().enumerate() {
            if c.text.trim().is_empty() {
                return Err(SpeechError::EmptyClipText(index));
            }
            let path = base.join(&c.file);
            let pcm = decode_file(&path).map_err(|source| SpeechError::Clip { index, source })?;
            clips.insert(c.text.clone(), pcm);
        }
        let (tts, notice): (Option<Arc<dyn Tts>>, Option<String>) = match cfg.synthesizer {
            Synthesizer::None => (
                None,
                Some(format!(
                    "speech synthesizer disabled (speech.synthesizer = \"none\"): spoken warnings use {} recorded clip(s) and the attention tone only",
                    clips.len()
                )),
            ),
            Synthesizer::EspeakNg => {
                let e = EspeakNg::new(cfg.espeak.clone());
                match e.probe() {
                    Ok(_) => {
                        e.check_mandarin().map_err(SpeechError::Voice)?;
                        (Some(Arc::new(e)), None)
                    }
                    Err(err) => (
                        None,
                        Some(format!(
                            "{err}; install the Debian packages espeak-ng and espeak-ng-data. Until then spoken warnings use {} recorded clip(s) and the attention tone only",
                            clips.len()
                        )),
                    ),
                }
            }
        };
        let mut s = Speech::new(tts, clips, cfg.cache_entries);
        s.notice = notice;
        s.cancel_text = cfg.cancel_text.clone();
        s.instruction = cfg.instruction.clone();
        Ok(s)
    }

    /// What the daemon must say at start when speech is degraded (no synthesizer).
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// Whether text can be synthesised.
    pub fn has_synthesizer(&self) -> bool {
        self.tts.is_some()
    }

    /// The configured instruction (按1确认 by default).
    pub fn instruction(&self) -> &str {
        &self.instruction
    }

    /// Synthesised phrases in the cache, and cache hits so far.
    pub fn cache_stats(&self) -> (usize, u64) {
        self.cache
            .lock()
            .map(|c| (c.map.len(), c.hits))
            .unwrap_or((0, 0))
    }

    /// One phrase: its clip, else the cached or fresh synthesis; `None` when neither.
    pub fn phrase(&self, text: &str) -> Result<Option<Arc<Pcm>>, TtsError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if let Some(clip) = self.clips.get(text) {
            return Ok(Some(clip.clone()));
        }
        let Some(tts) = &self.tts else {
            return Ok(None);
        };
        let key = (text.to_owned(), tts.voice().to_owned());
        if let Some(hit) = self.cache.lock().ok().and_then(|mut c| c.get(&key)) {
            return Ok(Some(hit));
        }
        let pcm = tts.synthesize(text)?;
        let pcm = Arc::new(if pcm.rate == RATE {
            pcm
        } else {
            pcm.resampled(RATE)
        });
        if let Ok(mut c) = self.cache.lock() {
            c.put(key, pcm.clone());
        }
        Ok(Some(pcm))
    }

    /// Renders a prompt. Never fails: what cannot be spoken is listed in `missing` (a
    /// synthesis error is logged) and the rest still plays.
    pub fn render(&self, prompt: &Prompt) -> Rendered {
        let mut audio = match prompt.attention {
            Attention::None => Pcm::empty(RATE),
            Attention::Tone => tone::attention(),
            Attention::Siren(g) => tone::siren(g),
        };
        let mut missing = Vec::new();
        let mut phrases: Vec<String> = Vec::new();
        if prompt.exercise {
            phrases.push(EXERCISE_WORD.to_owned());
        }
        // The whole text from one clip if there is one, else sentence by sentence so a
        // template recorded as separate sentences is still used.
        if self.clips.contains_key(prompt.text.trim()) {
            phrases.push(prompt.text.trim().to_owned());
        } else {
            phrases.extend(sentences(&prompt.text));
        }
        if let Some(i) = &prompt.instruction {
            phrases.push(i.clone());
        }
        if prompt.exercise {
            phrases.push(EXERCISE_WORD.to_owned());
        }
        for p in phrases {
            match self.phrase(&p) {
                Ok(Some(pcm)) => {
                    audio.append(&pcm);
                    audio.append_silence(PHRASE_GAP);
                }
                Ok(None) => missing.push(p),
                Err(e) => {
                    tracing::warn!(error = %e, phrase = %p, "speech synthesis failed");
                    missing.push(p);
                }
            }
        }
        Rendered { audio, missing }
    }

    /// A loudspeaker programme: `repeat` times the grade's siren and the spoken warning
    /// (演练 first and last for an exercise), with `pause` of silence between repeats.
    pub fn programme(
        &self,
        grade: Grade,
        text: &str,
        exercise: bool,
        repeat: u32,
        pause: Duration,
    ) -> Rendered {
        let once = self.render(&Prompt {
            attention: Attention::Siren(grade),
            text: text.to_owned(),
            instruction: None,
            exercise,
        });
        let mut audio = Pcm::empty(RATE);
        for i in 0..repeat.max(1) {
            if i > 0 {
                audio.append_silence(pause);
            }
            audio.append(&once.audio);
        }
        Rendered {
            audio,
            missing: once.missing,
        }
    }

    /// The short message a loudspeaker plays when a warning is cancelled.
    pub fn cancellation(&self, exercise: bool) -> Rendered {
        self.render(&Prompt {
            attention: Attention::Tone,
            text: self.cancel_text.clone(),
            instruction: None,
            exercise,
        })
    }
}

/// Splits a warning into sentences at Chinese and ASCII sentence ends, keeping the
/// punctuation (it shapes the synthesizer's intonation).
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c == '\n' || c == '\r' {
            push_trimmed(&mut out, &mut cur);
            continue;
        }
        cur.push(c);
        if matches!(c, '。' | '！' | '？' | '；' | '!' | '?' | ';') {
            push_trimmed(&mut out, &mut cur);
        }
    }
    push_trimmed(&mut out, &mut cur);
    out
}

fn push_trimmed(out: &mut Vec<String>, cur: &mut String) {
    let t = cur.trim();
    if !t.is_empty() {
        out.push(t.to_owned());
    }
    cur.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A synthesizer that "speaks" 100 ms of a constant per character and counts calls.
    struct FakeTts {
        calls: AtomicUsize,
    }

    impl Tts for FakeTts {
        fn voice(&self) -> &str {
            "fake"
        }
        fn synthesize(&self, text: &str) -> Result<Pcm, TtsError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(Pcm {
                rate: 16000,
                samples: vec![1000; 1600 * text.chars().count()],
            })
        }
    }

    fn fake() -> Arc<FakeTts> {
        Arc::new(FakeTts {
            calls: AtomicUsize::new(0),
        })
    }

    fn clip(ms: u64) -> Pcm {
        Pcm {
            rate: RATE,
            samples: vec![-2000; (ms * 8) as usize],
        }
    }

    #[test]
    fn sentences_split_at_chinese_punctuation() {
        assert_eq!(
            sentences("山洪红色预警。请立即转移！\n注意安全"),
            vec!["山洪红色预警。", "请立即转移！", "注意安全"]
        );
        assert!(sentences(" \n ").is_empty());
    }

    #[test]
    fn an_exercise_prompt_has_tone_then_yanlian_text_instruction_yanlian() {
        let tts = fake();
        let s = Speech::new(Some(tts.clone()), HashMap::new(), 16);
        let r = s.render(&Prompt {
            attention: Attention::Tone,
            text: "山洪预警。".into(),
            instruction: Some(DEFAULT_INSTRUCTION.into()),
            exercise: true,
        });
        assert!(r.missing.is_empty());
        // Tone, then 演练 (2 chars), text (5), 按1确认 (4), 演练 (2), each + 300 ms gap.
        let tone = tone::attention().samples.len();
        let speech = (2 + 5 + 4 + 2) * 800 + 4 * 2400;
        assert_eq!(r.audio.samples.len(), tone + speech);
        assert_eq!(r.audio.rate, 8000);
        // The second 演练 came from the cache: three distinct phrases synthesised.
        assert_eq!(tts.calls.load(Ordering::SeqCst), 3);
        assert_eq!(s.cache_stats(), (3, 1));
        // Rendering again synthesises nothing.
        s.render(&Prompt {
            attention: Attention::None,
            text: "山洪预警。".into(),
            instruction: None,
            exercise: false,
        });
        assert_eq!(tts.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn clips_are_preferred_and_used_without_a_synthesizer() {
        let mut clips = HashMap::new();
        clips.insert("演练".to_owned(), clip(700));
        clips.insert("请立即转移。".to_owned(), clip(1500));
        let tts = fake();
        let with = Speech::new(Some(tts.clone()), clips.clone(), 16);
        let r = with.render(&Prompt {
            attention: Attention::None,
            text: "请立即转移。".into(),
            instruction: None,
            exercise: true,
        });
        assert_eq!(tts.calls.load(Ordering::SeqCst), 0);
        assert_eq!(r.audio.samples.len(), (700 + 1500 + 700) * 8 + 3 * 2400);
        assert!(r.audio.samples.iter().take(5600).all(|&x| x == -2000));

        let without = Speech::new(None, clips, 16);
        assert!(without.notice().unwrap().contains("no speech synthesizer"));
        let r = without.render(&Prompt {
            attention: Attention::Siren(Grade::Red),
            text: "山洪红色预警。请立即转移。".into(),
            instruction: Some("按1确认".into()),
            exercise: true,
        });
        assert_eq!(r.missing, vec!["山洪红色预警。", "按1确认"]);
        // Siren, 演练, the clipped sentence, 演练 still play.
        let siren = tone::siren(Grade::Red).samples.len();
        assert_eq!(
            r.audio.samples.len(),
            siren + (700 + 1500 + 700) * 8 + 3 * 2400
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let tts = fake();
        let s = Speech::new(Some(tts.clone()), HashMap::new(), 2);
        for t in ["一", "二", "三", "一"] {
            s.phrase(t).unwrap();
        }
        // "一" was evicted by "三", so it was synthesised twice.
        assert_eq!(tts.calls.load(Ordering::SeqCst), 4);
        assert_eq!(s.cache_stats().0, 2);
    }

    #[test]
    fn a_programme_repeats_with_pauses_and_a_cancel_is_short() {
        let s = Speech::new(Some(fake()), HashMap::new(), 16);
        let one = s.programme(Grade::Orange, "转移。", false, 1, Duration::from_secs(5));
        let three = s.programme(Grade::Orange, "转移。", false, 3, Duration::from_secs(5));
        assert_eq!(
            three.audio.samples.len(),
            3 * one.audio.samples.len() + 2 * 40_000
        );
        let c = s.cancellation(false);
        assert!(c.missing.is_empty());
        assert!(c.audio.duration() < Duration::from_secs(5));
    }

    #[test]
    fn config_parses_with_defaults_and_refuses_unknown_keys() {
        let c: SpeechConfig = toml::from_str("").unwrap();
        assert_eq!(c, SpeechConfig::default());
        assert_eq!(c.espeak.voice, "cmn-latn-pinyin");
        let c: SpeechConfig =
            toml::from_str("synthesizer = \"none\"\n[[clips]]\ntext = \"演练\"\nfile = \"a.wav\"")
                .unwrap();
        assert_eq!(c.synthesizer, Synthesizer::None);
        assert_eq!(c.clips.len(), 1);
        let e = toml::from_str::<SpeechConfig>("synthesiser = \"none\"").unwrap_err();
        assert!(e.to_string().contains("synthesiser"), "{e}");
    }

    #[test]
    fn from_config_decodes_clips_and_reports_a_missing_synthesizer() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let cfg = SpeechConfig {
            espeak: EspeakConfig {
                program: "/nonexistent/espeak-ng".into(),
                ..EspeakConfig::default()
            },
            clips: vec![ClipConfig {
                text: "演练".into(),
                file: "tone-1khz.ogg".into(),
            }],
            ..SpeechConfig::default()
        };
        let s = Speech::from_config(&cfg, &base).unwrap();
        assert!(!s.has_synthesizer());
        let n = s.notice().unwrap();
        assert!(
            n.contains("espeak-ng") && n.contains("1 recorded clip"),
            "{n}"
        );
        assert!(s.phrase("演练").unwrap().is_some());

        let bad = SpeechConfig {
            clips: vec![ClipConfig {
                text: "演练".into(),
                file: "missing.wav".into(),
            }],
            ..cfg
        };
        let e = Speech::from_config(&bad, &base).unwrap_err();
        assert!(e.to_string().starts_with("speech.clips[0]"), "{e}");
    }

    #[test]
    fn from_config_refuses_a_voice_that_spells_pinyin() {
        if EspeakNg::new(EspeakConfig::default()).probe().is_err() {
            println!("skipping: espeak-ng not available; run scripts/setup espeak-ng");
            return;
        }
        let cfg = SpeechConfig {
            espeak: EspeakConfig {
                voice: "cmn".into(),
                ..EspeakConfig::default()
            },
            ..SpeechConfig::default()
        };
        let e = Speech::from_config(&cfg, Path::new(".")).unwrap_err();
        assert!(e.to_string().starts_with("speech.espeak.voice"), "{e}");
        let ok = Speech::from_config(&SpeechConfig::default(), Path::new(".")).unwrap();
        assert!(ok.has_synthesizer() && ok.notice().is_none());
    }
}
