//! `cargo xtask tidy`: the workspace rules of docs/ARCHITECTURE.md ("Checked, not remembered"), checked from `cargo metadata` and the manifests.
//!
//! Rules, for every crate under `crates/`:
//! - named `deimos` or `deimos-*`, living in `crates/<name>`; no `-utils` / `-common` names anywhere;
//! - `edition`, `rust-version` and `license` inherited from the workspace, `[lints] workspace = true`,
//!   no `rust-version` of its own (these manifest rules also hold for the tooling members);
//! - a `README.md`, and `src/lib.rs` starting with `#![doc = include_str!("../README.md")]`;
//! - listed in [`LAYERS`], and every dependency (normal, dev, build) on another workspace crate points to a
//!   strictly lower layer;
//! - the facade `crates/deimos` holds only docs, `pub use` re-exports and cfg attributes, and each of its
//!   features enables its sub-crate with `dep:` syntax;
//! - every normal dependency is named in the crate's `src/` (one that only tests or benches use is a
//!   dev-dependency), except those in [`UNNAMED_DEPENDENCIES`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::metadata::{self, Package};

/// The layer order of the crates under `crates/`, lowest first. A crate may depend only on crates of a strictly
/// lower layer; crates on the same layer (producer, consumer) must not depend on each other.
/// A crate missing from this table is a violation: add new crates here.
const LAYERS: &[(&str, u8)] = &[
    ("deimos-core", 0),
    ("deimos-avro", 1),
    ("deimos-registry", 2),
    ("deimos-codegen", 2),
    ("deimos-keys", 3),
    ("deimos-metrics", 4),
    ("deimos-producer", 5),
    ("deimos-consumer", 5),
    ("deimos-outbox-diesel", 6),
    ("deimos-records-diesel", 7),
    ("deimos-config", 7),
    ("deimos-test", 8),
    ("deimos-cli", 8),
    ("deimos", 9),
];

/// Workspace members outside `crates/` (package name, directory). They sit above every layer: they may depend
/// on any crate, and no crate may depend on them.
const TOOLING: &[(&str, &str)] = &[("xtask", "xtask"), ("deimos-integration-tests", "tests")];

/// The facade crate.
const FACADE: &str = "deimos";

/// Words a crate name must not contain as a `-`-separated part.
const GRAB_BAG_WORDS: &[&str] = &["util", "utils", "common"];

const LIB_DOC_LINE: &str = r#"#![doc = include_str!("../README.md")]"#;

/// One broken rule, with the package it was found in.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Violation {
    package: String,
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.package, self.message)
    }
}

/// `cargo xtask tidy`: prints the violations and fails if there are any.
pub(crate) fn run(root: &Path) -> Result<()> {
    let violations = check(root)?;
    if violations.is_empty() {
        println!("tidy: workspace follows the rules of docs/ARCHITECTURE.md");
        Ok(())
    } else {
        eprintln!("{}", report(&violations));
        bail!("tidy found {} violation(s)", violations.len())
    }
}

/// The violations as a printable list.
pub(crate) fn report(violations: &[Violation]) -> String {
    let mut out = format!(
        "tidy: {} violation(s) of the rules in docs/ARCHITECTURE.md:",
        violations.len()
    );
    for violation in violations {
        out.push_str("\n  - ");
        out.push_str(&violation.to_string());
    }
    out
}

/// All violations in the workspace at `root`, sorted by package.
pub(crate) fn check(root: &Path) -> Result<Vec<Violation>> {
    let metadata = metadata::load(root)?;
    let mut out = Vec::new();
    let workspace: BTreeSet<&str> = metadata.packages.iter().map(|p| p.name.as_str()).collect();
    for package in &metadata.packages {
        let mut report = |message: String| {
            out.push(Violation {
                package: package.name.clone(),
                message,
            });
        };
        let dir = package.dir();
        let rel = dir.strip_prefix(&metadata.workspace_root).unwrap_or(dir);
        let rel = rel.to_string_lossy().replace('\\', "/");
        let in_crates = rel.starts_with("crates/");

        check_name(package, &rel, in_crates, &mut report);
        let manifest = std::fs::read_to_string(&package.manifest_path)
            .with_context(|| format!("could not read {}", package.manifest_path.display()))?;
        check_manifest(&manifest, &mut report);
        if in_crates {
            check_readme_and_lib(package, &mut report)?;
        }
        check_layering(package, in_crates, &workspace, &mut report);
        check_unsafe(dir, &rel, &mut report)?;
        if in_crates {
            check_dependencies_used(package, &mut report)?;
        }
        if in_crates && package.name == FACADE {
            check_facade(package, &mut report)?;
        }
    }
    out.sort();
    Ok(out)
}

/// Normal dependencies a crate declares without naming them in its code, each for a reason (package,
/// dependency, why).
const UNNAMED_DEPENDENCIES: &[(&str, &str, &str)] = &[(
    "deimos-outbox-diesel",
    "libsqlite3-sys",
    "declared for its `bundled` feature: SQLite is compiled in, so no system library is needed",
)];

/// Reports normal dependencies that the package's `src/` never names as a whole word ([`names_crate`]): a
/// dependency only tests, examples or benches use belongs in `[dev-dependencies]`.
fn check_dependencies_used(package: &Package, report: &mut impl FnMut(String)) -> Result<()> {
    let src = package.dir().join("src");
    let mut source = String::new();
    if src.is_dir() {
        for path in rust_files(&src)? {
            source += &std::fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
            source.push('\n');
        }
    }
    for dep in package.dependencies.iter().filter(|d| d.kind.is_none()) {
        let name = dep.local_name();
        if UNNAMED_DEPENDENCIES
            .iter()
            .any(|(p, d, _)| *p == package.name && *d == name)
        {
            continue;
        }
        if !names_crate(&source, &name.replace('-', "_")) {
            report(format!(
                "declares the dependency `{name}` but its src/ never names `{}`: remove it, or move it to [dev-dependencies] if only tests, examples or benches use it",
                name.replace('-', "_")
            ));
        }
    }
    Ok(())
}

/// Whether `source` names the crate `ident` as a path root (`ident::`, `use ident;`, `ident as`, `{ident}`…).
fn names_crate(source: &str, ident: &str) -> bool {
    source.match_indices(ident).any(|(at, _)| {
        let before = source[..at].chars().next_back();
        let after = source[at + ident.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The only files that may allow `unsafe_code` (denied for the workspace): each reaches librdkafka's C API where
/// rdkafka's safe API cannot (header keys that are not UTF-8), with every unsafe block documented.
const UNSAFE_ALLOWED: &[&str] = &["crates/deimos-consumer/src/kafka_headers.rs"];

/// Reports `.rs` files of a package that allow `unsafe_code` without being listed in [`UNSAFE_ALLOWED`].
fn check_unsafe(dir: &Path, rel: &str, report: &mut impl FnMut(String)) -> Result<()> {
    for path in rust_files(dir)? {
        let text = std::fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
        let allows = text.lines().map(str::trim_start).any(|line| {
            (line.starts_with("#![allow(") || line.starts_with("#[allow(")) && line.contains("unsafe_code")
        });
        if !allows {
            continue;
        }
        let inside = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        let file = if rel.is_empty() {
            inside
        } else {
            format!("{rel}/{inside}")
        };
        if !UNSAFE_ALLOWED.contains(&file.as_str()) {
            report(format!(
                "`{file}` allows unsafe_code; unsafe code lives only in the files listed in UNSAFE_ALLOWED (xtask/src/tidy.rs), each block with a SAFETY comment"
            ));
        }
    }
    Ok(())
}

/// The `.rs` files under `dir`, leaving out `target` and hidden folders.
fn rust_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let entries = std::fs::read_dir(&folder).with_context(|| format!("could not list {}", folder.display()))?;
        for entry in entries {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                files.push(path);
            }
        }
    }
    Ok(files)
}

fn check_name(package: &Package, rel: &str, in_crates: bool, report: &mut impl FnMut(String)) {
    let name = package.name.as_str();
    if name.split('-').any(|part| GRAB_BAG_WORDS.contains(&part)) {
        report(format!(
            "crate name `{name}` is a grab bag (no -utils / -common crates); give the code a crate with one job"
        ));
    }
    if in_crates {
        if name != FACADE && !name.starts_with("deimos-") {
            report(format!(
                "crates under crates/ are named `deimos` or `deimos-*`, not `{name}`"
            ));
        }
        let expected = format!("crates/{name}");
        if rel != expected {
            report(format!("lives in `{rel}`, expected `{expected}`"));
        }
    } else {
        match TOOLING.iter().find(|(tool, _)| *tool == name) {
            Some((_, dir)) if *dir == rel => {}
            Some((_, dir)) => report(format!("lives in `{rel}`, expected `{dir}`")),
            None => report(format!(
                "workspace member in `{rel}` is outside crates/; move it to crates/{name} or list it in TOOLING in xtask/src/tidy.rs"
            )),
        }
    }
}

/// `edition`, `rust-version`, `license` from the workspace and `[lints] workspace = true`, read from the
/// manifest text (cargo metadata only shows the resolved values).
fn check_manifest(manifest: &str, report: &mut impl FnMut(String)) {
    let mut section = String::new();
    let mut inherited = BTreeSet::new();
    let mut lints_workspace = false;
    for line in manifest.lines() {
        let line = strip_toml_comment(line).trim();
        if line.starts_with('[') {
            section = line.chars().filter(|c| !c.is_whitespace()).collect();
            continue;
        }
        let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
        let Some((key, value)) = compact.split_once('=') else {
            continue;
        };
        match section.as_str() {
            "[package]" => {
                for field in ["edition", "rust-version", "license"] {
                    let from_workspace = (key == format!("{field}.workspace") && value == "true")
                        || (key == field && value == "{workspace=true}");
                    if from_workspace {
                        inherited.insert(field);
                    } else if key == field || key.starts_with(&format!("{field}.")) {
                        let own = if field == "rust-version" {
                            "has a rust-version of its own; the workspace manifest holds the only one, use `rust-version.workspace = true`".to_string()
                        } else {
                            format!("sets `{field}` itself; use `{field}.workspace = true`")
                        };
                        report(own);
                    }
                }
            }
            "[lints]" if key == "workspace" && value == "true" => lints_workspace = true,
            "" if (key == "lints.workspace" && value == "true") || (key == "lints" && value == "{workspace=true}") => {
                lints_workspace = true;
            }
            _ => {}
        }
    }
    for field in ["edition", "rust-version", "license"] {
        if !inherited.contains(field) {
            report(format!("Cargo.toml lacks `{field}.workspace = true` in [package]"));
        }
    }
    if !lints_workspace {
        report("Cargo.toml lacks `[lints] workspace = true`".to_string());
    }
}

/// The line without a trailing `# comment` (a `#` inside a string does not start one).
fn strip_toml_comment(line: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    for (index, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return &line[..index],
            None => {}
        }
    }
    line
}

fn check_readme_and_lib(package: &Package, report: &mut impl FnMut(String)) -> Result<()> {
    let readme = package.dir().join("README.md");
    match std::fs::read_to_string(&readme) {
        Ok(text) if !text.trim().is_empty() => {}
        Ok(_) => report("README.md is empty; it is the crate doc".to_string()),
        Err(_) => report("has no README.md; each crate's README is its crate doc".to_string()),
    }
    let Some(lib) = package.targets.iter().find(|t| t.kind.iter().any(|k| k == "lib")) else {
        report("has no library target (src/lib.rs)".to_string());
        return Ok(());
    };
    let text =
        std::fs::read_to_string(&lib.src_path).with_context(|| format!("could not read {}", lib.src_path.display()))?;
    let first = text.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("");
    if first != LIB_DOC_LINE {
        report(format!(
            "{} must start with `{LIB_DOC_LINE}` (found `{}`)",
            display_rel(package, &lib.src_path),
            shorten(first)
        ));
    }
    Ok(())
}

fn layer_of(name: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(crate_name, _)| *crate_name == name)
        .map(|(_, layer)| *layer)
}

fn check_layering(package: &Package, in_crates: bool, workspace: &BTreeSet<&str>, report: &mut impl FnMut(String)) {
    let own = if in_crates {
        let layer = layer_of(&package.name);
        if layer.is_none() {
            report(format!(
                "`{}` is not in the layer table; add it to LAYERS in xtask/src/tidy.rs",
                package.name
            ));
        }
        layer
    } else {
        None
    };
    for dep in &package.dependencies {
        if dep.path.is_none() || !workspace.contains(dep.name.as_str()) {
            continue;
        }
        if TOOLING.iter().any(|(tool, _)| *tool == dep.name) {
            report(format!(
                "has a {} on `{}`, which is tooling; nothing may depend on it",
                dep.kind_label(),
                dep.name
            ));
            continue;
        }
        if !in_crates {
            continue;
        }
        match (own, layer_of(&dep.name)) {
            (Some(own), Some(theirs)) if theirs < own => {}
            (Some(own), Some(theirs)) => report(format!(
                "has a {} on `{}` (layer {theirs}), but `{}` is on layer {own}: dependencies must point to a strictly lower layer",
                dep.kind_label(),
                dep.name,
                package.name
            )),
            // The missing entry is reported once, for the crate itself.
            _ => {}
        }
    }
}

fn check_facade(package: &Package, report: &mut impl FnMut(String)) -> Result<()> {
    if let Some(lib) = package.targets.iter().find(|t| t.kind.iter().any(|k| k == "lib")) {
        let text = std::fs::read_to_string(&lib.src_path)
            .with_context(|| format!("could not read {}", lib.src_path.display()))?;
        for (line, item) in facade_logic(&text) {
            report(format!(
                "{}:{line}: the facade holds only docs, `pub use` re-exports and cfg attributes; found `{}`",
                display_rel(package, &lib.src_path),
                shorten(&item)
            ));
        }
    }
    for message in facade_feature_problems(package) {
        report(message);
    }
    Ok(())
}

/// Features of the facade that do not enable their sub-crate with `dep:` syntax.
fn facade_feature_problems(package: &Package) -> Vec<String> {
    let mut out = Vec::new();
    let optional: BTreeMap<&str, &str> = package
        .dependencies
        .iter()
        .filter(|dep| dep.optional)
        .map(|dep| (dep.local_name(), dep.name.as_str()))
        .collect();
    let mut enabled_with_dep = BTreeSet::new();
    for (feature, entries) in &package.features {
        if feature == "default" {
            continue;
        }
        if optional.contains_key(feature.as_str()) && entries.len() == 1 && entries[0] == format!("dep:{feature}") {
            out.push(format!(
                "feature `{feature}` is the optional dependency's own name; name the feature after the module and enable the crate with `dep:{feature}`"
            ));
            enabled_with_dep.insert(feature.as_str());
            continue;
        }
        let deps: Vec<&str> = entries.iter().filter_map(|entry| entry.strip_prefix("dep:")).collect();
        // A feature may also turn on a feature of a sub-crate (`deimos-registry/embedded`).
        let sub_features = entries.iter().any(|entry| entry.contains('/'));
        if deps.is_empty() && !sub_features {
            out.push(format!(
                "feature `{feature}` enables no sub-crate with `dep:` syntax, nor a feature of one ({entries:?})"
            ));
        }
        enabled_with_dep.extend(deps);
    }
    for (local, name) in optional {
        if !enabled_with_dep.contains(local) {
            out.push(format!(
                "optional dependency `{name}` is not enabled by any feature with `dep:{local}`"
            ));
        }
    }
    out
}

/// Attribute names allowed in the facade.
const FACADE_ATTRIBUTES: &[&str] = &["doc", "cfg", "cfg_attr", "allow", "warn", "deny", "forbid", "expect"];

/// Items of the facade's lib.rs that are not docs, `pub use` re-exports, cfg/doc/lint attributes or the
/// `prelude` module (itself made of those only), with their line numbers.
fn facade_logic(source: &str) -> Vec<(usize, String)> {
    rust_items(source)
        .into_iter()
        .filter(|(_, item)| {
            if let Some(attribute) = item.strip_prefix("#![").or_else(|| item.strip_prefix("#[")) {
                let name: String = attribute
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                !FACADE_ATTRIBUTES.contains(&name.as_str())
            } else if let Some(body) = item
                .strip_prefix("pub mod prelude {")
                .and_then(|rest| rest.strip_suffix('}'))
            {
                !facade_logic(body).is_empty()
            } else {
                !(item.starts_with("pub use ") && item.ends_with(';'))
            }
        })
        .collect()
}

/// Splits Rust source into top-level items and attributes (comments removed, whitespace collapsed outside
/// string literals), each with the line it starts on. Good enough for a file of attributes and `use`s.
fn rust_items(source: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = source.chars().collect();
    let mut items = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut line = 1;
    let mut depth = 0i32;
    // After a `}` at depth 0 the item ends, unless a `;` follows (as in `pub use a::{b, c};`).
    let mut closed_brace = false;
    let mut i = 0;
    let flush = |current: &mut String, start: usize, items: &mut Vec<(usize, String)>| {
        let text = current.trim().to_string();
        if !text.is_empty() {
            items.push((start, text));
        }
        current.clear();
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let mut nesting = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    nesting += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    nesting -= 1;
                    i += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
            if !current.is_empty() && !current.ends_with(' ') {
                current.push(' ');
            }
            continue;
        }
        if c.is_whitespace() {
            if c == '\n' {
                line += 1;
            }
            if !current.is_empty() && !current.ends_with(' ') {
                current.push(' ');
            }
            i += 1;
            continue;
        }
        if closed_brace {
            closed_brace = false;
            if c != ';' {
                flush(&mut current, start, &mut items);
            }
        }
        if current.is_empty() {
            start = line;
        }
        if c == '"' {
            // A string literal, copied as is.
            current.push(c);
            i += 1;
            while i < chars.len() {
                let s = chars[i];
                current.push(s);
                i += 1;
                if s == '\n' {
                    line += 1;
                }
                if s == '\\' {
                    if let Some(&escaped) = chars.get(i) {
                        current.push(escaped);
                        i += 1;
                    }
                } else if s == '"' {
                    break;
                }
            }
            continue;
        }
        current.push(c);
        i += 1;
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            match c {
                ';' => flush(&mut current, start, &mut items),
                ']' if current.starts_with('#') => flush(&mut current, start, &mut items),
                '}' => closed_brace = true,
                _ => {}
            }
        }
    }
    flush(&mut current, start, &mut items);
    items
}

fn display_rel(package: &Package, path: &Path) -> String {
    path.strip_prefix(package.dir())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

fn shorten(text: &str) -> String {
    const MAX: usize = 70;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(manifest: &str) -> Vec<String> {
        let mut out = Vec::new();
        check_manifest(manifest, &mut |message| out.push(message));
        out
    }

    #[test]
    fn a_crate_is_named_only_as_a_path_root() {
        assert!(names_crate("use serde_json::Value;", "serde_json"));
        assert!(names_crate("pub use deimos_core as core;", "deimos_core"));
        assert!(!names_crate("use serde_json_ext::Value; let serde = 1;", "serde_json"));
        assert!(!names_crate("use deimos_core::x;", "core"));
    }

    #[test]
    fn manifest_inheriting_everything_passes() {
        let manifest = "[package]\nname = \"deimos-x\" # the x\nedition.workspace = true\nrust-version = { workspace = true }\nlicense.workspace = true\n\n[lints]\nworkspace = true\n";
        assert_eq!(messages(manifest), Vec::<String>::new());
    }

    #[test]
    fn manifest_with_own_rust_version_and_no_lints_fails() {
        let manifest = "[package]\nname = \"deimos-x\"\nedition.workspace = true\nrust-version = \"1.90\"\nlicense.workspace = true\n";
        let found = messages(manifest);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("rust-version of its own"));
        assert!(found[1].contains("rust-version.workspace = true"));
        assert!(found[2].contains("[lints]"));
    }

    #[test]
    fn facade_accepts_docs_reexports_and_cfg() {
        let source = r#"#![doc = include_str!("../README.md")]
// a comment
/* a block
   comment */
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Avro.
#[cfg(feature = "avro")]
#[doc(inline)]
pub use deimos_avro as avro;
#[cfg(all(feature = "registry",
          feature = "keys"))]
pub use deimos_registry::{
    HttpRegistry, // the client
    MemoryRegistry,
};
"#;
        assert_eq!(facade_logic(source), Vec::<(usize, String)>::new());
    }

    #[test]
    fn facade_rejects_logic() {
        let source = "#![doc = \"x // not a comment\"]\npub use a as b;\nuse std::fmt;\n\npub fn helper() -> u8 {\n    1\n}\nmod inner;\n#[derive(Debug)]\npub struct S;\n";
        let found: Vec<usize> = facade_logic(source).into_iter().map(|(line, _)| line).collect();
        assert_eq!(found, vec![3, 5, 8, 9, 10]);
        // A prelude of re-exports is allowed; one with anything else is not.
        let prelude = "pub mod prelude {\n    #[cfg(feature = \"a\")]\n    pub use a::{B, C};\n}\n";
        assert_eq!(facade_logic(prelude), Vec::<(usize, String)>::new());
        let logic = "pub mod prelude {\n    pub use a::B;\n    pub fn f() {}\n}\n";
        assert_eq!(facade_logic(logic).len(), 1);
    }

    #[test]
    fn every_layered_crate_has_one_entry() {
        let names: BTreeSet<&str> = LAYERS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names.len(), LAYERS.len());
        assert_eq!(layer_of("deimos-producer"), layer_of("deimos-consumer"));
        assert!(layer_of("deimos-avro") < layer_of("deimos-registry"));
        assert_eq!(layer_of(FACADE), LAYERS.iter().map(|(_, layer)| *layer).max());
    }

    /// A throwaway workspace that breaks each rule once, checked through `cargo metadata` like the real one.
    #[test]
    fn each_rule_is_reported() -> Result<()> {
        let root = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let good_package =
            "version = \"0.1.0\"\nedition.workspace = true\nrust-version.workspace = true\nlicense.workspace = true\n";
        let lints = "\n[lints]\nworkspace = true\n";
        let files: &[(&str, String)] = &[
            (
                "Cargo.toml",
                "[workspace]\nresolver = \"3\"\nmembers = [\"crates/*\", \"tools/helper\"]\n[workspace.package]\nedition = \"2024\"\nrust-version = \"1.88\"\nlicense = \"Apache-2.0\"\n[workspace.lints.rust]\nunsafe_code = \"forbid\"\n".to_string(),
            ),
            (
                "crates/deimos-avro/Cargo.toml",
                format!("[package]\nname = \"deimos-avro\"\n{good_package}\n[dependencies]\ndeimos-registry = {{ path = \"../deimos-registry\" }}\n{lints}"),
            ),
            (
                "crates/deimos-registry/Cargo.toml",
                "[package]\nname = \"deimos-registry\"\nversion = \"0.1.0\"\nedition.workspace = true\nrust-version = \"1.90\"\nlicense.workspace = true\n".to_string(),
            ),
            ("crates/deimos-producer/Cargo.toml", format!("[package]\nname = \"deimos-producer\"\n{good_package}{lints}")),
            (
                "crates/deimos-consumer/Cargo.toml",
                format!("[package]\nname = \"deimos-consumer\"\n{good_package}\n[dev-dependencies]\ndeimos-producer = {{ path = \"../deimos-producer\" }}\n{lints}"),
            ),
            ("crates/deimos-utils/Cargo.toml", format!("[package]\nname = \"deimos-utils\"\n{good_package}{lints}")),
            ("crates/other/Cargo.toml", format!("[package]\nname = \"deimos-other\"\n{good_package}{lints}")),
            (
                "crates/deimos/Cargo.toml",
                format!("[package]\nname = \"deimos\"\n{good_package}\n[features]\navro = [\"dep:deimos-avro\"]\n\n[dependencies]\ndeimos-avro = {{ path = \"../deimos-avro\", optional = true }}\ndeimos-registry = {{ path = \"../deimos-registry\", optional = true }}\n{lints}"),
            ),
            ("crates/deimos/src/lib.rs", format!("{LIB_DOC_LINE}\npub use deimos_avro as avro;\npub fn logic() {{}}\n")),
            ("tools/helper/Cargo.toml", format!("[package]\nname = \"helper\"\n{good_package}{lints}")),
            ("tools/helper/src/lib.rs", String::new()),
            ("crates/deimos-registry/src/lib.rs", "//! no readme\n".to_string()),
        ];
        for (path, text) in files {
            let path = root.join(path);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, text)?;
        }
        for dir in [
            "deimos-avro",
            "deimos-producer",
            "deimos-consumer",
            "deimos-utils",
            "other",
            "deimos",
        ] {
            std::fs::write(root.join("crates").join(dir).join("README.md"), "# readme\n")?;
            let lib = root.join("crates").join(dir).join("src/lib.rs");
            if !lib.exists() {
                std::fs::create_dir_all(root.join("crates").join(dir).join("src"))?;
                std::fs::write(lib, format!("{LIB_DOC_LINE}\n"))?;
            }
        }
        let found = check(&root);
        let _ = std::fs::remove_dir_all(&root);
        let found: Vec<String> = found?.iter().map(ToString::to_string).collect();
        let expected = [
            "deimos: src/lib.rs:3: the facade holds only docs",
            "deimos: feature `deimos-registry` is the optional dependency's own name",
            "deimos-avro: has a dependency on `deimos-registry` (layer 2), but `deimos-avro` is on layer 1",
            "deimos-consumer: has a dev-dependency on `deimos-producer` (layer 5), but `deimos-consumer` is on layer 5",
            "deimos-other: lives in `crates/other`, expected `crates/deimos-other`",
            "deimos-other: `deimos-other` is not in the layer table",
            "deimos-registry: has a rust-version of its own",
            "deimos-registry: Cargo.toml lacks `[lints] workspace = true`",
            "deimos-registry: has no README.md",
            "deimos-registry: src/lib.rs must start with",
            "deimos-utils: crate name `deimos-utils` is a grab bag",
            "helper: workspace member in `tools/helper` is outside crates/",
            "deimos: declares the dependency `deimos-registry` but its src/ never names `deimos_registry`",
            "deimos-avro: declares the dependency `deimos-registry` but its src/ never names `deimos_registry`",
        ];
        for wanted in expected {
            assert!(
                found.iter().any(|message| message.starts_with(wanted)),
                "missing `{wanted}` in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len() + 2, "{found:#?}");
        Ok(())
    }
}
