//! The schema store: `.avsc` files under a root folder, one named type per file at the path its full
//! name gives (`com.acme.Widget` → `<root>/com/acme/Widget.avsc`). Named types referenced across files
//! resolve whatever order the files are loaded in.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde_json::Value as Json;

use crate::error::SchemaError;
use crate::inline::{Ref, collect, full_name, inline};
use crate::schema::AvroSchema;

/// One parsed `.avsc` file: its JSON, the named types it defines and the references it makes.
#[derive(Debug, Clone)]
struct SourceFile {
    path: PathBuf,
    json: Json,
    defs: Vec<(String, Json)>,
    refs: Vec<Ref>,
}

impl SourceFile {
    fn from_json(path: PathBuf, json: Json) -> SourceFile {
        let (mut defs, mut refs) = (Vec::new(), Vec::new());
        collect(&json, None, &mut defs, &mut refs);
        refs.sort();
        refs.dedup();
        SourceFile { path, json, defs, refs }
    }

    fn defines(&self, name: &str) -> bool {
        self.defs.iter().any(|(d, _)| d == name)
    }
}

fn read_source(path: &Path) -> Result<SourceFile, SchemaError> {
    let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let json: Json = serde_json::from_str(&text).map_err(|e| SchemaError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    crate::schema::check_names(&json).map_err(|message| SchemaError::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(SourceFile::from_json(path.to_path_buf(), json))
}

fn avsc_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SchemaError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SchemaError::Folder {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            avsc_files(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "avsc") {
            out.push(p);
        }
    }
    Ok(())
}

/// Avro schemas loaded from a folder of `.avsc` files, cached once parsed. Thread-safe.
#[derive(Debug)]
pub struct SchemaStore {
    root: PathBuf,
    cache: RwLock<HashMap<String, AvroSchema>>,
    /// Full name → the file that defines it, built on first need (a type defined inside another file).
    index: RwLock<Option<BTreeMap<String, PathBuf>>>,
    /// Schemas added from JSON rather than files (e.g. generated key schemas).
    added: RwLock<HashMap<String, SourceFile>>,
}

impl SchemaStore {
    /// A store over `root`; files are read when a schema is first asked for.
    pub fn new(root: impl Into<PathBuf>) -> SchemaStore {
        SchemaStore {
            root: root.into(),
            cache: RwLock::default(),
            index: RwLock::default(),
            added: RwLock::default(),
        }
    }

    /// Loads and checks every schema under `root` now, so errors show at start-up.
    pub fn load_all(root: impl Into<PathBuf>) -> Result<SchemaStore, SchemaError> {
        let store = SchemaStore::new(root);
        let mut files = Vec::new();
        avsc_files(&store.root, &mut files)?;
        let sources = files.iter().map(|p| read_source(p)).collect::<Result<Vec<_>, _>>()?;
        let defined = check_sources(&sources)?;
        let defs = definitions(&sources);
        let mut cache = HashMap::new();
        for s in &sources {
            for r in &s.refs {
                if r.resolve(|c| defined.contains_key(c)).is_none() {
                    let name = r.display();
                    return Err(SchemaError::UnknownType {
                        path: s.path.clone(),
                        expected: store.path_for(&name),
                        name,
                    });
                }
            }
            let Some((first, _)) = s.defs.first() else { continue };
            if let Some(expected) = store.name_for(&s.path)
                && *first != expected
            {
                return Err(SchemaError::Misplaced {
                    path: s.path.clone(),
                    expected,
                    found: first.clone(),
                });
            }
            let a = build(&store, s, &defs)?;
            cache.insert(first.clone(), a);
        }
        *store.index.write().map_err(|_| poisoned(&store.root))? = Some(defined);
        *store.cache.write().map_err(|_| poisoned(&store.root))? = cache;
        Ok(store)
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the schema with this full name is expected: `<root>/com/acme/Widget.avsc`.
    pub fn path_for(&self, full_name: &str) -> PathBuf {
        let mut p = self.root.clone();
        for part in full_name.split('.') {
            p.push(part);
        }
        p.set_extension("avsc");
        p
    }

    fn name_for(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?.with_extension("");
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        Some(parts.join("."))
    }

    /// Full names of every schema loaded so far.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .cache
            .read()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The schema with this full name (`com.acme.Widget`), loading it and the types it refers to.
    ///
    /// A bare name with a `namespace` given separately is joined as Deimos does: see [`get_in`](Self::get_in).
    pub fn get(&self, full_name: &str) -> Result<AvroSchema, SchemaError> {
        if let Some(s) = self.cache.read().ok().and_then(|c| c.get(full_name).cloned()) {
            return Ok(s);
        }
        let schema = self.load(full_name)?;
        if let Ok(mut c) = self.cache.write() {
            c.insert(full_name.to_string(), schema.clone());
        }
        Ok(schema)
    }

    /// The schema `name` in `namespace` (Deimos's `schema` + `namespace` producer settings).
    pub fn get_in(&self, namespace: &str, name: &str) -> Result<AvroSchema, SchemaError> {
        self.get(&full_name(name, Some(namespace)))
    }

    /// Adds a schema given as JSON (for example a generated key schema). It may refer to types in files.
    pub fn add_json(&self, json: &str) -> Result<AvroSchema, SchemaError> {
        let path = PathBuf::from("<added>");
        let parsed: Json = serde_json::from_str(json).map_err(|e| SchemaError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let src = SourceFile::from_json(path.clone(), parsed);
        let name = src
            .defs
            .first()
            .map(|(d, _)| d.clone())
            .ok_or_else(|| SchemaError::Invalid {
                path,
                message: "only named schemas (record, enum, fixed) can be added to a store".into(),
            })?;
        if let Ok(mut c) = self.cache.write() {
            c.remove(&name);
        }
        if let Ok(mut a) = self.added.write() {
            a.insert(name.clone(), src);
        }
        self.get(&name)
    }

    fn source_of(&self, name: &str) -> Result<SourceFile, SchemaError> {
        if let Some(s) = self.added.read().ok().and_then(|a| a.get(name).cloned()) {
            return Ok(s);
        }
        let path = self.path_for(name);
        if path.is_file() {
            return read_source(&path);
        }
        // Maybe defined inside another file.
        if let Some(p) = self.index()?.get(name) {
            return read_source(p);
        }
        Err(SchemaError::NotFound {
            name: name.to_string(),
            root: self.root.clone(),
            path,
        })
    }

    fn index(&self) -> Result<BTreeMap<String, PathBuf>, SchemaError> {
        if let Some(i) = self.index.read().ok().and_then(|i| i.clone()) {
            return Ok(i);
        }
        let mut files = Vec::new();
        if self.root.is_dir() {
            avsc_files(&self.root, &mut files)?;
        }
        let mut sources = Vec::new();
        for f in files {
            // A broken unrelated file must not stop this lookup; it is reported when it is loaded.
            if let Ok(s) = read_source(&f) {
                sources.push(s);
            }
        }
        let index = check_sources(&sources)?;
        if let Ok(mut i) = self.index.write() {
            *i = Some(index.clone());
        }
        Ok(index)
    }

    fn load(&self, name: &str) -> Result<AvroSchema, SchemaError> {
        let main = self.source_of(name)?;
        // The closure of files the schema refers to.
        let mut sources = vec![main.clone()];
        let mut i = 0;
        while i < sources.len() {
            let refs = sources[i].refs.clone();
            let from = sources[i].path.clone();
            for r in refs {
                if r.resolve(|c| sources.iter().any(|s| s.defines(c))).is_some() {
                    continue;
                }
                let dep = r
                    .candidates()
                    .into_iter()
                    .find_map(|c| self.source_of(&c).ok().filter(|d| d.defines(&c)))
                    .ok_or_else(|| {
                        let name = r.display();
                        SchemaError::UnknownType {
                            path: from.clone(),
                            expected: self.path_for(&name),
                            name,
                        }
                    })?;
                if !sources.iter().any(|s| s.path == dep.path) {
                    sources.push(dep);
                }
            }
            i += 1;
        }
        check_sources(&sources)?;
        let found = main.defs.first().map(|(d, _)| d.clone());
        if found.as_deref() != Some(name) {
            return Err(SchemaError::Misplaced {
                path: main.path.clone(),
                expected: name.to_string(),
                found: found.unwrap_or_else(|| "an unnamed schema".into()),
            });
        }
        build(self, &main, &definitions(&sources))
    }
}

fn check_sources(sources: &[SourceFile]) -> Result<BTreeMap<String, PathBuf>, SchemaError> {
    let mut defined: BTreeMap<String, PathBuf> = BTreeMap::new();
    for s in sources {
        for (d, _) in &s.defs {
            if let Some(first) = defined.get(d) {
                return Err(SchemaError::Duplicate {
                    name: d.clone(),
                    first: first.clone(),
                    second: s.path.clone(),
                });
            }
            defined.insert(d.clone(), s.path.clone());
        }
    }
    Ok(defined)
}

fn definitions(sources: &[SourceFile]) -> HashMap<String, Json> {
    sources.iter().flat_map(|s| s.defs.iter().cloned()).collect()
}

/// Inlines the types a file refers to and parses the self-contained result.
fn build(store: &SchemaStore, s: &SourceFile, defs: &HashMap<String, Json>) -> Result<AvroSchema, SchemaError> {
    let json = inline(&s.json, defs).map_err(|r| {
        let name = r.display();
        SchemaError::UnknownType {
            path: s.path.clone(),
            expected: store.path_for(&name),
            name,
        }
    })?;
    AvroSchema::from_json_value(&json, s.path.clone())
}

fn poisoned(root: &Path) -> SchemaError {
    SchemaError::Invalid {
        path: root.to_path_buf(),
        message: "schema store lock poisoned by a panic elsewhere".into(),
    }
}
