//! The jobs' dependency graph (`after`): which jobs run after which, in layers (each job one
//! layer right of its furthest parent), for the dashboard's drawing and `hourglass list
//! --graph`'s text.

use std::collections::{BTreeMap, BTreeSet};

use super::JobSpec;

/// The jobs that run after others and their parents, with the edges between them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    /// Each job of the graph and its layer (0: runs after no job).
    pub layer: BTreeMap<String, usize>,
    /// `(parent, child)`, sorted.
    pub edges: Vec<(String, String)>,
    /// Each child's condition in words (`after extract and rates succeed`).
    pub condition: BTreeMap<String, String>,
}

impl Graph {
    /// The graph of `specs` (jobs in no edge are left out). A parent that is no job (which
    /// `check` refuses) is drawn all the same.
    pub fn of<'a>(specs: impl IntoIterator<Item = &'a JobSpec>) -> Self {
        let mut g = Graph::default();
        for spec in specs {
            let Some(after) = &spec.after else {
                continue;
            };
            g.condition.insert(spec.name.clone(), after.in_words());
            for parent in &after.parents {
                g.edges.push((parent.clone(), spec.name.clone()));
            }
        }
        g.edges.sort();
        let jobs: BTreeSet<&String> = g.edges.iter().flat_map(|(p, c)| [p, c]).collect();
        let mut layer: BTreeMap<String, usize> = jobs.into_iter().map(|j| (j.clone(), 0)).collect();
        // Longest path from the roots; at most as many passes as jobs (no cycle: `check`).
        for _ in 0..layer.len() {
            let mut moved = false;
            for (parent, child) in &g.edges {
                let below = layer[parent] + 1;
                if layer[child] < below {
                    layer.insert(child.clone(), below);
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        g.layer = layer;
        g
    }

    /// The jobs of each layer, by name.
    pub fn layers(&self) -> Vec<Vec<&str>> {
        let depth = self.layer.values().max().map_or(0, |m| m + 1);
        let mut out = vec![Vec::new(); depth];
        for (job, l) in &self.layer {
            out[*l].push(job.as_str());
        }
        out
    }

    /// The jobs `job` runs after.
    pub fn parents(&self, job: &str) -> Vec<&str> {
        self.edges
            .iter()
            .filter(|(_, c)| c == job)
            .map(|(p, _)| p.as_str())
            .collect()
    }

    /// The jobs that run after `job`.
    pub fn children(&self, job: &str) -> Vec<&str> {
        self.edges
            .iter()
            .filter(|(p, _)| p == job)
            .map(|(_, c)| c.as_str())
            .collect()
    }

    /// The graph as text: each job that runs after none, then the jobs after it, indented
    /// under each parent; a job met again says so instead of repeating what follows it.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut shown = BTreeSet::new();
        for root in self.layers().first().cloned().unwrap_or_default() {
            self.draw(root, 0, &mut shown, &mut out);
        }
        out
    }

    fn draw<'a>(
        &'a self,
        job: &'a str,
        depth: usize,
        shown: &mut BTreeSet<&'a str>,
        out: &mut String,
    ) {
        let indent = "    ".repeat(depth.saturating_sub(1));
        let arrow = if depth == 0 { "" } else { "└─▶ " };
        let again = !shown.insert(job);
        let condition = self
            .condition
            .get(job)
            .map(|c| format!("  ({c})"))
            .unwrap_or_default();
        if again {
            out.push_str(&format!("{indent}{arrow}{job}  (shown above)\n"));
            return;
        }
        out.push_str(&format!("{indent}{arrow}{job}{condition}\n"));
        for child in self.children(job) {
            self.draw(child, depth + 1, shown, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, after: &[&str]) -> JobSpec {
        let mut s = JobSpec::test_command(name, crate::schedule::Schedule::Unscheduled, &["true"]);
        if !after.is_empty() {
            s.after = Some(crate::job::after::After {
                parents: after.iter().map(ToString::to_string).collect(),
                when: crate::job::after::When::AllSucceeded,
                within: None,
            });
        }
        s
    }

    /// A chain with a fan-in: layers by the furthest parent, the text under each parent,
    /// a job met twice said once.
    #[test]
    fn a_fan_in_is_layered_by_its_furthest_parent() {
        let specs = [
            spec("extract", &[]),
            spec("rates", &[]),
            spec("clean", &["extract"]),
            spec("load", &["clean", "rates"]),
            spec("alone", &[]),
        ];
        let g = Graph::of(&specs);
        assert_eq!(
            g.layers(),
            vec![vec!["extract", "rates"], vec!["clean"], vec!["load"]]
        );
        assert_eq!(g.parents("load"), ["clean", "rates"]);
        assert_eq!(g.children("extract"), ["clean"]);
        assert_eq!(
            g.text(),
            "extract\n└─▶ clean  (after extract succeeds)\n    └─▶ load  (after clean and rates succeed)\n\
             rates\n└─▶ load  (shown above)\n"
        );
    }
}
