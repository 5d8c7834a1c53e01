//! Serving the API's connections, bounded: each listener holds at most its cap of open
//! connections and all of them together at most the cap in all (which the daemon's
//! descriptor limit also bounds, keeping a reserve for runs); a connection has
//! `header_timeout` to send each request head (new or kept alive); when a cap is reached, the
//! oldest connection that is not in the middle of a request (half-open or idle) is closed to
//! make room, and only when every open connection is serving is a new one refused. So slow or
//! half-open clients can neither exhaust the daemon's descriptors nor lock out `/healthz`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service as _;

use super::Peer;
use crate::config::ConnectionLimits;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Unix,
    Tcp,
}

/// One open connection: how many of its requests are being answered, and how to close it.
#[derive(Debug)]
struct Open {
    side: Side,
    serving: AtomicUsize,
    close: CancellationToken,
}

/// The open connections of every listener, oldest first.
#[derive(Debug)]
pub(super) struct Connections {
    limits: ConnectionLimits,
    state: Mutex<Book>,
}

/// What the registry keeps under its lock.
#[derive(Debug, Default)]
struct Book {
    open: VecDeque<Arc<Open>>,
    /// Connections closed or refused for room since the last warning, and when it was.
    pressed: u64,
    warned: Option<Instant>,
}

/// How often, at most, the daemon warns that clients are being turned away.
const WARN_EVERY: Duration = Duration::from_secs(60);

impl Connections {
    pub(super) fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::new(Book::default()),
        })
    }

    /// Room for a new connection on `side`: the connection's entry, after closing the oldest
    /// waiting connection if a cap is reached; `None` when every connection is serving.
    fn admit(&self, side: Side) -> Option<Arc<Open>> {
        let mut book = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        book.open.retain(|c| !c.close.is_cancelled());
        let mine = book.open.iter().filter(|c| c.side == side).count();
        let room = if mine >= self.limits.per_listener {
            Some(evict_oldest(&mut book, Some(side)))
        } else if book.open.len() >= self.limits.in_all {
            // Room is taken from the listener holding the most, so that a flood on one
            // listener never closes the other's connections.
            let busiest = if mine * 2 >= book.open.len() { side } else { other(side) };
            Some(evict_oldest(&mut book, Some(busiest)) || evict_oldest(&mut book, None))
        } else {
            None
        };
        if let Some(made) = room {
            book.pressed += 1;
            self.warn_pressed(&mut book, side);
            if !made {
                return None;
            }
        }
        let open = Arc::new(Open {
            side,
            serving: AtomicUsize::new(0),
            close: CancellationToken::new(),
        });
        book.open.push_back(Arc::clone(&open));
        Some(open)
    }

    fn warn_pressed(&self, book: &mut Book, side: Side) {
        let now = Instant::now();
        if book.warned.is_some_and(|t| now < t + WARN_EVERY) {
            return;
        }
        tracing::warn!(
            listener = ?side,
            per_listener = self.limits.per_listener,
            in_all = self.limits.in_all,
            closed_or_refused = book.pressed,
            "API connections at their cap: waiting connections are closed to make room"
        );
        book.pressed = 0;
        book.warned = Some(now);
    }

    /// Connections open now.
    #[cfg(test)]
    fn count(&self) -> usize {
        let mut book = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        book.open.retain(|c| !c.close.is_cancelled());
        book.open.len()
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Unix => Side::Tcp,
        Side::Tcp => Side::Unix,
    }
}

/// Closes the oldest connection (of `side`, or of any) that is not answering a request.
/// Whether one was closed.
fn evict_oldest(book: &mut Book, side: Option<Side>) -> bool {
    let found = book.open.iter().position(|c| {
        side.is_none_or(|s| c.side == s) && c.serving.load(Ordering::Acquire) == 0
    });
    match found.and_then(|i| book.open.remove(i)) {
        Some(victim) => {
            victim.close.cancel();
            true
        }
        None => false,
    }
}

/// Counts a request as being answered until its answer's body is dropped (written or not).
struct Serving(Arc<Open>);

impl Serving {
    fn new(open: &Arc<Open>) -> Self {
        open.serving.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(open))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A listener of either kind.
#[derive(Debug)]
pub(super) enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Accepts connections on `listener` and serves `app` on each until `stop`; then lets the
/// connections finish their answers (1 s at most) and returns.
pub(super) async fn serve(
    listener: Listener,
    app: Router,
    connections: Arc<Connections>,
    stop: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let closing = CancellationToken::new();
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            a = accept(&listener) => a,
        };
        match accepted {
            Ok(Accepted::Unix(stream, peer)) => {
                spawn(&tracker, &connections, stream, peer, &app, &closing);
                failing = false;
            }
            Ok(Accepted::Tcp(stream, peer)) => {
                spawn(&tracker, &connections, stream, peer, &app, &closing);
                failing = false;
            }
            Err(e) => {
                // Out of descriptors or memory: wait a moment rather than spin.
                if !failing {
                    tracing::warn!(error = %e, "the API cannot accept a connection");
                }
                failing = true;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(1), tracker.wait())
        .await
        .is_err()
    {
        closing.cancel();
        tracker.wait().await;
    }
}

enum Accepted {
    Unix(tokio::net::UnixStream, Peer),
    Tcp(tokio::net::TcpStream, Peer),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Unix(l) => {
            let (stream, _) = l.accept().await?;
            let uid = stream.peer_cred().ok().map(|c| c.uid());
            Ok(Accepted::Unix(stream, Peer::Unix(uid)))
        }
        Listener::Tcp(l) => {
            let (stream, addr) = l.accept().await?;
            // Answers are small and often the last write of a request: no Nagle delay.
            let _ = stream.set_nodelay(true);
            Ok(Accepted::Tcp(stream, Peer::Tcp(addr)))
        }
    }
}

/// Serves one connection in a task of `tracker`, if there is room for it.
fn spawn<S>(
    tracker: &TaskTracker,
    connections: &Arc<Connections>,
    stream: S,
    peer: Peer,
    app: &Router,
    closing: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let side = match peer {
        Peer::Unix(_) => Side::Unix,
        Peer::Tcp(_) => Side::Tcp,
    };
    // No room: the stream is dropped, closing the connection at once.
    let Some(open) = connections.admit(side) else {
        return;
    };
    let app = app.clone();
    let closing = closing.clone();
    let header_timeout = connections.limits.header_timeout;
    tracker.spawn(async move {
        let service = hyper::service::service_fn({
            let open = Arc::clone(&open);
            move |request| answer(app.clone(), request, peer, Serving::new(&open))
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            () = open.close.cancelled() => {}
            () = closing.cancelled() => {}
        }
        open.close.cancel();
    });
}

/// Answers one request with `app`, the answer's body holding `serving` until it is dropped.
async fn answer(
    mut app: Router,
    mut request: hyper::Request<Incoming>,
    peer: Peer,
    serving: Serving,
) -> Result<axum::response::Response, Infallible> {
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = app.call(request.map(Body::new)).await?;
    Ok(response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            let _held = &serving;
            frame
        }))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_listener: usize, in_all: usize) -> ConnectionLimits {
        ConnectionLimits {
            per_listener,
            in_all,
            header_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_full_listener_closes_its_oldest_waiting_connection() {
        let c = Connections::new(limits(2, 10));
        let first = c.admit(Side::Tcp).unwrap();
        let second = c.admit(Side::Tcp).unwrap();
        let _busy = Serving::new(&first);
        let third = c.admit(Side::Tcp).unwrap();
        assert!(!first.close.is_cancelled(), "a serving connection stays");
        assert!(second.close.is_cancelled(), "the oldest waiting one goes");
        assert!(!third.close.is_cancelled());
        assert_eq!(c.count(), 2);
    }

    #[test]
    fn when_every_connection_serves_a_new_one_is_refused() {
        let c = Connections::new(limits(1, 10));
        let first = c.admit(Side::Unix).unwrap();
        let busy = Serving::new(&first);
        assert!(c.admit(Side::Unix).is_none());
        assert!(!first.close.is_cancelled());
        drop(busy);
        assert!(c.admit(Side::Unix).is_some());
        assert!(first.close.is_cancelled());
    }

    #[test]
    fn the_cap_in_all_takes_room_from_the_busiest_listener() {
        let c = Connections::new(limits(3, 4));
        let unix = c.admit(Side::Unix).unwrap();
        let tcp: Vec<_> = (0..3).map(|_| c.admit(Side::Tcp).unwrap()).collect();
        // The socket's new connection is over the cap in all: a TCP one makes room.
        let unix2 = c.admit(Side::Unix).unwrap();
        assert!(tcp[0].close.is_cancelled());
        assert!(!unix.close.is_cancelled() && !unix2.close.is_cancelled());
        // A flood on TCP only ever replaces TCP connections: the socket's stay.
        for _ in 0..10 {
            c.admit(Side::Tcp).unwrap();
        }
        assert!(!unix.close.is_cancelled() && !unix2.close.is_cancelled());
        assert_eq!(c.count(), 4);
    }
}
