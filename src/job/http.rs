//! The `http` kind: one request (method, URL, headers with secrets from env or files, body),
//! checked against the expected status codes; the status and a capped response body go to
//! the history.

use super::output::Tail;
use super::{AttemptContext, Outcome, StopSignal};
use crate::http_client::{chain, redacted};
use crate::problem::{Located, RawSecret, headers, url};
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A validated HTTP job.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpJob {
    /// Method.
    pub method: reqwest::Method,
    /// URL.
    pub url: reqwest::Url,
    /// Plain headers.
    pub headers: Vec<(String, String)>,
    /// Headers whose values are secrets (never logged or recorded).
    pub secret_headers: Vec<(String, Secret)>,
    /// Request body.
    pub body: Option<String>,
    /// Statuses that count as success (empty: any 2xx).
    pub expect_status: Vec<u16>,
    /// Follow redirects (up to 10).
    pub follow_redirects: bool,
}

impl HttpJob {
    /// Its settings for display: the URL without password or query, secret headers by name.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("method", self.method.to_string()),
            ("URL", crate::http_client::redacted(&self.url)),
        ];
        let mut headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        headers.extend(
            self.secret_headers
                .iter()
                .map(|(k, _)| format!("{k}: (secret)")),
        );
        if !headers.is_empty() {
            out.push(("headers", headers.join("; ")));
        }
        if !self.expect_status.is_empty() {
            let codes: Vec<String> = self.expect_status.iter().map(u16::to_string).collect();
            out.push(("expected statuses", codes.join(", ")));
        }
        out
    }

    /// Whether `status` counts as success.
    fn accepts(&self, status: u16) -> bool {
        if self.expect_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expect_status.contains(&status)
        }
    }

    /// Sends the request once; see [`super::JobKind::execute`].
    pub async fn execute(&self, ctx: &AttemptContext<'_>, stop: &StopSignal) -> Outcome {
        ctx.started.mark();
        // Let the other firings due now start before this one's network work (connect, TLS)
        // takes the thread: in a burst, every due job is dispatched first.
        tokio::task::yield_now().await;
        let client = match ctx.services.http.get(self.follow_redirects).await {
            Ok(c) => c,
            Err(e) => return Outcome::failed(e, true),
        };
        let mut req = client.request(self.method.clone(), self.url.clone());
        for (k, v) in super::after::parent_headers(ctx.parents) {
            req = req.header(k, v);
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        for (k, v) in &self.secret_headers {
            let mut value = match reqwest::header::HeaderValue::from_str(v.expose()) {
                Ok(v) => v,
                Err(_) => return Outcome::failed(format!("header {k}: invalid value"), false),
            };
            value.set_sensitive(true);
            req = req.header(k, value);
        }
        if let Some(b) = &self.body {
            req = req.body(b.clone());
        }
        let limit = ctx.job.output_limit;
        let sent = self.body.as_ref().map_or(0, String::len);
        let work = exchange(req, limit, sent);
        let result = tokio::select! {
            r = work => r,
            () = stop.soft.cancelled() => return Outcome::failed("request stopped", true),
        };
        match result {
            Ok((status, body, details)) => {
                let ok = self.accepts(status);
                Outcome {
                    success: ok,
                    exit_code: None,
                    error: (!ok).then(|| {
                        format!(
                            "unexpected HTTP status {status} from {} {} (expected {})",
                            self.method,
                            redacted(&self.url),
                            if self.expect_status.is_empty() {
                                "2xx".to_string()
                            } else {
                                format!("{:?}", self.expect_status)
                            }
                        )
                    }),
                    output: body,
                    // Server errors and throttling may pass; other statuses will not.
                    retryable: status >= 500 || status == 429 || status == 408,
                    details: Some(details),
                    usage: None,
                }
            }
            Err(e) => Outcome::failed(
                format!(
                    "{} {}: {}",
                    self.method,
                    redacted(&self.url),
                    chain(&e.without_url())
                ),
                true,
            ),
        }
    }
}

/// Sends the request and reads the answer: its status, the tail of its body, and what the
/// exchange cost (bytes each way, time to the answer and to its end), as a run in the daemon
/// can tell it (no process of its own).
async fn exchange(
    req: reqwest::RequestBuilder,
    limit: usize,
    sent: usize,
) -> Result<(u16, Option<String>, serde_json::Value), reqwest::Error> {
    let began = std::time::Instant::now();
    let mut resp = req.send().await?;
    let answered = began.elapsed();
    let status = resp.status().as_u16();
    let mut tail = Tail::new(limit);
    let mut received = 0usize;
    while let Some(chunk) = resp.chunk().await? {
        received += chunk.len();
        tail.push(&chunk);
    }
    let details = serde_json::json!({
        "status": status,
        "bytes_sent": sent,
        "bytes_received": received,
        "response_ms": answered.as_millis(),
        "transfer_ms": (began.elapsed() - answered).as_millis(),
    });
    Ok((status, tail.finish(), details))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub(crate) method: Option<String>,
    pub(crate) url: String,
    pub(crate) headers: Option<BTreeMap<String, String>>,
    pub(crate) secret_headers: Option<BTreeMap<String, RawSecret>>,
    pub(crate) body: Option<String>,
    pub(crate) expect_status: Option<Vec<u16>>,
    pub(crate) follow_redirects: Option<bool>,
}

pub(crate) fn from_raw(r: RawHttp, at: &mut Located<'_>) -> Option<HttpJob> {
    let method = match r
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase()
        .parse::<reqwest::Method>()
    {
        Ok(m) => Some(m),
        Err(_) => {
            at.push(
                Some("http.method"),
                format!(
                    "{:?} is not an HTTP method (e.g. \"GET\", \"POST\", \"PUT\")",
                    r.method.as_deref().unwrap_or_default()
                ),
            );
            None
        }
    };
    let url = url(&r.url, "http.url", at);
    let (headers, secret_headers) = headers(r.headers, r.secret_headers, "http", at);
    let authorization = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(secret_headers.iter().map(|(k, _)| k.as_str()))
        .any(|k| k.eq_ignore_ascii_case("authorization"));
    if authorization
        && let Some(u) = &url
        && (!u.username().is_empty() || u.password().is_some())
    {
        at.push(
            Some("http.url"),
            "has credentials (user:password@) and an Authorization header is set too, which would be sent instead of them; give the credentials one way: the header in secret_headers = { Authorization = { env = \"...\" } }, or the URL alone",
        );
    }
    for s in r.expect_status.iter().flatten() {
        if !(100..=599).contains(s) {
            at.push(
                Some("http.expect_status"),
                format!("{s} is not an HTTP status"),
            );
        }
    }
    Some(HttpJob {
        method: method?,
        url: url?,
        headers,
        secret_headers,
        body: r.body,
        expect_status: r.expect_status.unwrap_or_default(),
        follow_redirects: r.follow_redirects.unwrap_or(true),
    })
}
