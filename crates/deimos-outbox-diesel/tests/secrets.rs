//! Database passwords never show: not in a relay's `Debug` output, not in the outbox's errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use deimos_outbox_diesel::{Conn, Dialect, OutboxError, Relay, RelayConfig, Status};
use deimos_producer::KafkaBackend;

const SECRET: &str = "s3cr3t-PASS";

fn assert_hidden(shown: &str) {
    assert!(!shown.contains(SECRET), "the password shows in: {shown}");
}

/// `{}`, `{:?}` and `{:#?}` of an error.
fn assert_error_hidden(error: &OutboxError) {
    for shown in [error.to_string(), format!("{error:?}"), format!("{error:#?}")] {
        assert_hidden(&shown);
    }
}

/// Every URL form the outbox takes, with the secret as password or secret parameter.
fn urls() -> Vec<String> {
    vec![
        format!("postgres://app:{SECRET}@127.0.0.1:1/app"),
        format!("postgresql://app:{SECRET}@127.0.0.1:1/app?sslmode=disable"),
        format!("postgres://127.0.0.1:1/app?user=app&password={SECRET}"),
        format!("postgres://app@127.0.0.1:1/app?sslpassword={SECRET}"),
        format!("mysql://root:{SECRET}@127.0.0.1:1/test"),
        format!("mariadb://root:{SECRET}@127.0.0.1:1/test"),
    ]
}

#[tokio::test]
async fn relay_debug_hides_the_database_password() {
    let backend = KafkaBackend::builder()
        .bootstrap_servers("127.0.0.1:1")
        .build()
        .unwrap();
    for url in urls() {
        let relay = Relay::new(url.clone(), backend.clone(), RelayConfig::default()).unwrap();
        for shown in [format!("{relay:?}"), format!("{relay:#?}")] {
            assert_hidden(&shown);
            assert!(shown.contains("127.0.0.1:1"), "the host still shows: {shown}");
        }
    }
}

#[tokio::test]
async fn connection_errors_hide_the_database_password() {
    for url in urls() {
        let Err(error) = Conn::connect(&url).await else {
            panic!("connected to {url}");
        };
        assert!(matches!(error, OutboxError::Connect { .. }), "{error:?}");
        assert_error_hidden(&error);
        let error = deimos_outbox_diesel::migrate(&url).await.unwrap_err();
        assert_error_hidden(&error);
        let error = Status::read(&url).await.unwrap_err();
        assert_error_hidden(&error);
    }
}

#[tokio::test]
async fn unsupported_urls_hide_their_password() {
    let backend = KafkaBackend::builder()
        .bootstrap_servers("127.0.0.1:1")
        .build()
        .unwrap();
    for url in [
        format!("redis://app:{SECRET}@h/0"),
        format!("host=db user=app password={SECRET} dbname=app"),
        format!("host=db password = '{SECRET}' dbname=app"),
        format!("Server=db;Password={SECRET};Database=app"),
    ] {
        let error = Dialect::of_url(&url).unwrap_err();
        assert!(matches!(error, OutboxError::UnsupportedUrl(_)), "{error:?}");
        assert_error_hidden(&error);
        assert_error_hidden(&Relay::new(url.clone(), backend.clone(), RelayConfig::default()).unwrap_err());
        assert_error_hidden(&Conn::connect(&url).await.unwrap_err());
    }
}
