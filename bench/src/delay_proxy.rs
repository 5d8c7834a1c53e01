//! A TCP proxy on loopback that delays every byte by a fixed time each way, so that the cluster
//! rows can put the database 1 ms or 5 ms away (a network's round trip) without slowing its
//! throughput: what is read is sent on at its arrival time plus the delay, in order.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running proxy: connections to [`DelayProxy::addr`] reach `target`, `delay` later each way.
pub(crate) struct DelayProxy {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DelayProxy {
    /// Starts a proxy to `target` (`host:port`) adding `delay` each way.
    pub(crate) fn start(target: &str, delay: Duration) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let target = target.to_string();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&target).await {
                        relay(client, server, delay).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            runtime: Some(runtime),
        })
    }

    /// `url` (a `postgres://user@host:port/db` URL) pointed at this proxy instead.
    pub(crate) fn url_through(&self, url: &str) -> Result<String> {
        let (scheme_user, rest) = url.split_once('@').context("no @ in the database URL")?;
        let (_, db) = rest.split_once('/').context("no database in the URL")?;
        Ok(format!("{scheme_user}@{}/{db}", self.addr))
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL.
pub(crate) fn host_port(url: &str) -> Result<String> {
    let (_, rest) = url.split_once('@').context("no @ in the database URL")?;
    let (host, _) = rest.split_once('/').context("no database in the URL")?;
    Ok(host.to_string())
}

async fn relay(client: TcpStream, server: TcpStream, delay: Duration) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(one_way(cr, sw, delay), one_way(sr, cw, delay));
}

/// Copies `from` to `to`, each chunk sent `delay` after it was read.
async fn one_way(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let sender = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    tokio::join!(sender, reader);
}
