//! Isolation: every-second jobs keep their time beside a hung job, a CPU-burning one or slow
//! HTTP calls.

use super::*;

/// The CPU-burning slow job. `--foreground`: otherwise timeout moves to a process group of its
/// own, out of reach of the group kill at stop.
pub(crate) const CPU_BURNER: &str = "timeout --foreground 300 sh -c 'while :; do :; done'";

/// A slow job (sleep, or burning CPU) beside N every-second jobs, on both schedulers.
pub(crate) fn isolation(b: &mut Bench, fast: usize, secs: u64, cpu: bool) -> Result<()> {
    let slow_line = if cpu { CPU_BURNER } else { "sleep 300" };
    let mut jobs = format!("[jobs.slow]\nevery = \"1h\"\ncommand = \"{slow_line}\"\n");
    for i in 0..fast {
        jobs.push_str(&format!(
            "[jobs.fast{i}]\nschedule = \"* * * * * *\"\ncommand = [\"true\"]\n"
        ));
    }
    let peer_args = |channel: usize| -> Vec<String> {
        vec![
            format!("--jobs={fast}"),
            "--schedule=* * * * * *".into(),
            format!("--slow={slow_line}"),
            format!("--channel={channel}"),
            format!("--secs={secs}"),
        ]
    };
    let (mut hg, mut pe) = (Vec::new(), Vec::new());
    for _ in 0..b.rounds {
        hg.push(isolation_round(b, &jobs, fast, secs)?);
        let p = Peer::start(&b.me, &peer_args(fast * 100))?;
        pe.push(summarize_periodic(&p.finish()?, fast));
    }
    let name = if cpu {
        format!("isolation: {fast} every-second jobs + a CPU-burning job, {secs} s")
    } else {
        format!("isolation: {fast} every-second jobs + a sleeping job, {secs} s")
    };
    compare_rows(b, &name, &hg, &pe, None);
    Ok(())
}

/// One hourglass round of an isolation scenario: start, trigger the slow job, wait, read.
pub(crate) fn isolation_round(b: &Bench, jobs: &str, fast: usize, secs: u64) -> Result<Summary> {
    let d = Daemon::start(&b.bin, "", jobs)?;
    d.trigger("slow")?;
    std::thread::sleep(Duration::from_secs(secs));
    let runs = d.runs()?;
    d.stop()?;
    Ok(summarize_periodic(&fires_of(&runs, "fast"), fast))
}

/// Runs a daemon on `jobs` until `n` runs finished; their history.
pub(crate) fn until_finished(b: &Bench, extra: &str, jobs: &str, n: usize) -> Result<Vec<RunRow>> {
    let d = Daemon::start(&b.bin, extra, jobs)?;
    wait_until(Duration::from_secs(300), || {
        Ok(d.runs()?.iter().filter(|r| r.finished_at.is_some()).count() >= n)
    })?;
    let runs = d.runs()?;
    d.stop()?;
    Ok(runs)
}

/// The isolation scenario with in-process jobs: N every-second HTTP jobs (local server) beside
/// a CPU-burning command, so that the timers are measured rather than the machine's spawn rate.
pub(crate) fn isolation_http(b: &mut Bench, fast: usize, secs: u64) -> Result<()> {
    let port = http_server::start()?;
    let mut jobs = format!("[jobs.slow]\nevery = \"1h\"\ncommand = \"{CPU_BURNER}\"\n");
    for i in 0..fast {
        jobs.push_str(&format!(
            "[jobs.fast{i}]\nschedule = \"* * * * * *\"\nhttp = {{ url = \"http://127.0.0.1:{port}/\" }}\n"
        ));
    }
    let hg = (0..b.rounds)
        .map(|_| isolation_round(b, &jobs, fast, secs))
        .collect::<Result<Vec<_>>>()?;
    let label = format!("isolation: {fast} every-second HTTP jobs + a CPU-burning job, {secs} s");
    let h = lateness_row(b, &label, &hg);
    b.row(
        &label,
        "firings started; missed; doubled (all rounds)",
        format!("{}; {}; {}", h.count, h.missed, h.doubled),
    );
    Ok(())
}
