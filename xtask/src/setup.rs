//! `cargo xtask setup`, the first step of `ci` and `test`: makes this machine able to run the tests.
//!
//! Each prerequisite is checked first and only installed or started when the check fails, so running it again
//! does nothing but print what is there. What it may do, in order:
//!
//! - cargo tools: `cargo install --locked` of cargo-nextest and cargo-deny;
//! - C libraries that `-sys` crates link (libpq for PostgreSQL, the MySQL/MariaDB client), and pkg-config that
//!   finds them: `apt-get install` (through `sudo -n` when not root);
//! - Python's Confluent client with fastavro, for the interoperability tests: `pip install`;
//! - the databases: PostgreSQL on 127.0.0.1:5432 and MariaDB on 127.0.0.1:3306 started when installed but not
//!   answering, and their `test` database created if missing.
//!
//! Something it cannot do (no apt-get, no root and no sudo, a database that is not installed) fails with the
//! command to run by hand.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// `cargo xtask setup`.
pub(crate) fn run() -> Result<()> {
    cargo_tool("cargo-nextest", "nextest")?;
    cargo_tool("cargo-deny", "deny")?;
    system_libraries()?;
    python_client()?;
    postgres()?;
    mariadb()?;
    Ok(())
}

fn say(message: impl std::fmt::Display) {
    println!("setup: {message}");
}

/// Whether `program args` runs and exits successfully (its output hidden).
fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The first line `program args` prints, if it runs and succeeds.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).stdin(Stdio::null()).output().ok()?;
    output.status.success().then(|| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    })
}

/// Runs `program args`, showing its output, after saying so.
fn install(program: &str, args: &[&str]) -> Result<()> {
    let mut command = Command::new(program);
    command.args(args);
    say(format!("running `{}`", crate::describe(&command)));
    crate::run_command(&mut command)
}

fn cargo_tool(package: &str, subcommand: &str) -> Result<()> {
    let cargo = crate::cargo_program();
    let cargo = cargo.to_string_lossy();
    if let Some(version) = first_line(&cargo, &[subcommand, "--version"]) {
        say(format!("{package}: {version}"));
        return Ok(());
    }
    say(format!("{package} is missing; installing it (a few minutes, once)"));
    install(&cargo, &["install", package, "--locked"])
}

fn is_root() -> bool {
    first_line("id", &["-u"]).is_some_and(|uid| uid == "0")
}

/// Debian packages: installed with apt-get, as root or through `sudo -n`.
fn apt_install(packages: &[&str]) -> Result<()> {
    let by_hand = format!("sudo apt-get install -y {}", packages.join(" "));
    if !succeeds("apt-get", &["--version"]) {
        bail!(
            "no apt-get on this machine: install {} with its package manager",
            packages.join(", ")
        );
    }
    let (program, prefix): (&str, &[&str]) = if is_root() {
        ("apt-get", &[])
    } else if succeeds("sudo", &["-n", "true"]) {
        ("sudo", &["-n", "apt-get"])
    } else {
        bail!("installing packages needs root and sudo asks for a password: run `{by_hand}`, then again");
    };
    install(program, &[prefix, &["update", "-qq"]].concat())?;
    let mut args = [prefix, &["install", "-y", "-qq"]].concat();
    args.extend_from_slice(packages);
    let mut command = Command::new(program);
    command.args(&args).env("DEBIAN_FRONTEND", "noninteractive");
    say(format!("running `{}`", crate::describe(&command)));
    crate::run_command(&mut command).with_context(|| format!("could not install the packages; run `{by_hand}`"))
}

/// libpq and the MySQL client library (diesel's blocking PostgreSQL and MySQL connections, which the tests'
/// `--all-features` turns on), found through pkg-config.
fn system_libraries() -> Result<()> {
    let has_pkg_config = succeeds("pkg-config", &["--version"]);
    let libpq = Path::new("/usr/include/postgresql/libpq-fe.h").exists()
        || (has_pkg_config && succeeds("pkg-config", &["--exists", "libpq"]));
    let mysql = (has_pkg_config && succeeds("pkg-config", &["--exists", "mysqlclient"]))
        || succeeds("mysql_config", &["--version"])
        || succeeds("mariadb_config", &["--version"]);
    let mut missing = Vec::new();
    for (present, package, what) in [
        (has_pkg_config, "pkg-config", "pkg-config"),
        (libpq, "libpq-dev", "libpq (PostgreSQL's client library)"),
        (mysql, "default-libmysqlclient-dev", "the MySQL/MariaDB client library"),
    ] {
        if present {
            say(format!("{what}: present"));
        } else {
            say(format!("{what} is missing: package {package}"));
            missing.push(package);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        apt_install(&missing)
    }
}

fn python_client() -> Result<()> {
    const CHECK: &[&str] = &[
        "-c",
        "import confluent_kafka, fastavro; print(confluent_kafka.__version__)",
    ];
    if let Some(version) = first_line("python3", CHECK) {
        say(format!("python: confluent-kafka {version} and fastavro present"));
        return Ok(());
    }
    if !succeeds("python3", &["--version"]) {
        bail!(
            "python3 is missing: the interoperability tests run Python's Confluent client; install Python 3 with pip"
        );
    }
    say("python: confluent-kafka is missing; installing confluent-kafka[avro,schemaregistry] with pip");
    const PACKAGE: &str = "confluent-kafka[avro,schemaregistry]";
    // Debian's system Python refuses plain pip installs (PEP 668); a pyenv or venv Python accepts them.
    install("python3", &["-m", "pip", "install", "--quiet", PACKAGE])
        .or_else(|_| {
            install(
                "python3",
                &["-m", "pip", "install", "--quiet", "--break-system-packages", PACKAGE],
            )
        })
        .or_else(|_| install("python3", &["-m", "pip", "install", "--quiet", "--user", PACKAGE]))?;
    if succeeds("python3", CHECK) {
        Ok(())
    } else {
        bail!("pip installed {PACKAGE} but python3 cannot import it: run `python3 -m pip install '{PACKAGE}'` by hand")
    }
}

/// Waits up to 30 s for `ready`.
fn wait_for(what: &str, ready: impl Fn() -> bool) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if ready() {
            say(format!("{what}: accepting connections"));
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("{what} did not accept connections within 30 s of being started")
}

fn postgres() -> Result<()> {
    let ready = || succeeds("pg_isready", &["-q", "-h", "127.0.0.1", "-p", "5432"]);
    if ready() {
        say("postgresql: accepting connections on 127.0.0.1:5432");
    } else {
        let version = std::fs::read_dir("/etc/postgresql")
            .ok()
            .and_then(|mut entries| entries.next())
            .and_then(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned());
        let Some(version) = version else {
            bail!(
                "postgresql is not answering on 127.0.0.1:5432 and is not installed here (no /etc/postgresql): the \
                 tests need it with trust authentication for user postgres"
            );
        };
        install(
            "pg_ctlcluster",
            &["--skip-systemctl-redirect", &version, "main", "start"],
        )?;
        wait_for("postgresql", ready)?;
    }
    let psql = |sql: &str| {
        succeeds(
            "psql",
            &["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tAc", sql],
        )
    };
    if succeeds(
        "psql",
        &["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-tAc", "SELECT 1"],
    ) {
        say("postgresql: database test present");
        Ok(())
    } else if psql("CREATE DATABASE test") {
        say("postgresql: created database test");
        Ok(())
    } else {
        bail!(
            "postgresql answers but user postgres cannot use database test: the tests need trust authentication for \
             postgres on 127.0.0.1 (pg_hba.conf) and a database test"
        )
    }
}

fn mariadb() -> Result<()> {
    const CLIENT: [&str; 6] = ["-h", "127.0.0.1", "-P", "3306", "-u", "root"];
    let ready = || succeeds("mariadb-admin", &[&CLIENT[..], &["ping"]].concat());
    if ready() {
        say("mariadb: accepting connections on 127.0.0.1:3306");
    } else if Path::new("/usr/sbin/mariadbd").exists() {
        std::fs::create_dir_all("/run/mysqld").context("creating /run/mysqld for mariadbd's socket")?;
        if succeeds("id", &["mysql"]) {
            install("chown", &["mysql:mysql", "/run/mysqld"])?;
        }
        install(
            "start-stop-daemon",
            &["--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"],
        )?;
        wait_for("mariadb", ready)?;
    } else {
        bail!(
            "mariadb is not answering on 127.0.0.1:3306 and is not installed here (no /usr/sbin/mariadbd): the tests \
             need MariaDB or MySQL with user root and an empty password"
        );
    }
    if succeeds(
        "mariadb",
        &[&CLIENT[..], &["-e", "CREATE DATABASE IF NOT EXISTS test"]].concat(),
    ) {
        say("mariadb: database test present");
        Ok(())
    } else {
        bail!("mariadb answers but root (empty password) cannot create database test: the tests need that user")
    }
}
