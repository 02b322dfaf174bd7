//! The library face as another repository's xtask uses it: the context is made from the
//! caller's `xshell::Shell`, whose directory and variables (set on the shell, not the process)
//! choose the compose file and fill its interpolation. Offline: nothing here needs the engine.

use xtask::context::Ctx;
use xtask::model::compose::Selection;

#[test]
fn the_callers_shell_chooses_the_stack_and_fills_its_variables() {
    let dir = std::env::temp_dir().join(format!("xtask-library-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("deploy")).unwrap();
    let compose = "services:\n  app:\n    image: busybox\n    volumes: [data:/data]\n\
                   volumes:\n  data:\n    name: ${LIBRARY_TEST_PREFIX:?set it}-data\n";
    std::fs::write(dir.join("deploy/compose.yaml"), compose).unwrap();
    let sh = xshell::Shell::new().unwrap();
    sh.change_dir(&dir);
    sh.set_var("COMPOSE_FILE", "deploy/compose.yaml");
    sh.set_var("COMPOSE_PROJECT_NAME", "from-the-shell");
    sh.set_var("LIBRARY_TEST_PREFIX", "shell-set");
    let ctx = Ctx::new(&sh, &Selection::default(), true, false, false, true);
    let ctx = ctx.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(ctx.stack.name, "from-the-shell");
    assert_eq!(ctx.stack.project_dir, dir.join("deploy"), "the file is found from the shell's directory");
    let names: Vec<String> = ctx.project().unwrap().volumes.iter().map(|v| v.name.clone()).collect();
    assert_eq!(names, ["shell-set-data"], "a variable set on the shell only fills the compose file");
    assert_eq!(xtask::environment::var("LIBRARY_TEST_PREFIX").as_deref(), Some("shell-set"));
    assert!(std::env::var_os("LIBRARY_TEST_PREFIX").is_none(), "the process's own environment is untouched");
    std::fs::remove_dir_all(&dir).unwrap();
}
