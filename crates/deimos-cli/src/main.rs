//! `deimos`: the deimos-rs command line (see the crate's README or `deimos --help`).

use std::process::ExitCode;

use clap::Parser;
use deimos_cli::Cli;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("deimos: could not start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(deimos_cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("deimos: {}", deimos_core::report::chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}
