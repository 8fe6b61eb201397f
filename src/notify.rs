//! systemd service notifications: `READY=1` once the process accepts requests, and
//! `WATCHDOG=1` keep-alives while it is healthy. Outside systemd (`NOTIFY_SOCKET` unset)
//! every call is a no-op.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;

/// Keeps the watchdog task alive; dropping it stops the keep-alives and tells systemd the
/// process is stopping.
pub struct Watchdog {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        send(NotifyState::Stopping);
    }
}

/// Tells systemd the process is ready and, when the unit sets `WatchdogSec=`, starts pinging
/// at half the interval. Each ping waits for `healthy` first, so a stalled runtime or a
/// failing check lets the watchdog fire and systemd restart the service.
pub fn ready<F, Fut>(mut healthy: F) -> Watchdog
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    send(NotifyState::Ready);
    let task = sd_notify::watchdog_enabled().map(|interval| {
        let period = (interval / 2).max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match tokio::time::timeout(period, healthy()).await {
                    Ok(true) => send(NotifyState::Watchdog),
                    Ok(false) => tracing::warn!("unhealthy: no watchdog keep-alive"),
                    Err(_) => tracing::warn!("health check too slow: no watchdog keep-alive"),
                }
            }
        })
    });
    Watchdog { task }
}

fn send(state: NotifyState<'_>) {
    if let Err(error) = sd_notify::notify(&[state]) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}
