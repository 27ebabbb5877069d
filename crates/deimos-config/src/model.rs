//! The configuration's sections and what each one builds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deimos_avro::SchemaStore;
use deimos_consumer::{ConsumerRunner, ConsumerRunnerBuilder, ErrorPolicy, Listener, ListenerBuilder, ProcessingOrder};
use deimos_core::redact;
use deimos_keys::KeyConfig;
use deimos_metrics::PayloadLog;
use deimos_producer::{
    DeliveryMode, KafkaBackend, KafkaBackendBuilder, Partitioner, Producer, ProducerBuilder, ProducerSetup,
    ProducerSetupBuilder, PublishBackend,
};
use deimos_registry::{HttpRegistry, SchemaRegistry};
use serde::Deserialize;

use crate::ConfigError;
use crate::duration;

/// The whole configuration: one TOML file, then `DEIMOS_*` environment overrides.
///
/// Sections follow Deimos's settings: `[kafka]`, `[schema]`, `[producers]` (settings of every producer) and
/// `[[producer]]` (one per producer), `[consumers]` and `[[consumer]]`, and `[outbox]`. Every section and
/// setting is optional; unknown settings are errors, so a typo does not go unnoticed. docs/CONFIGURATION.md
/// maps each Deimos setting to its name here.
///
/// Its `Debug` output (and each section's) hides secrets: the values of secret librdkafka settings (`sasl.*`,
/// `ssl.key.*`, passwords, …), `schema.password`, and passwords and secret parameters of URLs
/// (`deimos_core::redact`).
///
/// ```
/// use deimos_config::Config;
///
/// let config = Config::from_toml_str(r#"
///     [kafka]
///     brokers = "localhost:9092"
///
///     [producers]
///     topic_prefix = "dev."
///
///     [[producer]]
///     name = "WidgetProducer"
///     topic = "widgets"
///     schema = "Widget"
///     namespace = "com.acme"
///     key_config = { field = "id" }
/// "#)?;
/// assert_eq!(config.producer_config("WidgetProducer")?.topic.as_deref(), Some("widgets"));
/// # Ok::<(), deimos_config::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// `[kafka]`: brokers and librdkafka settings shared by producers and consumers.
    pub kafka: KafkaConfig,
    /// `[schema]`: the schema registry and the schema folder.
    pub schema: SchemaConfig,
    /// `[producers]`: settings of every producer.
    pub producers: ProducersConfig,
    /// `[[producer]]`: one entry per producer.
    #[serde(rename = "producer")]
    pub producer_list: Vec<ProducerConfig>,
    /// `[consumers]`: settings of every consumer.
    pub consumers: ConsumersConfig,
    /// `[[consumer]]`: one entry per consumer (listener).
    #[serde(rename = "consumer")]
    pub consumer_list: Vec<ConsumerConfig>,
    /// `[outbox]`: the transactional outbox's database and relay.
    pub outbox: OutboxConfig,
    /// What [`producer`](Config::producer) and [`runner`](Config::runner) build once and share (not read from
    /// the file; clones of the configuration share it).
    #[serde(skip)]
    pub(crate) shared: crate::assemble::Shared,
}

/// `[kafka]` (Deimos's `kafka.*`). `Debug` hides the values of secret settings (`sasl.*`, `ssl.key.*`, passwords).
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]` (Deimos's `kafka.seed_brokers`).
    pub brokers: Option<String>,
    /// `client.id` (Deimos's `kafka.client_id`).
    pub client_id: Option<String>,
    /// librdkafka settings for producers and consumers alike (`security.protocol`, `ssl.ca.location`,
    /// `sasl.mechanism`, …): Deimos's `kafka.ssl.*`, `kafka.sasl.*` and timeouts.
    pub settings: BTreeMap<String, String>,
}

/// `[schema]` (Deimos's `schema.*`). `Debug` hides the password, and the password and secret parameters of the URL.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SchemaConfig {
    /// The Confluent-compatible registry (Deimos's `schema.registry_url`).
    pub registry_url: Option<String>,
    /// Basic auth user (Deimos's `schema.user`).
    pub user: Option<String>,
    /// Basic auth password (Deimos's `schema.password`).
    pub password: Option<String>,
    /// The folder of `.avsc` files, `com/acme/Widget.avsc` for `com.acme.Widget` (Deimos's `schema.path`).
    /// Relative paths are relative to the working directory. Default `schemas`.
    pub path: Option<PathBuf>,
    /// Registry request timeout.
    #[serde(deserialize_with = "duration::option")]
    pub timeout: Option<Duration>,
}

/// `[producers]` (Deimos's `producers.*`). `Debug` hides the values of secret settings.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ProducersConfig {
    /// Prepended to every producer's topic, subjects included (Deimos's `producers.topic_prefix`).
    pub topic_prefix: Option<String>,
    /// The namespace of producers that name none (Deimos's `producers.schema_namespace`).
    pub schema_namespace: Option<String>,
    /// Disable every producer: publishing does nothing (Deimos's `producers.disabled`).
    pub disabled: bool,
    /// Messages per group handed to the backend (Deimos's `max_batch_size`, default 500).
    pub max_batch_size: Option<usize>,
    /// `sync` (wait for every delivery report, the default) or `async` (return once queued); Deimos's
    /// `:kafka` and `:kafka_async` backends.
    pub delivery: Option<Delivery>,
    /// `consistent` (librdkafka's and ruby-kafka's CRC-32, the default) or `murmur2` (the Java client's).
    pub partitioner: Option<Partitioner>,
    /// Payload logging at debug level: `full`, `keys` or `count` (Deimos's `payload_log`).
    pub payload_log: Option<PayloadLog>,
    /// librdkafka producer settings (`acks`, `compression.type`, `linger.ms`, `message.max.bytes`, …):
    /// Deimos's `producers.required_acks`, `compression_codec`, `max_retries`, …
    pub settings: BTreeMap<String, String>,
}

/// `sync` or `async` publishing.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Delivery {
    /// Wait for every delivery report.
    Sync,
    /// Return once queued.
    Async,
}

/// Deimos's `delivery` of a consumer.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConsumerDelivery {
    /// A handler call per message.
    Message,
    /// Deimos's batches of messages, each handed to the handler one by one (as Deimos's `consume`).
    Batch,
    /// A batch handler gets the whole batch (Deimos's `consume_batch`).
    InlineBatch,
}

/// Deimos's `key_config`: exactly one of `none = true`, `plain = true`, `schema = "Name"`, `field = "id"`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KeyConfigSpec {
    /// `key_config none: true`.
    pub none: bool,
    /// `key_config plain: true`.
    pub plain: bool,
    /// `key_config schema: 'Name'`.
    pub schema: Option<String>,
    /// `key_config field: 'id'`.
    pub field: Option<String>,
}

impl KeyConfigSpec {
    /// The key config, or an error naming `setting` when not exactly one choice is made.
    pub fn to_key_config(&self, setting: &str) -> Result<KeyConfig, ConfigError> {
        let chosen = [self.none, self.plain, self.schema.is_some(), self.field.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if chosen != 1 {
            return Err(ConfigError::Invalid {
                setting: setting.to_string(),
                message: format!(
                    "choose exactly one of none = true, plain = true, schema = \"KeySchema\", field = \"id\" ({chosen} chosen)"
                ),
            });
        }
        Ok(match (&self.schema, &self.field) {
            (Some(schema), _) => KeyConfig::schema(schema),
            (_, Some(field)) => KeyConfig::field(field),
            _ if self.plain => KeyConfig::Plain,
            _ => KeyConfig::None,
        })
    }
}

/// `[[producer]]`: one producer (Deimos's `producer do … end`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ProducerConfig {
    /// The producer's name (Deimos's `class_name`), used to look it up and in errors and metrics.
    pub name: String,
    /// The topic, without the prefix.
    pub topic: Option<String>,
    /// The value schema's name.
    pub schema: Option<String>,
    /// The value schema's namespace (else `producers.schema_namespace`).
    pub namespace: Option<String>,
    /// The key config.
    pub key_config: Option<KeyConfigSpec>,
}

/// `[consumers]` (Deimos's `consumers.*`): defaults of every `[[consumer]]`, which may override each. `Debug` hides
/// the values of secret settings.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ConsumersConfig {
    /// Every handler error is fatal (retried), as in Deimos's tests (`consumers.reraise_errors`).
    pub reraise_errors: bool,
    /// Report `consumer_lag` per partition (`consumers.report_lag`).
    pub report_lag: bool,
    /// Group session timeout (`consumers.session_timeout`; a number is seconds).
    #[serde(deserialize_with = "duration::option")]
    pub session_timeout: Option<Duration>,
    /// Group heartbeat interval (`consumers.heartbeat_interval`).
    #[serde(deserialize_with = "duration::option")]
    pub heartbeat_interval: Option<Duration>,
    /// Retry backoff `[min, max]` (`consumers.backoff`, Deimos's `1000..60_000` ms is `["1s", "60s"]`).
    #[serde(deserialize_with = "duration::option_pair")]
    pub backoff: Option<(Duration, Duration)>,
    /// How often offsets are committed (`consumers.offset_commit_interval`).
    #[serde(deserialize_with = "duration::option")]
    pub offset_commit_interval: Option<Duration>,
    /// How long shutdown may take to finish in-flight work and commit.
    #[serde(deserialize_with = "duration::option")]
    pub shutdown_timeout: Option<Duration>,
    /// Payload logging at debug level: `full`, `keys` or `count` (Deimos's `payload_log`).
    pub payload_log: Option<PayloadLog>,
    /// librdkafka consumer settings (`fetch.max.bytes`, `isolation.level`, …).
    pub settings: BTreeMap<String, String>,
}

/// `[[consumer]]`: one listener (Deimos's `consumer do … end`). `Debug` hides the values of secret settings.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// The consumer's name (Deimos's `class_name`), used to look it up.
    pub name: String,
    /// The topic, as it is on the broker (no prefix is added).
    pub topic: Option<String>,
    /// The consumer group.
    pub group_id: Option<String>,
    /// The value schema's name.
    pub schema: Option<String>,
    /// The value schema's namespace.
    pub namespace: Option<String>,
    /// The key config.
    pub key_config: Option<KeyConfigSpec>,
    /// Left out of the runner (Deimos's `disabled`).
    pub disabled: bool,
    /// Deimos's `delivery`: `message` or `batch` (both call a [`Handler`](deimos_consumer::Handler) once per
    /// message, as Deimos's `consume` is), or `inline_batch` (a [`BatchHandler`](deimos_consumer::BatchHandler)
    /// gets the batch, Deimos's `consume_batch`). Checked against the handler the service gives: see
    /// [`Config::listener`] and [`ConsumerConfig::is_batch`].
    pub delivery: Option<ConsumerDelivery>,
    /// Start a new group at the earliest offset (default true, as Deimos).
    pub start_from_beginning: Option<bool>,
    /// Messages per batch at most.
    pub max_batch_size: Option<usize>,
    /// How long a batch waits to fill (Deimos's `max_wait_time`; a number is seconds).
    #[serde(deserialize_with = "duration::option")]
    pub max_wait_time: Option<Duration>,
    /// Overrides `consumers.session_timeout`.
    #[serde(deserialize_with = "duration::option")]
    pub session_timeout: Option<Duration>,
    /// Overrides `consumers.heartbeat_interval`.
    #[serde(deserialize_with = "duration::option")]
    pub heartbeat_interval: Option<Duration>,
    /// Overrides `consumers.backoff`.
    #[serde(deserialize_with = "duration::option_pair")]
    pub backoff: Option<(Duration, Duration)>,
    /// Overrides `consumers.offset_commit_interval`.
    #[serde(deserialize_with = "duration::option")]
    pub offset_commit_interval: Option<Duration>,
    /// `swallow` (log, count, move on; the default) or `fatal` (retry with backoff).
    pub error_policy: Option<ErrorPolicy>,
    /// Attempts of a failing message before it goes to the dead-letter topic.
    pub max_attempts: Option<u32>,
    /// Where messages go after `max_attempts`.
    pub dead_letter_topic: Option<String>,
    /// Overrides `consumers.report_lag`.
    pub report_lag: Option<bool>,
    /// Overrides `consumers.payload_log`.
    pub payload_log: Option<PayloadLog>,
    /// Which messages are handled in order: `partition` (the default), `key` or `unordered`.
    pub ordering: Option<ProcessingOrder>,
    /// The most messages (or batches) handled at the same time (default 64).
    pub max_in_flight: Option<usize>,
    /// Deimos's name for [`max_in_flight`](Self::max_in_flight) (Deimos runs that many consumer threads);
    /// give one of the two.
    pub max_concurrency: Option<usize>,
    /// The most bytes of fetched messages the listener holds before handling them (default 32 MiB).
    pub max_buffered_bytes: Option<usize>,
    /// librdkafka settings of this listener's consumer only.
    pub settings: BTreeMap<String, String>,
}

/// `[outbox]`: the transactional outbox (Deimos's DB backend and `db_producer.*`). `Debug` hides the password and
/// secret parameters of the database URL.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct OutboxConfig {
    /// `postgres://…`, `mysql://…` or `sqlite://PATH`.
    pub database_url: Option<String>,
    /// Rows per batch (default 2000).
    pub batch_size: Option<usize>,
    /// Batches of one partition in flight at once (default 2).
    pub max_in_flight: Option<usize>,
    /// Partitions worked on at once (one database connection each; default 32).
    pub max_workers: Option<usize>,
    /// How long a partition lease lasts without renewal (default 30 s).
    #[serde(deserialize_with = "duration::option")]
    pub lease_ttl: Option<Duration>,
    /// Polling interval when nothing wakes the relay (default 500 ms).
    #[serde(deserialize_with = "duration::option")]
    pub poll_interval: Option<Duration>,
    /// How long librdkafka may try to deliver a message the relay handed over, its `message.timeout.ms`
    /// (default a third of `lease_ttl`; at most half of it minus 1 s, so no message outlives its lease).
    #[serde(deserialize_with = "duration::option")]
    pub delivery_timeout: Option<Duration>,
    /// How long opening a database connection may take (default 5 s).
    #[serde(deserialize_with = "duration::option")]
    pub connect_timeout: Option<Duration>,
    /// How long one database statement of the relay may take before its connection is dropped (default 10 s).
    #[serde(deserialize_with = "duration::option")]
    pub statement_timeout: Option<Duration>,
    /// Database connections the relay keeps (its pool; default `max_workers` + 1).
    pub pool_size: Option<usize>,
    /// Topics to compact within a batch: `["all"]` or a list (Deimos's `db_producer.compact_topics`).
    pub compact_topics: Vec<String>,
    /// Topics whose messages are logged (Deimos's `db_producer.log_topics`).
    pub log_topics: Vec<String>,
}

/// The process's `DEIMOS_*` variables (others, and any that are not Unicode, are not read).
fn deimos_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(crate::ENV_PREFIX))
        .collect()
}

/// `[consumer]` / `[producer]` (one table) where `[[consumer]]` (an entry of the list) or `[consumers]` (the
/// settings of all) was meant. TOML would report it later, at the first `[[consumer]]`, as a duplicate key, or
/// as a table where a list belongs.
fn single_entry_tables(text: &str, origin: &str) -> Result<(), ConfigError> {
    for (i, line) in text.lines().enumerate() {
        let header = line.split('#').next().unwrap_or_default().trim();
        for kind in ["consumer", "producer"] {
            let table = header
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .map(str::trim);
            if !header.starts_with("[[") && table == Some(kind) {
                return Err(ConfigError::Parse {
                    origin: origin.to_string(),
                    message: format!(
                        "line {}, column 1: `[{kind}]` is not a section: write `[[{kind}]]` (two brackets) for one \
                         {kind}, or `[{kind}s]` for the settings of every {kind}",
                        i + 1
                    ),
                });
            }
        }
    }
    Ok(())
}

/// A parse error that shows no secret. It gives the line and column in `source` but not the line itself (which
/// may be `pasword = "…"`); `secrets` (the values of secret settings, when the text parsed that far) are cut out
/// of the parser's message, which may quote a value, and the rest goes through `redact::text`.
fn parse_error(origin: String, error: &toml::de::Error, source: Option<&str>, secrets: &[String]) -> ConfigError {
    let message = redact::scrub(error.message().trim(), secrets);
    let message = redact::text(&message);
    let before = error.span().and_then(|span| source?.get(..span.start));
    let message = match before {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.into_owned(),
    };
    ConfigError::Parse { origin, message }
}

/// The values (as TOML prints them, and strings as they are) of every setting under `table` whose name
/// `redact::is_secret`, or every value when `secret` is set.
fn secret_values(table: &toml::Table, secret: bool, out: &mut Vec<String>) {
    fn collect(value: &toml::Value, secret: bool, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(table) => secret_values(table, secret, out),
            toml::Value::Array(values) => values.iter().for_each(|v| collect(v, secret, out)),
            toml::Value::String(text) if secret => out.push(text.clone()),
            other if secret => out.push(other.to_string()),
            _ => {}
        }
    }
    for (name, value) in table {
        collect(value, secret || redact::is_secret(name), out);
    }
}

impl Config {
    /// Reads `path`, then applies the `DEIMOS_*` overrides of this process's environment.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_with_env(&text, &path.display().to_string(), deimos_vars())
    }

    /// The file at `path` if given, else the defaults; then the environment's overrides. What a program
    /// with an optional `--config` flag calls.
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => Config::load(path),
            None => Config::from_toml_with_env("", "the environment", deimos_vars()),
        }
    }

    /// Parses TOML text, without environment overrides.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, "the configuration", std::iter::empty())
    }

    /// Parses TOML text (`origin` names it in errors), then applies the `DEIMOS_*` overrides among `vars`.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        single_entry_tables(text, origin)?;
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| parse_error(origin.to_string(), &e, Some(text), &[]))?;
        let before = table.clone();
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        crate::env::apply(&mut table, vars.iter().cloned())?;
        // What an error below must not quote.
        let mut secrets = Vec::new();
        secret_values(&table, false, &mut secrets);
        // Without overrides, parse the text itself so that errors carry its line and column.
        let (parsed, origin, source) = if table == before {
            (toml::from_str::<Config>(text), origin.to_string(), Some(text))
        } else {
            (
                table.try_into(),
                format!("{origin} with DEIMOS_* environment overrides"),
                None,
            )
        };
        let config = parsed.map_err(|e| {
            // An override that breaks a valid file: name the variable.
            let culprit = (toml::from_str::<Config>(text).is_ok())
                .then(|| {
                    vars.iter().find(|var| {
                        let mut alone = before.clone();
                        crate::env::apply(&mut alone, [(*var).clone()]).is_ok() && alone.try_into::<Config>().is_err()
                    })
                })
                .flatten();
            let origin = match culprit {
                Some((name, _)) => format!("{origin}: environment variable {name}"),
                None => origin,
            };
            parse_error(origin, &e, source, &secrets)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what can be checked without building anything: names, enumerations, key configs.
    fn validate(&self) -> Result<(), ConfigError> {
        for (kind, names) in [
            (
                "producer",
                self.producer_list.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ),
            ("consumer", self.consumer_list.iter().map(|c| c.name.as_str()).collect()),
        ] {
            for (i, name) in names.iter().enumerate() {
                if name.trim().is_empty() {
                    return Err(ConfigError::Missing {
                        setting: format!("{kind}[{i}].name"),
                        hint: format!("every [[{kind}]] needs a name (Deimos's class_name)"),
                    });
                }
                if names[..i].iter().any(|n| n.eq_ignore_ascii_case(name)) {
                    return Err(ConfigError::Invalid {
                        setting: format!("{kind}[{i}].name"),
                        message: format!("`{name}` names two [[{kind}]] entries"),
                    });
                }
            }
        }
        for p in &self.producer_list {
            if let Some(k) = &p.key_config {
                k.to_key_config(&format!("producer `{}`: key_config", p.name))?;
            }
        }
        for c in &self.consumer_list {
            if let Some(k) = &c.key_config {
                k.to_key_config(&format!("consumer `{}`: key_config", c.name))?;
            }
            // What every listener needs, checked here so that a program which builds no listener (the `deimos`
            // command line, a producing service sharing the file) does not pass over it.
            for (key, value) in [("topic", &c.topic), ("group_id", &c.group_id)] {
                if !c.disabled && value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    return Err(ConfigError::Missing {
                        setting: format!("consumer `{}`: {key}", c.name),
                        hint: format!(
                            "set {key} in the [[consumer]] named `{}`, or `disabled = true` to leave it out",
                            c.name
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// `kafka.brokers`, or an error saying where to set it.
    pub fn brokers(&self) -> Result<&str, ConfigError> {
        self.kafka
            .brokers
            .as_deref()
            .filter(|b| !b.trim().is_empty())
            .ok_or_else(|| ConfigError::Missing {
                setting: "kafka.brokers".into(),
                hint: "set brokers = \"host:9092\" under [kafka], or DEIMOS_KAFKA__BROKERS".into(),
            })
    }

    /// The producers' partitioner (default `consistent`).
    pub fn partitioner(&self) -> Partitioner {
        self.producers.partitioner.unwrap_or_default()
    }

    /// The schema folder: `schema.path`, default `schemas`.
    pub fn schema_path(&self) -> PathBuf {
        self.schema.path.clone().unwrap_or_else(|| PathBuf::from("schemas"))
    }

    /// Loads every schema under [`schema_path`](Self::schema_path), failing on the first bad one.
    pub fn schema_store(&self) -> Result<SchemaStore, ConfigError> {
        SchemaStore::load_all(self.schema_path()).map_err(ConfigError::Schema)
    }

    /// A cached HTTP client of `schema.registry_url`, with basic auth and timeout when set.
    pub fn registry(&self) -> Result<Arc<dyn SchemaRegistry>, ConfigError> {
        let url = self
            .schema
            .registry_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| ConfigError::Missing {
                setting: "schema.registry_url".into(),
                hint: "set registry_url = \"http://host:8081\" under [schema], or DEIMOS_SCHEMA__REGISTRY_URL".into(),
            })?;
        let mut builder = HttpRegistry::builder(url);
        if let Some(user) = &self.schema.user {
            builder = builder.basic_auth(user, self.schema.password.clone().unwrap_or_default());
        }
        if let Some(timeout) = self.schema.timeout {
            builder = builder.timeout(timeout);
        }
        Ok(Arc::new(builder.build_cached().map_err(ConfigError::Registry)?))
    }

    /// librdkafka settings of producers: `client.id`, then `[kafka] settings`, then `[producers] settings`.
    pub fn producer_settings(&self) -> BTreeMap<String, String> {
        let mut settings = BTreeMap::new();
        if let Some(id) = &self.kafka.client_id {
            settings.insert("client.id".to_string(), id.clone());
        }
        settings.extend(self.kafka.settings.clone());
        settings.extend(self.producers.settings.clone());
        settings
    }

    /// librdkafka settings of consumers: `client.id`, then `[kafka] settings`, then `[consumers] settings`.
    pub fn consumer_settings(&self) -> BTreeMap<String, String> {
        let mut settings = BTreeMap::new();
        if let Some(id) = &self.kafka.client_id {
            settings.insert("client.id".to_string(), id.clone());
        }
        settings.extend(self.kafka.settings.clone());
        settings.extend(self.consumers.settings.clone());
        settings
    }

    /// A Kafka backend builder with `kafka.brokers`, the partitioner and
    /// [`producer_settings`](Self::producer_settings), for a caller that adds settings of its own.
    pub fn kafka_backend_builder(&self) -> Result<KafkaBackendBuilder, ConfigError> {
        Ok(KafkaBackend::builder()
            .bootstrap_servers(self.brokers()?)
            .partitioner(self.partitioner())
            .kafka_settings(&self.producer_settings()))
    }

    /// The Kafka publish backend: [`kafka_backend_builder`](Self::kafka_backend_builder), built.
    pub fn kafka_backend(&self) -> Result<KafkaBackend, ConfigError> {
        self.kafka_backend_builder()?.build().map_err(ConfigError::Backend)
    }

    /// A producer setup over `store`, `registry` and `backend` with `[producers]` applied: topic prefix, group
    /// size, delivery, payload log and `disabled` (the producers built from this setup publish nothing; other
    /// setups of the process are not affected).
    pub fn producer_setup(
        &self,
        store: impl Into<Arc<SchemaStore>>,
        registry: Arc<dyn SchemaRegistry>,
        backend: impl PublishBackend,
    ) -> Result<ProducerSetupBuilder, ConfigError> {
        let mut builder = ProducerSetup::builder(store, registry, backend);
        if let Some(prefix) = &self.producers.topic_prefix {
            builder = builder.topic_prefix(prefix);
        }
        if let Some(n) = self.producers.max_batch_size {
            builder = builder.max_batch_size(n);
        }
        if let Some(mode) = self.producers.delivery {
            builder = builder.delivery(match mode {
                Delivery::Sync => DeliveryMode::Sync,
                Delivery::Async => DeliveryMode::Async,
            });
        }
        if let Some(level) = self.producers.payload_log {
            builder = builder.payload_log(level);
        }
        Ok(builder.disabled(self.producers.disabled))
    }

    /// The `[[producer]]` named `name` (case-insensitively).
    pub fn producer_config(&self, name: &str) -> Result<&ProducerConfig, ConfigError> {
        self.producer_list
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| ConfigError::Unknown {
                kind: "producer",
                name: name.to_string(),
                known: self.producer_list.iter().map(|p| p.name.clone()).collect(),
            })
    }

    /// A builder of the `[[producer]]` named `name`, with its topic, schema, namespace and key config; add a
    /// partition-key function if the producer has one, then `build(&setup)`. [`producer`](Self::producer)
    /// builds it on the configuration's own setup.
    pub fn producer_builder(&self, name: &str) -> Result<ProducerBuilder, ConfigError> {
        let p = self.producer_config(name)?;
        let mut builder = Producer::builder(&p.name);
        if let Some(topic) = &p.topic {
            builder = builder.topic(topic);
        }
        if let Some(schema) = &p.schema {
            builder = builder.schema(schema);
        }
        if let Some(namespace) = p.namespace.as_ref().or(self.producers.schema_namespace.as_ref()) {
            builder = builder.namespace(namespace);
        }
        if let Some(k) = &p.key_config {
            builder = builder.key_config(k.to_key_config(&format!("producer `{}`: key_config", p.name))?);
        }
        Ok(builder)
    }

    /// The `[[consumer]]` named `name` (case-insensitively).
    pub fn consumer_config(&self, name: &str) -> Result<&ConsumerConfig, ConfigError> {
        self.consumer_list
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| ConfigError::Unknown {
                kind: "consumer",
                name: name.to_string(),
                known: self.consumer_list.iter().map(|c| c.name.clone()).collect(),
            })
    }

    /// The `[[consumer]]` entries that are not `disabled`.
    pub fn enabled_consumers(&self) -> impl Iterator<Item = &ConsumerConfig> {
        self.consumer_list.iter().filter(|c| !c.disabled)
    }

    /// A listener builder of the `[[consumer]]` named `name` with every setting of its entry and of
    /// `[consumers]` applied; give it the handler (`handler` or `batch_handler`) and `build()` it. Fails when the
    /// entry lacks `topic` or `group_id`. Whether `delivery` matches the handler is the caller's to check with
    /// [`ConsumerConfig::is_batch`].
    pub fn listener(&self, name: &str) -> Result<ListenerBuilder, ConfigError> {
        let c = self.consumer_config(name)?;
        let required = |value: &Option<String>, key: &str| {
            value
                .clone()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| ConfigError::Missing {
                    setting: format!("consumer `{}`: {key}", c.name),
                    hint: format!("set {key} in the [[consumer]] named `{}`", c.name),
                })
        };
        let mut b = Listener::builder(required(&c.topic, "topic")?, required(&c.group_id, "group_id")?);
        if let Some(schema) = &c.schema {
            b = b.schema(schema);
        }
        if let Some(namespace) = &c.namespace {
            b = b.namespace(namespace);
        }
        if let Some(k) = &c.key_config {
            b = b.key_config(k.to_key_config(&format!("consumer `{}`: key_config", c.name))?);
        }
        if let Some(yes) = c.start_from_beginning {
            b = b.start_from_beginning(yes);
        }
        if let Some(n) = c.max_batch_size {
            b = b.max_batch_size(n);
        }
        if let Some(wait) = c.max_wait_time {
            b = b.max_wait(wait);
        }
        if let Some(t) = c.session_timeout.or(self.consumers.session_timeout) {
            b = b.session_timeout(t);
        }
        if let Some(t) = c.heartbeat_interval.or(self.consumers.heartbeat_interval) {
            b = b.heartbeat_interval(t);
        }
        if let Some((min, max)) = c.backoff.or(self.consumers.backoff) {
            b = b.backoff(min, max);
        }
        if let Some(t) = c.offset_commit_interval.or(self.consumers.offset_commit_interval) {
            b = b.commit_interval(t);
        }
        if let Some(policy) = c.error_policy {
            b = b.error_policy(policy);
        }
        if let Some(n) = c.max_attempts {
            b = b.max_attempts(n);
        }
        if let Some(ordering) = c.ordering {
            b = b.ordering(ordering);
        }
        match (c.max_in_flight, c.max_concurrency) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    setting: format!("consumer `{}`: max_in_flight", c.name),
                    message: "max_concurrency is Deimos's name for max_in_flight: give one of the two".into(),
                });
            }
            (Some(n), None) | (None, Some(n)) => b = b.max_in_flight(n),
            (None, None) => {}
        }
        if let Some(bytes) = c.max_buffered_bytes {
            b = b.max_buffered_bytes(bytes);
        }
        if let Some(topic) = &c.dead_letter_topic {
            b = b.dead_letter_topic(topic);
        }
        b = b.report_lag(c.report_lag.unwrap_or(self.consumers.report_lag));
        if let Some(level) = c.payload_log.or(self.consumers.payload_log) {
            b = b.payload_log(level);
        }
        for (k, v) in &c.settings {
            b = b.kafka_setting(k, v);
        }
        Ok(b.disabled(c.disabled))
    }

    /// A consumer runner builder with `kafka.brokers`, the shared and `[consumers]` librdkafka settings,
    /// `reraise_errors`, the shutdown timeout, `registry` and the schema store (the one
    /// [`setup`](Config::setup) shares, loaded once); add the listeners and build.
    /// [`runner`](Self::runner) does all of that from the configuration and the handlers.
    pub fn runner_builder(&self, registry: Arc<dyn SchemaRegistry>) -> Result<ConsumerRunnerBuilder, ConfigError> {
        let mut b = ConsumerRunner::builder()
            .bootstrap_servers(self.brokers()?)
            .kafka_settings(self.consumer_settings())
            .registry(registry)
            .schema_store(self.parts(Config::shared_store)?)
            .reraise_errors(self.consumers.reraise_errors);
        if let Some(t) = self.consumers.shutdown_timeout {
            b = b.shutdown_timeout(t);
        }
        Ok(b)
    }

    /// `outbox.database_url`, or an error saying where to set it.
    pub fn database_url(&self) -> Result<&str, ConfigError> {
        self.outbox
            .database_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| ConfigError::Missing {
                setting: "outbox.database_url".into(),
                hint: "set database_url = \"postgres://…\" (or mysql://…, sqlite://PATH) under [outbox], or DEIMOS_OUTBOX__DATABASE_URL".into(),
            })
    }

    /// The relay's settings from `[outbox]` (defaults for what is not set).
    #[cfg(feature = "outbox")]
    pub fn relay_config(&self) -> deimos_outbox_diesel::RelayConfig {
        use deimos_outbox_diesel::{RelayConfig, Topics};
        let topics = |list: &[String]| {
            if list.iter().any(|t| t == "all") {
                Topics::All
            } else if list.is_empty() {
                Topics::None
            } else {
                Topics::only(list.iter().cloned())
            }
        };
        let o = &self.outbox;
        let mut config = RelayConfig::builder();
        if let Some(n) = o.batch_size {
            config = config.batch_size(n);
        }
        if let Some(n) = o.max_in_flight {
            config = config.max_in_flight(n);
        }
        if let Some(n) = o.max_workers {
            config = config.max_workers(n);
        }
        if let Some(t) = o.lease_ttl {
            config = config.lease_ttl(t);
        }
        if let Some(t) = o.poll_interval {
            config = config.poll_interval(t);
        }
        config = config.delivery_timeout(o.delivery_timeout);
        if let Some(t) = o.connect_timeout {
            config = config.connect_timeout(t);
        }
        if let Some(t) = o.statement_timeout {
            config = config.statement_timeout(t);
        }
        config = config.pool_size(o.pool_size);
        config = config.compact_topics(topics(&o.compact_topics));
        config = config.log_topics(topics(&o.log_topics));
        config.build()
    }
}

impl ConsumerConfig {
    /// Whether `delivery` asks for a batch handler (`inline_batch`); `message`, `batch` and unset are per message.
    pub fn is_batch(&self) -> bool {
        self.delivery == Some(ConsumerDelivery::InlineBatch)
    }
}
