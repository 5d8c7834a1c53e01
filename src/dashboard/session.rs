//! Signing a browser in: the token is given once in a form, and the browser keeps a cookie
//! derived from it (HttpOnly, SameSite=Strict; never the token). Forms that change anything
//! must come from this site: their Origin is this host and they carry the anti-forgery field.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{self, Problem, Section, Visitor};
use crate::api::{ApiState, SESSION_COOKIE, csrf_value, session_value, token_digest};

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

/// `POST /login`: a right token sets the session cookie and goes on to `next`.
pub(super) async fn login(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<Login>,
) -> Result<Response, Problem> {
    same_site(&headers)?;
    let Some(want) = state.0.token_digest else {
        return Ok(go(safe_next(&form.next), None));
    };
    if token_digest(&form.token) != want {
        tracing::warn!("dashboard sign-in with a wrong token");
        return Ok(login_page(
            &state,
            &headers,
            &form.next,
            StatusCode::UNAUTHORIZED,
            Some("That is not the token."),
        ));
    }
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        session_value(&want)
    );
    Ok(go(safe_next(&form.next), Some(cookie)))
}

/// The logout form's field.
#[derive(Debug, Deserialize)]
pub(super) struct Logout {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: the cookie is dropped.
pub(super) async fn logout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<Logout>,
) -> Result<Response, Problem> {
    same_site(&headers)?;
    check_csrf(&state, &form.csrf)?;
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(go("/login", Some(cookie)))
}

/// A redirect to `to` (a path of this site), setting `cookie` when given.
fn go(to: &str, cookie: Option<String>) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response();
    if let Some(c) = cookie.and_then(|c| c.parse().ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    layout::with_headers(r)
}

/// `next` when it is a path of this site, else `/`.
fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/') && !next.starts_with("//") && !next.contains('\\');
    if local { next } else { "/" }
}

/// Refuses a form that another site's page sent: its `Origin` must be this host (browsers
/// send it with every form post), and `Sec-Fetch-Site`, when sent, must say same-origin.
pub(super) fn same_site(headers: &HeaderMap) -> Result<(), Problem> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST.as_str());
    let origin_host = text(header::ORIGIN.as_str())
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    let fetch_site_ok = text("sec-fetch-site").is_none_or(|s| s == "same-origin");
    if host.is_some() && origin_host == host && fetch_site_ok {
        Ok(())
    } else {
        Err(Problem(
            StatusCode::FORBIDDEN,
            "This form did not come from this dashboard (its Origin is another site, or none)."
                .into(),
        ))
    }
}

/// Refuses a form whose anti-forgery field is not this session's.
pub(super) fn check_csrf(state: &ApiState, csrf: &str) -> Result<(), Problem> {
    let want = state.0.token_digest.as_ref().map(csrf_value);
    if want.is_some_and(|w| token_digest(&w) == token_digest(csrf)) {
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
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
    }
}
