//! Serving the API's connections, bounded: each listener holds at most its cap of open
//! connections and all of them together at most the cap in all (which the daemon's
//! descriptor limit also bounds, keeping a reserve for runs); a connection has
//! `header_timeout` to send each request head (new or kept alive). A connection that comes
//! in over a cap gets a short while to send a whole request head, in a line of its own
//! ([`PENDING`] long); when it has, the open connection that has waited longest for a request
//! (half-open or idle) is closed to make room for it. So slow or half-open clients can
//! neither exhaust the daemon's descriptors nor keep a real request (`/healthz`) out.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service as _;

use super::Peer;
use super::stream::{Prefixed, Stream, read_head};
use crate::config::ConnectionLimits;

/// Connections over a listener's cap that may wait at once for their request head (the
/// oldest goes when a new one comes).
pub(super) const PENDING: usize = 64;
/// Connections closed to make room whose descriptors may not be given back yet (their tasks
/// close them a moment later); past that, the listeners wait.
const CLOSING: usize = 64;
/// Descriptors the API may hold beyond its open connections: both listeners' lines and those
/// being closed to make room.
pub const BEYOND_CONNECTIONS: usize = 2 * PENDING + CLOSING;
/// How long a connection over the cap has to send a whole request head.
const PENDING_FOR: Duration = Duration::from_millis(500);

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Unix,
    Tcp,
}

/// One open connection: how many of its requests are being answered, since when it waits
/// (for its first request head, or the next), whether it came in with a whole head not yet
/// answered, and how to close it.
#[derive(Debug)]
struct Open {
    side: Side,
    serving: AtomicUsize,
    /// Milliseconds from the registry's start to when it last began waiting.
    waiting_since: AtomicU64,
    ready: AtomicBool,
    close: CancellationToken,
}

/// A connection over the cap, waiting for its head.
#[derive(Debug)]
struct Waiting {
    side: Side,
    id: u64,
    close: CancellationToken,
}

/// The open connections of every listener, oldest first, and those waiting to come in.
#[derive(Debug)]
pub(super) struct Connections {
    limits: ConnectionLimits,
    start: Instant,
    state: Mutex<Book>,
    /// Accepted connections whose descriptor is not closed yet (open, in the line, or being
    /// closed), and a wake-up for the listeners when one is.
    descriptors: AtomicUsize,
    closed_one: tokio::sync::Notify,
}

/// An accepted connection's share of the descriptors: given back when dropped.
struct Descriptor(Arc<Connections>);

impl Drop for Descriptor {
    fn drop(&mut self) {
        self.0.descriptors.fetch_sub(1, Ordering::AcqRel);
        self.0.closed_one.notify_waiters();
    }
}

/// What the registry keeps under its lock.
#[derive(Debug, Default)]
struct Book {
    open: VecDeque<Arc<Open>>,
    pending: VecDeque<Waiting>,
    next_id: u64,
    /// Connections closed for room since the last warning, and when it was.
    pressed: u64,
    warned: Option<Instant>,
}

/// How often, at most, the daemon warns that clients are being turned away.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What becomes of a new connection.
#[derive(Debug)]
enum Arrival {
    /// Served now.
    Open(Arc<Open>),
    /// Over the cap: it must send its head first (see [`Connections::admit_ready`]).
    Pending(u64, CancellationToken),
    /// Over the cap with every connection answering: closed.
    Refused,
}

impl Connections {
    pub(super) fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            start: Instant::now(),
            state: Mutex::new(Book::default()),
            descriptors: AtomicUsize::new(0),
            closed_one: tokio::sync::Notify::new(),
        })
    }

    /// Waits until one more connection may be accepted without holding more descriptors
    /// than the cap in all and [`BEYOND_CONNECTIONS`]; its share.
    async fn descriptor(self: &Arc<Self>) -> Descriptor {
        let most = self.limits.in_all + BEYOND_CONNECTIONS;
        loop {
            let closed = self.closed_one.notified();
            let held = self.descriptors.load(Ordering::Acquire);
            if held < most
                && self
                    .descriptors
                    .compare_exchange(held, held + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Descriptor(Arc::clone(self));
            }
            if held >= most {
                closed.await;
            }
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        let mut book = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        book.open.retain(|c| !c.close.is_cancelled());
        book.pending.retain(|w| !w.close.is_cancelled());
        book
    }

    /// Takes a new connection on `side` in (`whole`: its request head came whole with it), or
    /// puts it in the line of those over the cap.
    fn arrive(&self, side: Side, whole: bool) -> Arrival {
        let mut book = self.book();
        if self.full(&book, side).is_none() {
            return Arrival::Open(self.push(&mut book, side, false));
        }
        if whole {
            return self
                .take_place(&mut book, side)
                .map_or(Arrival::Refused, Arrival::Open);
        }
        let mine = book.pending.iter().filter(|w| w.side == side).count();
        if mine >= PENDING
            && let Some(at) = book.pending.iter().position(|w| w.side == side)
            && let Some(oldest) = book.pending.remove(at)
        {
            oldest.close.cancel();
        }
        book.next_id += 1;
        let id = book.next_id;
        let close = CancellationToken::new();
        book.pending.push_back(Waiting {
            side,
            id,
            close: close.clone(),
        });
        Arrival::Pending(id, close)
    }

    /// Lets pending connection `id`, whose head came whole, in (see
    /// [`Connections::take_place`]).
    fn admit_ready(&self, side: Side, id: u64) -> Option<Arc<Open>> {
        let mut book = self.book();
        let at = book.pending.iter().position(|w| w.id == id)?;
        book.pending.remove(at);
        self.take_place(&mut book, side)
    }

    /// Takes a connection whose head came whole in: if a cap is reached, the connection that
    /// has waited longest for a request (and did not come in the same way) is closed for it.
    /// `None` when every connection is answering.
    fn take_place(&self, book: &mut Book, side: Side) -> Option<Arc<Open>> {
        if let Some(scopes) = self.full(book, side) {
            let victim = scopes
                .into_iter()
                .find_map(|scope| longest_waiting(book, scope))?;
            if let Some(v) = book.open.remove(victim) {
                v.close.cancel();
            }
            book.pressed += 1;
            self.warn_pressed(book, side);
        }
        Some(self.push(book, side, true))
    }

    /// Drops pending connection `id` from the line (its head did not come).
    fn forget(&self, id: u64) {
        self.book().pending.retain(|w| w.id != id);
    }

    /// `None` when `side` has room; else where room may be taken, in order.
    fn full(&self, book: &Book, side: Side) -> Option<[Option<Side>; 2]> {
        let mine = book.open.iter().filter(|c| c.side == side).count();
        if mine >= self.limits.per_listener {
            Some([Some(side), Some(side)])
        } else if book.open.len() >= self.limits.in_all {
            // Room is taken from the listener holding the most first, so that a flood on
            // one listener does not close the other's connections.
            let busiest = if mine * 2 >= book.open.len() {
                side
            } else {
                other(side)
            };
            Some([Some(busiest), None])
        } else {
            None
        }
    }

    fn push(&self, book: &mut Book, side: Side, ready: bool) -> Arc<Open> {
        let open = Arc::new(Open {
            side,
            serving: AtomicUsize::new(0),
            waiting_since: AtomicU64::new(self.now_ms()),
            ready: AtomicBool::new(ready),
            close: CancellationToken::new(),
        });
        book.open.push_back(Arc::clone(&open));
        open
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
            closed = book.pressed,
            "API connections at their cap: connections waiting for a request are closed to make room"
        );
        book.pressed = 0;
        book.warned = Some(now);
    }

    /// Connections open now.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.book().open.len()
    }
}

/// The index of the open connection (of `scope`, or any) that has waited longest for a
/// request, among those not answering one and not just let in with a whole head.
fn longest_waiting(book: &Book, scope: Option<Side>) -> Option<usize> {
    book.open
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            scope.is_none_or(|s| c.side == s)
                && c.serving.load(Ordering::Acquire) == 0
                && !c.ready.load(Ordering::Acquire)
        })
        .min_by_key(|(_, c)| c.waiting_since.load(Ordering::Acquire))
        .map(|(i, _)| i)
}

fn side_of(peer: &Peer) -> Side {
    match peer {
        Peer::Unix(_) => Side::Unix,
        Peer::Tcp(_) => Side::Tcp,
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Unix => Side::Tcp,
        Side::Tcp => Side::Unix,
    }
}

/// Counts a request as being answered until its answer's body is dropped (written or not);
/// then the connection waits again, from now.
struct Serving {
    open: Arc<Open>,
    connections: Arc<Connections>,
}

impl Serving {
    fn new(open: &Arc<Open>, connections: &Arc<Connections>) -> Self {
        open.serving.fetch_add(1, Ordering::AcqRel);
        open.ready.store(false, Ordering::Release);
        Self {
            open: Arc::clone(open),
            connections: Arc::clone(connections),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.open
            .waiting_since
            .store(self.connections.now_ms(), Ordering::Release);
        self.open.serving.fetch_sub(1, Ordering::AcqRel);
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
            a = async {
                let share = connections.descriptor().await;
                accept(&listener).await.map(|a| (a, share))
            } => a,
        };
        match accepted {
            Ok(((stream, peer), share)) => {
                // What the client sent with its connection: a whole request head lets it in
                // at once even over the cap.
                let mut head = Vec::new();
                let Some(whole) = stream.head_so_far(&mut head) else {
                    continue;
                };
                // Taken in (or put in the line, where it may take the oldest's place) here,
                // so that the accepting never waits for a line that is full.
                let arrival = connections.arrive(side_of(&peer), whole);
                let serve = Serve {
                    connections: Arc::clone(&connections),
                    app: app.clone(),
                    closing: closing.clone(),
                };
                tracker.spawn(serve.connection(stream, peer, (arrival, head), share));
            }
            Err(e) => {
                // Out of descriptors or memory: wait a moment rather than spin.
                if !failing {
                    tracing::warn!(error = %e, "the API cannot accept a connection");
                }
                failing = true;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        failing = false;
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

/// What serving one connection needs.
struct Serve {
    connections: Arc<Connections>,
    app: Router,
    closing: CancellationToken,
}

impl Serve {
    /// Serves one connection: at once when there is room, else once its head came whole.
    async fn connection(
        self,
        mut stream: Stream,
        peer: Peer,
        (arrival, mut head): (Arrival, Vec<u8>),
        _share: Descriptor,
    ) {
        let side = side_of(&peer);
        let open = match arrival {
            Arrival::Open(open) => open,
            Arrival::Refused => return,
            Arrival::Pending(id, close) => {
                let whole = tokio::select! {
                    h = tokio::time::timeout(PENDING_FOR, read_head(&mut stream, &mut head)) => h,
                    () = close.cancelled() => return,
                    () = self.closing.cancelled() => return,
                };
                if whole != Ok(true) {
                    self.connections.forget(id);
                    return;
                };
                let Some(open) = self.connections.admit_ready(side, id) else {
                    return;
                };
                open
            }
        };
        let service = hyper::service::service_fn({
            let (open, connections, app) = (
                Arc::clone(&open),
                Arc::clone(&self.connections),
                self.app.clone(),
            );
            move |request| {
                answer(
                    app.clone(),
                    request,
                    peer,
                    Serving::new(&open, &connections),
                )
            }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.connections.limits.header_timeout);
        let io = Prefixed {
            prefix: head,
            at: 0,
            inner: stream,
        };
        let conn = http.serve_connection(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            () = open.close.cancelled() => {}
            () = self.closing.cancelled() => {}
        }
        open.close.cancel();
    }
}

async fn accept(listener: &Listener) -> std::io::Result<(Stream, Peer)> {
    match listener {
        Listener::Unix(l) => {
            let (stream, _) = l.accept().await?;
            let uid = stream.peer_cred().ok().map(|c| c.uid());
            Ok((Stream::Unix(stream), Peer::Unix(uid)))
        }
        Listener::Tcp(l) => {
            let (stream, addr) = l.accept().await?;
            // Answers are small and often the last write of a request: no Nagle delay.
            let _ = stream.set_nodelay(true);
            Ok((Stream::Tcp(stream), Peer::Tcp(addr)))
        }
    }
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

    fn open(a: Arrival) -> Arc<Open> {
        match a {
            Arrival::Open(o) => o,
            Arrival::Pending(..) | Arrival::Refused => panic!("not open"),
        }
    }

    fn pending(a: Arrival) -> (u64, CancellationToken) {
        match a {
            Arrival::Pending(id, close) => (id, close),
            Arrival::Open(_) | Arrival::Refused => panic!("not pending"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_cap_a_whole_head_takes_the_place_of_the_longest_waiting() {
        let c = Connections::new(limits(3, 10));
        let first = open(c.arrive(Side::Tcp, false));
        tokio::time::advance(Duration::from_millis(10)).await;
        let second = open(c.arrive(Side::Tcp, false));
        let third = open(c.arrive(Side::Tcp, false));
        let _busy = Serving::new(&first, &c);
        // Over the cap: nothing is closed until the newcomer's head came whole.
        let (id, _) = pending(c.arrive(Side::Tcp, false));
        assert_eq!(c.count(), 3);
        let fourth = c.admit_ready(Side::Tcp, id).unwrap();
        assert!(!first.close.is_cancelled(), "a serving connection stays");
        assert!(second.close.is_cancelled(), "the longest waiting one goes");
        assert!(!third.close.is_cancelled());
        // A second whole head does not take the first's place before it was answered.
        let (id, _) = pending(c.arrive(Side::Tcp, false));
        c.admit_ready(Side::Tcp, id).unwrap();
        assert!(!fourth.close.is_cancelled());
        assert!(third.close.is_cancelled());
        assert_eq!(c.count(), 3);
    }

    #[test]
    fn when_every_connection_answers_a_whole_head_is_closed_and_the_line_is_bounded() {
        let c = Connections::new(limits(1, 10));
        let first = open(c.arrive(Side::Unix, false));
        let busy = Serving::new(&first, &c);
        let (id, _) = pending(c.arrive(Side::Unix, false));
        assert!(c.admit_ready(Side::Unix, id).is_none());
        assert!(!first.close.is_cancelled());
        drop(busy);
        let line: Vec<_> = (0..=PENDING)
            .map(|_| pending(c.arrive(Side::Unix, false)))
            .collect();
        assert!(line[0].1.is_cancelled(), "the oldest in the line goes");
        assert!(line[1..].iter().all(|(_, close)| !close.is_cancelled()));
        assert!(c.admit_ready(Side::Unix, line[0].0).is_none());
        let second = c.admit_ready(Side::Unix, line[1].0).unwrap();
        assert!(first.close.is_cancelled());
        // A head that came whole with its connection goes past the line, once the one let in
        // before it was answered.
        assert!(matches!(c.arrive(Side::Unix, true), Arrival::Refused));
        drop(Serving::new(&second, &c));
        let whole = open(c.arrive(Side::Unix, true));
        assert!(second.close.is_cancelled() && !whole.close.is_cancelled());
        assert_eq!(c.count(), 1);
    }

    #[test]
    fn the_cap_in_all_takes_room_from_the_busiest_listener() {
        let c = Connections::new(limits(3, 4));
        let unix = open(c.arrive(Side::Unix, false));
        let tcp: Vec<_> = (0..3).map(|_| open(c.arrive(Side::Tcp, false))).collect();
        // The socket's new connection is over the cap in all: a TCP one makes room.
        let (id, _) = pending(c.arrive(Side::Unix, false));
        let unix2 = c.admit_ready(Side::Unix, id).unwrap();
        assert!(tcp[0].close.is_cancelled());
        assert!(!unix.close.is_cancelled() && !unix2.close.is_cancelled());
        // A flood on TCP only ever replaces TCP connections: the socket's stay.
        for _ in 0..10 {
            let (id, _) = pending(c.arrive(Side::Tcp, false));
            let newer = c.admit_ready(Side::Tcp, id).unwrap();
            drop(Serving::new(&newer, &c));
        }
        assert!(!unix.close.is_cancelled() && !unix2.close.is_cancelled());
        assert_eq!(c.count(), 4);
    }
}
