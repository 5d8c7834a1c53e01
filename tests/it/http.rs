//! The tests' one HTTP client ([`Api`]): reqwest on the daemon's unix socket or on TCP, with
//! or without the token, following no redirect, each answer whole (status, redirect, cookie,
//! body).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

/// The tests' one HTTP client (reqwest), on the daemon's socket or TCP address. It follows
/// no redirect: the tests read where one points.
pub struct Api {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    /// The token `get` and `post` carry (TCP).
    token: Option<String>,
}

impl Api {
    pub fn socket(path: &Path) -> Self {
        hourglass::http_client::install_crypto_provider();
        let http = reqwest::Client::builder()
            .unix_socket(path)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self::with(http, "http://hourglass".into())
    }

    /// On TCP, `get` and `post` carrying `token`.
    pub fn tcp(port: u16, token: &str) -> Self {
        let mut api = Self::on_port(port);
        api.token = Some(token.to_string());
        api
    }

    /// On TCP, carrying only what each request is given (the dashboard's forms and pages).
    pub fn on_port(port: u16) -> Self {
        hourglass::http_client::install_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self::with(http, format!("http://127.0.0.1:{port}"))
    }

    fn with(http: reqwest::Client, base: String) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Self {
            rt,
            http,
            base,
            token: None,
        }
    }

    /// `method path` with an optional token and JSON body: the status and the body as text.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        let body = body.map(|b| b.to_string());
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        self.call_with(method, path, &headers, body.as_deref())
    }

    /// `method path` with these headers (and a body): the status and the body as text.
    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, String) {
        let answer = self.send(method, path, headers, body);
        (answer.status, answer.body)
    }

    /// `method path` with these headers (and a body): the whole answer.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(20 * SEC);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.body(b.to_string());
        }
        self.rt.block_on(async {
            let resp = r.send().await.unwrap();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            let (location, set_cookie) = (header("location"), header("set-cookie"));
            Answer {
                status: resp.status().as_u16(),
                location,
                set_cookie,
                body: resp.text().await.unwrap(),
            }
        })
    }

    /// `GET path` as JSON, which must answer 200.
    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, self.token.as_deref(), None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `POST path` as JSON, which must answer 200.
    pub fn post(&self, path: &str, body: Value) -> Value {
        let (status, text) = self.call("POST", path, self.token.as_deref(), Some(body));
        assert_eq!(status, 200, "POST {path}: {text}");
        serde_json::from_str(&text).unwrap()
    }
}

/// What an [`Api`] request got back.
pub struct Answer {
    pub status: u16,
    /// Where a redirect points (empty when none).
    pub location: String,
    /// The cookie the answer sets (empty when none).
    pub set_cookie: String,
    pub body: String,
}
