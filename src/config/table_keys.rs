//! The keys a config table takes, and every key it does not take reported at once (serde
//! stops at the first unknown key: `evry` and `comand` in one job were told one by one).

use serde::de::DeserializeOwned;

use crate::problem::Located;

/// The keys a table's type takes, as serde lists them in its own error.
#[derive(Debug)]
pub(crate) struct TableKeys {
    /// The list as serde writes it (`` one of `a`, `b` ``).
    expected: String,
    names: Vec<String>,
}

impl TableKeys {
    /// Reads `T`'s keys from serde's error for a key no type takes.
    pub(crate) fn of<T: DeserializeOwned>() -> Self {
        let told = toml::from_str::<T>("hourglass-probe = 0")
            .err()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        let expected = told
            .split_once(", expected ")
            .map_or("", |(_, list)| list.trim())
            .to_string();
        let names = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(ToString::to_string)
            .collect();
        Self { expected, names }
    }

    /// Reports every key of `value` (a table) not taken, each as serde would (with the
    /// nearest known name), and takes them out; whether there was one.
    pub(crate) fn drop_unknown(
        &self,
        value: &mut toml::Spanned<toml::de::DeValue<'_>>,
        at: &mut Located<'_>,
    ) -> bool {
        let toml::de::DeValue::Table(table) = value.get_mut() else {
            return false;
        };
        if self.names.is_empty() {
            return false;
        }
        let unknown: Vec<String> = table
            .keys()
            .map(|k| k.get_ref().to_string())
            .filter(|k| !self.names.contains(k))
            .collect();
        for key in &unknown {
            let told = format!("unknown field `{key}`, expected {}", self.expected);
            at.push(Some(key), crate::config::messages::humanize(&told));
            table.remove(key.as_str());
        }
        !unknown.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::TableKeys;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Two {
        every: Option<String>,
        command: Option<String>,
    }

    #[test]
    fn the_keys_are_read_from_serde() {
        assert_eq!(TableKeys::of::<Two>().names, ["every", "command"]);
    }
}
