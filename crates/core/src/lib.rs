//! Tocsin domain types: alerts and grades, people and their addresses, areas and the
//! geofence index that resolves an alert's area to the people it must reach, and the
//! one-time ack codes that make a "received" impossible to forge.
//!
//! Nothing here does I/O or reads a clock: time is a [`Timestamp`] argument.

pub mod ackcode;
pub mod address;
pub mod alert;
pub mod area;
pub mod directory;
pub mod geofence;
pub mod ids;
pub mod person;
mod roster;
pub mod speaker;
pub mod time;

pub use ackcode::{AckCode, AckKey};
pub use address::{Address, Bearer, PhoneNumber};
pub use alert::{Alert, Grade};
pub use area::{AreaError, AreaKind, AreaSpec, NamedArea, Region, RegionShape};
pub use directory::{Directory, DirectoryError, People, RejectedRow, Resolution};
pub use geofence::GeoIndex;
pub use ids::{AlertId, AreaId, AttemptId, DeviceId, PersonId, SpeakerId};
pub use person::{Person, Role};
pub use speaker::Speaker;
pub use time::Timestamp;
