//! Secret strings (passwords, tokens, keys): loaded by the config module from an environment
//! variable or a file, compared for reload diffs, shown as `[REDACTED]` by `Debug`, and exposed
//! only where they are sent.

use std::collections::BTreeSet;
use std::sync::Mutex;

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

/// A secret value.
#[derive(Debug, Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Self(SecretString::from(value))
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
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
}
