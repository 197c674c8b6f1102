//! Voice call-out over a SIP trunk: a SIP user agent client over UDP that calls people,
//! plays the warning as G.711 RTP at real-time pace, and takes an RFC 4733 key press `1`
//! as the acknowledgment; and a simulated far end for tests.
//!
//! - [`wire`]: SIP messages (parse/emit, folded and compact headers).
//! - [`sdp`]: the SDP offer and the negotiation of the far end's answer.
//! - [`rtp`]: RTP packets and RFC 4733 telephone-events, counted once per key press.
//! - [`digest`]: Digest MD5 answers to 401/407 challenges.
//! - [`g711`]: a small G.711 encoder so the driver needs no audio crate.
//! - [`prompt`]: what a call plays ([`prompt::PromptSource`], the built-in tone).
//! - [`proto`]: the trunk conversation (registration, many concurrent calls) as a sans-IO
//!   state machine.
//! - [`io`]: the tokio task running `proto` on UDP sockets.
//! - [`sim`]: the far end (a UAS answering, ringing, busy, pressing keys) as a state
//!   machine; [`udp`] runs it on UDP sockets.
//! - [`config`]: the trunk's configuration as the daemon's config file gives it.

pub mod config;
pub mod digest;
pub mod g711;
pub mod io;
pub mod prompt;
pub mod proto;
pub mod rtp;
pub mod sdp;
pub mod sim;
pub mod udp;
pub mod wire;
