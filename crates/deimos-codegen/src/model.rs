//! The named types of a set of schemas, as the generator sees them: records, enums, fixed types and the
//! enums made for unions, each with Rust-level field types.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use crate::CodegenError;

/// A Rust-level type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ty {
    Bool,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    /// A record, enum or fixed type by full name.
    Named(String),
    Array(Box<Ty>),
    Map(Box<Ty>),
    /// A union with `null` and one other branch, or `null` and a union enum.
    Option(Box<Ty>),
    /// A generated union enum, by full name.
    Union(String),
    /// `timestamp-millis` / `-micros` / `-nanos`.
    Timestamp,
    /// `local-timestamp-*`.
    LocalTimestamp,
    /// `date`.
    Date,
    /// `time-millis` / `time-micros`.
    Time,
    /// `uuid`.
    Uuid,
    /// `decimal`.
    Decimal,
    /// A record that refers to itself (directly or through records it contains): boxed, so the struct has a
    /// size.
    Boxed(Box<Ty>),
}

/// A record field.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) doc: Option<String>,
    pub(crate) ty: Ty,
    pub(crate) default: Option<Json>,
}

/// A named type's definition.
#[derive(Debug, Clone)]
pub(crate) enum Def {
    Record {
        doc: Option<String>,
        fields: Vec<Field>,
        /// The record's self-contained schema, for `AvroRecord::SCHEMA`.
        schema: String,
    },
    Enum {
        doc: Option<String>,
        symbols: Vec<String>,
        default: Option<String>,
    },
    Fixed {
        doc: Option<String>,
        size: u64,
    },
    /// A union of two or more non-null branches: `(variant name, type)`.
    Union {
        doc: String,
        variants: Vec<(String, Ty)>,
    },
}

/// Every named type, by full name (sorted, so the output does not depend on file order).
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) defs: BTreeMap<String, Def>,
    /// The records being defined, outermost first: a reference to one of them is recursive.
    defining: Vec<String>,
}

fn unsupported(schema: &str, message: impl Into<String>) -> CodegenError {
    CodegenError::Unsupported {
        schema: schema.to_string(),
        message: message.into(),
    }
}

fn clash(full_name: &str, kind: &str) -> CodegenError {
    unsupported(
        full_name,
        format!(
            "a {kind} has the name of another type (perhaps the enum generated for a union field `<Record><Field>`); rename one of them"
        ),
    )
}

/// The full name of `name` declared (or referred to) in namespace `ns`.
fn full(name: &str, explicit_ns: Option<&str>, ns: &str) -> String {
    if name.contains('.') {
        return name.to_string();
    }
    match explicit_ns.unwrap_or(ns) {
        "" => name.to_string(),
        ns => format!("{ns}.{name}"),
    }
}

fn doc(o: &Map<String, Json>) -> Option<String> {
    o.get("doc").and_then(Json::as_str).map(str::to_string)
}

/// `name` with its first character upper-cased (`order_id` → `Order_id`), as the decoder names union
/// variants.
pub(crate) fn title(name: &str) -> String {
    let mut c = name.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `snake_case` or `camelCase` as `PascalCase` (`widget_status` → `WidgetStatus`).
fn pascal(name: &str) -> String {
    name.split('_').filter(|p| !p.is_empty()).map(title).collect()
}

impl Model {
    /// Adds the named types of one self-contained schema (JSON text), the record itself first.
    pub(crate) fn add_schema(&mut self, json: &str) -> Result<(), CodegenError> {
        let value: Json = serde_json::from_str(json).map_err(|e| unsupported("<schema>", e.to_string()))?;
        self.ty(&value, "", None)?;
        Ok(())
    }

    /// The type of schema `v` in namespace `ns`; `owner` names the record field being typed (for union enums).
    fn ty(&mut self, v: &Json, ns: &str, owner: Option<(&str, &str)>) -> Result<Ty, CodegenError> {
        match v {
            Json::String(name) => self.named_or_primitive(name, ns),
            Json::Array(branches) => self.union(branches, ns, owner),
            Json::Object(o) => {
                let kind = o
                    .get("type")
                    .ok_or_else(|| unsupported(ns, "a schema object without `type`"))?;
                let Some(kind) = kind.as_str() else {
                    // {"type": {...}} or {"type": [...]}: the wrapped schema.
                    return self.ty(kind, ns, owner);
                };
                match kind {
                    "record" | "error" => self.record(o, ns),
                    "enum" => self.enumeration(o, ns),
                    "fixed" => self.fixed(o, ns),
                    "array" => {
                        let items = o
                            .get("items")
                            .ok_or_else(|| unsupported(ns, "an array without `items`"))?;
                        Ok(Ty::Array(Box::new(self.ty(items, ns, owner)?)))
                    }
                    "map" => {
                        let values = o
                            .get("values")
                            .ok_or_else(|| unsupported(ns, "a map without `values`"))?;
                        Ok(Ty::Map(Box::new(self.ty(values, ns, owner)?)))
                    }
                    primitive => {
                        let base = self.named_or_primitive(primitive, ns)?;
                        Ok(logical(o.get("logicalType").and_then(Json::as_str), base))
                    }
                }
            }
            other => Err(unsupported(ns, format!("`{other}` is not a schema"))),
        }
    }

    fn named_or_primitive(&mut self, name: &str, ns: &str) -> Result<Ty, CodegenError> {
        Ok(match name {
            "null" => {
                return Err(unsupported(
                    ns,
                    "`null` outside a union has no Rust type; use a union with null",
                ));
            }
            "boolean" => Ty::Bool,
            "int" => Ty::Int,
            "long" => Ty::Long,
            "float" => Ty::Float,
            "double" => Ty::Double,
            "bytes" => Ty::Bytes,
            "string" => Ty::Str,
            name => {
                let full = full(name, None, ns);
                if !self.defs.contains_key(&full) {
                    // A self-contained schema defines every type before it is referred to.
                    return Err(unsupported(&full, "referred to before it is defined"));
                }
                if self.defining.contains(&full) {
                    return Ok(Ty::Boxed(Box::new(Ty::Named(full))));
                }
                Ty::Named(full)
            }
        })
    }

    fn record(&mut self, o: &Map<String, Json>, ns: &str) -> Result<Ty, CodegenError> {
        let name = o
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| unsupported(ns, "a record without a name"))?;
        let full_name = full(name, o.get("namespace").and_then(Json::as_str), ns);
        match self.defs.get(&full_name) {
            Some(Def::Record { .. }) => return Ok(Ty::Named(full_name)),
            Some(_) => return Err(clash(&full_name, "record")),
            None => {}
        }
        let own_ns = full_name.rsplit_once('.').map_or("", |(n, _)| n).to_string();
        let simple = full_name.rsplit('.').next().unwrap_or(&full_name).to_string();
        // Reserve the name first: a record may refer to itself.
        self.defs.insert(
            full_name.clone(),
            Def::Record {
                doc: None,
                fields: Vec::new(),
                schema: String::new(),
            },
        );
        self.defining.push(full_name.clone());
        let fields = self.fields(o, &full_name, &own_ns, &simple);
        self.defining.pop();
        let fields = fields?;
        self.defs.insert(
            full_name.clone(),
            Def::Record {
                doc: doc(o),
                fields,
                schema: String::new(),
            },
        );
        Ok(Ty::Named(full_name))
    }

    fn fields(
        &mut self,
        o: &Map<String, Json>,
        full_name: &str,
        own_ns: &str,
        simple: &str,
    ) -> Result<Vec<Field>, CodegenError> {
        let mut fields = Vec::new();
        for f in o.get("fields").and_then(Json::as_array).into_iter().flatten() {
            let Some(f) = f.as_object() else {
                return Err(unsupported(full_name, "a field that is not an object"));
            };
            let fname = f
                .get("name")
                .and_then(Json::as_str)
                .ok_or_else(|| unsupported(full_name, "a field without a name"))?;
            let schema = f
                .get("type")
                .ok_or_else(|| unsupported(full_name, format!("field `{fname}` has no type")))?;
            let ty = self.ty(schema, own_ns, Some((simple, fname)))?;
            fields.push(Field {
                name: fname.to_string(),
                doc: doc(f),
                ty,
                default: f.get("default").cloned(),
            });
        }
        Ok(fields)
    }

    fn enumeration(&mut self, o: &Map<String, Json>, ns: &str) -> Result<Ty, CodegenError> {
        let name = o
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| unsupported(ns, "an enum without a name"))?;
        let full_name = full(name, o.get("namespace").and_then(Json::as_str), ns);
        if matches!(self.defs.get(&full_name), Some(d) if !matches!(d, Def::Enum { .. })) {
            return Err(clash(&full_name, "enum"));
        }
        if !self.defs.contains_key(&full_name) {
            let symbols = o
                .get("symbols")
                .and_then(Json::as_array)
                .map(|s| s.iter().filter_map(Json::as_str).map(str::to_string).collect())
                .unwrap_or_default();
            self.defs.insert(
                full_name.clone(),
                Def::Enum {
                    doc: doc(o),
                    symbols,
                    default: o.get("default").and_then(Json::as_str).map(str::to_string),
                },
            );
        }
        Ok(Ty::Named(full_name))
    }

    fn fixed(&mut self, o: &Map<String, Json>, ns: &str) -> Result<Ty, CodegenError> {
        let name = o
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| unsupported(ns, "a fixed type without a name"))?;
        let full_name = full(name, o.get("namespace").and_then(Json::as_str), ns);
        if matches!(self.defs.get(&full_name), Some(d) if !matches!(d, Def::Fixed { .. })) {
            return Err(clash(&full_name, "fixed type"));
        }
        if !self.defs.contains_key(&full_name) {
            let size = o.get("size").and_then(Json::as_u64).unwrap_or(0);
            self.defs.insert(full_name.clone(), Def::Fixed { doc: doc(o), size });
        }
        // A fixed type with a logical type is that logical type (decimal, uuid); duration stays bytes.
        Ok(match o.get("logicalType").and_then(Json::as_str) {
            Some("decimal") => Ty::Decimal,
            Some("uuid") => Ty::Uuid,
            _ => Ty::Named(full_name),
        })
    }

    fn union(&mut self, branches: &[Json], ns: &str, owner: Option<(&str, &str)>) -> Result<Ty, CodegenError> {
        let nullable = branches.iter().any(|b| b.as_str() == Some("null"));
        let mut others = Vec::new();
        for b in branches.iter().filter(|b| b.as_str() != Some("null")) {
            let ty = self.ty(b, ns, owner)?;
            others.push((b, ty));
        }
        let inner = match others.len() {
            0 => return Err(unsupported(ns, "a union of null alone has no Rust type")),
            1 => others.pop().map(|(_, t)| t).unwrap_or(Ty::Bool),
            _ => {
                let Some((record, field)) = owner else {
                    return Err(unsupported(
                        ns,
                        "a union of several types outside a record field cannot be named; wrap it in a record",
                    ));
                };
                let full_name = match ns {
                    "" => format!("{record}{}", pascal(field)),
                    ns => format!("{ns}.{record}{}", pascal(field)),
                };
                if self.defs.contains_key(&full_name) {
                    return Err(unsupported(
                        &full_name,
                        "the enum generated for this union has the name of another type; rename one of them",
                    ));
                }
                let mut variants: Vec<(String, Ty)> = Vec::new();
                for (_, ty) in others {
                    if matches!(
                        ty,
                        Ty::Timestamp | Ty::LocalTimestamp | Ty::Date | Ty::Time | Ty::Uuid | Ty::Decimal
                    ) {
                        return Err(unsupported(
                            &full_name,
                            "a union of several types with a logical-type branch (timestamp, date, time, uuid, \
                             decimal) has no generated form yet; use the underlying type in the union, or a record \
                             per alternative",
                        ));
                    }
                    let variant = self.variant_name(&ty);
                    if variants.iter().any(|(v, _)| *v == variant) {
                        return Err(unsupported(
                            &full_name,
                            format!("two branches would both be the variant `{variant}`"),
                        ));
                    }
                    variants.push((variant, ty));
                }
                self.defs.insert(
                    full_name.clone(),
                    Def::Union {
                        doc: format!("The union of field `{field}` of `{record}`."),
                        variants,
                    },
                );
                Ty::Union(full_name)
            }
        };
        Ok(if nullable { Ty::Option(Box::new(inner)) } else { inner })
    }

    /// The variant name the codec uses for a union branch: a named type's simple name (first letter upper),
    /// else the Avro type's name (`Long`, `String`, `Array`, `Map`).
    fn variant_name(&self, ty: &Ty) -> String {
        match ty {
            Ty::Named(full) => title(full.rsplit('.').next().unwrap_or(full)),
            Ty::Bool => "Boolean".into(),
            Ty::Int | Ty::Date | Ty::Time => "Int".into(),
            Ty::Long | Ty::Timestamp | Ty::LocalTimestamp => "Long".into(),
            Ty::Float => "Float".into(),
            Ty::Double => "Double".into(),
            Ty::Bytes | Ty::Decimal => "Bytes".into(),
            Ty::Str | Ty::Uuid => "String".into(),
            Ty::Array(_) => "Array".into(),
            Ty::Map(_) => "Map".into(),
            Ty::Option(_) | Ty::Union(_) => "Union".into(),
            Ty::Boxed(inner) => self.variant_name(inner),
        }
    }

    /// Records each record's self-contained schema (for `AvroRecord::SCHEMA`).
    pub(crate) fn set_schema(&mut self, full_name: &str, json: String) {
        if let Some(Def::Record { schema, .. }) = self.defs.get_mut(full_name) {
            *schema = json;
        }
    }
}

/// A primitive with a logical type as the Rust type the codec reads and writes for it.
fn logical(logical_type: Option<&str>, base: Ty) -> Ty {
    match (logical_type, &base) {
        (Some("timestamp-millis" | "timestamp-micros" | "timestamp-nanos"), Ty::Long) => Ty::Timestamp,
        (Some("local-timestamp-millis" | "local-timestamp-micros" | "local-timestamp-nanos"), Ty::Long) => {
            Ty::LocalTimestamp
        }
        (Some("date"), Ty::Int) => Ty::Date,
        (Some("time-millis"), Ty::Int) | (Some("time-micros"), Ty::Long) => Ty::Time,
        (Some("uuid"), Ty::Str) => Ty::Uuid,
        (Some("decimal"), Ty::Bytes) => Ty::Decimal,
        _ => base,
    }
}
