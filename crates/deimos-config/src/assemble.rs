//! What a configuration builds by itself: producers by name and the consumer runner from handlers, over a schema
//! store, a registry client and a Kafka backend it makes once and shares.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use deimos_avro::SchemaStore;
use deimos_consumer::{BatchHandler, ConsumerRunner, Handler, ListenerBuilder};
use deimos_producer::{Producer, ProducerSetup};
use deimos_registry::SchemaRegistry;

use crate::{Config, ConfigError};

/// The parts a configuration made, shared by everything it builds.
#[derive(Clone, Default)]
pub(crate) struct Shared(Arc<Mutex<Parts>>);

#[derive(Default)]
pub(crate) struct Parts {
    store: Option<Arc<SchemaStore>>,
    registry: Option<Arc<dyn SchemaRegistry>>,
    setup: Option<ProducerSetup>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Shared")
    }
}

/// Built parts are not part of what a configuration says.
impl PartialEq for Shared {
    fn eq(&self, _: &Shared) -> bool {
        true
    }
}

impl Config {
    pub(crate) fn parts<T>(
        &self,
        f: impl FnOnce(&Config, &mut Parts) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        let mut parts = self.shared.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(self, &mut parts)
    }

    pub(crate) fn shared_store(config: &Config, parts: &mut Parts) -> Result<Arc<SchemaStore>, ConfigError> {
        if let Some(store) = &parts.store {
            return Ok(Arc::clone(store));
        }
        let store = Arc::new(config.schema_store()?);
        parts.store = Some(Arc::clone(&store));
        Ok(store)
    }

    fn shared_registry(config: &Config, parts: &mut Parts) -> Result<Arc<dyn SchemaRegistry>, ConfigError> {
        if let Some(registry) = &parts.registry {
            return Ok(Arc::clone(registry));
        }
        let registry = config.registry()?;
        parts.registry = Some(Arc::clone(&registry));
        Ok(registry)
    }

    /// The producer setup of this configuration: the schemas of `schema.path`, the registry of `[schema]` and
    /// the Kafka backend of `[kafka]` and `[producers]`, made on first use and shared by every producer built
    /// with [`producer`](Config::producer) (one librdkafka producer for the process, as Deimos has).
    pub fn setup(&self) -> Result<ProducerSetup, ConfigError> {
        self.parts(|config, parts| {
            if let Some(setup) = &parts.setup {
                return Ok(setup.clone());
            }
            let store = Config::shared_store(config, parts)?;
            let registry = Config::shared_registry(config, parts)?;
            let setup = config.producer_setup(store, registry, config.kafka_backend()?)?.build();
            parts.setup = Some(setup.clone());
            Ok(setup)
        })
    }

    /// The `[[producer]]` named `name`, built on [`setup`](Config::setup): its preflight registers its subjects
    /// with the registry. For a partition-key function or another backend, use
    /// [`producer_builder`](Config::producer_builder).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = deimos_config::Config::load("deimos.toml")?;
    /// let widgets = config.producer("WidgetProducer").await?;
    /// widgets.publish(serde_json::json!({"id": 7, "name": "sprocket"})).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn producer(&self, name: &str) -> Result<Producer, ConfigError> {
        let builder = self.producer_builder(name)?;
        let setup = self.setup()?;
        builder
            .build(&setup)
            .await
            .map_err(|e| ConfigError::Producer(Box::new(e)))
    }

    /// The consumer runner of every `[[consumer]]` that is not `disabled`, each with its handler from
    /// `handlers`, on the configuration's registry client and schemas. Fails, before connecting, when an enabled
    /// consumer has no handler, a handler names no consumer, or a handler's kind does not match the consumer's
    /// `delivery` (`inline_batch` takes a batch handler, `message` and `batch` a handler).
    pub fn runner(&self, handlers: Handlers) -> Result<ConsumerRunner, ConfigError> {
        let registry = self.parts(Config::shared_registry)?;
        let mut runner = self.runner_builder(registry)?;
        let mut handlers = handlers.entries;
        for (name, _) in &handlers {
            self.consumer_config(name)?;
        }
        for c in self.enabled_consumers() {
            let Some(at) = handlers.iter().position(|(name, _)| name.eq_ignore_ascii_case(&c.name)) else {
                return Err(ConfigError::Missing {
                    setting: format!("the handler of consumer `{}`", c.name),
                    hint: format!(
                        "give it with `Handlers::new().{}(\"{}\", …)`, or set `disabled = true` in its [[consumer]]",
                        if c.is_batch() { "batch_handler" } else { "handler" },
                        c.name
                    ),
                });
            };
            let (_, handler) = handlers.swap_remove(at);
            if handler.batch != c.is_batch() {
                return Err(ConfigError::Invalid {
                    setting: format!("consumer `{}`: delivery", c.name),
                    message: if c.is_batch() {
                        "`inline_batch` hands the whole batch to a BatchHandler: give it with `batch_handler`".into()
                    } else {
                        "this consumer hands messages one by one to a Handler: give it with `handler`, or set \
                         delivery = \"inline_batch\" for a BatchHandler"
                            .into()
                    },
                });
            }
            let listener = (handler.attach)(self.listener(&c.name)?)
                .build()
                .map_err(|e| ConfigError::Consumer(Box::new(e)))?;
            runner = runner.listener(listener);
        }
        runner.build().map_err(|e| ConfigError::Consumer(Box::new(e)))
    }
}

/// The handlers of a configuration's consumers, by `[[consumer]]` name, for [`Config::runner`].
///
/// ```
/// use deimos_config::Handlers;
/// use deimos_consumer::{Handler, HandlerError, Message, async_trait};
///
/// struct Print;
///
/// #[async_trait]
/// impl Handler for Print {
///     type Payload = serde_json::Value;
///     async fn consume(&self, message: Message<serde_json::Value>) -> Result<(), HandlerError> {
///         println!("{:?}", message.payload);
///         Ok(())
///     }
/// }
///
/// let handlers = Handlers::new().handler("WidgetConsumer", Print);
/// # let _ = handlers;
/// ```
#[derive(Default)]
#[must_use]
pub struct Handlers {
    entries: Vec<(String, Attach)>,
}

struct Attach {
    batch: bool,
    attach: Box<dyn FnOnce(ListenerBuilder) -> ListenerBuilder + Send>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(name, _)| name))
            .finish()
    }
}

impl Handlers {
    /// No handlers yet.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// The handler of the `[[consumer]]` named `consumer` (case-insensitively): called once per message.
    pub fn handler<H: Handler>(mut self, consumer: impl Into<String>, handler: H) -> Handlers {
        self.entries.push((
            consumer.into(),
            Attach {
                batch: false,
                attach: Box::new(move |b| b.handler(handler)),
            },
        ));
        self
    }

    /// The batch handler of the `[[consumer]]` named `consumer`, whose `delivery` is `inline_batch`.
    pub fn batch_handler<H: BatchHandler>(mut self, consumer: impl Into<String>, handler: H) -> Handlers {
        self.entries.push((
            consumer.into(),
            Attach {
                batch: true,
                attach: Box::new(move |b| b.batch_handler(handler)),
            },
        ));
        self
    }
}
