//! The statements the record layer runs on a table: select, insert (optionally upserting), update and delete by
//! key, each reading rows back where the caller needs them, without one query per row.

use deimos_outbox_diesel::Dialect;
use serde_json::{Map, Value as Json};

use crate::error::RecordError;
use crate::sql::{MAX_PARAMS, RecordConnection, Sql, parse_rows};
use crate::table::{ColumnDef, RecordTable};
use crate::value::SqlValue;

/// The key of one record: (column, value) pairs in the table's key order.
pub(crate) type KeyValues = Vec<(String, SqlValue)>;

/// `WHERE (k = ?) …` for one or more keys, all with the same columns.
fn where_keys(sql: &mut Sql, keys: &[KeyValues], binds: &mut Vec<SqlValue>) {
    let Some(first) = keys.first() else {
        sql.push(" WHERE 1 = 0");
        return;
    };
    sql.push(" WHERE ");
    if first.len() == 1 {
        sql.ident(&first[0].0).push(" IN (");
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.param();
            binds.push(k[0].1.clone());
        }
        sql.push(")");
        return;
    }
    for (i, k) in keys.iter().enumerate() {
        sql.push(if i == 0 { "(" } else { " OR (" });
        for (j, (column, value)) in k.iter().enumerate() {
            if j > 0 {
                sql.push(" AND ");
            }
            sql.ident(column).push(" = ").param();
            binds.push(value.clone());
        }
        sql.push(")");
    }
}

fn keys_per_statement(keys: &[KeyValues]) -> usize {
    let width = keys.first().map_or(1, Vec::len).max(1);
    (MAX_PARAMS / width).clamp(1, 1000)
}

/// The rows with these keys (in no particular order); locked for update where the database can.
pub(crate) async fn select_by_keys<C: RecordConnection>(
    conn: &mut C,
    table: &RecordTable,
    keys: &[KeyValues],
    for_update: bool,
) -> Result<Vec<Map<String, Json>>, RecordError> {
    let dialect = conn.sql_dialect();
    let mut rows = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(keys_per_statement(keys)) {
        let mut sql = Sql::new(dialect);
        let mut binds = Vec::new();
        sql.push("SELECT ")
            .json_row(table.columns())
            .push(" FROM ")
            .ident(table.name());
        where_keys(&mut sql, chunk, &mut binds);
        if for_update && dialect != Dialect::Sqlite {
            sql.push(" FOR UPDATE");
        }
        let texts = conn
            .texts(&sql.finish(), &binds)
            .await
            .map_err(RecordError::db("reading records", table.name()))?;
        rows.extend(parse_rows(table, texts).map_err(RecordError::db("reading records", table.name()))?);
    }
    Ok(rows)
}

/// Deletes the rows with these keys; returns how many went.
pub(crate) async fn delete_by_keys<C: RecordConnection>(
    conn: &mut C,
    table: &RecordTable,
    keys: &[KeyValues],
) -> Result<usize, RecordError> {
    let mut deleted = 0;
    for chunk in keys.chunks(keys_per_statement(keys)) {
        let mut sql = Sql::new(conn.sql_dialect());
        let mut binds = Vec::new();
        sql.push("DELETE FROM ").ident(table.name());
        where_keys(&mut sql, chunk, &mut binds);
        deleted += conn
            .run(&sql.finish(), &binds)
            .await
            .map_err(RecordError::db("deleting records", table.name()))?;
    }
    Ok(deleted)
}

/// `UPDATE table SET … WHERE key`; returns the rows affected.
pub(crate) async fn update_by_key<C: RecordConnection>(
    conn: &mut C,
    table: &RecordTable,
    set: &[(&ColumnDef, SqlValue)],
    key: &KeyValues,
) -> Result<usize, RecordError> {
    if set.is_empty() {
        return Ok(0);
    }
    let mut sql = Sql::new(conn.sql_dialect());
    let mut binds = Vec::with_capacity(set.len() + key.len());
    sql.push("UPDATE ").ident(table.name()).push(" SET ");
    for (i, (column, value)) in set.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.ident(&column.name).push(" = ").param();
        binds.push(value.clone());
    }
    where_keys(&mut sql, std::slice::from_ref(key), &mut binds);
    conn.run(&sql.finish(), &binds)
        .await
        .map_err(RecordError::db("updating a record", table.name()))
}

/// What an insert does when a row's key is taken.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OnConflict<'a> {
    /// Nothing: the database's error.
    Fail,
    /// Updates every inserted column but these key columns and `created_at` (which is kept).
    Update(&'a [String]),
}

/// Inserts `rows` (values in `columns` order) with one multi-row statement per chunk; with `read_back`, returns
/// the rows as stored (generated ids and defaults included): through `RETURNING` on PostgreSQL, SQLite and
/// MariaDB, and on MySQL through one `SELECT` per statement (by `LAST_INSERT_ID()` for new rows, by key for
/// upserts).
pub(crate) async fn insert<C: RecordConnection>(
    conn: &mut C,
    table: &RecordTable,
    columns: &[&ColumnDef],
    rows: Vec<Vec<SqlValue>>,
    on_conflict: OnConflict<'_>,
    read_back: bool,
) -> Result<Vec<Map<String, Json>>, RecordError> {
    let dialect = conn.sql_dialect();
    let returning = read_back && (dialect != Dialect::Mysql || is_mariadb(conn).await);
    let per_statement = (MAX_PARAMS / columns.len().max(1)).max(1);
    let mut out = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<SqlValue>> = rows.by_ref().take(per_statement).collect();
        let mut sql = Sql::new(dialect);
        sql.push("INSERT INTO ")
            .ident(table.name())
            .push(" (")
            .idents(columns.iter().map(|c| c.name.as_str()))
            .push(") VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(", ");
            }
            sql.tuple(columns.len());
        }
        if let OnConflict::Update(keys) = on_conflict {
            let updated: Vec<&str> = columns
                .iter()
                .map(|c| c.name.as_str())
                .filter(|c| *c != "created_at" && !keys.iter().any(|k| k == c))
                .collect();
            // With nothing else to update, a key-only update keeps the statement one that returns the row.
            let updated = if updated.is_empty() {
                keys.iter().map(String::as_str).collect()
            } else {
                updated
            };
            if dialect == Dialect::Mysql {
                sql.push(" ON DUPLICATE KEY UPDATE ");
                for (i, c) in updated.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.ident(c).push(" = VALUES(").ident(c).push(")");
                }
            } else {
                sql.push(" ON CONFLICT (")
                    .idents(keys.iter().map(String::as_str))
                    .push(") DO UPDATE SET ");
                for (i, c) in updated.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.ident(c).push(" = excluded.").ident(c);
                }
            }
        }
        let needs_select =
            read_back && !(returning && !(dialect == Dialect::Mysql && matches!(on_conflict, OnConflict::Update(_))));
        let kept = needs_select.then(|| chunk.clone());
        let binds: Vec<SqlValue> = chunk.into_iter().flatten().collect();
        let doing = if matches!(on_conflict, OnConflict::Update(_)) {
            "upserting records"
        } else {
            "inserting records"
        };
        if returning && !(dialect == Dialect::Mysql && matches!(on_conflict, OnConflict::Update(_))) {
            sql.push(" RETURNING ").json_row(table.columns());
            let texts = conn
                .texts(&sql.finish(), &binds)
                .await
                .map_err(RecordError::db(doing, table.name()))?;
            out.extend(parse_rows(table, texts).map_err(RecordError::db(doing, table.name()))?);
            continue;
        }
        conn.run(&sql.finish(), &binds)
            .await
            .map_err(RecordError::db(doing, table.name()))?;
        if let Some(chunk) = kept {
            out.extend(read_back_mysql(conn, table, columns, &chunk, on_conflict).await?);
        }
    }
    Ok(out)
}

/// Whether a MySQL-protocol server is MariaDB 10.5 or later, which has `INSERT … RETURNING`.
async fn is_mariadb<C: RecordConnection>(conn: &mut C) -> bool {
    let Some(version) = conn
        .texts("SELECT CAST(VERSION() AS CHAR) AS j", &[])
        .await
        .ok()
        .and_then(|v| v.into_iter().next())
    else {
        return false;
    };
    if !version.contains("MariaDB") {
        return false;
    }
    let mut parts = version.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (10, 5)
}

/// MySQL's read-back after an insert without `RETURNING`: by key for upserts (and rows that gave their key);
/// new auto-increment ids are `LAST_INSERT_ID()` and the following ones, consecutive for one multi-row INSERT
/// (InnoDB's `innodb_autoinc_lock_mode` 0 or 1).
async fn read_back_mysql<C: RecordConnection>(
    conn: &mut C,
    table: &RecordTable,
    columns: &[&ColumnDef],
    chunk: &[Vec<SqlValue>],
    on_conflict: OnConflict<'_>,
) -> Result<Vec<Map<String, Json>>, RecordError> {
    let key_columns: Vec<String> = match on_conflict {
        OnConflict::Update(keys) => keys.to_vec(),
        OnConflict::Fail => table.primary_key().to_vec(),
    };
    let positions: Option<Vec<usize>> = key_columns
        .iter()
        .map(|k| columns.iter().position(|c| &c.name == k))
        .collect();
    let keys: Vec<KeyValues> = match positions {
        Some(positions) => chunk
            .iter()
            .map(|row| {
                positions
                    .iter()
                    .zip(&key_columns)
                    .map(|(p, k)| (k.clone(), row[*p].clone()))
                    .collect()
            })
            .collect(),
        None => {
            let [pk] = table.primary_key() else {
                return Err(RecordError::Config(format!(
                    "table `{}`: rows inserted without their compound key cannot be read back on MySQL",
                    table.name()
                )));
            };
            let first = conn
                .texts("SELECT CAST(LAST_INSERT_ID() AS CHAR) AS j", &[])
                .await
                .map_err(RecordError::db("reading generated ids", table.name()))?
                .into_iter()
                .next()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            (0..chunk.len())
                .map(|i| vec![(pk.clone(), SqlValue::Int(first + i as i64))])
                .collect()
        }
    };
    select_by_keys(conn, table, &keys, false).await
}
