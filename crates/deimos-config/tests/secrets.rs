//! Secrets of the configuration never show: not in the `Debug` output of the configuration, its sections or
//! what it builds, not in the errors of reading it or building from it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use deimos_config::{Config, ConfigError};

const SECRET: &str = "s3cr3t-PASS";
/// A password that TOML reads as a number.
const NUMERIC: &str = "918273645";

fn assert_hidden(shown: &str) {
    assert!(
        !shown.contains(SECRET) && !shown.contains(NUMERIC),
        "a secret shows in: {shown}"
    );
}

/// `{}`, `{:?}` and `{:#?}` of an error.
fn assert_error_hidden(error: &ConfigError) {
    for shown in [error.to_string(), format!("{error:?}"), format!("{error:#?}")] {
        assert_hidden(&shown);
    }
}

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");

fn with_secrets() -> String {
    format!(
        r#"
        [kafka]
        brokers = "127.0.0.1:1"
        settings = {{ "security.protocol" = "sasl_ssl", "sasl.mechanism" = "SCRAM-SHA-512", "sasl.username" = "app", "sasl.password" = "{SECRET}", "ssl.key.password" = "{SECRET}", "ssl.key.pem" = "{SECRET}" }}

        [schema]
        registry_url = "https://key:{SECRET}@registry.example.com/?api_key={SECRET}"
        user = "key"
        password = "{SECRET}"
        path = "{SCHEMAS}"

        [producers]
        settings = {{ "sasl.oauthbearer.client.secret" = "{SECRET}", "linger.ms" = "5" }}

        [consumers]
        settings = {{ "ssl.keystore.password" = "{SECRET}", "basic.auth.user.info" = "key:{SECRET}" }}

        [[consumer]]
        name = "WidgetConsumer"
        topic = "widgets"
        group_id = "widgets"
        schema = "Widget"
        namespace = "com.my-namespace"
        key_config = {{ plain = true }}
        settings = {{ "sasl.jaas.config" = "password={SECRET}" }}

        [outbox]
        database_url = "postgres://app:{SECRET}@db/app?sslpassword={SECRET}"
        "#
    )
}

#[test]
fn config_debug_hides_every_secret() {
    let config = Config::from_toml_str(&with_secrets()).unwrap();
    for shown in [format!("{config:?}"), format!("{config:#?}")] {
        assert_hidden(&shown);
        for kept in [
            "127.0.0.1:1",
            "sasl.password",
            "registry.example.com",
            "linger.ms",
            "WidgetConsumer",
            "db/app",
        ] {
            assert!(shown.contains(kept), "{kept} still shows: {shown}");
        }
    }
    for shown in [
        format!("{:?}", config.kafka),
        format!("{:?}", config.schema),
        format!("{:?}", config.producers),
        format!("{:?}", config.consumers),
        format!("{:?}", config.consumer_list),
        format!("{:?}", config.outbox),
    ] {
        assert_hidden(&shown);
    }
    // What it builds.
    assert_hidden(&format!("{:?}", config.kafka_backend_builder().unwrap()));
    assert_hidden(&format!("{:?}", config.listener("WidgetConsumer").unwrap()));
    assert_hidden(&format!(
        "{:?}",
        config
            .runner_builder(std::sync::Arc::new(deimos_registry::MemoryRegistry::new()))
            .unwrap()
    ));
    #[cfg(feature = "outbox")]
    assert_hidden(&format!("{:?}", config.relay_config()));

    let keyword = Config::from_toml_str(&format!(
        "[outbox]\ndatabase_url = \"host=db user=app password={SECRET} dbname=app\""
    ))
    .unwrap();
    assert_hidden(&format!("{keyword:?}"));
}

#[test]
fn parse_errors_hide_secrets() {
    let error = Config::from_toml_str(&format!("[schema]\npasword = \"{SECRET}\"\n")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the configuration: line 2, column 1: unknown field `pasword`, expected one of `registry_url`, `user`, \
         `password`, `path`, `timeout`"
    );
    for text in [
        // Not TOML: the error quotes the line.
        format!("[schema]\npassword = {SECRET}\n"),
        format!("[kafka]\nsettings = {{ \"sasl.password\" = {SECRET} }}\n"),
        // TOML, but the wrong type: the error quotes the line and the value.
        format!("[schema]\npassword = {NUMERIC}\n"),
        format!("[kafka]\nsettings = {{ \"sasl.password\" = {NUMERIC} }}\n"),
        format!("[outbox]\ndatabase_url = \"postgres://app:{SECRET}@db/app\"\nbatch_size = \"many\"\n"),
        format!("[outbox]\ndatabase_url = [\"postgres://app:{SECRET}@db/app\"]\n"),
        format!("[outbox]\nbatch_size = \"postgres://app:{SECRET}@db/app\"\n"),
        format!("[schema]\npasword = \"{SECRET}\"\n"),
    ] {
        let error = Config::from_toml_str(&text).unwrap_err();
        assert!(matches!(error, ConfigError::Parse { .. }), "{error:?}");
        assert_error_hidden(&error);
        assert!(
            error.to_string().contains(", column "),
            "the place still shows: {error}"
        );
    }
}

#[test]
fn environment_override_errors_hide_secrets() {
    let vars = |name: &str, value: &str| vec![(name.to_string(), value.to_string())];
    // A secret setting whose value in the file is not text: the error would quote the override.
    let error = Config::from_toml_with_env(
        "[schema]\ntoken = 5\n",
        "deimos.toml",
        vars("DEIMOS_SCHEMA__TOKEN", SECRET),
    )
    .unwrap_err();
    assert!(matches!(error, ConfigError::Env { .. }), "{error:?}");
    assert_error_hidden(&error);
    // Any other setting's value is quoted, as it should be.
    let error = Config::from_toml_with_env(
        "[outbox]\nbatch_size = 5\n",
        "deimos.toml",
        vars("DEIMOS_OUTBOX__BATCH_SIZE", "many"),
    )
    .unwrap_err();
    assert!(error.to_string().contains("`many` is not an integer"), "{error}");
}

#[test]
fn build_errors_hide_secrets() {
    let config = Config::from_toml_str(&format!(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\nsettings = {{ \"sasl.pasword\" = \"{SECRET}\" }}\n\
         [schema]\nregistry_url = \"ftp://key:{SECRET}@registry.example.com/\"\n"
    ))
    .unwrap();
    let error = config.kafka_backend().unwrap_err();
    assert!(matches!(error, ConfigError::Backend(_)), "{error:?}");
    assert_error_hidden(&error);
    let Err(error) = config.registry() else {
        panic!("built a registry client of an ftp:// URL");
    };
    assert!(matches!(error, ConfigError::Registry(_)), "{error:?}");
    assert_error_hidden(&error);
}
