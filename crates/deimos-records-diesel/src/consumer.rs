//! Record consumers (Deimos's `ActiveRecordConsumer`, message and batch mode): messages applied to a table.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deimos_avro::AvroSchema;
use deimos_consumer::{
    Batch, BatchHandler, DecodedKey, Handler, HandlerError, Message, PartiallyHandled, Transient, async_trait,
};
use deimos_metrics::catalogue::DEADLOCK;
use deimos_outbox_diesel::db::with_statement_timeout;
use deimos_outbox_diesel::pool::{self, Pool};
use deimos_outbox_diesel::{Conn, Dialect};
use serde_json::{Map, Value as Json};

use crate::error::RecordError;
use crate::ops::{self, KeyValues, OnConflict};
use crate::sql::{RecordConnection, Sql, now};
use crate::table::{ColumnDef, RecordTable};
use crate::value::{SqlValue, TimeUnit, time_unit, to_sql};

/// What a tombstone (or a message the [`delete_when`](RecordConsumerBuilder::delete_when) hook picks) does.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Tombstone {
    /// Deletes the record (Deimos's default `destroy_record` / `remove_records`).
    Delete,
    /// Updates the record with these attributes instead (a soft delete), and `updated_at`.
    Update(Map<String, Json>),
    /// Leaves the record alone.
    Ignore,
}

/// One message as the hooks see it.
#[derive(Debug, Clone, Copy)]
pub struct RecordMessage<'a> {
    /// The payload; `None` for a tombstone.
    pub payload: Option<&'a Map<String, Json>>,
    /// The decoded key.
    pub key: Option<&'a DecodedKey>,
    /// The message's offset.
    pub offset: i64,
}

type Filter = Arc<dyn Fn(&RecordMessage<'_>) -> bool + Send + Sync>;
type AttributesHook = Arc<dyn Fn(&mut Map<String, Json>, &RecordMessage<'_>) + Send + Sync>;
type KeyHook = Arc<dyn Fn(&RecordMessage<'_>) -> Map<String, Json> + Send + Sync>;

/// How deadlocks and lock timeouts are retried (Deimos's `DeadlockRetry`: 3 attempts, sleeping 0.5–5.5 s
/// between them); set with [`RecordConsumerBuilder::deadlock_retry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DeadlockRetry {
    /// Attempts in all (at least 1).
    attempts: u32,
    /// Shortest sleep before a retry.
    min_sleep: Duration,
    /// Longest sleep before a retry.
    max_sleep: Duration,
}

impl Default for DeadlockRetry {
    fn default() -> DeadlockRetry {
        DeadlockRetry {
            attempts: 3,
            min_sleep: Duration::from_millis(500),
            max_sleep: Duration::from_millis(5500),
        }
    }
}

/// Where a consumer gets its connections: a pool, built from the URL when the consumer is.
struct Database {
    url: Option<String>,
    pool: Option<Pool>,
    pool_size: usize,
    settings: pool::Settings,
}

/// A record consumer's connections by default: one per batch or message applied at the same time.
const DEFAULT_POOL_SIZE: usize = 4;
/// How long opening a connection (or waiting for a free one) may take, by default.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one statement may take, by default: long enough for a 1000-row upsert, short enough that a connection
/// whose packets are dropped is given up on.
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

struct Inner {
    table: RecordTable,
    fields: Vec<(String, Json)>,
    /// Schema fields that are columns (timestamps aside), with the time unit of each.
    mapped: Vec<(usize, TimeUnit)>,
    /// The same as (column index, field index, unit), in table order.
    plan: Vec<(usize, usize, TimeUnit)>,
    key_field: Option<String>,
    db: Database,
    compacted: bool,
    max_db_batch_size: usize,
    exactly_once: bool,
    fallback: bool,
    deadlock: DeadlockRetry,
    tombstone: Tombstone,
    filter: Option<Filter>,
    delete_when: Option<Filter>,
    attributes: Option<AttributesHook>,
    record_key: Option<KeyHook>,
}

/// Builds a [`RecordConsumer`] or a [`BatchRecordConsumer`].
pub struct RecordConsumerBuilder {
    inner: Inner,
}

impl fmt::Debug for RecordConsumerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordConsumerBuilder")
            .field("table", &self.inner.table.name())
            .finish_non_exhaustive()
    }
}

impl RecordConsumerBuilder {
    /// The database (`postgres://`, `mysql://`, `sqlite://`): connections are pooled, checked before reuse, and
    /// a lost one is replaced.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.inner.db.url = Some(url.into());
        self
    }

    /// At most this many connections (4); they are opened when needed.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.inner.db.pool_size = n;
        self
    }

    /// How long opening a connection, or waiting for a free one, may take (5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.inner.db.settings = self.inner.db.settings.connect_timeout(timeout);
        self
    }

    /// How long one statement may take (30 s). Past it the connection is dropped and
    /// the batch is a transient error, retried on a new connection: a database that stops answering (packets
    /// dropped, not refused) does not hang the listener. PostgreSQL sessions also get it as `statement_timeout`
    /// and `idle_in_transaction_session_timeout`, MySQL's as `innodb_lock_wait_timeout`.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.inner.db.settings = self.inner.db.settings.statement_timeout(timeout);
        self
    }

    /// The listener's `key_config` is `field`: a scalar key is this column's value (Deimos 1.19.6), not the
    /// primary key's.
    pub fn key_field(mut self, field: impl Into<String>) -> Self {
        self.inner.key_field = Some(field.into());
        self
    }

    /// Batch mode: keep only the last message per key (default: on, as Deimos). Off, a batch is applied in
    /// slices that hold at most one message per key, in order.
    pub fn compacted(mut self, yes: bool) -> Self {
        self.inner.compacted = yes;
        self
    }

    /// Batch mode: rows per upsert or delete statement (Deimos's `max_db_batch_size`; default 1000).
    pub fn max_db_batch_size(mut self, n: usize) -> Self {
        self.inner.max_db_batch_size = n.max(1);
        self
    }

    /// Stores each partition's next offset in `deimos_consumer_offsets`, in the transaction that applies the
    /// messages, and skips messages below it: a message redelivered after a crash, restart or rebalance is not
    /// applied twice. Run [`migrate`](crate::migrate) first.
    pub fn exactly_once(mut self, yes: bool) -> Self {
        self.inner.exactly_once = yes;
        self
    }

    /// Batch mode: after a batch fails (other than by deadlock), saves its messages one at a time and reports
    /// those that fail (Deimos 2.6's `batch_message_fallback`; default on).
    pub fn batch_message_fallback(mut self, yes: bool) -> Self {
        self.inner.fallback = yes;
        self
    }

    /// How deadlocks and lock timeouts are retried: `attempts` in all (at least 1), sleeping a random time in
    /// `sleep` before each retry (default: 3 attempts, 0.5–5.5 s, as Deimos's `DeadlockRetry`).
    pub fn deadlock_retry(mut self, attempts: u32, sleep: std::ops::RangeInclusive<Duration>) -> Self {
        let (min_sleep, max_sleep) = sleep.into_inner();
        self.inner.deadlock = DeadlockRetry {
            attempts: attempts.max(1),
            min_sleep,
            max_sleep: max_sleep.max(min_sleep),
        };
        self
    }

    /// What tombstones do (default: delete).
    pub fn on_tombstone(mut self, action: Tombstone) -> Self {
        self.inner.tombstone = action;
        self
    }

    /// Skips messages for which this returns false (Deimos's `process_message?`); their offsets still advance.
    pub fn filter(mut self, f: impl Fn(&RecordMessage<'_>) -> bool + Send + Sync + 'static) -> Self {
        self.inner.filter = Some(Arc::new(f));
        self
    }

    /// Treats messages for which this returns true as tombstones (Deimos 2.1.10's `delete_record?`), in place
    /// of "the payload is empty".
    pub fn delete_when(mut self, f: impl Fn(&RecordMessage<'_>) -> bool + Send + Sync + 'static) -> Self {
        self.inner.delete_when = Some(Arc::new(f));
        self
    }

    /// Adds or changes the attributes saved for a message (Deimos's `record_attributes`): called with the
    /// schema fields that are columns.
    pub fn attributes(
        mut self,
        f: impl Fn(&mut Map<String, Json>, &RecordMessage<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.inner.attributes = Some(Arc::new(f));
        self
    }

    /// The columns and values that identify a message's record (Deimos's `record_key` / `fetch_record`): used
    /// to look records up, as the upsert's conflict target and to delete. The default: a record key's fields
    /// that are columns, a scalar key as the primary key (or the [key field](Self::key_field)), nothing without
    /// a key (every message inserts).
    pub fn record_key(mut self, f: impl Fn(&RecordMessage<'_>) -> Map<String, Json> + Send + Sync + 'static) -> Self {
        self.inner.record_key = Some(Arc::new(f));
        self
    }

    fn check(mut self) -> Result<Arc<Inner>, RecordError> {
        self.inner.table.check().map_err(RecordError::Config)?;
        let name = self.inner.table.name().to_string();
        let db = &mut self.inner.db;
        let Some(url) = db.url.as_deref() else {
            return Err(RecordError::Config(format!(
                "the record consumer of `{name}` has no database: give .database_url(\"postgres://…\") (or mysql://…, \
                 sqlite://PATH)"
            )));
        };
        if db.pool_size == 0 || db.settings.connect_timeout.is_zero() || db.settings.statement_timeout.is_zero() {
            return Err(RecordError::Config(format!(
                "the record consumer of `{name}`: pool_size, connect_timeout and statement_timeout must be more than \
                 zero (got {}, {:?}, {:?})",
                db.pool_size, db.settings.connect_timeout, db.settings.statement_timeout
            )));
        }
        db.pool = Some(pool::build(url, db.pool_size, db.settings)?);
        if self.inner.mapped.is_empty() {
            return Err(RecordError::Config(format!(
                "no field of the schema is a column of `{}`: nothing would be saved",
                self.inner.table.name()
            )));
        }
        Ok(Arc::new(self.inner))
    }

    /// A consumer that applies one message at a time.
    pub fn build(self) -> Result<RecordConsumer, RecordError> {
        Ok(RecordConsumer { inner: self.check()? })
    }

    /// A consumer that applies batches.
    pub fn build_batch(self) -> Result<BatchRecordConsumer, RecordError> {
        Ok(BatchRecordConsumer { inner: self.check()? })
    }
}

/// Applies each message to its record (Deimos's `ActiveRecordConsumer` in message mode): looks the record up
/// by key, updates it (`updated_at` = now, `created_at` kept) or inserts it (both = now), deletes it on a
/// tombstone. Attributes are the schema's fields that are columns, converted to the column types.
#[derive(Clone)]
pub struct RecordConsumer {
    inner: Arc<Inner>,
}

/// Applies batches (Deimos's `ActiveRecordConsumer` in batch mode): compacted by key (or sliced), upserts
/// before deletes, one multi-row upsert per `max_db_batch_size` rows that keeps `created_at`, all in one
/// transaction retried on deadlock; when a batch fails, its messages are saved one at a time and the failures
/// reported.
#[derive(Clone)]
pub struct BatchRecordConsumer {
    inner: Arc<Inner>,
}

impl fmt::Debug for RecordConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordConsumer")
            .field("table", &self.inner.table.name())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for BatchRecordConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchRecordConsumer")
            .field("table", &self.inner.table.name())
            .finish_non_exhaustive()
    }
}

impl RecordConsumer {
    /// A record consumer of messages of `schema` into `table`.
    pub fn builder(table: RecordTable, schema: &AvroSchema) -> RecordConsumerBuilder {
        let fields: Vec<(String, Json)> = schema.fields().into_iter().map(|f| (f.name, f.schema)).collect();
        let mapped: Vec<(usize, TimeUnit)> = fields
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| n != "created_at" && n != "updated_at" && table.has(n))
            .map(|(i, (_, s))| (i, time_unit(s)))
            .collect();
        let plan = table
            .columns()
            .iter()
            .enumerate()
            .filter_map(|(c, column)| {
                mapped
                    .iter()
                    .find(|(f, _)| fields[*f].0 == column.name)
                    .map(|(f, unit)| (c, *f, *unit))
            })
            .collect();
        RecordConsumerBuilder {
            inner: Inner {
                table,
                fields,
                mapped,
                plan,
                key_field: None,
                db: Database {
                    url: None,
                    pool: None,
                    pool_size: DEFAULT_POOL_SIZE,
                    settings: pool::Settings::new()
                        .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
                        .statement_timeout(DEFAULT_STATEMENT_TIMEOUT),
                },
                compacted: true,
                max_db_batch_size: 1000,
                exactly_once: false,
                fallback: true,
                deadlock: DeadlockRetry::default(),
                tombstone: Tombstone::Delete,
                filter: None,
                delete_when: None,
                attributes: None,
                record_key: None,
            },
        }
    }
}

/// A message ready to apply.
struct Msg {
    payload: Option<Map<String, Json>>,
    key: Option<DecodedKey>,
    /// The key as text, for compaction and slicing.
    key_id: Option<String>,
    offset: i64,
}

impl Msg {
    fn view(&self) -> RecordMessage<'_> {
        RecordMessage {
            payload: self.payload.as_ref(),
            key: self.key.as_ref(),
            offset: self.offset,
        }
    }

    fn new(payload: Option<Map<String, Json>>, key: Option<DecodedKey>, offset: i64) -> Msg {
        let key_id = key.as_ref().map(|k| match k {
            DecodedKey::Value(Json::String(s)) | DecodedKey::Text(s) => format!("s{s}"),
            DecodedKey::Value(Json::Number(n)) => format!("n{n}"),
            DecodedKey::Value(v) => format!("j{v}"),
            other => format!("{other:?}"),
        });
        Msg {
            payload,
            key,
            key_id,
            offset,
        }
    }

    fn key_id(&self) -> &str {
        self.key_id.as_deref().unwrap_or_default()
    }
}

fn to_payload(payload: Option<Json>, table: &str) -> Result<Option<Map<String, Json>>, RecordError> {
    match payload {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Object(m)) => Ok(Some(m)),
        Some(other) => Err(RecordError::Convert {
            table: table.to_string(),
            message: format!("the payload {other} is not a record"),
        }),
    }
}

/// Where the offsets of a batch go.
struct Position<'a> {
    group_id: &'a str,
    topic: &'a str,
    partition: i32,
}

/// Which messages of a failed batch need no redrive: their effect is committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Committed {
    /// None of them (as far as is known).
    #[default]
    Nothing,
    /// Exactly-once: every message below this offset (applied earlier or by the fallback, its offset stored
    /// with the rows; a filtered message is never applied).
    Below(i64),
    /// The fallback saw every message but these fail (by offset): the others are committed, superseded by a
    /// later message of their key in the batch (compaction), or filtered.
    AllBut(Vec<i64>),
}

impl Committed {
    /// The offsets among `offsets` (a batch's) that need no redrive.
    fn handled(&self, offsets: &[i64]) -> Vec<i64> {
        match self {
            Committed::Nothing => Vec::new(),
            Committed::Below(next) => offsets.iter().copied().filter(|o| o < next).collect(),
            Committed::AllBut(failed) => offsets.iter().copied().filter(|o| !failed.contains(o)).collect(),
        }
    }
}

/// A message the fallback could not save.
struct FailedMessage {
    key: String,
    offset: i64,
    error: RecordError,
}

/// A batch (or message) that could not be applied, as the runner is told.
struct Failed {
    error: RecordError,
    /// May pass on its own: a lost or refused connection, a deadlock past its retries.
    transient: bool,
    committed: Committed,
}

impl Failed {
    fn permanent(error: RecordError) -> Failed {
        Failed {
            error,
            transient: false,
            committed: Committed::Nothing,
        }
    }

    /// The handler's error: marked [`Transient`] when it is, wrapped in [`PartiallyHandled`] when some of the
    /// batch's `offsets` are committed anyway (so only the others are dead-lettered). The [`RecordError`] is
    /// the innermost error of the chain; the text is its text.
    fn into_handler_error(self, offsets: &[i64]) -> HandlerError {
        let handled = self.committed.handled(offsets);
        let error: HandlerError = if self.transient {
            Transient::new(self.error).into()
        } else {
            self.error.into()
        };
        if handled.is_empty() {
            error
        } else {
            PartiallyHandled::new(handled, error).into()
        }
    }
}

impl Inner {
    fn convert_err(&self, message: String) -> RecordError {
        RecordError::Convert {
            table: self.table.name().to_string(),
            message,
        }
    }

    fn is_tombstone(&self, m: &Msg) -> bool {
        match &self.delete_when {
            Some(f) => f(&m.view()),
            None => m.payload.is_none(),
        }
    }

    /// The record's key columns and values.
    fn key_of(&self, m: &Msg) -> Result<KeyValues, RecordError> {
        if self.record_key.is_none()
            && let Some(DecodedKey::Value(v)) = &m.key
            && !v.is_object()
        {
            // A scalar key: the key field's column, or the primary key.
            let name = match (&self.key_field, self.table.primary_key()) {
                (Some(f), _) => f.as_str(),
                (None, [pk]) => pk.as_str(),
                _ => "",
            };
            if let Some(column) = self.table.column_named(name) {
                let value = to_sql(column, v, TimeUnit::Seconds)
                    .map_err(|e| self.convert_err(format!("key attribute `{name}`: {e}")))?;
                return Ok(vec![(name.to_string(), value)]);
            }
        }
        let view = m.view();
        let pairs: Map<String, Json> = match &self.record_key {
            Some(f) => f(&view),
            None => match &m.key {
                None => Map::new(),
                Some(DecodedKey::Value(Json::Object(fields))) => fields
                    .iter()
                    .filter(|(k, _)| self.table.has(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                Some(key) => {
                    let value = match key {
                        DecodedKey::Value(v) => v.clone(),
                        DecodedKey::Text(s) => Json::String(s.clone()),
                        DecodedKey::Bytes(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
                        #[allow(unreachable_patterns)]
                        _ => Json::Null,
                    };
                    let column = match (&self.key_field, self.table.primary_key()) {
                        (Some(f), _) => f.clone(),
                        (None, [pk]) => pk.clone(),
                        (None, pks) => {
                            return Err(RecordError::Config(format!(
                                "`{}` has a compound key ({}) but the message key is not a record; use a key schema or .record_key",
                                self.table.name(),
                                pks.join(", ")
                            )));
                        }
                    };
                    let mut m = Map::new();
                    m.insert(column, value);
                    m
                }
            },
        };
        pairs
            .into_iter()
            .map(|(k, v)| {
                let column = self.table.column_named(&k).ok_or_else(|| {
                    RecordError::Config(format!(
                        "the record key names `{k}`, which is not a column of `{}`",
                        self.table.name()
                    ))
                })?;
                let value = to_sql(column, &v, TimeUnit::Seconds)
                    .map_err(|e| self.convert_err(format!("key attribute `{k}`: {e}")))?;
                Ok((k, value))
            })
            .collect()
    }

    /// The attributes of a message (schema fields ∩ columns, missing ones NULL, then the hook), as (column,
    /// value) in table order.
    fn attributes_of(&self, m: &Msg) -> Result<Vec<(&ColumnDef, SqlValue)>, RecordError> {
        let empty = Map::new();
        let payload = m.payload.as_ref().unwrap_or(&empty);
        if self.attributes.is_none() {
            // No hook: straight from the payload to the column values, in table order.
            return self
                .plan
                .iter()
                .map(|(column, field, unit)| {
                    let c = &self.table.columns()[*column];
                    let v = payload.get(&self.fields[*field].0).unwrap_or(&Json::Null);
                    to_sql(c, v, *unit)
                        .map(|value| (c, value))
                        .map_err(|e| self.convert_err(format!("attribute `{}`: {e}", c.name)))
                })
                .collect();
        }
        let mut units: HashMap<&str, TimeUnit> = HashMap::with_capacity(self.mapped.len());
        let mut attrs = Map::with_capacity(self.mapped.len());
        for (i, unit) in &self.mapped {
            let name = &self.fields[*i].0;
            units.insert(name, *unit);
            attrs.insert(name.clone(), payload.get(name).cloned().unwrap_or(Json::Null));
        }
        if let Some(hook) = &self.attributes {
            hook(&mut attrs, &m.view());
        }
        if let Some(k) = attrs.keys().find(|k| !self.table.has(k)) {
            return Err(RecordError::Config(format!(
                "the attributes hook set `{k}`, which is not a column of `{}`",
                self.table.name()
            )));
        }
        self.table
            .columns()
            .iter()
            .filter_map(|c| attrs.get(&c.name).map(|v| (c, v)))
            .map(|(c, v)| {
                let unit = units.get(c.name.as_str()).copied().unwrap_or(TimeUnit::Seconds);
                to_sql(c, v, unit)
                    .map(|value| (c, value))
                    .map_err(|e| self.convert_err(format!("attribute `{}`: {e}", c.name)))
            })
            .collect()
    }

    fn stamp_columns(&self) -> (Option<&ColumnDef>, Option<&ColumnDef>) {
        (
            self.table.column_named("created_at"),
            self.table.column_named("updated_at"),
        )
    }

    /// Applies one message: look up, update or insert; or the tombstone action.
    async fn apply_one<C: RecordConnection>(&self, conn: &mut C, m: &Msg) -> Result<(), RecordError> {
        let key = self.key_of(m)?;
        if self.is_tombstone(m) {
            return self.remove(conn, vec![key]).await;
        }
        let attrs = self.attributes_of(m)?;
        let (created, updated) = self.stamp_columns();
        let stamp = now();
        if !key.is_empty()
            && !ops::select_by_keys(conn, &self.table, std::slice::from_ref(&key), true)
                .await?
                .is_empty()
        {
            let mut set: Vec<(&ColumnDef, SqlValue)> = attrs
                .into_iter()
                .filter(|(c, _)| !key.iter().any(|(k, _)| *k == c.name))
                .collect();
            if let Some(u) = updated
                && !set.iter().any(|(c, _)| c.name == u.name)
            {
                set.push((u, stamp));
            }
            ops::update_by_key(conn, &self.table, &set, &key).await?;
            return Ok(());
        }
        let (columns, row) = self.row(attrs, &key, created, updated, &stamp);
        ops::insert(conn, &self.table, &columns, vec![row], OnConflict::Fail, false).await?;
        Ok(())
    }

    /// One row to insert: the attributes, the key (which wins), and the timestamps.
    fn row<'a>(
        &'a self,
        attrs: Vec<(&'a ColumnDef, SqlValue)>,
        key: &KeyValues,
        created: Option<&'a ColumnDef>,
        updated: Option<&'a ColumnDef>,
        stamp: &SqlValue,
    ) -> (Vec<&'a ColumnDef>, Vec<SqlValue>) {
        let mut columns = Vec::with_capacity(attrs.len() + key.len() + 2);
        let mut row = Vec::with_capacity(columns.capacity());
        for (c, v) in attrs {
            if let Some((_, kv)) = key.iter().find(|(k, _)| *k == c.name) {
                row.push(kv.clone());
            } else {
                row.push(v);
            }
            columns.push(c);
        }
        for (k, v) in key {
            if !columns.iter().any(|c| c.name == *k)
                && let Some(c) = self.table.column_named(k)
            {
                columns.push(c);
                row.push(v.clone());
            }
        }
        for c in [created, updated].into_iter().flatten() {
            if !columns.iter().any(|x| x.name == c.name) {
                columns.push(c);
                row.push(stamp.clone());
            }
        }
        (columns, row)
    }

    /// The tombstone action for these keys.
    async fn remove<C: RecordConnection>(&self, conn: &mut C, keys: Vec<KeyValues>) -> Result<(), RecordError> {
        let keys: Vec<KeyValues> = keys.into_iter().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            return Ok(());
        }
        let columns = |k: &KeyValues| k.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>();
        if let Some(other) = keys.iter().find(|k| columns(k) != columns(&keys[0])) {
            return Err(RecordError::Config(format!(
                "tombstones of one batch have keys of different columns ({} and {}) for `{}`",
                columns(&keys[0]).join(", "),
                columns(other).join(", "),
                self.table.name()
            )));
        }
        match &self.tombstone {
            Tombstone::Ignore => Ok(()),
            Tombstone::Delete => {
                for chunk in keys.chunks(self.max_db_batch_size) {
                    ops::delete_by_keys(conn, &self.table, chunk).await?;
                }
                Ok(())
            }
            Tombstone::Update(changes) => {
                let mut set = Vec::new();
                for c in self.table.columns() {
                    if let Some(v) = changes.get(&c.name) {
                        set.push((c, to_sql(c, v, TimeUnit::Seconds).map_err(|e| self.convert_err(e))?));
                    }
                }
                if let (Some(u), false) = (
                    self.table.column_named("updated_at"),
                    changes.contains_key("updated_at"),
                ) {
                    set.push((u, now()));
                }
                for key in &keys {
                    ops::update_by_key(conn, &self.table, &set, key).await?;
                }
                Ok(())
            }
        }
    }

    /// Upserts messages (all with payloads): one multi-row statement per `max_db_batch_size`.
    async fn upsert<C: RecordConnection>(&self, conn: &mut C, msgs: &[&Msg]) -> Result<(), RecordError> {
        let (created, updated) = self.stamp_columns();
        let stamp = now();
        for chunk in msgs.chunks(self.max_db_batch_size) {
            let mut columns: Vec<&ColumnDef> = Vec::new();
            let mut rows = Vec::with_capacity(chunk.len());
            let mut key_columns: Option<Vec<String>> = None;
            for m in chunk {
                let key = self.key_of(m)?;
                let names: Vec<String> = key.iter().map(|(k, _)| k.clone()).collect();
                match &key_columns {
                    None => key_columns = Some(names),
                    Some(first) if *first != names => {
                        return Err(RecordError::Config(format!(
                            "messages of one batch have keys of different columns ({} and {}) for `{}`",
                            first.join(", "),
                            names.join(", "),
                            self.table.name()
                        )));
                    }
                    Some(_) => {}
                }
                let (cols, row) = self.row(self.attributes_of(m)?, &key, created, updated, &stamp);
                if columns.is_empty() {
                    columns = cols;
                } else if columns.len() != cols.len() || columns.iter().zip(&cols).any(|(a, b)| a.name != b.name) {
                    return Err(RecordError::Config(format!(
                        "messages of one batch give different attributes for `{}`; the attributes hook must set the same ones for every message",
                        self.table.name()
                    )));
                }
                rows.push(row);
            }
            let keys = key_columns.unwrap_or_default();
            let on_conflict = if keys.is_empty() {
                OnConflict::Fail
            } else {
                OnConflict::Update(&keys)
            };
            ops::insert(conn, &self.table, &columns, rows, on_conflict, false).await?;
        }
        Ok(())
    }

    /// Applies a group of messages (at most one per key, or a no-keys batch): upserts, then deletes.
    async fn apply_group<C: RecordConnection>(&self, conn: &mut C, group: &[&Msg]) -> Result<(), RecordError> {
        let (deletes, upserts): (Vec<&Msg>, Vec<&Msg>) = group.iter().partition(|m| self.is_tombstone(m));
        if !upserts.is_empty() {
            self.upsert(conn, &upserts).await?;
        }
        if !deletes.is_empty() {
            let keys = deletes.iter().map(|m| self.key_of(m)).collect::<Result<Vec<_>, _>>()?;
            self.remove(conn, keys).await?;
        }
        Ok(())
    }

    /// The groups a batch is applied in: compacted (last message per key, in the order of those last
    /// messages), or Deimos's `BatchSlicer` slices.
    fn groups<'m>(&self, msgs: &'m [Msg]) -> Vec<Vec<&'m Msg>> {
        let no_keys = msgs.first().is_none_or(|m| m.key.is_none());
        if no_keys {
            return vec![msgs.iter().collect()];
        }
        if self.compacted {
            let mut last: HashMap<&str, usize> = HashMap::with_capacity(msgs.len());
            for (i, m) in msgs.iter().enumerate() {
                last.insert(m.key_id(), i);
            }
            return vec![
                msgs.iter()
                    .enumerate()
                    .filter(|(i, m)| last.get(m.key_id()) == Some(i))
                    .map(|(_, m)| m)
                    .collect(),
            ];
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut slices: Vec<Vec<&Msg>> = Vec::new();
        for m in msgs {
            let n = seen.entry(m.key_id()).or_insert(0);
            if slices.len() <= *n {
                slices.push(Vec::new());
            }
            slices[*n].push(m);
            *n += 1;
        }
        slices
    }

    /// Exactly-once: locks the partition's offset row (creating it) and returns the next offset to apply.
    async fn claim<C: RecordConnection>(&self, conn: &mut C, at: &Position<'_>) -> Result<i64, RecordError> {
        let dialect = conn.sql_dialect();
        let binds = [
            SqlValue::Text(at.group_id.to_string()),
            SqlValue::Text(at.topic.to_string()),
            SqlValue::Int(i64::from(at.partition)),
        ];
        let mut sql = Sql::new(dialect);
        sql.push(match dialect {
            Dialect::Sqlite => "INSERT OR IGNORE INTO",
            _ => "INSERT INTO",
        })
        .push(" deimos_consumer_offsets (group_id, topic, kafka_partition, next_offset, updated_at) VALUES (")
        .param()
        .push(", ")
        .param()
        .push(", ")
        .param()
        .push(", -1, ")
        .param()
        .push(")");
        match dialect {
            Dialect::Postgres => {
                sql.push(" ON CONFLICT DO NOTHING");
            }
            // Takes the row's exclusive lock at once (INSERT IGNORE would take a shared one, and two consumers
            // upgrading theirs with the FOR UPDATE below would deadlock).
            Dialect::Mysql => {
                sql.push(" ON DUPLICATE KEY UPDATE next_offset = next_offset");
            }
            _ => {}
        }
        let mut insert_binds = binds.to_vec();
        insert_binds.push(now());
        let missing = |e| RecordError::Database {
            doing: "claiming the partition's stored offset (did `deimos_records_diesel::migrate` run?)",
            table: "deimos_consumer_offsets".into(),
            source: e,
        };
        conn.run(&sql.finish(), &insert_binds).await.map_err(missing)?;
        let mut sql = Sql::new(dialect);
        sql.push(match dialect {
            Dialect::Postgres => "SELECT next_offset::text AS j",
            Dialect::Mysql => "SELECT CAST(next_offset AS CHAR) AS j",
            _ => "SELECT CAST(next_offset AS TEXT) AS j",
        })
        .push(" FROM deimos_consumer_offsets WHERE group_id = ")
        .param()
        .push(" AND topic = ")
        .param()
        .push(" AND kafka_partition = ")
        .param();
        if dialect != Dialect::Sqlite {
            sql.push(" FOR UPDATE");
        }
        let texts = conn.texts(&sql.finish(), &binds).await.map_err(missing)?;
        Ok(texts.first().and_then(|t| t.parse().ok()).unwrap_or(-1))
    }

    /// Exactly-once: stores the next offset to apply.
    async fn store<C: RecordConnection>(&self, conn: &mut C, at: &Position<'_>, next: i64) -> Result<(), RecordError> {
        let mut sql = Sql::new(conn.sql_dialect());
        sql.push("UPDATE deimos_consumer_offsets SET next_offset = ")
            .param()
            .push(", updated_at = ")
            .param()
            .push(" WHERE group_id = ")
            .param()
            .push(" AND topic = ")
            .param()
            .push(" AND kafka_partition = ")
            .param();
        let binds = [
            SqlValue::Int(next),
            now(),
            SqlValue::Text(at.group_id.to_string()),
            SqlValue::Text(at.topic.to_string()),
            SqlValue::Int(i64::from(at.partition)),
        ];
        conn.run(&sql.finish(), &binds).await.map_err(RecordError::db(
            "storing the partition's offset",
            "deimos_consumer_offsets",
        ))?;
        Ok(())
    }

    /// One attempt at a batch, in one transaction: claim the offset, apply, store it. `committed` learns the
    /// stored offset (exactly-once).
    async fn attempt<C: RecordConnection>(
        &self,
        conn: &mut C,
        msgs: &[Msg],
        at: &Position<'_>,
        batch: bool,
        committed: &mut Committed,
    ) -> Result<(), RecordError> {
        conn.begin_tx()
            .await
            .map_err(RecordError::db("beginning a transaction", self.table.name()))?;
        let result = self.attempt_in(conn, msgs, at, batch, committed).await;
        finish(conn, result, self.table.name()).await
    }

    async fn attempt_in<C: RecordConnection>(
        &self,
        conn: &mut C,
        msgs: &[Msg],
        at: &Position<'_>,
        batch: bool,
        committed: &mut Committed,
    ) -> Result<(), RecordError> {
        let msgs = if self.exactly_once {
            let next = self.claim(conn, at).await?;
            // Stored by an earlier transaction: holds whatever becomes of this one.
            *committed = Committed::Below(next);
            let from = msgs.partition_point(|m| m.offset < next);
            if from > 0 {
                tracing::info!(
                    topic = at.topic,
                    partition = at.partition,
                    skipped = from,
                    next_offset = next,
                    "skipping messages already applied (their offsets are stored with the rows)"
                );
            }
            &msgs[from..]
        } else {
            msgs
        };
        if batch {
            for group in self.groups(msgs) {
                self.apply_group(conn, &group).await?;
            }
        } else {
            for m in msgs {
                self.apply_one(conn, m).await?;
            }
        }
        if self.exactly_once
            && let Some(last) = msgs.last()
        {
            self.store(conn, at, last.offset + 1).await?;
        }
        Ok(())
    }

    /// After a failed batch: each message in a savepoint of one transaction; the failed ones are reported.
    /// `committed` learns which messages need no redrive.
    async fn fallback<C: RecordConnection>(
        &self,
        conn: &mut C,
        msgs: &[Msg],
        at: &Position<'_>,
        original: RecordError,
        committed: &mut Committed,
    ) -> Result<(), RecordError> {
        conn.begin_tx()
            .await
            .map_err(RecordError::db("beginning a transaction", self.table.name()))?;
        let mut stored = None;
        let result = self.fallback_in(conn, msgs, at, committed, &mut stored).await;
        match result {
            Ok((0, failed)) if !failed.is_empty() => {
                let _ = conn.rollback_tx().await;
                if !self.exactly_once {
                    *committed = Committed::AllBut(failed.iter().map(|f| f.offset).collect());
                }
                Err(original)
            }
            Ok((saved, failed)) => {
                conn.commit_tx()
                    .await
                    .map_err(RecordError::db("committing", self.table.name()))?;
                if let Some(next) = stored {
                    *committed = Committed::Below(next);
                } else if !self.exactly_once {
                    *committed = Committed::AllBut(failed.iter().map(|f| f.offset).collect());
                }
                if failed.is_empty() {
                    tracing::info!(
                        table = self.table.name(),
                        saved,
                        "batch saved message by message after it failed as a whole"
                    );
                    return Ok(());
                }
                let first_error = failed.first().map(|f| f.error.to_string()).unwrap_or_default();
                Err(RecordError::BatchFallback {
                    failed_keys: failed.into_iter().map(|f| f.key).collect(),
                    first_error,
                })
            }
            Err(e) => {
                let _ = conn.rollback_tx().await;
                Err(e)
            }
        }
    }

    /// Returns how many messages were saved and the ones that failed; `stored` is the offset stored
    /// (exactly-once), once the transaction commits.
    async fn fallback_in<C: RecordConnection>(
        &self,
        conn: &mut C,
        msgs: &[Msg],
        at: &Position<'_>,
        committed: &mut Committed,
        stored: &mut Option<i64>,
    ) -> Result<(usize, Vec<FailedMessage>), RecordError> {
        let msgs = if self.exactly_once {
            let next = self.claim(conn, at).await?;
            *committed = Committed::Below(next);
            &msgs[msgs.partition_point(|m| m.offset < next)..]
        } else {
            msgs
        };
        let (mut saved, mut failed) = (0, Vec::new());
        if self.exactly_once {
            // In offset order, up to the first message that fails: the stored offset then points at it, so a
            // retry starts there and nothing saved is applied twice.
            for m in msgs {
                if let Err(error) = self.apply_saved(conn, m).await? {
                    failed.push(self.failed(m, error));
                    if saved > 0 {
                        self.store(conn, at, m.offset).await?;
                        *stored = Some(m.offset);
                    }
                    return Ok((saved, failed));
                }
                saved += 1;
            }
            if let Some(last) = msgs.last()
                && saved > 0
            {
                self.store(conn, at, last.offset + 1).await?;
                *stored = Some(last.offset + 1);
            }
            return Ok((saved, failed));
        }
        for group in self.groups(msgs) {
            for m in group {
                match self.apply_saved(conn, m).await? {
                    Ok(()) => saved += 1,
                    Err(error) => failed.push(self.failed(m, error)),
                }
            }
        }
        Ok((saved, failed))
    }

    fn failed(&self, m: &Msg, error: RecordError) -> FailedMessage {
        FailedMessage {
            key: self.key_text(m),
            offset: m.offset,
            error,
        }
    }

    /// Applies one message in a savepoint: `Ok(Err(_))` when it failed and was rolled back.
    async fn apply_saved<C: RecordConnection>(
        &self,
        conn: &mut C,
        m: &Msg,
    ) -> Result<Result<(), RecordError>, RecordError> {
        conn.begin_tx()
            .await
            .map_err(RecordError::db("beginning a savepoint", self.table.name()))?;
        match self.apply_one(conn, m).await {
            Ok(()) => {
                conn.commit_tx()
                    .await
                    .map_err(RecordError::db("releasing a savepoint", self.table.name()))?;
                Ok(Ok(()))
            }
            Err(e) => {
                conn.rollback_tx()
                    .await
                    .map_err(RecordError::db("rolling back a savepoint", self.table.name()))?;
                tracing::warn!(table = self.table.name(), key = %self.key_text(m), error = %e, "a message of the failed batch could not be saved");
                Ok(Err(e))
            }
        }
    }

    /// A message's key for messages and logs: its value as JSON (a key record as an object, a string key in
    /// quotes, a raw key as a string), or its offset when it has none.
    fn key_text(&self, m: &Msg) -> String {
        m.key.as_ref().map_or_else(
            || format!("offset {}", m.offset),
            |k| match k {
                DecodedKey::Value(v) => v.to_string(),
                other => other.clone().into_json().to_string(),
            },
        )
    }

    /// Runs a batch on a connection of the pool, every statement within the statement timeout. A lost connection
    /// (or one that timed out) is dropped, so the next attempt gets a new one, and, like a deadlock past its
    /// retries, reported as transient.
    async fn run(&self, msgs: Vec<Msg>, at: Position<'_>, batch: bool) -> Result<(), Failed> {
        let (Some(pool), Some(url)) = (&self.db.pool, &self.db.url) else {
            return Err(Failed::permanent(RecordError::Config("no connection pool".into())));
        };
        let mut conn = pool::get(pool, url).await.map_err(|e| {
            let error = RecordError::from(e);
            tracing::warn!(table = self.table.name(), %error, "could not connect to the database; the runner retries");
            Failed {
                error,
                transient: true,
                committed: Committed::Nothing,
            }
        })?;
        let result = with_statement_timeout(
            self.db.settings.statement_timeout,
            self.run_on(&mut conn, msgs, at, batch),
        )
        .await;
        match result {
            Err((failed, true)) => {
                tracing::warn!(
                    table = self.table.name(),
                    error = %failed.error,
                    "the database connection is lost; the runner retries, on a new connection"
                );
                pool::discard(conn);
                Err(failed)
            }
            Err((failed, false)) => Err(failed),
            Ok(()) => Ok(()),
        }
    }

    /// Runs a batch with deadlock retries, then the per-message fallback; an error says whether the connection is
    /// lost.
    async fn run_on(
        &self,
        conn: &mut Conn,
        msgs: Vec<Msg>,
        at: Position<'_>,
        batch: bool,
    ) -> Result<(), (Failed, bool)> {
        let mut committed = Committed::Nothing;
        let mut attempt = 1;
        let result = loop {
            match self.attempt(conn, &msgs, &at, batch, &mut committed).await {
                Err(e) if e.is_deadlock() && attempt < self.deadlock.attempts.max(1) => {
                    metrics::counter!(DEADLOCK.name, "topic" => at.topic.to_string()).increment(1);
                    let (lo, hi) = (
                        self.deadlock.min_sleep,
                        self.deadlock.max_sleep.max(self.deadlock.min_sleep),
                    );
                    let sleep = lo + (hi - lo).mul_f64(fastrand::f64());
                    tracing::warn!(table = self.table.name(), attempt, error = %e, ?sleep, "deadlock; retrying the transaction");
                    tokio::time::sleep(sleep).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        let Err(error) = result else { return Ok(()) };
        if lost(conn, &error).await {
            return failed(error, true, committed, true);
        }
        if error.is_deadlock() {
            tracing::warn!(table = self.table.name(), attempts = attempt, %error, "deadlock past the retries; the runner retries the batch later");
            return failed(error, true, committed, false);
        }
        if !(batch && self.fallback && msgs.len() > 1 && !matches!(error, RecordError::Config(_))) {
            return failed(error, false, committed, false);
        }
        tracing::warn!(table = self.table.name(), %error, messages = msgs.len(), "the batch failed; saving its messages one at a time");
        let Err(error) = self.fallback(conn, &msgs, &at, error, &mut committed).await else {
            return Ok(());
        };
        if lost(conn, &error).await {
            return failed(error, true, committed, true);
        }
        // The fallback's own transaction deadlocked (claiming the offset, committing): nothing of it is
        // committed, and it may pass.
        let transient = error.is_deadlock();
        failed(error, transient, committed, false)
    }
}

/// A batch that could not be applied: the error, whether it may pass on its own, what was committed anyway, and
/// whether the connection is lost (to be dropped).
fn failed(error: RecordError, transient: bool, committed: Committed, lost: bool) -> Result<(), (Failed, bool)> {
    Err((
        Failed {
            error,
            transient,
            committed,
        },
        lost,
    ))
}

/// Whether `error` came from a lost connection: an error of the connection itself, or a connection that no
/// longer answers `SELECT 1`.
async fn lost(conn: &mut Conn, error: &RecordError) -> bool {
    error.is_connection_error() || conn.run("SELECT 1", &[]).await.is_err()
}

async fn finish<C: RecordConnection>(
    conn: &mut C,
    result: Result<(), RecordError>,
    table: &str,
) -> Result<(), RecordError> {
    match result {
        Ok(()) => conn.commit_tx().await.map_err(RecordError::db("committing", table)),
        Err(e) => {
            let _ = conn.rollback_tx().await;
            Err(e)
        }
    }
}

#[async_trait]
impl Handler for RecordConsumer {
    type Payload = Json;

    async fn consume(&self, message: Message<Json>) -> Result<(), HandlerError> {
        let inner = &self.inner;
        let md = message.metadata;
        let m = Msg::new(to_payload(message.payload, inner.table.name())?, md.key, md.offset);
        if let Some(f) = &inner.filter
            && !f(&m.view())
        {
            tracing::debug!(
                topic = &*md.topic,
                offset = md.offset,
                "message skipped by the record consumer's filter"
            );
            return Ok(());
        }
        let at = Position {
            group_id: &md.group_id,
            topic: &md.topic,
            partition: md.partition,
        };
        inner
            .run(vec![m], at, false)
            .await
            .map_err(|f| f.into_handler_error(&[md.offset]))
    }
}

#[async_trait]
impl BatchHandler for BatchRecordConsumer {
    type Payload = Json;

    async fn consume_batch(&self, batch: Batch<Json>) -> Result<(), HandlerError> {
        let inner = &self.inner;
        let md = batch.metadata;
        let offsets: Vec<i64> = (0..batch.payloads.len())
            .map(|i| md.offsets.get(i).copied().unwrap_or(md.first_offset + i as i64))
            .collect();
        let mut msgs = Vec::with_capacity(batch.payloads.len());
        let mut keys = md.keys.into_iter();
        for (payload, offset) in batch.payloads.into_iter().zip(offsets.iter().copied()) {
            let m = Msg::new(to_payload(payload, inner.table.name())?, keys.next().flatten(), offset);
            if inner.filter.as_ref().is_none_or(|f| f(&m.view())) {
                msgs.push(m);
            }
        }
        if msgs.is_empty() {
            return Ok(());
        }
        let at = Position {
            group_id: &md.group_id,
            topic: &md.topic,
            partition: md.partition,
        };
        inner
            .run(msgs, at, true)
            .await
            .map_err(|f| f.into_handler_error(&offsets))
    }
}
