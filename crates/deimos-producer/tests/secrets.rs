//! Secret librdkafka settings never show: not in the builder's `Debug` output, not in the errors of building
//! the backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;

use deimos_producer::{BackendError, KafkaBackend};

const SECRET: &str = "s3cr3t-PASS";

fn assert_hidden(shown: &str) {
    assert!(!shown.contains(SECRET), "a secret shows in: {shown}");
}

fn secret_settings() -> BTreeMap<String, String> {
    [
        "sasl.password",
        "sasl.username",
        "sasl.jaas.config",
        "sasl.oauthbearer.client.secret",
        "SASL.OAUTHBEARER.CONFIG",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl.keystore.password",
        "basic.auth.user.info",
        "schema.registry.password",
    ]
    .iter()
    .map(|name| (name.to_string(), SECRET.to_string()))
    .chain([(
        "schema.registry.url".to_string(),
        format!("https://key:{SECRET}@registry"),
    )])
    .collect()
}

#[test]
fn builder_debug_hides_secret_settings() {
    let builder = KafkaBackend::builder()
        .bootstrap_servers("kafka:9092")
        .kafka_settings(&secret_settings())
        .kafka_setting("ssl.keystore.password", SECRET);
    for shown in [format!("{builder:?}"), format!("{builder:#?}")] {
        assert_hidden(&shown);
        for kept in ["kafka:9092", "acks", "sasl.password", "https://key:<redacted>@registry"] {
            assert!(shown.contains(kept), "{kept} still shows: {shown}");
        }
    }
}

#[test]
fn build_errors_hide_secret_settings() {
    for (name, given) in [
        // Unknown to librdkafka (misspelt): rdkafka prints the name and the value.
        ("sasl.pasword", SECRET),
        ("ssl.key.passwd", SECRET),
        // Refused values.
        ("sasl.oauthbearer.method", SECRET),
        ("sasl.mechanism", SECRET),
    ] {
        let settings = BTreeMap::from([
            (name.to_string(), given.to_string()),
            ("sasl.password".to_string(), SECRET.to_string()),
            ("security.protocol".to_string(), "sasl_plaintext".to_string()),
        ]);
        let Err(error) = KafkaBackend::builder()
            .bootstrap_servers("127.0.0.1:1")
            .kafka_settings(&settings)
            .build()
        else {
            panic!("librdkafka accepted {name}");
        };
        assert!(matches!(error, BackendError::Create { .. }), "{error:?}");
        for shown in [error.to_string(), format!("{error:?}"), format!("{error:#?}")] {
            assert_hidden(&shown);
        }
    }
}
