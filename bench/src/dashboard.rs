//! The dashboard's rows: the server time of its jobs page over many jobs and of one job's page
//! over a long history (requests one after another on the unix socket, so each one's time is
//! the server's), beside every-second jobs whose lateness is compared with a span without
//! requests.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hourglass::store::{Database, HistoryFilter};

use crate::{Bench, Daemon, fires_of, percentile, show};

/// `runs` runs of job `big`, one a minute up to now, newest last; ids 1..=runs.
fn seed(runs: usize) -> String {
    format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {runs}) \
         INSERT INTO runs (id, job, scheduled_for, started_at, finished_at, status, attempt, \
                           trigger, exit_code, node) \
         SELECT i, 'big', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d minutes', {runs} + 1 - i)), \
                strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d minutes', {runs} + 1 - i), '+0.2 seconds'), \
                strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d minutes', {runs} + 1 - i), printf('+%d seconds', 1 + i % 7)), \
                CASE WHEN i % 17 = 0 THEN 'failed' ELSE 'succeeded' END, 1, 'schedule', \
                CASE WHEN i % 17 = 0 THEN 1 ELSE 0 END, 'seed' FROM n; \
         UPDATE daemon_state SET run_ids_reserved_through = {runs};"
    )
}

/// `total` jobs (`fast` of them every second, one `big` with `runs` runs in its history):
/// `requests` GETs of the jobs page, then as many of `big`'s page.
pub(crate) fn pages(
    b: &mut Bench,
    total: usize,
    fast: usize,
    runs: usize,
    requests: usize,
) -> Result<()> {
    let mut jobs = String::from("[jobs.big]\nschedule = \"0 0 1 1 *\"\ncommand = [\"true\"]\n");
    for i in 0..fast {
        jobs.push_str(&format!(
            "[jobs.f{i}]\nevery = \"1s\"\ncommand = [\"true\"]\n"
        ));
    }
    for i in fast..total.saturating_sub(1) {
        let (m, h) = (i % 60, (i / 60) % 24);
        jobs.push_str(&format!(
            "[jobs.s{i}]\nschedule = \"{m} {h} 1 1 *\"\ncommand = [\"true\"]\n"
        ));
    }
    let d = Daemon::start_seeded(&b.bin, "", &jobs, &seed(runs))?;
    let socket = d.dir.join("hourglass.sock");
    let quiet_from = chrono::Utc::now();
    let span = Duration::from_secs(if requests > 50 { 20 } else { 2 });
    std::thread::sleep(span);
    let load_from = chrono::Utc::now();
    let list = timed_gets(&socket, "/", requests)?;
    let one = timed_gets(&socket, "/jobs/big", requests)?;
    let load_to = chrono::Utc::now();
    std::thread::sleep(Duration::from_secs(2));
    let rows = crate::read_history_filtered(
        &Database::Sqlite(d.dir.join("history.db")),
        &HistoryFilter {
            since: Some(quiet_from),
            limit: u32::MAX,
            ..HistoryFilter::default()
        },
    )?;
    d.stop()?;
    let fires = fires_of(&rows, "f");
    let within = |from, to| crate::summarize_between(&fires, fast, from, to);
    let label = format!(
        "dashboard: pages on the unix socket, one request at a time ({total} jobs, {fast} every second; job `big` with {runs} runs)"
    );
    b.row(
        &label,
        "jobs page `/` (first 100 of the jobs, by name): server time p50 / p99",
        times(&list),
    );
    b.row(
        &label,
        &format!("job page `/jobs/big` over {runs} runs: server time p50 / p99"),
        times(&one),
    );
    b.row(
        &label,
        "page sizes (jobs / job)",
        format!("{} / {} KiB", list.1 / 1024, one.1 / 1024),
    );
    b.row(
        &label,
        &format!(
            "every-second jobs' lateness without requests ({} s)",
            span.as_secs()
        ),
        show(&within(quiet_from, load_from)),
    );
    b.row(
        &label,
        "every-second jobs' lateness while pages are served",
        show(&within(load_from, load_to)),
    );
    Ok(())
}

fn times((ms, _): &(Vec<i64>, usize)) -> String {
    format!("{} / {} ms", percentile(ms, 0.5), percentile(ms, 0.99))
}

/// `n` GETs of `path`, one after another: each one's milliseconds (sorted) and the last
/// body's size.
fn timed_gets(socket: &std::path::Path, path: &str, n: usize) -> Result<(Vec<i64>, usize)> {
    hourglass::http_client::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder().unix_socket(socket).build()?;
    rt.block_on(async move {
        let mut ms = Vec::with_capacity(n);
        let mut size = 0;
        for _ in 0..n {
            let start = Instant::now();
            let r = client.get(format!("http://hourglass{path}")).send().await?;
            if !r.status().is_success() {
                bail!("GET {path}: {}", r.status());
            }
            size = r.bytes().await?.len();
            ms.push(i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX));
        }
        ms.sort_unstable();
        Ok((ms, size))
    })
}
