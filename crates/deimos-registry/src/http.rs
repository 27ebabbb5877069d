//! [`HttpRegistry`]: a client of the Confluent Schema Registry REST API.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deimos_avro::{AvroSchema, CompatibilityLevel};
use deimos_core::redact;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{CachedRegistry, CompatibilityCheck, RegisteredSchema, RegistryError, SchemaRegistry, VersionRef};

/// The media type of the Confluent Schema Registry API.
pub const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The largest answer [`HttpRegistry`] reads by default: 8 MiB. See [`HttpRegistryBuilder::max_response_bytes`].
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 << 20;

const ACCEPT_VALUE: &str =
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json; q=0.9, application/json; q=0.5";

/// A [`SchemaRegistry`] speaking the Confluent Schema Registry REST API over HTTP(S).
///
/// Every call is one or more HTTP requests: wrap it in a [`CachedRegistry`] for production use
/// ([`HttpRegistryBuilder::build_cached`] does). Connection errors, timeouts and 5xx answers are retried
/// with exponential backoff; 4xx answers never are.
///
/// ```no_run
/// # async fn run() -> Result<(), deimos_registry::RegistryError> {
/// use std::time::Duration;
/// use deimos_registry::{HttpRegistry, SchemaRegistry};
///
/// let registry = HttpRegistry::builder("https://registry.example.com/")
///     .basic_auth("user", "secret")
///     .timeout(Duration::from_secs(10))
///     .max_retries(5)
///     .build_cached()?;
/// let subjects = registry.subjects().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpRegistry {
    client: reqwest::Client,
    base: Url,
    auth: Auth,
    max_retries: u32,
    retry_base_delay: Duration,
    retry_max_delay: Duration,
    max_response_bytes: usize,
}

#[derive(Clone)]
enum Auth {
    None,
    Basic { user: String, password: String },
    Bearer(HeaderValue),
}

impl fmt::Debug for HttpRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.auth {
            Auth::None => "none",
            Auth::Basic { .. } => "basic",
            Auth::Bearer(_) => "bearer",
        };
        f.debug_struct("HttpRegistry")
            .field("url", &self.base.as_str())
            .field("auth", &auth)
            .field("max_retries", &self.max_retries)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

/// Builder of an [`HttpRegistry`]; see [`HttpRegistry::builder`].
///
/// Its `Debug` output and the errors of [`build`](Self::build) show the URL without its password or secret
/// query parameters, and neither the password nor the token.
#[derive(Clone)]
#[must_use]
pub struct HttpRegistryBuilder {
    url: String,
    user: Option<(String, String)>,
    bearer: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    max_retries: u32,
    retry_base_delay: Duration,
    retry_max_delay: Duration,
    proxy: bool,
    max_response_bytes: usize,
}

impl fmt::Debug for HttpRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRegistryBuilder")
            .field("url", &redact::url(&self.url))
            .field(
                "basic_auth",
                &self.user.as_ref().map(|(user, _)| (user, redact::REDACTED)),
            )
            .field("bearer_token", &self.bearer.as_ref().map(|_| redact::REDACTED))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("retry_max_delay", &self.retry_max_delay)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

impl HttpRegistryBuilder {
    /// Basic authentication (Confluent Cloud: API key and secret). Credentials in the URL
    /// (`https://user:pass@host`) are used when this is not set.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// A bearer token sent as `Authorization: Bearer <token>` (instead of basic authentication).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    /// Timeout of one whole request, from connecting to reading the body. Default 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Timeout for establishing a connection. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many times a request is retried after a connection error, a timeout or a 5xx answer
    /// (so at most `n + 1` attempts). Default 3; 0 disables retries.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The delay before the first retry; each further retry doubles it, up to
    /// [`retry_max_delay`](Self::retry_max_delay). Default 100 ms.
    pub fn retry_base_delay(mut self, delay: Duration) -> Self {
        self.retry_base_delay = delay;
        self
    }

    /// The longest delay between two attempts. Default 5 s.
    pub fn retry_max_delay(mut self, delay: Duration) -> Self {
        self.retry_max_delay = delay;
        self
    }

    /// The largest answer body read, in bytes; a larger one is a [`RegistryError::ResponseTooLarge`], found
    /// while reading (or from its `Content-Length`), without buffering the rest. Default
    /// [`DEFAULT_MAX_RESPONSE_BYTES`].
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Whether to use the proxies given by the environment (`HTTPS_PROXY`, ...). Default true.
    pub fn use_env_proxy(mut self, yes: bool) -> Self {
        self.proxy = yes;
        self
    }

    /// Builds the client. Fails when the URL is not an `http` or `https` URL or the token is not a valid
    /// header value.
    pub fn build(self) -> Result<HttpRegistry, RegistryError> {
        let mut base = Url::parse(self.url.trim()).map_err(|e| RegistryError::Config {
            message: format!(
                "schema registry URL `{}` is not a valid URL; use e.g. http://localhost:8081",
                redact::url(&self.url)
            ),
            source: Some(Box::new(e)),
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(RegistryError::config(format!(
                "schema registry URL `{}` must start with http:// or https://",
                redact::url(&self.url)
            )));
        }
        let url_user = if base.username().is_empty() {
            None
        } else {
            Some((
                percent_decode(base.username()),
                base.password().map(percent_decode).unwrap_or_default(),
            ))
        };
        // Never send credentials in the URL itself: strip them (they become basic auth below).
        let _ = base.set_username("");
        let _ = base.set_password(None);
        base.set_query(None);
        base.set_fragment(None);
        let auth = match (self.bearer, self.user.or(url_user)) {
            (Some(token), _) => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|e| RegistryError::Config {
                        message: "the bearer token contains characters not allowed in an HTTP header".into(),
                        source: Some(Box::new(e)),
                    })?;
                value.set_sensitive(true);
                Auth::Bearer(value)
            }
            (None, Some((user, password))) => Auth::Basic { user, password },
            (None, None) => Auth::None,
        };
        let mut client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("deimos-rs/", env!("CARGO_PKG_VERSION")));
        if !self.proxy {
            client = client.no_proxy();
        }
        let client = client.build().map_err(|e| RegistryError::Config {
            message: "cannot create the HTTP client (TLS setup failed?)".into(),
            source: Some(Box::new(e)),
        })?;
        Ok(HttpRegistry {
            client,
            base,
            auth,
            max_retries: self.max_retries,
            retry_base_delay: self.retry_base_delay,
            retry_max_delay: self.retry_max_delay,
            max_response_bytes: self.max_response_bytes,
        })
    }

    /// Builds the client wrapped in a [`CachedRegistry`] with default settings (what production code wants).
    pub fn build_cached(self) -> Result<CachedRegistry<HttpRegistry>, RegistryError> {
        Ok(CachedRegistry::new(self.build()?))
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// What a request was about, to turn error codes into precise errors.
#[derive(Default, Clone, Copy)]
struct Ctx<'a> {
    subject: Option<&'a str>,
    version: Option<VersionRef>,
    id: Option<u32>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<u32>,
    message: Option<String>,
    /// Not in Confluent's answers; deimos's embedded registry adds the list of incompatibilities.
    #[serde(default)]
    messages: Vec<String>,
}

#[derive(Deserialize)]
struct IdResponse {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

#[derive(Deserialize)]
struct Reference {
    subject: String,
    version: u32,
}

#[derive(Deserialize)]
struct SubjectVersionResponse {
    subject: String,
    id: u32,
    version: u32,
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

#[derive(Deserialize)]
struct CompatResponse {
    is_compatible: bool,
    #[serde(default)]
    messages: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigResponse {
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
    compatibility: Option<String>,
}

impl HttpRegistry {
    /// A builder for a registry at `url` (`http://host:8081`, with or without a trailing slash, possibly
    /// with a path prefix such as `https://host/registry/`).
    pub fn builder(url: impl Into<String>) -> HttpRegistryBuilder {
        HttpRegistryBuilder {
            url: url.into(),
            user: None,
            bearer: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_retries: 3,
            retry_base_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(5),
            proxy: true,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// A client for `url` with default settings and no authentication.
    pub fn new(url: impl Into<String>) -> Result<Self, RegistryError> {
        Self::builder(url).build()
    }

    /// The base URL (without credentials).
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    /// Deletes a subject (`DELETE /subjects/{subject}`) and returns the versions deleted; see
    /// [`MemoryRegistry::delete_subject`](crate::MemoryRegistry::delete_subject) for the semantics.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>, RegistryError> {
        let mut url = self.url_for(&["subjects", subject])?;
        if permanent {
            url.set_query(Some("permanent=true"));
        }
        self.json(
            Method::DELETE,
            url,
            None,
            Ctx {
                subject: Some(subject),
                ..Ctx::default()
            },
        )
        .await
    }

    fn url_for(&self, segments: &[&str]) -> Result<Url, RegistryError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| RegistryError::config(format!("schema registry URL `{}` cannot take a path", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.retry_base_delay.saturating_mul(factor).min(self.retry_max_delay)
    }

    /// Sends a request with retries and returns the status and body of the final answer.
    async fn send(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Result<(StatusCode, Vec<u8>), RegistryError> {
        let mut attempt = 0u32;
        loop {
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .header(ACCEPT, ACCEPT_VALUE);
            if let Some(body) = body {
                req = req.header(CONTENT_TYPE, MEDIA_TYPE).body(body.to_vec());
            }
            req = match &self.auth {
                Auth::None => req,
                Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
                Auth::Bearer(value) => req.header(AUTHORIZATION, value.clone()),
            };
            let result = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    read_body(resp, self.max_response_bytes)
                        .await
                        .map(|b| b.map(|b| (status, b)))
                }
                Err(e) => Err(e),
            };
            let retries_left = attempt < self.max_retries;
            match result {
                Ok(None) => {
                    return Err(RegistryError::ResponseTooLarge {
                        method: method.to_string(),
                        url: url.to_string(),
                        limit: self.max_response_bytes,
                    });
                }
                Ok(Some((status, _))) if status.is_server_error() && retries_left => {
                    tracing::warn!(%method, %url, %status, attempt, "schema registry answered with a server error; retrying");
                }
                Ok(Some(answer)) => return Ok(answer),
                Err(e) if retries_left && !e.is_builder() => {
                    tracing::warn!(%method, %url, error = %e, attempt, "schema registry request failed; retrying");
                }
                Err(e) => {
                    return Err(RegistryError::Transport {
                        method: method.to_string(),
                        url: url.to_string(),
                        timed_out: e.is_timeout(),
                        source: Box::new(e),
                    });
                }
            }
            tokio::time::sleep(self.delay(attempt)).await;
            attempt += 1;
        }
    }

    /// Sends a request and decodes a successful JSON answer, or maps the error answer.
    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        ctx: Ctx<'_>,
    ) -> Result<T, RegistryError> {
        let body = body.map(|b| b.to_string().into_bytes());
        let (status, bytes) = self.send(&method, &url, body.as_deref()).await?;
        if !status.is_success() {
            return Err(map_error(status, &bytes, &method, &url, ctx));
        }
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::InvalidResponse {
            url: url.to_string(),
            message: format!("cannot decode the answer ({e}): {}", snippet(&bytes)),
        })
    }

    fn schema_body(schema: &AvroSchema) -> serde_json::Value {
        serde_json::json!({ "schema": schema.canonical_json() })
    }

    /// Parses a schema text from the registry, resolving schema references through the registry (`walk`: the
    /// references being resolved, for the schema asked for).
    async fn parse_schema(
        &self,
        text: &str,
        schema_type: Option<&str>,
        references: &[Reference],
        id: Option<u32>,
        url: &Url,
        walk: &mut RefWalk,
    ) -> Result<AvroSchema, RegistryError> {
        if let Some(t) = schema_type
            && !t.eq_ignore_ascii_case("AVRO")
        {
            return Err(RegistryError::UnsupportedSchemaType {
                id,
                schema_type: t.to_string(),
            });
        }
        let invalid = |e: deimos_avro::SchemaError| RegistryError::InvalidResponse {
            url: url.to_string(),
            message: format!("the registry returned a schema deimos-avro cannot parse: {e}"),
        };
        if references.is_empty() {
            return AvroSchema::parse(text).map_err(invalid);
        }
        let mut refs = Vec::with_capacity(references.len());
        for r in references {
            let key = (r.subject.clone(), r.version);
            if let Some(text) = walk.resolved.get(&key) {
                refs.push(text.clone());
                continue;
            }
            let refused = |message: String| RegistryError::InvalidReferences {
                url: url.to_string(),
                message,
            };
            if walk.chain.contains(&key) {
                return Err(refused(format!(
                    "the references form a cycle: {} → {}",
                    walk.path(),
                    version_name(&key)
                )));
            }
            if walk.chain.len() >= MAX_REFERENCE_DEPTH {
                return Err(refused(format!(
                    "the references nest deeper than {MAX_REFERENCE_DEPTH} levels: {} → {}",
                    walk.path(),
                    version_name(&key)
                )));
            }
            if walk.resolved.len() >= MAX_REFERENCES {
                return Err(refused(format!(
                    "the schema refers to more than {MAX_REFERENCES} schema versions"
                )));
            }
            // Each referenced version is parsed self-contained (its own references inlined), once.
            walk.chain.push(key.clone());
            let resolved = self
                .subject_version(&r.subject, VersionRef::Number(r.version), walk)
                .await;
            walk.chain.pop();
            let text = resolved?.schema.canonical_json().to_string();
            walk.resolved.insert(key, text.clone());
            refs.push(text);
        }
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        AvroSchema::parse_with_refs(text, &refs).map_err(invalid)
    }

    /// `GET /subjects/{subject}/versions/{version}`, its references resolved within `walk`. Boxed: resolving
    /// references recurses through it.
    fn subject_version<'a>(
        &'a self,
        subject: &'a str,
        version: VersionRef,
        walk: &'a mut RefWalk,
    ) -> Pin<Box<dyn Future<Output = Result<RegisteredSchema, RegistryError>> + Send + 'a>> {
        Box::pin(async move {
            let v = version.to_string();
            let url = self.url_for(&["subjects", subject, "versions", &v])?;
            let ctx = Ctx {
                subject: Some(subject),
                version: Some(version),
                ..Ctx::default()
            };
            let r: SubjectVersionResponse = self.json(Method::GET, url.clone(), None, ctx).await?;
            let schema = self
                .parse_schema(
                    &r.schema,
                    r.schema_type.as_deref(),
                    &r.references,
                    Some(r.id),
                    &url,
                    walk,
                )
                .await?;
            Ok(RegisteredSchema {
                subject: r.subject,
                id: r.id,
                version: r.version,
                schema,
            })
        })
    }

    async fn get_config(&self, subject: Option<&str>) -> Result<CompatibilityLevel, RegistryError> {
        let url = match subject {
            Some(s) => {
                let mut url = self.url_for(&["config", s])?;
                url.set_query(Some("defaultToGlobal=true"));
                url
            }
            None => self.url_for(&["config"])?,
        };
        let r: ConfigResponse = self
            .json(
                Method::GET,
                url.clone(),
                None,
                Ctx {
                    subject,
                    ..Ctx::default()
                },
            )
            .await?;
        let level = r
            .compatibility_level
            .or(r.compatibility)
            .ok_or_else(|| RegistryError::InvalidResponse {
                url: url.to_string(),
                message: "the answer has no compatibilityLevel".into(),
            })?;
        level.parse().map_err(|e: String| RegistryError::InvalidResponse {
            url: url.to_string(),
            message: e,
        })
    }
}

/// The body of an answer, read chunk by chunk; `None` as soon as it is known to be larger than `limit` bytes.
async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let announced = resp.content_length().unwrap_or(0);
    if announced > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Ok(None);
    }
    // Trust an announced length only as far as a small first allocation.
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0).min(64 << 10));
    while let Some(chunk) = resp.chunk().await? {
        if chunk.len() > limit - body.len() {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// How deep schema references may nest: a schema referring to one that refers to another is 2 levels.
const MAX_REFERENCE_DEPTH: usize = 32;

/// How many distinct schema versions resolving one schema's references may fetch.
const MAX_REFERENCES: usize = 1_000;

/// The state of resolving the references of one schema.
#[derive(Default)]
struct RefWalk {
    /// The (subject, version) references being resolved, outermost first.
    chain: Vec<(String, u32)>,
    /// The self-contained text of each version resolved so far, so a version referred to twice is fetched once.
    resolved: HashMap<(String, u32), String>,
}

impl RefWalk {
    fn path(&self) -> String {
        let names: Vec<String> = self.chain.iter().map(version_name).collect();
        if names.is_empty() {
            "the schema".to_string()
        } else {
            names.join(" → ")
        }
    }
}

fn version_name((subject, version): &(String, u32)) -> String {
    format!("`{subject}` version {version}")
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

fn map_error(status: StatusCode, bytes: &[u8], method: &Method, url: &Url, ctx: Ctx<'_>) -> RegistryError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(bytes).ok();
    let (code, message, messages) = match parsed {
        Some(b) => (b.error_code, b.message.unwrap_or_else(|| snippet(bytes)), b.messages),
        None => (None, snippet(bytes), Vec::new()),
    };
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("").to_string()
    } else {
        message
    };
    let subject = || ctx.subject.unwrap_or_default().to_string();
    match (status.as_u16(), code) {
        (401 | 403, _) => RegistryError::Unauthorized {
            status: status.as_u16(),
            message,
        },
        (_, Some(40401)) => RegistryError::SubjectNotFound { subject: subject() },
        (_, Some(40402)) => RegistryError::VersionNotFound {
            subject: subject(),
            version: ctx.version.unwrap_or_default(),
        },
        (_, Some(40403)) => RegistryError::SchemaNotFound {
            id: ctx.id,
            subject: ctx.id.is_none().then(subject),
        },
        (_, Some(40405)) => RegistryError::SubjectNotSoftDeleted { subject: subject() },
        (409, _) | (_, Some(409)) => RegistryError::Incompatible {
            subject: subject(),
            messages: if messages.is_empty() { vec![message] } else { messages },
        },
        (_, Some(42201)) => RegistryError::InvalidSchema { message },
        (_, Some(42202)) => RegistryError::InvalidVersion {
            version: ctx.version.map(|v| v.to_string()).unwrap_or(message),
        },
        (_, Some(42203)) => RegistryError::InvalidCompatibilityLevel { level: message },
        (s, code) => RegistryError::Http {
            status: s,
            error_code: code,
            message,
            method: method.to_string(),
            url: url.to_string(),
        },
    }
}

#[async_trait::async_trait]
impl SchemaRegistry for HttpRegistry {
    async fn register(&self, subject: &str, schema: &AvroSchema) -> Result<u32, RegistryError> {
        let url = self.url_for(&["subjects", subject, "versions"])?;
        let ctx = Ctx {
            subject: Some(subject),
            ..Ctx::default()
        };
        let r: IdResponse = self
            .json(Method::POST, url, Some(Self::schema_body(schema)), ctx)
            .await?;
        Ok(r.id)
    }

    async fn lookup(&self, subject: &str, schema: &AvroSchema) -> Result<RegisteredSchema, RegistryError> {
        let url = self.url_for(&["subjects", subject])?;
        let ctx = Ctx {
            subject: Some(subject),
            ..Ctx::default()
        };
        let r: SubjectVersionResponse = self
            .json(Method::POST, url.clone(), Some(Self::schema_body(schema)), ctx)
            .await?;
        let parsed = self
            .parse_schema(
                &r.schema,
                r.schema_type.as_deref(),
                &r.references,
                Some(r.id),
                &url,
                &mut RefWalk::default(),
            )
            .await?;
        Ok(RegisteredSchema {
            subject: r.subject,
            id: r.id,
            version: r.version,
            schema: parsed,
        })
    }

    async fn schema_by_id(&self, id: u32) -> Result<AvroSchema, RegistryError> {
        let url = self.url_for(&["schemas", "ids", &id.to_string()])?;
        let r: SchemaResponse = self
            .json(
                Method::GET,
                url.clone(),
                None,
                Ctx {
                    id: Some(id),
                    ..Ctx::default()
                },
            )
            .await?;
        self.parse_schema(
            &r.schema,
            r.schema_type.as_deref(),
            &r.references,
            Some(id),
            &url,
            &mut RefWalk::default(),
        )
        .await
    }

    async fn latest(&self, subject: &str) -> Result<RegisteredSchema, RegistryError> {
        self.subject_version(subject, VersionRef::Latest, &mut RefWalk::default())
            .await
    }

    async fn version(&self, subject: &str, version: u32) -> Result<RegisteredSchema, RegistryError> {
        self.subject_version(subject, VersionRef::Number(version), &mut RefWalk::default())
            .await
    }

    async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let url = self.url_for(&["subjects"])?;
        self.json(Method::GET, url, None, Ctx::default()).await
    }

    async fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        let url = self.url_for(&["subjects", subject, "versions"])?;
        self.json(
            Method::GET,
            url,
            None,
            Ctx {
                subject: Some(subject),
                ..Ctx::default()
            },
        )
        .await
    }

    async fn test_compatibility(
        &self,
        subject: &str,
        schema: &AvroSchema,
        against: VersionRef,
    ) -> Result<CompatibilityCheck, RegistryError> {
        let v = against.to_string();
        let mut url = self.url_for(&["compatibility", "subjects", subject, "versions", &v])?;
        url.set_query(Some("verbose=true"));
        let ctx = Ctx {
            subject: Some(subject),
            version: Some(against),
            ..Ctx::default()
        };
        match self
            .json::<CompatResponse>(Method::POST, url, Some(Self::schema_body(schema)), ctx)
            .await
        {
            Ok(r) => Ok(CompatibilityCheck {
                is_compatible: r.is_compatible,
                messages: r.messages,
            }),
            // Some registry versions answer 404 for `latest` of a subject without versions; nothing to be
            // incompatible with, as the trait documents.
            Err(RegistryError::SubjectNotFound { .. } | RegistryError::VersionNotFound { .. })
                if against == VersionRef::Latest =>
            {
                Ok(CompatibilityCheck {
                    is_compatible: true,
                    messages: Vec::new(),
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn compatibility_level(&self, subject: Option<&str>) -> Result<CompatibilityLevel, RegistryError> {
        match self.get_config(subject).await {
            // Registries without `defaultToGlobal` answer 40408 (or, older ones, 40401) when the subject has
            // no level of its own: fall back to the global level.
            Err(RegistryError::SubjectNotFound { .. }) if subject.is_some() => self.get_config(None).await,
            Err(RegistryError::Http {
                error_code: Some(40408),
                ..
            }) if subject.is_some() => self.get_config(None).await,
            other => other,
        }
    }

    async fn set_compatibility_level(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<(), RegistryError> {
        let url = match subject {
            Some(s) => self.url_for(&["config", s])?,
            None => self.url_for(&["config"])?,
        };
        let body = serde_json::json!({ "compatibility": level.as_str() });
        let _: serde_json::Value = self
            .json(
                Method::PUT,
                url,
                Some(body),
                Ctx {
                    subject,
                    ..Ctx::default()
                },
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn urls_keep_prefix_and_encode_subjects() {
        let r = HttpRegistry::new("http://h:8081/prefix/").unwrap();
        assert_eq!(
            r.url_for(&["subjects", "a/b c", "versions"]).unwrap().as_str(),
            "http://h:8081/prefix/subjects/a%2Fb%20c/versions"
        );
        let r = HttpRegistry::new("http://h:8081/prefix").unwrap();
        assert_eq!(
            r.url_for(&["subjects"]).unwrap().as_str(),
            "http://h:8081/prefix/subjects"
        );
        let r = HttpRegistry::new("http://h:8081").unwrap();
        assert_eq!(r.url_for(&["config"]).unwrap().as_str(), "http://h:8081/config");
    }

    #[test]
    fn url_credentials_become_basic_auth() {
        let r = HttpRegistry::new("https://us%40er:p%3Ass@h/").unwrap();
        assert_eq!(r.url(), "https://h/");
        match &r.auth {
            Auth::Basic { user, password } => assert_eq!((user.as_str(), password.as_str()), ("us@er", "p:ss")),
            _ => panic!("expected basic auth"),
        }
        assert!(HttpRegistry::new("localhost:8081").is_err());
        assert!(HttpRegistry::new("not a url").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let r = HttpRegistry::builder("http://h")
            .retry_base_delay(Duration::from_millis(100))
            .retry_max_delay(Duration::from_millis(350))
            .build()
            .unwrap();
        assert_eq!(r.delay(0), Duration::from_millis(100));
        assert_eq!(r.delay(1), Duration::from_millis(200));
        assert_eq!(r.delay(2), Duration::from_millis(350));
        assert_eq!(r.delay(40), Duration::from_millis(350));
    }
}
