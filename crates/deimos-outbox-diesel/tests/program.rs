//! The `deimos-outbox` program reads the environment and exits as `deimos outbox` does: the `DEIMOS_*` names
//! first, then the plain `DATABASE_URL` and `KAFKA_BROKERS`; 0 when done, 2 on an error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::{Command, Output};

fn deimos_outbox(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deimos-outbox"));
    command.args(args);
    for name in [
        "DATABASE_URL",
        "KAFKA_BROKERS",
        "DEIMOS_OUTBOX__DATABASE_URL",
        "DEIMOS_KAFKA__BROKERS",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_program_reads_the_variables_deimos_reads_and_exits_as_it_does() {
    let dir = std::env::temp_dir().join(format!("deimos-outbox-program-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("outbox.db").display());

    let out = deimos_outbox(&["status"], &[]);
    assert_eq!(out.status.code(), Some(2), "an error exits 2, as `deimos` does");
    assert!(
        text(&out.stderr).contains("DEIMOS_OUTBOX__DATABASE_URL (or DATABASE_URL)"),
        "{}",
        text(&out.stderr)
    );

    let out = deimos_outbox(&["migrate"], &[("DEIMOS_OUTBOX__DATABASE_URL", &db)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("applied migration"), "{}", text(&out.stdout));

    let out = deimos_outbox(&["status"], &[("DATABASE_URL", &db)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("0 messages pending"),
        "{}",
        text(&out.stdout)
    );

    let out = deimos_outbox(&["relay"], &[("DATABASE_URL", &db)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("DEIMOS_KAFKA__BROKERS (or KAFKA_BROKERS)"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
