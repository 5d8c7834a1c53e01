//! What the other nodes (and the CLI) tell this node through the database, without polling:
//! `LISTEN hourglass` on a connection of its own, fed by the triggers of the migration
//! `notify_and_members` (pauses, manual trigger requests, replace requests, node changes).

use sqlx::postgres::PgListener;

use super::Cluster;
use crate::store::StoreError;

/// The channel the database's triggers notify on.
const CHANNEL: &str = "hourglass";

/// Something changed that this node follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// Pauses were made or lifted.
    Pauses,
    /// A manual trigger was requested.
    Triggers,
    /// A node's run was asked to make way for a newer firing (`overlap = "replace"`): the node.
    Replace(String),
    /// A node joined, came back or left.
    Nodes,
    /// A node wrote the ends of these jobs' parents' runs and may not run them (`run_on`).
    Children(Vec<String>),
    /// The listening connection was lost and made again: notifications sent meanwhile are
    /// gone, so everything is read again.
    Missed,
}

impl ClusterEvent {
    fn parse(payload: &str) -> Self {
        match payload.split_once(' ') {
            Some(("replace", node)) => Self::Replace(node.to_string()),
            Some(("look", jobs)) => Self::Children(jobs.split(' ').map(String::from).collect()),
            _ => match payload {
                "pauses" => Self::Pauses,
                "triggers" => Self::Triggers,
                "nodes" => Self::Nodes,
                // A payload of a later version: whatever it says, reading everything covers it.
                _ => Self::Missed,
            },
        }
    }
}

/// The node's listening connection.
#[derive(Debug)]
pub struct ClusterEvents(PgListener);

impl Cluster {
    /// Listens for what the other nodes tell this one.
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn listen(&self) -> Result<ClusterEvents, StoreError> {
        let mut listener = PgListener::connect_with(&self.0.pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(ClusterEvents(listener))
    }
}

impl ClusterEvents {
    /// The next event; [`ClusterEvent::Missed`] after the connection was lost and made again.
    ///
    /// # Errors
    /// When the connection cannot be made again (the database does not answer) or the pool
    /// is closed (the daemon stops).
    pub async fn next(&mut self) -> Result<ClusterEvent, StoreError> {
        Ok(match self.0.try_recv().await? {
            Some(n) => ClusterEvent::parse(n.payload()),
            None => ClusterEvent::Missed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_read_and_unknown_ones_read_everything() {
        assert_eq!(ClusterEvent::parse("pauses"), ClusterEvent::Pauses);
        assert_eq!(ClusterEvent::parse("triggers"), ClusterEvent::Triggers);
        assert_eq!(ClusterEvent::parse("nodes"), ClusterEvent::Nodes);
        assert_eq!(
            ClusterEvent::parse("replace n 2"),
            ClusterEvent::Replace("n 2".into())
        );
        assert_eq!(
            ClusterEvent::parse("look load report"),
            ClusterEvent::Children(vec!["load".into(), "report".into()])
        );
        assert_eq!(ClusterEvent::parse("later"), ClusterEvent::Missed);
    }
}
