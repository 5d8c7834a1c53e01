//! Deserialization errors retold in the config's words: serde speaks of `u32`, `struct` and
//! variants; a user wrote a number, a table or a value, and wants to know what to write instead
//! (with the nearest known name for a misspelt one).

/// Retells one serde error message; messages it does not know are returned unchanged.
pub fn humanize(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (value, expected) = split_expected(rest);
        return format!(
            "\"{}\" is not one of {}",
            unquote(value),
            quoted_list(expected)
        );
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (value, expected) = split_expected(rest);
        let value = unquote(value);
        let names = names(expected);
        if names.is_empty() {
            return format!("unknown key \"{value}\": this table takes no keys");
        }
        return match nearest(value, &names) {
            Some(near) => format!("unknown key \"{value}\" (did you mean \"{near}\"?)"),
            None => format!(
                "unknown key \"{value}\"; expected one of {}",
                quoted_list(expected)
            ),
        };
    }
    if message == "wanted string or table" {
        return "expected a value in quotes".into();
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("missing key \"{}\"", unquote(rest));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.split_once(", expected ")
        {
            return format!(
                "expected {}, found {}",
                expected_words(expected),
                found_words(found)
            );
        }
    }
    if let Some(rest) = message.strip_prefix("invalid length ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        return format!("expected {}", expected_words(expected));
    }
    message.to_string()
}

/// `` `x`, expected one of `a`, `b` `` → (`` `x` ``, `` `a`, `b` ``).
fn split_expected(rest: &str) -> (&str, &str) {
    match rest.split_once(", expected ") {
        Some((v, e)) => (v, e.strip_prefix("one of ").unwrap_or(e)),
        None => (
            rest.split(',').next().unwrap_or(rest),
            rest.split_once(", there are no ").map_or("", |_| ""),
        ),
    }
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches('`')
}

/// The names in serde's `` `a`, `b` or `c` `` list.
fn names(list: &str) -> Vec<&str> {
    list.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, n)| n)
        .collect()
}

fn quoted_list(list: &str) -> String {
    let names = names(list);
    if names.is_empty() {
        return list.to_string();
    }
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The known name closest to `value`, if it is a likely typo of it.
fn nearest<'a>(value: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (strsim::damerau_levenshtein(value, n), *n))
        .filter(|(d, n)| *d <= 2 && *d < n.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// serde's name of an expected type, in config words.
fn expected_words(expected: &str) -> String {
    let e = expected.trim();
    let words = match e {
        "u16" => "a whole number from 0 to 65535",
        "u8" | "u32" | "u64" | "usize" => "a whole number (0 or more)",
        "string or map" | "string or table" => "a value in quotes",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" | "a borrowed string" | "string" => "a string in quotes",
        "a sequence" => "a list [...]",
        "a map" => "a table",
        _ if e.starts_with("struct ") => "a table",
        _ if e.starts_with("a sequence") => "a list [...]",
        _ if e.starts_with("a map") => "a table",
        _ => return e.to_string(),
    };
    words.to_string()
}

/// serde's description of a value found, in config words.
fn found_words(found: &str) -> String {
    let f = found.trim();
    if let Some(v) = f.strip_prefix("string ") {
        return format!("the string {v}");
    }
    if let Some(v) = f.strip_prefix("integer ") {
        return format!("the number {}", v.trim_matches('`'));
    }
    if let Some(v) = f.strip_prefix("floating point ") {
        return format!("the number {}", v.trim_matches('`'));
    }
    if let Some(v) = f.strip_prefix("boolean ") {
        return v.trim_matches('`').to_string();
    }
    match f {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        _ => f.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::humanize;

    #[test]
    fn serde_messages_in_the_users_words() {
        assert_eq!(
            humanize("unknown variant `xml`, expected `plain` or `json`"),
            "\"xml\" is not one of \"plain\", \"json\""
        );
        assert_eq!(
            humanize("unknown field `schedul`, expected one of `schedule`, `every`, `at`"),
            "unknown key \"schedul\" (did you mean \"schedule\"?)"
        );
        assert_eq!(
            humanize("unknown field `zzz`, expected `env` or `file`"),
            "unknown key \"zzz\"; expected one of \"env\", \"file\""
        );
        assert_eq!(
            humanize("invalid type: string \"3\", expected u32"),
            "expected a whole number (0 or more), found the string \"3\""
        );
        assert_eq!(
            humanize("invalid value: integer `-1`, expected u32"),
            "expected a whole number (0 or more), found the number -1"
        );
        assert_eq!(
            humanize("invalid type: integer `5`, expected a string"),
            "expected a string in quotes, found the number 5"
        );
        assert_eq!(humanize("missing field `to`"), "missing key \"to\"");
        assert_eq!(humanize("something else"), "something else");
    }
}
