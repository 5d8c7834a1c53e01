//! Secret strings (passwords, tokens, keys): loaded by the config module from an environment
//! variable or a file, compared for reload diffs, shown as `[REDACTED]` by `Debug`, and exposed
//! only where they are sent.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};

use secrecy::{ExposeSecret, SecretString};

/// Names of the environment variables that secret references name (`{ env = "VAR" }`), in the
/// main file or any job file loaded so far: no job's process sees them. A name stays on the
/// list for the daemon's life, even when a reload drops its reference.
static SECRET_ENV: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Puts `name` on the list of variables no job may see.
pub fn hide_env(name: &str) {
    if let Ok(mut names) = SECRET_ENV.lock()
        && !names.contains(name)
    {
        names.insert(name.to_string());
    }
}

/// The variables no job may see.
pub fn hidden_env() -> Vec<String> {
    SECRET_ENV
        .lock()
        .map(|n| n.iter().cloned().collect())
        .unwrap_or_default()
}

/// A secret value. It is made from its reference (`{ env }` or `{ file }`) while the config
/// is validated, and holds nothing until [`Secret::read`] fills it: the daemon and `check`
/// read every reference, the CLI's other commands never do. Clones share the value, so a
/// reference read once fills every copy made of it.
#[derive(Clone)]
pub struct Secret(Arc<OnceLock<SecretString>>);

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the daemon.
    Env(String),
    /// A file; one trailing line break is not part of the value.
    File(String),
}

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: String) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(SecretString::from(value));
        Self(Arc::new(cell))
    }

    /// A secret not read yet.
    pub(crate) fn unread() -> Self {
        Self(Arc::new(OnceLock::new()))
    }

    /// Reads the value from `source` into this secret (and every clone of it).
    ///
    /// # Errors
    /// Why it cannot be read, in the user's words.
    pub(crate) fn read(&self, source: &SecretSource) -> Result<(), String> {
        let value = match source {
            SecretSource::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
            }
            SecretSource::File(file) => std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read secret file {file:?}: {e}"))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        };
        let _ = self.0.set(SecretString::from(value));
        Ok(())
    }

    /// The value, for the one place that sends it (empty when it was never read).
    pub fn expose(&self) -> &str {
        self.0.get().map_or("", ExposeSecret::expose_secret)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s, Secret::new("hunter2".into()));
        assert_ne!(s, Secret::new("other".into()));
    }

    #[test]
    fn a_read_fills_every_clone_and_an_unread_secret_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t\r\n").unwrap();
        let s = Secret::unread();
        let copy = s.clone();
        assert_eq!(copy.expose(), "");
        s.read(&SecretSource::File(path.display().to_string()))
            .unwrap();
        assert_eq!(copy.expose(), "s3cr3t");
        let missing = SecretSource::Env("HOURGLASS_TEST_NEVER_SET".into());
        assert_eq!(
            Secret::unread().read(&missing).unwrap_err(),
            "environment variable HOURGLASS_TEST_NEVER_SET is not set"
        );
    }
}
