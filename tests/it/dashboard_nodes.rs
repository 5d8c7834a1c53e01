//! The dashboard's nodes page against PostgreSQL shared by two nodes: each node, its lease
//! and skew, and the job whose definition differs between them.

use std::time::Duration;

use crate::browser::Chromium;
use crate::dashboard::{TOKEN, browser_sign_in, visit};
use crate::harness::{Daemon, wait_for};

const SEC: Duration = Duration::from_secs(1);

/// Two daemons sharing PostgreSQL, one job defined differently on each: the nodes page shows
/// both nodes as the database has them (alive, digests, skew) and the job that differs.
#[test]
fn the_nodes_page_shows_the_nodes_sharing_postgres() {
    let url = crate::cluster::fresh_database("dashboard_nodes");
    let port = crate::harness::free_port();
    let job = |cmd: &str| {
        format!(
            "[jobs.same]\nevery = \"1h\"\ncommand = \"true\"\n[jobs.differs]\nevery = \"1h\"\ncommand = \"{cmd}\"\n"
        )
    };
    let api = format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ env = \"HOURGLASS_TEST_DASHBOARD_TOKEN\" }}\n"
    );
    let mut a = Daemon::prepare_main(&crate::cluster::node_main(&url, "n1", &api), &job("true"));
    let mut b = Daemon::prepare_main(
        &crate::cluster::node_main(&url, "n2", ""),
        &job("echo changed"),
    );
    a.extra_env
        .push(("HOURGLASS_TEST_DASHBOARD_TOKEN".into(), TOKEN.into()));
    a.spawn_ready();
    b.spawn_ready();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(crate::cluster::connect(&url));
    let cluster = store.cluster().expect("a PostgreSQL store has a cluster");
    wait_for(30 * SEC, "both nodes' job digests and the drift", || {
        let drift = rt.block_on(cluster.job_drift()).unwrap();
        (drift.len() == 1).then_some(())
    });
    let chromium = Chromium::launch();
    browser_sign_in(&chromium, &format!("http://127.0.0.1:{port}"));
    visit(
        &chromium,
        &format!("http://127.0.0.1:{port}"),
        "/nodes",
        "nodes-postgres",
    );
    let nodes = rt.block_on(cluster.nodes()).unwrap();
    let shown: Vec<(String, String, String)> = chromium.eval(
        "[...document.querySelectorAll('tr[data-node]')].map(r => [r.dataset.node, r.cells[1].textContent.trim(), r.querySelector('td code').textContent])",
    );
    let want: Vec<(String, String, String)> = nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                if n.alive { "✓ alive" } else { "✗ gone" }.to_string(),
                n.config_digest[..12].to_string(),
            )
        })
        .collect();
    assert_eq!(shown, want);
    let skews: Vec<i64> = chromium
        .eval("[...document.querySelectorAll('[data-skew-ms]')].map(c => +c.dataset.skewMs)");
    for (shown, n) in skews.iter().zip(&nodes) {
        assert!(
            (shown - n.skew_ms).abs() < 1000,
            "{shown} ms shown, {} ms in the database",
            n.skew_ms
        );
    }
    let drift: String = chromium.eval("document.querySelector('ul[data-drift]').textContent");
    assert!(
        drift.starts_with("differs: ") && drift.contains("n1=") && drift.contains("n2="),
        "{drift}"
    );
    drop(chromium);
    rt.block_on(store.close());
    for d in [&a, &b] {
        d.signal(nix::sys::signal::Signal::SIGTERM);
    }
    a.wait_exit(30 * SEC);
    b.wait_exit(30 * SEC);
}
