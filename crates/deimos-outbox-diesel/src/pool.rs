//! Connection pools of [`Conn`]s, for the relay and the record consumers: deadpool, through diesel-async's
//! managers (its `deadpool` feature).
//!
//! diesel-async's manager is per connection type, and [`Conn`] covers three, so [`ConnManager`] holds the manager
//! of the URL's database and wraps what it makes. Connections are opened within the connect timeout with session
//! settings that bound statements on the server's side too, and checked (`SELECT 1`, within the statement
//! timeout) each time they are handed out again: a connection the server closed meanwhile is replaced before
//! anyone uses it. Calls on a pooled connection get their client-side deadline from
//! [`with_statement_timeout`](crate::db::with_statement_timeout).

use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Manager, Metrics, RecycleError, RecycleResult, Timeouts};
#[cfg(feature = "sqlite")]
use diesel::SqliteConnection;
#[cfg(feature = "mysql")]
use diesel_async::AsyncMysqlConnection;
#[cfg(feature = "postgres")]
use diesel_async::pg::AsyncPgConnection;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, PoolError, RecyclingMethod};
#[cfg(feature = "sqlite")]
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use futures::FutureExt;

use deimos_core::redact;

use crate::db::{self, Conn, Dialect};
use crate::error::OutboxError;

/// A pool of connections to one database.
pub type Pool = managed::Pool<ConnManager>;

/// A connection of the pool: derefs to [`Conn`]; back to the pool when dropped (use [`discard`] for one that
/// failed).
pub type Pooled = managed::Object<ConnManager>;

/// Makes and checks the pool's connections, through the diesel-async manager of the URL's database.
pub struct ConnManager {
    managers: Managers,
}

enum Managers {
    #[cfg(feature = "postgres")]
    Pg(AsyncDieselConnectionManager<AsyncPgConnection>),
    #[cfg(feature = "mysql")]
    Mysql(AsyncDieselConnectionManager<AsyncMysqlConnection>),
    #[cfg(feature = "sqlite")]
    Sqlite(AsyncDieselConnectionManager<SyncConnectionWrapper<SqliteConnection>>),
    #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
    NoDatabase(std::convert::Infallible),
}

/// What the pool's connections are opened with: `Settings::new()` (a 10 s connect timeout, 30 s per statement)
/// and chained setters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// How long opening one may take (also how long to wait for a free one).
    pub connect_timeout: Duration,
    /// How long one call may take; also set on the server's side where it has such a setting (PostgreSQL's
    /// `statement_timeout` and `idle_in_transaction_session_timeout`, MySQL's `innodb_lock_wait_timeout`).
    pub statement_timeout: Duration,
}

impl Settings {
    /// A 10 s connect timeout ([`DEFAULT_CONNECT_TIMEOUT`](crate::db::DEFAULT_CONNECT_TIMEOUT)) and 30 s per
    /// statement.
    pub fn new() -> Settings {
        Settings {
            connect_timeout: db::DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: Duration::from_secs(30),
        }
    }

    /// How long opening a connection (or waiting for a free one) may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Settings {
        self.connect_timeout = timeout;
        self
    }

    /// How long one call may take.
    pub fn statement_timeout(mut self, timeout: Duration) -> Settings {
        self.statement_timeout = timeout;
        self
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::new()
    }
}

/// diesel-async's manager config: `SELECT 1` when a connection is handed out again, and `setup` to open one.
fn manager_config<C: AsyncConnection + 'static>(
    setup: impl Fn(String) -> futures::future::BoxFuture<'static, diesel::ConnectionResult<C>> + Send + Sync + 'static,
) -> ManagerConfig<C> {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Verified;
    config.custom_setup = Box::new(move |url| setup(url.to_string()));
    config
}

/// Opens a connection within `limit`, then runs `session` (the session settings) on it within `limit` too.
async fn open<C: AsyncConnection + SimpleAsyncConnection>(
    limit: Duration,
    connect: impl std::future::Future<Output = diesel::ConnectionResult<C>>,
    session: Arc<str>,
) -> diesel::ConnectionResult<C> {
    let mut conn = tokio::time::timeout(limit, connect).await.map_err(|_| {
        diesel::ConnectionError::BadConnection(format!(
            "the database did not answer within {limit:?} (connect_timeout)"
        ))
    })??;
    if !session.is_empty() {
        tokio::time::timeout(limit, conn.batch_execute(&session))
            .await
            .map_err(|_| {
                diesel::ConnectionError::BadConnection(format!(
                    "the database did not answer within {limit:?} (connect_timeout) while setting up the session"
                ))
            })?
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    }
    Ok(conn)
}

impl ConnManager {
    fn new(url: &str, settings: Settings) -> Result<ConnManager, OutboxError> {
        let Settings {
            connect_timeout,
            statement_timeout,
        } = settings;
        let managers = match Dialect::of_url(url)? {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                // The server gives up on a statement, or on a transaction left open by a relay that vanished (its
                // lease row locked), after the same time.
                let ms = statement_timeout.as_millis();
                let session: Arc<str> =
                    format!("SET statement_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms};").into();
                Managers::Pg(AsyncDieselConnectionManager::new_with_config(
                    url,
                    manager_config(move |url| {
                        let session = Arc::clone(&session);
                        async move { open(connect_timeout, AsyncPgConnection::establish(&url), session).await }.boxed()
                    }),
                ))
            }
            #[cfg(feature = "mysql")]
            Dialect::Mysql => {
                // A lock wait (another relay's transaction on the lease row, another consumer's on a record) ends
                // on the server's side first, at half the call's deadline: as error 1205, which is run again
                // (`db::is_deadlock`), rather than as a call that timed out, whose connection is dropped.
                let secs = (statement_timeout.as_secs() / 2).max(1);
                // MariaDB (the `/*M!` comment is run by MariaDB 10.3.18 and later alone) turns an IN list of 1,000
                // values or more, as the ids of a batch in flight or to delete, into a temporary table it joins
                // against, and can then no longer skip those ids in the index itself: keep it a list.
                let session: Arc<str> = format!(
                    "SET SESSION innodb_lock_wait_timeout = {secs} /*M!100318 , in_predicate_conversion_threshold = 0 */"
                )
                .into();
                Managers::Mysql(AsyncDieselConnectionManager::new_with_config(
                    db::mysql_url(url),
                    manager_config(move |url| {
                        let session = Arc::clone(&session);
                        async move { open(connect_timeout, AsyncMysqlConnection::establish(&url), session).await }
                            .boxed()
                    }),
                ))
            }
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => Managers::Sqlite(AsyncDieselConnectionManager::new_with_config(
                db::sqlite_path(url),
                manager_config(move |path| {
                    async move {
                        open(
                            connect_timeout,
                            db::establish_sqlite(&path, statement_timeout),
                            "".into(),
                        )
                        .await
                    }
                    .boxed()
                }),
            )),
            #[allow(unreachable_patterns, reason = "reachable in builds without every database")]
            other => {
                let _ = (connect_timeout, statement_timeout);
                return Err(db::not_compiled_in(other, url));
            }
        };
        Ok(ConnManager { managers })
    }
}

impl Manager for ConnManager {
    type Type = Conn;
    type Error = PoolError;

    async fn create(&self) -> Result<Conn, PoolError> {
        Ok(match &self.managers {
            #[cfg(feature = "postgres")]
            Managers::Pg(m) => Conn::Pg(m.create().await?),
            #[cfg(feature = "mysql")]
            Managers::Mysql(m) => Conn::Mysql(m.create().await?),
            #[cfg(feature = "sqlite")]
            Managers::Sqlite(m) => Conn::Sqlite(m.create().await?),
            #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
            Managers::NoDatabase(never) => match *never {},
        })
    }

    async fn recycle(&self, conn: &mut Conn, metrics: &Metrics) -> RecycleResult<PoolError> {
        match (&self.managers, conn) {
            #[cfg(feature = "postgres")]
            (Managers::Pg(m), Conn::Pg(c)) => m.recycle(c, metrics).await,
            #[cfg(feature = "mysql")]
            (Managers::Mysql(m), Conn::Mysql(c)) => m.recycle(c, metrics).await,
            #[cfg(feature = "sqlite")]
            (Managers::Sqlite(m), Conn::Sqlite(c)) => m.recycle(c, metrics).await,
            #[allow(unreachable_patterns, reason = "reachable with more than one database")]
            _ => Err(RecycleError::message("a connection to another kind of database")),
        }
    }
}

/// A pool of at most `size` connections to `url`. Opening a connection is bounded by the manager itself (the
/// connect timeout, then again for the session settings), so its errors say what timed out.
pub fn build(url: &str, size: usize, settings: Settings) -> Result<Pool, OutboxError> {
    Pool::builder(ConnManager::new(url, settings)?)
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .recycle_timeout(Some(settings.statement_timeout))
        .wait_timeout(Some(settings.connect_timeout))
        .build()
        .map_err(|e| OutboxError::Config(format!("the connection pool could not be built: {e}")))
}

/// A connection from the pool (opened if none is free, within the connect timeout).
pub async fn get(pool: &Pool, url: &str) -> Result<Pooled, OutboxError> {
    pool.get().await.map_err(|e| pool_error(url, e))
}

/// A connection from the pool if one is free or can be opened now without waiting for another to be returned;
/// `None` when every connection is in use.
pub async fn try_get(pool: &Pool, url: &str) -> Result<Option<Pooled>, OutboxError> {
    let timeouts = Timeouts {
        wait: Some(Duration::ZERO),
        ..pool.timeouts()
    };
    match pool.timeout_get(&timeouts).await {
        Ok(conn) => Ok(Some(conn)),
        Err(managed::PoolError::Timeout(managed::TimeoutType::Wait)) => Ok(None),
        Err(e) => Err(pool_error(url, e)),
    }
}

/// Drops a connection that failed (a statement timed out or the connection broke) instead of returning it to
/// the pool; the pool opens a new one when one is needed.
pub fn discard(conn: Pooled) {
    drop(managed::Object::take(conn));
}

fn pool_error(url: &str, error: managed::PoolError<PoolError>) -> OutboxError {
    let message = match error {
        managed::PoolError::Timeout(managed::TimeoutType::Wait) => {
            "every connection of the pool stayed in use (pool_size)".to_string()
        }
        managed::PoolError::Timeout(_) => "the database did not answer in time (connect_timeout)".to_string(),
        managed::PoolError::Backend(PoolError::ConnectionError(e)) => e.to_string(),
        other => other.to_string(),
    };
    OutboxError::Connect {
        url: redact::url(url).into_owned(),
        message: redact::text(&message).into_owned(),
    }
}
