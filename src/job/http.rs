//! The `http` kind: one request (method, URL, headers with secrets from env or files, body),
//! checked against the expected status codes; the status and a capped response body go to
//! the history.

use super::{AttemptContext, Outcome, StopSignal};
use crate::secret::Secret;

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

/// Installs ring as the process's rustls crypto provider. reqwest is built without a default
/// one, and not only our clients build reqwest clients: OpenDAL (uploads) builds its own, so
/// the daemon installs it at start. A second call finds it installed, which is fine.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Shared HTTP clients (one per redirect policy), built on first use: loading the platform's
/// root certificates costs memory that a daemon without HTTP jobs or webhooks should not pay
/// (measured in the bench's idle scenario, see the README).
#[derive(Debug, Clone, Default)]
pub struct HttpClients {
    cell: std::sync::Arc<tokio::sync::OnceCell<Pair>>,
}

#[derive(Debug)]
struct Pair {
    follow: reqwest::Client,
    no_follow: reqwest::Client,
}

impl Pair {
    fn build() -> Result<Self, reqwest::Error> {
        install_crypto_provider();
        let ua = concat!("hourglass/", env!("CARGO_PKG_VERSION"));
        Ok(Self {
            follow: reqwest::Client::builder()
                .user_agent(ua)
                .redirect(reqwest::redirect::Policy::limited(10))
                .build()?,
            no_follow: reqwest::Client::builder()
                .user_agent(ua)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        })
    }
}

impl HttpClients {
    /// The client for a redirect policy, built (on a blocking thread: it reads the system's
    /// certificates) at the first call. A failed build is tried again at the next call.
    pub async fn get(&self, follow_redirects: bool) -> Result<reqwest::Client, String> {
        let pair = self
            .cell
            .get_or_try_init(|| async {
                match tokio::task::spawn_blocking(Pair::build).await {
                    Ok(Ok(p)) => Ok(p),
                    Ok(Err(e)) => Err(format!("cannot set up the HTTP client: {}", chain(&e))),
                    Err(e) => Err(format!("cannot set up the HTTP client: {e}")),
                }
            })
            .await?;
        Ok(if follow_redirects {
            pair.follow.clone()
        } else {
            pair.no_follow.clone()
        })
    }
}

/// The error with its whole cause chain.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

impl HttpJob {
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
        let work = async {
            let mut resp = req.send().await?;
            let status = resp.status().as_u16();
            let mut tail = super::command::Tail::new(limit);
            while let Some(chunk) = resp.chunk().await? {
                tail.push(&chunk);
            }
            Ok::<_, reqwest::Error>((status, tail.finish()))
        };
        let result = tokio::select! {
            r = work => r,
            () = stop.soft.cancelled() => return Outcome::failed("request stopped", true),
        };
        match result {
            Ok((status, body)) => {
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
                    details: Some(serde_json::json!({ "status": status })),
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

/// The URL without its password or query (which may carry tokens).
pub fn redacted(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    if u.query().is_some() {
        u.set_query(Some("…"));
    }
    u.to_string()
}
