//! Statements built at run time for a [`RecordTable`], and the connections that run them.
//!
//! Rows are read back as one JSON object per row, built by the database (`jsonb_build_object`, `JSON_OBJECT`,
//! `json_object`), so one query reads any table without a Rust type per table.

use std::future::Future;

use deimos_outbox_diesel::db::bounded_call;
use deimos_outbox_diesel::{AsyncOutboxConnection, BeginTransaction, Conn, Dialect};
use diesel::QueryableByName;
#[cfg(feature = "sqlite")]
use diesel::SqliteConnection;
use diesel::result::QueryResult;
use diesel::sql_types::{BigInt, Binary, Bool, Date, Double, Nullable, Text, Timestamp};
#[cfg(feature = "mysql")]
use diesel_async::AsyncMysqlConnection;
#[cfg(feature = "postgres")]
use diesel_async::pg::AsyncPgConnection;
#[cfg(feature = "sqlite")]
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, RunQueryDsl, TransactionManager};
use serde_json::{Map, Value as Json};

use crate::table::{ColumnDef, ColumnType, RecordTable};
use crate::value::{SqlValue, normalize};

/// Parameters per statement: under every database's limit (SQLite: 32766).
pub(crate) const MAX_PARAMS: usize = 30_000;

/// A connection the record layer runs its statements on: diesel-async's PostgreSQL and MySQL connections, its
/// wrapped SQLite connection, and the outbox's [`Conn`]. It also takes outbox writes, so changes and the
/// messages announcing them share a transaction.
pub trait RecordConnection: AsyncOutboxConnection + Send {
    /// The SQL the connection speaks.
    fn sql_dialect(&self) -> Dialect;

    /// Runs a statement with bound values; returns the rows it affected.
    fn run(&mut self, sql: &str, binds: &[SqlValue]) -> impl Future<Output = QueryResult<usize>> + Send;

    /// Runs a query whose single text column is named `j`; returns its values.
    fn texts(&mut self, sql: &str, binds: &[SqlValue]) -> impl Future<Output = QueryResult<Vec<String>>> + Send;

    /// Begins a transaction, or a savepoint inside one.
    fn begin_tx(&mut self) -> impl Future<Output = QueryResult<()>> + Send;

    /// Commits what [`begin_tx`](Self::begin_tx) began.
    fn commit_tx(&mut self) -> impl Future<Output = QueryResult<()>> + Send;

    /// Rolls back what [`begin_tx`](Self::begin_tx) began.
    fn rollback_tx(&mut self) -> impl Future<Output = QueryResult<()>> + Send;
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Text)]
    j: String,
}

macro_rules! bound {
    ($db:ty, $sql:expr, $binds:expr) => {{
        let mut q = diesel::sql_query($sql).into_boxed::<$db>();
        for v in $binds {
            q = match v {
                SqlValue::Null(ty) => match ty {
                    ColumnType::Bool => q.bind::<Nullable<Bool>, _>(None::<bool>),
                    ColumnType::SmallInt | ColumnType::Integer | ColumnType::BigInt => {
                        q.bind::<Nullable<BigInt>, _>(None::<i64>)
                    }
                    ColumnType::Float | ColumnType::Double => q.bind::<Nullable<Double>, _>(None::<f64>),
                    ColumnType::Text => q.bind::<Nullable<Text>, _>(None::<String>),
                    ColumnType::Binary => q.bind::<Nullable<Binary>, _>(None::<Vec<u8>>),
                    ColumnType::Timestamp => q.bind::<Nullable<Timestamp>, _>(None::<chrono::NaiveDateTime>),
                    ColumnType::Date => q.bind::<Nullable<Date>, _>(None::<chrono::NaiveDate>),
                },
                SqlValue::Bool(b) => q.bind::<Bool, _>(*b),
                SqlValue::Int(i) => q.bind::<BigInt, _>(*i),
                SqlValue::Float(f) => q.bind::<Double, _>(*f),
                SqlValue::Text(s) => q.bind::<Text, _>(s.as_str()),
                SqlValue::Bytes(b) => q.bind::<Binary, _>(b.as_slice()),
                SqlValue::Timestamp(t) => q.bind::<Timestamp, _>(*t),
                SqlValue::Date(d) => q.bind::<Date, _>(*d),
            };
        }
        q
    }};
}

macro_rules! impl_record_connection {
    ($conn:ty, $db:ty, $dialect:expr) => {
        impl RecordConnection for $conn {
            fn sql_dialect(&self) -> Dialect {
                $dialect
            }

            async fn run(&mut self, sql: &str, binds: &[SqlValue]) -> QueryResult<usize> {
                bound!($db, sql, binds).execute(self).await
            }

            async fn texts(&mut self, sql: &str, binds: &[SqlValue]) -> QueryResult<Vec<String>> {
                let rows: Vec<TextRow> = bound!($db, sql, binds).load(self).await?;
                Ok(rows.into_iter().map(|r| r.j).collect())
            }

            async fn begin_tx(&mut self) -> QueryResult<()> {
                BeginTransaction::begin_transaction(self).await
            }

            async fn commit_tx(&mut self) -> QueryResult<()> {
                <$conn as AsyncConnection>::TransactionManager::commit_transaction(self).await
            }

            async fn rollback_tx(&mut self) -> QueryResult<()> {
                <$conn as AsyncConnection>::TransactionManager::rollback_transaction(self).await
            }
        }
    };
}

#[cfg(feature = "postgres")]
impl_record_connection!(AsyncPgConnection, diesel::pg::Pg, Dialect::Postgres);
#[cfg(feature = "mysql")]
impl_record_connection!(AsyncMysqlConnection, diesel::mysql::Mysql, Dialect::Mysql);
// SQLite begins IMMEDIATE (BeginTransaction): an update reads its row before writing it.
#[cfg(feature = "sqlite")]
impl_record_connection!(
    SyncConnectionWrapper<SqliteConnection>,
    diesel::sqlite::Sqlite,
    Dialect::Sqlite
);

macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            #[cfg(feature = "postgres")]
            Conn::Pg($c) => $body,
            #[cfg(feature = "mysql")]
            Conn::Mysql($c) => $body,
            #[cfg(feature = "sqlite")]
            Conn::Sqlite($c) => $body,
            #[allow(unreachable_patterns)]
            _ => Err(diesel::result::Error::QueryBuilderError(
                "a connection to a database deimos-records-diesel was built without: enable its feature of the same \
                 name (`postgres`, `mysql`, `sqlite`)"
                    .into(),
            )),
        }
    };
}

/// Each call within the statement timeout of the task, when it has one
/// ([`with_statement_timeout`](deimos_outbox_diesel::db::with_statement_timeout)).
impl RecordConnection for Conn {
    fn sql_dialect(&self) -> Dialect {
        self.dialect()
    }

    async fn run(&mut self, sql: &str, binds: &[SqlValue]) -> QueryResult<usize> {
        bounded_call(async { on_conn!(self, c => c.run(sql, binds).await) }).await
    }

    async fn texts(&mut self, sql: &str, binds: &[SqlValue]) -> QueryResult<Vec<String>> {
        bounded_call(async { on_conn!(self, c => c.texts(sql, binds).await) }).await
    }

    async fn begin_tx(&mut self) -> QueryResult<()> {
        bounded_call(async { on_conn!(self, c => c.begin_tx().await) }).await
    }

    async fn commit_tx(&mut self) -> QueryResult<()> {
        bounded_call(async { on_conn!(self, c => c.commit_tx().await) }).await
    }

    async fn rollback_tx(&mut self) -> QueryResult<()> {
        bounded_call(async { on_conn!(self, c => c.rollback_tx().await) }).await
    }
}

/// A statement under construction: placeholders and quoting per dialect.
pub(crate) struct Sql {
    dialect: Dialect,
    text: String,
    params: usize,
}

impl Sql {
    pub(crate) fn new(dialect: Dialect) -> Sql {
        Sql {
            dialect,
            text: String::with_capacity(256),
            params: 0,
        }
    }

    pub(crate) fn push(&mut self, s: &str) -> &mut Sql {
        self.text.push_str(s);
        self
    }

    pub(crate) fn param(&mut self) -> &mut Sql {
        self.params += 1;
        if self.dialect == Dialect::Postgres {
            use std::fmt::Write as _;
            let _ = write!(self.text, "${}", self.params);
        } else {
            self.text.push('?');
        }
        self
    }

    pub(crate) fn ident(&mut self, name: &str) -> &mut Sql {
        let q = if self.dialect == Dialect::Mysql { '`' } else { '"' };
        self.text.push(q);
        for c in name.chars() {
            if c == q {
                self.text.push(q);
            }
            self.text.push(c);
        }
        self.text.push(q);
        self
    }

    /// `a, b, c`
    pub(crate) fn idents<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> &mut Sql {
        for (i, n) in names.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.ident(n);
        }
        self
    }

    /// `(?, ?, ?)`
    pub(crate) fn tuple(&mut self, n: usize) -> &mut Sql {
        self.push("(");
        for i in 0..n {
            if i > 0 {
                self.push(", ");
            }
            self.param();
        }
        self.push(")")
    }

    /// One text column `j`: the row as a JSON object of `columns` (binary columns as hex: JSON cannot hold
    /// bytes, and SQLite refuses BLOBs in `json_object`).
    pub(crate) fn json_row(&mut self, columns: &[ColumnDef]) -> &mut Sql {
        let dialect = self.dialect;
        let object = |sql: &mut Sql, cols: &[ColumnDef]| {
            sql.push(match dialect {
                Dialect::Postgres => "jsonb_build_object(",
                Dialect::Mysql => "JSON_OBJECT(",
                _ => "json_object(",
            });
            for (i, c) in cols.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("'").push(&c.name.replace('\'', "''")).push("', ");
                if c.ty == ColumnType::Binary {
                    sql.push(match dialect {
                        Dialect::Postgres => "encode(",
                        Dialect::Mysql => "LOWER(HEX(",
                        _ => "lower(hex(",
                    });
                    sql.ident(&c.name);
                    sql.push(match dialect {
                        Dialect::Postgres => ", 'hex')",
                        _ => "))",
                    });
                } else {
                    sql.ident(&c.name);
                }
            }
            sql.push(")");
        };
        let chunks: Vec<&[ColumnDef]> = columns.chunks(50).collect();
        match dialect {
            // `||` joins jsonb objects.
            Dialect::Postgres => {
                self.push("(");
                for (i, chunk) in chunks.iter().enumerate() {
                    if i > 0 {
                        self.push(" || ");
                    }
                    object(self, chunk);
                }
                self.push(")::text");
            }
            // JSON_MERGE_PATCH / json_patch take two objects: nest them.
            _ => {
                let merge = if dialect == Dialect::Mysql {
                    "JSON_MERGE_PATCH("
                } else {
                    "json_patch("
                };
                if dialect == Dialect::Mysql {
                    self.push("CAST(");
                }
                for _ in 1..chunks.len() {
                    self.push(merge);
                }
                for (i, chunk) in chunks.iter().enumerate() {
                    object(self, chunk);
                    if i > 0 {
                        self.push(")");
                    }
                    if i + 1 < chunks.len() {
                        self.push(", ");
                    }
                }
                if dialect == Dialect::Mysql {
                    self.push(" AS CHAR)");
                }
            }
        }
        self.push(" AS j")
    }

    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.text)
    }
}

/// Parses rows read with [`Sql::json_row`] into record attributes.
pub(crate) fn parse_rows(table: &RecordTable, texts: Vec<String>) -> QueryResult<Vec<Map<String, Json>>> {
    texts
        .into_iter()
        .map(|t| {
            let Json::Object(mut row) =
                serde_json::from_str(&t).map_err(|e| diesel::result::Error::DeserializationError(Box::new(e)))?
            else {
                return Err(diesel::result::Error::DeserializationError(
                    "a row read back is not a JSON object".into(),
                ));
            };
            for c in table.columns() {
                if let Some(v) = row.remove(&c.name) {
                    row.insert(c.name.clone(), normalize(c, v));
                }
            }
            Ok(row)
        })
        .collect()
}

/// The database's current time, UTC, as a value to bind.
pub(crate) fn now() -> SqlValue {
    SqlValue::Timestamp(chrono::Utc::now().naive_utc())
}

/// Runs `f` in a transaction (a savepoint when one is open): committed when it returns `Ok`, rolled back
/// otherwise.
macro_rules! transaction {
    ($conn:expr, $body:expr) => {{
        $conn.begin_tx().await?;
        let result = $body;
        match result {
            Ok(v) => {
                $conn.commit_tx().await?;
                Ok(v)
            }
            Err(e) => {
                let _ = $conn.rollback_tx().await;
                Err(e)
            }
        }
    }};
}
pub(crate) use transaction;
