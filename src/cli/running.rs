//! What the running daemon follows, against what the files on disk say: `list` shows the
//! daemon's jobs while one answers, and every command that acts through it says when the
//! files were refused (the daemon then runs the configuration it loaded before).

use std::path::Path;
use std::process::ExitCode;

use super::client::Daemon;
use super::print::{self, Listed};
use super::{counted, load_lenient, paused_jobs, report_problems};
use crate::api::JobSummary;
use crate::config::{InForce, Problem};

/// `hourglass list`: the jobs the daemon runs when one answers, else those the files define.
pub(super) async fn list(path: &Path) -> anyhow::Result<ExitCode> {
    let (cfg, problems) = load_lenient(path)?;
    if let Some(daemon) = Daemon::find(&cfg.settings).await {
        let jobs: Vec<JobSummary> = daemon.get("/v1/jobs").await?;
        print::list(&Listed::of_daemon(jobs));
        note_in_force(daemon.in_force.as_ref(), &problems);
        return Ok(report_problems(
            &problems,
            "the daemon runs the jobs listed",
        ));
    }
    let pauses = paused_jobs(&cfg).await;
    print::list(&Listed::of_config(&cfg, &pauses));
    Ok(report_problems(&problems, "jobs with one are not listed"))
}

/// `hourglass list --graph`: which jobs of the files run after which.
pub(super) fn graph(path: &Path) -> anyhow::Result<ExitCode> {
    let (cfg, problems) = load_lenient(path)?;
    let graph = crate::job::graph::Graph::of(&cfg.jobs);
    if graph.edges.is_empty() {
        println!("no job runs after another (`after`)");
    } else {
        print!("{}", graph.text());
    }
    Ok(report_problems(&problems, "jobs with one are not drawn"))
}

/// One line on stderr when the daemon does not run what the files say: they were refused
/// (since when, and what it runs instead), or they have problems it has not seen yet.
pub(super) fn note_in_force(in_force: Option<&InForce>, problems: &[Problem]) {
    let Some(in_force) = in_force else {
        return;
    };
    if let Some(warning) = in_force.warning() {
        eprintln!("note: {warning}");
        return;
    }
    let errors = problems.iter().filter(|p| !p.warning).count();
    if errors > 0 {
        let at = in_force
            .loaded_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        eprintln!(
            "note: the daemon runs the configuration it loaded at {at}; the files on disk have {} it has not read yet (a reload would refuse them; `hourglass check` lists them)",
            counted(errors, "problem", "problems")
        );
    }
}
