//! Connections and the relay's statements, for PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! The relay's statements are plain SQL written once with `?` placeholders and `{…}` slots that [`Dialect`] fills
//! in (placeholder style, quoting of `partition` and `key`, the database's clock). Times that decide leases are
//! always the database's UTC clock, never a relay's nor the session's time zone, so relays on machines with
//! skewed clocks or sessions in other time zones agree.
//!
//! Opening a connection gives up after a connect timeout. Inside the relay and the record consumers, every call
//! a [`Conn`] makes (one statement, or one short transaction) also has a deadline, their `statement_timeout`
//! ([`with_statement_timeout`]): a connection whose packets are dropped fails instead of hanging, and is dropped.

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use diesel::QueryableByName;
#[cfg(feature = "sqlite")]
use diesel::SqliteConnection;
use diesel::sql_types::{BigInt, Binary, Double, Integer, Nullable, Text};
#[cfg(feature = "mysql")]
use diesel_async::AsyncMysqlConnection;
#[cfg(feature = "postgres")]
use diesel_async::pg::AsyncPgConnection;
#[cfg(feature = "sqlite")]
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection, TransactionManager};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use deimos_core::redact;

use crate::error::OutboxError;

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// One set of embedded migrations per database (`diesel_migrations::embed_migrations!`), for
/// [`Conn::run_migrations`].
#[allow(missing_debug_implementations, reason = "diesel's EmbeddedMigrations has no Debug")]
pub struct Migrations {
    /// PostgreSQL's.
    pub postgres: EmbeddedMigrations,
    /// MySQL's / MariaDB's.
    pub mysql: EmbeddedMigrations,
    /// SQLite's.
    pub sqlite: EmbeddedMigrations,
}

/// Which SQL the database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// The dialect of a database URL: `postgres://` / `postgresql://`, `mysql://` / `mariadb://`, `sqlite://PATH`,
    /// `:memory:`, or a path ending in `.db`, `.sqlite` or `.sqlite3`.
    pub fn of_url(url: &str) -> Result<Dialect, OutboxError> {
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else if lower.starts_with("mysql://") || lower.starts_with("mariadb://") {
            Ok(Dialect::Mysql)
        } else if lower.starts_with("sqlite:")
            || lower == ":memory:"
            || [".db", ".sqlite", ".sqlite3"].iter().any(|e| lower.ends_with(e))
        {
            Ok(Dialect::Sqlite)
        } else {
            Err(OutboxError::UnsupportedUrl(redact::url(url).into_owned()))
        }
    }

    /// `sql` with its placeholders and slots filled in for this dialect.
    pub(crate) fn sql(self, sql: &str) -> String {
        let (q, now_ms, now) = match self {
            // Timestamps are UTC, as Rails writes them into Deimos's columns.
            Dialect::Postgres => (
                '"',
                "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
                "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')",
            ),
            // Milliseconds since the epoch from the UTC clock alone: `UNIX_TIMESTAMP(NOW(3))` goes through the
            // session's time zone, and is an hour off while a daylight-saving zone repeats an hour.
            Dialect::Mysql => (
                '`',
                "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000)",
                "UTC_TIMESTAMP(6)",
            ),
            Dialect::Sqlite => (
                '"',
                "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
                "strftime('%Y-%m-%d %H:%M:%f', 'now')",
            ),
        };
        // MySQL's optimizer may pick the `locked_by` index for a lease statement, and then locks every lease of
        // that owner: updates of two of one relay's leases deadlock. The (topic, partition) index locks one row.
        let leases = if self == Dialect::Mysql {
            "kafka_topic_info FORCE INDEX (index_kafka_topic_info_on_topic_and_partition)"
        } else {
            "kafka_topic_info"
        };
        let filled = sql
            .replace("{leases}", leases)
            .replace("{held}", HELD)
            .replace("{partition}", &format!("{q}partition{q}"))
            .replace("{key}", &format!("{q}key{q}"))
            .replace("{now_ms}", now_ms)
            .replace("{now}", now);
        if self != Dialect::Postgres {
            return filled;
        }
        let mut out = String::with_capacity(filled.len() + 16);
        let mut n = 0;
        for c in filled.chars() {
            if c == '?' {
                n += 1;
                let _ = write!(out, "${n}");
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Seconds since a (UTC) timestamp column's value, as a double.
    fn age_seconds(self, column: &str) -> String {
        match self {
            Dialect::Postgres => {
                format!("EXTRACT(EPOCH FROM ((CURRENT_TIMESTAMP AT TIME ZONE 'UTC') - {column}))::FLOAT8")
            }
            Dialect::Mysql => format!("TIMESTAMPDIFF(MICROSECOND, {column}, UTC_TIMESTAMP(6)) / 1000000.0"),
            Dialect::Sqlite => format!("(julianday('now') - julianday({column})) * 86400.0"),
        }
    }
}

/// One open connection of the relay (or of `status` / `migrate`). Each database is there with its feature
/// (`postgres`, `mysql`, `sqlite`).
#[allow(clippy::large_enum_variant, reason = "one per worker, never moved in a hot path")]
pub enum Conn {
    /// PostgreSQL (tokio-postgres underneath).
    #[cfg(feature = "postgres")]
    Pg(AsyncPgConnection),
    /// MySQL / MariaDB (mysql_async underneath).
    #[cfg(feature = "mysql")]
    Mysql(AsyncMysqlConnection),
    /// SQLite, run on a blocking thread.
    #[cfg(feature = "sqlite")]
    Sqlite(SyncConnectionWrapper<SqliteConnection>),
    /// A build without any database: no connection can be made (every URL is refused with the feature it needs).
    #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
    #[doc(hidden)]
    NoDatabase(std::convert::Infallible),
}

/// The error for a URL of a database this build does not speak: which feature turns it on.
pub(crate) fn not_compiled_in(dialect: Dialect, url: &str) -> OutboxError {
    let (name, feature) = match dialect {
        Dialect::Postgres => ("PostgreSQL", "postgres"),
        Dialect::Mysql => ("MySQL/MariaDB", "mysql"),
        Dialect::Sqlite => ("SQLite", "sqlite"),
    };
    OutboxError::Config(format!(
        "{}: this build has no {name} support; enable the `{feature}` feature of `deimos` (or of \
         `deimos-outbox-diesel` / `deimos-records-diesel`)",
        redact::url(url)
    ))
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Conn").field(&self.dialect()).finish()
    }
}

/// Runs `$body` with `$c` bound to the connection inside `$conn`, whatever its database, within the statement
/// deadline of the task (see [`bounded`]).
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        bounded(async {
            match $conn {
                #[cfg(feature = "postgres")]
                Conn::Pg($c) => $body,
                #[cfg(feature = "mysql")]
                Conn::Mysql($c) => $body,
                #[cfg(feature = "sqlite")]
                Conn::Sqlite($c) => $body,
                #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
                Conn::NoDatabase(never) => match *never {},
            }
        })
        .await
    };
}

/// Attempts of a statement (or of a short transaction) that failed on a deadlock or a lock wait timeout.
const DEADLOCK_ATTEMPTS: u32 = 5;

/// Runs `$call` (an awaited `Result<_, OutboxError>`) again when it fails on a deadlock or a lock wait timeout
/// ([`OutboxError::is_deadlock`]): up to [`DEADLOCK_ATTEMPTS`] in all, after a short random pause (the other
/// transaction usually finishes meanwhile), each retry counted in the `deadlock` metric of `$topic`. Every lease
/// statement and every statement of the relay's batches goes through it: under MySQL's REPEATABLE READ, writers'
/// gap locks and other relays' lease updates make them deadlock now and then.
macro_rules! retrying {
    ($topic:expr, $call:expr) => {{
        let mut attempt = 1u32;
        loop {
            match $call {
                Err(e) if e.is_deadlock() && attempt < DEADLOCK_ATTEMPTS => {
                    metrics::counter!(deimos_metrics::catalogue::DEADLOCK.name, "topic" => $topic.to_string())
                        .increment(1);
                    tracing::debug!(topic = %$topic, attempt, error = %e, "outbox: deadlock; running the statement again");
                    tokio::time::sleep(deadlock_pause(attempt)).await;
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}

/// A random pause of 5–20 ms times `attempt`, so that two transactions that deadlocked do not meet again.
fn deadlock_pause(attempt: u32) -> Duration {
    Duration::from_millis(u64::from(attempt) * (5 + fastrand::u64(0..15)))
}

/// Whether `error` is a deadlock or a lock wait that timed out, which running the statement (or the transaction)
/// again resolves: MySQL's and MariaDB's 1213 and 1205, PostgreSQL's deadlock and serialization failures, SQLite's
/// busy database.
pub fn is_deadlock(error: &diesel::result::Error) -> bool {
    let message = error.to_string();
    [
        "Deadlock found when trying to get lock",
        "Lock wait timeout exceeded",
        "deadlock detected",
        "could not serialize access",
        "database is locked",
    ]
    .iter()
    .any(|m| message.contains(m))
        || matches!(
            error,
            diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::SerializationFailure, _)
        )
}

tokio::task_local! {
    /// The `statement_timeout` of every [`Conn`] call made in [`with_statement_timeout`].
    static STATEMENT_TIMEOUT: Duration;
}

/// Runs `work` with every [`Conn`] call made in it (one statement, or one short transaction) bounded by
/// `timeout`. Tasks spawned from `work` need their own scope. A call that times out fails with a
/// `ClosedConnection` error: the connection is in an unknown state and must be dropped (with
/// [`pool::discard`](crate::pool::discard) for a pooled one).
pub async fn with_statement_timeout<F: Future>(timeout: Duration, work: F) -> F::Output {
    STATEMENT_TIMEOUT.scope(timeout, work).await
}

/// An error saying a database call got no answer within `limit`.
trait TimedOut {
    fn timed_out(limit: Duration) -> Self;
}

impl TimedOut for diesel::result::Error {
    fn timed_out(limit: Duration) -> Self {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection,
            Box::new(format!(
                "no answer from the database within {limit:?} (statement_timeout); the connection is \
                 dropped and a new one opened"
            )),
        )
    }
}

impl TimedOut for OutboxError {
    fn timed_out(limit: Duration) -> Self {
        OutboxError::Database {
            doing: "waiting for the database",
            source: diesel::result::Error::timed_out(limit),
        }
    }
}

/// Awaits one database call made outside [`Conn`]'s own methods (on the connection inside it), within the
/// statement timeout of [`with_statement_timeout`] if the task has one.
pub async fn bounded_call<T>(call: impl Future<Output = diesel::QueryResult<T>>) -> diesel::QueryResult<T> {
    bounded(call).await
}

/// Awaits one database call, giving up after the task's statement timeout if it has one (relay tasks do). A
/// call given up on leaves its connection in an unknown state: the caller must drop the connection.
async fn bounded<T, E: TimedOut>(call: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    match STATEMENT_TIMEOUT.try_with(|limit| *limit) {
        Ok(limit) => tokio::time::timeout(limit, call)
            .await
            .unwrap_or_else(|_| Err(E::timed_out(limit))),
        Err(_) => call.await,
    }
}

/// How long [`Conn::connect`] waits for the database.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `$body` (which uses `$c`) in a transaction on `$c`: committed when it returns `Ok`, rolled back otherwise.
macro_rules! in_transaction {
    ($c:ident, $body:expr) => {{
        begin($c).await?;
        let result = $body;
        finish($c, result).await
    }};
}

async fn begin<C: BeginTransaction>(c: &mut C) -> Result<(), OutboxError> {
    c.begin_transaction()
        .await
        .map_err(OutboxError::db("beginning a transaction"))
}

/// Begins a transaction, or a savepoint inside one, the way each database needs for a writer that reads first.
///
/// SQLite begins `IMMEDIATE`: the write lock is taken up front and waited for (busy_timeout). A deferred
/// `BEGIN` that reads before it writes fails at once with "database is locked" when another connection wrote
/// in between, as a relay and a writer on the same file do. PostgreSQL and MySQL begin as diesel does.
pub trait BeginTransaction: AsyncConnection {
    /// Begins the transaction (or a savepoint).
    fn begin_transaction(&mut self) -> impl std::future::Future<Output = diesel::QueryResult<()>> + Send;
}

#[cfg(feature = "postgres")]
impl BeginTransaction for AsyncPgConnection {
    async fn begin_transaction(&mut self) -> diesel::QueryResult<()> {
        <Self as AsyncConnection>::TransactionManager::begin_transaction(self).await
    }
}

#[cfg(feature = "mysql")]
impl BeginTransaction for AsyncMysqlConnection {
    async fn begin_transaction(&mut self) -> diesel::QueryResult<()> {
        <Self as AsyncConnection>::TransactionManager::begin_transaction(self).await
    }
}

#[cfg(feature = "sqlite")]
impl BeginTransaction for SyncConnectionWrapper<SqliteConnection> {
    async fn begin_transaction(&mut self) -> diesel::QueryResult<()> {
        self.spawn_blocking(|inner| {
            use diesel::connection::{AnsiTransactionManager, TransactionManager as _};
            match AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE") {
                Err(diesel::result::Error::AlreadyInTransaction) => AnsiTransactionManager::begin_transaction(inner),
                other => other,
            }
        })
        .await
    }
}

async fn rollback<C: AsyncConnection>(c: &mut C) -> Result<(), OutboxError> {
    C::TransactionManager::rollback_transaction(c)
        .await
        .map_err(OutboxError::db("rolling back"))
}

async fn finish<C: AsyncConnection, T>(c: &mut C, result: Result<T, OutboxError>) -> Result<T, OutboxError> {
    match result {
        Ok(v) => {
            C::TransactionManager::commit_transaction(c)
                .await
                .map_err(OutboxError::db("committing"))?;
            Ok(v)
        }
        Err(e) => {
            let _ = C::TransactionManager::rollback_transaction(c).await;
            Err(e)
        }
    }
}

/// A row of `kafka_messages` as the relay reads it.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct MessageRow {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = Nullable<Binary>)]
    pub(crate) message: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    pub(crate) key: Option<Vec<u8>>,
    /// Read as bytes, exactly as stored: a text column may hold bytes that are not UTF-8 (written by another
    /// writer), and partitioning must use those bytes, not a lossy reading of them.
    #[diesel(sql_type = Nullable<Binary>)]
    pub(crate) partition_key: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    pub(crate) headers: Option<Vec<u8>>,
}

/// A [`MessageRow`] with the lowest id of its topic's rows that have no partition yet, read in the same
/// statement (so in the same snapshot).
#[derive(QueryableByName)]
struct FetchedRow {
    #[diesel(embed)]
    message: MessageRow,
    #[diesel(sql_type = Nullable<BigInt>)]
    unresolved: Option<i64>,
}

/// A row without a partition (-1), as the relay reads it to give it one.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct UnpartitionedRow {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = Nullable<Binary>)]
    pub(crate) key: Option<Vec<u8>>,
    /// As bytes (see [`MessageRow::partition_key`]).
    #[diesel(sql_type = Nullable<Binary>)]
    pub(crate) partition_key: Option<Vec<u8>>,
}

#[derive(QueryableByName)]
struct FenceRow {
    #[diesel(sql_type = BigInt)]
    fence: i64,
}

#[derive(QueryableByName)]
struct TopicPartitionRow {
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Integer)]
    part: i32,
}

/// The backlog of one topic partition, for `status` and the pending metrics.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
#[non_exhaustive]
pub struct Backlog {
    /// The topic.
    #[diesel(sql_type = Text)]
    pub topic: String,
    /// The partition (-1: rows written without one).
    #[diesel(sql_type = Integer)]
    pub partition: i32,
    /// Rows waiting.
    #[diesel(sql_type = BigInt)]
    pub count: i64,
    /// Seconds the oldest row (the lowest id, the first to be sent) has waited.
    #[diesel(sql_type = Double)]
    pub max_wait_seconds: f64,
}

/// A lease, for `status`.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
#[non_exhaustive]
pub struct Lease {
    /// The topic.
    #[diesel(sql_type = Text)]
    pub topic: String,
    /// The partition (-1: rows written without one).
    #[diesel(sql_type = Integer)]
    pub partition: i32,
    /// The relay worker holding it, if any.
    #[diesel(sql_type = Nullable<Text>)]
    pub locked_by: Option<String>,
    /// Milliseconds until it expires (negative: expired).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub expires_in_ms: Option<i64>,
    /// The fencing token of the current (or last) lease.
    #[diesel(sql_type = BigInt)]
    pub fence: i64,
}

/// Ids per inlined `IN` list: MariaDB turns a list of 1000 values or more into a temporary table it builds for
/// every statement; several shorter lists keep it a lookup.
const IDS_PER_LIST: usize = 500;

/// `id NOT IN (…) AND id NOT IN (…)` (or `id IN (…) OR id IN (…)` when `negated` is false) for `ids`, inlined in
/// lists of at most [`IDS_PER_LIST`]; `ids` must not be empty.
fn id_lists(ids: &[i64], negated: bool) -> String {
    let (op, join) = if negated { ("NOT IN", " AND ") } else { ("IN", " OR ") };
    let lists: Vec<String> = ids
        .chunks(IDS_PER_LIST)
        .map(|chunk| format!("id {op} {}", id_list(chunk)))
        .collect();
    format!("({})", lists.join(join))
}

/// `(a, b, c)` for an id list: integers, so safe to inline (one statement whatever the count).
fn id_list(ids: &[i64]) -> String {
    let mut out = String::with_capacity(ids.len() * 8 + 2);
    out.push('(');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{id}");
    }
    out.push(')');
    out
}

/// The lease row of a partition while `owner` holds it under `fence`.
const HELD: &str = "topic = ? AND {partition} = ? AND locked_by = ? AND fence = ?";

/// Binds the topic, partition, owner and fence of a [`HELD`] condition.
macro_rules! bind_held {
    ($query:expr, $topic:expr, $partition:expr, $owner:expr, $fence:expr) => {{
        $query
            .bind::<Text, _>($topic)
            .bind::<Integer, _>($partition)
            .bind::<Text, _>($owner)
            .bind::<BigInt, _>($fence)
    }};
}

#[cfg(feature = "mysql")]
/// The URL diesel-async's MySQL client takes for a `mysql://` or `mariadb://` URL.
pub(crate) fn mysql_url(url: &str) -> String {
    url.replacen("mariadb://", "mysql://", 1)
}

#[cfg(feature = "sqlite")]
/// The file of a SQLite URL (`sqlite://PATH`, `sqlite:PATH`, or a bare path).
pub(crate) fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url)
}

#[cfg(feature = "sqlite")]
/// Opens a SQLite connection with WAL and a busy timeout, so relay workers and writers can share the file.
pub(crate) async fn establish_sqlite(
    path: &str,
    busy_timeout: Duration,
) -> diesel::ConnectionResult<SyncConnectionWrapper<SqliteConnection>> {
    let mut conn = SyncConnectionWrapper::<SqliteConnection>::establish(path).await?;
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
        busy_timeout.as_millis()
    ))
    .await
    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

/// `future` (opening a connection to `url`), given up on after `limit`, with its error as an [`OutboxError`].
pub(crate) async fn connecting<T>(
    url: &str,
    limit: Duration,
    future: impl Future<Output = diesel::ConnectionResult<T>>,
) -> Result<T, OutboxError> {
    let error = |message: String| OutboxError::Connect {
        url: redact::url(url).into_owned(),
        message: redact::text(&message).into_owned(),
    };
    match tokio::time::timeout(limit, future).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => {
            let mut message = e.to_string();
            // diesel-async keeps only "error connecting to server" of tokio-postgres's error, not its cause: ask
            // the socket why (connection refused, no route, unknown host).
            if message.contains("error connecting to server")
                && let Some(why) = tcp_failure(url, 5432, limit).await
            {
                message = format!("{message}: {why}");
            }
            Err(error(message))
        }
        Err(_) => Err(error(format!(
            "the database did not answer within {limit:?} (connect_timeout)"
        ))),
    }
}

/// Why a TCP connection to the host and port of `url` (`scheme://[user[:password]@]host[:port][/…]`) fails, if it
/// does.
async fn tcp_failure(url: &str, default_port: u16, limit: Duration) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
        _ => (host_port, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    match tokio::time::timeout(limit, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("{host}:{port}: {e}")),
        Err(_) => Some(format!("{host}:{port}: no answer within {limit:?}")),
    }
}

impl Conn {
    /// Opens a connection, giving up after [`DEFAULT_CONNECT_TIMEOUT`]. SQLite files get WAL and a busy timeout,
    /// so relay workers and writers can share them.
    pub async fn connect(url: &str) -> Result<Conn, OutboxError> {
        Conn::connect_within(url, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// Opens a connection, giving up after `limit` (a server that accepts the TCP connection but never answers
    /// fails with [`OutboxError::Connect`] instead of hanging).
    pub async fn connect_within(url: &str, limit: Duration) -> Result<Conn, OutboxError> {
        match Dialect::of_url(url)? {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => Ok(Conn::Pg(
                connecting(url, limit, AsyncPgConnection::establish(url)).await?,
            )),
            #[cfg(feature = "mysql")]
            Dialect::Mysql => Ok(Conn::Mysql(
                connecting(url, limit, AsyncMysqlConnection::establish(&mysql_url(url))).await?,
            )),
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => Ok(Conn::Sqlite(
                connecting(url, limit, establish_sqlite(sqlite_path(url), Duration::from_secs(10))).await?,
            )),
            #[allow(unreachable_patterns, reason = "reachable in builds without every database")]
            other => {
                let _ = limit;
                Err(not_compiled_in(other, url))
            }
        }
    }

    /// Begins a transaction (for code that writes through [`crate::Outbox`] on a `Conn`).
    pub async fn begin(&mut self) -> Result<(), OutboxError> {
        with_conn!(self, c => begin(c).await)
    }

    /// Commits the transaction begun with [`begin`](Self::begin).
    pub async fn commit(&mut self) -> Result<(), OutboxError> {
        with_conn!(self, c => finish(c, Ok(())).await)
    }

    /// Rolls back the transaction begun with [`begin`](Self::begin).
    pub async fn rollback(&mut self) -> Result<(), OutboxError> {
        with_conn!(self, c => rollback(c).await)
    }

    /// Runs SQL statements (no parameters, no results).
    pub async fn execute(&mut self, sql: &str) -> Result<(), OutboxError> {
        with_conn!(self, c => c.batch_execute(sql).await).map_err(OutboxError::db("running SQL"))
    }

    /// The connection's dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            #[cfg(feature = "postgres")]
            Conn::Pg(_) => Dialect::Postgres,
            #[cfg(feature = "mysql")]
            Conn::Mysql(_) => Dialect::Mysql,
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(_) => Dialect::Sqlite,
            #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
            Conn::NoDatabase(never) => match *never {},
        }
    }

    /// Runs the embedded migrations that have not run yet (Deimos's tables if missing, then the deimos-rs
    /// upgrade); returns the versions applied. Needs tokio's multi-thread runtime.
    pub async fn migrate(self) -> Result<(Conn, Vec<String>), OutboxError> {
        self.run_migrations(Migrations {
            postgres: PG_MIGRATIONS,
            mysql: MYSQL_MIGRATIONS,
            sqlite: SQLITE_MIGRATIONS,
        })
        .await
    }

    /// Runs the migrations of this connection's database that have not run yet (diesel's
    /// `__diesel_schema_migrations` keeps track); returns the versions applied. For crates with tables of their
    /// own. Needs tokio's multi-thread runtime.
    pub async fn run_migrations(self, migrations: Migrations) -> Result<(Conn, Vec<String>), OutboxError> {
        fn run<DB: diesel::backend::Backend>(
            harness: &mut impl MigrationHarness<DB>,
            migrations: EmbeddedMigrations,
        ) -> Result<Vec<String>, OutboxError> {
            harness
                .run_pending_migrations(migrations)
                .map(|v| v.iter().map(ToString::to_string).collect())
                .map_err(|e| OutboxError::Migration(e.to_string()))
        }
        use diesel_async::AsyncMigrationHarness;
        let _ = &migrations;
        match self {
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => {
                let mut h = AsyncMigrationHarness::new(c);
                let applied = run(&mut h, migrations.postgres)?;
                Ok((Conn::Pg(h.into_inner()), applied))
            }
            #[cfg(feature = "mysql")]
            Conn::Mysql(c) => {
                let mut h = AsyncMigrationHarness::new(c);
                let applied = run(&mut h, migrations.mysql)?;
                Ok((Conn::Mysql(h.into_inner()), applied))
            }
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(c) => {
                let mut h = AsyncMigrationHarness::new(c);
                let applied = run(&mut h, migrations.sqlite)?;
                Ok((Conn::Sqlite(h.into_inner()), applied))
            }
            #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
            Conn::NoDatabase(never) => match never {},
        }
    }

    /// The (topic, partition) pairs that have rows; partition -1 for rows without one.
    pub(crate) async fn partitions_with_rows(&mut self) -> Result<Vec<(String, i32)>, OutboxError> {
        let sql = match self.dialect() {
            // A loose index scan over (topic, partition, id): one index probe per partition, whatever the
            // backlog (a plain DISTINCT reads every row).
            Dialect::Postgres => Dialect::Postgres.sql(
                "WITH RECURSIVE tp AS ( \
                   (SELECT topic, {partition} FROM kafka_messages ORDER BY topic, {partition} LIMIT 1) \
                   UNION ALL \
                   SELECT n.topic, n.{partition} FROM tp CROSS JOIN LATERAL ( \
                     SELECT m.topic, m.{partition} FROM kafka_messages m \
                     WHERE (m.topic, m.{partition}) > (tp.topic, tp.{partition}) \
                     ORDER BY m.topic, m.{partition} LIMIT 1) n \
                 ) SELECT topic, {partition} AS part FROM tp",
            ),
            // MySQL/MariaDB read DISTINCT over the index's prefix with a loose index scan themselves.
            d => d.sql("SELECT DISTINCT topic, {partition} AS part FROM kafka_messages"),
        };
        let rows: Vec<TopicPartitionRow> = with_conn!(self, c => diesel::sql_query(&sql).load(c).await)
            .map_err(OutboxError::db("looking for topics and partitions with messages"))?;
        Ok(rows.into_iter().map(|r| (r.topic, r.part)).collect())
    }

    /// Takes the lease of (topic, partition) for `owner` if it is free, expired, or `owner`'s own (from a worker
    /// of this relay that failed); returns its new fencing token.
    pub async fn acquire(
        &mut self,
        topic: &str,
        partition: i32,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<Option<i64>, OutboxError> {
        retrying!(topic, self.acquire_once(topic, partition, owner, ttl_ms).await)
    }

    async fn acquire_once(
        &mut self,
        topic: &str,
        partition: i32,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<Option<i64>, OutboxError> {
        let d = self.dialect();
        let ensure = d.sql(match d {
            Dialect::Postgres => {
                "INSERT INTO kafka_topic_info (topic, {partition}, last_processed_at) VALUES (?, ?, {now}) ON CONFLICT DO NOTHING"
            }
            Dialect::Mysql => {
                "INSERT IGNORE INTO kafka_topic_info (topic, {partition}, last_processed_at) VALUES (?, ?, {now})"
            }
            Dialect::Sqlite => {
                "INSERT OR IGNORE INTO kafka_topic_info (topic, {partition}, last_processed_at) VALUES (?, ?, {now})"
            }
        });
        let take = d.sql(
            "UPDATE {leases} SET locked_by = ?, locked_at = {now}, lease_until = {now_ms} + ?, \
             fence = fence + 1, error = FALSE \
             WHERE topic = ? AND {partition} = ? \
             AND (locked_by IS NULL OR locked_by = ? OR lease_until IS NULL OR lease_until < {now_ms})",
        );
        let read = d.sql("SELECT fence FROM kafka_topic_info WHERE topic = ? AND {partition} = ? AND locked_by = ?");
        with_conn!(self, c => {
            diesel::sql_query(&ensure)
                .bind::<Text, _>(topic)
                .bind::<Integer, _>(partition)
                .execute(c)
                .await
                .map_err(OutboxError::db("creating a lease row"))?;
            let taken = diesel::sql_query(&take)
                .bind::<Text, _>(owner)
                .bind::<BigInt, _>(ttl_ms)
                .bind::<Text, _>(topic)
                .bind::<Integer, _>(partition)
                .bind::<Text, _>(owner)
                .execute(c)
                .await
                .map_err(OutboxError::db("taking a lease"))?;
            if taken == 0 {
                return Ok(None);
            }
            let rows: Vec<FenceRow> = diesel::sql_query(&read)
                .bind::<Text, _>(topic)
                .bind::<Integer, _>(partition)
                .bind::<Text, _>(owner)
                .load(c)
                .await
                .map_err(OutboxError::db("reading a lease"))?;
            Ok(rows.into_iter().next().map(|r| r.fence))
        })
    }

    /// Extends a held lease; `false` if it is no longer ours (taken over after it expired).
    pub async fn renew(
        &mut self,
        topic: &str,
        partition: i32,
        owner: &str,
        fence: i64,
        ttl_ms: i64,
    ) -> Result<bool, OutboxError> {
        retrying!(topic, self.renew_once(topic, partition, owner, fence, ttl_ms).await)
    }

    async fn renew_once(
        &mut self,
        topic: &str,
        partition: i32,
        owner: &str,
        fence: i64,
        ttl_ms: i64,
    ) -> Result<bool, OutboxError> {
        let sql = self.dialect().sql(
            "UPDATE {leases} SET locked_at = {now}, lease_until = {now_ms} + ? \
             WHERE {held}",
        );
        let n: usize = with_conn!(self, c => diesel::sql_query(&sql)
            .bind::<BigInt, _>(ttl_ms)
            .bind::<Text, _>(topic)
            .bind::<Integer, _>(partition)
            .bind::<Text, _>(owner)
            .bind::<BigInt, _>(fence)
            .execute(c)
            .await)
        .map_err(OutboxError::db("renewing a lease"))?;
        Ok(n == 1)
    }

    /// Whether the lease is still held, without extending it.
    #[cfg(feature = "postgres")]
    async fn renew_check(&mut self, topic: &str, partition: i32, owner: &str, fence: i64) -> Result<bool, OutboxError> {
        let sql = self.dialect().sql("SELECT fence FROM kafka_topic_info WHERE {held}");
        let rows: Vec<FenceRow> =
            with_conn!(self, c => bind_held!(diesel::sql_query(&sql), topic, partition, owner, fence)
            .load(c)
            .await)
            .map_err(OutboxError::db("reading a lease"))?;
        Ok(!rows.is_empty())
    }

    /// Gives a lease back (Deimos's `clear_lock`).
    pub async fn release(&mut self, topic: &str, partition: i32, owner: &str, fence: i64) -> Result<(), OutboxError> {
        retrying!(topic, self.release_once(topic, partition, owner, fence).await)
    }

    async fn release_once(&mut self, topic: &str, partition: i32, owner: &str, fence: i64) -> Result<(), OutboxError> {
        let sql = self.dialect().sql(
            "UPDATE {leases} SET locked_by = NULL, locked_at = NULL, lease_until = NULL, error = FALSE, \
             retries = 0, last_processed_at = {now} \
             WHERE {held}",
        );
        with_conn!(self, c => bind_held!(diesel::sql_query(&sql), topic, partition, owner, fence)
            .execute(c)
            .await)
        .map_err(OutboxError::db("releasing a lease"))?;
        Ok(())
    }

    /// The partition's lowest `limit` rows that are not in `in_flight`, in id order, read with one statement (one
    /// snapshot: a transaction that commits meanwhile is either wholly in it or wholly out of it), and cut before
    /// the topic's lowest row that has no partition yet: such a row may belong to this partition, and nothing of
    /// its key may go before it.
    pub(crate) async fn next_rows(
        &mut self,
        topic: &str,
        partition: i32,
        in_flight: &[i64],
        limit: i64,
    ) -> Result<Vec<MessageRow>, OutboxError> {
        retrying!(topic, self.next_rows_once(topic, partition, in_flight, limit).await)
    }

    async fn next_rows_once(
        &mut self,
        topic: &str,
        partition: i32,
        in_flight: &[i64],
        limit: i64,
    ) -> Result<Vec<MessageRow>, OutboxError> {
        const SELECT: &str = "SELECT id, message, {key} AS {key}, partition_key, headers, \
             (SELECT MIN(u.id) FROM kafka_messages u WHERE u.topic = ? AND u.{partition} = -1) AS unresolved \
             FROM kafka_messages WHERE topic = ? AND {partition} = ?";
        let d = self.dialect();
        let fetched: Vec<FetchedRow> = match self {
            // One array parameter (PostgreSQL looks it up by hash) instead of thousands of literals to parse.
            #[cfg(feature = "postgres")]
            Conn::Pg(pg) if !in_flight.is_empty() => {
                let sql = d.sql(&format!("{SELECT} AND id <> ALL(?) ORDER BY id LIMIT ?"));
                diesel::sql_query(&sql)
                    .bind::<Text, _>(topic)
                    .bind::<Text, _>(topic)
                    .bind::<Integer, _>(partition)
                    .bind::<diesel::sql_types::Array<BigInt>, _>(in_flight)
                    .bind::<BigInt, _>(limit)
                    .load(pg)
                    .await
            }
            conn => {
                let exclude = if in_flight.is_empty() {
                    String::new()
                } else {
                    format!(" AND {}", id_lists(in_flight, true))
                };
                let sql = d.sql(&format!("{SELECT}{exclude} ORDER BY id LIMIT ?"));
                with_conn!(conn, c => diesel::sql_query(&sql)
                    .bind::<Text, _>(topic)
                    .bind::<Text, _>(topic)
                    .bind::<Integer, _>(partition)
                    .bind::<BigInt, _>(limit)
                    .load(c)
                    .await)
            }
        }
        .map_err(OutboxError::db("reading pending messages"))?;
        Ok(fetched
            .into_iter()
            .take_while(|f| f.unresolved.is_none_or(|u| f.message.id < u))
            .map(|f| f.message)
            .collect())
    }

    /// The topic's lowest `limit` rows without a partition (-1), in id order.
    pub(crate) async fn unpartitioned_rows(
        &mut self,
        topic: &str,
        limit: i64,
    ) -> Result<Vec<UnpartitionedRow>, OutboxError> {
        let sql = self.dialect().sql(
            "SELECT id, {key} AS {key}, partition_key FROM kafka_messages \
             WHERE topic = ? AND {partition} = -1 ORDER BY id LIMIT ?",
        );
        with_conn!(self, c => diesel::sql_query(&sql)
            .bind::<Text, _>(topic)
            .bind::<BigInt, _>(limit)
            .load(c)
            .await)
        .map_err(OutboxError::db("reading messages without a partition"))
    }

    /// Gives rows without a partition the partition of each `(id, partition)` pair, with one statement; rows that
    /// have one already are left alone. Returns the rows changed.
    ///
    /// The rows are found by primary key, so MySQL locks those rows alone: no gap a writer inserts into, and no
    /// row of a transaction that has not committed yet.
    pub(crate) async fn set_partitions(&mut self, topic: &str, assigned: &[(i64, i32)]) -> Result<usize, OutboxError> {
        retrying!(topic, self.set_partitions_once(topic, assigned).await)
    }

    async fn set_partitions_once(&mut self, topic: &str, assigned: &[(i64, i32)]) -> Result<usize, OutboxError> {
        if assigned.is_empty() {
            return Ok(0);
        }
        let d = self.dialect();
        match self {
            #[cfg(feature = "postgres")]
            Conn::Pg(pg) => {
                let (ids, partitions): (Vec<i64>, Vec<i32>) = assigned.iter().copied().unzip();
                diesel::sql_query(
                    "UPDATE kafka_messages m SET \"partition\" = a.p FROM unnest($1::BIGINT[], $2::INTEGER[]) AS a(id, p) \
                     WHERE m.id = a.id AND m.topic = $3 AND m.\"partition\" = -1",
                )
                .bind::<diesel::sql_types::Array<BigInt>, _>(ids)
                .bind::<diesel::sql_types::Array<Integer>, _>(partitions)
                .bind::<Text, _>(topic)
                .execute(pg)
                .await
            }
            #[allow(unreachable_patterns, reason = "unreachable in a build with PostgreSQL alone")]
            conn => {
                let mut by_partition: std::collections::BTreeMap<i32, Vec<i64>> = std::collections::BTreeMap::new();
                for (id, p) in assigned {
                    by_partition.entry(*p).or_default().push(*id);
                }
                let mut case = String::from("CASE");
                for (p, ids) in &by_partition {
                    let _ = write!(case, " WHEN {} THEN {p}", id_lists(ids, false));
                }
                case.push_str(" ELSE {partition} END");
                let ids: Vec<i64> = assigned.iter().map(|(id, _)| *id).collect();
                let table = if d == Dialect::Mysql {
                    "kafka_messages FORCE INDEX (PRIMARY)"
                } else {
                    "kafka_messages"
                };
                let sql = d.sql(&format!(
                    "UPDATE {table} SET {{partition}} = {case} WHERE {} AND topic = ? AND {{partition}} = -1",
                    id_lists(&ids, false)
                ));
                with_conn!(conn, c => diesel::sql_query(&sql).bind::<Text, _>(topic).execute(c).await)
            }
        }
        .map_err(OutboxError::db("giving messages their partition"))
    }

    /// In one transaction, if the lease is still ours: moves `dead` rows (with their error) to
    /// `kafka_messages_dead` and deletes `done` and `dead` rows. `false` (nothing changed) if the lease was lost.
    pub async fn finish_batch(
        &mut self,
        topic: &str,
        partition: i32,
        owner: &str,
        fence: i64,
        done: &[i64],
        dead: &[(i64, String)],
    ) -> Result<bool, OutboxError> {
        retrying!(
            topic,
            self.finish_batch_once(topic, partition, owner, fence, done, dead).await
        )
    }

    async fn finish_batch_once(
        &mut self,
        topic: &str,
        partition: i32,
        owner: &str,
        fence: i64,
        done: &[i64],
        dead: &[(i64, String)],
    ) -> Result<bool, OutboxError> {
        #[cfg(feature = "postgres")]
        if let (Conn::Pg(pg), true, false) = (&mut *self, dead.is_empty(), done.is_empty()) {
            // The common case in one statement (no transaction round trips): lock the lease row, delete only
            // if it is still ours.
            let deleted = bounded(
                diesel::sql_query(
                    "WITH lease AS (SELECT 1 FROM kafka_topic_info \
                       WHERE topic = $2 AND \"partition\" = $3 AND locked_by = $4 AND fence = $5 FOR UPDATE) \
                     DELETE FROM kafka_messages WHERE id = ANY($1) AND EXISTS (SELECT 1 FROM lease)",
                )
                .bind::<diesel::sql_types::Array<BigInt>, _>(done)
                .bind::<Text, _>(topic)
                .bind::<Integer, _>(partition)
                .bind::<Text, _>(owner)
                .bind::<BigInt, _>(fence)
                .execute(pg),
            )
            .await
            .map_err(OutboxError::db("deleting sent messages"))?;
            if deleted > 0 {
                return Ok(true);
            }
            // Nothing deleted: the lease is gone (the rows are ours until then), or they were already deleted.
            return self.renew_check(topic, partition, owner, fence).await;
        }
        let d = self.dialect();
        let check = d.sql(
            "UPDATE {leases} SET last_processed_at = {now} \
             WHERE {held}",
        );
        let lock = (d != Dialect::Sqlite).then(|| d.sql("SELECT fence FROM {leases} WHERE {held} FOR UPDATE"));
        let mut all: Vec<i64> = done.iter().copied().chain(dead.iter().map(|(id, _)| *id)).collect();
        all.sort_unstable();
        let moves: Vec<(String, String)> = dead
            .iter()
            .map(|(id, error)| {
                (
                    d.sql(&format!(
                        "INSERT INTO kafka_messages_dead (id, topic, message, {{key}}, partition_key, {{partition}}, headers, created_at, error) \
                         SELECT id, topic, message, {{key}}, partition_key, {{partition}}, headers, created_at, ? FROM kafka_messages WHERE id = {id}"
                    )),
                    error.clone(),
                )
            })
            .collect();
        with_conn!(self, c => in_transaction!(c, async {
            let owned = match &lock {
                // Lock the lease row first so a relay taking the lease over waits for this transaction.
                Some(lock) => {
                    let rows: Vec<FenceRow> = bind_held!(diesel::sql_query(lock), topic, partition, owner, fence)
                        .load(c)
                        .await
                        .map_err(OutboxError::db("locking a lease"))?;
                    !rows.is_empty()
                }
                None => {
                    bind_held!(diesel::sql_query(&check), topic, partition, owner, fence)
                        .execute(c)
                        .await
                        .map_err(OutboxError::db("checking a lease"))?
                        == 1
                }
            };
            if !owned {
                return Err(OutboxError::LeaseLost { topic: topic.to_string(), partition });
            }
            for (sql, error) in &moves {
                diesel::sql_query(sql)
                    .bind::<Text, _>(error)
                    .execute(c)
                    .await
                    .map_err(OutboxError::db("moving a too-large message to kafka_messages_dead"))?;
            }
            if !all.is_empty() {
                c.delete_ids(&all).await.map_err(OutboxError::db("deleting sent messages"))?;
            }
            Ok(())
        }.await))
        .map_or_else(
            |e| match e {
                OutboxError::LeaseLost { .. } => Ok(false),
                other => Err(other),
            },
            |()| Ok(true),
        )
    }

    /// Rows waiting per topic and partition, with the age of the oldest (the first in line: the lowest id).
    ///
    /// Counted over the (topic, partition, id) index alone, and `created_at` read from one row per partition: a
    /// `MIN(created_at)` would read every row of the backlog (seconds for a million rows that do not fit in
    /// MariaDB's default buffer pool).
    pub async fn backlog(&mut self) -> Result<Vec<Backlog>, OutboxError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "SELECT b.topic, b.{{partition}} AS {{partition}}, b.count, {} AS max_wait_seconds \
             FROM (SELECT topic, {{partition}}, COUNT(*) AS count, MIN(id) AS first_id \
                   FROM kafka_messages GROUP BY topic, {{partition}}) b \
             JOIN kafka_messages m ON m.id = b.first_id ORDER BY b.topic, b.{{partition}}",
            d.age_seconds("m.created_at")
        ));
        with_conn!(self, c => diesel::sql_query(&sql).load(c).await).map_err(OutboxError::db("reading the backlog"))
    }

    /// Every lease row.
    pub async fn leases(&mut self) -> Result<Vec<Lease>, OutboxError> {
        let sql = self.dialect().sql(
            "SELECT topic, {partition} AS {partition}, locked_by, lease_until - {now_ms} AS expires_in_ms, fence \
             FROM kafka_topic_info ORDER BY topic, {partition}",
        );
        with_conn!(self, c => diesel::sql_query(&sql).load(c).await).map_err(OutboxError::db("reading the leases"))
    }

    /// Rows moved aside as too large.
    pub async fn dead_count(&mut self) -> Result<i64, OutboxError> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let sql = "SELECT COUNT(*) AS n FROM kafka_messages_dead";
        let rows: Vec<Count> = with_conn!(self, c => diesel::sql_query(sql).load(c).await)
            .map_err(OutboxError::db("counting kafka_messages_dead"))?;
        Ok(rows.into_iter().next().map_or(0, |r| r.n))
    }

    /// Starts listening for the writers' notifications (PostgreSQL only; a no-op elsewhere).
    pub(crate) async fn listen(&mut self) -> Result<(), OutboxError> {
        #[cfg(feature = "postgres")]
        #[allow(irrefutable_let_patterns, reason = "irrefutable in a build with PostgreSQL alone")]
        if let Conn::Pg(c) = self {
            bounded(diesel::sql_query(format!("LISTEN {}", crate::writer::NOTIFY_CHANNEL)).execute(c))
                .await
                .map_err(OutboxError::db("listening for outbox notifications"))?;
        }
        Ok(())
    }
}

/// Deletes outbox rows by id with one statement.
trait DeleteIds {
    fn delete_ids(&mut self, ids: &[i64]) -> impl std::future::Future<Output = diesel::QueryResult<usize>> + Send;
}

#[cfg(feature = "postgres")]
impl DeleteIds for AsyncPgConnection {
    async fn delete_ids(&mut self, ids: &[i64]) -> diesel::QueryResult<usize> {
        // One array parameter instead of a thousand literals to parse.
        diesel::sql_query("DELETE FROM kafka_messages WHERE id = ANY($1)")
            .bind::<diesel::sql_types::Array<BigInt>, _>(ids)
            .execute(self)
            .await
    }
}

#[cfg(feature = "mysql")]
impl DeleteIds for AsyncMysqlConnection {
    async fn delete_ids(&mut self, ids: &[i64]) -> diesel::QueryResult<usize> {
        diesel::sql_query(format!("DELETE FROM kafka_messages WHERE id IN {}", id_list(ids)))
            .execute(self)
            .await
    }
}

#[cfg(feature = "sqlite")]
impl DeleteIds for SyncConnectionWrapper<SqliteConnection> {
    async fn delete_ids(&mut self, ids: &[i64]) -> diesel::QueryResult<usize> {
        diesel::sql_query(format!("DELETE FROM kafka_messages WHERE id IN {}", id_list(ids)))
            .execute(self)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_left_out_of_the_build_is_named_with_its_feature() {
        let e = not_compiled_in(Dialect::Postgres, "postgres://app:s3cret@db:5432/app").to_string();
        assert!(e.contains("no PostgreSQL support"), "{e}");
        assert!(e.contains("enable the `postgres` feature of `deimos`"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let e = not_compiled_in(Dialect::Mysql, "mariadb://root@h/test").to_string();
        assert!(e.contains("MySQL/MariaDB") && e.contains("`mysql` feature"), "{e}");
    }

    #[test]
    fn urls_name_their_database() {
        assert_eq!(Dialect::of_url("postgres://u@h/db").ok(), Some(Dialect::Postgres));
        assert_eq!(Dialect::of_url("postgresql://h/db").ok(), Some(Dialect::Postgres));
        assert_eq!(Dialect::of_url("mysql://root@h/test").ok(), Some(Dialect::Mysql));
        assert_eq!(Dialect::of_url("mariadb://root@h/test").ok(), Some(Dialect::Mysql));
        assert_eq!(Dialect::of_url("sqlite://outbox.db").ok(), Some(Dialect::Sqlite));
        assert_eq!(Dialect::of_url("/tmp/x.sqlite3").ok(), Some(Dialect::Sqlite));
        let err = Dialect::of_url("redis://u:pw@h")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("redis://u:<redacted>@h") && err.contains("postgres://"),
            "{err}"
        );
    }

    #[test]
    fn placeholders_and_slots_follow_the_dialect() {
        let sql = "SELECT {key} FROM t WHERE {partition} = ? AND a = ?";
        assert_eq!(
            Dialect::Postgres.sql(sql),
            r#"SELECT "key" FROM t WHERE "partition" = $1 AND a = $2"#
        );
        assert_eq!(
            Dialect::Mysql.sql(sql),
            "SELECT `key` FROM t WHERE `partition` = ? AND a = ?"
        );
        assert_eq!(
            Dialect::Sqlite.sql(sql),
            r#"SELECT "key" FROM t WHERE "partition" = ? AND a = ?"#
        );
        assert_eq!(id_list(&[3, 1, 2]), "(3,1,2)");
        let many: Vec<i64> = (1..=1001).collect();
        let lists = id_lists(&many, true);
        assert_eq!(lists.matches("id NOT IN (").count(), 3, "at most 500 ids per list");
        assert!(lists.starts_with("(id NOT IN (1,") && lists.contains("500) AND id NOT IN (501,"));
        assert_eq!(id_lists(&[7, 9], false), "(id IN (7,9))");
    }
}
