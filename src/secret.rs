//! Secret strings (passwords, tokens, keys): loaded by the config module from an environment
//! variable or a file, compared for reload diffs, shown as `[REDACTED]` by `Debug`, and exposed
//! only where they are sent.

use secrecy::{ExposeSecret, SecretString};

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
