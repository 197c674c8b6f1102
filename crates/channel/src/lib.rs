//! The driver contract. A driver owns one device (a modem, a BeiDou terminal, a speaker)
//! and reports facts about it; it never decides to retry another bearer or escalate —
//! that is the router's job.
//!
//! A running driver is a tokio task that reads [`DriverCommand`]s from a bounded channel
//! and writes [`DeviceEvent`]s to a bounded channel shared by all drivers.

use serde::{Deserialize, Serialize};
use tocsin_core::{Address, AttemptId, Bearer, DeviceId, Timestamp};
use tokio::sync::mpsc;

pub mod voice;

/// What a driver is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DriverCommand {
    /// Deliver a message to one address.
    Send(Outbound),
    /// Deliver a compact binary frame (`tocsin-compact`) to another Tocsin node: a field
    /// kit's uplink over SBD or BeiDou. Only drivers whose bearer carries bytes take it;
    /// the others fail the attempt for good ([`FrameOut::refused`]).
    SendFrame(FrameOut),
    /// Stop an attempt that has not gone out yet (the alert was cancelled or answered).
    /// A driver that already handed it to the network reports the attempt as usual.
    Cancel(AttemptId),
    /// The inbound message behind this receipt is committed to the store: the device may
    /// delete it now (e.g. `AT+CMGD`). Until then it stays on the device and is reported
    /// again after a restart, so no reply is lost in a crash.
    Release(InboundReceipt),
}

/// One message to one address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outbound {
    /// The attempt this send belongs to; every event about it names it.
    pub attempt: AttemptId,
    /// Where to.
    pub to: Address,
    /// The text, complete; the driver splits it into parts as its bearer needs.
    pub text: String,
    /// Ask the network for a delivery report where the bearer can.
    pub want_report: bool,
}

/// One compact frame to one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameOut {
    /// The attempt this send belongs to; every event about it names it.
    pub attempt: AttemptId,
    /// Where to (the other node's card, modem or radio).
    pub to: Address,
    /// The frame, sent as it is: one message on the bearer, never split.
    pub bytes: Vec<u8>,
}

impl FrameOut {
    /// What a driver whose bearer carries only text reports for a frame.
    pub fn refused(&self) -> DriverEvent {
        DriverEvent::Failed {
            attempt: self.attempt,
            retryable: false,
            reason: "this bearer carries no compact frames".to_owned(),
        }
    }
}

/// What one send carries, for drivers that take both texts and frames.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// A text for a person (the driver encodes it as its bearer needs).
    Text(String),
    /// A compact frame for another Tocsin node, sent as it is.
    Frame(Vec<u8>),
}

/// One send a driver holds: a text ([`Outbound`]) or a frame ([`FrameOut`]) to one address.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The attempt it belongs to.
    pub attempt: AttemptId,
    /// Where to.
    pub to: Address,
    /// What.
    pub body: Body,
}

impl From<Outbound> for Job {
    fn from(out: Outbound) -> Self {
        Job {
            attempt: out.attempt,
            to: out.to,
            body: Body::Text(out.text),
        }
    }
}

impl From<FrameOut> for Job {
    fn from(f: FrameOut) -> Self {
        Job {
            attempt: f.attempt,
            to: f.to,
            body: Body::Frame(f.bytes),
        }
    }
}

/// A handle on an inbound message still held by the device.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InboundReceipt(pub String);

/// What a driver reports, about one attempt or about its device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DriverEvent {
    /// The attempt is queued on the device.
    Accepted {
        /// Which attempt.
        attempt: AttemptId,
    },
    /// The network took the message (e.g. `+CMGS: <mr>` for every part).
    Sent {
        /// Which attempt.
        attempt: AttemptId,
        /// The network's reference(s), e.g. the TP-MRs of each part.
        reference: String,
    },
    /// The network reports the message delivered to the handset (status report).
    Delivered {
        /// Which attempt.
        attempt: AttemptId,
        /// Raw evidence, e.g. the status-report PDU.
        evidence: String,
    },
    /// The attempt failed.
    Failed {
        /// Which attempt.
        attempt: AttemptId,
        /// Whether trying again on the same bearer may succeed.
        retryable: bool,
        /// Why, for the record (e.g. `+CMS ERROR: 42 (congestion)`).
        reason: String,
    },
    /// A message from a person (a reply, possibly an ack).
    Inbound {
        /// Who sent it, as the network says.
        from: Address,
        /// The decoded text.
        text: String,
        /// Raw evidence (the PDU, the sentence).
        evidence: String,
        /// When the network says it was sent, if it says.
        sent_at: Option<Timestamp>,
        /// Release this once committed; `None` when the device keeps nothing.
        receipt: Option<InboundReceipt>,
        /// The attempt this message answers, when the bearer knows it — a key pressed during
        /// the call placed for that attempt.
        #[serde(default)]
        in_reply_to: Option<AttemptId>,
    },
    /// A compact binary frame from another Tocsin node (a field kit's ack batch, or the
    /// district's alert to a kit), undecoded: the daemon decodes and judges it.
    Frame {
        /// Who sent it, as the network says (card id, IMEI, node).
        from: Address,
        /// The frame's bytes, exactly as received.
        bytes: Vec<u8>,
        /// Raw evidence (the sentence, the MT message in hex).
        evidence: String,
        /// Release this once committed; `None` when the device keeps nothing.
        receipt: Option<InboundReceipt>,
    },
    /// The device's health changed.
    Health(Health),
    /// The device said something the driver does not understand.
    Unrecognized {
        /// The bytes, lossily as text.
        raw: String,
    },
}

/// A device's health as operators see it on `/v1/devices`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// The port or socket is open and the device answers.
    pub up: bool,
    /// Registered on its network (home or roaming).
    pub registered: bool,
    /// Signal quality, 0–31 as `+CSQ` reports it; `None` when unknown.
    pub signal: Option<u8>,
    /// The last error, for operators.
    pub last_error: Option<String>,
    /// Messages sent since the driver started.
    pub sent: u64,
    /// Messages received since the driver started.
    pub received: u64,
}

/// What a device can do; the router plans with this.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The bearer it serves.
    pub bearer: Bearer,
    /// Messages per minute it can send (the router's send budget for it).
    pub per_minute: f64,
    /// Longest text it takes in one attempt, in characters (it may split into parts).
    pub max_chars: usize,
    /// Whether the sender of inbound messages is authenticated by the bearer.
    pub sender_authenticated: bool,
}

/// An event from one device, stamped by the driver's io task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceEvent {
    /// Which device.
    pub device: DeviceId,
    /// When the driver saw it.
    pub at: Timestamp,
    /// What happened.
    pub event: DriverEvent,
}

/// Hands the gateway every event `next` yields, stamped with `device` and the time `at`
/// gives as each is sent: every driver task's drain step. False when the gateway is gone
/// (the task should end).
pub async fn forward_events(
    events: &tokio::sync::mpsc::Sender<DeviceEvent>,
    device: &DeviceId,
    at: impl Fn() -> Timestamp,
    mut next: impl FnMut() -> Option<DriverEvent>,
) -> bool {
    while let Some(event) = next() {
        let stamped = DeviceEvent {
            device: device.clone(),
            at: at(),
            event,
        };
        if events.send(stamped).await.is_err() {
            return false;
        }
    }
    true
}

/// The gateway's handle on a running driver.
#[derive(Clone, Debug)]
pub struct DriverHandle {
    /// The device this driver owns.
    pub device: DeviceId,
    /// What it can do.
    pub caps: Capabilities,
    /// Where to send it commands (bounded).
    pub commands: mpsc::Sender<DriverCommand>,
}

/// Depth of each driver's command channel: enough for a campaign's burst without letting
/// a stuck device hoard an unbounded queue.
pub const COMMAND_QUEUE: usize = 1024;

/// Depth of the shared event channel from all drivers to the gateway.
pub const EVENT_QUEUE: usize = 4096;
