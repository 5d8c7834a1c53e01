//! What recording each run's cost, and limits, cost: a burst of N commands on the previous
//! release (`--previous`, a binary built before accounting) and on this build, back to back in
//! each round, so that each binary's own rounds (its control pair) show the noise; then the
//! same burst with limits on every job (each run then goes through the limits wrapper).

use super::*;

/// One burst on one binary.
struct Round {
    /// The last run's end after the burst's time.
    finished_ms: i64,
    /// The daemon's own CPU time from just before the burst to its last run's end.
    daemon_cpu_ms: i64,
}

/// The limits every job of the limited burst gets (generous: none is hit).
const LIMITS: &str =
    "nice = 5\nlimits = { open_files = 1024, cpu_time = \"60s\", memory = \"1GiB\" }\n";

fn round(bin: &Path, n: usize, limited: bool) -> Result<Round> {
    let lead = if n > 2000 { 8 } else { 3 };
    let at = at_in(lead);
    let mut jobs = burst_jobs(n, at);
    if limited {
        jobs = jobs.replace(
            "command = [\"true\"]\n",
            &format!("command = [\"true\"]\n{LIMITS}"),
        );
    }
    let d = Daemon::start(bin, "", &jobs)?;
    let before = (at - chrono::TimeDelta::milliseconds(300)) - chrono::Utc::now();
    std::thread::sleep(before.to_std().unwrap_or_default());
    let cpu = proc::cpu_ms(d.pid());
    wait_until(Duration::from_secs(300), || {
        Ok(d.runs()?.iter().filter(|r| r.finished_at.is_some()).count() >= n)
    })?;
    let daemon_cpu_ms = i64::try_from(proc::cpu_ms(d.pid()).saturating_sub(cpu))?;
    let runs = d.runs()?;
    d.stop()?;
    if limited
        && runs
            .iter()
            .any(|r| r.status != hourglass::store::RunStatus::Succeeded)
    {
        bail!("a limited run did not succeed");
    }
    Ok(Round {
        finished_ms: (last_finished(&runs)? - at).num_milliseconds(),
        daemon_cpu_ms,
    })
}

fn medians(rounds: &[Round]) -> (i64, i64) {
    let mut done: Vec<i64> = rounds.iter().map(|r| r.finished_ms).collect();
    let mut cpu: Vec<i64> = rounds.iter().map(|r| r.daemon_cpu_ms).collect();
    done.sort_unstable();
    cpu.sort_unstable();
    (percentile(&done, 0.5), percentile(&cpu, 0.5))
}

/// A binary's control pair: its first two rounds' end of the burst and daemon CPU.
fn control_pair(rounds: &[Round]) -> String {
    format!(
        "{}; {}",
        spread(rounds, |r| r.finished_ms),
        spread(rounds, |r| r.daemon_cpu_ms)
    )
}

/// The two first rounds' difference, in percent of the first: the noise of one binary.
fn spread(rounds: &[Round], of: impl Fn(&Round) -> i64) -> String {
    match rounds {
        [a, b, ..] => format!(
            "{} vs {} ({:+.0}%)",
            of(a),
            of(b),
            (of(b) - of(a)) as f64 * 100.0 / of(a).max(1) as f64
        ),
        _ => "—".into(),
    }
}

/// The burst on `previous` (if given), on this build, and on this build with limits on every
/// job, round after round.
pub(crate) fn accounting(b: &mut Bench, n: usize, previous: Option<&Path>) -> Result<()> {
    let (mut old, mut new, mut limited) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..b.rounds.max(1) {
        if let Some(p) = previous {
            old.push(round(p, n, false)?);
        }
        new.push(round(&b.bin, n, false)?);
        limited.push(round(&b.bin, n, true)?);
    }
    let label = format!("accounting: {n} commands due in one second");
    let (new_done, new_cpu) = medians(&new);
    let ratio = |a: i64, b: i64| format!("{:.2}x", a as f64 / b.max(1) as f64);
    let rounds = new.len();
    if !old.is_empty() {
        let (old_done, old_cpu) = medians(&old);
        b.compare(
            &label,
            &format!("last run finished after its time, median of {rounds} (this build | previous release)"),
            format!("{new_done} ms"),
            format!("{old_done} ms"),
            ratio(old_done, new_done),
        );
        b.compare(
            &label,
            &format!(
                "daemon CPU time over the burst, median of {rounds} (this build | previous release)"
            ),
            format!("{new_cpu} ms"),
            format!("{old_cpu} ms"),
            ratio(old_cpu, new_cpu),
        );
        b.row(
            &label,
            "control pair: the previous release's first two rounds (finished after; daemon CPU)",
            control_pair(&old),
        );
    }
    b.row(
        &label,
        "control pair: this build's first two rounds (finished after; daemon CPU)",
        control_pair(&new),
    );
    let (lim_done, lim_cpu) = medians(&limited);
    b.compare(
        &label,
        &format!("with limits on every job (nice, memory, cpu_time, open_files), median of {rounds}: finished after; daemon CPU (limited | plain)"),
        format!("{lim_done} ms; {lim_cpu} ms"),
        format!("{new_done} ms; {new_cpu} ms"),
        format!("{}; {}", ratio(new_done, lim_done), ratio(new_cpu, lim_cpu)),
    );
    Ok(())
}
