//! Change publishing in the caller's transaction (Deimos's `KafkaSource`): statements on a table whose changes
//! are written to the outbox in the same transaction, so both commit or neither does.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use deimos_outbox_diesel::Outbox;
use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::error::RecordError;
use crate::ops::{self, KeyValues, OnConflict};
use crate::producer::{RecordProducer, to_attributes};
use crate::sql::{RecordConnection, now, transaction};
use crate::table::{ColumnDef, RecordTable};
use crate::value::{SqlValue, time_unit, to_sql};

/// Which changes publish (Deimos's `kafka_config`): all of them by default; set with
/// [`ChangeSourceBuilder::publish_creates`] and its siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SourceConfig {
    /// Inserted records.
    create: bool,
    /// Updated records (when a watched attribute changed).
    update: bool,
    /// Deleted records (their deletion payloads).
    delete: bool,
    /// Bulk inserts and upserts.
    import: bool,
}

impl Default for SourceConfig {
    fn default() -> SourceConfig {
        SourceConfig {
            create: true,
            update: true,
            delete: true,
            import: true,
        }
    }
}

/// A table whose changes publish through record producers into the outbox, in the transaction that makes them.
///
/// Run the statements through its helpers ([`insert`](Self::insert), [`insert_all`](Self::insert_all),
/// [`upsert_all`](Self::upsert_all), [`update`](Self::update), [`delete`](Self::delete)), or run your own
/// diesel statements and report them ([`created`](Self::created), [`updated`](Self::updated),
/// [`destroyed`](Self::destroyed), [`imported`](Self::imported)) on the same connection. Each helper runs in a
/// transaction of its own, or in a savepoint of the caller's.
#[derive(Clone)]
pub struct ChangeSource {
    table: RecordTable,
    outbox: Arc<Outbox>,
    producers: Vec<RecordProducer>,
    config: SourceConfig,
}

impl fmt::Debug for ChangeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeSource")
            .field("table", &self.table.name())
            .field("producers", &self.producers)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ChangeSource`].
#[derive(Debug)]
pub struct ChangeSourceBuilder {
    inner: ChangeSource,
}

impl ChangeSourceBuilder {
    /// Adds a record producer (Deimos's `kafka_producers`).
    pub fn producer(mut self, producer: RecordProducer) -> Self {
        self.inner.producers.push(producer);
        self
    }

    /// Whether inserted records publish (default: yes; Deimos's `kafka_config` `create`).
    pub fn publish_creates(mut self, yes: bool) -> Self {
        self.inner.config.create = yes;
        self
    }

    /// Whether updated records publish, when a watched attribute changed (default: yes; `update`).
    pub fn publish_updates(mut self, yes: bool) -> Self {
        self.inner.config.update = yes;
        self
    }

    /// Whether deleted records publish their deletion payloads (default: yes; `delete`).
    pub fn publish_deletes(mut self, yes: bool) -> Self {
        self.inner.config.delete = yes;
        self
    }

    /// Whether bulk inserts and upserts publish (default: yes; `import`).
    pub fn publish_imports(mut self, yes: bool) -> Self {
        self.inner.config.import = yes;
        self
    }

    /// The change source; fails without producers or when a producer is bound to another table.
    pub fn build(self) -> Result<ChangeSource, RecordError> {
        self.inner.table.check().map_err(RecordError::Config)?;
        if self.inner.producers.is_empty() {
            return Err(RecordError::Config(format!(
                "the change source of `{}` has no producers; add them with .producer (Deimos's kafka_producers)",
                self.inner.table.name()
            )));
        }
        if let Some(p) = self
            .inner
            .producers
            .iter()
            .find(|p| p.table().name() != self.inner.table.name())
        {
            return Err(RecordError::Config(format!(
                "record producer `{}` is bound to table `{}`, not `{}`",
                p.producer().name(),
                p.table().name(),
                self.inner.table.name()
            )));
        }
        Ok(self.inner)
    }
}

impl ChangeSource {
    /// A change source for `table`, writing to `outbox`.
    pub fn builder(table: RecordTable, outbox: Outbox) -> ChangeSourceBuilder {
        ChangeSourceBuilder {
            inner: ChangeSource {
                table,
                outbox: Arc::new(outbox),
                producers: Vec::new(),
                config: SourceConfig::default(),
            },
        }
    }

    /// The table.
    pub fn table(&self) -> &RecordTable {
        &self.table
    }

    /// Inserts one record (`created_at` / `updated_at` set to now when the table has them and the record does
    /// not) and publishes it as created; returns the row as stored, with its generated id.
    pub async fn insert<C: RecordConnection, T: Serialize>(
        &self,
        conn: &mut C,
        record: &T,
    ) -> Result<Map<String, Json>, RecordError> {
        let attributes = to_attributes(std::slice::from_ref(record))?;
        transaction!(
            conn,
            async {
                let rows = self.insert_rows(conn, attributes, None).await?;
                self.created(conn, &rows).await?;
                rows.into_iter().next().ok_or_else(|| {
                    RecordError::Config(format!("inserting into `{}` returned no row", self.table.name()))
                })
            }
            .await
        )
    }

    /// Inserts records with one multi-row INSERT per chunk and publishes them as imported, with the ids the
    /// database generated (read back with `RETURNING`, or on MySQL with one `SELECT`, never row by row).
    pub async fn insert_all<C: RecordConnection, T: Serialize>(
        &self,
        conn: &mut C,
        records: &[T],
    ) -> Result<Vec<Map<String, Json>>, RecordError> {
        let attributes = to_attributes(records)?;
        transaction!(
            conn,
            async {
                let rows = self.insert_rows(conn, attributes, None).await?;
                self.imported(conn, &rows).await?;
                Ok(rows)
            }
            .await
        )
    }

    /// Inserts records, updating those whose `conflict` columns (a unique key) match a row: every given
    /// attribute but `created_at` is overwritten. Publishes every row as imported, as stored.
    pub async fn upsert_all<C: RecordConnection, T: Serialize>(
        &self,
        conn: &mut C,
        records: &[T],
        conflict: &[&str],
    ) -> Result<Vec<Map<String, Json>>, RecordError> {
        let attributes = to_attributes(records)?;
        let conflict: Vec<String> = conflict.iter().map(|c| (*c).to_string()).collect();
        transaction!(
            conn,
            async {
                let rows = self.insert_rows(conn, attributes, Some(&conflict)).await?;
                self.imported(conn, &rows).await?;
                Ok(rows)
            }
            .await
        )
    }

    /// Updates the record with this key (a scalar for a one-column key, an object for a compound one) with
    /// `changes` (and `updated_at` = now). Each producer publishes the new row when one of its watched
    /// attributes (`updated_at` aside) changed. Returns the new row, or `None` when there is no such record.
    pub async fn update<C: RecordConnection, T: Serialize>(
        &self,
        conn: &mut C,
        key: &Json,
        changes: &T,
    ) -> Result<Option<Map<String, Json>>, RecordError> {
        let key = self.key_values(key)?;
        let mut changes = to_attributes(std::slice::from_ref(changes))?.remove(0);
        transaction!(
            conn,
            async {
                let Some(before) = ops::select_by_keys(conn, &self.table, std::slice::from_ref(&key), true)
                    .await?
                    .into_iter()
                    .next()
                else {
                    return Ok(None);
                };
                let mut set: Vec<(&ColumnDef, SqlValue)> = Vec::new();
                if self.table.has("updated_at") && !changes.contains_key("updated_at") {
                    changes.insert("updated_at".into(), Json::Null);
                }
                for column in self.table.columns() {
                    let Some(v) = changes.get(&column.name) else { continue };
                    let value = if column.name == "updated_at" && v.is_null() {
                        now()
                    } else {
                        self.convert(column, v)?
                    };
                    set.push((column, value));
                }
                self.unknown_attributes(&changes)?;
                ops::update_by_key(conn, &self.table, &set, &key).await?;
                // Read the row back by its key as it is now (the changes may have set a key column).
                let new_key: KeyValues = key
                    .iter()
                    .map(|(k, v)| match set.iter().find(|(c, _)| c.name == *k) {
                        Some((_, changed)) => (k.clone(), changed.clone()),
                        None => (k.clone(), v.clone()),
                    })
                    .collect();
                let after = ops::select_by_keys(conn, &self.table, std::slice::from_ref(&new_key), false)
                    .await?
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| before.clone());
                self.updated(conn, &[(before, after.clone())]).await?;
                Ok(Some(after))
            }
            .await
        )
    }

    /// Deletes the record with this key and publishes its deletion payload; returns the deleted row, or `None`
    /// when there was none.
    pub async fn delete<C: RecordConnection>(
        &self,
        conn: &mut C,
        key: &Json,
    ) -> Result<Option<Map<String, Json>>, RecordError> {
        let key = self.key_values(key)?;
        transaction!(
            conn,
            async {
                let Some(before) = ops::select_by_keys(conn, &self.table, std::slice::from_ref(&key), true)
                    .await?
                    .into_iter()
                    .next()
                else {
                    return Ok(None);
                };
                ops::delete_by_keys(conn, &self.table, std::slice::from_ref(&key)).await?;
                self.destroyed(conn, std::slice::from_ref(&before)).await?;
                Ok(Some(before))
            }
            .await
        )
    }

    /// Reports records your own statement inserted (Deimos's `after_create`): every producer publishes them,
    /// when `create` is on.
    pub async fn created<C: RecordConnection, T: Serialize>(
        &self,
        conn: &mut C,
        records: &[T],
    ) -> Result<(), RecordError> {
        self.send_all(self.config.create, conn, records).await
    }

    /// Reports records your own statement updated, as (before, after) pairs (Deimos's `after_update`): each
    /// producer publishes the records whose watched attributes changed, when `update` is on.
    pub async fn updated<C: RecordConnection, T: Serialize>(
        &self,
        conn: &mut C,
        changes: &[(T, T)],
    ) -> Result<(), RecordError> {
        if !self.config.update || changes.is_empty() {
            return Ok(());
        }
        let pairs: Vec<(Map<String, Json>, Map<String, Json>)> = changes
            .iter()
            .map(|(b, a)| {
                Ok((
                    to_attributes(std::slice::from_ref(b))?.remove(0),
                    to_attributes(std::slice::from_ref(a))?.remove(0),
                ))
            })
            .collect::<Result<_, RecordError>>()?;
        for p in &self.producers {
            let watched: BTreeSet<&str> = p
                .watched_attributes()
                .into_iter()
                .filter(|a| *a != "updated_at")
                .collect();
            let changed: Vec<&Map<String, Json>> = pairs
                .iter()
                .filter(|(before, after)| watched.iter().any(|a| before.get(*a) != after.get(*a)))
                .map(|(_, after)| after)
                .collect();
            if !changed.is_empty() {
                p.send_events_in(&self.outbox, conn, &changed).await?;
            }
        }
        Ok(())
    }

    /// Reports records your own statement deleted (Deimos's `after_destroy`): every producer publishes their
    /// deletion payloads, when `delete` is on.
    pub async fn destroyed<C: RecordConnection, T: Serialize>(
        &self,
        conn: &mut C,
        records: &[T],
    ) -> Result<(), RecordError> {
        if !self.config.delete || records.is_empty() {
            return Ok(());
        }
        for p in &self.producers {
            p.send_deletions_in(&self.outbox, conn, records).await?;
        }
        Ok(())
    }

    /// Reports records your own bulk statement wrote, with their ids (Deimos's import hook): every producer
    /// publishes them, when `import` is on.
    pub async fn imported<C: RecordConnection, T: Serialize>(
        &self,
        conn: &mut C,
        records: &[T],
    ) -> Result<(), RecordError> {
        self.send_all(self.config.import, conn, records).await
    }

    async fn send_all<C: RecordConnection, T: Serialize>(
        &self,
        on: bool,
        conn: &mut C,
        records: &[T],
    ) -> Result<(), RecordError> {
        if !on || records.is_empty() {
            return Ok(());
        }
        for p in &self.producers {
            p.send_events_in(&self.outbox, conn, records).await?;
        }
        Ok(())
    }

    fn convert(&self, column: &ColumnDef, value: &Json) -> Result<SqlValue, RecordError> {
        to_sql(column, value, time_unit(&Json::Null)).map_err(|message| RecordError::Convert {
            table: self.table.name().to_string(),
            message: format!("attribute `{}`: {message}", column.name),
        })
    }

    fn unknown_attributes(&self, attributes: &Map<String, Json>) -> Result<(), RecordError> {
        match attributes.keys().find(|k| !self.table.has(k)) {
            Some(k) => Err(RecordError::Config(format!(
                "`{}` has no column `{k}`; remove the attribute or add the column to the RecordTable",
                self.table.name()
            ))),
            None => Ok(()),
        }
    }

    fn key_values(&self, key: &Json) -> Result<KeyValues, RecordError> {
        let pk = self.table.primary_key();
        let pairs: Vec<(&String, &Json)> = match (pk, key) {
            (_, Json::Object(o)) => pk
                .iter()
                .map(|k| {
                    o.get(k).map(|v| (k, v)).ok_or_else(|| {
                        RecordError::Config(format!(
                            "the key {key} lacks `{k}`, part of `{}`'s key",
                            self.table.name()
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
            ([k], v) => vec![(k, v)],
            _ => {
                return Err(RecordError::Config(format!(
                    "`{}` has a compound key ({}); give the key as an object",
                    self.table.name(),
                    pk.join(", ")
                )));
            }
        };
        pairs
            .into_iter()
            .map(|(k, v)| {
                let column = self
                    .table
                    .column_named(k)
                    .ok_or_else(|| RecordError::Config(format!("`{}` has no key column `{k}`", self.table.name())))?;
                Ok((k.clone(), self.convert(column, v)?))
            })
            .collect()
    }

    /// Inserts (or upserts) attribute maps, grouped into runs that give the same attributes, and reads the rows
    /// back.
    async fn insert_rows<C: RecordConnection>(
        &self,
        conn: &mut C,
        attributes: Vec<Map<String, Json>>,
        conflict: Option<&[String]>,
    ) -> Result<Vec<Map<String, Json>>, RecordError> {
        let stamp = now();
        let mut out = Vec::with_capacity(attributes.len());
        let mut start = 0;
        while start < attributes.len() {
            self.unknown_attributes(&attributes[start])?;
            let names: BTreeSet<&String> = attributes[start].keys().collect();
            let mut end = start + 1;
            while end < attributes.len() && attributes[end].keys().collect::<BTreeSet<_>>() == names {
                end += 1;
            }
            let columns: Vec<&ColumnDef> = self
                .table
                .columns()
                .iter()
                .filter(|c| names.contains(&c.name) || c.name == "created_at" || c.name == "updated_at")
                .collect();
            let rows = attributes[start..end]
                .iter()
                .map(|a| {
                    columns
                        .iter()
                        .map(|c| match a.get(&c.name) {
                            Some(v) if !v.is_null() || !matches!(c.name.as_str(), "created_at" | "updated_at") => {
                                self.convert(c, v)
                            }
                            _ => Ok(stamp.clone()),
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()?;
            let on_conflict = conflict.map_or(OnConflict::Fail, OnConflict::Update);
            out.extend(ops::insert(conn, &self.table, &columns, rows, on_conflict, true).await?);
            start = end;
        }
        Ok(out)
    }
}
