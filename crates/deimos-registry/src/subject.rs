//! Subject name strategies: which registry subject a topic's key or value schema is registered under.

use std::fmt;
use std::str::FromStr;

use deimos_avro::AvroSchema;

use crate::RegistryError;

/// How the subject of a schema is named, as Confluent's serializers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SubjectNameStrategy {
    /// `<topic>-value` / `<topic>-key`: Confluent's `TopicNameStrategy` and what Deimos does.
    #[default]
    Topic,
    /// `<record full name>` (`com.acme.Widget`), for key and value alike: `RecordNameStrategy`.
    Record,
    /// `<topic>-<record full name>`, for key and value alike: `TopicRecordNameStrategy`.
    TopicRecord,
}

impl SubjectNameStrategy {
    /// The subject for a schema written to `topic` (which already carries any topic prefix).
    ///
    /// For a schema without a name (a primitive, an array, a union) the record strategies use the type
    /// name (`string`, `array`, `union`), as Confluent's do.
    pub fn subject(&self, topic: &str, schema: &AvroSchema, is_key: bool) -> String {
        match self {
            SubjectNameStrategy::Topic => format!("{topic}-{}", if is_key { "key" } else { "value" }),
            SubjectNameStrategy::Record => record_name(schema),
            SubjectNameStrategy::TopicRecord => format!("{topic}-{}", record_name(schema)),
        }
    }

    /// The strategy's short name (`topic`, `record`, `topic_record`).
    pub fn as_str(&self) -> &'static str {
        match self {
            SubjectNameStrategy::Topic => "topic",
            SubjectNameStrategy::Record => "record",
            SubjectNameStrategy::TopicRecord => "topic_record",
        }
    }
}

fn record_name(schema: &AvroSchema) -> String {
    if let Some(name) = schema.name() {
        return name.to_string();
    }
    match serde_json::from_str::<serde_json::Value>(schema.canonical_json()) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Array(_)) => "union".to_string(),
        Ok(serde_json::Value::Object(o)) => o.get("type").and_then(|t| t.as_str()).unwrap_or("record").to_string(),
        _ => "record".to_string(),
    }
}

impl fmt::Display for SubjectNameStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SubjectNameStrategy {
    type Err = RegistryError;
    /// Accepts `topic`, `record`, `topic_record` (any case, `-` or `_`) and Confluent's class names
    /// (`io.confluent.kafka.serializers.subject.TopicRecordNameStrategy`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let short = s
            .trim()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
            .replace(['-', '_'], "");
        match short.as_str() {
            "topic" | "topicnamestrategy" => Ok(SubjectNameStrategy::Topic),
            "record" | "recordnamestrategy" => Ok(SubjectNameStrategy::Record),
            "topicrecord" | "topicrecordnamestrategy" => Ok(SubjectNameStrategy::TopicRecord),
            _ => Err(RegistryError::config(format!(
                "unknown subject name strategy `{s}`; use topic, record or topic_record"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names() {
        let rec = AvroSchema::parse(r#"{"type":"record","name":"Widget","namespace":"com.acme","fields":[]}"#).unwrap();
        let prim = AvroSchema::parse(r#""string""#).unwrap();
        assert_eq!(SubjectNameStrategy::Topic.subject("t", &rec, false), "t-value");
        assert_eq!(SubjectNameStrategy::Topic.subject("t", &rec, true), "t-key");
        assert_eq!(SubjectNameStrategy::Record.subject("t", &rec, true), "com.acme.Widget");
        assert_eq!(
            SubjectNameStrategy::TopicRecord.subject("t", &rec, false),
            "t-com.acme.Widget"
        );
        assert_eq!(SubjectNameStrategy::Record.subject("t", &prim, true), "string");
        assert_eq!(
            "io.confluent.kafka.serializers.subject.TopicRecordNameStrategy"
                .parse::<SubjectNameStrategy>()
                .unwrap(),
            SubjectNameStrategy::TopicRecord
        );
        assert_eq!(
            "topic_record".parse::<SubjectNameStrategy>().unwrap(),
            SubjectNameStrategy::TopicRecord
        );
        assert!("nope".parse::<SubjectNameStrategy>().is_err());
    }
}
