//! Retries, timeouts and authentication of HttpRegistry, against the EmbeddedRegistry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use deimos_registry::{EmbeddedRegistry, HttpRegistry, RegistryError, SchemaRegistry};

#[tokio::test]
async fn server_errors_are_retried_until_success() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::builder().fail_first(3).start().await?;
    let reg = fast_client(server.url()).max_retries(3).build()?;
    assert_eq!(reg.register("w", &widget(&[ID])).await?, 1);
    assert_eq!(server.request_count(), 4, "3 failures + 1 success");
    Ok(())
}

#[tokio::test]
async fn retries_give_up_with_a_retryable_error() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::builder().fail_first(10).start().await?;
    let reg = fast_client(server.url()).max_retries(2).build()?;
    match reg.subjects().await {
        Err(e @ RegistryError::Http { status: 503, .. }) => {
            assert!(e.is_retryable());
            assert!(e.to_string().contains("retry later"), "{e}");
        }
        other => panic!("expected Http 503, got {other:?}"),
    }
    assert_eq!(server.request_count(), 3, "1 attempt + 2 retries");

    // Without retries, one attempt only.
    let once = fast_client(server.url()).max_retries(0).build()?;
    assert!(once.subjects().await.is_err());
    assert_eq!(server.request_count(), 4);
    Ok(())
}

#[tokio::test]
async fn client_errors_are_not_retried() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::start().await?;
    let reg = fast_client(server.url()).max_retries(5).build()?;
    reg.register("w", &widget(&[ID])).await?;
    let before = server.request_count();
    assert!(matches!(
        reg.latest("nope").await,
        Err(RegistryError::SubjectNotFound { .. })
    ));
    assert!(matches!(
        reg.register("w", &widget(&[ID, SIZE])).await,
        Err(RegistryError::Incompatible { .. })
    ));
    assert_eq!(server.request_count(), before + 2, "each 4xx answered once, no retry");

    // Failures injected later (a registry restarting) are retried too.
    server.fail_next(2);
    assert_eq!(reg.latest("w").await?.id, 1);
    assert_eq!(server.request_count(), before + 5);
    Ok(())
}

#[tokio::test]
async fn an_unreachable_registry_is_a_retryable_transport_error() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::start().await?;
    let url = server.url().to_string();
    server.shutdown().await;
    let reg = fast_client(&url).max_retries(2).build()?;
    let started = std::time::Instant::now();
    match reg.schema_by_id(1).await {
        Err(e @ RegistryError::Transport { .. }) => {
            assert!(e.is_retryable());
            assert!(std::error::Error::source(&e).is_some());
            assert!(e.to_string().contains("cannot reach the schema registry"), "{e}");
        }
        other => panic!("expected Transport, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    Ok(())
}

#[tokio::test]
async fn a_silent_registry_times_out() -> anyhow::Result<()> {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            open.push(sock);
        }
    });
    let reg = fast_client(&format!("http://{addr}"))
        .timeout(Duration::from_millis(150))
        .max_retries(1)
        .build()?;
    match reg.subjects().await {
        Err(RegistryError::Transport { timed_out, .. }) => assert!(timed_out),
        other => panic!("expected a timeout, got {other:?}"),
    }
    hold.abort();
    Ok(())
}

#[tokio::test]
async fn basic_auth_is_required_and_checked() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::builder()
        .basic_auth("user", "s3cret:x")
        .start()
        .await?;

    let anonymous = fast_client(server.url()).build()?;
    match anonymous.subjects().await {
        Err(e @ RegistryError::Unauthorized { status: 401, .. }) => {
            assert!(!e.is_retryable());
            assert!(e.to_string().contains("credentials"), "{e}");
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(server.request_count(), 1, "401 is not retried");

    let wrong = fast_client(server.url()).basic_auth("user", "nope").build()?;
    assert!(matches!(
        wrong.subjects().await,
        Err(RegistryError::Unauthorized { .. })
    ));

    let right = fast_client(server.url()).basic_auth("user", "s3cret:x").build()?;
    assert_eq!(right.register("w", &widget(&[ID])).await?, 1);
    assert_eq!(right.subjects().await?, vec!["w"]);

    // Credentials in the URL work too (percent-encoded).
    let in_url = server.url().replace("http://", "http://user:s3cret%3Ax@");
    let from_url = HttpRegistry::builder(in_url).use_env_proxy(false).build()?;
    assert_eq!(
        from_url.url(),
        format!("{}/", server.url()),
        "credentials are not kept in the URL"
    );
    assert_eq!(from_url.subjects().await?, vec!["w"]);

    // A bearer token is not accepted by a basic-only server.
    let bearer = fast_client(server.url()).bearer_token("user:s3cret:x").build()?;
    assert!(matches!(
        bearer.subjects().await,
        Err(RegistryError::Unauthorized { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn bearer_token_auth() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::builder().bearer_token("tok-123").start().await?;
    assert!(matches!(
        fast_client(server.url()).build()?.subjects().await,
        Err(RegistryError::Unauthorized { .. })
    ));
    assert!(matches!(
        fast_client(server.url())
            .bearer_token("tok-999")
            .build()?
            .subjects()
            .await,
        Err(RegistryError::Unauthorized { .. })
    ));
    let reg = fast_client(server.url()).bearer_token("tok-123").build()?;
    assert_eq!(reg.register("w", &widget(&[ID])).await?, 1);
    assert_eq!(reg.schema_by_id(1).await?, widget(&[ID]));
    assert!(fast_client(server.url()).bearer_token("bad\ntoken").build().is_err());
    Ok(())
}
