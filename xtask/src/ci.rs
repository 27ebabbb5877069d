//! `cargo xtask ci` and `cargo xtask test`: a fixed list of steps, run in order, stopping at the first failure. Both
//! begin with `setup`, which installs or starts what the tests need on this machine.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

struct Step {
    name: &'static str,
    action: Action,
    /// Printed after a failure, for steps whose usual failure is a missing tool.
    hint: Option<&'static str>,
}

enum Action {
    Cargo {
        args: &'static [&'static str],
        env: &'static [(&'static str, &'static str)],
    },
    Tidy,
    Setup,
}

/// What the tests need on this machine, installed or started if missing.
const SETUP: Step = Step {
    name: "setup",
    action: Action::Setup,
    hint: Some("`cargo xtask setup` alone repeats this step; it says what it installs and starts"),
};

const NEXTEST: Step = Step {
    name: "test",
    action: Action::Cargo {
        args: &["nextest", "run", "--workspace", "--all-features", "--no-fail-fast"],
        env: &[],
    },
    hint: Some("needs cargo-nextest: `cargo install cargo-nextest --locked`"),
};

/// nextest does not run doctests.
const DOCTEST: Step = Step {
    name: "doctest",
    action: Action::Cargo {
        args: &["test", "--workspace", "--all-features", "--doc"],
        env: &[],
    },
    hint: None,
};

/// The README's main job, small: it must keep working on a fresh machine.
const QUICKSTART: Step = Step {
    name: "quickstart",
    action: Action::Cargo {
        args: &["run", "--quiet", "--example", "quickstart", "--", "--records", "500"],
        env: &[],
    },
    hint: Some("the README's `cargo run --example quickstart` failed: run it to see why"),
};

/// Clippy on the outbox and the records with only the databases `features` names (none when empty).
macro_rules! databases {
    ($name:literal, $features:literal) => {
        Step {
            name: $name,
            action: Action::Cargo {
                args: &[
                    "clippy",
                    "-p",
                    "deimos-outbox-diesel",
                    "-p",
                    "deimos-records-diesel",
                    "--no-default-features",
                    "--features",
                    $features,
                    "--",
                    "-D",
                    "warnings",
                ],
                env: &[],
            },
            hint: Some(
                "a `#[cfg(feature = \"postgres\" | \"mysql\" | \"sqlite\")]` is missing or wrong in deimos-outbox-diesel or deimos-records-diesel",
            ),
        }
    };
}

const CI: &[Step] = &[
    SETUP,
    Step {
        name: "fmt",
        action: Action::Cargo {
            args: &["fmt", "--all", "--", "--check"],
            env: &[],
        },
        hint: Some("run `cargo fmt --all` to fix"),
    },
    Step {
        name: "clippy",
        action: Action::Cargo {
            args: &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ],
            env: &[],
        },
        hint: None,
    },
    // Each database alone, and none: a service builds the outbox and the records with only its own databases'
    // clients, so every combination must compile without warnings (the steps above build them all together).
    databases!("databases: none", ""),
    databases!("databases: postgres", "deimos-records-diesel/postgres"),
    databases!("databases: mysql", "deimos-records-diesel/mysql"),
    databases!("databases: sqlite", "deimos-records-diesel/sqlite"),
    NEXTEST,
    DOCTEST,
    QUICKSTART,
    Step {
        name: "doc",
        action: Action::Cargo {
            args: &["doc", "--workspace", "--all-features", "--no-deps"],
            env: &[("RUSTDOCFLAGS", "-D warnings")],
        },
        hint: None,
    },
    Step {
        name: "tidy",
        action: Action::Tidy,
        hint: Some(
            "the rules are in docs/ARCHITECTURE.md (\"Checked, not remembered\"); the layer table is in xtask/src/tidy.rs",
        ),
    },
    Step {
        name: "deny",
        action: Action::Cargo {
            args: &["deny", "check", "licenses", "bans", "sources"],
            env: &[],
        },
        hint: Some("needs cargo-deny: `cargo install cargo-deny --locked`; configuration in deny.toml"),
    },
];

const TEST: &[Step] = &[SETUP, NEXTEST, DOCTEST];

/// `cargo xtask ci`.
pub(crate) fn ci(root: &Path) -> Result<()> {
    run_steps(root, "ci", CI)
}

/// `cargo xtask test`.
pub(crate) fn test(root: &Path) -> Result<()> {
    run_steps(root, "test", TEST)
}

fn run_steps(root: &Path, label: &str, steps: &[Step]) -> Result<()> {
    let started = Instant::now();
    let mut done: Vec<(&str, Duration)> = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let step_started = Instant::now();
        let mut command = match &step.action {
            Action::Cargo { args, env } => {
                let mut command = crate::cargo(root);
                command.args(*args).envs(env.iter().copied());
                Some(command)
            }
            Action::Tidy | Action::Setup => None,
        };
        let what = match (&command, &step.action) {
            (Some(command), _) => crate::describe(command),
            (None, Action::Setup) => "cargo xtask setup".to_string(),
            (None, _) => "cargo xtask tidy".to_string(),
        };
        println!("{label}: [{}/{}] {}: {what}", index + 1, steps.len(), step.name);
        let result = match command.as_mut() {
            Some(command) => crate::run_command(command),
            None if matches!(step.action, Action::Setup) => crate::setup::run(),
            None => crate::tidy::run(root),
        };
        let took = step_started.elapsed();
        match result {
            Ok(()) => {
                println!("{label}: {} ok in {}", step.name, crate::format_duration(took));
                done.push((step.name, took));
            }
            Err(err) => {
                print_summary(label, &done, Some((step.name, took)));
                let hint = step.hint.map(|hint| format!("\nhint: {hint}")).unwrap_or_default();
                bail!(
                    "{label} step `{}` failed after {}: {err:#}{hint}",
                    step.name,
                    crate::format_duration(took)
                );
            }
        }
    }
    print_summary(label, &done, None);
    println!(
        "{label}: all {} steps passed in {}",
        steps.len(),
        crate::format_duration(started.elapsed())
    );
    Ok(())
}

fn print_summary(label: &str, done: &[(&str, Duration)], failed: Option<(&str, Duration)>) {
    println!("{label} summary:");
    for (name, took) in done {
        println!("  {name:<10} ok      {:>8}", crate::format_duration(*took));
    }
    if let Some((name, took)) = failed {
        println!("  {name:<10} FAILED  {:>8}", crate::format_duration(took));
    }
}
