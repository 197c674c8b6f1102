//! What a call plays: a [`PromptSource`] renders an attempt's text to 8 kHz linear audio.
//!
//! The driver ships with [`ToneSource`], an attention pattern (two-tone beeps separated by
//! pauses) of a configured length, so it works with no speech engine at all. The daemon is
//! expected to plug in `tocsin-voice` (espeak-ng text-to-speech and recorded clips) through
//! this trait. Both live in `tocsin-channel`, shared with the modem's voice calls, so one
//! prompt source serves every voice bearer.

pub use tocsin_channel::voice::{PromptSource, RATE, ToneSource};

/// Samples in one 20 ms frame.
pub const FRAME: usize = tocsin_channel::voice::FRAME_SAMPLES;
