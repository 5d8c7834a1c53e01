//! Bursts: many commands or HTTP calls due in one second, with and without a concurrency
//! limit, against the floor of spawning them (or calling) all at once by hand.

use super::*;

/// N command jobs due in the same second, on both schedulers.
pub(crate) fn burst(b: &mut Bench, n: usize, limit: Option<usize>) -> Result<()> {
    let lead = if n > 2000 { 8 } else { 3 };
    let extra = limit.map_or(String::new(), |l| format!("max_concurrent_runs = {l}\n"));
    let mut hg = Vec::new();
    let mut last_done = Vec::new();
    let mut pe = Vec::new();
    let mut default = None;
    let peer_rounds = if limit.is_some() { 0 } else { b.rounds };
    for round in 0..b.rounds.max(1) {
        let at = at_in(lead);
        let jobs = burst_jobs(n, at);
        let runs = until_finished(b, &extra, &jobs, n)?;
        hg.push(summarize_once(&fires_of(&runs, "b"), n));
        last_done.push((last_finished(&runs)? - at).num_milliseconds());
        if round < peer_rounds {
            pe.push(burst_peer(b, n, n * 2, lead)?);
            if round == 0 {
                default = Some(burst_peer(b, n, 200, lead)?);
            }
        }
    }
    last_done.sort_unstable();
    let label = match limit {
        Some(l) => format!("burst: {n} commands due in one second, max_concurrent_runs = {l}"),
        None => format!("burst: {n} commands due in one second"),
    };
    if pe.is_empty() {
        let h = lateness_row(b, &label, &hg);
        b.row(
            &label,
            "started; missed (all rounds)",
            format!("{}; {}", h.count, h.missed),
        );
    } else {
        compare_rows(b, &label, &hg, &pe, default.as_ref());
    }
    b.row(
        &label,
        "last run finished after its time (median)",
        format!("{} ms", percentile(&last_done, 0.5)),
    );
    Ok(())
}

/// `n` one-shot commands `b0`... all due at `at`.
pub(crate) fn burst_jobs(n: usize, at: chrono::DateTime<chrono::Utc>) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[jobs.b{i}]\nat = \"{}\"\ncommand = [\"true\"]\n",
                at.to_rfc3339()
            )
        })
        .collect()
}

pub(crate) fn burst_peer(b: &Bench, n: usize, channel: usize, lead: i64) -> Result<Summary> {
    // The peer needs the due instant in its cron line; it is given time to add every job.
    let at = at_in(lead + if n > 2000 { 12 } else { 2 });
    let cron = at.format("%S %M %H %d %m *").to_string();
    let p = Peer::start(
        &b.me,
        &[
            format!("--jobs={n}"),
            format!("--schedule={cron}"),
            format!("--channel={channel}"),
            format!("--due={}", at.timestamp_millis()),
            format!("--until={n}"),
            format!(
                "--secs={}",
                (at - chrono::Utc::now()).num_seconds().max(0) + 120
            ),
        ],
    )?;
    if chrono::Utc::now() > at {
        bail!("the peer took longer than {lead} s to add {n} jobs");
    }
    Ok(summarize_once(&p.finish()?, n))
}

/// N HTTP jobs due in the same second against a local server: scheduling cost without fork.
pub(crate) fn http_burst(b: &mut Bench, n: usize) -> Result<()> {
    let port = http_server::start()?;
    let mut hg = Vec::new();
    let mut last_done = Vec::new();
    for _ in 0..b.rounds {
        let at = at_in(if n > 2000 { 8 } else { 3 });
        let jobs: String = (0..n)
            .map(|i| {
                format!(
                    "[jobs.h{i}]\nat = \"{}\"\nhttp = {{ url = \"http://127.0.0.1:{port}/\" }}\n",
                    at.to_rfc3339()
                )
            })
            .collect();
        let runs = until_finished(b, "", &jobs, n)?;
        let failed = runs
            .iter()
            .filter(|r| r.status != hourglass::store::RunStatus::Succeeded)
            .count();
        if failed > 0 {
            bail!("{failed} of {n} HTTP runs did not succeed");
        }
        hg.push(summarize_once(&fires_of(&runs, "h"), n));
        last_done.push((last_finished(&runs)? - at).num_milliseconds());
    }
    last_done.sort_unstable();
    let label = format!("burst: {n} HTTP jobs due in one second (local server)");
    let h = lateness_row(b, &label, &hg);
    b.row(
        &label,
        "started; missed; last response after its time (median)",
        format!(
            "{}; {}; {} ms",
            h.count,
            h.missed,
            percentile(&last_done, 0.5)
        ),
    );
    Ok(())
}

/// Spawns `n` tasks at once on a bare 2-worker runtime (each made by `task` from the common
/// start instant) and waits for all: their results, and the time until the last one ended.
pub(crate) fn all_at_once<T, F>(n: usize, task: impl Fn(Instant) -> F) -> Result<(Vec<T>, Duration)>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    bench::runtime()?.block_on(async {
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(task(t0))).collect();
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.push(t.await??);
        }
        Ok((out, t0.elapsed()))
    })
}

/// The machine's floor for the burst scenarios: N `true` processes spawned at once from a
/// 2-worker tokio runtime (each in its own process group, `posix_spawn`, as the daemon does),
/// with no scheduling or recording around them.
pub(crate) fn spawn_floor(b: &mut Bench, n: usize) -> Result<()> {
    let (spawned, done) = all_at_once(n, |t0| async move {
        let mut child = tokio::process::Command::new("true")
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()?;
        let at = t0.elapsed();
        child.wait().await?;
        Ok(at)
    })?;
    let last = spawned.iter().max().copied().unwrap_or_default();
    b.row(
        &format!("spawn floor: {n} × `true` from a bare 2-worker tokio runtime"),
        "all spawned after; rate; all exited after",
        format!(
            "{} ms; {:.0} spawns/s; {} ms",
            last.as_millis(),
            n as f64 / last.as_secs_f64(),
            done.as_millis()
        ),
    );
    Ok(())
}

/// The floor for the HTTP burst: N GETs to the local server started at once from a bare
/// 2-worker tokio runtime with one reqwest client, each task noting its first poll and
/// yielding once before its request, as the daemon's HTTP runs do; no timers, no history.
pub(crate) fn http_floor(b: &mut Bench, n: usize) -> Result<()> {
    let port = http_server::start()?;
    let url = format!("http://127.0.0.1:{port}/");
    hourglass::http_client::install_crypto_provider();
    let client = reqwest::Client::new();
    let (mut first, done) = all_at_once(n, |t0| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let at = t0.elapsed();
            tokio::task::yield_now().await;
            client.get(&url).send().await?.bytes().await?;
            Ok(at.as_millis() as i64)
        }
    })?;
    first.sort_unstable();
    b.row(
        &format!("HTTP floor: {n} GETs to the local server from a bare 2-worker tokio runtime"),
        "task first polled p50 / p99 / max; all responses after",
        format!(
            "{} / {} / {} ms; {} ms",
            percentile(&first, 0.5),
            percentile(&first, 0.99),
            first.last().copied().unwrap_or_default(),
            done.as_millis()
        ),
    );
    Ok(())
}
