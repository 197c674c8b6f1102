//! Tocsin's HTTP API: command centers issue, preview, update and cancel alerts; consoles
//! and integrators watch the 叫应 records, devices and a live event stream.
//!
//! The API owns no state. The daemon implements [`Gateway`] and hands it to [`app`];
//! tests call the returned router directly, without a socket. Every failure is an
//! [`ApiError`] answered as `{"error": {"code", "field", "message"}}`; no client input can
//! produce a 500 or a panic.

#![warn(missing_docs)]

mod auth;
mod cap;
pub mod config;
pub mod error;
mod extract;
pub mod gateway;
pub mod model;
mod redact;
mod routes;
#[cfg(test)]
mod testing;

pub use config::{ApiConfig, ApiToken, ConfigError, Role};
pub use error::ApiError;
pub use gateway::{Gateway, GatewayError};
pub use model::{
    Accepted, AlertPatch, DeviceView, GatewayEvent, HealthReport, IntakeOutcome, IntakeReceipt,
    NewAlert,
};
pub use routes::{MAX_EVENT_STREAMS, OPENAPI_JSON, app, app_with_cap_policy};
pub use tocsin_cap::CapPolicy;
