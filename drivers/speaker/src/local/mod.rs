//! Local output: the programme played through this gateway's own sound card, for a
//! village node wired to an amplifier and horns.
//!
//! - [`config`]: `[devices.NAME] type = "local_audio"`.
//! - [`proto`]: the programme on one output — the RTP driver's programme logic, paced
//!   onto a sound card — as a sans-IO state machine.
//! - [`sink`]: the [`sink::SoundCard`] / [`sink::AudioSink`] traits, the in-memory card,
//!   and the card of a build without the `audio-local` feature.
//! - [`io`]: the tokio task.
//! - `alsa` (feature `audio-local`): the real sound card, through rodio on ALSA.

#[cfg(feature = "audio-local")]
pub mod alsa;
pub mod config;
pub mod io;
pub mod proto;
pub mod sink;
