//! Project automation for deimos-rs, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! - `setup`: installs or starts what the tests need on this machine (cargo tools, C libraries, Python's Confluent
//!   client, the databases), saying what it does; the first step of `ci` and `test`.
//! - `ci`: fmt, clippy, tests, the quickstart (small), doc build, tidy, deny; what CI runs and what you run before you stop.
//! - `test`: the tests only (nextest, then doctests).
//! - `tidy`: checks the workspace layout and crate layering against the rules in `docs/ARCHITECTURE.md`.
//! - `bench [suite]`: runs bench suites and prints their results as one table.
//! - `codegen`: regenerates the Rust types of `schemas/` into `tests/src/generated.rs`.
//!
//! Everything shells out to `cargo` through [`std::process::Command`].

mod bench;
mod ci;
mod metadata;
mod setup;
mod tidy;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};

const HELP: &str = "\
usage: cargo xtask <command>

commands:
  setup          install or start what the tests need here (cargo-nextest, cargo-deny, libpq, the MySQL client,
                 Python's Confluent client, PostgreSQL and MariaDB); says what it does, does nothing twice
  ci             setup, fmt, clippy, tests (nextest + doctests), the quickstart (500 rows), doc build, tidy, cargo deny; stops at the first failure
  test           setup, nextest over the workspace, then doctests
  tidy           check crate names, manifests, READMEs, layering and the facade (rules in docs/ARCHITECTURE.md)
  bench [suite]  run a bench suite (or all), print one table, write target/deimos-bench/<suite>.json
  codegen        regenerate the Rust types of schemas/ into tests/src/generated.rs (a test checks it is current)
  help           this text";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => {
            println!("{HELP}");
            bail!("no command given");
        }
    };
    match command {
        "ci" => {
            no_arguments(command, rest)?;
            ci::ci(&root)
        }
        "setup" => {
            no_arguments(command, rest)?;
            setup::run()
        }
        "test" => {
            no_arguments(command, rest)?;
            ci::test(&root)
        }
        "tidy" => {
            no_arguments(command, rest)?;
            tidy::run(&root)
        }
        "bench" => match rest {
            [] => bench::run(&root, None),
            [suite] => bench::run(&root, Some(suite)),
            _ => bail!("`bench` takes at most one suite name, got {rest:?}"),
        },
        "codegen" => {
            no_arguments(command, rest)?;
            codegen(&root)
        }
        "help" | "-h" | "--help" => {
            println!("{HELP}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{HELP}"),
    }
}

/// The generated types of this repository's fixtures: what `tests/tests/codegen.rs` compares with a fresh run.
fn codegen(root: &Path) -> Result<()> {
    let out = root.join(GENERATED);
    let wrote = deimos_codegen::Codegen::from_dir(root.join("schemas"))?
        .runtime("::deimos::avro")
        .source_name("schemas/")
        .write(&out)?;
    println!(
        "xtask codegen: {} {}",
        if wrote { "wrote" } else { "up to date:" },
        out.display()
    );
    Ok(())
}

/// Where `cargo xtask codegen` writes.
const GENERATED: &str = "tests/src/generated.rs";

fn no_arguments(command: &str, rest: &[String]) -> Result<()> {
    if rest.is_empty() {
        Ok(())
    } else {
        bail!("`{command}` takes no arguments, got {rest:?}")
    }
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// The cargo that runs us (`$CARGO`), or `cargo` from `PATH`.
fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// A `cargo` command with the workspace root as its working directory.
fn cargo(root: &Path) -> Command {
    let mut command = Command::new(cargo_program());
    command.current_dir(root);
    command
}

/// `cargo clippy --workspace ...`-style rendering of a command, with its extra environment, for messages.
fn describe(command: &Command) -> String {
    let mut out = String::new();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            out.push_str(&format!("{}={} ", key.to_string_lossy(), value.to_string_lossy()));
        }
    }
    let program = Path::new(command.get_program());
    let is_cargo = program.file_stem().is_some_and(|stem| stem == "cargo");
    if is_cargo {
        out.push_str("cargo");
    } else {
        out.push_str(&program.to_string_lossy());
    }
    for arg in command.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

/// Runs a command with inherited stdio and fails if it does not exit successfully.
fn run_command(command: &mut Command) -> Result<()> {
    let shown = describe(command);
    let status = command.status().with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// `0.4s`, `12.3s`, `3m07s`.
fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = duration.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test failure whose `Debug` is the plain message (no escaping, no backtrace).
    struct Failure(String);

    impl std::fmt::Debug for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    /// The real workspace follows the rules in docs/ARCHITECTURE.md, so `cargo nextest run --workspace` enforces them.
    #[test]
    fn workspace_is_tidy() -> Result<(), Failure> {
        let violations = tidy::check(&workspace_root()).map_err(|err| Failure(format!("{err:#}")))?;
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Failure(tidy::report(&violations)))
        }
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(format_duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(format_duration(Duration::from_secs(187)), "3m07s");
    }

    #[test]
    fn describe_shows_env_and_args() {
        let mut command = Command::new("cargo");
        command.args(["doc", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings");
        assert_eq!(describe(&command), "RUSTDOCFLAGS=-D warnings cargo doc --no-deps");
    }
}
