//! Stopping a service: the signal it stops on, and the token that carries the stop to its tasks.
//!
//! The consumer runner and the outbox relay stop on [`signal`] when run without a stop of their own, and hand the
//! stop to their tasks as a [`CancellationToken`] (tokio-util's: cloned into each task, cancelled once, awaited
//! with `cancelled()`, checked with `is_cancelled()`).

pub use tokio_util::sync::CancellationToken;

/// Waits for SIGTERM or ctrl-c (SIGINT), whichever comes first; ctrl-c only where there is no SIGTERM. When one
/// of the two cannot be listened for, waits for the other; when neither can, never returns, so a service meant
/// to run until signalled is not stopped by a missing signal handler.
pub async fn signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    term.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        let interrupt = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = term => {}
            () = interrupt => {}
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_ends_the_wait() {
        let waiting = tokio::spawn(super::signal());
        // The handler is installed before the signal is sent (without one, SIGTERM ends the process).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
    }
}
