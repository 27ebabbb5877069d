//! Schema compatibility: can-read, mutual read (Deimos `schemas_compatible?`), and the schema registry's
//! compatibility levels checked against a list of earlier versions.

use std::fmt;
use std::str::FromStr;

use apache_avro::schema_compatibility::SchemaCompatibility;

use crate::AvroSchema;

/// Whether data written with `writer` can be read with `reader`. The error says why not.
pub fn can_read(writer: &AvroSchema, reader: &AvroSchema) -> Result<(), String> {
    SchemaCompatibility::can_read(writer.as_apache(), reader.as_apache())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Each schema can read data written with the other (full compatibility). This is what Deimos's
/// `schemas_compatible?` test helper answered.
pub fn mutual_read(a: &AvroSchema, b: &AvroSchema) -> bool {
    can_read(a, b).is_ok() && can_read(b, a).is_ok()
}

/// A schema registry compatibility level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    /// No check.
    None,
    /// The new schema can read data written with the latest version (the registry's default).
    #[default]
    Backward,
    /// The new schema can read data written with every earlier version.
    BackwardTransitive,
    /// The latest version can read data written with the new schema.
    Forward,
    /// Every earlier version can read data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
}

impl CompatibilityLevel {
    /// All levels, in the order the registry documents them.
    pub const ALL: [CompatibilityLevel; 7] = [
        CompatibilityLevel::None,
        CompatibilityLevel::Backward,
        CompatibilityLevel::BackwardTransitive,
        CompatibilityLevel::Forward,
        CompatibilityLevel::ForwardTransitive,
        CompatibilityLevel::Full,
        CompatibilityLevel::FullTransitive,
    ];

    /// The registry's name (`BACKWARD_TRANSITIVE`).
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.trim().to_ascii_uppercase();
        Self::ALL.into_iter().find(|l| l.as_str() == up).ok_or_else(|| {
            format!(
                "unknown compatibility level `{s}`; use one of {}",
                Self::ALL.map(|l| l.as_str()).join(", ")
            )
        })
    }
}

/// Checks `new` against the earlier versions of a subject (oldest first) under `level`: the latest one,
/// or every one for the transitive levels.
///
/// Returns every incompatibility found, each naming the version (1-based position in `earlier`) and the
/// direction that failed.
pub fn check_compatibility(
    level: CompatibilityLevel,
    new: &AvroSchema,
    earlier: &[AvroSchema],
) -> Result<(), Vec<String>> {
    let numbered: Vec<(u32, &AvroSchema)> = earlier
        .iter()
        .enumerate()
        .map(|(i, s)| (u32::try_from(i + 1).unwrap_or(u32::MAX), s))
        .collect();
    check_compatibility_versions(level, new, &numbered)
}

/// [`check_compatibility`] with the versions' own numbers, for a registry whose versions have gaps
/// (deleted versions): messages name those numbers.
pub fn check_compatibility_versions(
    level: CompatibilityLevel,
    new: &AvroSchema,
    earlier: &[(u32, &AvroSchema)],
) -> Result<(), Vec<String>> {
    if level == CompatibilityLevel::None || earlier.is_empty() {
        return Ok(());
    }
    let start = if level.transitive() { 0 } else { earlier.len() - 1 };
    let (backward, forward) = match level {
        CompatibilityLevel::Backward | CompatibilityLevel::BackwardTransitive => (true, false),
        CompatibilityLevel::Forward | CompatibilityLevel::ForwardTransitive => (false, true),
        _ => (true, true),
    };
    let mut problems = Vec::new();
    for (version, old) in &earlier[start..] {
        if backward && let Err(e) = can_read(old, new) {
            problems.push(format!(
                "the new schema cannot read data written with version {version} ({level}): {e}"
            ));
        }
        if forward && let Err(e) = can_read(new, old) {
            problems.push(format!(
                "version {version} cannot read data written with the new schema ({level}): {e}"
            ));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}
