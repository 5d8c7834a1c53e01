//! The systemd notify protocol (`Type=notify`): READY, RELOADING, STOPPING, STATUS and the
//! watchdog. Every call is a no-op when `NOTIFY_SOCKET` is unset.

use std::time::Duration;

use sd_notify::NotifyState;

/// Queues `states` for `NOTIFY_SOCKET`. A thread of its own sends them, in order: the socket
/// is a datagram socket with a short queue (10 by default), and a receiver that stops reading
/// (a stuck service manager, a test) makes a send wait; that must never stop the thread that
/// notifies (the daemon's serve loop), only this one.
fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
    if let Some(tx) = NOTIFIER.get_or_init(start_notifier) {
        let _ = tx.send(msg);
    }
}

static NOTIFIER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<String>>> =
    std::sync::OnceLock::new();

fn start_notifier() -> Option<std::sync::mpsc::Sender<String>> {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let started = std::thread::Builder::new()
        .name("sd-notify".into())
        .spawn(move || {
            for msg in rx {
                if let Err(e) = send_now(&msg) {
                    tracing::warn!(error = %e, "cannot notify systemd");
                }
            }
        });
    match started {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the systemd notification thread; not notifying");
            None
        }
    }
}

/// One blocking send of `msg` to `NOTIFY_SOCKET` (a path, or `@name` in the abstract
/// namespace).
fn send_now(msg: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let socket = UnixDatagram::unbound()?;
    match path.as_bytes().strip_prefix(b"@") {
        Some(name) => socket.connect_addr(&SocketAddr::from_abstract_name(name)?)?,
        None => socket.connect(&path)?,
    }
    socket.send(msg.as_bytes())?;
    Ok(())
}

/// Start-up (or a reload) is complete.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    // systemd 253+ wants the reload's start time with RELOADING=1.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// Shutdown begins.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Whether a service manager listens (`NOTIFY_SOCKET` is set).
pub fn listening() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// A new status line.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// A watchdog keep-alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send keep-alives: half the `WatchdogSec=` interval, when one is set.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
