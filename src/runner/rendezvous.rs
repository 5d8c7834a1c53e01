//! Which node a firing prefers: rendezvous hashing of `(job, scheduled_for)` over the live
//! nodes that may run it (`run_on`), as the heartbeat last saw them. The preferred node claims
//! at once; the others only what is still unclaimed [`HEAD_START`] later, so that nodes do
//! not race for every firing, shares stay even, and a dead or stalled preferred node costs
//! that delay, not a miss. Exactly once never rests on this: the claim's unique key decides.

use std::sync::RwLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// How long the other nodes let the preferred node claim a firing first.
pub const HEAD_START: Duration = Duration::from_millis(250);

/// The other live nodes, with their tags.
#[derive(Debug, Default)]
pub struct Members {
    others: RwLock<Vec<(String, Vec<String>)>>,
}

impl Members {
    /// What the last heartbeat saw.
    pub fn set_others(&self, others: Vec<(String, Vec<String>)>) {
        if let Ok(mut o) = self.others.write() {
            *o = others;
        }
    }

    /// Whether `me` is the preferred node of the firing of `job` for `at` among the live
    /// nodes whose tags include `run_on` (`me` has them).
    pub fn prefers(&self, me: &str, job: &str, at: DateTime<Utc>, run_on: &[String]) -> bool {
        let Ok(others) = self.others.read() else {
            return true;
        };
        let candidates = others
            .iter()
            .filter(|(_, tags)| run_on.iter().all(|t| tags.contains(t)))
            .map(|(node, _)| node.as_str());
        best(candidates.chain([me]), job, at) == Some(me)
    }
}

/// The preferred node of the firing of `job` for `at` among `nodes` (all of which may run it).
pub fn preferred_node<'a>(nodes: &[&'a str], job: &str, at: DateTime<Utc>) -> Option<&'a str> {
    best(nodes.iter().copied(), job, at)
}

/// The node of highest score for the firing (ties, impossible in practice, go to the name).
fn best<'a>(nodes: impl Iterator<Item = &'a str>, job: &str, at: DateTime<Utc>) -> Option<&'a str> {
    nodes.max_by_key(|n| (score(n, job, at), *n))
}

/// The node's score for a firing: the same on every node and version (SHA-256).
fn score(node: &str, job: &str, at: DateTime<Utc>) -> u64 {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update([0]);
    h.update(job.as_bytes());
    h.update([0]);
    h.update(at.timestamp_millis().to_be_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn every_firing_has_one_preferred_node_and_shares_are_even() {
        let names = ["n1", "n2", "n3", "n4", "n5"];
        let views: Vec<Members> = names
            .iter()
            .map(|me| {
                let m = Members::default();
                m.set_others(
                    names
                        .iter()
                        .filter(|n| *n != me)
                        .map(|n| ((*n).to_string(), vec![]))
                        .collect(),
                );
                m
            })
            .collect();
        let mut shares = [0usize; 5];
        for s in 0..5_000 {
            let job = format!("j{}", s % 50);
            let who: Vec<usize> = (0..5)
                .filter(|&i| views[i].prefers(names[i], &job, at(s / 50), &[]))
                .collect();
            assert_eq!(who.len(), 1, "{job} {s}: {who:?}");
            assert_eq!(
                preferred_node(&names, &job, at(s / 50)),
                Some(names[who[0]])
            );
            shares[who[0]] += 1;
        }
        // 1,000 each when even; 10 % is more than 6 standard deviations.
        assert!(
            shares.iter().all(|&n| (900..=1100).contains(&n)),
            "{shares:?}"
        );
    }

    #[test]
    fn nodes_without_the_tags_are_not_candidates() {
        let m = Members::default();
        // Whatever the scores, a node without the tag never outranks this one.
        m.set_others(vec![("other".into(), vec!["cpu".into()])]);
        let gpu = ["gpu".to_string()];
        assert!((0..100).all(|s| m.prefers("me", "train", at(s), &gpu)));
        assert!(!(0..100).all(|s| m.prefers("me", "train", at(s), &[])));
    }
}
