//! The `[api]` section: where the daemon's HTTP API listens (a unix socket by default, its
//! mode and group; TCP when `listen` is set, always with a bearer token, and the host names it
//! answers to), how many connections it holds, and the dashboard's actions and cookie.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::problem::{Located, RawSecret, checked_secret};
use crate::secret::Secret;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawApi {
    pub(crate) socket: Option<String>,
    pub(crate) socket_mode: Option<String>,
    pub(crate) socket_group: Option<String>,
    pub(crate) listen: Option<String>,
    pub(crate) token: Option<RawSecret>,
    pub(crate) allowed_hosts: Option<Vec<String>>,
    pub(crate) dashboard_actions: Option<bool>,
    pub(crate) cookie_secure: Option<bool>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_listener: Option<usize>,
    pub(crate) header_timeout: Option<String>,
}

/// How many connections the API holds open, and how long a request head may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections on one listener (the unix socket, TCP).
    pub per_listener: usize,
    /// Open connections on all listeners together.
    pub in_all: usize,
    /// How long a connection may take to send a request head, from its opening or from the
    /// end of its last answer (so also how long an idle kept-alive connection stays).
    pub header_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            per_listener: 256,
            in_all: 512,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// The socket's name in its folder.
const SOCKET_NAME: &str = "hourglass.sock";
/// Where the packaged unit's runtime folder is (`RuntimeDirectory=hourglass`).
const SYSTEM_RUNTIME_DIR: &str = "/run/hourglass";

/// Where the API listens.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    /// The unix socket; `None` when `socket = ""` turns it off.
    pub socket: Option<PathBuf>,
    /// The socket file's mode (0660 by default: who may use the API is who may open it).
    pub socket_mode: u32,
    /// The socket file's group id (the daemon's own group when unset).
    pub socket_group: Option<u32>,
    /// Where the CLI also looks for a daemon when `socket` was not set: the packaged unit's
    /// socket, which a daemon under systemd uses while a shell has no `RUNTIME_DIRECTORY`.
    pub also_try: Option<PathBuf>,
    /// A TCP address, when set.
    pub listen: Option<SocketAddr>,
    /// The bearer token TCP requests must carry (required with `listen`).
    pub token: Option<Secret>,
    /// Host names TCP requests may name in `Host` besides IP addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// Whether the dashboard offers trigger, pause and resume (to a browser that gave the
    /// token).
    pub dashboard_actions: bool,
    /// Whether the dashboard's cookie is marked `Secure` (served behind TLS).
    pub cookie_secure: bool,
    /// How many connections are held open, and how long a request head may take.
    pub limits: ConnectionLimits,
}

/// Validates the section. Without `socket`: `$RUNTIME_DIRECTORY/hourglass.sock` (under
/// systemd), else `hourglass.sock` beside the history database (or the node's own files).
pub(crate) fn api_settings(
    raw: &RawApi,
    resolve: &dyn Fn(&str) -> PathBuf,
    local_path: &Path,
    at: &mut Located<'_>,
) -> ApiSettings {
    let (socket, also_try) = socket_path(raw, resolve, local_path, at);
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
    let token = raw
        .token
        .as_ref()
        .and_then(|t| checked_secret(t, "api.token", Some(token_strength), at));
    if let Some(addr) = listen
        && raw.token.is_none()
    {
        at.push(
            Some("api.token"),
            format!("required with api.listen ({addr}): every TCP request must carry it, loopback too (any local account and any web page in a local browser can reach a TCP port); make one with `openssl rand -hex 32 > /etc/hourglass/api-token` and set token = {{ file = \"/etc/hourglass/api-token\" }} (or {{ env = \"HOURGLASS_API_TOKEN\" }}), or use the unix socket alone"),
        );
    }
    let dashboard_actions = raw.dashboard_actions.unwrap_or(false);
    if dashboard_actions && raw.token.is_none() {
        at.push(
            Some("api.dashboard_actions"),
            "needs api.token: the dashboard's actions are offered only to a browser that gave the token; set token = { env = \"HOURGLASS_API_TOKEN\" } (or { file = \"...\" }) or leave dashboard_actions out".to_string(),
        );
    }
    ApiSettings {
        socket,
        socket_mode: socket_mode(raw.socket_mode.as_deref(), at),
        socket_group: socket_group(raw.socket_group.as_deref(), at),
        also_try,
        listen,
        token,
        allowed_hosts: allowed_hosts(raw.allowed_hosts.as_deref().unwrap_or_default(), at),
        dashboard_actions,
        cookie_secure: raw.cookie_secure.unwrap_or(false),
        limits: connection_limits(raw, at),
    }
}

/// The socket's path, and where the CLI also looks for one.
fn socket_path(
    raw: &RawApi,
    resolve: &dyn Fn(&str) -> PathBuf,
    local_path: &Path,
    at: &mut Located<'_>,
) -> (Option<PathBuf>, Option<PathBuf>) {
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
    (socket, also_try)
}

/// The shortest token taken, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Whether `token` (as read, surrounding blanks aside) is long enough to be a secret.
fn token_strength(token: &str) -> Result<(), String> {
    let how =
        "make one with `openssl rand -hex 32 > /etc/hourglass/api-token` (and `chmod 600` it)";
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("the token is empty; {how}"));
    }
    if token.len() < MIN_TOKEN_BYTES {
        return Err(format!(
            "the token is {} bytes long; a token is at least {MIN_TOKEN_BYTES} bytes: {how}",
            token.len()
        ));
    }
    if token.chars().any(char::is_control) || token.contains(char::is_whitespace) {
        return Err(format!(
            "the token has blanks or control characters inside; {how}"
        ));
    }
    Ok(())
}

/// `socket_mode`: octal, owner read and write at least, nothing for others.
fn socket_mode(value: Option<&str>, at: &mut Located<'_>) -> u32 {
    const DEFAULT: u32 = 0o660;
    let Some(v) = value else { return DEFAULT };
    let expected =
        "expected an octal mode such as \"0660\" (owner and group) or \"0600\" (owner only)";
    match u32::from_str_radix(v.trim_start_matches("0o"), 8) {
        Ok(mode) if mode & 0o600 == 0o600 && mode & 0o007 == 0 && mode <= 0o770 => mode,
        Ok(mode) if mode & 0o007 != 0 => {
            at.push(
                Some("api.socket_mode"),
                format!("{v:?} lets every local account use the API; {expected}"),
            );
            DEFAULT
        }
        _ => {
            at.push(
                Some("api.socket_mode"),
                format!("{v:?} is not a socket mode; {expected}"),
            );
            DEFAULT
        }
    }
}

/// The socket's group when `socket_group` is not set: `hourglass`, when this machine has it
/// (the Debian package makes it), so that its members can use the API.
pub(crate) const DEFAULT_SOCKET_GROUP: &str = "hourglass";

/// `socket_group`: a group that exists on this machine, as its id; unset,
/// [`DEFAULT_SOCKET_GROUP`]'s when it exists.
fn socket_group(value: Option<&str>, at: &mut Located<'_>) -> Option<u32> {
    let gid = |name: &str| {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    };
    let Some(name) = value else {
        return gid(DEFAULT_SOCKET_GROUP);
    };
    let found = gid(name);
    if found.is_none() {
        at.push(
            Some("api.socket_group"),
            format!("no group {name:?} on this machine; create it (`groupadd {name}`) or name an existing one"),
        );
    }
    found
}

/// `allowed_hosts`: host names (without port), lower case.
fn allowed_hosts(names: &[String], at: &mut Located<'_>) -> Vec<String> {
    let mut hosts = Vec::new();
    for name in names {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
        if ok {
            hosts.push(name.to_ascii_lowercase());
        } else {
            at.push(
                Some("api.allowed_hosts"),
                format!("{name:?} is not a host name; expected names such as \"scheduler.example.org\" (no port, no scheme)"),
            );
        }
    }
    hosts
}

/// The connection caps and the request head timeout.
fn connection_limits(raw: &RawApi, at: &mut Located<'_>) -> ConnectionLimits {
    let default = ConnectionLimits::default();
    let mut count = |field: &str, value: Option<usize>, default: usize| match value {
        None => default,
        Some(n) if (1..=100_000).contains(&n) => n,
        Some(n) => {
            at.push(
                Some(field),
                format!("{n} is out of range; expected a number of connections from 1 to 100000"),
            );
            default
        }
    };
    let in_all = count("api.max_connections", raw.max_connections, default.in_all);
    let per_listener = count(
        "api.max_connections_per_listener",
        raw.max_connections_per_listener,
        default.per_listener.min(in_all),
    );
    let header_timeout = at.duration(
        "api.header_timeout",
        raw.header_timeout.as_deref(),
        default.header_timeout,
    );
    if header_timeout.is_zero() || header_timeout > Duration::from_secs(3600) {
        at.push(
            Some("api.header_timeout"),
            "expected a duration from \"1s\" to \"1h\", e.g. \"10s\"",
        );
    }
    ConnectionLimits {
        per_listener,
        in_all,
        header_timeout,
    }
}

/// The longest unix socket path Linux takes (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
