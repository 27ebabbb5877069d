//! [`ConsumerRunner`]: runs several listeners in one process until shutdown.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deimos_avro::{AvroSchema, SchemaStore};
use deimos_core::redact;
use deimos_core::shutdown::{self, CancellationToken};
use deimos_keys::{KeyDecoder, KeySpec};
use deimos_registry::{SchemaCodec, SchemaRegistry};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureProducer;
use tokio::task::JoinHandle;

use crate::context::{KafkaConsumer, ListenerContext, commit_stored};
use crate::control::{ListenerControl, RunnerControl, Wiring};
use crate::dead_letter::DeadLetter;
use crate::delay::TimestampField;
use crate::error::{ConsumerError, HandlerError};
use crate::handler::ErrorContext;
use crate::listen::{Loop, Stop};
use crate::listener::Listener;
use crate::process::{Env, FatalFn, Policy};
use crate::progress::Progress;

/// Default bound on a graceful shutdown (finish in-flight work, commit, leave the groups).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs listeners: one librdkafka consumer and one tokio task each, sharing a schema registry client.
///
/// Built with [`ConsumerRunner::builder`]; [`build`](ConsumerRunnerBuilder::build) is a preflight that
/// loads every value schema and checks every key config and librdkafka setting, so configuration errors
/// show before the first message. Then [`run`](Self::run) (until SIGTERM or ctrl-c) or
/// [`run_until`](Self::run_until).
pub struct ConsumerRunner {
    listeners: Vec<Prepared>,
    codec: Arc<SchemaCodec>,
    reraise_errors: bool,
    fatal_error: Option<FatalFn>,
    shutdown_timeout: Duration,
    shutdown: CancellationToken,
    control: RunnerControl,
}

impl fmt::Debug for ConsumerRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerRunner")
            .field(
                "listeners",
                &self.listeners.iter().map(|l| &l.listener).collect::<Vec<_>>(),
            )
            .field("reraise_errors", &self.reraise_errors)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

/// A listener checked against the schema store, with its librdkafka configs.
struct Prepared {
    listener: Listener,
    reader: AvroSchema,
    key_spec: KeySpec,
    timestamp: Option<TimestampField>,
    consumer_config: ClientConfig,
    producer_config: Option<ClientConfig>,
    /// The loop's end of the listener's control.
    wiring: Wiring,
}

/// Stops a running [`ConsumerRunner`] from anywhere. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    /// Asks the runner to shut down gracefully: stop fetching, finish in-flight messages, commit, leave the
    /// groups. Returns at once; the runner's `run` future completes when it is done.
    pub fn shutdown(&self) {
        self.0.cancel();
    }

    /// Whether shutdown was asked for.
    pub fn is_shutdown(&self) -> bool {
        self.0.is_cancelled()
    }

    /// The runner's stop as tokio-util's `CancellationToken`: cancelling it shuts the runner down, and
    /// `cancelled()` waits until something did (to stop other parts of a service along with the runner).
    pub fn token(&self) -> CancellationToken {
        self.0.clone()
    }
}

impl ConsumerRunner {
    /// Starts configuring a runner.
    pub fn builder() -> ConsumerRunnerBuilder {
        ConsumerRunnerBuilder::default()
    }

    /// A handle that shuts this runner down.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// A handle to pause, resume and seek the runner's listeners, and to read their [`Health`](crate::Health)
    /// (see the crate docs for serving it to Kubernetes probes).
    pub fn control(&self) -> RunnerControl {
        self.control.clone()
    }

    /// Runs until SIGTERM or ctrl-c (or a [`ShutdownHandle`]), then shuts down gracefully.
    pub async fn run(self) -> Result<(), ConsumerError> {
        self.run_until(async {
            shutdown::signal().await;
            tracing::info!("shutdown signal received");
        })
        .await
    }

    /// Runs until `stop` completes (or a [`ShutdownHandle`] is used), then shuts down gracefully: stops
    /// fetching, lets every listener finish the message or batch in flight, commits handled offsets and
    /// leaves the consumer groups, within the shutdown timeout.
    ///
    /// Returns an error when a consumer cannot be created or subscribed, or a listener panicked.
    pub async fn run_until<F: Future<Output = ()>>(self, stop: F) -> Result<(), ConsumerError> {
        let ConsumerRunner {
            listeners,
            codec,
            reraise_errors,
            fatal_error,
            shutdown_timeout,
            shutdown,
            control: _,
        } = self;
        let mut running: Vec<Running> = Vec::with_capacity(listeners.len());
        let mut failed = None;
        for prepared in listeners {
            match start(
                prepared,
                &codec,
                reraise_errors,
                fatal_error.clone(),
                &shutdown,
                shutdown_timeout,
            ) {
                Ok(r) => running.push(r),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        // Dropped before the end (its future dropped, its task aborted: a crash, as far as the listeners go), the
        // runner takes its listeners down with it instead of leaving them running unowned.
        let _abort_on_drop = AbortOnDrop(running.iter().map(|r| r.task.abort_handle()).collect());
        if failed.is_none() {
            tracing::info!(listeners = running.len(), "consumer runner started");
            let ended = {
                let any_ended = futures::future::select_all(running.iter_mut().map(|r| &mut r.task));
                tokio::select! {
                    () = stop => None,
                    () = shutdown.cancelled() => None,
                    (result, index, _) = any_ended => Some((result, index)),
                }
            };
            // A listener ended on its own: only a panic does that.
            if let Some((result, index)) = ended
                && let Some(r) = running.get_mut(index)
            {
                r.finished = true;
                if let Err(e) = result {
                    failed = Some(panicked(&r.topic, &r.group_id, e));
                }
            }
        }
        shutdown.cancel();
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        for r in &mut running {
            if r.finished {
                continue;
            }
            match tokio::time::timeout_at(deadline, &mut r.task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let e = panicked(&r.topic, &r.group_id, e);
                    tracing::error!(error = %e, "listener panicked");
                    failed.get_or_insert(e);
                }
                Err(_) => {
                    tracing::warn!(
                        topic = r.topic,
                        group_id = r.group_id,
                        ?shutdown_timeout,
                        "the listener did not finish its in-flight message within the shutdown timeout; abandoning it (it is delivered again later)"
                    );
                    r.task.abort();
                    let _ = tokio::time::timeout(Duration::from_secs(1), &mut r.task).await;
                }
            }
        }
        // Commit and leave the groups off the async threads: closing a consumer blocks until it has left.
        let closing: Vec<_> = running
            .into_iter()
            .map(|r| {
                let (topic, group_id) = (r.topic.clone(), r.group_id.clone());
                let join = tokio::task::spawn_blocking(move || {
                    commit_stored(&*r.consumer, &r.topic, "shutdown");
                    r.consumer.context().set_closing();
                    drop(r.consumer);
                    drop(r.dead_letter);
                });
                (topic, group_id, join)
            })
            .collect();
        let remaining = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(1));
        let close_deadline = tokio::time::Instant::now() + remaining;
        for (topic, group_id, join) in closing {
            if tokio::time::timeout_at(close_deadline, join).await.is_err() {
                tracing::warn!(
                    topic,
                    group_id,
                    "the consumer did not leave its group within the shutdown timeout; it keeps closing in the background"
                );
            }
        }
        tracing::info!("consumer runner stopped");
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn panicked(topic: &str, group_id: &str, e: tokio::task::JoinError) -> ConsumerError {
    let message = match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(not a string)".to_string()),
        Err(e) => e.to_string(),
    };
    ConsumerError::ListenerPanicked {
        topic: topic.to_string(),
        group_id: group_id.to_string(),
        message,
    }
}

/// Aborts listener tasks when dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A started listener.
struct Running {
    topic: String,
    group_id: String,
    consumer: Arc<KafkaConsumer>,
    dead_letter: Option<Arc<DeadLetter>>,
    task: JoinHandle<()>,
    finished: bool,
}

fn start(
    prepared: Prepared,
    codec: &Arc<SchemaCodec>,
    reraise_errors: bool,
    global_fatal: Option<FatalFn>,
    shutdown: &CancellationToken,
    shutdown_timeout: Duration,
) -> Result<Running, ConsumerError> {
    let Prepared {
        listener,
        reader,
        key_spec,
        timestamp,
        consumer_config,
        producer_config,
        wiring,
    } = prepared;
    let topic: Arc<str> = Arc::from(listener.topic.as_str());
    let group_id: Arc<str> = Arc::from(listener.group_id.as_str());
    let progress = Arc::new(Progress::default());
    // The rest of the shutdown timeout is for closing (leaving the group); a revoke waits as long for the
    // messages being handled.
    let commit_within = shutdown_timeout.mul_f64(0.75);
    let context = ListenerContext::new(
        Arc::clone(&topic),
        Arc::clone(&group_id),
        listener.report_lag,
        Arc::clone(&progress),
        commit_within,
    );
    let consumer: KafkaConsumer =
        consumer_config
            .create_with_context(context)
            .map_err(|e| ConsumerError::KafkaConfig {
                client: "consumer",
                topic: listener.topic.clone(),
                source: Box::new(redact::kafka_error(e, &consumer_config)),
            })?;
    consumer
        .subscribe(&[&listener.topic])
        .map_err(|e| ConsumerError::Subscribe {
            topic: listener.topic.clone(),
            group_id: listener.group_id.clone(),
            source: Box::new(e),
        })?;
    let consumer = Arc::new(consumer);
    let dead_letter = match (producer_config, &listener.dead_letter_topic) {
        (Some(config), Some(dlq)) => {
            let producer: FutureProducer = config.create().map_err(|e| ConsumerError::KafkaConfig {
                client: "dead-letter producer",
                topic: listener.topic.clone(),
                source: Box::new(redact::kafka_error(e, &config)),
            })?;
            Some(Arc::new(DeadLetter::new(dlq.clone(), producer)))
        }
        _ => None,
    };
    let env = Env {
        topic,
        group_id,
        codec: Arc::clone(codec),
        reader,
        keys: KeyDecoder::new(key_spec),
        timestamp,
        policy: Policy {
            error_policy: listener.error_policy,
            max_attempts: listener.max_attempts,
            backoff: listener.backoff,
            reraise_errors,
            global_fatal,
            inline: false,
        },
        dead_letter: dead_letter.clone(),
        max_batch_size: listener.max_batch_size,
        max_wait: listener.max_wait,
        payload_log: listener.payload_log,
        ordering: listener.ordering,
        max_in_flight: listener.max_in_flight,
        max_buffered_bytes: listener.max_buffered_bytes,
    };
    let task = tokio::spawn(listener.delivery.start().run(
        env,
        Loop {
            consumer: Arc::clone(&consumer),
            progress,
            wiring,
            stop: Stop {
                signal: shutdown.clone(),
                commit_within,
            },
        },
    ));
    tracing::info!(
        topic = listener.topic,
        group_id = listener.group_id,
        dead_letter_topic = listener.dead_letter_topic,
        "listener started"
    );
    Ok(Running {
        topic: listener.topic,
        group_id: listener.group_id,
        consumer,
        dead_letter,
        task,
        finished: false,
    })
}

/// Configures a [`ConsumerRunner`].
#[must_use]
pub struct ConsumerRunnerBuilder {
    bootstrap_servers: Option<String>,
    kafka_settings: BTreeMap<String, String>,
    registry: Option<Arc<dyn SchemaRegistry>>,
    schema_store: Option<Arc<SchemaStore>>,
    reraise_errors: bool,
    fatal_error: Option<FatalFn>,
    shutdown_timeout: Duration,
    listeners: Vec<Listener>,
}

impl Default for ConsumerRunnerBuilder {
    fn default() -> Self {
        ConsumerRunnerBuilder {
            bootstrap_servers: None,
            kafka_settings: BTreeMap::new(),
            registry: None,
            schema_store: None,
            reraise_errors: false,
            fatal_error: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            listeners: Vec::new(),
        }
    }
}

impl fmt::Debug for ConsumerRunnerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerRunnerBuilder")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl ConsumerRunnerBuilder {
    /// The brokers (`bootstrap.servers`), comma-separated. Required.
    pub fn bootstrap_servers(mut self, servers: impl Into<String>) -> Self {
        self.bootstrap_servers = Some(servers.into());
        self
    }

    /// A librdkafka setting passed through to every listener's consumer and dead-letter producer (TLS,
    /// SASL, client.id, ...). A listener's own settings win over these.
    pub fn kafka_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.kafka_settings.insert(key.into(), value.into());
        self
    }

    /// Several librdkafka settings at once (a map, or a map's reference, or pairs); see
    /// [`kafka_setting`](Self::kafka_setting).
    pub fn kafka_settings<K: Into<String>, V: Into<String>>(
        mut self,
        settings: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.kafka_settings
            .extend(settings.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The schema registry that writer schemas are fetched from, by the id in each message. Required.
    pub fn registry(mut self, registry: Arc<dyn SchemaRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The local schemas (reader schemas and key schemas), shared with the producers' setup by `Arc` or given
    /// by value. Required.
    pub fn schema_store(mut self, store: impl Into<Arc<SchemaStore>>) -> Self {
        self.schema_store = Some(store.into());
        self
    }

    /// Deimos's `reraise_errors`: when `true`, every error is fatal, whatever the listeners' policies.
    pub fn reraise_errors(mut self, yes: bool) -> Self {
        self.reraise_errors = yes;
        self
    }

    /// Deimos's global `fatal_error` predicate: errors for which it returns `true` are fatal.
    pub fn fatal_error<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&HandlerError, &ErrorContext) -> bool + Send + Sync + 'static,
    {
        self.fatal_error = Some(Arc::new(predicate));
        self
    }

    /// The longest a graceful shutdown takes to finish in-flight work, commit and leave the groups
    /// (default 30 s; closing gets at least 1 s of it). A listener still busy after it is abandoned (its
    /// message is not committed, so it is delivered again); a consumer still closing keeps closing on its
    /// blocking thread.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Adds a listener. A [disabled](crate::ListenerBuilder::disabled) one is left out when the runner is built.
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Checks everything that can be checked before connecting: loads the value schemas, builds the key
    /// specs (a key field that does not exist, a key schema that does not load) and validates the
    /// librdkafka settings.
    pub fn build(self) -> Result<ConsumerRunner, ConsumerError> {
        let registry = self.registry.ok_or(ConsumerError::MissingRegistry)?;
        let store = self.schema_store.ok_or(ConsumerError::MissingSchemaStore)?;
        let servers = self
            .bootstrap_servers
            .filter(|s| !s.trim().is_empty())
            .ok_or(ConsumerError::MissingBootstrapServers)?;
        if self.listeners.is_empty() {
            return Err(ConsumerError::NoListeners);
        }
        let (disabled, listeners): (Vec<Listener>, Vec<Listener>) =
            self.listeners.into_iter().partition(Listener::is_disabled);
        for listener in &disabled {
            tracing::info!(
                topic = %listener.topic,
                group_id = %listener.group_id,
                "the listener is disabled: left out of the runner"
            );
        }
        if listeners.is_empty() {
            return Err(ConsumerError::AllListenersDisabled {
                topics: disabled.into_iter().map(|l| l.topic).collect(),
            });
        }
        let mut prepared = Vec::with_capacity(listeners.len());
        let mut controls = Vec::with_capacity(listeners.len());
        for listener in listeners {
            let (control, wiring) = ListenerControl::new(&listener.topic, &listener.group_id);
            controls.push(control);
            prepared.push(prepare(listener, &store, &servers, &self.kafka_settings, wiring)?);
        }
        Ok(ConsumerRunner {
            listeners: prepared,
            codec: Arc::new(SchemaCodec::from_arc(registry)),
            reraise_errors: self.reraise_errors,
            fatal_error: self.fatal_error,
            shutdown_timeout: self.shutdown_timeout,
            shutdown: CancellationToken::new(),
            control: RunnerControl {
                listeners: Arc::new(controls),
            },
        })
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// What a listener reads with: its reader schema, its key spec and the payload's `timestamp` field.
pub(crate) struct Schemas {
    pub(crate) reader: AvroSchema,
    pub(crate) key_spec: KeySpec,
    pub(crate) timestamp: Option<TimestampField>,
}

/// Loads a listener's value schema and builds its key spec.
pub(crate) fn schemas(listener: &Listener, store: &SchemaStore) -> Result<Schemas, ConsumerError> {
    let topic = listener.topic.clone();
    let schema = deimos_avro::full_name(&listener.value_schema, listener.namespace.as_deref());
    let reader = store.get(&schema).map_err(|source| ConsumerError::Schema {
        topic: topic.clone(),
        schema,
        source: Box::new(source),
    })?;
    let key_spec =
        KeySpec::build(listener.key_config.clone(), &reader, store).map_err(|source| ConsumerError::KeyConfig {
            topic: topic.clone(),
            source: Box::new(source),
        })?;
    let timestamp = TimestampField::of(&reader);
    Ok(Schemas {
        reader,
        key_spec,
        timestamp,
    })
}

fn prepare(
    listener: Listener,
    store: &SchemaStore,
    servers: &str,
    runner_settings: &BTreeMap<String, String>,
    wiring: Wiring,
) -> Result<Prepared, ConsumerError> {
    let topic = listener.topic.clone();
    let Schemas {
        reader,
        key_spec,
        timestamp,
    } = schemas(&listener, store)?;

    let mut consumer = BTreeMap::<String, String>::new();
    let mut set = |k: &str, v: String| {
        consumer.insert(k.to_string(), v);
    };
    set("bootstrap.servers", servers.to_string());
    set("enable.auto.commit", "true".into());
    set("auto.commit.interval.ms", millis(listener.commit_interval));
    set(
        "auto.offset.reset",
        if listener.start_from_beginning {
            "earliest"
        } else {
            "latest"
        }
        .into(),
    );
    set("partition.assignment.strategy", "cooperative-sticky".into());
    set("enable.partition.eof", "false".into());
    consumer.extend(runner_settings.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut set = |k: &str, v: String| {
        consumer.insert(k.to_string(), v);
    };
    if let Some(t) = listener.session_timeout {
        set("session.timeout.ms", millis(t));
    }
    if let Some(t) = listener.heartbeat_interval {
        set("heartbeat.interval.ms", millis(t));
    }
    if listener.report_lag {
        set("statistics.interval.ms", millis(listener.lag_interval));
    }
    consumer.extend(listener.kafka_settings.iter().map(|(k, v)| (k.clone(), v.clone())));
    // At-least-once: only offsets of handled messages are stored, by the listener.
    consumer.insert("group.id".into(), listener.group_id.clone());
    consumer.insert("enable.auto.offset.store".into(), "false".into());
    let consumer_config = client_config(&consumer, "consumer", &topic)?;

    let producer_config = match &listener.dead_letter_topic {
        None => None,
        Some(_) => {
            let mut producer = BTreeMap::<String, String>::new();
            producer.insert("bootstrap.servers".into(), servers.to_string());
            producer.insert("enable.idempotence".into(), "true".into());
            producer.extend(runner_settings.iter().map(|(k, v)| (k.clone(), v.clone())));
            // The listener's own settings too (SASL credentials, TLS, client.id), but not those of a consumer.
            producer.extend(
                listener
                    .kafka_settings
                    .iter()
                    .filter(|(k, _)| !is_consumer_only(k))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            Some(client_config(&producer, "dead-letter producer", &topic)?)
        }
    };
    Ok(Prepared {
        listener,
        reader,
        key_spec,
        timestamp,
        consumer_config,
        producer_config,
        wiring,
    })
}

/// librdkafka settings that only a consumer takes (a producer warns about them).
fn is_consumer_only(key: &str) -> bool {
    const PREFIXES: &[&str] = &["group.", "fetch.", "auto.", "enable.auto.", "queued.", "consume."];
    const KEYS: &[&str] = &[
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "partition.assignment.strategy",
        "enable.partition.eof",
        "check.crcs",
        "isolation.level",
        "coordinator.query.interval.ms",
        "offset.store.method",
        "statistics.interval.ms",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p)) || KEYS.contains(&key)
}

fn client_config(
    settings: &BTreeMap<String, String>,
    client: &'static str,
    topic: &str,
) -> Result<ClientConfig, ConsumerError> {
    let mut config = ClientConfig::new();
    for (k, v) in settings {
        config.set(k, v);
    }
    // Let librdkafka check names and values now rather than at start.
    config.create_native_config().map_err(|e| ConsumerError::KafkaConfig {
        client,
        topic: topic.to_string(),
        source: Box::new(redact::kafka_error(e, &config)),
    })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::handler::{Handler, Message};
    use deimos_keys::KeyConfig;

    struct Nothing;

    #[async_trait::async_trait]
    impl Handler for Nothing {
        type Payload = serde_json::Value;

        async fn consume(&self, _message: Message<serde_json::Value>) -> Result<(), HandlerError> {
            Ok(())
        }
    }

    #[test]
    fn the_dead_letter_producer_takes_the_listeners_kafka_settings_but_not_its_consumer_ones() {
        let store = SchemaStore::load_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas")).unwrap();
        let listener = Listener::builder("widgets", "g")
            .schema("com.acme.Widget")
            .key_config(KeyConfig::Plain)
            .dead_letter_topic("widgets-dlq")
            .kafka_setting("security.protocol", "sasl_ssl")
            .kafka_setting("sasl.mechanism", "PLAIN")
            .kafka_setting("sasl.username", "svc")
            .kafka_setting("sasl.password", "pw")
            .kafka_setting("max.poll.interval.ms", "60000")
            .handler(Nothing)
            .build()
            .unwrap();
        let runner = BTreeMap::from([("client.id".to_string(), "svc-1".to_string())]);
        let prepared = prepare(
            listener,
            &store,
            "localhost:9092",
            &runner,
            ListenerControl::new("t", "g").1,
        )
        .unwrap();
        let producer = prepared.producer_config.unwrap();
        assert_eq!(producer.get("sasl.username"), Some("svc"));
        assert_eq!(producer.get("sasl.password"), Some("pw"));
        assert_eq!(producer.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(producer.get("client.id"), Some("svc-1"));
        assert_eq!(producer.get("max.poll.interval.ms"), None, "a consumer setting");
        assert_eq!(prepared.consumer_config.get("max.poll.interval.ms"), Some("60000"));
    }

    #[test]
    fn configuration_errors_do_not_show_secret_values() {
        let store = SchemaStore::load_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas")).unwrap();
        let listener = Listener::builder("widgets", "g")
            .schema("com.acme.Widget")
            .key_config(KeyConfig::Plain)
            .kafka_setting("sasl.password", "s3cr3t-PASS")
            .kafka_setting("sasl.oauthbearer.method", "s3cr3t-METHOD")
            .handler(Nothing)
            .build()
            .unwrap();
        let error = prepare(
            listener,
            &store,
            "localhost:9092",
            &BTreeMap::new(),
            ListenerControl::new("t", "g").1,
        )
        .err()
        .unwrap();
        for shown in [
            format!("{error}"),
            format!("{error:?}"),
            crate::process::error_chain(&error),
        ] {
            assert!(shown.contains("sasl.oauthbearer.method"), "{shown}");
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
    }
}
