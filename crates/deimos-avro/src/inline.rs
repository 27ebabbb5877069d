//! Making a schema self-contained: named types defined in other files (or nested inside them) are
//! inlined at their first use, and every other reference is written as a full name. apache-avro's own
//! multi-schema parser depends on hash-map order for types nested inside another input, so this is done
//! on the JSON before parsing.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value as Json};

pub(crate) const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

const NAMED: [&str; 4] = ["record", "error", "enum", "fixed"];

/// The full name of schema `name` in `namespace`: a name that already has a dot is full; otherwise the
/// namespace (when not empty) is put in front, as Avro resolves names and Deimos's `schema` + `namespace` do.
pub fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        _ if name.contains('.') => name.to_string(),
        Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

fn namespace_of(full: &str) -> Option<&str> {
    full.rfind('.').map(|i| &full[..i])
}

/// A reference as written: the name and the namespace it appeared in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ref {
    pub(crate) name: String,
    pub(crate) ns: Option<String>,
}

impl Ref {
    /// The full names this reference may mean, in order: relative to its namespace, then the null
    /// namespace (as the Java implementation falls back).
    pub(crate) fn candidates(&self) -> Vec<String> {
        let first = full_name(&self.name, self.ns.as_deref());
        if first == self.name {
            vec![first]
        } else {
            vec![first, self.name.clone()]
        }
    }

    pub(crate) fn resolve(&self, known: impl Fn(&str) -> bool) -> Option<String> {
        self.candidates().into_iter().find(|c| known(c))
    }

    /// The name the reference most likely means, for messages.
    pub(crate) fn display(&self) -> String {
        full_name(&self.name, self.ns.as_deref())
    }
}

/// Collects the named types a schema defines (full name → definition, with its name made full) and the
/// references it makes.
pub(crate) fn collect(v: &Json, ns: Option<&str>, defs: &mut Vec<(String, Json)>, refs: &mut Vec<Ref>) {
    match v {
        Json::String(s) if !PRIMITIVES.contains(&s.as_str()) => {
            refs.push(Ref {
                name: s.clone(),
                ns: ns.map(str::to_string),
            });
        }
        Json::Array(branches) => branches.iter().for_each(|b| collect(b, ns, defs, refs)),
        Json::Object(o) => match o.get("type") {
            Some(Json::String(t)) if NAMED.contains(&t.as_str()) => {
                let Some(name) = o.get("name").and_then(Json::as_str) else {
                    return;
                };
                let own_ns = o.get("namespace").and_then(Json::as_str).or(ns);
                let full = full_name(name, own_ns);
                let mut def = o.clone();
                def.insert("name".into(), Json::String(full.clone()));
                def.remove("namespace");
                defs.push((full.clone(), Json::Object(def)));
                if let Some(fields) = o.get("fields").and_then(Json::as_array) {
                    for f in fields {
                        if let Some(t) = f.get("type") {
                            collect(t, namespace_of(&full), defs, refs);
                        }
                    }
                }
            }
            Some(Json::String(t)) if t == "array" => {
                if let Some(items) = o.get("items") {
                    collect(items, ns, defs, refs);
                }
            }
            Some(Json::String(t)) if t == "map" => {
                if let Some(values) = o.get("values") {
                    collect(values, ns, defs, refs);
                }
            }
            Some(t @ Json::String(_)) | Some(t @ Json::Object(_)) | Some(t @ Json::Array(_)) => {
                collect(t, ns, defs, refs)
            }
            _ => {}
        },
        _ => {}
    }
}

/// Rewrites `v` into a self-contained schema: the first use of each type from `defs` is replaced by its
/// definition. Fails with the reference that nothing defines.
pub(crate) fn inline(v: &Json, defs: &HashMap<String, Json>) -> Result<Json, Ref> {
    let mut defined = HashSet::new();
    walk(v, None, defs, &mut defined)
}

fn walk(v: &Json, ns: Option<&str>, defs: &HashMap<String, Json>, defined: &mut HashSet<String>) -> Result<Json, Ref> {
    Ok(match v {
        Json::String(s) if PRIMITIVES.contains(&s.as_str()) => v.clone(),
        Json::String(s) => {
            let r = Ref {
                name: s.clone(),
                ns: ns.map(str::to_string),
            };
            let full = r
                .resolve(|c| defined.contains(c) || defs.contains_key(c))
                .ok_or_else(|| r.clone())?;
            if defined.contains(&full) {
                Json::String(full)
            } else {
                let def = defs.get(&full).ok_or(r)?;
                walk(def, None, defs, defined)?
            }
        }
        Json::Array(branches) => Json::Array(
            branches
                .iter()
                .map(|b| walk(b, ns, defs, defined))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(o) => {
            let mut out: Map<String, Json> = o.clone();
            match o.get("type") {
                Some(Json::String(t)) if NAMED.contains(&t.as_str()) => {
                    let name = o.get("name").and_then(Json::as_str).unwrap_or_default();
                    let full = full_name(name, o.get("namespace").and_then(Json::as_str).or(ns));
                    defined.insert(full.clone());
                    out.insert("name".into(), Json::String(full.clone()));
                    out.remove("namespace");
                    if let Some(fields) = o.get("fields").and_then(Json::as_array) {
                        let mut new_fields = Vec::with_capacity(fields.len());
                        for f in fields {
                            let mut nf = f.as_object().cloned().unwrap_or_default();
                            if let Some(t) = f.get("type") {
                                nf.insert("type".into(), walk(t, namespace_of(&full), defs, defined)?);
                            }
                            new_fields.push(Json::Object(nf));
                        }
                        out.insert("fields".into(), Json::Array(new_fields));
                    }
                }
                Some(Json::String(t)) if t == "array" => {
                    if let Some(items) = o.get("items") {
                        out.insert("items".into(), walk(items, ns, defs, defined)?);
                    }
                }
                Some(Json::String(t)) if t == "map" => {
                    if let Some(values) = o.get("values") {
                        out.insert("values".into(), walk(values, ns, defs, defined)?);
                    }
                }
                Some(Json::String(t)) if PRIMITIVES.contains(&t.as_str()) => {}
                Some(t) => return walk(t, ns, defs, defined),
                None => {}
            }
            Json::Object(out)
        }
        other => other.clone(),
    })
}
