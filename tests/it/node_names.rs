//! A node's name is its identity: a second daemon taking a live node's name, from this
//! machine or another, is refused at start and touches nothing of the live node.

use std::time::Duration;

use crate::cluster::{all_runs, fresh_database, node_main, psql, stop_all};
use crate::harness::{Daemon, wait_for};

/// What the nodes own, as the database has it: running runs, turns, the nodes' rows.
fn owned(url: &str) -> [String; 3] {
    [
        psql(
            url,
            "SELECT id, job, status, node, pid FROM runs WHERE status = 'running' ORDER BY id",
        ),
        psql(
            url,
            "SELECT job, node, scheduled_for FROM active_runs ORDER BY job",
        ),
        psql(
            url,
            "SELECT name, machine, process, started_at, lease_until > now() FROM nodes ORDER BY name",
        ),
    ]
}

/// A second daemon taking a live node's name, from another folder of the same machine and
/// from another machine (its own host name and process namespace), is refused at start, and
/// nothing of the live node is touched: its running run, its turn, its row, its job's
/// process. A node name another machine holds is refused naming the setting.
#[test]
fn a_live_nodes_name_is_refused_from_this_machine_and_another_and_nothing_of_it_is_touched() {
    let url = fresh_database("name_taken");
    let jobs = "[jobs.hold]\nevery = \"1h\"\noverlap = \"queue\"\ncommand = \"sleep 600\"\n";
    let mut live = Daemon::prepare_main(&node_main(&url, "web-1", ""), jobs);
    live.spawn_ready();
    let out = live.cli(&["trigger", "hold"]);
    assert!(out.status.success(), "{out:?}");
    let pid: i32 = wait_for(Duration::from_secs(20), "the run's process", || {
        psql(
            &url,
            "SELECT pid FROM runs WHERE status = 'running' AND pid IS NOT NULL",
        )
        .parse()
        .ok()
    });
    let before = owned(&url);
    assert!(before[1].starts_with("hold|web-1|"), "{before:?}");
    let beat = || psql(&url, "SELECT heartbeat_at FROM nodes WHERE name = 'web-1'");
    let first_beat = beat();

    let mut twin = Daemon::prepare_main(&node_main(&url, "web-1", ""), jobs);
    twin.spawn();
    assert!(!twin.wait_exit(Duration::from_secs(30)).success());
    let expected = format!(
        "another daemon on this machine (pid {}) runs a node named \"web-1\" whose lease holds: give this daemon another daemon.node",
        live.pid()
    );
    assert!(twin.log().contains(&expected), "{}", twin.log());
    assert_eq!(owned(&url), before);
    assert!(crate::harness::alive(pid));

    let mut other = Daemon::prepare_main(&node_main(&url, "web-1", ""), jobs);
    other.wrap = [
        "unshare",
        "--uts",
        "--pid",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        "hostname other-machine && exec \"$0\" \"$@\"",
    ]
    .map(String::from)
    .to_vec();
    other.spawn();
    assert!(!other.wait_exit(Duration::from_secs(30)).success());
    let host = hourglass::config::host_name();
    assert!(
        other.log().contains(&format!(
            "another machine ({host}) runs a node named \"web-1\""
        )),
        "{}",
        other.log()
    );
    assert_eq!(owned(&url), before);
    assert!(crate::harness::alive(pid));

    // The live node goes on: it still beats, and its run ends as its own.
    wait_for(Duration::from_secs(20), "a beat after the refusals", || {
        (beat() != first_beat).then_some(())
    });
    stop_all(std::slice::from_mut(&mut live));
    let runs = all_runs(&url);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(
        (runs[0].node.as_str(), runs[0].status.as_str()),
        ("web-1", "interrupted")
    );
}
