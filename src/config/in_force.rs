//! Which configuration a running daemon follows: when it loaded it, and whether the files
//! changed since were refused (first and last refusal, and why). The daemon keeps it at each
//! reload; `status`, `/v1/status`, `/healthz`, the systemd status line and the CLI's `list`,
//! `trigger`, `pause` and `resume` tell it, so no one reads the files on disk as what runs.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The configuration in force, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InForce {
    /// When the definitions the daemon runs were loaded (its start or the last accepted
    /// reload).
    pub loaded_at: DateTime<Utc>,
    /// Set while the files on disk are refused: the daemon runs the definitions loaded at
    /// `loaded_at`, not what the files say.
    pub rejected: Option<Rejection>,
}

/// Reloads refused since the last accepted one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The first refusal.
    pub since: DateTime<Utc>,
    /// The latest refusal (of the files as they are now).
    pub last: DateTime<Utc>,
    /// Why the latest was refused: every problem, one per line, naming file, job and field.
    pub error: String,
}

impl InForce {
    /// "configuration rejected since T" while reloads are refused (the systemd status line).
    pub fn rejected_since(&self) -> Option<String> {
        let r = self.rejected.as_ref()?;
        Some(format!("configuration rejected since {}", rfc3339(r.since)))
    }

    /// "configuration rejected since T: ..." with what runs instead, while reloads are
    /// refused.
    pub fn warning(&self) -> Option<String> {
        Some(format!(
            "{}: the daemon runs the configuration it loaded at {} (`hourglass check` says what is wrong with the files)",
            self.rejected_since()?,
            rfc3339(self.loaded_at)
        ))
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The daemon's record of [`InForce`], shared with the API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConfigInForce(Arc<Mutex<Kept>>);

#[derive(Debug)]
struct Kept {
    now: InForce,
    /// Counts accepted loads (a cache of the job list is good for one generation).
    generation: u64,
}

impl ConfigInForce {
    /// A configuration loaded at `at` (the daemon's start).
    pub fn loaded(at: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(Kept {
            now: InForce {
                loaded_at: at,
                rejected: None,
            },
            generation: 0,
        })))
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A reload applied at `at`: its definitions are in force, no refusal stands.
    pub fn accepted(&self, at: DateTime<Utc>) {
        let mut kept = self.kept();
        kept.now = InForce {
            loaded_at: at,
            rejected: None,
        };
        kept.generation += 1;
    }

    /// A reload refused at `at` for `error`; the definitions in force stay.
    pub fn rejected(&self, at: DateTime<Utc>, error: String) {
        let mut kept = self.kept();
        let since = kept.now.rejected.as_ref().map_or(at, |r| r.since);
        kept.now.rejected = Some(Rejection {
            since,
            last: at,
            error,
        });
    }

    /// What is in force now.
    pub fn now(&self) -> InForce {
        self.kept().now.clone()
    }

    /// How many reloads were applied since the start.
    pub fn generation(&self) -> u64 {
        self.kept().generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refusals keep the first one's time and the last one's reason until a reload is
    /// accepted, which clears them and moves the load time.
    #[test]
    fn refusals_stand_until_a_reload_is_accepted() {
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let c = ConfigInForce::loaded(t(0));
        assert_eq!(c.now().warning(), None);
        c.rejected(t(10), "first".into());
        c.rejected(t(20), "second".into());
        let now = c.now();
        let r = now.rejected.as_ref().unwrap();
        assert_eq!(
            (r.since, r.last, r.error.as_str()),
            (t(10), t(20), "second")
        );
        assert_eq!(now.loaded_at, t(0));
        let w = now.warning().unwrap();
        assert!(
            w.starts_with("configuration rejected since 2027-01-15T08:00:10Z"),
            "{w}"
        );
        assert!(w.contains("loaded at 2027-01-15T08:00:00Z"), "{w}");
        assert_eq!(c.generation(), 0);
        c.accepted(t(30));
        assert_eq!(
            c.now(),
            InForce {
                loaded_at: t(30),
                rejected: None
            }
        );
        assert_eq!(c.generation(), 1);
    }
}
