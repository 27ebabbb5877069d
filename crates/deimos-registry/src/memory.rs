//! [`MemoryRegistry`]: an in-process, deterministic schema registry.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use deimos_avro::{AvroSchema, CompatibilityLevel};

use crate::{CompatibilityCheck, RegisteredSchema, RegistryError, SchemaRegistry, VersionRef};

/// An in-process schema registry with the semantics of Confluent's.
///
/// - Schema ids start at 1 and are global: the same schema (by canonical JSON) registered under two
///   subjects gets the same id, and an id is never reused for another schema.
/// - Versions are per subject, from 1. Registering a schema that is already a live version of the subject
///   returns its id without creating a version.
/// - Registering enforces the compatibility level (subject level if set, else the global level, which
///   defaults to `BACKWARD`) against the live versions of the subject.
/// - [`delete_subject`](Self::delete_subject) soft-deletes (or, after a soft delete, permanently deletes)
///   a subject. Soft-deleted versions keep their ids resolvable and their version numbers taken.
///
/// Clones share the same state, so a clone can be handed to an [`EmbeddedRegistry`](crate::EmbeddedRegistry)
/// and inspected from the test.
#[derive(Clone, Default)]
pub struct MemoryRegistry {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Canonical JSON → id, never forgotten so ids are not reused.
    ids: HashMap<String, u32>,
    /// Id → schema, for ids still used by some version (live or soft-deleted).
    by_id: HashMap<u32, AvroSchema>,
    next_id: u32,
    subjects: BTreeMap<String, Subject>,
    global_level: CompatibilityLevel,
}

#[derive(Default)]
struct Subject {
    versions: Vec<Version>,
    level: Option<CompatibilityLevel>,
}

#[derive(Clone, Copy)]
struct Version {
    version: u32,
    id: u32,
    deleted: bool,
}

impl Subject {
    fn live(&self) -> impl Iterator<Item = &Version> {
        self.versions.iter().filter(|v| !v.deleted)
    }
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryRegistry")
            .field("schemas", &state.by_id.len())
            .field("subjects", &state.subjects.len())
            .field("global_level", &state.global_level)
            .finish()
    }
}

impl MemoryRegistry {
    /// An empty registry with the global compatibility level `BACKWARD`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same registry with this global compatibility level (`NONE` lets two producers with unrelated schemas
    /// share a topic's subject in a test).
    ///
    /// ```
    /// use deimos_registry::{CompatibilityLevel, MemoryRegistry};
    ///
    /// let registry = MemoryRegistry::new().with_compatibility_level(CompatibilityLevel::None);
    /// assert_eq!(registry.global_compatibility_level(), CompatibilityLevel::None);
    /// ```
    #[must_use]
    pub fn with_compatibility_level(self, level: CompatibilityLevel) -> Self {
        self.lock().global_level = level;
        self
    }

    /// The global compatibility level.
    pub fn global_compatibility_level(&self) -> CompatibilityLevel {
        self.lock().global_level
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters here.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a schema (see [`SchemaRegistry::register`]) and returns the registered version.
    pub fn register_version(&self, subject: &str, schema: &AvroSchema) -> Result<RegisteredSchema, RegistryError> {
        let mut state = self.lock();
        let json = schema.canonical_json();
        let existing_id = state.ids.get(json).copied();
        let level = state.level_for(subject);
        if let Some(sub) = state.subjects.get(subject) {
            if let Some(id) = existing_id
                && let Some(v) = sub.live().find(|v| v.id == id)
            {
                return Ok(RegisteredSchema {
                    subject: subject.to_string(),
                    id,
                    version: v.version,
                    schema: state.schema(id)?,
                });
            }
            let live: Vec<(u32, AvroSchema)> = sub
                .live()
                .map(|v| Ok((v.version, state.schema(v.id)?)))
                .collect::<Result<_, RegistryError>>()?;
            let messages = check_against(level, schema, &live);
            if !messages.is_empty() {
                return Err(RegistryError::Incompatible {
                    subject: subject.to_string(),
                    messages,
                });
            }
        }
        let id = match existing_id {
            Some(id) => id,
            None => {
                state.next_id += 1;
                let id = state.next_id;
                state.ids.insert(json.to_string(), id);
                id
            }
        };
        state.by_id.insert(id, schema.clone());
        let sub = state.subjects.entry(subject.to_string()).or_default();
        let version = sub.versions.last().map_or(1, |v| v.version + 1);
        sub.versions.push(Version {
            version,
            id,
            deleted: false,
        });
        Ok(RegisteredSchema {
            subject: subject.to_string(),
            id,
            version,
            schema: schema.clone(),
        })
    }

    /// Deletes a subject and returns the versions deleted.
    ///
    /// A soft delete (`permanent` false) hides the subject's versions: the subject disappears from
    /// [`subjects`](SchemaRegistry::subjects), its ids stay resolvable, and a later registration continues
    /// the version numbering. A permanent delete removes a soft-deleted subject for good (its compatibility
    /// level too); asking for it before a soft delete fails with [`RegistryError::SubjectNotSoftDeleted`].
    pub fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>, RegistryError> {
        let mut state = self.lock();
        let not_found = || RegistryError::SubjectNotFound {
            subject: subject.to_string(),
        };
        let sub = state.subjects.get_mut(subject).ok_or_else(not_found)?;
        if sub.versions.is_empty() {
            return Err(not_found());
        }
        if !permanent {
            let deleted: Vec<u32> = sub.live().map(|v| v.version).collect();
            if deleted.is_empty() {
                return Err(not_found());
            }
            for v in &mut sub.versions {
                v.deleted = true;
            }
            return Ok(deleted);
        }
        if sub.live().next().is_some() {
            return Err(RegistryError::SubjectNotSoftDeleted {
                subject: subject.to_string(),
            });
        }
        let deleted: Vec<u32> = sub.versions.iter().map(|v| v.version).collect();
        state.subjects.remove(subject);
        let used: std::collections::HashSet<u32> = state
            .subjects
            .values()
            .flat_map(|s| s.versions.iter().map(|v| v.id))
            .collect();
        state.by_id.retain(|id, _| used.contains(id));
        Ok(deleted)
    }

    /// The compatibility level set on the subject itself, if any (no fallback to the global level).
    pub fn subject_compatibility_level(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.lock().subjects.get(subject).and_then(|s| s.level)
    }

    /// Tests a schema against the live versions of a subject as registering it would (the subject's level
    /// decides whether the latest or all versions are checked).
    pub fn test_compatibility_all(
        &self,
        subject: &str,
        schema: &AvroSchema,
    ) -> Result<CompatibilityCheck, RegistryError> {
        let state = self.lock();
        let level = state.level_for(subject);
        let live: Vec<(u32, AvroSchema)> = match state.subjects.get(subject) {
            Some(sub) => sub
                .live()
                .map(|v| Ok((v.version, state.schema(v.id)?)))
                .collect::<Result<_, RegistryError>>()?,
            None => Vec::new(),
        };
        let messages = check_against(level, schema, &live);
        Ok(CompatibilityCheck {
            is_compatible: messages.is_empty(),
            messages,
        })
    }

    fn get_version(&self, subject: &str, version: VersionRef) -> Result<RegisteredSchema, RegistryError> {
        let state = self.lock();
        let sub = state.live_subject(subject)?;
        let found = match version {
            VersionRef::Latest => sub.live().last(),
            VersionRef::Number(n) => sub.live().find(|v| v.version == n),
        };
        let v = found.ok_or_else(|| RegistryError::VersionNotFound {
            subject: subject.to_string(),
            version,
        })?;
        Ok(RegisteredSchema {
            subject: subject.to_string(),
            id: v.id,
            version: v.version,
            schema: state.schema(v.id)?,
        })
    }
}

impl State {
    fn level_for(&self, subject: &str) -> CompatibilityLevel {
        self.subjects
            .get(subject)
            .and_then(|s| s.level)
            .unwrap_or(self.global_level)
    }

    fn schema(&self, id: u32) -> Result<AvroSchema, RegistryError> {
        self.by_id.get(&id).cloned().ok_or(RegistryError::SchemaNotFound {
            id: Some(id),
            subject: None,
        })
    }

    /// The subject if it has at least one live version.
    fn live_subject(&self, subject: &str) -> Result<&Subject, RegistryError> {
        self.subjects
            .get(subject)
            .filter(|s| s.live().next().is_some())
            .ok_or_else(|| RegistryError::SubjectNotFound {
                subject: subject.to_string(),
            })
    }
}

/// Checks `new` under `level` against the subject's live versions (oldest first): the latest, or all of them
/// for the transitive levels. Messages name the real version numbers.
fn check_against(level: CompatibilityLevel, new: &AvroSchema, live: &[(u32, AvroSchema)]) -> Vec<String> {
    let numbered: Vec<(u32, &AvroSchema)> = live.iter().map(|(v, s)| (*v, s)).collect();
    deimos_avro::compat::check_compatibility_versions(level, new, &numbered)
        .err()
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl SchemaRegistry for MemoryRegistry {
    async fn register(&self, subject: &str, schema: &AvroSchema) -> Result<u32, RegistryError> {
        self.register_version(subject, schema).map(|r| r.id)
    }

    async fn lookup(&self, subject: &str, schema: &AvroSchema) -> Result<RegisteredSchema, RegistryError> {
        let state = self.lock();
        let sub = state.live_subject(subject)?;
        let not_found = || RegistryError::SchemaNotFound {
            id: None,
            subject: Some(subject.to_string()),
        };
        let id = state.ids.get(schema.canonical_json()).copied().ok_or_else(not_found)?;
        let v = sub.live().find(|v| v.id == id).ok_or_else(not_found)?;
        Ok(RegisteredSchema {
            subject: subject.to_string(),
            id,
            version: v.version,
            schema: state.schema(id)?,
        })
    }

    async fn schema_by_id(&self, id: u32) -> Result<AvroSchema, RegistryError> {
        self.lock().schema(id)
    }

    async fn latest(&self, subject: &str) -> Result<RegisteredSchema, RegistryError> {
        self.get_version(subject, VersionRef::Latest)
    }

    async fn version(&self, subject: &str, version: u32) -> Result<RegisteredSchema, RegistryError> {
        self.get_version(subject, VersionRef::Number(version))
    }

    async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let state = self.lock();
        Ok(state
            .subjects
            .iter()
            .filter(|(_, s)| s.live().next().is_some())
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        let state = self.lock();
        Ok(state.live_subject(subject)?.live().map(|v| v.version).collect())
    }

    async fn test_compatibility(
        &self,
        subject: &str,
        schema: &AvroSchema,
        against: VersionRef,
    ) -> Result<CompatibilityCheck, RegistryError> {
        let target = match (against, self.get_version(subject, against)) {
            (_, Ok(r)) => Some(r),
            (VersionRef::Latest, Err(RegistryError::SubjectNotFound { .. })) => None,
            (_, Err(e)) => return Err(e),
        };
        let Some(target) = target else {
            return Ok(CompatibilityCheck {
                is_compatible: true,
                messages: Vec::new(),
            });
        };
        let level = self.lock().level_for(subject);
        let messages = check_against(level, schema, &[(target.version, target.schema)]);
        Ok(CompatibilityCheck {
            is_compatible: messages.is_empty(),
            messages,
        })
    }

    async fn compatibility_level(&self, subject: Option<&str>) -> Result<CompatibilityLevel, RegistryError> {
        let state = self.lock();
        Ok(match subject {
            Some(s) => state.level_for(s),
            None => state.global_level,
        })
    }

    async fn set_compatibility_level(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<(), RegistryError> {
        let mut state = self.lock();
        match subject {
            Some(s) => state.subjects.entry(s.to_string()).or_default().level = Some(level),
            None => state.global_level = level,
        }
        Ok(())
    }
}
