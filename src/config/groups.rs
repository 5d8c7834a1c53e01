//! The `[groups.<name>]` tables of the main file: mutual exclusion groups, at most
//! `max_running` runs of their jobs at once (a job joins one with `group = "<name>"`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::problem::Located;

/// `[groups.<name>]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    max_running: Option<usize>,
}

/// A group: how many runs of its jobs may be in progress at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// At most this many runs of the group's jobs at once (at least 1).
    pub max_running: usize,
}

/// Validates the groups (names as job names are; `max_running` given, at least 1).
pub(crate) fn groups(
    raw: BTreeMap<String, RawGroup>,
    at: &mut Located<'_>,
) -> BTreeMap<String, Group> {
    let mut out = BTreeMap::new();
    for (name, group) in raw {
        let field = format!("groups.{name}.max_running");
        if !super::job_file::valid_name(&name) {
            at.push(
                Some(&format!("groups.{name}")),
                "is not a valid group name; expected letters, digits, '-', '_' or '.', starting with a letter or digit",
            );
            continue;
        }
        match group.max_running {
            None => at.push(
                Some(&field),
                "is missing; expected how many runs of the group's jobs may be in progress at once, e.g. max_running = 1",
            ),
            Some(0) => at.push(
                Some(&field),
                "is 0, so no job of the group could ever run; expected at least 1",
            ),
            Some(max_running) => {
                out.insert(name, Group { max_running });
            }
        }
    }
    out
}

/// Checks a job's `group` against the groups defined.
pub(crate) fn job_group(
    group: Option<String>,
    groups: &BTreeMap<String, Group>,
    at: &mut Located<'_>,
) -> Option<crate::job::JobGroup> {
    let name = group?;
    if let Some(g) = groups.get(&name) {
        return Some(crate::job::JobGroup {
            name,
            max_running: g.max_running,
        });
    }
    let known: Vec<&str> = groups.keys().map(String::as_str).collect();
    let expected = if known.is_empty() {
        "no group is defined; add [groups.<name>] with max_running to the main file".to_string()
    } else {
        format!(
            "expected one of the main file's groups: {}",
            known.join(", ")
        )
    };
    at.push(Some("group"), format!("{name:?} is no group; {expected}"));
    None
}
