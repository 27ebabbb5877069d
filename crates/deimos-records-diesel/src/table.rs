//! What the record layer knows of a table: its name, its columns with their SQL types, and its key.

use diesel::sql_types;

/// The SQL type of a column, as far as converting values for it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ColumnType {
    /// `BOOLEAN` (MySQL's `TINYINT(1)`).
    Bool,
    /// `SMALLINT`.
    SmallInt,
    /// `INTEGER`.
    Integer,
    /// `BIGINT`.
    BigInt,
    /// `REAL` / `FLOAT`.
    Float,
    /// `DOUBLE PRECISION` / `DOUBLE`.
    Double,
    /// `TEXT`, `VARCHAR`, `CHAR`.
    Text,
    /// `BYTEA` / `BLOB` / `VARBINARY`.
    Binary,
    /// `TIMESTAMP`, `DATETIME`, `TIMESTAMPTZ` (written and read as UTC).
    Timestamp,
    /// `DATE`.
    Date,
}

impl ColumnType {
    /// Whether values of this type are whole numbers.
    pub fn is_integer(self) -> bool {
        matches!(self, ColumnType::SmallInt | ColumnType::Integer | ColumnType::BigInt)
    }
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// The column's name.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// Whether it accepts NULL.
    pub nullable: bool,
}

/// A table the record layer reads and writes: its name, columns and key columns (the primary key, `id` unless
/// told otherwise, as Rails).
///
/// Build it from a diesel `table!` with [`RecordTable::of`], or by hand with [`RecordTable::new`].
///
/// ```
/// use deimos_records_diesel::{ColumnType, RecordTable};
///
/// diesel::table! {
///     widgets (id) {
///         id -> BigInt,
///         name -> Text,
///         price -> Nullable<Double>,
///         created_at -> Timestamp,
///         updated_at -> Timestamp,
///     }
/// }
///
/// let table = RecordTable::of::<widgets::table>("widgets");
/// assert_eq!(table.primary_key(), ["id"]);
/// assert_eq!(table.column_named("price").map(|c| (c.ty, c.nullable)), Some((ColumnType::Double, true)));
/// assert_eq!(table, RecordTable::new("widgets")
///     .column("id", ColumnType::BigInt)
///     .column("name", ColumnType::Text)
///     .nullable_column("price", ColumnType::Double)
///     .column("created_at", ColumnType::Timestamp)
///     .column("updated_at", ColumnType::Timestamp));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordTable {
    name: String,
    columns: Vec<ColumnDef>,
    primary_key: Vec<String>,
}

impl RecordTable {
    /// A table with no columns yet; its key is `id` until [`primary_key`](Self::with_primary_key) says otherwise.
    pub fn new(name: impl Into<String>) -> RecordTable {
        RecordTable {
            name: name.into(),
            columns: Vec::new(),
            primary_key: vec!["id".to_string()],
        }
    }

    /// The columns of a diesel `table!` (their names and SQL types), under the table's SQL `name`. The key is
    /// `id`; use [`with_primary_key`](Self::with_primary_key) for another.
    pub fn of<T>(name: impl Into<String>) -> RecordTable
    where
        T: diesel::Table,
        T::AllColumns: DieselColumns,
    {
        RecordTable {
            name: name.into(),
            columns: T::AllColumns::describe(),
            primary_key: vec!["id".to_string()],
        }
    }

    /// Adds a NOT NULL column.
    pub fn column(mut self, name: impl Into<String>, ty: ColumnType) -> RecordTable {
        self.columns.push(ColumnDef {
            name: name.into(),
            ty,
            nullable: false,
        });
        self
    }

    /// Adds a nullable column.
    pub fn nullable_column(mut self, name: impl Into<String>, ty: ColumnType) -> RecordTable {
        self.columns.push(ColumnDef {
            name: name.into(),
            ty,
            nullable: true,
        });
        self
    }

    /// Sets the key columns (the primary key, or a unique key the record layer should look records up by).
    pub fn with_primary_key<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> RecordTable {
        self.primary_key = columns.into_iter().map(Into::into).collect();
        self
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its columns, in order.
    pub fn columns(&self) -> &[ColumnDef] {
        &self.columns
    }

    /// The column of that name.
    pub fn column_named(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Whether the table has that column.
    pub fn has(&self, name: &str) -> bool {
        self.column_named(name).is_some()
    }

    /// The key columns.
    pub fn primary_key(&self) -> &[String] {
        &self.primary_key
    }

    /// Checks that the key columns are columns of the table.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.columns.is_empty() {
            return Err(format!(
                "table `{}` has no columns; describe them with RecordTable::of or .column",
                self.name
            ));
        }
        if self.primary_key.is_empty() {
            return Err(format!(
                "table `{}` has no key columns; set them with .with_primary_key",
                self.name
            ));
        }
        for k in &self.primary_key {
            if !self.has(k) {
                return Err(format!(
                    "table `{}` has no column `{k}`, which is named as its key; set the key with .with_primary_key",
                    self.name
                ));
            }
        }
        Ok(())
    }
}

/// A diesel SQL type the record layer can convert values for.
pub trait SqlKind {
    /// The column type.
    const TYPE: ColumnType;
    /// Whether it is `Nullable<…>`.
    const NULLABLE: bool = false;
}

macro_rules! kinds {
    ($($st:ty => $ty:ident),* $(,)?) => {
        $(impl SqlKind for $st { const TYPE: ColumnType = ColumnType::$ty; })*
    };
}

kinds!(
    sql_types::Bool => Bool,
    sql_types::SmallInt => SmallInt,
    sql_types::Integer => Integer,
    sql_types::BigInt => BigInt,
    sql_types::Float => Float,
    sql_types::Double => Double,
    sql_types::Text => Text,
    sql_types::Binary => Binary,
    sql_types::Timestamp => Timestamp,
    sql_types::Date => Date,
);

// `TIMESTAMP WITH TIME ZONE` is a type of diesel's PostgreSQL backend.
#[cfg(feature = "postgres")]
impl SqlKind for sql_types::Timestamptz {
    const TYPE: ColumnType = ColumnType::Timestamp;
}

impl<T: SqlKind + sql_types::SqlType> SqlKind for sql_types::Nullable<T> {
    const TYPE: ColumnType = T::TYPE;
    const NULLABLE: bool = true;
}

/// The columns of a diesel table (`Table::AllColumns`, a tuple of columns), described.
pub trait DieselColumns {
    /// Name, type and nullability of each column, in order.
    fn describe() -> Vec<ColumnDef>;
}

fn def<C>() -> ColumnDef
where
    C: diesel::Column,
    C::SqlType: SqlKind,
{
    ColumnDef {
        name: C::NAME.to_string(),
        ty: <C::SqlType as SqlKind>::TYPE,
        nullable: <C::SqlType as SqlKind>::NULLABLE,
    }
}

macro_rules! columns_tuple {
    () => {};
    ($first:ident $($rest:ident)*) => {
        impl<$first, $($rest),*> DieselColumns for ($first, $($rest,)*)
        where
            $first: diesel::Column,
            $first::SqlType: SqlKind,
            $($rest: diesel::Column, $rest::SqlType: SqlKind,)*
        {
            fn describe() -> Vec<ColumnDef> {
                vec![def::<$first>() $(, def::<$rest>())*]
            }
        }
        columns_tuple!($($rest)*);
    };
}

columns_tuple!(
    C1 C2 C3 C4 C5 C6 C7 C8 C9 C10 C11 C12 C13 C14 C15 C16 C17 C18 C19 C20 C21 C22 C23 C24 C25 C26 C27 C28 C29
    C30 C31 C32
);
