//! Rust source for a [`Model`]: one module per namespace, a struct per record, an enum per Avro enum and per
//! union, type aliases for fixed types.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value as Json;

use crate::model::{Def, Field, Model, Ty};

/// Words that are keywords in Rust 2024 and cannot be raw identifiers.
const NOT_RAW: &[&str] = &["self", "Self", "super", "crate", "_"];
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false", "fn", "for", "gen",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static", "struct",
    "trait", "true", "type", "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "try", "typeof", "unsized", "virtual", "yield",
];

/// An identifier for an Avro name, and whether serde needs a `rename` to keep the Avro name.
fn ident(name: &str) -> (String, bool) {
    if NOT_RAW.contains(&name) {
        (format!("{name}_"), true)
    } else if KEYWORDS.contains(&name) {
        (format!("r#{name}"), false)
    } else {
        (name.to_string(), false)
    }
}

fn module_ident(segment: &str) -> String {
    ident(segment).0
}

/// `ns` split into module segments.
fn segments(ns: &str) -> Vec<&str> {
    ns.split('.').filter(|s| !s.is_empty()).collect()
}

fn split(full: &str) -> (&str, &str) {
    full.rsplit_once('.').unwrap_or(("", full))
}

/// Doc comment lines at `indent`.
fn doc_lines(out: &mut String, indent: &str, doc: Option<&str>) {
    if let Some(doc) = doc {
        for line in doc.lines() {
            // Indentation and ``` fences would make rustdoc read the text as code (and run it as a doctest).
            let line = line.trim().replace("```", "'''");
            let line = line.as_str();
            if line.is_empty() {
                let _ = writeln!(out, "{indent}///");
            } else {
                let _ = writeln!(out, "{indent}/// {line}");
            }
        }
    }
}

/// The schema's doc, then an empty doc line before what the generator adds.
fn separated_doc(out: &mut String, indent: &str, doc: Option<&str>) {
    if doc.is_some() {
        doc_lines(out, indent, doc);
        let _ = writeln!(out, "{indent}///");
    }
}

/// Generated names keep the schema's spelling, and generated items need not be used or documented.
const ALLOWS: &str =
    "#[allow(non_snake_case, non_camel_case_types, missing_docs, dead_code, unreachable_pub, clippy::all)]";

pub(crate) struct Renderer<'m> {
    model: &'m Model,
    /// The path generated code reaches `deimos_avro::generated` by (`::deimos_avro`, `::deimos::avro`).
    runtime: String,
}

impl<'m> Renderer<'m> {
    pub(crate) fn new(model: &'m Model, runtime: &str) -> Renderer<'m> {
        Renderer {
            model,
            runtime: runtime.trim_end_matches("::").to_string(),
        }
    }

    fn rt(&self) -> String {
        format!("{}::generated", self.runtime)
    }

    /// The path from module `from` to the named type `full`.
    fn path(&self, from: &[&str], full: &str) -> String {
        let (ns, name) = split(full);
        let to = segments(ns);
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        let mut path = String::new();
        for _ in common..from.len() {
            path.push_str("super::");
        }
        for s in &to[common..] {
            path.push_str(&module_ident(s));
            path.push_str("::");
        }
        path.push_str(&ident(name).0);
        path
    }

    fn ty(&self, from: &[&str], ty: &Ty) -> String {
        let rt = self.rt();
        match ty {
            Ty::Bool => "bool".into(),
            Ty::Int => "i32".into(),
            Ty::Long => "i64".into(),
            Ty::Float => "f32".into(),
            Ty::Double => "f64".into(),
            Ty::Bytes => "::std::vec::Vec<u8>".into(),
            Ty::Str => "::std::string::String".into(),
            Ty::Named(full) | Ty::Union(full) => self.path(from, full),
            Ty::Array(t) => format!("::std::vec::Vec<{}>", self.ty(from, t)),
            Ty::Map(t) => format!(
                "::std::collections::BTreeMap<::std::string::String, {}>",
                self.ty(from, t)
            ),
            Ty::Option(t) => format!("::std::option::Option<{}>", self.ty(from, t)),
            Ty::Timestamp => format!("{rt}::chrono::DateTime<{rt}::chrono::Utc>"),
            Ty::LocalTimestamp => format!("{rt}::chrono::NaiveDateTime"),
            Ty::Date => format!("{rt}::chrono::NaiveDate"),
            Ty::Time => format!("{rt}::chrono::NaiveTime"),
            Ty::Uuid => format!("{rt}::uuid::Uuid"),
            Ty::Decimal => format!("{rt}::BigDecimal"),
            Ty::Boxed(t) => format!("::std::boxed::Box<{}>", self.ty(from, t)),
        }
    }

    /// A Rust expression for an Avro default of type `ty`, when the generator can write one.
    fn default_expr(&self, from: &[&str], ty: &Ty, value: &Json) -> Option<String> {
        Some(match (ty, value) {
            (Ty::Option(_), Json::Null) => "::std::option::Option::None".into(),
            (Ty::Option(inner), v) => format!("::std::option::Option::Some({})", self.default_expr(from, inner, v)?),
            (Ty::Bool, Json::Bool(b)) => b.to_string(),
            (Ty::Int, Json::Number(n)) => format!("{}i32", n.as_i64().and_then(|n| i32::try_from(n).ok())?),
            (Ty::Long, Json::Number(n)) => format!("{}i64", n.as_i64()?),
            (Ty::Float, Json::Number(n)) => {
                let v = n.as_f64()? as f32;
                v.is_finite().then(|| format!("{v:?}f32"))?
            }
            (Ty::Double, Json::Number(n)) => format!("{:?}f64", n.as_f64().filter(|v| v.is_finite())?),
            (Ty::Str, Json::String(s)) => format!("::std::string::String::from({s:?})"),
            (Ty::Bytes, Json::String(s)) => {
                // Avro writes bytes defaults as a string of one char per byte.
                let bytes: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                format!("::std::vec::Vec::from({:?})", bytes?)
            }
            (Ty::Array(_), Json::Array(items)) if items.is_empty() => "::std::vec::Vec::new()".into(),
            (Ty::Array(inner), Json::Array(items)) => {
                let items: Option<Vec<String>> = items.iter().map(|i| self.default_expr(from, inner, i)).collect();
                format!("::std::vec![{}]", items?.join(", "))
            }
            (Ty::Map(_), Json::Object(o)) if o.is_empty() => "::std::collections::BTreeMap::new()".into(),
            (Ty::Named(full), Json::String(symbol)) => match self.model.defs.get(full) {
                Some(Def::Enum { symbols, .. }) if symbols.contains(symbol) => {
                    format!("{}::{}", self.path(from, full), ident(symbol).0)
                }
                _ => return None,
            },
            _ => return None,
        })
    }

    /// The whole file.
    pub(crate) fn render(&self, header: &str) -> String {
        // Named types grouped by namespace, then nested as modules.
        let mut by_ns: BTreeMap<Vec<&str>, Vec<(&str, &Def)>> = BTreeMap::new();
        for (full, def) in &self.model.defs {
            let (ns, _) = split(full);
            by_ns.entry(segments(ns)).or_default().push((full.as_str(), def));
        }
        let mut out = String::new();
        for line in header.lines() {
            let _ = writeln!(out, "// {line}");
        }
        let mut open: Vec<&str> = Vec::new();
        for (ns, defs) in &by_ns {
            // Close the modules not shared with this namespace, open the new ones.
            let common = open.iter().zip(ns).take_while(|(a, b)| a == b).count();
            while open.len() > common {
                open.pop();
                let _ = writeln!(out, "{}}}", "    ".repeat(open.len()));
            }
            for s in &ns[common..] {
                let indent = "    ".repeat(open.len());
                let _ = writeln!(out, "{indent}{ALLOWS}");
                let _ = writeln!(out, "{indent}pub mod {} {{", module_ident(s));
                open.push(s);
            }
            for (full, def) in defs {
                self.def(&mut out, ns, full, def);
            }
        }
        while open.pop().is_some() {
            let _ = writeln!(out, "{}}}", "    ".repeat(open.len()));
        }
        out
    }

    fn derive(&self, out: &mut String, indent: &str, extra: &str) {
        let rt = self.rt();
        let _ = writeln!(
            out,
            "{indent}#[derive(Debug, Clone, PartialEq{extra}, {rt}::serde::Serialize, {rt}::serde::Deserialize)]"
        );
        let _ = writeln!(out, "{indent}#[serde(crate = \"{rt}::serde\")]");
    }

    fn def(&self, out: &mut String, ns: &[&str], full: &str, def: &Def) {
        let indent = "    ".repeat(ns.len());
        if ns.is_empty() {
            // Outside a generated module (no namespace): the modules' allows, on the item.
            let _ = writeln!(out, "{ALLOWS}");
        }
        let (_, simple) = split(full);
        let name = ident(simple).0;
        match def {
            Def::Record { doc, fields, schema } => {
                separated_doc(out, &indent, doc.as_deref());
                let _ = writeln!(out, "{indent}/// Avro record `{full}`.");
                self.derive(out, &indent, "");
                let _ = writeln!(out, "{indent}pub struct {name} {{");
                let defaults: Vec<(&Field, Option<String>)> = fields
                    .iter()
                    .map(|f| (f, f.default.as_ref().and_then(|d| self.default_expr(ns, &f.ty, d))))
                    .collect();
                for (f, default) in &defaults {
                    self.field(out, &indent, ns, &name, f, default.is_some());
                }
                let _ = writeln!(out, "{indent}}}");
                let has_defaults = defaults.iter().any(|(_, d)| d.is_some());
                if has_defaults {
                    let _ = writeln!(out, "{indent}impl {name} {{");
                    for (f, default) in &defaults {
                        if let Some(expr) = default {
                            let _ = writeln!(
                                out,
                                "{indent}    /// The Avro default of `{}`.\n{indent}    pub fn default_{}() -> {} {{\n{indent}        {expr}\n{indent}    }}",
                                f.name,
                                f.name,
                                self.ty(ns, &f.ty)
                            );
                        }
                    }
                    let _ = writeln!(out, "{indent}}}");
                }
                if !defaults.is_empty() && defaults.iter().all(|(_, d)| d.is_some()) {
                    let _ = writeln!(out, "{indent}impl ::std::default::Default for {name} {{");
                    let _ = writeln!(out, "{indent}    fn default() -> Self {{");
                    let _ = writeln!(out, "{indent}        {name} {{");
                    for (f, _) in &defaults {
                        let _ = writeln!(
                            out,
                            "{indent}            {}: {name}::default_{}(),",
                            ident(&f.name).0,
                            f.name
                        );
                    }
                    let _ = writeln!(out, "{indent}        }}\n{indent}    }}\n{indent}}}");
                }
                if !schema.is_empty() {
                    let _ = writeln!(out, "{indent}impl {}::AvroRecord for {name} {{", self.rt());
                    let _ = writeln!(out, "{indent}    const FULL_NAME: &'static str = {full:?};");
                    let _ = writeln!(out, "{indent}    const SCHEMA: &'static str = {schema:?};");
                    let _ = writeln!(out, "{indent}}}");
                }
            }
            Def::Enum { doc, symbols, default } => {
                separated_doc(out, &indent, doc.as_deref());
                let _ = writeln!(out, "{indent}/// Avro enum `{full}`.");
                self.derive(out, &indent, ", Copy, Eq, Hash, PartialOrd, Ord");
                let _ = writeln!(out, "{indent}pub enum {name} {{");
                for s in symbols {
                    let (variant, renamed) = ident(s);
                    if renamed {
                        let _ = writeln!(out, "{indent}    #[serde(rename = {s:?})]");
                    }
                    let _ = writeln!(out, "{indent}    {variant},");
                }
                let _ = writeln!(out, "{indent}}}");
                if let Some(d) = default.as_ref().filter(|d| symbols.contains(d)) {
                    let _ = writeln!(
                        out,
                        "{indent}/// The enum's default symbol, which readers use for symbols they do not know.\n{indent}impl ::std::default::Default for {name} {{\n{indent}    fn default() -> Self {{\n{indent}        {name}::{}\n{indent}    }}\n{indent}}}",
                        ident(d).0
                    );
                }
            }
            Def::Fixed { doc, size } => {
                separated_doc(out, &indent, doc.as_deref());
                let _ = writeln!(out, "{indent}/// Avro fixed `{full}`: {size} bytes.");
                let _ = writeln!(out, "{indent}pub type {name} = ::std::vec::Vec<u8>;");
            }
            Def::Union { doc, variants } => {
                let _ = writeln!(out, "{indent}/// {doc}");
                self.derive(out, &indent, "");
                let _ = writeln!(out, "{indent}pub enum {name} {{");
                for (variant, ty) in variants {
                    let _ = writeln!(out, "{indent}    {variant}({}),", self.ty(ns, ty));
                }
                let _ = writeln!(out, "{indent}}}");
            }
        }
    }

    fn field(&self, out: &mut String, indent: &str, ns: &[&str], owner: &str, f: &Field, has_default: bool) {
        doc_lines(out, &format!("{indent}    "), f.doc.as_deref());
        let (name, renamed) = ident(&f.name);
        if renamed {
            let _ = writeln!(out, "{indent}    #[serde(rename = {:?})]", f.name);
        }
        if has_default {
            let _ = writeln!(out, "{indent}    #[serde(default = \"{owner}::default_{}\")]", f.name);
        }
        let _ = writeln!(out, "{indent}    pub {name}: {},", self.ty(ns, &f.ty));
    }
}
