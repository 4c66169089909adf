//! CPython interpreters to run Python workloads on, and the call chain the
//! Python tests and benches share.
//!
//! The machine image has pyenv's builds under `~/.pyenv/versions` (a
//! `python3.X` launcher linking `libpython3.X.so`, with symbols for its
//! static functions) and Debian's `/usr/bin/python3.X` (the interpreter
//! linked into a stripped executable).

use std::path::PathBuf;

/// One interpreter.
#[derive(Clone, Debug)]
pub struct Interpreter {
    /// How a report names it: `pyenv 3.11.7`, `Debian /usr/bin/python3.11`.
    pub label: String,
    pub exe: PathBuf,
    pub minor: u8,
    /// Its static C functions have symbols (pyenv's libpython; Debian's
    /// binary is stripped of them).
    pub local_symbols: bool,
}

/// pyenv's build of 3.`minor` (the newest patch release there).
pub fn pyenv(minor: u8) -> Option<Interpreter> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or("/root".into());
    let prefix = format!("3.{minor}.");
    let mut found: Vec<PathBuf> = std::fs::read_dir(home.join(".pyenv/versions"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|p| p.join(format!("bin/python3.{minor}")))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    let exe = found.pop()?;
    let version = exe.parent()?.parent()?.file_name()?.to_str()?.to_string();
    Some(Interpreter {
        label: format!("pyenv {version}"),
        exe,
        minor,
        local_symbols: true,
    })
}

/// Debian's `/usr/bin/python3.minor`, when installed.
pub fn debian(minor: u8) -> Option<Interpreter> {
    let exe = PathBuf::from(format!("/usr/bin/python3.{minor}"));
    exe.exists().then(|| Interpreter {
        label: format!("Debian {}", exe.display()),
        exe,
        minor,
        local_symbols: false,
    })
}

/// Every CPython 3.8 to 3.13 here: pyenv's, then Debian's.
pub fn supported() -> Vec<Interpreter> {
    (8..=13)
        .filter_map(pyenv)
        .chain((8..=13).filter_map(debian))
        .collect()
}

/// `a → b → c`, where `c` loops over a range (line 4, `s += i * i`, is
/// the hot line; line 3, the `for`, the next). A script adds what calls
/// `a`.
pub const CHAIN_FUNCTIONS: &str = "\
def c(n):
    s = 0
    for i in range(n):
        s += i * i
    return s
def b(n):
    return c(n)
def a(n):
    return b(n)
";
