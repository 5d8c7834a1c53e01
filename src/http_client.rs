//! What every HTTP user in the daemon shares: the process's rustls crypto provider, the
//! reqwest clients (built on first use), and how errors and URLs are shown (cause chains,
//! URLs without their secrets). Used by HTTP jobs, webhooks and uploads.

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

/// The URL without its password or query (which may carry tokens).
pub fn redacted(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    if u.query().is_some() {
        u.set_query(Some("…"));
    }
    u.to_string()
}
