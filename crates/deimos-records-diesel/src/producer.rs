//! Record producers (Deimos's `ActiveRecordProducer`): messages made from records.

use std::fmt;
use std::sync::Arc;

use deimos_outbox_diesel::{Outbox, OutboxReport};
use deimos_producer::{Producer, PublishOptions, PublishReport};
use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::error::RecordError;
use crate::ops::{KeyValues, select_by_keys};
use crate::sql::RecordConnection;
use crate::table::RecordTable;
use crate::value::{for_field, time_unit, to_sql};

type PayloadHook = Arc<dyn Fn(&mut Map<String, Json>, &Map<String, Json>) + Send + Sync>;
type DeletionHook = Arc<dyn Fn(&Map<String, Json>) -> Json + Send + Sync>;

/// A producer bound to a table: the payload of a record is its attributes that are fields of the schema (plus
/// `payload_key`), with timestamps turned into the numbers `int`/`long` fields hold, then whatever the
/// [`payload`](RecordProducerBuilder::payload) hook adds or changes.
///
/// Records are anything that serializes to a JSON object: a diesel model (`#[derive(Queryable, Serialize)]`), or
/// a `serde_json::Map` of attributes. Records that lack some of the table's columns (attribute maps) are
/// refetched by primary key before the payload is made, when the producer [refetches](RecordProducerBuilder::refetch)
/// (the default, as Deimos) and the call has a connection.
#[derive(Clone)]
pub struct RecordProducer {
    producer: Producer,
    table: RecordTable,
    fields: Arc<[(String, Json)]>,
    refetch: bool,
    extra_watched: Vec<String>,
    payload_hook: Option<PayloadHook>,
    deletion_hook: Option<DeletionHook>,
}

impl fmt::Debug for RecordProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordProducer")
            .field("producer", &self.producer.name())
            .field("table", &self.table.name())
            .field("refetch", &self.refetch)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RecordProducer`].
pub struct RecordProducerBuilder {
    inner: RecordProducer,
}

impl fmt::Debug for RecordProducerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl RecordProducerBuilder {
    /// Whether attribute maps that lack columns are refetched by primary key (default: yes, as Deimos's
    /// `record_class(klass, refetch: true)`).
    pub fn refetch(mut self, yes: bool) -> Self {
        self.inner.refetch = yes;
        self
    }

    /// Attributes that are not schema fields but whose change should still publish an update (Deimos's
    /// `watched_attributes`, which start as the schema's fields).
    pub fn watch<S: Into<String>>(mut self, attributes: impl IntoIterator<Item = S>) -> Self {
        self.inner.extra_watched.extend(attributes.into_iter().map(Into::into));
        self
    }

    /// Adds or changes payload fields (Deimos's `generate_payload` override): called with the payload made so
    /// far and every attribute of the record.
    pub fn payload(
        mut self,
        hook: impl Fn(&mut Map<String, Json>, &Map<String, Json>) + Send + Sync + 'static,
    ) -> Self {
        self.inner.payload_hook = Some(Arc::new(hook));
        self
    }

    /// The payload published when a record is deleted (Deimos's `generate_deletion_payload`). The default is
    /// `{"payload_key": <primary key>}`: a tombstone keyed by the primary key.
    pub fn deletion_payload(mut self, hook: impl Fn(&Map<String, Json>) -> Json + Send + Sync + 'static) -> Self {
        self.inner.deletion_hook = Some(Arc::new(hook));
        self
    }

    /// The record producer; fails when the table's key columns are not columns.
    pub fn build(self) -> Result<RecordProducer, RecordError> {
        self.inner.table.check().map_err(RecordError::Config)?;
        Ok(self.inner)
    }
}

impl RecordProducer {
    /// A record producer publishing through `producer` (its schema decides the payload's fields) for rows of
    /// `table`.
    pub fn builder(producer: Producer, table: RecordTable) -> RecordProducerBuilder {
        let fields: Arc<[(String, Json)]> = producer
            .schema()
            .fields()
            .into_iter()
            .map(|f| (f.name, f.schema))
            .collect();
        RecordProducerBuilder {
            inner: RecordProducer {
                producer,
                table,
                fields,
                refetch: true,
                extra_watched: Vec::new(),
                payload_hook: None,
                deletion_hook: None,
            },
        }
    }

    /// The producer underneath.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The table.
    pub fn table(&self) -> &RecordTable {
        &self.table
    }

    /// The attributes whose change publishes an update: the schema's fields and the [watched](RecordProducerBuilder::watch)
    /// extras.
    pub fn watched_attributes(&self) -> Vec<&str> {
        self.fields
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(self.extra_watched.iter().map(String::as_str))
            .collect()
    }

    /// The payload of a record with these attributes (Deimos's `generate_payload`).
    pub fn generate_payload(&self, attributes: &Map<String, Json>) -> Json {
        let mut payload = Map::with_capacity(self.fields.len() + 1);
        for (name, schema) in self.fields.iter() {
            if let Some(v) = attributes.get(name) {
                payload.insert(name.clone(), for_field(schema, v.clone()));
            }
        }
        if let Some(k) = attributes.get("payload_key") {
            payload.insert("payload_key".into(), k.clone());
        }
        if let Some(hook) = &self.payload_hook {
            hook(&mut payload, attributes);
        }
        Json::Object(payload)
    }

    /// The payload published when a record with these attributes is deleted.
    pub fn deletion_payload(&self, attributes: &Map<String, Json>) -> Json {
        if let Some(hook) = &self.deletion_hook {
            return hook(attributes);
        }
        let key = match self.table.primary_key() {
            [pk] => attributes.get(pk).cloned().unwrap_or(Json::Null),
            pks => Json::Object(
                pks.iter()
                    .map(|k| (k.clone(), attributes.get(k).cloned().unwrap_or(Json::Null)))
                    .collect(),
            ),
        };
        serde_json::json!({ "payload_key": key })
    }

    /// Publishes one record through the producer's backend (Deimos's `send_event`).
    pub async fn send_event<T: Serialize + ?Sized>(&self, record: &T) -> Result<PublishReport, RecordError> {
        self.send_events(std::slice::from_ref(&record)).await
    }

    /// Publishes records through the producer's backend (Deimos's `send_events`), without refetching.
    pub async fn send_events<T: Serialize>(&self, records: &[T]) -> Result<PublishReport, RecordError> {
        let attributes = to_attributes(records)?;
        Ok(self.producer.publish_list(self.payloads(&attributes)).await?)
    }

    /// Publishes records through the producer's backend, refetching on `conn` those that lack columns.
    pub async fn send_events_refetched<C: RecordConnection, T: Serialize>(
        &self,
        conn: &mut C,
        records: &[T],
    ) -> Result<PublishReport, RecordError> {
        let attributes = self.refetched(conn, to_attributes(records)?).await?;
        Ok(self.producer.publish_list(self.payloads(&attributes)).await?)
    }

    /// Writes records' messages to the outbox on `conn` (in its transaction), refetching those that lack
    /// columns.
    pub async fn send_events_in<C: RecordConnection, T: Serialize>(
        &self,
        outbox: &Outbox,
        conn: &mut C,
        records: &[T],
    ) -> Result<OutboxReport, RecordError> {
        let attributes = self.refetched(conn, to_attributes(records)?).await?;
        self.write(outbox, conn, self.payloads(&attributes)).await
    }

    /// Publishes the deletion payloads of records through the producer's backend.
    pub async fn send_deletions<T: Serialize>(&self, records: &[T]) -> Result<PublishReport, RecordError> {
        let payloads = to_attributes(records)?
            .iter()
            .map(|a| self.deletion_payload(a))
            .collect();
        Ok(self.producer.publish_list(payloads).await?)
    }

    /// Writes the deletion payloads of records to the outbox on `conn`.
    pub async fn send_deletions_in<C: RecordConnection, T: Serialize>(
        &self,
        outbox: &Outbox,
        conn: &mut C,
        records: &[T],
    ) -> Result<OutboxReport, RecordError> {
        let payloads = to_attributes(records)?
            .iter()
            .map(|a| self.deletion_payload(a))
            .collect();
        self.write(outbox, conn, payloads).await
    }

    pub(crate) async fn write<C: RecordConnection>(
        &self,
        outbox: &Outbox,
        conn: &mut C,
        payloads: Vec<Json>,
    ) -> Result<OutboxReport, RecordError> {
        Ok(outbox
            .publish(&self.producer, conn, payloads, &PublishOptions::default())
            .await?)
    }

    pub(crate) fn payloads(&self, attributes: &[Map<String, Json>]) -> Vec<Json> {
        attributes.iter().map(|a| self.generate_payload(a)).collect()
    }

    /// Attribute maps that lack some of the table's columns, replaced by their rows (one query for all of them)
    /// when the producer refetches. A record that is no longer there is published as given.
    pub(crate) async fn refetched<C: RecordConnection>(
        &self,
        conn: &mut C,
        mut attributes: Vec<Map<String, Json>>,
    ) -> Result<Vec<Map<String, Json>>, RecordError> {
        if !self.refetch {
            return Ok(attributes);
        }
        let partial: Vec<usize> = attributes
            .iter()
            .enumerate()
            .filter(|(_, a)| self.table.columns().iter().any(|c| !a.contains_key(&c.name)))
            .map(|(i, _)| i)
            .collect();
        let mut keys: Vec<(usize, KeyValues)> = Vec::with_capacity(partial.len());
        for i in partial {
            if let Some(key) = primary_key_of(&self.table, &attributes[i])? {
                keys.push((i, key));
            }
        }
        if keys.is_empty() {
            return Ok(attributes);
        }
        let values: Vec<KeyValues> = keys.iter().map(|(_, k)| k.clone()).collect();
        let rows = select_by_keys(conn, &self.table, &values, false).await?;
        let mut by_key = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            if let Some(key) = primary_key_of(&self.table, &row)? {
                by_key.insert(format!("{key:?}"), row);
            }
        }
        for (i, key) in keys {
            if let Some(row) = by_key.get(&format!("{key:?}")) {
                let mut merged = row.clone();
                if let Some(pk) = attributes[i].get("payload_key") {
                    merged.insert("payload_key".into(), pk.clone());
                }
                attributes[i] = merged;
            }
        }
        Ok(attributes)
    }
}

/// The primary key values of a record, converted for their columns; `None` when an attribute is missing.
pub(crate) fn primary_key_of(
    table: &RecordTable,
    attributes: &Map<String, Json>,
) -> Result<Option<KeyValues>, RecordError> {
    let mut key = Vec::with_capacity(table.primary_key().len());
    for k in table.primary_key() {
        let Some(v) = attributes.get(k).filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let Some(column) = table.column_named(k) else {
            return Ok(None);
        };
        let value = to_sql(column, v, time_unit(&Json::Null)).map_err(|message| RecordError::Convert {
            table: table.name().to_string(),
            message: format!("key attribute `{k}`: {message}"),
        })?;
        key.push((k.clone(), value));
    }
    Ok(Some(key))
}

/// Records as attribute maps.
pub(crate) fn to_attributes<T: Serialize>(records: &[T]) -> Result<Vec<Map<String, Json>>, RecordError> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| match serde_json::to_value(r) {
            Ok(Json::Object(m)) => Ok(m),
            Ok(other) => Err(RecordError::Config(format!(
                "record {i} serializes to {other}, not an object of attributes; pass models or attribute maps"
            ))),
            Err(e) => Err(RecordError::Config(format!("record {i} could not be serialized: {e}"))),
        })
        .collect()
}
