//! Variable interpolation as the Compose specification defines it: `$VAR`, `${VAR}`,
//! `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`,
//! `${VAR+alt}`, nested expressions inside the default, `$$` for a literal `$`, and a `$` not
//! followed by `{`, `$` or a name taken literally (as Compose does).

/// Why a string could not be interpolated; the caller adds the file and key.
#[derive(Debug, PartialEq, Eq)]
pub enum InterpolationError {
    /// `${VAR:?msg}` or `${VAR?msg}` with VAR unset (or empty, for `:?`).
    Required { var: String, message: String },
    /// Malformed syntax, e.g. an unclosed `${` or a lone `$`.
    Syntax(String),
}

impl std::fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterpolationError::Required { var, message } if message.is_empty() => {
                write!(f, "required variable {var} is missing a value: set it in the environment or the .env file")
            }
            InterpolationError::Required { var, message } => {
                write!(f, "required variable {var} is missing a value: {message}")
            }
            InterpolationError::Syntax(s) => {
                write!(f, "invalid interpolation format in \"{s}\": use $$ for a literal $")
            }
        }
    }
}

/// Replaces every variable reference in `input`, looking names up with `lookup`.
pub fn interpolate(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let syntax = || InterpolationError::Syntax(input.to_string());
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body_start) = after.strip_prefix('{') {
            let end = matching_brace(body_start).ok_or_else(syntax)?;
            out.push_str(&expand(&body_start[..end], input, lookup)?);
            rest = &body_start[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                // Like Compose: a `$` not followed by `{`, `$` or a name is a literal `$`
                // (`$(date)` in a command, a trailing `5$`).
                out.push('$');
                rest = after;
                continue;
            }
            out.push_str(&lookup(&after[..len]).unwrap_or_default());
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Length of the variable name at the start of `s` (`[A-Za-z_][A-Za-z0-9_]*`).
fn name_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return 0,
    }
    chars.find(|&(_, c)| !(c == '_' || c.is_ascii_alphanumeric())).map_or(s.len(), |(i, _)| i)
}

/// Index of the `}` closing a `${` whose body starts at `s`, honouring nested `${...}`.
fn matching_brace(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Expands the inside of one `${...}`.
fn expand(body: &str, whole: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, InterpolationError> {
    let len = name_len(body);
    if len == 0 {
        return Err(InterpolationError::Syntax(whole.to_string()));
    }
    let (name, op) = body.split_at(len);
    let value = lookup(name);
    let set = value.is_some();
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (op, arg) = if op.is_empty() {
        return Ok(value.unwrap_or_default());
    } else if let Some(arg) = op.strip_prefix(":-") {
        (":-", arg)
    } else if let Some(arg) = op.strip_prefix(":?") {
        (":?", arg)
    } else if let Some(arg) = op.strip_prefix(":+") {
        (":+", arg)
    } else {
        op.split_at(1)
    };
    let arg = || interpolate(arg, lookup);
    match op {
        ":-" if non_empty => Ok(value.unwrap_or_default()),
        ":-" => arg(),
        "-" if set => Ok(value.unwrap_or_default()),
        "-" => arg(),
        ":?" if non_empty => Ok(value.unwrap_or_default()),
        "?" if set => Ok(value.unwrap_or_default()),
        ":?" | "?" => Err(InterpolationError::Required { var: name.to_string(), message: arg()? }),
        ":+" if non_empty => arg(),
        "+" if set => arg(),
        ":+" | "+" => Ok(String::new()),
        _ => Err(InterpolationError::Syntax(whole.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &str) -> Result<String, InterpolationError> {
        let env = |k: &str| match k {
            "SET" => Some("value".to_string()),
            "EMPTY" => Some(String::new()),
            "NESTED" => Some("inner".to_string()),
            _ => None,
        };
        interpolate(s, &env)
    }

    #[test]
    fn plain_and_braced_references() {
        assert_eq!(run("a $SET b ${SET}c").unwrap(), "a value b valuec");
        assert_eq!(run("$UNSET-x").unwrap(), "-x");
        assert_eq!(run("no vars").unwrap(), "no vars");
    }

    #[test]
    fn defaults_distinguish_unset_from_empty() {
        assert_eq!(run("${UNSET:-d}").unwrap(), "d");
        assert_eq!(run("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(run("${EMPTY-d}").unwrap(), "");
        assert_eq!(run("${UNSET-d}").unwrap(), "d");
        assert_eq!(run("${SET:-d}").unwrap(), "value");
    }

    #[test]
    fn alternatives() {
        assert_eq!(run("${SET:+alt}").unwrap(), "alt");
        assert_eq!(run("${EMPTY:+alt}").unwrap(), "");
        assert_eq!(run("${EMPTY+alt}").unwrap(), "alt");
        assert_eq!(run("${UNSET+alt}").unwrap(), "");
    }

    #[test]
    fn nested_default_is_interpolated() {
        assert_eq!(run("${UNSET:-${NESTED}-x}").unwrap(), "inner-x");
        assert_eq!(run("${UNSET:-${ALSO_UNSET:-deep}}").unwrap(), "deep");
    }

    #[test]
    fn dollar_escape() {
        assert_eq!(run("$$SET and $${SET}").unwrap(), "$SET and ${SET}");
    }

    #[test]
    fn required_variables() {
        assert_eq!(
            run("${UNSET:?set UNSET please}").unwrap_err(),
            InterpolationError::Required { var: "UNSET".into(), message: "set UNSET please".into() }
        );
        assert!(run("${EMPTY:?x}").is_err());
        assert_eq!(run("${EMPTY?x}").unwrap(), "");
        assert!(run("${UNSET?}").unwrap_err().to_string().contains("UNSET"));
    }

    #[test]
    fn malformed_syntax_is_an_error() {
        assert!(matches!(run("${SET"), Err(InterpolationError::Syntax(_))));
        // As `docker compose config` does: these are literal dollars.
        assert_eq!(run("cost: 5$").unwrap(), "cost: 5$");
        assert_eq!(run("echo $(date) a$-b").unwrap(), "echo $(date) a$-b");
        assert!(matches!(run("${}"), Err(InterpolationError::Syntax(_))));
        assert!(matches!(run("${SET!x}"), Err(InterpolationError::Syntax(_))));
    }
}
