//! The contract between the API and the daemon: the daemon owns every piece of state
//! (store, router, drivers) and the API only asks it.

use crate::model::{Accepted, AlertPatch, DeviceView, GatewayEvent, HealthReport, NewAlert};
use std::future::Future;
use tocsin_core::AlertId;
use tocsin_router::{AlertSummary, DeliveryState, DeliveryView, Preview, RelayView, SpeakerView};

/// What the gateway does for the API. The daemon implements it; tests use a fake.
///
/// `submit` must answer only after the alert and its planned deliveries are durable:
/// the API turns its `Ok` into `202 Accepted`, which the caller takes as a promise.
pub trait Gateway: Send + Sync + 'static {
    /// Stores a validated alert issued by `issuer` (a token name) and plans its deliveries.
    fn submit(
        &self,
        alert: NewAlert,
        issuer: &str,
    ) -> impl Future<Output = Result<Accepted, GatewayError>> + Send;

    /// What the alert would do if issued now; stores nothing.
    fn preview(
        &self,
        alert: NewAlert,
    ) -> impl Future<Output = Result<Preview, GatewayError>> + Send;

    /// Every alert the gateway knows, newest first.
    fn alerts(&self) -> impl Future<Output = Vec<AlertSummary>> + Send;

    /// One alert, or `None` if no such alert exists.
    fn alert(&self, id: &AlertId) -> impl Future<Output = Option<AlertSummary>> + Send;

    /// The alert known under an upstream `reference` (a CAP message's
    /// `sender,identifier,sent`): the one it was issued under or any an update or cancel
    /// added to its list (see [`crate::model::is_known_as`]); `None` if none is. The
    /// default scans [`Gateway::alerts`]; a gateway with an index may answer faster.
    fn alert_by_reference(
        &self,
        reference: &str,
    ) -> impl Future<Output = Option<AlertSummary>> + Send {
        async move {
            self.alerts()
                .await
                .into_iter()
                .find(|s| crate::model::is_known_as(s.alert.reference.as_deref(), reference))
        }
    }

    /// The 叫应 records of one alert, optionally only those in `state`; `None` if no such
    /// alert exists.
    fn deliveries(
        &self,
        id: &AlertId,
        state: Option<DeliveryState>,
    ) -> impl Future<Output = Option<Vec<DeliveryView>>> + Send;

    /// The loudspeaker announcements of one alert with their reception evidence; `None`
    /// if no such alert exists. The default knows no alert, for gateways without speakers.
    fn speakers(&self, id: &AlertId) -> impl Future<Output = Option<Vec<SpeakerView>>> + Send {
        let _ = id;
        std::future::ready(None)
    }

    /// The field-kit relays of one alert (district side); `None` if no such alert exists.
    /// The default knows no alert, for gateways without kits.
    fn relays(&self, id: &AlertId) -> impl Future<Output = Option<Vec<RelayView>>> + Send {
        let _ = id;
        std::future::ready(None)
    }

    /// Cancels an alert on behalf of `by` (a token name).
    fn cancel(
        &self,
        id: &AlertId,
        by: &str,
    ) -> impl Future<Output = Result<AlertSummary, GatewayError>> + Send;

    /// Changes an alert on behalf of `by` (a token name). A patch's `reference` is added
    /// to the alert's list of references if absent (with [`crate::model::add_reference`]);
    /// a patch that only adds a reference changes nothing else and re-notifies nobody.
    fn update(
        &self,
        id: &AlertId,
        patch: AlertPatch,
        by: &str,
    ) -> impl Future<Output = Result<AlertSummary, GatewayError>> + Send;

    /// Every configured device and how it is doing.
    fn devices(&self) -> impl Future<Output = Vec<DeviceView>> + Send;

    /// A new subscription to the event stream (bounded: a slow watcher lags, it never
    /// holds the gateway back).
    fn events(&self) -> tokio::sync::broadcast::Receiver<GatewayEvent>;

    /// Metrics in the Prometheus text exposition format (version 0.0.4).
    fn metrics(&self) -> impl Future<Output = String> + Send;

    /// Store and driver health.
    fn health(&self) -> impl Future<Output = HealthReport> + Send;
}

/// Why the gateway refused or failed a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// A value in the request is not acceptable (400); `field` names it, e.g. `area[0].id`.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault as a path (`area[0].coordinates[1]`); empty for the whole body.
        field: String,
        /// What is wrong with it, for the operator.
        message: String,
    },
    /// The thing named does not exist (404), e.g. `alert 0192…`.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state (409), e.g. cancelling a cancelled alert.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The gateway cannot take the request now, e.g. the store is down (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure (500); logged, never shown to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// Shorthand for [`GatewayError::Invalid`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        GatewayError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
