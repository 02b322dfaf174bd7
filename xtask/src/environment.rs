//! The environment a run sees: its current directory and its variables, read through the
//! caller's `xshell::Shell` (the xtask convention: a task takes the caller's shell, with its
//! directory and the variables set on it) rather than the process's. `Ctx::new` builds one from
//! the shell it is given and installs it for the run; every read of a variable the tool itself
//! makes (`COMPOSE_*`, `XTASK_*`, `DOCKER_HOST`, the restic password variables, `PATH` for
//! `which`) goes through [`var`], and every child the one spawn path starts gets what the shell
//! changed ([`overrides`]), so `sh.set_var("COMPOSE_PROFILES", "db")` reaches `docker compose`
//! as it would reach `cmd!(sh, "docker compose …")`.
//!
//! A shell cannot list the variables set on it, so the environment is read by name: every
//! variable of the process, the names the tool reads ([`TOOL_VARS`]) and the names the stack's
//! compose and `.env` files interpolate (given by the caller).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Variables the tool reads itself, besides those a stack's files name.
pub const TOOL_VARS: &[&str] = &[
    "COMPOSE_FILE",
    "COMPOSE_PATH_SEPARATOR",
    "COMPOSE_PROJECT_NAME",
    "COMPOSE_PROFILES",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "PATH",
    "HOME",
    "USER",
    "XDG_CONFIG_HOME",
    "TMPDIR",
    "XTASK_BACKUP_DIR",
    "XTASK_HELPER_IMAGE",
    "XTASK_TRANSPORT",
    "XTASK_SIGNING_KEY",
    "XTASK_AGE_IDENTITY",
    "RESTIC_PASSWORD",
    "RESTIC_PASSWORD_FILE",
    "RESTIC_PASSWORD_COMMAND",
    "RCLONE_CONFIG",
    "XTASK_NOTIFY_TIMEOUT",
];

/// A run's directory and variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    cwd: PathBuf,
    vars: BTreeMap<String, String>,
    /// What differs from the process's own environment: the children get these.
    overrides: Vec<(String, String)>,
}

impl Environment {
    /// The process's own directory and variables (nothing to pass on to children).
    pub fn process() -> Environment {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Environment { cwd, vars: std::env::vars().collect(), overrides: Vec::new() }
    }

    /// The shell's directory and its view of the process's variables, [`TOOL_VARS`] and
    /// `names` (a variable that is not valid UTF-8 is left out, as `std::env::vars` would fail).
    pub fn of_shell(sh: &xshell::Shell, names: &[String]) -> Environment {
        let mut wanted: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
        wanted.extend(TOOL_VARS.iter().map(OsString::from));
        wanted.extend(names.iter().map(OsString::from));
        let (mut vars, mut overrides) = (BTreeMap::new(), Vec::new());
        for name in wanted {
            let (Some(key), Some(value)) = (name.to_str(), sh.var_os(&name)) else { continue };
            let Some(value) = value.to_str() else { continue };
            if std::env::var_os(&name).as_deref() != Some(std::ffi::OsStr::new(value)) {
                overrides.push((key.to_string(), value.to_string()));
            }
            vars.insert(key.to_string(), value.to_string());
        }
        overrides.sort();
        overrides.dedup();
        Environment { cwd: sh.current_dir(), vars, overrides }
    }

    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Every variable read (for the compose files' interpolation).
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// A variable's value; None when unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

static CURRENT: RwLock<Option<Arc<Environment>>> = RwLock::new(None);

/// Makes `env` the run's environment (the last context made wins: one stack per process at a
/// time, as the command line runs it).
pub fn install(env: Environment) {
    let mut current = CURRENT.write().unwrap_or_else(|e| e.into_inner());
    *current = Some(Arc::new(env));
}

/// The run's environment: the one installed, else the process's.
pub fn current() -> Arc<Environment> {
    let installed = CURRENT.read().unwrap_or_else(|e| e.into_inner()).clone();
    installed.unwrap_or_else(|| Arc::new(Environment::process()))
}

/// A variable of the run's environment; None when unset or empty.
pub fn var(name: &str) -> Option<String> {
    current().get(name).map(str::to_string)
}

/// The variables every child must get on top of the process's environment.
pub fn overrides() -> Vec<(String, String)> {
    current().overrides.clone()
}

/// The run's current directory.
pub fn cwd() -> PathBuf {
    current().cwd.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_gives_its_directory_and_the_variables_set_on_it() {
        let sh = xshell::Shell::new().unwrap();
        let dir = std::env::temp_dir();
        sh.change_dir(&dir);
        sh.set_var("XTASK_TEST_ONLY_ON_THE_SHELL", "from the shell");
        sh.set_var("COMPOSE_PROFILES", "db");
        let env = Environment::of_shell(&sh, &["XTASK_TEST_ONLY_ON_THE_SHELL".to_string()]);
        assert_eq!(env.cwd(), dir);
        assert_eq!(env.get("XTASK_TEST_ONLY_ON_THE_SHELL"), Some("from the shell"));
        assert_eq!(env.get("COMPOSE_PROFILES"), Some("db"));
        assert!(env.overrides.contains(&("COMPOSE_PROFILES".to_string(), "db".to_string())));
        assert!(env.get("PATH").is_some(), "the process's variables are seen through the shell");
        assert!(!env.overrides.iter().any(|(k, _)| k == "PATH"), "an unchanged variable is not passed on");
        let unnamed = Environment::of_shell(&sh, &[]);
        assert_eq!(unnamed.get("XTASK_TEST_ONLY_ON_THE_SHELL"), None, "read by name only");
    }

    #[test]
    fn empty_is_unset() {
        let env = Environment {
            cwd: PathBuf::from("/"),
            vars: [("A".to_string(), String::new()), ("B".to_string(), "b".to_string())].into(),
            overrides: Vec::new(),
        };
        assert_eq!((env.get("A"), env.get("B"), env.get("C")), (None, Some("b"), None));
    }
}
