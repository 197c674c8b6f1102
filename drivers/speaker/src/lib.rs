//! Loudspeaker driver: spoken warnings streamed as RTP G.711 to IP speakers (multicast
//! groups or unicast), RTCP sender reports, and speakers' receiver reports recorded as
//! reception evidence; and the RTP speaker simulator.
//!
//! - [`wire`]: RTP and RTCP (SR, RR, SDES, BYE) parse and emit.
//! - [`proto`]: programmes, pacing, preemption (live warnings over drills, then grade),
//!   evidence — a sans-IO state machine.
//! - [`io`]: the tokio task on UDP sockets; renders programmes with `tocsin-voice`.
//! - [`sim`]: a speaker as a state machine: checks the stream, decodes the audio, reports.
//! - [`udp`]: the simulated speaker on a real UDP socket.
//! - [`config`]: the driver's configuration as the daemon's config file gives it.
//! - [`local`]: the same programmes through this gateway's own sound card (rodio on ALSA
//!   behind the `audio-local` feature; an in-memory card otherwise and in tests).

pub mod config;
pub mod io;
pub mod local;
pub mod proto;
pub mod sim;
pub mod udp;
pub mod wire;
