//! App / webhook bearer: HTTP pushes to an app backend, acks by signed callback or by a
//! signed link a person taps; and a simulated app backend for tests and demos.
//!
//! Both directions are signed with HMAC-SHA256 under a key shared with the backend
//! ([`sign`]): the push so the backend knows it comes from the gateway, the callback so
//! the gateway knows it comes from the backend. That signature is why this device
//! declares `sender_authenticated = true`: the router then lets a bare `1` from a
//! subscriber registered to exactly one person count for that person's most urgent open
//! record, as it does for BeiDou cards and mesh nodes. What it vouches for is the
//! *backend's* word on which subscriber answered: the app's own login is what ties a
//! subscriber to a phone. A backend that is compromised, or that lets users answer as
//! others, defeats it; keep the flag's meaning in mind when choosing a backend. Codes
//! still work and are still checked.
//!
//! - [`config`]: the device's configuration as the daemon's config file gives it.
//! - [`sign`]: request signatures and attempt tokens.
//! - [`wire`]: the JSON bodies both ways.
//! - [`proto`]: the conversation as a sans-IO state machine.
//! - [`io`]: the tokio task: an HTTP client for pushes and a listener for callbacks.
//! - [`sim`]: the app backend as a state machine, with scripted people and faults;
//!   [`backend`] runs it on 127.0.0.1.

pub mod backend;
pub mod config;
pub mod io;
pub mod proto;
pub mod sign;
pub mod sim;
pub mod wire;
