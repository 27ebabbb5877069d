//! The configuration file as a user writes it: errors that point at the mistake, and the objects it builds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use deimos_config::{Config, ConfigError};
use deimos_consumer::{Handler, HandlerError, Message};
use deimos_producer::MemoryBackend;
use deimos_registry::{MemoryRegistry, SchemaRegistry};
use serde_json::{Value as Json, json};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
const DOC: &str = include_str!("../../../docs/CONFIGURATION.md");

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The first ```toml block of docs/CONFIGURATION.md.
fn documented_example() -> String {
    let start = DOC.find("```toml\n").expect("CONFIGURATION.md has a ```toml example") + "```toml\n".len();
    let end = DOC[start..].find("```").unwrap() + start;
    DOC[start..end].to_string()
}

#[test]
fn the_documented_example_parses_and_builds_its_listeners() {
    let config = Config::from_toml_str(&documented_example()).unwrap();
    assert!(!config.producer_list.is_empty() && !config.consumer_list.is_empty());
    for p in &config.producer_list {
        let _ = config.producer_builder(&p.name).unwrap();
    }
    for c in config.enabled_consumers() {
        let _ = config.listener(&c.name).unwrap();
    }
    // Deimos's deliveries: `inline_batch` is a batch handler, `message` and `batch` a handler per message.
    assert!(config.consumer_config("WidgetConsumer").unwrap().is_batch());
    for (delivery, batch) in [("message", false), ("batch", false), ("inline_batch", true)] {
        let c = Config::from_toml_str(&format!(
            "[[consumer]]\nname = \"C\"\ntopic = \"t\"\ngroup_id = \"g\"\ndelivery = \"{delivery}\"\n"
        ))
        .unwrap();
        assert_eq!(c.consumer_config("C").unwrap().is_batch(), batch, "{delivery}");
    }
}

#[test]
fn mistakes_are_named_with_their_place() {
    let err = Config::from_toml_str("[producers]\ntopic_prefx = \"dev.\"\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("topic_prefx") && text.contains("line 2"), "{text}");

    let err = Config::from_toml_str("[[producer]]\nname = \"P\"\nkey_config = { field = \"id\", plain = true }\n")
        .unwrap_err();
    assert!(
        err.to_string().contains("producer `P`: key_config: choose exactly one"),
        "{err}"
    );

    let err = Config::from_toml_str("[consumers]\nsession_timeout = \"30 sekunden\"\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("unknown time unit \"sekunden\"") && text.contains("\"30s\"") && text.contains("line 2"),
        "{text}"
    );

    let err = Config::from_toml_str("[consumers]\nbackoff = [\"60s\", \"1s\"]\n").unwrap_err();
    assert!(err.to_string().contains("larger than the second"), "{err}");

    let err = Config::from_toml_str("[[consumer]]\nname = \"C\"\nerror_policy = \"ignore\"\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("unknown variant `ignore`, expected `swallow` or `fatal`") && text.contains("line 3"),
        "{text}"
    );
    let err = Config::from_toml_str("[[consumer]]\nname = \"C\"\nordering = \"keys\"\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown variant `keys`, expected one of `partition`, `key`, `unordered`"),
        "{err}"
    );
    let err = Config::from_toml_str("[producers]\npayload_log = \"all\"\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown variant `all`, expected one of `full`, `keys`, `count`"),
        "{err}"
    );

    // A consumer without its group is refused when the file is read, not when (or if) its listener is built.
    let err = Config::from_toml_str("[[consumer]]\nname = \"C\"\ntopic = \"t\"\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("consumer `C`: group_id is not set: set group_id in the [[consumer]] named `C`"),
        "{err}"
    );
    let config = Config::from_toml_str("[[consumer]]\nname = \"C\"\ntopic = \"t\"\ngroup_id = \"g\"\n").unwrap();
    let err = config.listener("D").err().unwrap();
    assert!(matches!(err, ConfigError::Unknown { .. }), "{err}");
    assert!(err.to_string().contains("configured: C"), "{err}");

    // `[consumer]` for `[[consumer]]` or `[consumers]`: said at its own line, not at the next `[[consumer]]`.
    let file = "[kafka]\nbrokers = \"a:9092\"\n[consumer]\nsession_timeout = \"30s\"\n\n[[consumer]]\nname = \"C\"\n";
    let err = Config::from_toml_str(file).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the configuration: line 3, column 1: `[consumer]` is not a section: write `[[consumer]]` (two brackets) for \
         one consumer, or `[consumers]` for the settings of every consumer"
    );

    let err = Config::default().brokers().unwrap_err();
    assert!(err.to_string().contains("DEIMOS_KAFKA__BROKERS"), "{err}");
}

#[test]
fn the_environment_overrides_the_file() {
    let file =
        "[kafka]\nbrokers = \"a:9092\"\n[[consumer]]\nname = \"WidgetConsumer\"\ntopic = \"w\"\ngroup_id = \"g\"\n";
    let config = Config::from_toml_with_env(
        file,
        "deimos.toml",
        env(&[
            ("DEIMOS_KAFKA__BROKERS", "b:9092"),
            ("DEIMOS_CONSUMERS__SESSION_TIMEOUT", "45s"),
            ("DEIMOS_CONSUMER__WIDGETCONSUMER__MAX_ATTEMPTS", "5"),
        ]),
    )
    .unwrap();
    assert_eq!(config.brokers().unwrap(), "b:9092");
    assert_eq!(config.consumers.session_timeout, Some(Duration::from_secs(45)));
    assert_eq!(config.consumer_config("widgetconsumer").unwrap().max_attempts, Some(5));

    // A bad override names the variable and what the setting wanted.
    let err =
        Config::from_toml_with_env(file, "deimos.toml", env(&[("DEIMOS_CONSUMERS__REPORT_LAG", "maybe")])).unwrap_err();
    assert!(
        err.to_string()
            .contains("with DEIMOS_* environment overrides: environment variable DEIMOS_CONSUMERS__REPORT_LAG:"),
        "{err}"
    );
    // An unknown key too.
    let err =
        Config::from_toml_with_env(file, "deimos.toml", env(&[("DEIMOS_CONSUMERS__REPORT_LAGG", "true")])).unwrap_err();
    assert!(
        err.to_string()
            .contains("environment variable DEIMOS_CONSUMERS__REPORT_LAGG: unknown field `report_lagg`"),
        "{err}"
    );
}

#[tokio::test]
async fn producers_publish_as_configured() {
    let config = Config::from_toml_str(
        r#"
        [producers]
        topic_prefix = "dev."
        schema_namespace = "com.acme"

        [[producer]]
        name = "WidgetProducer"
        topic = "widgets"
        schema = "Widget"
        key_config = { field = "id" }
        "#,
    )
    .unwrap();
    let registry: Arc<dyn SchemaRegistry> = Arc::new(MemoryRegistry::new());
    let backend = MemoryBackend::new();
    let store = Arc::new(deimos_avro::SchemaStore::load_all(SCHEMAS).unwrap());
    let setup = config.producer_setup(store, registry, backend.clone()).unwrap().build();
    let producer = config
        .producer_builder("WidgetProducer")
        .unwrap()
        .build(&setup)
        .await
        .unwrap();
    assert_eq!(producer.topic(), "dev.widgets");
    assert_eq!(producer.value_subject(), "dev.widgets-value");
    assert_eq!(producer.key_subject(), "dev.widgets-key");
    producer
        .publish(
            json!({"id": 7, "name": "w", "description": "", "price": 1.0, "quantity": 1,
                        "status": "ACTIVE", "tags": [], "updated_at": 0}),
        )
        .await
        .unwrap();
    let sent = backend.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].key, Some(json!(7)));
}

#[tokio::test]
async fn disabled_producers_stay_within_their_setup() {
    let config = Config::from_toml_str(
        "[producers]\ndisabled = true\n[[producer]]\nname = \"P\"\ntopic = \"widgets\"\nschema = \"com.acme.Widget\"\nkey_config = { none = true }\n",
    )
    .unwrap();
    let registry: Arc<dyn SchemaRegistry> = Arc::new(MemoryRegistry::new());
    let store = Arc::new(deimos_avro::SchemaStore::load_all(SCHEMAS).unwrap());
    let backend = MemoryBackend::new();
    let setup = config
        .producer_setup(Arc::clone(&store), registry, backend.clone())
        .unwrap()
        .build();
    let producer = config.producer_builder("P").unwrap().build(&setup).await.unwrap();
    let widget = json!({"id": 7, "name": "w", "description": "", "price": 1.0, "quantity": 1,
                        "status": "ACTIVE", "tags": [], "updated_at": 0});
    assert!(producer.publish(widget).await.unwrap().disabled);
    assert!(backend.sent().is_empty());
    // Reading a configuration changes nothing for the rest of the process (tests, other setups).
    assert!(!deimos_producer::disable::all_disabled());
}

struct Nothing;

#[async_trait::async_trait]
impl Handler for Nothing {
    type Payload = Json;
    async fn consume(&self, _message: Message<Json>) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[test]
fn listeners_take_the_consumer_defaults_and_their_own_settings() {
    let mut config = Config::from_toml_str(
        r#"
        [kafka]
        brokers = "localhost:9092"
        [consumers]
        backoff = ["100ms", "10s"]
        [[consumer]]
        name = "WidgetConsumer"
        topic = "dev.widgets"
        group_id = "widgets"
        schema = "Widget"
        namespace = "com.acme"
        key_config = { field = "id" }
        delivery = "message"
        error_policy = "fatal"
        max_attempts = 3
        dead_letter_topic = "dev.widgets.dead"
        max_buffered_bytes = 1048576
        [[consumer]]
        name = "Off"
        topic = "x"
        group_id = "y"
        schema = "com.acme.Widget"
        key_config = { plain = true }
        disabled = true
        "#,
    )
    .unwrap();
    config.schema.path = Some(SCHEMAS.into());
    let listener = config
        .listener("WidgetConsumer")
        .unwrap()
        .handler(Nothing)
        .build()
        .unwrap();
    assert_eq!(listener.topic(), "dev.widgets");
    assert_eq!(listener.group_id(), "widgets");
    assert_eq!(listener.dead_letter_topic(), Some("dev.widgets.dead"));
    assert_eq!(listener.max_buffered_bytes(), 1_048_576);
    assert!(!config.consumer_config("WidgetConsumer").unwrap().is_batch());
    let enabled: Vec<&str> = config.enabled_consumers().map(|c| c.name.as_str()).collect();
    assert_eq!(enabled, ["WidgetConsumer"]);
    // A disabled consumer's listener is left out of the runner it is given to.
    let off = config.listener("Off").unwrap().handler(Nothing).build().unwrap();
    assert!(off.is_disabled() && !listener.is_disabled());
    let registry: Arc<dyn SchemaRegistry> = Arc::new(MemoryRegistry::new());
    let runner = config
        .runner_builder(Arc::clone(&registry))
        .unwrap()
        .listener(listener)
        .listener(off.clone())
        .build()
        .unwrap();
    let control = runner.control();
    let topics: Vec<&str> = control.listeners().iter().map(|l| l.topic()).collect();
    assert_eq!(topics, ["dev.widgets"]);
    let err = config
        .runner_builder(registry)
        .unwrap()
        .listener(off)
        .build()
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("every listener of the consumer runner is disabled (topics x)"),
        "{err}"
    );
}

#[cfg(feature = "outbox")]
#[test]
fn the_outbox_section_sets_the_relay() {
    let config = Config::from_toml_str(
        "[outbox]\ndatabase_url = \"sqlite://app.db\"\nbatch_size = 500\nlease_ttl = \"10s\"\ncompact_topics = [\"all\"]\n",
    )
    .unwrap();
    assert_eq!(config.database_url().unwrap(), "sqlite://app.db");
    let relay = config.relay_config();
    assert_eq!(relay.batch_size(), 500);
    assert_eq!(relay.lease_ttl(), Duration::from_secs(10));
    assert!(matches!(relay.compact_topics(), deimos_outbox_diesel::Topics::All));
    // Unset: the relay's defaults.
    assert_eq!(relay.delivery_timeout(), None);
    assert_eq!(relay.connect_timeout(), Duration::from_secs(5));
    assert_eq!(relay.statement_timeout(), Duration::from_secs(10));
    assert_eq!(relay.pool_size(), None);

    let config = Config::from_toml_str(
        "[outbox]\ndelivery_timeout = \"3s\"\nconnect_timeout = \"2s\"\nstatement_timeout = \"4s\"\npool_size = 9\n",
    )
    .unwrap();
    let relay = config.relay_config();
    assert_eq!(relay.delivery_timeout(), Some(Duration::from_secs(3)));
    assert_eq!(relay.connect_timeout(), Duration::from_secs(2));
    assert_eq!(relay.statement_timeout(), Duration::from_secs(4));
    assert_eq!(relay.pool_size(), Some(9));
    // The documented example's [outbox] is the relay's defaults, spelled out.
    let documented = Config::from_toml_str(&documented_example()).unwrap().relay_config();
    let defaults = deimos_outbox_diesel::RelayConfig::default();
    assert_eq!(
        (documented.connect_timeout(), documented.statement_timeout()),
        (defaults.connect_timeout(), defaults.statement_timeout())
    );
    assert_eq!(documented.pool_size(), Some(defaults.max_workers() + 1));
}

struct Batches;

#[async_trait::async_trait]
impl deimos_consumer::BatchHandler for Batches {
    type Payload = Json;
    async fn consume_batch(&self, _batch: deimos_consumer::Batch<Json>) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// A configuration with two enabled consumers (one per message, one per batch) and a disabled one.
fn consuming() -> Config {
    Config::from_toml_str(
        r#"
        [kafka]
        brokers = "localhost:9092"
        [schema]
        registry_url = "http://localhost:8081"
        path = "SCHEMAS"
        [[consumer]]
        name = "Widgets"
        topic = "widgets"
        group_id = "g"
        schema = "com.acme.Widget"
        key_config = { field = "id" }
        [[consumer]]
        name = "WidgetBatches"
        topic = "widgets"
        group_id = "g2"
        schema = "com.acme.Widget"
        key_config = { field = "id" }
        delivery = "inline_batch"
        [[consumer]]
        name = "Off"
        topic = "x"
        group_id = "g3"
        disabled = true
        "#
        .replace("SCHEMAS", SCHEMAS)
        .as_str(),
    )
    .unwrap()
}

#[test]
fn the_runner_comes_from_the_configuration_and_the_handlers() {
    let config = consuming();
    let runner = config
        .runner(
            deimos_config::Handlers::new()
                .handler("widgets", Nothing)
                .batch_handler("WidgetBatches", Batches),
        )
        .unwrap();
    let control = runner.control();
    let groups: Vec<&str> = control.listeners().iter().map(|l| l.group_id()).collect();
    assert_eq!(groups, ["g", "g2"], "every enabled consumer, the disabled one left out");

    let err = config
        .runner(deimos_config::Handlers::new().handler("Widgets", Nothing))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the handler of consumer `WidgetBatches` is not set")
            && err.to_string().contains(".batch_handler(\"WidgetBatches\""),
        "{err}"
    );
    let err = config
        .runner(
            deimos_config::Handlers::new()
                .handler("Widgets", Nothing)
                .handler("WidgetBatches", Nothing),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("consumer `WidgetBatches`: delivery") && err.to_string().contains("batch_handler"),
        "{err}"
    );
    let err = config
        .runner(deimos_config::Handlers::new().handler("Gadgets", Nothing))
        .unwrap_err();
    assert!(err.to_string().contains("no [[consumer]] named `Gadgets`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_comes_from_the_configuration_by_name() {
    let kafka = rdkafka::mocking::MockCluster::new(1).unwrap();
    kafka.create_topic("dev.widgets", 1, 1).unwrap();
    let registry = deimos_registry::EmbeddedRegistry::start().await.unwrap();
    let config = Config::from_toml_str(&format!(
        r#"
        [kafka]
        brokers = "{}"
        [schema]
        registry_url = "{}"
        path = "{SCHEMAS}"
        [producers]
        topic_prefix = "dev."
        [[producer]]
        name = "WidgetProducer"
        topic = "widgets"
        schema = "com.acme.Widget"
        key_config = {{ field = "id" }}
        "#,
        kafka.bootstrap_servers(),
        registry.url()
    ))
    .unwrap();
    let widgets = config.producer("WidgetProducer").await.unwrap();
    let report = widgets
        .publish(
            json!({"id": 7, "name": "w", "description": "", "price": 1.0, "quantity": 1,
                        "status": "ACTIVE", "tags": [], "updated_at": 0}),
        )
        .await
        .unwrap();
    assert_eq!(report.topic, "dev.widgets");
    assert!(!report.disabled);
    let subjects = registry.registry().subjects().await.unwrap();
    assert!(subjects.contains(&"dev.widgets-value".to_string()), "{subjects:?}");
    // The second producer shares the first one's setup (one librdkafka producer).
    let again = config.producer("widgetproducer").await.unwrap();
    assert_eq!(again.topic(), "dev.widgets");
    let err = config.producer("Nope").await.unwrap_err();
    assert!(err.to_string().contains("no [[producer]] named `Nope`"), "{err}");
}
