//! The CLI's way to the running daemon: its API on the unix socket (or TCP with the token),
//! used when the daemon that answers there writes the same history database; the CLI reads
//! the database itself otherwise.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::de::DeserializeOwned;

use crate::config::{InForce, Settings};

/// How long the CLI waits for the daemon to answer whether it is there.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an action may take (a trigger waits up to 5 s for news of its run).
const ACTION_TIMEOUT: Duration = Duration::from_secs(15);

/// A connection to the running daemon's API.
#[derive(Debug, Clone)]
pub(super) struct Daemon {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// What it said of its configuration when found.
    pub(super) in_force: Option<InForce>,
}

/// What a daemon says of itself (the part the CLI checks, and what it runs).
#[derive(Debug, serde::Deserialize)]
struct Identity {
    database: String,
    configuration: Option<InForce>,
}

impl Daemon {
    /// The daemon writing `settings.database`, if one answers on its socket (or TCP address).
    pub(super) async fn find(settings: &Settings) -> Option<Self> {
        crate::http_client::install_crypto_provider();
        let api = &settings.api;
        let mut candidates: Vec<Self> = [api.socket.as_deref(), api.also_try.as_deref()]
            .into_iter()
            .flatten()
            .filter(|p| p.exists())
            .filter_map(|p| Self::on_socket(p).ok())
            .collect();
        if candidates.is_empty()
            && let Some(addr) = api.listen
        {
            let token = api
                .token
                .as_ref()
                .and_then(|t| t.read().ok().map(str::to_string));
            if let Ok(http) = reqwest::Client::builder().build() {
                candidates.push(Self {
                    http,
                    base: format!("http://{addr}"),
                    token,
                    in_force: None,
                });
            }
        }
        for mut daemon in candidates {
            let identity: Option<Identity> = daemon.probe().await;
            if let Some(i) = identity
                && same_database(&i.database, &settings.database.to_string())
            {
                daemon.in_force = i.configuration;
                return Some(daemon);
            }
        }
        None
    }

    fn on_socket(path: &Path) -> reqwest::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().unix_socket(path).build()?,
            base: "http://hourglass".to_string(),
            token: None,
            in_force: None,
        })
    }

    async fn probe<T: DeserializeOwned>(&self) -> Option<T> {
        let request = self.request(reqwest::Method::GET, "/v1/status");
        let response = request.timeout(PROBE_TIMEOUT).send().await.ok()?;
        response.error_for_status().ok()?.json().await.ok()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// `GET path` as JSON.
    pub(super) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .request(reqwest::Method::GET, path)
            .timeout(ACTION_TIMEOUT)
            .send()
            .await
            .context("the daemon's API did not answer")?;
        answer(response).await
    }

    /// `POST path` with a JSON body; the answer as JSON, or the daemon's error and status.
    pub(super) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, Refused> {
        let response = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .timeout(ACTION_TIMEOUT)
            .send()
            .await
            .map_err(|e| Refused {
                status: 0,
                message: format!("the daemon's API did not answer: {e}"),
            })?;
        let status = response.status();
        if status.is_success() {
            return response.json().await.map_err(|e| Refused {
                status: 0,
                message: format!("unreadable answer from the daemon: {e}"),
            });
        }
        Err(Refused {
            status: status.as_u16(),
            message: error_text(response).await,
        })
    }

    /// `GET path` as a stream of server-sent events.
    pub(super) async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .context("the daemon's API did not answer")?;
        if !response.status().is_success() {
            anyhow::bail!("{}", error_text(response).await);
        }
        Ok(response)
    }
}

/// An action the daemon refused (`status` 0: it did not answer).
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) status: u16,
    pub(super) message: String,
}

async fn answer<T: DeserializeOwned>(response: reqwest::Response) -> anyhow::Result<T> {
    if !response.status().is_success() {
        anyhow::bail!("{}", error_text(response).await);
    }
    Ok(response.json().await?)
}

async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Option<serde_json::Value> = response.json().await.ok();
    body.and_then(|b| b.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| format!("the daemon answered {status}"))
}

/// Whether two names of a history database are the same one (SQLite paths compared once
/// resolved: the daemon and the CLI may have been started from different folders).
fn same_database(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
