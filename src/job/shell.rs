//! The shell a command line runs under (`shell`, per job or `daemon.shell`): `/bin/sh` as cron
//! does, or bash with `pipefail`, or a program of the user's choosing; and the warning for a
//! pipeline whose failure `/bin/sh` would hide.

use crate::problem::Located;

/// The shell that runs a command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Shell {
    /// `/bin/sh -c LINE`, as cron: a pipeline's status is its last command's.
    #[default]
    Sh,
    /// `bash -o pipefail -c LINE`: a pipeline fails when any of its commands fails.
    Bash,
    /// The program and its first arguments; the line comes last (`["/usr/bin/zsh", "-c"]`).
    Argv(Vec<String>),
}

impl Shell {
    /// The program and arguments that run `line`.
    pub fn argv<'a>(&'a self, line: &'a str) -> Vec<&'a str> {
        let mut argv: Vec<&str> = match self {
            Shell::Sh => vec!["/bin/sh", "-c"],
            Shell::Bash => vec!["bash", "-o", "pipefail", "-c"],
            Shell::Argv(a) => a.iter().map(String::as_str).collect(),
        };
        argv.push(line);
        argv
    }

    /// How it is written in the config.
    pub fn describe(&self) -> String {
        match self {
            Shell::Sh => "sh (/bin/sh -c)".into(),
            Shell::Bash => "bash (bash -o pipefail -c)".into(),
            Shell::Argv(a) => format!("{a:?}"),
        }
    }
}

/// `shell` as written: a name or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawShell {
    /// `"sh"` or `"bash"`.
    Name(String),
    /// The program and its first arguments.
    Argv(Vec<String>),
}

impl<'de> serde::Deserialize<'de> for RawShell {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match string_or_list(d, EXPECTED)? {
            Ok(name) => RawShell::Name(name),
            Err(argv) => RawShell::Argv(argv),
        })
    }
}

/// A value written as a string (`Ok`) or a list of strings (`Err`), as `command` and `shell`
/// take; `expecting` says what else was expected.
pub(crate) fn string_or_list<'de, D: serde::Deserializer<'de>>(
    d: D,
    expecting: &'static str,
) -> Result<Result<String, Vec<String>>, D::Error> {
    struct Written(&'static str);
    impl<'de> serde::de::Visitor<'de> for Written {
        type Value = Result<String, Vec<String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Ok(v.to_string()))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut list = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                list.push(item);
            }
            Ok(Err(list))
        }
    }
    d.deserialize_any(Written(expecting))
}

const EXPECTED: &str = "\"sh\" (/bin/sh -c), \"bash\" (bash -o pipefail -c) or a list of the \
     program and its first arguments, the line coming last, e.g. [\"/usr/bin/zsh\", \"-o\", \
     \"pipefail\", \"-c\"]";

/// Validates `shell` (problems go to `at` under `field`).
pub(crate) fn shell(raw: &RawShell, field: &str, at: &mut Located<'_>) -> Shell {
    match raw {
        RawShell::Name(n) if n == "sh" => Shell::Sh,
        RawShell::Name(n) if n == "bash" => Shell::Bash,
        RawShell::Name(n) => {
            at.push(
                Some(field),
                format!("{n:?} is not a shell this knows; expected {EXPECTED}"),
            );
            Shell::Sh
        }
        RawShell::Argv(a) if a.first().is_none_or(|p| p.trim().is_empty()) => {
            at.push(
                Some(field),
                format!("the program (the list's first item) is missing; expected {EXPECTED}"),
            );
            Shell::Sh
        }
        RawShell::Argv(a) if a.iter().any(|x| x.contains('\0')) => {
            at.push(
                Some(field),
                "contains a NUL byte, which no program can be given",
            );
            Shell::Sh
        }
        RawShell::Argv(a) => Shell::Argv(a.clone()),
    }
}

/// The first command of a pipeline in `line` whose failure `/bin/sh` would hide (its status
/// is the last command's): the text before the first `|` that is not `||`, outside quotes
/// and comments.
pub fn hidden_failure(line: &str) -> Option<&str> {
    let bytes = line.as_bytes();
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            _ if escaped => escaped = false,
            b'\\' if !single => escaped = true,
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'\n' | b';' | b'&' if !single && !double => {
                if c == b'&' && bytes.get(i + 1) == Some(&b'&') {
                    i += 1;
                }
                start = i + 1;
            }
            b'#' if !single && !double && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                match line[i..].find('\n') {
                    Some(n) => i += n,
                    None => return None,
                }
                start = i + 1;
            }
            b'|' if !single && !double => {
                if bytes.get(i + 1) == Some(&b'|') {
                    i += 2;
                    start = i;
                    continue;
                }
                if i > 0 && bytes[i - 1] == b'>' {
                    i += 1;
                    continue;
                }
                let first = line[start..i].trim();
                if !first.is_empty() {
                    return Some(first);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_that_hide_a_failure_are_found_and_others_are_not() {
        let cases = [
            ("pg_dump app | gzip > /b/x.gz", Some("pg_dump app")),
            ("a && b | c", Some("b")),
            ("a; tar c . | ssh h 'cat > x'", Some("tar c .")),
            ("a || b", None),
            ("echo 'a | b'", None),
            ("echo \"a | b\" > f", None),
            ("echo a \\| b", None),
            ("date >| f", None),
            ("true # x | y", None),
            ("true # x\nls | wc -l", Some("ls")),
            ("grep -c x f || true", None),
        ];
        for (line, want) in cases {
            assert_eq!(hidden_failure(line), want, "{line}");
        }
    }

    #[test]
    fn each_shell_runs_the_line_last() {
        assert_eq!(Shell::Sh.argv("x"), ["/bin/sh", "-c", "x"]);
        assert_eq!(Shell::Bash.argv("x"), ["bash", "-o", "pipefail", "-c", "x"]);
        let zsh = Shell::Argv(vec!["/usr/bin/zsh".into(), "-c".into()]);
        assert_eq!(zsh.argv("x"), ["/usr/bin/zsh", "-c", "x"]);
    }
}
