//! [`CachedRegistry`]: a caching decorator over any [`SchemaRegistry`], with an optional on-disk cache.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deimos_avro::{AvroSchema, CompatibilityLevel};

use crate::lru::LruMap;
use crate::{CompatibilityCheck, RegisteredSchema, RegistryError, SchemaRegistry, VersionRef};

/// How long [`SchemaRegistry::latest`] answers are cached by default: 5 minutes.
pub const DEFAULT_LATEST_TTL: Duration = Duration::from_secs(300);

/// How long a schema id the registry does not know is remembered as unknown by default: 10 seconds.
pub const DEFAULT_NOT_FOUND_TTL: Duration = Duration::from_secs(10);

/// How many schema ids a [`CachedRegistry`] (and a [`SchemaCodec`](crate::SchemaCodec)) keeps by default.
pub const DEFAULT_MAX_CACHED_IDS: usize = 10_000;

/// Caches the answers of another [`SchemaRegistry`].
///
/// - Immutable facts are cached for the life of the value: id → schema, (subject, schema) → id and
///   registered version, (subject, version) → schema. Ids come from the messages a service reads, so the
///   id → schema cache keeps at most [`DEFAULT_MAX_CACHED_IDS`] schemas
///   ([`CachedRegistryBuilder::max_cached_ids`]), evicting the least recently used.
/// - [`latest`](SchemaRegistry::latest) is cached for a TTL ([`DEFAULT_LATEST_TTL`] by default), and
///   forgotten for a subject when a schema is registered under it through this cache. When the inner
///   registry is unreachable, an expired `latest` answer is served rather than an error.
/// - A schema id the registry does not know (`SchemaNotFound`, Confluent's 40403) is remembered as unknown
///   for [`DEFAULT_NOT_FOUND_TTL`] ([`CachedRegistryBuilder::not_found_ttl`]), so a stream of messages with
///   a bogus id makes one registry call per TTL, not one per message. Unknown ids are kept apart from the
///   known ones (a stream of them pushes no schema out), at most `max_cached_ids` of them.
/// - Listings (`subjects`, `versions`), compatibility tests and compatibility levels are not cached.
/// - No other failure is cached: an unreachable registry, a timeout or a 5xx answer is asked again.
///
/// With [`CachedRegistryBuilder::disk_cache`], every schema id learnt is also written to a directory (one
/// JSON file per id, written atomically), with the subjects and versions it is known under. A service that
/// restarts while the registry is down still resolves the ids and (subject, schema) pairs it knew: the
/// directory is read on an id miss, and searched when the inner registry fails with a retryable error
/// (unreachable, timeout, 5xx). Use one directory per registry: ids of different registries differ.
pub struct CachedRegistry<R> {
    inner: R,
    latest_ttl: Duration,
    not_found_ttl: Duration,
    max_cached_ids: usize,
    disk: Option<DiskCache>,
    mem: Mutex<Mem>,
}

struct Mem {
    by_id: LruMap<u32, AvroSchema>,
    /// Ids the registry answered "not found" for, and when.
    not_found: LruMap<u32, Instant>,
    /// (subject, canonical JSON) → id.
    ids: HashMap<(String, String), u32>,
    /// (subject, canonical JSON) → registered version, from `lookup`, `version` and `latest`.
    registered: HashMap<(String, String), RegisteredSchema>,
    versions: HashMap<(String, u32), RegisteredSchema>,
    latest: HashMap<String, (Instant, RegisteredSchema)>,
}

impl Mem {
    fn new(max_cached_ids: usize) -> Mem {
        Mem {
            by_id: LruMap::new(max_cached_ids),
            not_found: LruMap::new(max_cached_ids),
            ids: HashMap::new(),
            registered: HashMap::new(),
            versions: HashMap::new(),
            latest: HashMap::new(),
        }
    }

    /// Learns `id → schema` (and forgets that the id was unknown).
    fn learn_id(&mut self, id: u32, schema: &AvroSchema) {
        self.not_found.remove(&id);
        self.by_id.insert_if_absent(id, schema.clone());
    }
}

impl<R> CachedRegistry<R> {
    fn lock(&self) -> MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<R: fmt::Debug> fmt::Debug for CachedRegistry<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mem = self.lock();
        f.debug_struct("CachedRegistry")
            .field("inner", &self.inner)
            .field("latest_ttl", &self.latest_ttl)
            .field("disk_cache", &self.disk.as_ref().map(|d| &d.dir))
            .field("cached_ids", &mem.by_id.len())
            .field("max_cached_ids", &mem.by_id.capacity())
            .field("not_found_ttl", &self.not_found_ttl)
            .finish()
    }
}

/// Builder of a [`CachedRegistry`]; see [`CachedRegistry::builder`].
#[must_use]
#[derive(Debug)]
pub struct CachedRegistryBuilder<R> {
    inner: R,
    latest_ttl: Duration,
    not_found_ttl: Duration,
    max_cached_ids: usize,
    disk_dir: Option<PathBuf>,
}

impl<R: SchemaRegistry> CachedRegistryBuilder<R> {
    /// How long a [`latest`](SchemaRegistry::latest) answer is served from the cache. Default
    /// [`DEFAULT_LATEST_TTL`]; zero disables caching of `latest`.
    pub fn latest_ttl(mut self, ttl: Duration) -> Self {
        self.latest_ttl = ttl;
        self
    }

    /// How long a schema id the registry answered "not found" (40403) for is remembered as unknown.
    /// Default [`DEFAULT_NOT_FOUND_TTL`]; zero disables it.
    pub fn not_found_ttl(mut self, ttl: Duration) -> Self {
        self.not_found_ttl = ttl;
        self
    }

    /// The most schemas by id kept in memory (at least 1); when full, the least recently used is evicted.
    /// Default [`DEFAULT_MAX_CACHED_IDS`]. At most as many unknown ids are remembered, kept apart.
    pub fn max_cached_ids(mut self, n: usize) -> Self {
        self.max_cached_ids = n;
        self
    }

    /// Also keep the schemas learnt in `dir` (created if missing), one file `<id>.json` per schema id.
    pub fn disk_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.disk_dir = Some(dir.into());
        self
    }

    /// Builds the cache. Fails only when the disk cache directory cannot be created.
    pub fn build(self) -> Result<CachedRegistry<R>, RegistryError> {
        let disk = match self.disk_dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(|source| RegistryError::DiskCache {
                    path: dir.clone(),
                    source,
                })?;
                Some(DiskCache {
                    dir,
                    write_lock: tokio::sync::Mutex::new(()),
                    counter: AtomicU64::new(0),
                })
            }
            None => None,
        };
        Ok(CachedRegistry {
            inner: self.inner,
            latest_ttl: self.latest_ttl,
            not_found_ttl: self.not_found_ttl,
            max_cached_ids: self.max_cached_ids,
            disk,
            mem: Mutex::new(Mem::new(self.max_cached_ids)),
        })
    }
}

impl<R: SchemaRegistry> CachedRegistry<R> {
    /// Caches `inner` in memory with the default settings.
    pub fn new(inner: R) -> Self {
        CachedRegistry {
            inner,
            latest_ttl: DEFAULT_LATEST_TTL,
            not_found_ttl: DEFAULT_NOT_FOUND_TTL,
            max_cached_ids: DEFAULT_MAX_CACHED_IDS,
            disk: None,
            mem: Mutex::new(Mem::new(DEFAULT_MAX_CACHED_IDS)),
        }
    }

    /// A builder to set the TTLs, the size of the id cache or an on-disk cache.
    pub fn builder(inner: R) -> CachedRegistryBuilder<R> {
        CachedRegistryBuilder {
            inner,
            latest_ttl: DEFAULT_LATEST_TTL,
            not_found_ttl: DEFAULT_NOT_FOUND_TTL,
            max_cached_ids: DEFAULT_MAX_CACHED_IDS,
            disk_dir: None,
        }
    }

    /// How many schemas by id are cached in memory (at most [`CachedRegistryBuilder::max_cached_ids`]).
    pub fn cached_ids(&self) -> usize {
        self.lock().by_id.len()
    }

    /// The wrapped registry.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Forgets everything cached in memory (the disk cache stays).
    pub fn clear(&self) {
        *self.lock() = Mem::new(self.max_cached_ids);
    }

    fn remember(&self, r: &RegisteredSchema) {
        let mut mem = self.lock();
        let key = (r.subject.clone(), r.schema.canonical_json().to_string());
        mem.learn_id(r.id, &r.schema);
        mem.ids.insert(key.clone(), r.id);
        mem.registered.insert(key, r.clone());
        mem.versions.insert((r.subject.clone(), r.version), r.clone());
    }

    async fn persist(&self, id: u32, schema: &AvroSchema, subject: Option<(&str, Option<u32>)>) {
        if let Some(disk) = &self.disk {
            disk.write(id, schema, subject).await;
        }
    }
}

#[async_trait::async_trait]
impl<R: SchemaRegistry> SchemaRegistry for CachedRegistry<R> {
    async fn register(&self, subject: &str, schema: &AvroSchema) -> Result<u32, RegistryError> {
        let key = (subject.to_string(), schema.canonical_json().to_string());
        if let Some(id) = self.lock().ids.get(&key) {
            return Ok(*id);
        }
        match self.inner.register(subject, schema).await {
            Ok(id) => {
                {
                    let mut mem = self.lock();
                    mem.ids.insert(key, id);
                    mem.learn_id(id, schema);
                    mem.latest.remove(subject);
                }
                self.persist(id, schema, Some((subject, None))).await;
                Ok(id)
            }
            Err(e) if e.is_retryable() => match self.disk_find(subject, schema).await {
                Some((id, _)) => {
                    tracing::warn!(subject, id, error = %e, "schema registry unavailable; using the schema id from the disk cache");
                    self.lock().ids.insert(key, id);
                    Ok(id)
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn lookup(&self, subject: &str, schema: &AvroSchema) -> Result<RegisteredSchema, RegistryError> {
        let key = (subject.to_string(), schema.canonical_json().to_string());
        if let Some(r) = self.lock().registered.get(&key) {
            return Ok(r.clone());
        }
        match self.inner.lookup(subject, schema).await {
            Ok(r) => {
                self.remember(&r);
                self.persist(r.id, &r.schema, Some((subject, Some(r.version)))).await;
                Ok(r)
            }
            Err(e) if e.is_retryable() => match self.disk_find(subject, schema).await {
                Some((id, Some(version))) => {
                    tracing::warn!(subject, id, error = %e, "schema registry unavailable; using the disk cache");
                    let r = RegisteredSchema {
                        subject: subject.to_string(),
                        id,
                        version,
                        schema: schema.clone(),
                    };
                    self.remember(&r);
                    Ok(r)
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn schema_by_id(&self, id: u32) -> Result<AvroSchema, RegistryError> {
        {
            let mut mem = self.lock();
            if let Some(s) = mem.by_id.get(&id) {
                return Ok(s.clone());
            }
            match mem.not_found.get(&id) {
                Some(at) if at.elapsed() < self.not_found_ttl => {
                    return Err(RegistryError::SchemaNotFound {
                        id: Some(id),
                        subject: None,
                    });
                }
                Some(_) => {
                    mem.not_found.remove(&id);
                }
                None => {}
            }
        }
        if let Some(disk) = &self.disk
            && let Some(entry) = disk.read(id).await
        {
            self.lock().learn_id(id, &entry.schema);
            return Ok(entry.schema);
        }
        match self.inner.schema_by_id(id).await {
            Ok(schema) => {
                self.lock().learn_id(id, &schema);
                self.persist(id, &schema, None).await;
                Ok(schema)
            }
            // A definite answer, unlike an unreachable registry or a 5xx (retryable, never remembered).
            Err(e @ RegistryError::SchemaNotFound { .. }) => {
                if !self.not_found_ttl.is_zero() {
                    self.lock().not_found.insert(id, Instant::now());
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn latest(&self, subject: &str) -> Result<RegisteredSchema, RegistryError> {
        let stale = {
            let mem = self.lock();
            match mem.latest.get(subject) {
                Some((at, r)) if at.elapsed() < self.latest_ttl => return Ok(r.clone()),
                Some((_, r)) => Some(r.clone()),
                None => None,
            }
        };
        match self.inner.latest(subject).await {
            Ok(r) => {
                self.remember(&r);
                if !self.latest_ttl.is_zero() {
                    self.lock()
                        .latest
                        .insert(subject.to_string(), (Instant::now(), r.clone()));
                }
                self.persist(r.id, &r.schema, Some((subject, Some(r.version)))).await;
                Ok(r)
            }
            Err(e) if e.is_retryable() => match stale {
                Some(r) => {
                    tracing::warn!(subject, error = %e, "schema registry unavailable; serving an expired latest version");
                    Ok(r)
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn version(&self, subject: &str, version: u32) -> Result<RegisteredSchema, RegistryError> {
        if let Some(r) = self.lock().versions.get(&(subject.to_string(), version)) {
            return Ok(r.clone());
        }
        match self.inner.version(subject, version).await {
            Ok(r) => {
                self.remember(&r);
                self.persist(r.id, &r.schema, Some((subject, Some(r.version)))).await;
                Ok(r)
            }
            Err(e) if e.is_retryable() => match self.disk_find_version(subject, version).await {
                Some(r) => {
                    tracing::warn!(subject, version, error = %e, "schema registry unavailable; using the disk cache");
                    self.remember(&r);
                    Ok(r)
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        self.inner.subjects().await
    }

    async fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        self.inner.versions(subject).await
    }

    async fn test_compatibility(
        &self,
        subject: &str,
        schema: &AvroSchema,
        against: VersionRef,
    ) -> Result<CompatibilityCheck, RegistryError> {
        self.inner.test_compatibility(subject, schema, against).await
    }

    async fn compatibility_level(&self, subject: Option<&str>) -> Result<CompatibilityLevel, RegistryError> {
        self.inner.compatibility_level(subject).await
    }

    async fn set_compatibility_level(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<(), RegistryError> {
        self.inner.set_compatibility_level(subject, level).await
    }
}

impl<R: SchemaRegistry> CachedRegistry<R> {
    async fn disk_find(&self, subject: &str, schema: &AvroSchema) -> Option<(u32, Option<u32>)> {
        let disk = self.disk.as_ref()?;
        disk.scan()
            .await
            .into_iter()
            .find(|e| e.schema == *schema && e.subjects.contains_key(subject))
            .map(|e| (e.id, e.subjects.get(subject).copied().flatten()))
    }

    async fn disk_find_version(&self, subject: &str, version: u32) -> Option<RegisteredSchema> {
        let disk = self.disk.as_ref()?;
        disk.scan()
            .await
            .into_iter()
            .find(|e| e.subjects.get(subject).copied().flatten() == Some(version))
            .map(|e| RegisteredSchema {
                subject: subject.to_string(),
                id: e.id,
                version,
                schema: e.schema,
            })
    }
}

/// The on-disk id → schema cache.
struct DiskCache {
    dir: PathBuf,
    /// Serialises read-modify-write of the files by this process.
    write_lock: tokio::sync::Mutex<()>,
    counter: AtomicU64,
}

/// The content of one `<id>.json` file.
#[derive(serde::Serialize, serde::Deserialize)]
struct DiskFile {
    id: u32,
    schema: String,
    /// Subjects the schema is known under, with its version there when known.
    #[serde(default)]
    subjects: BTreeMap<String, Option<u32>>,
}

struct DiskEntry {
    id: u32,
    schema: AvroSchema,
    subjects: BTreeMap<String, Option<u32>>,
}

impl DiskCache {
    fn path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    async fn read_file(path: &Path) -> Option<DiskFile> {
        let bytes = match tokio::fs::read(path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read schema cache file; ignoring it");
                return None;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "corrupt schema cache file; ignoring it");
                None
            }
        }
    }

    fn entry(file: DiskFile, path: &Path) -> Option<DiskEntry> {
        match AvroSchema::parse(&file.schema) {
            Ok(schema) => Some(DiskEntry {
                id: file.id,
                schema,
                subjects: file.subjects,
            }),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "schema cache file holds an invalid schema; ignoring it");
                None
            }
        }
    }

    async fn read(&self, id: u32) -> Option<DiskEntry> {
        let path = self.path(id);
        let file = Self::read_file(&path).await?;
        if file.id != id {
            tracing::warn!(path = %path.display(), "schema cache file holds another id; ignoring it");
            return None;
        }
        Self::entry(file, &path)
    }

    /// Every entry of the directory (only used when the registry is unreachable).
    async fn scan(&self) -> Vec<DiskEntry> {
        let mut out = Vec::new();
        let mut dir = match tokio::fs::read_dir(&self.dir).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the schema cache directory");
                return out;
            }
        };
        while let Ok(Some(item)) = dir.next_entry().await {
            let path = item.path();
            let is_cache_file = path.extension().is_some_and(|e| e == "json")
                && path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s.parse::<u32>().is_ok());
            if !is_cache_file {
                continue;
            }
            if let Some(file) = Self::read_file(&path).await
                && let Some(entry) = Self::entry(file, &path)
            {
                out.push(entry);
            }
        }
        out
    }

    /// Records `id → schema` (and the subject and version, if given). Failures are logged, never returned:
    /// the disk cache is a fallback.
    async fn write(&self, id: u32, schema: &AvroSchema, subject: Option<(&str, Option<u32>)>) {
        let _guard = self.write_lock.lock().await;
        let path = self.path(id);
        let json = schema.canonical_json();
        let existing = Self::read_file(&path).await.filter(|f| f.id == id && f.schema == json);
        let mut changed = existing.is_none();
        let mut file = existing.unwrap_or_else(|| DiskFile {
            id,
            schema: json.to_string(),
            subjects: BTreeMap::new(),
        });
        if let Some((s, version)) = subject {
            match file.subjects.get_mut(s) {
                None => {
                    file.subjects.insert(s.to_string(), version);
                    changed = true;
                }
                Some(slot) if version.is_some() && *slot != version => {
                    *slot = version;
                    changed = true;
                }
                Some(_) => {}
            }
        }
        if !changed {
            return;
        }
        if let Err(e) = self.write_atomically(&path, &file).await {
            tracing::warn!(path = %path.display(), error = %e, "cannot write schema cache file");
        }
    }

    async fn write_atomically(&self, path: &Path, file: &DiskFile) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".{}.{}.{n}.tmp", file.id, std::process::id()));
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || write_and_rename(&tmp, &path, &bytes))
            .await
            .map_err(std::io::Error::other)?
    }
}

/// Writes `bytes` to `tmp`, flushes it to disk and renames it over `path`, so readers see the old or the
/// new file, never a partial one.
fn write_and_rename(tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let result = (|| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}
