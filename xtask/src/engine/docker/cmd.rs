//! A docker command as plain data: argv plus the secret environment the child gets. Plans hold
//! these; `--dry-run` and `--verbose` print them (secret values as `***`); nothing is ever run
//! through a shell.

use std::fmt;

/// A prepared docker command: argv plus environment for the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerCmd {
    pub args: Vec<String>,
    /// Variables set in the child's environment; their values are secret and never printed.
    pub secret_env: Vec<(String, String)>,
}

impl DockerCmd {
    /// Passes `value` to the child as environment variable `name`, hidden from output and errors.
    /// Pair it with `-e NAME` (no value) in the args so docker forwards it to the container.
    pub fn secret_env(mut self, name: &str, value: &str) -> Self {
        self.secret_env.push((name.to_string(), value.to_string()));
        self
    }

    /// Appends `flag value`.
    pub fn arg_pair(mut self, flag: &str, value: &str) -> Self {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }

    /// The child's stderr with every secret value replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (_, v) in self.secret_env.iter().filter(|(_, v)| !v.is_empty()) {
            out = out.replace(v.as_str(), "***");
        }
        out
    }
}

impl fmt::Display for DockerCmd {
    /// The command as a user could paste it into a shell (secret values shown as `***`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, _) in &self.secret_env {
            write!(f, "{name}=*** ")?;
        }
        write!(f, "docker")?;
        for a in &self.args {
            write!(f, " {}", shell_quote(a))?;
        }
        Ok(())
    }
}

/// Quotes for display only; nothing is ever run through a shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
