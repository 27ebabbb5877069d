//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use deimos_registry::{
    AvroSchema, CompatibilityCheck, CompatibilityLevel, HttpRegistry, HttpRegistryBuilder, RegisteredSchema,
    RegistryError, SchemaRegistry, VersionRef,
};

/// A record `com.acme.Widget` with the given field JSON objects.
pub fn widget(fields: &[&str]) -> AvroSchema {
    record("Widget", fields)
}

/// A record `com.acme.<name>` with the given field JSON objects.
pub fn record(name: &str, fields: &[&str]) -> AvroSchema {
    let json = format!(
        r#"{{"type":"record","name":"{name}","namespace":"com.acme","fields":[{}]}}"#,
        fields.join(",")
    );
    AvroSchema::parse(&json).expect("test schema parses")
}

pub const ID: &str = r#"{"name":"id","type":"long"}"#;
pub const NAME_DEFAULT: &str = r#"{"name":"name","type":"string","default":""}"#;
pub const NAME: &str = r#"{"name":"name","type":"string"}"#;
pub const SIZE: &str = r#"{"name":"size","type":"int"}"#;
pub const COLOR_DEFAULT: &str = r#"{"name":"color","type":"string","default":"red"}"#;

/// An HTTP client for tests: fast retries and short timeouts.
pub fn fast_client(url: &str) -> HttpRegistryBuilder {
    HttpRegistry::builder(url)
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_millis(500))
        .retry_base_delay(Duration::from_millis(5))
        .retry_max_delay(Duration::from_millis(20))
        .use_env_proxy(false)
}

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "deimos-registry-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Wraps a registry and counts the calls that reach it; can be told to fail with a transport-like error.
pub struct Counting<R> {
    pub inner: R,
    pub calls: AtomicUsize,
    pub fail: std::sync::atomic::AtomicBool,
}

impl<R> Counting<R> {
    pub fn new(inner: R) -> Self {
        Counting {
            inner,
            calls: AtomicUsize::new(0),
            fail: Default::default(),
        }
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    pub fn set_failing(&self, yes: bool) {
        self.fail.store(yes, Ordering::SeqCst);
    }
    fn hit(&self) -> Result<(), RegistryError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            Err(RegistryError::Http {
                status: 503,
                error_code: None,
                message: "down for the test".into(),
                method: "GET".into(),
                url: "counting".into(),
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl<R: SchemaRegistry> SchemaRegistry for Counting<R> {
    async fn register(&self, subject: &str, schema: &AvroSchema) -> Result<u32, RegistryError> {
        self.hit()?;
        self.inner.register(subject, schema).await
    }
    async fn lookup(&self, subject: &str, schema: &AvroSchema) -> Result<RegisteredSchema, RegistryError> {
        self.hit()?;
        self.inner.lookup(subject, schema).await
    }
    async fn schema_by_id(&self, id: u32) -> Result<AvroSchema, RegistryError> {
        self.hit()?;
        self.inner.schema_by_id(id).await
    }
    async fn latest(&self, subject: &str) -> Result<RegisteredSchema, RegistryError> {
        self.hit()?;
        self.inner.latest(subject).await
    }
    async fn version(&self, subject: &str, version: u32) -> Result<RegisteredSchema, RegistryError> {
        self.hit()?;
        self.inner.version(subject, version).await
    }
    async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        self.hit()?;
        self.inner.subjects().await
    }
    async fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        self.hit()?;
        self.inner.versions(subject).await
    }
    async fn test_compatibility(
        &self,
        subject: &str,
        schema: &AvroSchema,
        against: VersionRef,
    ) -> Result<CompatibilityCheck, RegistryError> {
        self.hit()?;
        self.inner.test_compatibility(subject, schema, against).await
    }
    async fn compatibility_level(&self, subject: Option<&str>) -> Result<CompatibilityLevel, RegistryError> {
        self.hit()?;
        self.inner.compatibility_level(subject).await
    }
    async fn set_compatibility_level(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<(), RegistryError> {
        self.hit()?;
        self.inner.set_compatibility_level(subject, level).await
    }
}

/// A fake registry answering fixed JSON on `GET` of the given paths, for what the embedded one never sends.
pub async fn fake_registry(
    routes: Vec<(String, serde_json::Value)>,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let mut app = axum::Router::new();
    for (path, body) in routes {
        app = app.route(&path, axum::routing::get(move || async move { axum::Json(body) }));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, task))
}
