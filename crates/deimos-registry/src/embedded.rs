//! [`EmbeddedRegistry`]: a Confluent-compatible schema registry HTTP server over a [`MemoryRegistry`].

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use deimos_avro::{AvroSchema, CompatibilityLevel};
use deimos_core::redact;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http::MEDIA_TYPE;
use crate::{MemoryRegistry, RegisteredSchema, RegistryError, SchemaRegistry, VersionRef};

/// A schema registry server on a local port, speaking the Confluent REST API over a [`MemoryRegistry`].
///
/// For tests and local development: point any Confluent client (deimos's [`HttpRegistry`](crate::HttpRegistry),
/// confluent-kafka, Karafka, avro_turf) at [`url`](Self::url). It can demand credentials and fail the
/// first requests with 503 to exercise retries. The server stops when the handle is dropped or
/// [`shutdown`](Self::shutdown) is awaited.
///
/// Routes: `POST /subjects/{s}/versions`, `POST /subjects/{s}`, `GET /schemas/ids/{id}` (and `/schema`),
/// `GET /schemas/types`, `GET /subjects`, `GET /subjects/{s}/versions`, `GET /subjects/{s}/versions/{v}`
/// (and `/schema`), `POST /compatibility/subjects/{s}/versions[/{v}]`, `GET`/`PUT /config` and
/// `/config/{s}`, `DELETE /subjects/{s}` (`?permanent=true`). Unknown query parameters are ignored.
pub struct EmbeddedRegistry {
    url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for EmbeddedRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedRegistry")
            .field("url", &self.url)
            .field("registry", &self.shared.registry)
            .finish()
    }
}

struct Shared {
    registry: MemoryRegistry,
    basic: Option<String>,
    bearer: Option<String>,
    fail_remaining: AtomicU32,
    fail_status: StatusCode,
    requests: AtomicU64,
}

/// Builder of an [`EmbeddedRegistry`]; see [`EmbeddedRegistry::builder`]. Its `Debug` output shows neither the
/// password nor the token.
#[must_use]
#[derive(Default)]
pub struct EmbeddedRegistryBuilder {
    registry: Option<MemoryRegistry>,
    basic: Option<(String, String)>,
    bearer: Option<String>,
    fail_first: u32,
    fail_status: Option<u16>,
    addr: Option<SocketAddr>,
}

impl fmt::Debug for EmbeddedRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let EmbeddedRegistryBuilder {
            registry,
            basic,
            bearer,
            fail_first,
            fail_status,
            addr,
        } = self;
        f.debug_struct("EmbeddedRegistryBuilder")
            .field("registry", registry)
            .field("basic_auth", &basic.as_ref().map(|(user, _)| (user, redact::REDACTED)))
            .field("bearer_token", &bearer.as_ref().map(|_| redact::REDACTED))
            .field("fail_first", fail_first)
            .field("fail_status", fail_status)
            .field("addr", addr)
            .finish()
    }
}

impl EmbeddedRegistryBuilder {
    /// Serves this registry (a clone sharing its state) instead of a new, empty one.
    pub fn registry(mut self, registry: MemoryRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Demands basic authentication with this user and password (401 otherwise).
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic = Some((user.into(), password.into()));
        self
    }

    /// Demands `Authorization: Bearer <token>` (401 otherwise). With [`basic_auth`](Self::basic_auth) too,
    /// either is accepted.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    /// Answers the first `n` requests with HTTP 503 (see also [`EmbeddedRegistry::fail_next`]).
    pub fn fail_first(mut self, n: u32) -> Self {
        self.fail_first = n;
        self
    }

    /// The status of injected failures. Default 503.
    pub fn fail_status(mut self, status: u16) -> Self {
        self.fail_status = Some(status);
        self
    }

    /// Binds this address instead of `127.0.0.1:0` (any free port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// Binds the port and starts serving in a background task.
    pub async fn start(self) -> Result<EmbeddedRegistry, RegistryError> {
        let addr = self.addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RegistryError::Config {
                message: format!("cannot bind the embedded schema registry to {addr}; pick another address"),
                source: Some(Box::new(e)),
            })?;
        let addr = listener.local_addr().map_err(|e| RegistryError::Config {
            message: "cannot read the embedded schema registry's bound address".into(),
            source: Some(Box::new(e)),
        })?;
        let fail_status = match self.fail_status {
            None => StatusCode::SERVICE_UNAVAILABLE,
            Some(s) => StatusCode::from_u16(s).map_err(|e| RegistryError::Config {
                message: format!("{s} is not an HTTP status"),
                source: Some(Box::new(e)),
            })?,
        };
        let shared = Arc::new(Shared {
            registry: self.registry.unwrap_or_default(),
            basic: self
                .basic
                .map(|(u, p)| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))),
            bearer: self.bearer,
            fail_remaining: AtomicU32::new(self.fail_first),
            fail_status,
            requests: AtomicU64::new(0),
        });
        let app = router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "embedded schema registry stopped with an error");
            }
        });
        Ok(EmbeddedRegistry {
            url: format!("http://{addr}"),
            addr,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }
}

impl EmbeddedRegistry {
    /// Starts a server on `127.0.0.1` with a free port, no authentication and an empty registry.
    pub async fn start() -> Result<EmbeddedRegistry, RegistryError> {
        Self::builder().start().await
    }

    /// A builder for authentication, fault injection, a pre-filled registry or a fixed address.
    pub fn builder() -> EmbeddedRegistryBuilder {
        EmbeddedRegistryBuilder::default()
    }

    /// The base URL, e.g. `http://127.0.0.1:40123` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The registry served, to inspect or fill directly.
    pub fn registry(&self) -> &MemoryRegistry {
        &self.shared.registry
    }

    /// How many HTTP requests the server has received (including refused and failed ones).
    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Answers the next `n` requests with the failure status (503 by default).
    pub fn fail_next(&self, n: u32) {
        self.shared.fail_remaining.store(n, Ordering::SeqCst);
    }

    /// Stops accepting connections and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EmbeddedRegistry {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// HTTP layer

type AppState = Arc<Shared>;

fn router(shared: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { vnd(json!({})) }))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(list_versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(get_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(get_version_schema))
        .route("/schemas/types", get(|| async { vnd(json!(["AVRO"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/compatibility/subjects/{subject}/versions", post(compat_all))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compat_version),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route("/config/{subject}", get(get_subject_config).put(put_subject_config))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found") })
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// Counts requests, injects failures and checks credentials.
async fn guard(State(shared): State<AppState>, req: Request, next: Next) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let failing = shared
        .fail_remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        let status = shared.fail_status;
        return ApiError::new(
            status,
            u32::from(status.as_u16()),
            "injected failure (EmbeddedRegistry fail_first)",
        )
        .into_response();
    }
    if shared.basic.is_some() || shared.bearer.is_some() {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let ok = match given.split_once(' ') {
            Some((scheme, value)) if scheme.eq_ignore_ascii_case("basic") => {
                shared.basic.as_deref() == Some(value.trim())
            }
            Some((scheme, value)) if scheme.eq_ignore_ascii_case("bearer") => {
                shared.bearer.as_deref() == Some(value.trim())
            }
            _ => false,
        };
        if !ok {
            let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, 401, "Unauthorized").into_response();
            let challenge = if shared.basic.is_some() {
                "Basic realm=\"deimos-registry\""
            } else {
                "Bearer"
            };
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            return resp;
        }
    }
    next.run(req).await
}

/// A JSON response with the registry media type.
fn vnd(value: Value) -> Response {
    let mut resp = (StatusCode::OK, value.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    resp
}

/// A Confluent error answer: `{"error_code": ..., "message": ...}`.
struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
    messages: Vec<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            messages: Vec::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error_code": self.code, "message": self.message });
        if !self.messages.is_empty() {
            body["messages"] = json!(self.messages);
        }
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
        resp
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = e
            .http_status()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = e.error_code().unwrap_or(50001);
        let message = match &e {
            RegistryError::SubjectNotFound { subject } => format!("Subject '{subject}' not found."),
            RegistryError::VersionNotFound { subject, version } => {
                format!("Version {version} not found for subject '{subject}'.")
            }
            RegistryError::SchemaNotFound { id: Some(id), .. } => format!("Schema {id} not found"),
            RegistryError::SchemaNotFound { .. } => "Schema not found".to_string(),
            RegistryError::SubjectNotSoftDeleted { subject } => {
                format!("Subject '{subject}' was not deleted first before being permanently deleted")
            }
            RegistryError::Incompatible { subject, messages } => format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
                messages.join(", ")
            ),
            RegistryError::InvalidSchema { message } => format!("Invalid schema: {message}"),
            RegistryError::InvalidVersion { version } => format!(
                "The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
            ),
            RegistryError::InvalidCompatibilityLevel { level } => format!(
                "Invalid compatibility level '{level}'. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive"
            ),
            other => other.to_string(),
        };
        let messages = match e {
            RegistryError::Incompatible { messages, .. } => messages,
            _ => Vec::new(),
        };
        ApiError {
            status,
            code,
            message,
            messages,
        }
    }
}

/// A JSON body, whatever its declared content type (`application/vnd.schemaregistry.v1+json`,
/// `application/json`, or none).
struct AnyJson<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AnyJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, 400, e.body_text()))?;
        serde_json::from_slice(&bytes).map(AnyJson).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                422,
                format!("Unrecognized request body: {e}"),
            )
        })
    }
}

#[derive(Deserialize)]
struct SchemaRequest {
    schema: Option<String>,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<Value>>,
}

impl SchemaRequest {
    fn parse(self) -> Result<AvroSchema, ApiError> {
        let invalid = |m: String| ApiError::from(RegistryError::InvalidSchema { message: m });
        if let Some(t) = &self.schema_type
            && !t.eq_ignore_ascii_case("AVRO")
        {
            return Err(invalid(format!(
                "schema type {t} is not supported by this registry (only AVRO)"
            )));
        }
        if self.references.as_ref().is_some_and(|r| !r.is_empty()) {
            return Err(invalid("schema references are not supported by this registry".into()));
        }
        let text = self
            .schema
            .ok_or_else(|| invalid("the request has no `schema`".into()))?;
        AvroSchema::parse(&text).map_err(|e| invalid(e.to_string()))
    }
}

#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

impl ConfigRequest {
    fn level(self) -> Result<CompatibilityLevel, ApiError> {
        let given = self.compatibility.or(self.compatibility_level).unwrap_or_default();
        given
            .parse()
            .map_err(|_| RegistryError::InvalidCompatibilityLevel { level: given }.into())
    }
}

/// Whether the query string has `name=true`.
fn flag(query: &Option<String>, name: &str) -> bool {
    query.as_deref().unwrap_or_default().split('&').any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        k == name && v.eq_ignore_ascii_case("true")
    })
}

fn parse_version(v: &str) -> Result<VersionRef, ApiError> {
    v.parse::<VersionRef>().map_err(ApiError::from)
}

fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse::<u32>()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, 40403, format!("Schema {id} not found")))
}

fn registered_json(r: &RegisteredSchema) -> Value {
    json!({ "subject": r.subject, "id": r.id, "version": r.version, "schema": r.schema.canonical_json() })
}

type ApiResult = Result<Response, ApiError>;

async fn list_subjects(State(s): State<AppState>) -> ApiResult {
    Ok(vnd(json!(s.registry.subjects().await?)))
}

async fn register(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    AnyJson(body): AnyJson<SchemaRequest>,
) -> ApiResult {
    let schema = body.parse()?;
    let r = s.registry.register_version(&subject, &schema)?;
    Ok(vnd(json!({ "id": r.id })))
}

async fn lookup(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    AnyJson(body): AnyJson<SchemaRequest>,
) -> ApiResult {
    let schema = body.parse()?;
    Ok(vnd(registered_json(&s.registry.lookup(&subject, &schema).await?)))
}

async fn delete_subject(State(s): State<AppState>, Path(subject): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    Ok(vnd(json!(s.registry.delete_subject(&subject, flag(&q, "permanent"))?)))
}

async fn list_versions(State(s): State<AppState>, Path(subject): Path<String>) -> ApiResult {
    Ok(vnd(json!(s.registry.versions(&subject).await?)))
}

async fn fetch_version(s: &Shared, subject: &str, version: &str) -> Result<RegisteredSchema, ApiError> {
    Ok(match parse_version(version)? {
        VersionRef::Latest => s.registry.latest(subject).await?,
        VersionRef::Number(n) => s.registry.version(subject, n).await?,
    })
}

async fn get_version(State(s): State<AppState>, Path((subject, version)): Path<(String, String)>) -> ApiResult {
    Ok(vnd(registered_json(&fetch_version(&s, &subject, &version).await?)))
}

async fn get_version_schema(State(s): State<AppState>, Path((subject, version)): Path<(String, String)>) -> ApiResult {
    let r = fetch_version(&s, &subject, &version).await?;
    Ok(raw(&r.schema))
}

fn raw(schema: &AvroSchema) -> Response {
    let mut resp = (StatusCode::OK, schema.canonical_json().to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    resp
}

async fn schema_by_id(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let schema = s.registry.schema_by_id(parse_id(&id)?).await?;
    Ok(vnd(json!({ "schema": schema.canonical_json() })))
}

async fn raw_schema_by_id(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(raw(&s.registry.schema_by_id(parse_id(&id)?).await?))
}

fn compat_answer(check: crate::CompatibilityCheck, verbose: bool) -> Response {
    if verbose {
        vnd(json!({ "is_compatible": check.is_compatible, "messages": check.messages }))
    } else {
        vnd(json!({ "is_compatible": check.is_compatible }))
    }
}

async fn compat_version(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    AnyJson(body): AnyJson<SchemaRequest>,
) -> ApiResult {
    let version = parse_version(&version)?;
    let schema = body.parse()?;
    let check = s.registry.test_compatibility(&subject, &schema, version).await?;
    Ok(compat_answer(check, flag(&q, "verbose")))
}

async fn compat_all(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
    AnyJson(body): AnyJson<SchemaRequest>,
) -> ApiResult {
    let schema = body.parse()?;
    let check = s.registry.test_compatibility_all(&subject, &schema)?;
    Ok(compat_answer(check, flag(&q, "verbose")))
}

async fn get_global_config(State(s): State<AppState>) -> ApiResult {
    let level = s.registry.compatibility_level(None).await?;
    Ok(vnd(json!({ "compatibilityLevel": level.as_str() })))
}

async fn put_global_config(State(s): State<AppState>, AnyJson(body): AnyJson<ConfigRequest>) -> ApiResult {
    let level = body.level()?;
    s.registry.set_compatibility_level(None, level).await?;
    Ok(vnd(json!({ "compatibility": level.as_str() })))
}

async fn get_subject_config(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let level = match s.registry.subject_compatibility_level(&subject) {
        Some(level) => level,
        None if flag(&q, "defaultToGlobal") => s.registry.compatibility_level(None).await?,
        None => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                40408,
                format!("Subject '{subject}' does not have subject-level compatibility configured"),
            ));
        }
    };
    Ok(vnd(json!({ "compatibilityLevel": level.as_str() })))
}

async fn put_subject_config(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    AnyJson(body): AnyJson<ConfigRequest>,
) -> ApiResult {
    let level = body.level()?;
    s.registry.set_compatibility_level(Some(&subject), level).await?;
    Ok(vnd(json!({ "compatibility": level.as_str() })))
}
