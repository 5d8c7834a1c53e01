//! Who asks: on the unix socket, the peer's uid (`SO_PEERCRED`; the socket's mode 0660 is
//! the gate); on TCP, the bearer token when one is set (required off loopback), else a
//! loopback client. A browser gives the token once, at the dashboard's login, and carries a
//! session cookie derived from it (never the token itself). A request without the right token
//! or cookie is refused with 401 (a dashboard page: sent to the login) and nothing done.

use std::net::SocketAddr;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, UnixListener};

use super::{ApiState, Failure};

/// The other end of a connection.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    /// A unix socket client, and its uid when the kernel told it.
    Unix(Option<u32>),
    /// A TCP client.
    Tcp(SocketAddr),
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Self::Unix(stream.io().peer_cred().ok().map(|c| c.uid()))
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Self::Tcp(*stream.remote_addr())
    }
}

/// Who made a request, as the events table records it: `uid:N`, `token` or `loopback`.
#[derive(Debug, Clone)]
pub(crate) struct Actor(pub(crate) String);

/// Lets a request through with its [`Actor`], or refuses it (401).
pub(super) async fn authorize(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let open = path == LOGIN_PATH || path.starts_with("/assets/");
    let actor = match peer {
        Peer::Unix(Some(uid)) => format!("uid:{uid}"),
        Peer::Unix(None) => "uid:unknown".to_string(),
        Peer::Tcp(_) => match &state.0.token_digest {
            None => "loopback".to_string(),
            Some(want) => {
                let headers = request.headers();
                // The dashboard's cookie reads the API (the live output's events) but does
                // not act through it: its actions go through the dashboard's checked forms.
                let session_may = request.method() == Method::GET || is_page(path);
                if bearer_matches(headers.get(header::AUTHORIZATION), want)
                    || (session_may && has_session(headers, want))
                {
                    "token".to_string()
                } else if open {
                    "anonymous".to_string()
                } else if is_page(path) {
                    return to_login(request.uri());
                } else {
                    return refused();
                }
            }
        },
    };
    request.extensions_mut().insert(Actor(actor));
    next.run(request).await
}

/// Whether the `Authorization` header carries the token whose digest is `want` (digests are
/// compared, so the comparison's time says nothing of the token).
fn bearer_matches(value: Option<&HeaderValue>, want: &[u8; 32]) -> bool {
    let Some(token) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    token_digest(token) == *want
}

/// The dashboard's login page (the one page served without the token).
pub const LOGIN_PATH: &str = "/login";
/// The cookie a browser carries after the login.
pub const SESSION_COOKIE: &str = "hourglass_session";

/// Whether `path` is a dashboard page (not the JSON API, health or metrics).
fn is_page(path: &str) -> bool {
    !(path.starts_with("/v1/") || path == "/healthz" || path == "/metrics")
}

/// Sends a browser to the login page, which sends it back here.
fn to_login(uri: &axum::http::Uri) -> Response {
    let back = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut target = url_escape(back);
    target.insert_str(0, "/login?next=");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, target),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response()
}

/// What a path keeps unencoded in the login's `next`: unreserved characters and `/`.
const PATH_KEEPS: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

fn url_escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_KEEPS).to_string()
}

/// The session cookie's value for the token whose digest is `token`: a digest of the digest,
/// so the cookie neither is nor reveals the token.
pub fn session_value(token: &[u8; 32]) -> String {
    hex(&Sha256::new_with_prefix(b"hourglass-session\0")
        .chain_update(token)
        .finalize())
}

/// The field a dashboard form must carry with the session (a request from another site
/// cannot know it).
pub fn csrf_value(token: &[u8; 32]) -> String {
    hex(&Sha256::new_with_prefix(b"hourglass-csrf\0")
        .chain_update(token)
        .finalize())
}

/// Whether the request carries the session cookie of the token whose digest is `token`
/// (compared by digest).
pub fn has_session(headers: &axum::http::HeaderMap, token: &[u8; 32]) -> bool {
    let want = token_digest(&session_value(token));
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == SESSION_COOKIE && token_digest(value) == want)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn refused() -> Response {
    let mut r = Failure::new(
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required (Authorization: Bearer <api.token>)",
    )
    .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The digest of a token, as [`super::Shared::token_digest`] keeps it.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}
