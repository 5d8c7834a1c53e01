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

/// Every secret value read so far, and its base64 forms, longest first: the log writer
/// blanks them out of every line, whatever wrote it (see `logging`).
static KNOWN: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Values shorter than this are not blanked out of log lines (they would blank ordinary
/// words); no secret the config accepts is that short where it matters (tokens are 16 bytes
/// at least).
const SHORTEST_REDACTED: usize = 6;

/// Remembers `value` (and its base64 forms) as a secret to blank out of log lines.
fn remember(value: &str) {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let value = value.trim();
    if value.len() < SHORTEST_REDACTED {
        return;
    }
    let forms = [
        value.to_string(),
        STANDARD.encode(value),
        STANDARD_NO_PAD.encode(value),
        URL_SAFE.encode(value),
        URL_SAFE_NO_PAD.encode(value),
    ];
    let Ok(mut known) = KNOWN.write() else { return };
    for form in forms {
        if !known.contains(&form) {
            known.push(form);
        }
    }
    known.sort_by_key(|k| std::cmp::Reverse(k.len()));
}

/// `text` with every secret read so far (and its base64 forms) replaced by `[REDACTED]`;
/// `None` when it holds none.
pub fn redact(text: &str) -> Option<String> {
    let known = KNOWN.read().ok()?;
    if !known.iter().any(|k| text.contains(k.as_str())) {
        return None;
    }
    let mut out = text.to_string();
    for k in known.iter() {
        if out.contains(k.as_str()) {
            out = out.replace(k.as_str(), "[REDACTED]");
        }
    }
    Some(out)
}

/// A secret value. It is made from its reference (`{ env }` or `{ file }`) while the config
/// is validated, and holds nothing until [`Secret::read`] fills it: the daemon and `check`
/// read every reference, the CLI's other commands only the ones they use. Clones share the
/// value, so a reference read once fills every copy made of it.
#[derive(Clone)]
pub struct Secret(Arc<Cell>);

struct Cell {
    source: Option<SecretSource>,
    value: OnceLock<SecretString>,
}

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
        let cell = Cell {
            source: None,
            value: OnceLock::new(),
        };
        remember(&value);
        let _ = cell.value.set(SecretString::from(value));
        Self(Arc::new(cell))
    }

    /// A secret to be read from `source`.
    pub(crate) fn unread(source: SecretSource) -> Self {
        Self(Arc::new(Cell {
            source: Some(source),
            value: OnceLock::new(),
        }))
    }

    /// Reads the value from its source into this secret (and every clone of it), unless it
    /// was read before.
    ///
    /// # Errors
    /// Why it cannot be read, in the user's words.
    pub fn read(&self) -> Result<&str, String> {
        if let Some(v) = self.0.value.get() {
            return Ok(v.expose_secret());
        }
        let value = match &self.0.source {
            None => String::new(),
            Some(SecretSource::Env(var)) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
            }
            Some(SecretSource::File(file)) => std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read secret file {file:?}: {e}"))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        };
        remember(&value);
        Ok(self
            .0
            .value
            .get_or_init(|| SecretString::from(value))
            .expose_secret())
    }

    /// The value, for the one place that sends it (empty when it was never read).
    pub fn expose(&self) -> &str {
        self.0.value.get().map_or("", ExposeSecret::expose_secret)
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
        let s = Secret::unread(SecretSource::File(path.display().to_string()));
        let copy = s.clone();
        assert_eq!(copy.expose(), "");
        s.read().unwrap();
        assert_eq!(copy.expose(), "s3cr3t");
        let missing = SecretSource::Env("HOURGLASS_TEST_NEVER_SET".into());
        assert_eq!(
            Secret::unread(missing).read().unwrap_err(),
            "environment variable HOURGLASS_TEST_NEVER_SET is not set"
        );
    }
}
