//! Who asks: on the unix socket, the peer's uid (`SO_PEERCRED`; the socket's mode 0660 is
//! the gate); on TCP, the bearer token when one is set (required off loopback), else a
//! loopback client. A request without the right token is refused with 401 and nothing done.

use std::net::SocketAddr;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
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
    let actor = match peer {
        Peer::Unix(Some(uid)) => format!("uid:{uid}"),
        Peer::Unix(None) => "uid:unknown".to_string(),
        Peer::Tcp(_) => match &state.0.token_digest {
            None => "loopback".to_string(),
            Some(want) => {
                if !bearer_matches(request.headers().get(header::AUTHORIZATION), want) {
                    return refused();
                }
                "token".to_string()
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
