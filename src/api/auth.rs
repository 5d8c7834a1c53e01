//! Who asks, and whether they may: on the unix socket, the peer's uid (`SO_PEERCRED`; the
//! socket's mode and group are the gate); on TCP, always the bearer token (or, for a browser,
//! the dashboard session it started by giving the token once). Every TCP request must name
//! this daemon in `Host` (an IP address, `localhost`, or `api.allowed_hosts`), which defeats
//! DNS rebinding; a TCP request that changes anything must be JSON and, when a browser says
//! where it came from, come from this site. Wrong tokens are counted per client address and
//! slowed (`throttle`). A request that fails a check is refused (401, 403, 421 or 429; a
//! dashboard page: sent to the login) and nothing is done.

use std::net::SocketAddr;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiState, Failure};

/// The other end of a connection.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    /// A unix socket client, and its uid when the kernel told it.
    Unix(Option<u32>),
    /// A TCP client.
    Tcp(SocketAddr),
}

/// Who made a request, as the events table records it: `uid:N` or `token`.
#[derive(Debug, Clone)]
pub(crate) struct Actor(pub(crate) String);

/// Lets a request through with its [`Actor`], or refuses it.
pub(super) async fn authorize(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut request: Request,
    next: Next,
) -> Response {
    let actor = match peer {
        Peer::Unix(Some(uid)) => format!("uid:{uid}"),
        Peer::Unix(None) => "uid:unknown".to_string(),
        Peer::Tcp(client) => match tcp_actor(&state, client, &request) {
            Ok(actor) => actor.to_string(),
            Err(refusal) => return *refusal,
        },
    };
    request.extensions_mut().insert(Actor(actor));
    next.run(request).await
}

/// Who a TCP request comes from (`token`, or `anonymous` for the login page and the
/// assets), or its refusal.
fn tcp_actor(
    state: &ApiState,
    client: SocketAddr,
    request: &Request,
) -> Result<&'static str, Box<Response>> {
    let headers = request.headers();
    let path = request.uri().path();
    check_host(request, &state.0.allowed_hosts).map_err(|f| Box::new(f.into_response()))?;
    let Some(want) = &state.0.token_digest else {
        // `check` refuses a TCP listener without a token; never served open.
        return Err(Box::new(refused()));
    };
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let judged = judge_token(
            state,
            Some(client),
            || bearer_matches(value, want),
            "API request with a wrong bearer token",
        );
        match judged {
            TokenGuess::Slowed(wait) => return Err(Box::new(too_many(wait))),
            TokenGuess::Wrong => return Err(Box::new(refused())),
            TokenGuess::Right => {}
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            check_state_change(headers, path).map_err(|f| Box::new(f.into_response()))?;
        }
        return Ok("token");
    }
    // The dashboard's session reads the API (the live output's events) but does not act
    // through it: its actions go through the dashboard's checked forms.
    let session_may = request.method() == Method::GET || is_page(path);
    if session_may && state.0.sessions.find(headers).is_some() {
        return Ok("token");
    }
    if path == LOGIN_PATH || path.starts_with("/assets/") {
        Ok("anonymous")
    } else if is_page(path) {
        Err(Box::new(to_login(request.uri())))
    } else {
        Err(Box::new(refused()))
    }
}

/// What a token a client gave comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenGuess {
    /// The token.
    Right,
    /// Not the token: counted against the client's address, and logged.
    Wrong,
    /// The address gave too many wrong ones: not looked at; it may try again after this.
    Slowed(std::time::Duration),
}

/// Judges a token `client` gave (`right` says whether it is the token; a unix socket client
/// has no address and is never slowed): while the address is slowed the token is not looked
/// at; a wrong one is counted and logged as `what`, with the address (and, the moment the
/// address is slowed down, saying so).
pub(crate) fn judge_token(
    state: &ApiState,
    client: Option<SocketAddr>,
    right: impl FnOnce() -> bool,
    what: &str,
) -> TokenGuess {
    let Some(client) = client else {
        if right() {
            return TokenGuess::Right;
        }
        tracing::warn!("{what}");
        return TokenGuess::Wrong;
    };
    if let Some(wait) = state.0.throttle.wait(client.ip()) {
        return TokenGuess::Slowed(wait);
    }
    if right() {
        return TokenGuess::Right;
    }
    if state.0.throttle.failed(client.ip()) {
        tracing::warn!(client = %client.ip(), "{what}; further tries from this address are slowed down (429)");
    } else {
        tracing::warn!(client = %client.ip(), "{what}");
    }
    TokenGuess::Wrong
}

/// The host a TCP request names (in `Host`, and in the request line when it is absolute)
/// must be this daemon: an IP address, `localhost`, or one of `allowed`. A page whose DNS
/// name was rebound to this machine names its own host, and is refused.
fn check_host(request: &Request, allowed: &[String]) -> Result<(), Failure> {
    let named = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            request
                .uri()
                .authority()
                .map(axum::http::uri::Authority::as_str)
        });
    let in_line = request.uri().host();
    let ok = named.is_some_and(|h| host_allowed(h, allowed))
        && in_line.is_none_or(|h| host_allowed(h, allowed));
    if ok {
        return Ok(());
    }
    let shown: String = named.unwrap_or("").chars().take(100).collect();
    Err(Failure::new(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "this daemon does not answer to the host {shown:?}; use its IP address or localhost, or list the name in api.allowed_hosts"
        ),
    ))
}

/// Whether `host` (`name`, `name:port`, `[v6]:port`) is an IP address, `localhost`, or one
/// of `allowed`.
pub(crate) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => v6,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || allowed.contains(&name)
}

/// A TCP request that changes anything must be JSON (a page of another site can send a form
/// or plain text without asking first, never JSON), and a browser's `Origin` and
/// `Sec-Fetch-Site`, when sent, must say this site.
fn check_state_change(headers: &HeaderMap, path: &str) -> Result<(), Failure> {
    if !path.starts_with("/v1/") {
        return Ok(());
    }
    if !same_origin(headers) {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "this request came from another site's page (Origin or Sec-Fetch-Site); nothing was done",
        ));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if json {
        Ok(())
    } else {
        Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a request that changes anything must be sent as JSON (Content-Type: application/json, a body such as {})",
        ))
    }
}

/// Whether a browser's `Origin` (when sent) is this host and its `Sec-Fetch-Site` (when sent)
/// says same-origin (or none: typed by the user).
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST.as_str());
    let origin_ok = text(header::ORIGIN.as_str()).is_none_or(|o| {
        o.split_once("://")
            .is_some_and(|(_, rest)| Some(rest) == host)
    });
    let site_ok = text("sec-fetch-site").is_none_or(|s| s == "same-origin" || s == "none");
    origin_ok && site_ok
}

/// Whether the `Authorization` header carries the token whose digest is `want` (the scheme
/// in any case; digests are compared, so the comparison's time says nothing of the token).
fn bearer_matches(value: &HeaderValue, want: &[u8; 32]) -> bool {
    let Some((scheme, token)) = value.to_str().ok().and_then(|v| v.trim().split_once(' ')) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && token_digest(token) == *want
}

/// The dashboard's login page (the one page served without the token).
pub const LOGIN_PATH: &str = "/login";

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

/// Too many wrong tokens from this address: try again after `wait`.
pub(crate) fn too_many(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut r = Failure::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many wrong tokens from this address; try again in {secs} s"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The digest of a token, as [`super::Shared::token_digest`] keeps it.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_addresses_localhost_or_listed() {
        let allowed = vec!["sched.example.org".to_string()];
        for ok in [
            "127.0.0.1:8787",
            "127.0.0.1",
            "[::1]:8787",
            "10.1.2.3:80",
            "localhost:8787",
            "LOCALHOST",
            "sched.example.org:8787",
            "sched.example.org.",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8787",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "[::1]evil",
            "",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        let want = token_digest("0123456789abcdef0123");
        for v in [
            "Bearer 0123456789abcdef0123",
            "bearer 0123456789abcdef0123",
            "BEARER  0123456789abcdef0123 ",
        ] {
            assert!(bearer_matches(&HeaderValue::from_static(v), &want), "{v}");
        }
        for v in ["Basic 0123456789abcdef0123", "Bearer", "Bearer wrong", ""] {
            assert!(!bearer_matches(&HeaderValue::from_static(v), &want), "{v}");
        }
    }

    #[test]
    fn another_sites_origin_is_not_this_one() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8787".parse().unwrap());
        assert!(
            same_origin(&h),
            "no Origin: not a browser's cross-site request"
        );
        h.insert(header::ORIGIN, "http://127.0.0.1:8787".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:9999".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:8787".parse().unwrap());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
