//! `deimos schema check` and `deimos schema register`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use deimos_avro::{AvroSchema, CompatibilityLevel, SchemaStore, full_name};
use deimos_config::Config;
use deimos_keys::KeySpec;
use deimos_registry::{RegistryError, SchemaRegistry, SubjectNameStrategy};

/// A local schema and the subject it goes under.
struct Pair {
    subject: String,
    schema: AvroSchema,
}

/// The pairs to work on: the given `SUBJECT=name` ones, else the value and key subjects of every producer.
fn pairs(config: &Config, store: &SchemaStore, given: &[String]) -> Result<Vec<Pair>> {
    let mut out = Vec::new();
    for pair in given {
        let Some((subject, name)) = pair.split_once('=') else {
            bail!("--subject `{pair}` is not SUBJECT=full.schema.Name (for example dev.widgets-value=com.acme.Widget)");
        };
        let schema = store
            .get(name.trim())
            .with_context(|| format!("--subject {pair}: loading the schema"))?;
        out.push(Pair {
            subject: subject.trim().to_string(),
            schema,
        });
    }
    if !given.is_empty() {
        return Ok(out);
    }
    let prefix = config.producers.topic_prefix.clone().unwrap_or_default();
    let subjects = SubjectNameStrategy::default();
    for p in &config.producer_list {
        let (Some(topic), Some(schema)) = (&p.topic, &p.schema) else {
            bail!("producer `{}` needs a topic and a schema to name its subjects", p.name);
        };
        let name = full_name(
            schema,
            p.namespace.as_deref().or(config.producers.schema_namespace.as_deref()),
        );
        let value = store
            .get(&name)
            .with_context(|| format!("producer `{}`: loading its schema", p.name))?;
        let topic = format!("{prefix}{topic}");
        if let Some(key_config) = &p.key_config {
            let key_config = key_config.to_key_config(&format!("producer `{}`: key_config", p.name))?;
            let spec = KeySpec::build(key_config, &value, store)
                .with_context(|| format!("producer `{}`: its key schema", p.name))?;
            if let Some(key) = spec.key_schema() {
                out.push(Pair {
                    subject: subjects.subject(&topic, key, true),
                    schema: key.clone(),
                });
            }
        }
        out.push(Pair {
            subject: subjects.subject(&topic, &value, false),
            schema: value,
        });
    }
    if out.is_empty() {
        bail!(
            "nothing to do: the configuration declares no [[producer]]; pass --config or --subject SUBJECT=full.schema.Name"
        );
    }
    Ok(out)
}

pub(crate) async fn check(config: &Config, mode: Option<CompatibilityLevel>, given: &[String]) -> Result<ExitCode> {
    let store = config.schema_store()?;
    let registry = config.registry()?;
    let mut failed = 0;
    for pair in pairs(config, &store, given)? {
        let earlier = match versions(registry.as_ref(), &pair.subject).await? {
            Some(earlier) => earlier,
            None => {
                println!(
                    "new       {:<40} {} (not registered yet)",
                    pair.subject,
                    label(&pair.schema)
                );
                continue;
            }
        };
        let level = match mode {
            Some(level) => level,
            None => registry.compatibility_level(Some(&pair.subject)).await?,
        };
        let numbered: Vec<(u32, &AvroSchema)> = earlier.iter().map(|(v, s)| (*v, s)).collect();
        match deimos_avro::compat::check_compatibility_versions(level, &pair.schema, &numbered) {
            Ok(()) => println!(
                "ok        {:<40} {} ({} version{}, {})",
                pair.subject,
                label(&pair.schema),
                earlier.len(),
                if earlier.len() == 1 { "" } else { "s" },
                level.as_str()
            ),
            Err(problems) => {
                failed += 1;
                println!(
                    "FAILED    {:<40} {} is not {} compatible:",
                    pair.subject,
                    label(&pair.schema),
                    level.as_str()
                );
                for problem in problems {
                    println!("            - {problem}");
                }
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "{failed} schema{} incompatible",
            if failed == 1 { " is" } else { "s are" }
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The registered versions of a subject with their schemas, oldest first; `None` if the subject is new.
async fn versions(registry: &dyn SchemaRegistry, subject: &str) -> Result<Option<Vec<(u32, AvroSchema)>>> {
    let numbers = match registry.versions(subject).await {
        Ok(numbers) if !numbers.is_empty() => numbers,
        Ok(_) | Err(RegistryError::SubjectNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("listing the versions of {subject}")),
    };
    let mut out = Vec::new();
    for n in numbers {
        let registered = registry
            .version(subject, n)
            .await
            .with_context(|| format!("reading version {n} of {subject}"))?;
        out.push((n, registered.schema));
    }
    Ok(Some(out))
}

pub(crate) async fn register(config: &Config, given: &[String]) -> Result<ExitCode> {
    let store = config.schema_store()?;
    let registry = config.registry()?;
    let mut failed = 0;
    for pair in pairs(config, &store, given)? {
        match registry.register(&pair.subject, &pair.schema).await {
            Ok(id) => println!("registered {:<40} {} (id {id})", pair.subject, label(&pair.schema)),
            Err(e) => {
                failed += 1;
                println!("FAILED     {:<40} {}: {e}", pair.subject, label(&pair.schema));
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "{failed} schema{} not registered",
            if failed == 1 { " was" } else { "s were" }
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn label(schema: &AvroSchema) -> &str {
    schema.name().unwrap_or("(unnamed schema)")
}
