//! The `[api]` section: where the daemon's HTTP API listens (a unix socket by default, TCP when
//! `listen` is set), the bearer token that TCP requires off loopback, and whether the dashboard
//! offers actions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::problem::{Located, RawSecret, secret};
use crate::secret::Secret;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawApi {
    pub(crate) socket: Option<String>,
    pub(crate) listen: Option<String>,
    pub(crate) token: Option<RawSecret>,
    pub(crate) dashboard_actions: Option<bool>,
}

/// The socket's name in its folder.
const SOCKET_NAME: &str = "hourglass.sock";
/// Where the packaged unit's runtime folder is (`RuntimeDirectory=hourglass`).
const SYSTEM_RUNTIME_DIR: &str = "/run/hourglass";

/// Where the API listens.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    /// The unix socket (mode 0660); `None` when `socket = ""` turns it off.
    pub socket: Option<PathBuf>,
    /// Where the CLI also looks for a daemon when `socket` was not set: the packaged unit's
    /// socket, which a daemon under systemd uses while a shell has no `RUNTIME_DIRECTORY`.
    pub also_try: Option<PathBuf>,
    /// A TCP address, when set.
    pub listen: Option<SocketAddr>,
    /// The bearer token TCP requests must carry (required off loopback).
    pub token: Option<Secret>,
    /// Whether the dashboard offers trigger, pause and resume (to a browser that gave the
    /// token).
    pub dashboard_actions: bool,
}

/// Validates the section. Without `socket`: `$RUNTIME_DIRECTORY/hourglass.sock` (under
/// systemd), else `hourglass.sock` beside the history database (or the node's own files).
pub(crate) fn api_settings(
    raw: &RawApi,
    resolve: &dyn Fn(&str) -> PathBuf,
    local_path: &Path,
    at: &mut Located<'_>,
) -> ApiSettings {
    let runtime_dir = std::env::var("RUNTIME_DIRECTORY").ok();
    let (socket, also_try) = match raw.socket.as_deref() {
        Some("") => (None, None),
        Some(path) => (Some(resolve(path)), None),
        None => match runtime_dir.as_deref().filter(|d| !d.is_empty()) {
            Some(dir) => (Some(Path::new(dir).join(SOCKET_NAME)), None),
            None => (
                Some(local_path.with_file_name(SOCKET_NAME)),
                Some(Path::new(SYSTEM_RUNTIME_DIR).join(SOCKET_NAME)),
            ),
        },
    };
    let listen = raw.listen.as_deref().and_then(|l| match l.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            at.push(
                Some("api.listen"),
                format!("{l:?} is not an address; expected an IP and a port, e.g. \"127.0.0.1:8787\" or \"[::]:8787\""),
            );
            None
        }
    });
    let token = raw.token.as_ref().and_then(|t| secret(t, "api.token", at));
    if let Some(addr) = listen
        && !addr.ip().is_loopback()
        && raw.token.is_none()
    {
        at.push(
            Some("api.token"),
            format!("required when api.listen ({addr}) is not a loopback address; expected {{ env = \"HOURGLASS_API_TOKEN\" }} or {{ file = \"/etc/hourglass/api-token\" }}"),
        );
    }
    let dashboard_actions = raw.dashboard_actions.unwrap_or(false);
    if dashboard_actions && raw.token.is_none() {
        at.push(
            Some("api.dashboard_actions"),
            "needs api.token: the dashboard's actions are offered only to a browser that gave the token; set token = { env = \"HOURGLASS_API_TOKEN\" } (or { file = \"...\" }) or leave dashboard_actions out".to_string(),
        );
    }
    if let Some(socket) = socket.as_ref().filter(|_| raw.socket.is_some())
        && socket.as_os_str().len() > MAX_SOCKET_PATH
    {
        at.push(
            Some("api.socket"),
            format!(
                "{} is too long for a unix socket ({} bytes at most); choose a shorter path",
                socket.display(),
                MAX_SOCKET_PATH
            ),
        );
    }
    ApiSettings {
        socket,
        also_try,
        listen,
        token,
        dashboard_actions,
    }
}

/// The longest unix socket path Linux takes (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
