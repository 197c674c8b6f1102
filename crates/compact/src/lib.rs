//! Compact binary frames for thin links — Iridium SBD, BeiDou short messages, Meshtastic —
//! where a JSON event or a full SMS text would not fit or would cost too much airtime.
//!
//! - [`frame`]: the frames (alert, ack batch, cancel, update, plain text) and their byte
//!   layouts; [`Frame::encode`] and the total, never-panicking [`Frame::decode`].
//! - [`text`]: the text inside a frame, GB2312/GBK or UCS2, whichever is smaller.
//! - [`handset`]: the text form for terminals that show text to a person.
//!
//! The byte layouts, with worked examples, are in `docs/compact-encoding.md`.

pub mod frame;
pub mod handset;
pub mod text;

pub use frame::{
    AckBatch, AckEntry, AlertFrame, AreaRef, CancelFrame, DecodeError, EncodeError, Frame, Imei,
    Minute, Point, ShortAlertId, TextFrame, UpdateFrame, pack_acks,
};
pub use text::TextEncoding;

/// Bytes in one BDS-2 level-3 message: 628 bits less the one-byte mixed-mode marker (`A4`).
pub const BDS2_LEVEL3_BYTES: usize = 77;
/// Bytes in one Iridium 9602/9603 mobile-originated message.
pub const SBD_MO_BYTES: usize = 340;
/// Bytes in one Iridium 9602/9603 mobile-terminated message.
pub const SBD_MT_BYTES: usize = 270;
/// Bytes of payload in one Meshtastic packet.
pub const MESHTASTIC_BYTES: usize = 233;
