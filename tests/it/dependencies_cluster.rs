//! Jobs that run after jobs on several nodes of one PostgreSQL database: parents ending at
//! the same instant on two nodes fire their child once; a child only another node may run
//! (`run_on`) is run there.

use std::time::Duration;

use hourglass::store::{RunRow, RunStatus};

use crate::harness::{Daemon, wait_for};

/// Starts a node per `(name, tags)` on `url` with `jobs`, runs them until `job` has `n` runs,
/// stops them; the runs, and a reader of the database on a runtime of its own.
fn run_nodes(
    url: &str,
    nodes: &[(&str, &str)],
    jobs: &str,
    (job, n): (&str, usize),
) -> (
    Vec<RunRow>,
    tokio::runtime::Runtime,
    hourglass::store::Store,
) {
    let mut daemons: Vec<Daemon> = nodes
        .iter()
        .map(|(node, tags)| {
            let main = crate::cluster::node_main(url, node, &format!("tags = [{tags}]"));
            let mut d = Daemon::prepare_main(&main, jobs);
            d.spawn_ready();
            d
        })
        .collect();
    wait_for(
        Duration::from_secs(60),
        &format!("{n} runs of {job}"),
        || {
            let runs = crate::cluster::all_runs(url);
            (runs.iter().filter(|r| r.job == job).count() >= n).then_some(())
        },
    );
    crate::cluster::stop_all(&mut daemons);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(crate::cluster::connect(url));
    (crate::cluster::all_runs(url), rt, store)
}

/// Three nodes on PostgreSQL; `pa` runs only on n1 and `pb` only on n2 (by tags), both
/// every second and ending together (`sleep 0.2`), so that each node writes one parent's
/// end at the same instant and looks at the child's condition after its own write. The
/// child runs once per round, on whichever node claims it, and the third step once after it.
#[test]
fn parents_ending_together_on_two_nodes_fire_their_child_once() {
    let url = crate::cluster::fresh_database("deps");
    let jobs = "[jobs.pa]\nevery = \"1s\"\ncommand = \"sleep 0.2\"\nrun_on = [\"a\"]\n\
                [jobs.pb]\nevery = \"1s\"\ncommand = \"sleep 0.2\"\nrun_on = [\"b\"]\n\
                [jobs.child]\nafter = { jobs = [\"pa\", \"pb\"], within = \"800ms\" }\ncommand = \"true\"\n\
                [jobs.grand]\nafter = \"child\"\ncommand = \"true\"\n";
    let nodes = [("n1", "\"a\""), ("n2", "\"b\""), ("n3", "")];
    let (runs, rt, store) = run_nodes(&url, &nodes, jobs, ("pb", 16));
    // The rounds both parents had (the nodes start one after another), but the last two.
    let mut rounds: Vec<_> = runs
        .iter()
        .filter(|r| r.job == "pa")
        .map(|r| r.scheduled_for)
        .filter(|at| runs.iter().any(|r| r.job == "pb" && r.scheduled_for == *at))
        .collect();
    rounds.truncate(rounds.len().saturating_sub(2));
    assert!(rounds.len() >= 12, "{} rounds", rounds.len());
    let mut nodes_seen = std::collections::BTreeSet::new();
    let mut apart = Vec::new();
    for at in rounds {
        let pa = runs
            .iter()
            .find(|r| r.job == "pa" && r.scheduled_for == at)
            .unwrap();
        let pb = runs
            .iter()
            .find(|r| r.job == "pb" && r.scheduled_for == at)
            .unwrap();
        assert_eq!((pa.node.as_str(), pb.node.as_str()), ("n1", "n2"));
        let ended_apart = (pa.finished_at.unwrap() - pb.finished_at.unwrap()).num_milliseconds();
        apart.push(ended_apart.abs());
        let children: Vec<_> = [pa.id, pb.id]
            .iter()
            .flat_map(|id| rt.block_on(store.lineage(*id)).unwrap().children)
            .collect();
        assert_eq!(
            children.len(),
            2,
            "one child, caused by both: {children:?} ({ended_apart} ms apart)"
        );
        assert_eq!(children[0].run_id, children[1].run_id);
        let child: Vec<&RunRow> = runs.iter().filter(|r| r.id == children[0].run_id).collect();
        assert_eq!(child.len(), 1);
        assert_eq!(child[0].status, RunStatus::Succeeded);
        nodes_seen.insert(child[0].node.clone());
        // The third step: once after the child.
        let grand = rt.block_on(store.lineage(child[0].id)).unwrap().children;
        assert_eq!(grand.len(), 1, "the third step once: {grand:?}");
    }
    let all_children = runs.iter().filter(|r| r.job == "child").count();
    let rounds_done = runs.iter().filter(|r| r.job == "pa").count();
    assert!(
        all_children <= rounds_done,
        "{all_children} children for {rounds_done} rounds"
    );
    apart.sort_unstable();
    println!("children ran on {nodes_seen:?}; parents' ends apart (ms): {apart:?}");
    rt.block_on(store.close());
}

/// `p` runs only on n1 (tag `a`), its child only on n2 (tag `b`): n1 writes each of p's
/// ends and names the child to the others; n2 runs it, once per run of p.
#[test]
fn a_child_only_another_node_may_run_runs_there() {
    let url = crate::cluster::fresh_database("deps_run_on");
    let jobs = "[jobs.p]\nevery = \"1s\"\ncommand = \"true\"\nrun_on = [\"a\"]\n\
                [jobs.c]\nafter = \"p\"\ncommand = \"true\"\nrun_on = [\"b\"]\n";
    let nodes = [("n1", "\"a\""), ("n2", "\"b\"")];
    let (runs, rt, store) = run_nodes(&url, &nodes, jobs, ("c", 8));
    let children: Vec<&RunRow> = runs.iter().filter(|r| r.job == "c").collect();
    let mut causes = Vec::new();
    for c in &children {
        assert_eq!(
            (c.node.as_str(), c.status),
            ("n2", RunStatus::Succeeded),
            "{c:#?}"
        );
        let parents = rt.block_on(store.lineage(c.id)).unwrap().parents;
        assert_eq!(parents.len(), 1);
        causes.push(parents[0].run_id);
    }
    let n = causes.len();
    causes.sort_unstable();
    causes.dedup();
    assert_eq!(causes.len(), n, "each run of p ran c once");
    assert!(runs.iter().filter(|r| r.job == "p").all(|r| r.node == "n1"));
    rt.block_on(store.close());
}
