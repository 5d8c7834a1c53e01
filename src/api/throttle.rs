//! Slowing guesses: each client address (an IPv6 client by its /64) may get the token wrong
//! [`BURST`] times, then once per [`REFILL`]; past that its requests are refused (429) without
//! the token being looked at, and one WARN line names it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Wrong tokens an address may give at once.
pub const BURST: u32 = 10;
/// One more wrong token is allowed after each such interval.
pub const REFILL: Duration = Duration::from_secs(6);
/// Addresses remembered at most (the least recently failing are forgotten first).
const MOST: usize = 10_000;

/// Wrong tokens by client address.
#[derive(Debug, Default)]
pub struct Throttle {
    by_client: Mutex<HashMap<IpAddr, Budget>>,
}

/// What an address has left: `left` guesses as of `at`.
#[derive(Debug, Clone, Copy)]
struct Budget {
    left: f64,
    at: Instant,
    warned: bool,
}

impl Throttle {
    /// How long `client` must wait before it may try a token again (`None`: it may now).
    pub fn wait(&self, client: IpAddr) -> Option<Duration> {
        let map = self
            .by_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let b = refilled(*map.get(&key(client))?, Instant::now());
        (b.left < 1.0).then(|| REFILL.mul_f64(1.0 - b.left))
    }

    /// Counts a wrong token from `client`; whether this one used up its guesses (so that the
    /// caller says so, once).
    pub fn failed(&self, client: IpAddr) -> bool {
        let now = Instant::now();
        let mut map = self
            .by_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MOST {
            map.retain(|_, b| refilled(*b, now).left < f64::from(BURST));
            if map.len() >= MOST
                && let Some(k) = map.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k)
            {
                map.remove(&k);
            }
        }
        let fresh = Budget {
            left: f64::from(BURST),
            at: now,
            warned: false,
        };
        let b = map.entry(key(client)).or_insert(fresh);
        *b = refilled(*b, now);
        b.left = (b.left - 1.0).max(0.0);
        if b.left < 1.0 && !b.warned {
            b.warned = true;
            return true;
        }
        if b.left >= 1.0 {
            b.warned = false;
        }
        false
    }
}

fn refilled(b: Budget, now: Instant) -> Budget {
    let gained = now.duration_since(b.at).as_secs_f64() / REFILL.as_secs_f64();
    Budget {
        left: (b.left + gained).min(f64::from(BURST)),
        at: now,
        warned: b.warned,
    }
}

/// An IPv4 address, or an IPv6 address's /64 (one host's share).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn guesses_past_the_burst_wait_and_other_addresses_do_not() {
        let t = Throttle::default();
        let a: IpAddr = "127.0.0.9".parse().unwrap();
        let b: IpAddr = "127.0.0.10".parse().unwrap();
        let mut warned = 0;
        for _ in 0..BURST {
            assert!(t.wait(a).is_none());
            warned += u32::from(t.failed(a));
        }
        assert_eq!(warned, 1, "one warning when the guesses run out");
        let w = t.wait(a).unwrap();
        assert!(w > Duration::ZERO && w <= REFILL);
        assert!(t.wait(b).is_none());
        tokio::time::advance(REFILL).await;
        assert!(t.wait(a).is_none(), "one more guess after the refill");
        assert!(!t.failed(a));
        assert!(t.wait(a).is_some());
    }

    #[test]
    fn an_ipv6_client_is_known_by_its_64() {
        let t = Throttle::default();
        for i in 0..BURST {
            t.failed(format!("2001:db8::{i:x}").parse().unwrap());
        }
        assert!(t.wait("2001:db8::ffff".parse().unwrap()).is_some());
        assert!(t.wait("2001:db8:0:1::1".parse().unwrap()).is_none());
    }
}
