//! Signing a browser in: the token is given once in a form, and the browser keeps the cookie
//! of a session the daemon keeps (a random id; HttpOnly, SameSite=Strict, `Secure` with
//! `api.cookie_secure`; never the token). Wrong tokens are slowed per client address. Forms
//! that change anything must come from this site: their Origin is this host and they carry
//! the session's anti-forgery field.

use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{self, Problem, Section, Visitor};
use crate::api::{
    ApiState, Peer, SESSION_COOKIE, TokenGuess, judge_token, same_origin, token_digest, too_many,
};

/// Where to go after signing in.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Next {
    next: String,
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub(super) struct Login {
    token: String,
    #[serde(default)]
    next: String,
}

/// `GET /login`.
pub(super) async fn form(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<Next>,
) -> Response {
    login_page(&state, &headers, &q.next, StatusCode::OK, None)
}

fn login_page(
    state: &ApiState,
    headers: &HeaderMap,
    next: &str,
    status: StatusCode,
    problem: Option<&str>,
) -> Response {
    let visitor = Visitor::of(state, headers);
    let body = html! {
        h1 { "Sign in" }
        @if state.0.token_digest.is_none() {
            p { "This daemon has no API token (" code { "[api] token" } "): its pages need no "
                "sign-in, and the dashboard offers no actions." }
            p { a href="/" { "To the jobs" } }
        } @else {
            @if let Some(p) = problem { p.problem role="alert" { (p) } }
            form.login method="post" action="/login" {
                label for="token" { "API token (" code { "[api] token" } ")" }
                input id="token" type="password" name="token" autocomplete="current-password" required autofocus;
                input type="hidden" name="next" value=(safe_next(next));
                button type="submit" { "Sign in" }
            }
            p.quiet { "The browser keeps a cookie derived from the token, never the token itself." }
        }
    };
    let mut r = layout::page(state, &visitor, "Sign in", Section::None, body);
    *r.status_mut() = status;
    r
}

/// `POST /login`: a right token starts a session (its cookie set) and goes on to `next`.
pub(super) async fn login(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Form(form): Form<Login>,
) -> Result<Response, Problem> {
    same_site(&headers)?;
    let Some(want) = state.0.token_digest else {
        return Ok(go(&safe_next(&form.next), None));
    };
    let client = match peer {
        Peer::Tcp(client) => Some(client),
        Peer::Unix(_) => None,
    };
    let judged = judge_token(
        &state,
        client,
        || token_digest(&form.token) == want,
        "dashboard sign-in with a wrong token",
    );
    if let TokenGuess::Slowed(wait) = judged {
        return Ok(too_many(wait));
    }
    if judged == TokenGuess::Wrong {
        return Ok(login_page(
            &state,
            &headers,
            &form.next,
            StatusCode::UNAUTHORIZED,
            Some("That is not the token."),
        ));
    }
    let id = state.0.sessions.start(&headers);
    let cookie = session_cookie(&state, &id, crate::api::SESSION_LIFETIME.as_secs());
    Ok(go(&safe_next(&form.next), Some(cookie)))
}

/// The session cookie holding `id` for `max_age` seconds (`""` and 0: dropped).
fn session_cookie(state: &ApiState, id: &str, max_age: u64) -> String {
    let secure = if state.0.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// The logout form's field.
#[derive(Debug, Deserialize)]
pub(super) struct Logout {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: the session ends (on the daemon: its cookie no longer works anywhere) and
/// the cookie is dropped.
pub(super) async fn logout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<Logout>,
) -> Result<Response, Problem> {
    same_site(&headers)?;
    check_csrf(&Visitor::of(&state, &headers), &form.csrf)?;
    state.0.sessions.end(&headers);
    Ok(go("/login", Some(session_cookie(&state, "", 0))))
}

/// A redirect to `to` (a path of this site), setting `cookie` when given.
fn go(to: &str, cookie: Option<String>) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response();
    if let Some(c) = cookie.and_then(|c| c.parse().ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    layout::with_headers(r)
}

/// `next` when it is a page of this site, else `/`: parsed the way a browser parses a link
/// (tabs and line breaks dropped, `\\` as `/`), and kept only when it stays on this origin;
/// what is kept is the parsed path and query, never the text as given.
fn safe_next(next: &str) -> String {
    let Ok(base) = reqwest::Url::parse("http://dashboard.invalid/") else {
        return "/".into();
    };
    match base.join(next) {
        Ok(url) if url.origin() == base.origin() && next.starts_with('/') => {
            let mut out = url.path().to_string();
            if let Some(q) = url.query() {
                out.push('?');
                out.push_str(q);
            }
            out
        }
        _ => "/".into(),
    }
}

/// Refuses a form that another site's page sent: its `Origin` must be this host (browsers
/// send it with every form post), and `Sec-Fetch-Site`, when sent, must say same-origin.
pub(super) fn same_site(headers: &HeaderMap) -> Result<(), Problem> {
    if headers.contains_key(header::ORIGIN) && same_origin(headers) {
        Ok(())
    } else {
        Err(Problem(
            StatusCode::FORBIDDEN,
            "This form did not come from this dashboard (its Origin is another site, or none)."
                .into(),
        ))
    }
}

/// Refuses a form whose anti-forgery field is not its session's (`visitor`'s).
pub(super) fn check_csrf(visitor: &Visitor, csrf: &str) -> Result<(), Problem> {
    if visitor.signed_in && token_digest(&visitor.csrf) == token_digest(csrf) {
        Ok(())
    } else {
        Err(Problem(
            StatusCode::FORBIDDEN,
            "This form lacks the session's anti-forgery field; reload the page and try again."
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forms_from_another_site_or_without_origin_are_refused() {
        let ok = headers(&[
            ("host", "127.0.0.1:8787"),
            ("origin", "http://127.0.0.1:8787"),
        ]);
        assert!(same_site(&ok).is_ok());
        let other = headers(&[
            ("host", "127.0.0.1:8787"),
            ("origin", "http://evil.example"),
        ]);
        assert!(same_site(&other).is_err());
        assert!(same_site(&headers(&[("host", "127.0.0.1:8787")])).is_err());
        let cross = headers(&[
            ("host", "127.0.0.1:8787"),
            ("origin", "http://127.0.0.1:8787"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(same_site(&cross).is_err());
    }

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/jobs/a?after=1"), "/jobs/a?after=1");
        assert_eq!(safe_next("/jobs/a%20b"), "/jobs/a%20b");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "/\t/evil.example:8787/path",
            "/\n/evil.example",
            "\t//evil.example",
            " //evil.example",
            "jobs",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }
}
