//! Jobs that run after jobs: N chains of three steps (`a` due at once, `b` after `a`, `c`
//! after `b`): how long from a parent's end to its child's start, against the lateness of the
//! chains' scheduled first steps in the same run.

use super::*;

/// `n` chains `a{i}` (one-shot at `at`) → `b{i}` → `c{i}`.
fn chain_jobs(n: usize, at: chrono::DateTime<chrono::Utc>) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[jobs.a{i}]\nat = \"{}\"\ncommand = [\"true\"]\n\
                 [jobs.b{i}]\nafter = \"a{i}\"\ncommand = [\"true\"]\n\
                 [jobs.c{i}]\nafter = \"b{i}\"\ncommand = [\"true\"]\n",
                at.to_rfc3339()
            )
        })
        .collect()
}

/// Each round: the scheduled steps' lateness and the parent-end-to-child-start hops, in ms.
fn round(b: &Bench, n: usize) -> Result<(Vec<i64>, Vec<i64>)> {
    let at = at_in(if n > 500 { 5 } else { 3 });
    let runs = until_finished(b, "", &chain_jobs(n, at), 3 * n)?;
    let by_job: std::collections::HashMap<&str, &RunRow> =
        runs.iter().map(|r| (r.job.as_str(), r)).collect();
    let mut late = Vec::new();
    let mut hops = Vec::new();
    for i in 0..n {
        let step = |p: &str| by_job.get(format!("{p}{i}").as_str()).copied();
        let (Some(a), Some(b), Some(c)) = (step("a"), step("b"), step("c")) else {
            bail!("chain {i} did not run whole");
        };
        late.push((a.started_at.context("a started")? - a.scheduled_for).num_milliseconds());
        for (parent, child) in [(a, b), (b, c)] {
            let ended = parent.finished_at.context("parent ended")?;
            hops.push((child.started_at.context("child started")? - ended).num_milliseconds());
        }
    }
    late.sort_unstable();
    hops.sort_unstable();
    Ok((late, hops))
}

/// The rows: medians over rounds of p50 and p99 of each.
pub(crate) fn chains(b: &mut Bench, n: usize) -> Result<()> {
    let mut late = (Vec::new(), Vec::new());
    let mut hops = (Vec::new(), Vec::new());
    for _ in 0..b.rounds.max(1) {
        let (l, h) = round(b, n)?;
        late.0.push(percentile(&l, 0.5));
        late.1.push(percentile(&l, 0.99));
        hops.0.push(percentile(&h, 0.5));
        hops.1.push(percentile(&h, 0.99));
    }
    for v in [&mut late.0, &mut late.1, &mut hops.0, &mut hops.1] {
        v.sort_unstable();
    }
    let med = |v: &[i64]| percentile(v, 0.5);
    let label = format!("chains: {n} chains of three steps, first steps due at once");
    let rounds = b.rounds.max(1);
    b.row(
        &label,
        &format!("scheduled first steps' lateness p50 / p99, median of {rounds} rounds"),
        format!("{} / {} ms", med(&late.0), med(&late.1)),
    );
    b.row(
        &label,
        &format!("parent's end to child's start p50 / p99, median of {rounds} rounds"),
        format!("{} / {} ms", med(&hops.0), med(&hops.1)),
    );
    let ratio = med(&hops.1) as f64 / med(&late.1).max(1) as f64;
    b.row(
        &label,
        "p99 hop / p99 scheduled lateness",
        format!("{ratio:.2}×"),
    );
    Ok(())
}
