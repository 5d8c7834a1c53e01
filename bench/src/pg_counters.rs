//! What the database did for the daemons: statements (from `pg_stat_statements`, which the
//! server must preload: `scripts/test.sh` starts it so) and transactions (`pg_stat_database`)
//! of one database, read through `psql`.

use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The role the bench reads as, so that its own statements are not counted.
const READER: &str = "hg_bench_reader";

/// Transactions the bench has run as [`READER`] (one per `psql -c`), taken off the counts.
static READER_TRANSACTIONS: AtomicI64 = AtomicI64::new(0);

/// Statements and transactions run in a database so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) statements: i64,
    pub(crate) transactions: i64,
}

/// How long the server may keep a backend's transaction counts before it publishes them
/// (PostgreSQL flushes an idle backend's statistics within 10 s).
pub(crate) const STATS_LAG: Duration = Duration::from_secs(11);

/// Makes `pg_stat_statements` readable in the database at `url`, and the reader's role;
/// `false` when the server does not preload it.
pub(crate) fn enable(url: &str) -> bool {
    let role = format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') \
         THEN CREATE ROLE {READER} LOGIN SUPERUSER; END IF; END $$"
    );
    psql(url, &role).is_ok()
        && psql(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements").is_ok()
        && psql(url, "SELECT count(*) FROM pg_stat_statements").is_ok()
}

/// `url` (`postgres://user@host/db`) as the reader's role.
fn as_reader(url: &str) -> Result<String> {
    let (scheme, rest) = url.split_once("://").context("no scheme in the URL")?;
    let (_, host) = rest.split_once('@').context("no user in the URL")?;
    Ok(format!("{scheme}://{READER}@{host}"))
}

/// Runs `sql` as the reader (not counted); its output.
pub(crate) fn read_as_reader(url: &str, sql: &str) -> Result<String> {
    READER_TRANSACTIONS.fetch_add(1, Ordering::Relaxed);
    psql(&as_reader(url)?, sql)
}

/// The counters now: the daemons' (the reader's own statements and transactions are left
/// out). Statements leave out `BEGIN`/`COMMIT`/`ROLLBACK` (a transaction's bounds, counted as
/// transactions).
pub(crate) fn read(url: &str) -> Result<Counters> {
    let out = read_as_reader(
        url,
        &format!(
            "SELECT (SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s \
             WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND s.userid <> (SELECT oid FROM pg_roles WHERE rolname = '{READER}') \
             AND s.query !~* '^\\s*(begin|commit|rollback)'), \
             (SELECT xact_commit + xact_rollback FROM pg_stat_database \
             WHERE datname = current_database())"
        ),
    )?;
    let mut it = out.trim().split('|').map(str::parse::<i64>);
    match (it.next(), it.next()) {
        (Some(Ok(statements)), Some(Ok(transactions))) => Ok(Counters {
            statements,
            transactions: transactions - READER_TRANSACTIONS.load(Ordering::Relaxed),
        }),
        _ => bail!("unexpected counters: {out}"),
    }
}

impl Counters {
    /// What happened between `before` and `self`.
    pub(crate) fn since(self, before: Counters) -> Counters {
        Counters {
            statements: self.statements - before.statements,
            transactions: self.transactions - before.transactions,
        }
    }

    /// `statements; transactions` per `n` (firings, or seconds × nodes).
    pub(crate) fn per(self, n: f64) -> String {
        format!(
            "{:.3}; {:.3}",
            self.statements as f64 / n,
            self.transactions as f64 / n
        )
    }
}

fn psql(url: &str, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-Atq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
