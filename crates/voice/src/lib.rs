//! Tocsin's speech: renders a warning to 8 kHz audio for calls and loudspeakers.
//!
//! - [`speech`]: the renderer — attention tone or siren, 演练 for exercises, the warning
//!   spoken from recorded clips or synthesised, the instruction; a cache per (text, voice).
//! - [`tts`]: the [`tts::Tts`] trait and espeak-ng (`cmn-latn-pinyin`) as a subprocess.
//! - [`decode`]: recorded clips (WAV, MP3, FLAC, Ogg Vorbis) through symphonia.
//! - [`pcm`]: mono 16-bit audio and the band-limited resampler to 8 kHz.
//! - [`tone`]: the attention chime and each grade's siren pattern.
//! - [`g711`]: µ-law and A-law.
//! - [`wav`]: 16-bit PCM WAVE read and write.
//!
//! Synthesis and decoding block (a subprocess, file reads): async callers run them on a
//! blocking thread.

pub mod decode;
pub mod g711;
pub mod pcm;
pub mod speech;
pub mod tone;
pub mod tts;
pub mod wav;

pub use g711::Codec;
pub use pcm::{Pcm, RATE};
pub use speech::{Attention, Prompt, Rendered, Speech, SpeechConfig};
pub use tts::{EspeakConfig, EspeakNg, Tts, TtsError};
