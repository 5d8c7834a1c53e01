//! Claims in batches: the firings a node asks to claim while a claim statement is in flight
//! go together in the next one, so that a burst costs a statement per round trip to the
//! database, not one per firing (200 every-second jobs: one statement a second, not 200
//! competing for the pool).

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::store::{Claim, Cluster, StoreError};

/// Most firings claimed in one statement.
const MAX_BATCH: usize = 2_000;

/// What a claim answers: the claim, or why the database did not give it.
pub(super) type Answer = Result<Claim, Arc<StoreError>>;

/// A firing to claim, and who waits for the answer.
#[derive(Debug)]
struct Ask {
    job: String,
    at: DateTime<Utc>,
    /// The job's turn is taken with the claim.
    turn: bool,
    reply: oneshot::Sender<Answer>,
}

/// The node's claim batches: started at the first claim, on the cluster and node it names.
#[derive(Debug, Default)]
pub(super) struct ClaimBatches {
    asks: OnceLock<mpsc::UnboundedSender<Ask>>,
}

impl ClaimBatches {
    /// Claims the firing of `job` for `at` for `node` (and the job's turn, when `turn`), in
    /// the next batch.
    pub(super) async fn claim(
        &self,
        cluster: &Cluster,
        node: &str,
        (job, at, turn): (&str, DateTime<Utc>, bool),
    ) -> Answer {
        let asks = self.asks.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            // Not on the firings' tracker: it serves claims until the context goes.
            tokio::spawn(claim_batches(cluster.clone(), node.to_string(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let ask = Ask {
            job: job.to_string(),
            at,
            turn,
            reply,
        };
        if asks.send(ask).is_err() {
            return Err(Arc::new(StoreError::Unreachable));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Arc::new(StoreError::Unreachable)))
    }
}

/// Claims what was asked, a batch per statement, until no one can ask any more.
async fn claim_batches(cluster: Cluster, node: String, mut rx: mpsc::UnboundedReceiver<Ask>) {
    let mut asks = Vec::new();
    while rx.recv_many(&mut asks, MAX_BATCH).await > 0 {
        // Each firing once per statement: a repeat in the same batch finds it claimed.
        let mut seen = HashSet::new();
        let firsts: Vec<bool> = asks
            .iter()
            .map(|a| seen.insert((a.job.as_str(), a.at)))
            .collect();
        let firings: Vec<(String, DateTime<Utc>, bool)> = asks
            .iter()
            .zip(&firsts)
            .filter(|(_, first)| **first)
            .map(|(a, _)| (a.job.clone(), a.at, a.turn))
            .collect();
        let claimed = cluster
            .claim_firings(&firings, &node)
            .await
            .map_err(Arc::new);
        let mut answers = match &claimed {
            Ok(claims) => claims.iter(),
            Err(_) => [].iter(),
        };
        for (ask, first) in asks.drain(..).zip(firsts) {
            let answer = match &claimed {
                Err(e) => Err(Arc::clone(e)),
                Ok(_) if !first => Ok(Claim::Lost),
                Ok(_) => Ok(answers.next().copied().unwrap_or(Claim::Lost)),
            };
            // An asker is gone only when the process exits with its claim in flight (claims
            // are not given up on a stop): what it won then is left as a kill at that
            // moment leaves a claimed firing.
            let _ = ask.reply.send(answer);
        }
    }
}
