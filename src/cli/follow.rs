//! `history --follow` (runs as they start and end, read from the history database) and
//! `show RUN --follow` (a running run's output as it comes, from the daemon's API).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;

use super::client::Daemon;
use super::print::{print_header, print_row, print_run};
use super::{load_lenient, note_problems, open_existing, open_store};
use crate::store::{HistoryFilter, RunRow, RunStatus};

/// How often `history --follow` looks for new and ended runs.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// How many of the newest rows `history --follow` watches for their end.
const WATCHED: u32 = 500;

/// `history --follow`: the newest rows (oldest first), then each run as it starts and again
/// as it ends, until interrupted.
pub(super) async fn history(path: &Path, filter: HistoryFilter) -> anyhow::Result<ExitCode> {
    let store = open_store(path).await?;
    let mut watch = filter.clone();
    watch.limit = watch.limit.max(WATCHED);
    let mut seen: HashMap<i64, RunStatus> = HashMap::new();
    print_header();
    let mut first = true;
    loop {
        let rows = store.history(&watch).await?;
        // Newest first: on the first pass only the newest `limit` are printed.
        let shown = if first {
            filter.limit as usize
        } else {
            rows.len()
        };
        for (i, row) in rows.iter().enumerate().rev() {
            if seen.get(&row.id) != Some(&row.status) {
                if i < shown {
                    print_row(row);
                }
                seen.insert(row.id, row.status);
            }
        }
        std::io::stdout().flush()?;
        // A row that left the newest `WATCHED` does not come back.
        let ids: std::collections::HashSet<i64> = rows.iter().map(|r| r.id).collect();
        seen.retain(|id, _| ids.contains(id));
        first = false;
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// `show RUN --follow`: the run's output as it comes, then its end. Exit status 0 when it
/// succeeded, 1 otherwise.
pub(super) async fn show(path: &Path, run_id: i64) -> anyhow::Result<ExitCode> {
    let (cfg, problems) = load_lenient(path)?;
    note_problems(&problems);
    let Some(daemon) = Daemon::find(&cfg.settings).await else {
        // No daemon: a run that ended is shown as `show` would; one still `running` is not
        // going anywhere without its daemon.
        let store = open_existing(&cfg.settings.database).await?;
        let Some(run) = store.run(run_id).await? else {
            eprintln!("no run with id {run_id}");
            return Ok(ExitCode::FAILURE);
        };
        print_run(&run, &store.lineage(run_id).await?);
        return Ok(exit_for(&run));
    };
    let response = daemon.stream(&format!("/v1/runs/{run_id}/output")).await?;
    let mut events = response.bytes_stream().eventsource();
    let mut out = std::io::stdout();
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| anyhow::anyhow!("the output stream broke: {e}"))?;
        match event.event.as_str() {
            "output" => {
                let chunk: serde_json::Value = serde_json::from_str(&event.data)?;
                out.write_all(chunk["text"].as_str().unwrap_or_default().as_bytes())?;
                out.flush()?;
            }
            "end" => {
                let run: RunRow = serde_json::from_str(&event.data)?;
                let took = run
                    .duration_ms
                    .map_or_else(String::new, |d| format!(" in {d} ms"));
                let code = run
                    .exit_code
                    .map_or_else(String::new, |c| format!(" (exit code {c})"));
                println!(
                    "--- run {} of {:?} {}{code}{took} ---",
                    run.id, run.job, run.status
                );
                return Ok(exit_for(&run));
            }
            _ => {}
        }
    }
    anyhow::bail!("the daemon closed the output stream before the run ended (is it stopping?)")
}

fn exit_for(run: &RunRow) -> ExitCode {
    if run.status == RunStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
