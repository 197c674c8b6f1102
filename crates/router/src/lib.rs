//! The 叫应 engine: a pure state machine that owns every (alert, person) record.
//!
//! Inputs are `handle_*` calls that take `now`; outputs are drained with
//! [`Router::poll_output`] and [`Router::poll_timeout`]. It does no I/O and reads no clock.

pub mod plan;
pub mod view;

pub use plan::{AlertPlan, Contact, Target, TargetReason};
pub use view::{AlertState, AlertSummary, AttemptView, Counts, DeliveryState, DeliveryView, Preview, BearerLoad};
