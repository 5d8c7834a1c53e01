//! A daemon over time: reloads of a large config, the history at volume, thousands of jobs
//! scheduled, and an idle daemon's footprint.

use super::*;

/// `total` jobs, `fast` of them every second; a reload that changes one of the others,
/// `reloads` times: SIGHUP to READY=1, and the fast jobs' firings across it all.
pub(crate) fn reload(b: &mut Bench, total: usize, fast: usize, reloads: usize) -> Result<()> {
    let jobs = |version: usize| {
        let mut s = String::with_capacity(total * 64);
        for i in 0..fast {
            s.push_str(&format!(
                "[jobs.f{i}]\nschedule = \"* * * * * *\"\ncommand = [\"true\"]\n"
            ));
        }
        for i in fast..total.saturating_sub(1) {
            let (m, h) = (i % 60, (i / 60) % 24);
            s.push_str(&format!(
                "[jobs.s{i}]\nschedule = \"{m} {h} 1 1 *\"\ncommand = [\"true\"]\n"
            ));
        }
        s.push_str(&format!(
            "[jobs.changing]\nschedule = \"{} 3 1 1 *\"\ncommand = [\"true\"]\n",
            version % 60
        ));
        s
    };
    let mut d = Daemon::start(&b.bin, "", &jobs(0))?;
    std::thread::sleep(Duration::from_secs(2));
    let mut took = Vec::new();
    for k in 1..=reloads {
        let tmp = d.dir.join("jobs.next");
        std::fs::write(&tmp, jobs(k))?;
        std::fs::rename(&tmp, d.dir.join("jobs.d/jobs.toml"))?;
        d.drain_notes();
        let t0 = Instant::now();
        proc::signal(d.pid(), "HUP")?;
        d.wait_note("READY=1")?;
        took.push(i64::try_from(t0.elapsed().as_millis()).unwrap_or(i64::MAX));
        // The file watcher reloads once more (same content): let it pass.
        std::thread::sleep(Duration::from_millis(1500));
    }
    std::thread::sleep(Duration::from_secs(1));
    let runs = d.runs()?;
    d.stop()?;
    took.sort_unstable();
    let s = summarize_periodic(&fires_of(&runs, "f"), fast);
    let label = format!("reload: 1 of {total} jobs changed, {reloads} times");
    b.row(
        &label,
        "SIGHUP to READY=1 p50 / max",
        format!(
            "{} / {} ms",
            percentile(&took, 0.5),
            took.last().copied().unwrap_or(-1)
        ),
    );
    b.row(
        &label,
        &format!("{fast} every-second jobs meanwhile: lateness; missed; doubled"),
        format!("{}; {}; {}", show(&s), s.missed, s.doubled),
    );
    Ok(())
}

/// The recorder's sustained throughput into SQLite, median over rounds, for quick runs (start
/// and end in one batch) and long runs (ends in later batches).
pub(crate) fn history(b: &mut Bench, runs: usize) -> Result<()> {
    use bench::history::Shape;
    let rt = bench::runtime()?;
    for (shape, name) in [(Shape::Quick, "quick"), (Shape::Long, "long")] {
        let mut rates = Vec::new();
        for _ in 0..b.rounds {
            let dir = tempfile::tempdir()?;
            let store = rt.block_on(bench::history::store_in(dir.path()))?;
            let records = bench::history::records(runs, shape);
            let took = rt.block_on(bench::history::through_recorder(store, records));
            rates.push((runs as f64 / took.as_secs_f64()) as i64);
        }
        rates.sort_unstable();
        b.row(
            &format!("history: {runs} {name} runs (firing, start, end) through the recorder"),
            &format!("runs written per second, median of {} rounds", rates.len()),
            format!("{}", percentile(&rates, 0.5)),
        );
    }
    Ok(())
}

/// N schedules, mostly far apart: time to READY, RSS, idle CPU; the peer beside.
pub(crate) fn scale(b: &mut Bench, n: usize, idle_secs: u64) -> Result<()> {
    let mut jobs = String::with_capacity(n * 64);
    for i in 0..n {
        let (m, h) = (i % 60, (i / 60) % 24);
        jobs.push_str(&format!(
            "[jobs.s{i}]\nschedule = \"{m} {h} 1 1 *\"\ncommand = [\"true\"]\n"
        ));
    }
    let d = Daemon::start(&b.bin, "", &jobs)?;
    let ready = d.ready_after;
    let cpu = proc::cpu_percent_over(d.pid(), Duration::from_secs(idle_secs));
    let rss = proc::rss_mib(d.pid());
    let mem = proc::memory(d.pid());
    d.stop()?;
    // The peer: one cron line per job too (its parser wants seconds first).
    let p = Peer::start(
        &b.me,
        &[
            format!("--jobs={n}"),
            "--schedule=0 0 0 1 1 *".into(),
            format!("--channel={}", n.max(200)),
            format!("--secs={}", idle_secs + 2),
        ],
    );
    let label = format!("scale: {n} schedules, mostly far apart");
    match p {
        Ok(p) => {
            let p_ready = p.ready_after;
            let p_cpu = proc::cpu_percent_over(p.pid(), Duration::from_secs(idle_secs));
            let p_rss = proc::rss_mib(p.pid());
            let p_mem = proc::memory(p.pid());
            p.finish()?;
            b.compare(
                &label,
                "READY (all jobs scheduled) after",
                format!("{} ms", ready.as_millis()),
                format!("{} ms", p_ready.as_millis()),
                ratio(p_ready.as_millis() as i64, ready.as_millis() as i64),
            );
            b.compare(&label, "RSS", mem, p_mem, format!("{:.1}×", p_rss / rss));
            b.compare(
                &label,
                &format!("idle CPU over {idle_secs} s"),
                format!("{cpu:.2} % of a core"),
                format!("{p_cpu:.2} % of a core"),
                "—".into(),
            );
        }
        Err(e) => {
            b.row(&label, "READY after", format!("{} ms", ready.as_millis()));
            b.row(&label, "RSS", mem);
            b.row(&label, "idle CPU", format!("{cpu:.2} % of a core"));
            b.row(&label, "peer", format!("failed: {e:#}"));
        }
    }
    Ok(())
}

/// One job: RSS and CPU of both, side by side over the same span.
pub(crate) fn idle(b: &mut Bench, secs: u64) -> Result<()> {
    let d = Daemon::start(
        &b.bin,
        "",
        "[jobs.one]\nschedule = \"0 3 * * *\"\ncommand = [\"true\"]\n",
    )?;
    let p = Peer::start(
        &b.me,
        &[
            "--jobs=1".into(),
            "--schedule=0 0 3 * * *".into(),
            format!("--secs={}", secs + 2),
        ],
    )?;
    let (hg_pid, peer_pid) = (d.pid(), p.pid());
    let peer_cpu =
        std::thread::spawn(move || proc::cpu_percent_over(peer_pid, Duration::from_secs(secs)));
    let cpu = proc::cpu_percent_over(hg_pid, Duration::from_secs(secs));
    let p_cpu = peer_cpu.join().unwrap_or(-1.0);
    let (mem, p_mem) = (proc::memory(hg_pid), proc::memory(peer_pid));
    d.stop()?;
    p.finish()?;
    b.compare(
        "idle: 1 job",
        &format!("RSS; CPU over {secs} s"),
        format!("{mem}; {cpu:.2} % of a core"),
        format!("{p_mem}; {p_cpu:.2} % of a core"),
        "—".into(),
    );
    Ok(())
}
