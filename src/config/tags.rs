//! Tags in a job's table: its own labels (`tags`, for finding it) and the node tags it
//! needs (`run_on`).

use crate::problem::Located;

/// `tags`: labels to find the job by in the dashboard (letters, digits, `-`, `_`, `.`).
pub(super) fn job_tags(tags: Option<Vec<String>>, at: &mut Located<'_>) -> Vec<String> {
    let mut tags = tags.unwrap_or_default();
    for t in &tags {
        if !crate::config::valid_tag(t) {
            at.push(
                Some("tags"),
                format!("{t:?} is not a tag (letters, digits, '-', '_' and '.', e.g. \"backup\")"),
            );
        }
    }
    tags.sort();
    tags.dedup();
    tags
}

/// `run_on`: node tags (letters, digits, `-`, `_`, `.`).
pub(super) fn run_on(
    tags: Option<Vec<String>>,
    node_tags: &[String],
    at: &mut Located<'_>,
) -> Vec<String> {
    let tags = tags.unwrap_or_default();
    let missing: Vec<&String> = tags.iter().filter(|t| !node_tags.contains(t)).collect();
    if !missing.is_empty() {
        at.warn(
            Some("run_on"),
            format!(
                "this node (daemon.tags = {node_tags:?}) lacks {missing:?}: the job runs only on other nodes sharing a PostgreSQL database"
            ),
        );
    }
    for t in &tags {
        if !crate::config::valid_tag(t) {
            at.push(
                Some("run_on"),
                format!(
                    "{t:?} is not a node tag (letters, digits, '-', '_' and '.', e.g. \"gpu\")"
                ),
            );
        }
    }
    tags
}
