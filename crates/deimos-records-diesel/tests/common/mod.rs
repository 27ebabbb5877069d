//! Shared setup for the record tests: a fresh database per test (PostgreSQL, MariaDB or SQLite) with the
//! outbox's and the record layer's tables and the test tables, producers on memory or outbox backends.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use deimos_avro::{AvroSchema, SchemaStore};
use deimos_keys::KeyConfig;
use deimos_outbox_diesel::{Conn, Outbox};
use deimos_producer::{MemoryBackend, Producer, ProducerSetup, PublishBackend};
use deimos_records_diesel::{RecordConnection, RecordTable};
use deimos_registry::{MemoryRegistry, SchemaCodec, SchemaRegistry};
use serde_json::{Map, Value as Json};

pub const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemas");
pub const MAIN_SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Mariadb,
    Sqlite,
}

diesel::table! {
    products (id) {
        id -> BigInt,
        sku -> Text,
        name -> Text,
        price -> Nullable<Double>,
        active -> Bool,
        released_at -> Nullable<Timestamp>,
        note -> Nullable<Text>,
        photo -> Nullable<Binary>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

pub fn products() -> RecordTable {
    RecordTable::of::<products::table>("products")
}

pub fn gadgets() -> RecordTable {
    RecordTable::new("gadgets")
        .column("id", deimos_records_diesel::ColumnType::BigInt)
        .column("region", deimos_records_diesel::ColumnType::Text)
        .column("name", deimos_records_diesel::ColumnType::Text)
        .column("created_at", deimos_records_diesel::ColumnType::Timestamp)
        .column("updated_at", deimos_records_diesel::ColumnType::Timestamp)
        .with_primary_key(["id", "region"])
}

pub fn events() -> RecordTable {
    RecordTable::new("events")
        .column("id", deimos_records_diesel::ColumnType::BigInt)
        .column("seq", deimos_records_diesel::ColumnType::BigInt)
        .column("note", deimos_records_diesel::ColumnType::Text)
}

fn ddl(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Postgres => vec![
            "CREATE TABLE products (id BIGSERIAL PRIMARY KEY, sku VARCHAR(64) NOT NULL UNIQUE, name VARCHAR(255) NOT NULL, price DOUBLE PRECISION, active BOOLEAN NOT NULL DEFAULT FALSE, released_at TIMESTAMP, note VARCHAR(255), photo BYTEA, created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL)",
            "CREATE TABLE gadgets (id BIGINT NOT NULL, region VARCHAR(32) NOT NULL, name VARCHAR(255) NOT NULL, created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL, PRIMARY KEY (id, region))",
            "CREATE TABLE events (id BIGSERIAL PRIMARY KEY, seq BIGINT NOT NULL, note VARCHAR(255) NOT NULL)",
        ],
        Kind::Mariadb => vec![
            "CREATE TABLE products (id BIGINT AUTO_INCREMENT PRIMARY KEY, sku VARCHAR(64) NOT NULL UNIQUE, name VARCHAR(255) NOT NULL, price DOUBLE, active BOOLEAN NOT NULL DEFAULT FALSE, released_at DATETIME(6), note VARCHAR(255), photo BLOB, created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL)",
            "CREATE TABLE gadgets (id BIGINT NOT NULL, region VARCHAR(32) NOT NULL, name VARCHAR(255) NOT NULL, created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL, PRIMARY KEY (id, region))",
            "CREATE TABLE events (id BIGINT AUTO_INCREMENT PRIMARY KEY, seq BIGINT NOT NULL, note VARCHAR(255) NOT NULL)",
        ],
        Kind::Sqlite => vec![
            "CREATE TABLE products (id INTEGER PRIMARY KEY AUTOINCREMENT, sku VARCHAR(64) NOT NULL UNIQUE, name VARCHAR(255) NOT NULL, price DOUBLE, active BOOLEAN NOT NULL DEFAULT 0, released_at TIMESTAMP, note VARCHAR(255), photo BLOB, created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL)",
            "CREATE TABLE gadgets (id BIGINT NOT NULL, region VARCHAR(32) NOT NULL, name VARCHAR(255) NOT NULL, created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL, PRIMARY KEY (id, region))",
            "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, seq BIGINT NOT NULL, note VARCHAR(255) NOT NULL)",
        ],
    }
}

/// A database of its own for one test, with every table.
pub struct TestDb {
    pub kind: Kind,
    pub url: String,
    admin: Option<String>,
    name: String,
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}_{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
}

impl TestDb {
    pub async fn new(kind: Kind) -> TestDb {
        let name = unique("deimos_records_test");
        let (admin, url) = match kind {
            Kind::Postgres => {
                let base =
                    std::env::var("DEIMOS_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
                (Some(format!("{base}/test")), format!("{base}/{name}"))
            }
            Kind::Mariadb => {
                let base = std::env::var("DEIMOS_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
                (Some(format!("{base}/test")), format!("{base}/{name}"))
            }
            Kind::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                (None, format!("sqlite://{}", path.display()))
            }
        };
        if let Some(admin) = &admin {
            let mut c = Conn::connect(admin)
                .await
                .unwrap_or_else(|e| panic!("{kind:?} is needed for this test: {e}"));
            c.execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        }
        deimos_outbox_diesel::migrate(&url).await.unwrap();
        let applied = deimos_records_diesel::migrate(&url).await.unwrap();
        assert_eq!(applied.len(), 1, "{applied:?}");
        let mut c = Conn::connect(&url).await.unwrap();
        for sql in ddl(kind) {
            c.execute(sql).await.unwrap();
        }
        TestDb { kind, url, admin, name }
    }

    pub async fn conn(&self) -> Conn {
        Conn::connect(&self.url).await.unwrap()
    }

    /// PostgreSQL: terminates every connection to the test database (as an administrator or a failover
    /// would), from the administration database; returns how many there were.
    pub async fn terminate_connections(&self) -> i64 {
        assert_eq!(self.kind, Kind::Postgres, "pg_terminate_backend is PostgreSQL's");
        let mut c = Conn::connect(self.admin.as_deref().unwrap()).await.unwrap();
        let sql = format!(
            "SELECT COUNT(pg_terminate_backend(pid))::text AS j FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
            self.name
        );
        texts(&mut c, &sql).await[0].parse().unwrap()
    }

    pub async fn drop_db(self) {
        match &self.admin {
            Some(admin) => {
                let mut c = Conn::connect(admin).await.unwrap();
                if self.kind == Kind::Postgres {
                    let _ = c
                        .execute(&format!(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
                            self.name
                        ))
                        .await;
                }
                let _ = c.execute(&format!("DROP DATABASE IF EXISTS {}", self.name)).await;
            }
            None => {
                let path = self.url.trim_start_matches("sqlite://").to_string();
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
        }
    }
}

/// Rows of a query whose single column `j` is text.
pub async fn texts(conn: &mut Conn, sql: &str) -> Vec<String> {
    conn.texts(sql, &[]).await.unwrap()
}

/// `SELECT COUNT(*)` of a table.
pub async fn count(conn: &mut Conn, table: &str) -> i64 {
    let sql = match conn.dialect() {
        deimos_outbox_diesel::Dialect::Postgres => format!("SELECT COUNT(*)::text AS j FROM {table}"),
        deimos_outbox_diesel::Dialect::Mysql => format!("SELECT CAST(COUNT(*) AS CHAR) AS j FROM {table}"),
        _ => format!("SELECT CAST(COUNT(*) AS TEXT) AS j FROM {table}"),
    };
    texts(conn, &sql).await[0].parse().unwrap()
}

/// The rows of a table as attribute maps, by the first key column.
pub async fn rows(conn: &mut Conn, table: &RecordTable) -> Vec<Map<String, Json>> {
    let cols: Vec<String> = table
        .columns()
        .iter()
        .filter(|c| c.ty != deimos_records_diesel::ColumnType::Binary)
        .map(|c| c.name.clone())
        .collect();
    let (func, cast) = match conn.dialect() {
        deimos_outbox_diesel::Dialect::Postgres => ("jsonb_build_object", ("", "::text")),
        deimos_outbox_diesel::Dialect::Mysql => ("JSON_OBJECT", ("CAST(", " AS CHAR)")),
        _ => ("json_object", ("", "")),
    };
    let args: Vec<String> = cols.iter().map(|c| format!("'{c}', {c}")).collect();
    let sql = format!(
        "SELECT {}{func}({}){} AS j FROM {} ORDER BY {}",
        cast.0,
        args.join(", "),
        cast.1,
        table.name(),
        table.primary_key().join(", ")
    );
    texts(conn, &sql)
        .await
        .into_iter()
        .map(|t| match serde_json::from_str(&t).unwrap() {
            Json::Object(m) => m,
            _ => unreachable!(),
        })
        .collect()
}

pub fn store() -> SchemaStore {
    SchemaStore::new(SCHEMAS)
}

pub fn schema(name: &str) -> AvroSchema {
    store()
        .get(name)
        .unwrap_or_else(|_| SchemaStore::new(MAIN_SCHEMAS).get(name).unwrap())
}

/// A producer of `com.acme.records.Product` keyed by `id`, on `backend`.
pub async fn product_producer(registry: Arc<MemoryRegistry>, backend: impl PublishBackend) -> Producer {
    let setup = ProducerSetup::builder(store(), registry as Arc<dyn SchemaRegistry>, backend).build();
    Producer::builder("ProductProducer")
        .topic("products")
        .schema("com.acme.records.Product")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap()
}

pub async fn memory_producer() -> (Producer, MemoryBackend) {
    let backend = MemoryBackend::new();
    (
        product_producer(Arc::new(MemoryRegistry::new()), backend.clone()).await,
        backend,
    )
}

/// An outbox, a producer writing to it, and the registry to decode what it wrote.
pub async fn outbox_producer() -> (Outbox, Producer, Arc<MemoryRegistry>) {
    let outbox = Outbox::builder().build();
    let registry = Arc::new(MemoryRegistry::new());
    let producer = product_producer(registry.clone(), outbox.clone()).await;
    (outbox, producer, registry)
}

/// What the outbox holds, in id order: (key as JSON, decoded value or None for a tombstone).
pub async fn outbox_messages(conn: &mut Conn, registry: &Arc<MemoryRegistry>) -> Vec<(Json, Option<Json>)> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Binary>)]
        message: Option<Vec<u8>>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Binary>)]
        key: Option<Vec<u8>>,
    }
    use diesel_async::RunQueryDsl;
    let sql = match conn.dialect() {
        deimos_outbox_diesel::Dialect::Mysql => "SELECT message, `key` FROM kafka_messages ORDER BY id",
        _ => "SELECT message, \"key\" FROM kafka_messages ORDER BY id",
    };
    let rows: Vec<Row> = match conn {
        Conn::Pg(c) => diesel::sql_query(sql).load(c).await,
        Conn::Mysql(c) => diesel::sql_query(sql).load(c).await,
        Conn::Sqlite(c) => diesel::sql_query(sql).load(c).await,
    }
    .unwrap();
    let codec = SchemaCodec::new(registry.clone() as Arc<dyn SchemaRegistry>);
    let mut out = Vec::new();
    for r in rows {
        // The key schema generated from the `id` field: the key is its value, as Deimos decodes it.
        let key = match r.key {
            Some(k) => codec.decode_value(&k, None).await.unwrap()["id"].clone(),
            None => Json::Null,
        };
        let value = match r.message {
            Some(m) => Some(codec.decode_value(&m, None).await.unwrap()),
            None => None,
        };
        out.push((key, value));
    }
    out
}

/// Runs `$body` (an async fn taking a `Kind`) once per database, as three tests.
#[macro_export]
macro_rules! per_database {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::common::Kind::Postgres).await;
            })*
        }
        mod mariadb {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::common::Kind::Mariadb).await;
            })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::common::Kind::Sqlite).await;
            })*
        }
    };
}
