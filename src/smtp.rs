//! SMTP servers (`[smtp.<name>]`): one lettre async transport each (rustls, pooled), a cap on
//! concurrent sends (lettre's pool only caps idle connections), and a send timeout around every
//! message (lettre's own timeout covers only the connection).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Semaphore;

use crate::secret::Secret;

use crate::problem::{Located, RawSecret, secret};
use serde::Deserialize;
use std::path::Path;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required), usually port 587.
    Starttls,
    /// TLS from the first byte, usually port 465.
    Tls,
    /// No encryption (loopback relays only).
    None,
}

/// A validated `[smtp.<name>]` block.
#[derive(Debug, Clone, PartialEq)]
pub struct SmtpServer {
    /// Its name in the config.
    pub name: String,
    /// Host name (also the TLS name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: SmtpTls,
    /// Login, if the server wants one.
    pub username: Option<String>,
    /// Password (from an environment variable or a file).
    pub password: Option<Secret>,
    /// Limit on connecting.
    pub connect_timeout: Duration,
    /// Limit on one whole send.
    pub send_timeout: Duration,
    /// Extra trusted CA certificate (PEM), for private servers.
    pub ca_pem: Option<Vec<u8>>,
    /// Most sends in progress to this server at once (also the pool size).
    pub max_connections: u32,
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No such server in the config.
    #[error("no SMTP server named {0:?}")]
    UnknownServer(String),
    /// TLS or transport set-up failed.
    #[error("SMTP server {server:?}: {message}")]
    Setup {
        /// Server name.
        server: String,
        /// What failed.
        message: String,
    },
    /// The whole send took longer than `send_timeout`.
    #[error("SMTP server {server:?}: no answer within {timeout:?} (send_timeout)")]
    Timeout {
        /// Server name.
        server: String,
        /// The limit.
        timeout: Duration,
    },
    /// The server refused, or the connection failed.
    #[error("SMTP server {server:?}: {source}")]
    Smtp {
        /// Server name.
        server: String,
        /// lettre's error (carries the server's reply).
        source: lettre::transport::smtp::Error,
    },
}

impl SendError {
    /// Whether a retry may succeed (4xx, timeouts, connection trouble; not 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            SendError::UnknownServer(_) | SendError::Setup { .. } => false,
            SendError::Timeout { .. } => true,
            SendError::Smtp { source, .. } => !source.is_permanent(),
        }
    }
}

struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    slots: Semaphore,
    send_timeout: Duration,
}

/// All configured SMTP servers, ready to send.
#[derive(Clone, Default)]
pub struct Mailers {
    by_name: Arc<BTreeMap<String, Arc<Mailer>>>,
}

impl std::fmt::Debug for Mailers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

impl Mailers {
    /// Builds a transport per server. Nothing connects until the first send.
    pub fn new<'a>(servers: impl IntoIterator<Item = &'a SmtpServer>) -> Result<Self, SendError> {
        let mut by_name = BTreeMap::new();
        for s in servers {
            by_name.insert(s.name.clone(), Arc::new(build(s)?));
        }
        Ok(Self {
            by_name: Arc::new(by_name),
        })
    }

    /// Sends `message`, waiting for a free connection slot; bounded by the server's
    /// `send_timeout` (slot wait included).
    pub async fn send(&self, server: &str, message: Message) -> Result<(), SendError> {
        let mailer = self
            .by_name
            .get(server)
            .ok_or_else(|| SendError::UnknownServer(server.to_string()))?;
        let work = async {
            let _slot = mailer.slots.acquire().await;
            mailer.transport.send(message).await
        };
        match tokio::time::timeout(mailer.send_timeout, work).await {
            Err(_) => Err(SendError::Timeout {
                server: server.to_string(),
                timeout: mailer.send_timeout,
            }),
            Ok(Err(source)) => Err(SendError::Smtp {
                server: server.to_string(),
                source,
            }),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

fn build(s: &SmtpServer) -> Result<Mailer, SendError> {
    let setup = |message: String| SendError::Setup {
        server: s.name.clone(),
        message,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
        .port(s.port)
        .timeout(Some(s.connect_timeout))
        .pool_config(PoolConfig::new().max_size(s.max_connections.max(1)));
    if s.tls != SmtpTls::None {
        let mut params = TlsParameters::builder(s.host.clone());
        if let Some(pem) = &s.ca_pem {
            let cert = Certificate::from_pem(pem).map_err(|e| setup(format!("ca_file: {e}")))?;
            params = params.add_root_certificate(cert);
        }
        let params = params
            .build_rustls()
            .map_err(|e| setup(format!("TLS set-up: {e}")))?;
        builder = builder.tls(match s.tls {
            SmtpTls::Tls => Tls::Wrapper(params),
            _ => Tls::Required(params),
        });
    }
    if let (Some(user), Some(pass)) = (&s.username, &s.password) {
        builder = builder.credentials(Credentials::new(user.clone(), pass.expose().to_string()));
    }
    Ok(Mailer {
        transport: builder.build(),
        slots: Semaphore::new(s.max_connections.max(1) as usize),
        send_timeout: s.send_timeout,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSmtp {
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    pub(crate) tls: Option<SmtpTls>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<RawSecret>,
    pub(crate) connect_timeout: Option<String>,
    pub(crate) send_timeout: Option<String>,
    pub(crate) ca_file: Option<String>,
    pub(crate) max_connections: Option<u32>,
    pub(crate) allow_plaintext_auth: Option<bool>,
}

pub(crate) fn smtp_name(
    given: Option<&str>,
    field: &str,
    servers: &BTreeMap<String, SmtpServer>,
    at: &mut Located<'_>,
) -> Option<String> {
    match given {
        Some(n) if servers.contains_key(n) => Some(n.to_string()),
        Some(n) => {
            at.push(
                Some(field),
                format!("no [smtp.{n}] server in the main file"),
            );
            None
        }
        None if servers.len() == 1 => servers.keys().next().cloned(),
        None => {
            at.push(
                Some(field),
                if servers.is_empty() {
                    "no SMTP server is configured: add an [smtp.<name>] block to the main file"
                } else {
                    "several SMTP servers are configured: name one with `smtp = \"<name>\"`"
                },
            );
            None
        }
    }
}

pub(crate) fn smtp_server(
    name: &str,
    r: RawSmtp,
    base: &Path,
    at: &mut Located<'_>,
) -> Option<SmtpServer> {
    let f = |k: &str| format!("smtp.{name}.{k}");
    let tls = r.tls.unwrap_or(SmtpTls::Starttls);
    let password = r
        .password
        .as_ref()
        .and_then(|p| secret(p, &f("password"), at));
    if r.password.is_some() && r.username.is_none() {
        at.push(Some(&f("username")), "a password needs a username");
    }
    if tls == SmtpTls::None && r.password.is_some() && r.allow_plaintext_auth != Some(true) {
        at.push(
            Some(&f("tls")),
            "\"none\" would send the password in clear; use \"starttls\" or \"tls\", or set allow_plaintext_auth = true (a relay on loopback)",
        );
    }
    let ca_pem = r.ca_file.as_deref().and_then(|c| {
        let path = base.join(c);
        match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) => {
                at.push(
                    Some(&f("ca_file")),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    });
    Some(SmtpServer {
        name: name.to_string(),
        port: r.port.unwrap_or(match tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }),
        host: r.host,
        tls,
        username: r.username,
        password,
        connect_timeout: at.duration(
            &f("connect_timeout"),
            r.connect_timeout.as_deref(),
            Duration::from_secs(10),
        ),
        send_timeout: at.duration(
            &f("send_timeout"),
            r.send_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        ca_pem,
        max_connections: r.max_connections.unwrap_or(4),
    })
}
