//! Environment overrides: `DEIMOS_<SECTION>__<KEY>[__<KEY>…]=value` replaces or adds one setting of the file.
//!
//! - Names match the file's keys case-insensitively: `DEIMOS_KAFKA__BROKERS` sets `kafka.brokers`.
//! - In a `[[producer]]` / `[[consumer]]` list, a segment picks the entry by its `name`:
//!   `DEIMOS_CONSUMER__WIDGETCONSUMER__GROUP_ID` sets `group_id` of the consumer named `WidgetConsumer`.
//! - Under a `settings` table (librdkafka pass-through), `_` stands for `.`:
//!   `DEIMOS_KAFKA__SETTINGS__SECURITY_PROTOCOL=ssl` sets `kafka.settings."security.protocol"`.
//! - Text settings (librdkafka `settings`, names, topics, URLs, passwords) take the value as text. Others take
//!   the type of the setting they replace; a new one is read as a TOML value (`true`, `500`, `["1s", "60s"]`)
//!   and otherwise as text.
//! - Variables without `__` (`DEIMOS_CONFIG`, `DEIMOS_TEST_PG`) are not overrides and are left alone.

use deimos_core::redact;
use toml::{Table, Value};

use crate::ConfigError;

/// Settings whose values are text: an override of one is never read as a number or a boolean.
const STRING_KEYS: &[&str] = &[
    "brokers",
    "client_id",
    "registry_url",
    "user",
    "password",
    "topic_prefix",
    "schema_namespace",
    "delivery",
    "partitioner",
    "payload_log",
    "name",
    "topic",
    "group_id",
    "schema",
    "namespace",
    "field",
    "error_policy",
    "ordering",
    "dead_letter_topic",
    "database_url",
];

const SECTIONS: &[&str] = &[
    "kafka",
    "schema",
    "producers",
    "producer",
    "consumers",
    "consumer",
    "outbox",
];

/// Applies every override among `vars` to `root`, in name order (so the result does not depend on the order
/// the environment lists them in).
pub(crate) fn apply(root: &mut Table, vars: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
    let mut overrides: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(crate::ENV_PREFIX) && name.contains("__"))
        .collect();
    overrides.sort();
    for (name, value) in overrides {
        set(root, &name, &value).map_err(|message| {
            // The message may quote the value: not that of a secret setting.
            let setting = name.rsplit("__").next().unwrap_or_default();
            let secrets = redact::is_secret(setting).then_some(value.as_str());
            ConfigError::Env {
                var: name.clone(),
                message: redact::text(&redact::scrub(&message, secrets)).into_owned(),
            }
        })?;
    }
    Ok(())
}

fn set(root: &mut Table, name: &str, value: &str) -> Result<(), String> {
    let path: Vec<&str> = name[crate::ENV_PREFIX.len()..].split("__").collect();
    let (section, rest) = path.split_first().ok_or("names no setting")?;
    let section = section.to_ascii_lowercase();
    if !SECTIONS.contains(&section.as_str()) {
        return Err(format!(
            "`{section}` is not a section of the configuration; sections are {}",
            SECTIONS.join(", ")
        ));
    }
    if rest.is_empty() || rest.iter().any(|s| s.is_empty()) {
        return Err("names no setting: write DEIMOS_<SECTION>__<KEY>, such as DEIMOS_KAFKA__BROKERS".into());
    }
    let list = matches!(section.as_str(), "producer" | "consumer");
    let mut node = root.entry(section.clone()).or_insert_with(|| {
        if list {
            Value::Array(Vec::new())
        } else {
            Value::Table(Table::new())
        }
    });
    let mut in_settings = false;
    for (i, segment) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        node = match node {
            Value::Array(entries) => {
                let position = entries.iter().position(|entry| {
                    entry
                        .get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(segment))
                });
                match position {
                    Some(_) if last => {
                        return Err(format!(
                            "names the [[{section}]] `{segment}` itself, not one of its settings"
                        ));
                    }
                    Some(index) => &mut entries[index],
                    None => {
                        let known: Vec<&str> = entries
                            .iter()
                            .filter_map(|e| e.get("name").and_then(Value::as_str))
                            .collect();
                        return Err(format!(
                            "no [[{section}]] named `{segment}` (configured: {}); overrides can change entries of the file, not add them",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ));
                    }
                }
            }
            Value::Table(table) => {
                let key = table
                    .keys()
                    .find(|k| {
                        k.eq_ignore_ascii_case(segment) || (in_settings && k.eq_ignore_ascii_case(&dotted(segment)))
                    })
                    .cloned()
                    .unwrap_or_else(|| {
                        if in_settings {
                            dotted(segment)
                        } else {
                            segment.to_ascii_lowercase()
                        }
                    });
                let under_settings = in_settings;
                in_settings = key == "settings";
                if last {
                    // librdkafka settings and settings that are text in the file format are strings, whatever
                    // the value looks like (`linger.ms=5`, a numeric password).
                    let text = under_settings || STRING_KEYS.contains(&key.as_str());
                    let typed = if text {
                        Value::String(value.to_string())
                    } else {
                        typed_like(table.get(&key), value)?
                    };
                    table.insert(key, typed);
                    return Ok(());
                }
                table.entry(key).or_insert_with(|| Value::Table(Table::new()))
            }
            _ => {
                return Err(format!(
                    "`{segment}` is under a setting that is a single value, not a table"
                ));
            }
        };
    }
    Ok(())
}

fn dotted(segment: &str) -> String {
    segment.to_ascii_lowercase().replace('_', ".")
}

/// `value` as the type of the setting it replaces, or guessed for a new one.
fn typed_like(existing: Option<&Value>, value: &str) -> Result<Value, String> {
    let parsed = || {
        toml::from_str::<Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
    };
    match existing {
        None => Ok(match parsed() {
            Some(v) if !v.is_table() => v,
            _ => Value::String(value.to_string()),
        }),
        Some(Value::String(_)) => Ok(Value::String(value.to_string())),
        Some(Value::Integer(_)) => value
            .trim()
            .parse()
            .map(Value::Integer)
            .map_err(|_| format!("`{value}` is not an integer, as the setting it overrides")),
        Some(Value::Float(_)) => value
            .trim()
            .parse()
            .map(Value::Float)
            .map_err(|_| format!("`{value}` is not a number, as the setting it overrides")),
        Some(Value::Boolean(_)) => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" => Ok(Value::Boolean(false)),
            _ => Err(format!("`{value}` is not true or false, as the setting it overrides")),
        },
        Some(Value::Table(_)) => Err("names a table; name one of its settings".into()),
        Some(_) => parsed()
            .ok_or_else(|| format!("`{value}` is not a TOML value of the setting's type (for a list: [\"a\", \"b\"])")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn with(file: &str, vars: &[(&str, &str)]) -> Result<Table, ConfigError> {
        let mut root: Table = toml::from_str(file).unwrap();
        apply(&mut root, vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))?;
        Ok(root)
    }

    #[test]
    fn overrides_keep_the_type_and_reach_named_entries() {
        let root = with(
            "[kafka]\nbrokers = \"a:9092\"\n[outbox]\nbatch_size = 10\n[[consumer]]\nname = \"WidgetConsumer\"\ntopic = \"123\"\n",
            &[
                ("DEIMOS_KAFKA__BROKERS", "b:9092"),
                ("DEIMOS_OUTBOX__BATCH_SIZE", "500"),
                ("DEIMOS_CONSUMER__widgetconsumer__TOPIC", "456"),
                ("DEIMOS_CONSUMER__WIDGETCONSUMER__MAX_ATTEMPTS", "3"),
                ("DEIMOS_KAFKA__SETTINGS__SECURITY_PROTOCOL", "ssl"),
                ("DEIMOS_KAFKA__SETTINGS__LINGER_MS", "5"),
                ("DEIMOS_SCHEMA__PASSWORD", "123456"),
                ("DEIMOS_CONFIG", "ignored.toml"),
            ],
        )
        .unwrap();
        assert_eq!(root["kafka"]["brokers"].as_str(), Some("b:9092"));
        assert_eq!(root["kafka"]["settings"]["security.protocol"].as_str(), Some("ssl"));
        assert_eq!(
            root["kafka"]["settings"]["linger.ms"].as_str(),
            Some("5"),
            "settings are text"
        );
        assert_eq!(
            root["schema"]["password"].as_str(),
            Some("123456"),
            "a numeric password stays text"
        );
        assert_eq!(root["outbox"]["batch_size"].as_integer(), Some(500));
        assert_eq!(root["consumer"][0]["topic"].as_str(), Some("456"));
        assert_eq!(root["consumer"][0]["max_attempts"].as_integer(), Some(3));
    }

    #[test]
    fn bad_overrides_say_what_is_wrong() {
        let err = with("[outbox]\nbatch_size = 10\n", &[("DEIMOS_OUTBOX__BATCH_SIZE", "many")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("DEIMOS_OUTBOX__BATCH_SIZE: `many` is not an integer"),
            "{err}"
        );
        let err = with("", &[("DEIMOS_KAFKAS__BROKERS", "x")]).unwrap_err();
        assert!(err.to_string().contains("`kafkas` is not a section"), "{err}");
        let err = with("", &[("DEIMOS_PRODUCER__Nope__TOPIC", "x")]).unwrap_err();
        assert!(err.to_string().contains("no [[producer]] named `Nope`"), "{err}");
    }
}
