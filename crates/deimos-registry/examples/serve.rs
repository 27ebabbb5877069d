//! Runs an embedded schema registry until killed, for trying clients against it.
//!
//! `cargo run -p deimos-registry --example serve -- [ADDR] [USER:PASSWORD]`
//! (default address 127.0.0.1:8081, no authentication).

use deimos_registry::EmbeddedRegistry;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // Warnings and errors of the crates go to stderr; RUST_LOG=info (or debug) shows more.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8081".to_string()).parse()?;
    let mut builder = EmbeddedRegistry::builder().bind(addr);
    if let Some((user, password)) = args.next().as_deref().and_then(|a| a.split_once(':')) {
        builder = builder.basic_auth(user, password);
    }
    let server = builder.start().await?;
    println!("schema registry listening on {}", server.url());
    std::future::pending::<()>().await;
    Ok(())
}
