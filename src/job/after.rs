//! Jobs that run after other jobs (`after`): one parent (`after = "extract"`) or several with a
//! condition and a window (`after = { jobs = ["extract", "rates"], when = "all_succeeded",
//! within = "2h" }`), and the graph's checks across jobs: parents that exist, no job after
//! itself, no cycle (named by its path, `load → extract → load`).
//! Also what a dependent run learns of its parents (`HOURGLASS_PARENT_*`) and whether the
//! parents' newest last words fire a child ([`met`]). At run time: `runner::dependents`
//! (looks and claims), `store` (`run_causes`), the history writer (who ended).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use crate::problem::Located;
use crate::store::{Newest, ParentRun, RunStatus};

/// `after` as written: a job's name, or a table.
#[derive(Debug)]
pub(crate) enum RawAfter {
    /// One parent, `when = "all_succeeded"`, no window.
    One(String),
    /// Parents with a condition and a window.
    Table(RawAfterTable),
}

impl<'de> Deserialize<'de> for RawAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawAfter;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a job's name (\"extract\") or a table ({ jobs = [\"extract\", \"rates\"], \
                     when = \"all_succeeded\", within = \"2h\" })",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawAfter, E> {
                Ok(RawAfter::One(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawAfter, A::Error> {
                let table =
                    RawAfterTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawAfter::Table(table))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `after = { jobs = [...], when = "...", within = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAfterTable {
    jobs: Vec<String>,
    when: Option<When>,
    within: Option<String>,
}

/// Which runs of the parents fire the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// A successful run of every parent (the default).
    #[default]
    AllSucceeded,
    /// A successful run of any parent.
    AnySucceeded,
    /// A failed run of any parent (failed, timed out, abandoned, interrupted).
    AnyFailed,
    /// A finished run of every parent, whatever its status.
    AllDone,
}

impl When {
    /// The name as written in a job file.
    pub fn as_str(self) -> &'static str {
        match self {
            When::AllSucceeded => "all_succeeded",
            When::AnySucceeded => "any_succeeded",
            When::AnyFailed => "any_failed",
            When::AllDone => "all_done",
        }
    }
}

/// A job's parents and when their runs fire it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    /// The parents, as named (sorted, each once).
    pub parents: Vec<String>,
    /// Which of their runs count.
    pub when: When,
    /// How close together the parents' qualifying runs must end (fan-in); `None`: any time
    /// since the child last ran.
    pub within: Option<Duration>,
}

impl After {
    /// When the job runs, in words: `after extract and rates succeed (within 2h)`.
    pub fn in_words(&self) -> String {
        let joined = |sep: &str| match self.parents.as_slice() {
            [] => String::new(),
            [one] => one.clone(),
            [init @ .., last] => format!("{} {sep} {last}", init.join(", ")),
        };
        let one = self.parents.len() == 1;
        let verb = |single: &str, plural: &str| {
            if one {
                single.to_string()
            } else {
                plural.to_string()
            }
        };
        let text = match self.when {
            When::AllSucceeded => {
                format!("after {} {}", joined("and"), verb("succeeds", "succeed"))
            }
            When::AnySucceeded => format!("after {} succeeds", joined("or")),
            When::AnyFailed => format!("after {} fails", joined("or")),
            When::AllDone => format!("after {} {}", joined("and"), verb("finishes", "finish")),
        };
        match self.within {
            Some(w) => format!("{text} (within {})", humantime::format_duration(w)),
            None => text,
        }
    }
}

/// A parent's name as it appears in environment variables: upper case, `_` for any other
/// character than a letter or digit (`fetch-rates` → `FETCH_RATES`).
fn env_name(job: &str) -> String {
    job.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// What a dependent run's command learns of its parents' runs (newest last):
/// `HOURGLASS_PARENTS` (their jobs, space-separated), `HOURGLASS_PARENT_<JOB>_RUN_ID`,
/// `_STATUS`, `_EXIT_CODE` for each, and `HOURGLASS_PARENT_JOB`, `_RUN_ID`, `_STATUS`,
/// `_EXIT_CODE` for the newest (the one whose end ran it). Nothing for other runs.
pub fn parent_env(parents: &[ParentRun]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let Some(newest) = parents.last() else {
        return env;
    };
    let names: Vec<&str> = parents.iter().map(|p| p.job.as_str()).collect();
    env.push(("HOURGLASS_PARENTS".into(), names.join(" ")));
    let mut facts = |prefix: &str, p: &ParentRun| {
        let code = p.exit_code.map(|c| c.to_string()).unwrap_or_default();
        env.push((format!("{prefix}_RUN_ID"), p.run_id.to_string()));
        env.push((format!("{prefix}_STATUS"), p.status.as_str().to_string()));
        env.push((format!("{prefix}_EXIT_CODE"), code));
    };
    for p in parents {
        facts(&format!("HOURGLASS_PARENT_{}", env_name(&p.job)), p);
    }
    facts("HOURGLASS_PARENT", newest);
    env.push(("HOURGLASS_PARENT_JOB".into(), newest.job.clone()));
    env
}

/// What an HTTP job's request tells of its run's parents (the newest, whose end ran it):
/// `Hourglass-Parents`, `Hourglass-Parent-Job`, `-Run-Id`, `-Status`, `-Exit-Code`.
pub fn parent_headers(parents: &[ParentRun]) -> Vec<(&'static str, String)> {
    let Some(newest) = parents.last() else {
        return Vec::new();
    };
    let names: Vec<&str> = parents.iter().map(|p| p.job.as_str()).collect();
    vec![
        ("Hourglass-Parents", names.join(" ")),
        ("Hourglass-Parent-Job", newest.job.clone()),
        ("Hourglass-Parent-Run-Id", newest.run_id.to_string()),
        (
            "Hourglass-Parent-Status",
            newest.status.as_str().to_string(),
        ),
        (
            "Hourglass-Parent-Exit-Code",
            newest.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        ),
    ]
}

/// Whether the parents' newest runs (`newest`: each parent's newest last word and whether
/// the child ran after it already) fire the child under `after`: the parents' runs that do
/// (its causes, oldest end first), or `None`.
pub fn met(after: &After, newest: &[Newest]) -> Option<Vec<ParentRun>> {
    let fresh = |run: &&Newest| !run.1;
    let counts = |run: &ParentRun| match after.when {
        When::AllSucceeded | When::AnySucceeded => run.status == RunStatus::Succeeded,
        When::AnyFailed => run.status.is_failure(),
        When::AllDone => true,
    };
    let mut causes: Vec<ParentRun> = match after.when {
        When::AllSucceeded | When::AllDone => {
            let all = newest.len() == after.parents.len()
                && newest.iter().all(|n| fresh(&n) && counts(&n.0));
            if !all {
                return None;
            }
            newest.iter().map(|n| n.0.clone()).collect()
        }
        When::AnySucceeded | When::AnyFailed => newest
            .iter()
            .filter(fresh)
            .filter(|n| counts(&n.0))
            .map(|n| n.0.clone())
            .collect(),
    };
    causes.sort_by_key(|c| (c.finished_at, c.run_id));
    let (first, last) = (causes.first()?, causes.last()?);
    let span = (last.finished_at - first.finished_at)
        .to_std()
        .unwrap_or_default();
    match after.within {
        Some(within) if span > within => None,
        _ => Some(causes),
    }
}

/// Validates one job's `after` (names well formed, each once, a window above zero).
pub(crate) fn after(raw: RawAfter, at: &mut Located<'_>) -> Option<After> {
    let (jobs, when, within) = match raw {
        RawAfter::One(job) => (vec![job], When::default(), None),
        RawAfter::Table(t) => (t.jobs, t.when.unwrap_or_default(), t.within),
    };
    let before = at.errors();
    if jobs.is_empty() {
        at.push(
            Some("after.jobs"),
            "is empty; name the jobs this one runs after, e.g. jobs = [\"extract\"]",
        );
    }
    let mut parents = BTreeSet::new();
    for job in jobs {
        if job.trim().is_empty() {
            at.push(Some("after"), "names a job with an empty name");
        } else if !parents.insert(job.clone()) {
            at.push(Some("after"), format!("names {job:?} twice"));
        }
    }
    let within = within.map(|w| at.duration("after.within", Some(&w), Duration::ZERO));
    if within.is_some_and(|w| w.is_zero()) {
        at.push(
            Some("after.within"),
            "must be above zero, e.g. \"2h\"; leave it out for no window",
        );
    }
    let several = parents.len() > 1 && matches!(when, When::AllSucceeded | When::AllDone);
    if within.is_some() && !several {
        at.push(
            Some("after.within"),
            "has no effect here: it is how close together the runs of several parents must \
             end for when = \"all_succeeded\" or \"all_done\"; leave it out",
        );
    }
    (at.errors() == before).then(|| After {
        parents: parents.into_iter().collect(),
        when,
        within,
    })
}

/// The problems of the jobs' `after` graph (parents that are no job, cycles), each on the
/// job's file, name and `after`.
pub(crate) fn problems_of<'a>(
    jobs: impl Iterator<Item = &'a super::JobSpec> + Clone,
    base: &std::path::Path,
    problems: &mut Vec<crate::problem::Problem>,
) {
    let graph: BTreeMap<&str, Option<&After>> = jobs
        .clone()
        .map(|spec| (spec.name.as_str(), spec.after.as_ref()))
        .collect();
    let specs: BTreeMap<&str, &super::JobSpec> = jobs
        .clone()
        .map(|spec| (spec.name.as_str(), spec))
        .collect();
    let files: BTreeMap<&str, &std::path::Path> = jobs
        .map(|spec| (spec.name.as_str(), &*spec.source))
        .collect();
    let at = |job: &str| {
        files
            .get(job)
            .map(|p| crate::problem::display_path(p, base))
            .unwrap_or_default()
    };
    for (job, message) in graph_problems(&graph) {
        problems.push(crate::problem::Problem {
            file: at(&job),
            job: Some(job),
            field: Some("after".into()),
            message,
            warning: false,
        });
    }
    for (job, message) in within_warnings(&specs, chrono::Utc::now()) {
        problems.push(crate::problem::Problem {
            file: at(&job),
            job: Some(job),
            field: Some("after.within".into()),
            message,
            warning: true,
        });
    }
}

/// Occurrences looked at to find how close two schedules come.
const LOOKED_AT: usize = 500;

/// The children whose `within` is shorter than the closest two of their parents are ever due
/// (both on a schedule, neither after other jobs): their runs end within it only when the
/// earlier one runs long. `(child, message)`.
pub(crate) fn within_warnings(
    specs: &BTreeMap<&str, &super::JobSpec>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for spec in specs.values() {
        let Some(after) = &spec.after else { continue };
        let Some(within) = after.within else { continue };
        let due: Vec<(&str, Vec<chrono::DateTime<chrono::Utc>>)> = after
            .parents
            .iter()
            .filter_map(|p| specs.get(p.as_str()))
            .filter(|p| p.after.is_none())
            .map(|p| (p.name.as_str(), occurrences(p, now)))
            .filter(|(_, times)| !times.is_empty())
            .collect();
        let mut worst: Option<(&str, &str, chrono::TimeDelta)> = None;
        for (i, (a, ta)) in due.iter().enumerate() {
            for (b, tb) in &due[i + 1..] {
                let gap = closest(ta, tb);
                if worst.is_none_or(|w| gap > w.2) {
                    worst = Some((a, b, gap));
                }
            }
        }
        if let Some((a, b, gap)) = worst
            && gap.to_std().unwrap_or_default() > within
        {
            let (gap, within) = (words(gap.to_std().unwrap_or_default()), words(within));
            out.push((
                spec.name.clone(),
                format!(
                    "is {within}, but {a} and {b} are due {gap} apart at the closest: their runs end \
                     within {within} of each other only when the earlier one runs long; \
                     expected at least {gap}"
                ),
            ));
        }
    }
    out
}

fn words(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `spec`'s next occurrences from `now` (at most [`LOOKED_AT`]).
fn occurrences(
    spec: &super::JobSpec,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<chrono::DateTime<chrono::Utc>> {
    let mut out = Vec::new();
    let mut t = now;
    while out.len() < LOOKED_AT {
        let Some(next) = spec.next_fire_after(t) else {
            break;
        };
        out.push(next);
        t = next;
    }
    out
}

/// The least distance between a time of `a` and a time of `b` (both sorted).
fn closest(
    a: &[chrono::DateTime<chrono::Utc>],
    b: &[chrono::DateTime<chrono::Utc>],
) -> chrono::TimeDelta {
    let (mut i, mut j) = (0, 0);
    let mut best = chrono::TimeDelta::MAX;
    while i < a.len() && j < b.len() {
        best = best.min((a[i] - b[j]).abs());
        if a[i] < b[j] {
            i += 1;
        } else {
            j += 1;
        }
    }
    best
}

/// What is wrong with the dependency graph of `jobs` (each job's name and its `after`, if
/// any): `(job, message)` for parents that are no job, a job after itself, and each cycle once
/// (reported on its first job by name, with its path).
pub fn graph_problems(jobs: &BTreeMap<&str, Option<&After>>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (job, after) in jobs {
        for parent in after.iter().flat_map(|a| &a.parents) {
            if parent == job {
                out.push((
                    (*job).to_string(),
                    "names the job itself; a job cannot run after itself".to_string(),
                ));
            } else if !jobs.contains_key(parent.as_str()) {
                out.push((
                    (*job).to_string(),
                    format!("names {parent:?}, which is no job; expected one of the jobs' names"),
                ));
            }
        }
    }
    for cycle in cycles(jobs) {
        out.push((
            cycle[0].clone(),
            format!(
                "the jobs run after each other in a circle: {}; remove one of these `after`s",
                cycle.join(" → ")
            ),
        ));
    }
    out
}

/// Each cycle of the graph once (a job's parents are its edges; self-edges and unknown
/// parents left out), as a path starting and ending at its least name.
fn cycles(jobs: &BTreeMap<&str, Option<&After>>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let parents = |job: &str| -> Vec<&str> {
        jobs.get(job)
            .copied()
            .flatten()
            .map(|a| {
                a.parents
                    .iter()
                    .map(String::as_str)
                    .filter(|p| *p != job && jobs.contains_key(p))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut marks: BTreeMap<&str, Mark> = jobs.keys().map(|j| (*j, Mark::New)).collect();
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in jobs.keys() {
        if marks[start] != Mark::New {
            continue;
        }
        // Depth first, without recursion: the path and each step's remaining parents.
        let mut path: Vec<&str> = vec![start];
        let mut todo: Vec<Vec<&str>> = vec![parents(start)];
        marks.insert(start, Mark::Open);
        while let Some(next) = todo.last_mut() {
            match next.pop() {
                Some(p) => match marks[p] {
                    Mark::New => {
                        marks.insert(p, Mark::Open);
                        path.push(p);
                        todo.push(parents(p));
                    }
                    Mark::Open => {
                        let from = path.iter().position(|j| *j == p).unwrap_or(0);
                        found.insert(rotated(&path[from..]));
                    }
                    Mark::Done => {}
                },
                None => {
                    if let Some(done) = path.pop() {
                        marks.insert(done, Mark::Done);
                    }
                    todo.pop();
                }
            }
        }
    }
    found.into_iter().collect()
}

/// A cycle (jobs each after the next) as the path a reader follows, from its least name back
/// to it: `load → extract → load` when load runs after extract, which runs after load.
fn rotated(cycle: &[&str]) -> Vec<String> {
    let least = (0..cycle.len()).min_by_key(|i| cycle[*i]).unwrap_or(0);
    let mut out: Vec<String> = cycle[least..]
        .iter()
        .chain(&cycle[..least])
        .map(|s| (*s).to_string())
        .collect();
    out.push(out[0].clone());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(parents: &[&str]) -> After {
        After {
            parents: parents.iter().map(|p| (*p).to_string()).collect(),
            when: When::AllSucceeded,
            within: None,
        }
    }

    fn problems(edges: &[(&str, Option<After>)]) -> Vec<(String, String)> {
        let jobs: BTreeMap<&str, Option<&After>> =
            edges.iter().map(|(j, a)| (*j, a.as_ref())).collect();
        graph_problems(&jobs)
    }

    #[test]
    fn when_a_child_runs_reads_as_a_sentence() {
        assert_eq!(after(&["extract"]).in_words(), "after extract succeeds");
        let mut fan_in = after(&["extract", "load", "rates"]);
        fan_in.within = Some(Duration::from_secs(7200));
        assert_eq!(
            fan_in.in_words(),
            "after extract, load and rates succeed (within 2h)"
        );
        fan_in.when = When::AnyFailed;
        fan_in.within = None;
        assert_eq!(fan_in.in_words(), "after extract, load or rates fails");
    }

    #[test]
    fn a_chain_and_a_fan_in_are_fine() {
        let p = problems(&[
            ("extract", None),
            ("rates", None),
            ("load", Some(after(&["extract", "rates"]))),
            ("report", Some(after(&["load"]))),
        ]);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn unknown_parents_and_the_job_itself_are_named() {
        let p = problems(&[("load", Some(after(&["load", "extrct"])))]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].1.contains("itself"), "{p:?}");
        assert!(p[1].1.contains("\"extrct\", which is no job"), "{p:?}");
    }

    #[test]
    fn a_cycle_is_named_once_by_its_path() {
        let p = problems(&[
            ("extract", Some(after(&["load"]))),
            ("load", Some(after(&["extract"]))),
            ("report", Some(after(&["load"]))),
        ]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "extract");
        assert!(p[0].1.contains("extract → load → extract"), "{p:?}");
    }

    #[test]
    fn a_longer_cycle_and_a_separate_one_are_each_named() {
        let p = problems(&[
            ("a", Some(after(&["c"]))),
            ("b", Some(after(&["a"]))),
            ("c", Some(after(&["b"]))),
            ("x", Some(after(&["y"]))),
            ("y", Some(after(&["x"]))),
        ]);
        let texts: Vec<&str> = p.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(p.len(), 2, "{p:?}");
        // a runs after c, c after b, b after a.
        assert!(texts[0].contains("a → c → b → a"), "{texts:?}");
        assert!(texts[1].contains("x → y → x"), "{texts:?}");
    }

    /// A window shorter than the closest two scheduled parents ever come is warned of; one
    /// that fits is not; a parent that runs after others (any time) is left out.
    #[test]
    fn a_window_the_schedules_cannot_meet_is_warned_of() {
        let cron = |expr: &str| {
            let mut cache = crate::schedule::CronCache::default();
            crate::schedule::Schedule::Cron {
                expr: expr.into(),
                cron: cache.parse(expr).unwrap(),
                tz: chrono_tz::Tz::UTC,
            }
        };
        let child = |within: u64| {
            let mut s = super::super::JobSpec::test_command(
                "load",
                crate::schedule::Schedule::Unscheduled,
                &["true"],
            );
            s.after = Some(After {
                parents: vec!["extract".into(), "rates".into()],
                when: When::AllSucceeded,
                within: Some(Duration::from_secs(within)),
            });
            s
        };
        let extract =
            super::super::JobSpec::test_command("extract", cron("0 0 1 * * *"), &["true"]);
        let rates = super::super::JobSpec::test_command("rates", cron("0 0 5 * * *"), &["true"]);
        let now = chrono::Utc::now();
        for (within, warned) in [(3600, true), (5 * 3600, false)] {
            let load = child(within);
            let specs: BTreeMap<&str, &super::super::JobSpec> =
                [("extract", &extract), ("rates", &rates), ("load", &load)]
                    .into_iter()
                    .collect();
            let found = within_warnings(&specs, now);
            assert_eq!(found.len(), usize::from(warned), "{found:?}");
            if warned {
                assert!(
                    found[0]
                        .1
                        .contains("extract and rates are due 4h apart at the closest"),
                    "{found:?}"
                );
            }
        }
    }
}
