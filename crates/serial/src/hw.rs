//! What every driver's hardware test (`tests/hw.rs`, see `hw-tests/README.md`) does the
//! same way: find the device named by `TOCSIN_HW_<KIND>` (or skip with a note), read an
//! optional baud rate, and wait for a driver event with a generous bound.

use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverEvent};
use tokio::sync::mpsc;

/// The device a hardware test runs against, as `var` names it (a serial path, an
/// address). When `var` is unset the test is skipped: this prints why and returns `None`.
pub fn device_from_env(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(device) => Some(device),
        Err(_) => {
            println!("{var} not set: skipping the {what} test (see hw-tests/README.md)");
            None
        }
    }
}

/// The baud rate in `<var>_BAUD`, when it is set and a number.
pub fn baud_from_env(var: &str) -> Option<u32> {
    std::env::var(format!("{var}_BAUD"))
        .ok()
        .and_then(|b| b.parse().ok())
}

/// Waits up to `secs` seconds for an event that satisfies `pred`, printing every event
/// seen (a hardware run is read by a person). `None` when the time runs out or the
/// driver is gone.
pub async fn wait_for(
    rx: &mut mpsc::Receiver<DeviceEvent>,
    secs: u64,
    pred: impl Fn(&DriverEvent) -> bool,
) -> Option<DriverEvent> {
    let wait = async {
        while let Some(e) = rx.recv().await {
            println!("{:?}", e.event);
            if pred(&e.event) {
                return Some(e.event);
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(secs), wait)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use tocsin_channel::Health;
    use tocsin_core::{DeviceId, Timestamp};

    use super::*;

    fn health(up: bool) -> DeviceEvent {
        DeviceEvent {
            device: DeviceId::from("hw"),
            at: Timestamp::from_millis(0),
            event: DriverEvent::Health(Health {
                up,
                ..Health::default()
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_past_other_events_and_gives_up_in_time() {
        let (tx, mut rx) = mpsc::channel(4);
        tx.send(health(false)).await.unwrap();
        tx.send(health(true)).await.unwrap();
        let up = wait_for(&mut rx, 60, |e| matches!(e, DriverEvent::Health(h) if h.up)).await;
        assert!(matches!(up, Some(DriverEvent::Health(h)) if h.up));
        // Nothing more comes: the bound ends the wait.
        assert!(wait_for(&mut rx, 60, |_| true).await.is_none());
        drop(tx);
        assert!(wait_for(&mut rx, 60, |_| true).await.is_none());
    }

    #[test]
    fn an_unset_device_skips() {
        assert_eq!(
            device_from_env("TOCSIN_HW_SURELY_UNSET_H21", "nothing"),
            None
        );
        assert_eq!(baud_from_env("TOCSIN_HW_SURELY_UNSET_H21"), None);
    }
}
