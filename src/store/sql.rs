//! The seam between the store's queries and a database engine. The queries (`orgs`,
//! `ca_certificates`, …) are written once, in the SQL both engines speak, against [`Sql`]; each
//! backend (`sqlite`, `postgres`) implements [`Sql`] and [`Backend`] and nothing else. So sealing,
//! grant arithmetic, paging and validation exist once, and a behaviour test run on both backends
//! tests the same code.
//!
//! The SQL dialect the queries keep to: `?N` or `?` placeholders (a backend that numbers them
//! differently rewrites them), integers (unix microseconds for times, 0/1 for flags), text and
//! blobs only, `ON CONFLICT` rather than `INSERT OR …`, and `instr(haystack, needle)` (the
//! PostgreSQL schema defines it). A boolean expression read as a column is a flag either way.
//!
//! [`Row`] and [`Value`] mirror rusqlite's shapes on purpose: the queries read as they did when
//! they spoke rusqlite directly.

/// One SQL value, as both engines keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Integer(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// What a backend reports. A constraint violation is told apart because the store turns it into
/// its own error (`OrgExists`, `UnknownOrg`, …); everything else is the backend's message.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unique constraint violated: {0}")]
    Unique(String),
    #[error("foreign key violated: {0}")]
    ForeignKey(String),
    #[error("query returned no rows")]
    NoRows,
    #[error("column {index}: {message}")]
    Column { index: usize, message: String },
    /// The engine's own error, prefixed with its name.
    #[error("{0}")]
    Backend(String),
    /// The database cannot be reached (no connection, or the connection was lost): nothing was
    /// changed, and the same call may succeed once it is back.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// One row of a result.
#[derive(Debug)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    pub fn new(values: Vec<Value>) -> Row {
        Row { values }
    }

    /// Column `index` as `T` (an integer read as `bool` is a flag).
    pub fn get<I: RowIndex, T: FromValue>(&self, index: I) -> Result<T, DbError> {
        let index = index.index();
        let value = self.values.get(index).ok_or_else(|| DbError::Column {
            index,
            message: "no such column".into(),
        })?;
        T::from_value(value).map_err(|message| DbError::Column { index, message })
    }
}

/// A column index (only `usize`: an untyped literal then infers to it).
pub trait RowIndex {
    fn index(self) -> usize;
}

impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// A Rust value that binds as a parameter.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

/// A Rust value a column converts into.
pub trait FromValue: Sized {
    fn from_value(value: &Value) -> Result<Self, String>;
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Integer(i64::from(*self))
            }
        }
    )*};
}
int_to_value!(i64, i32, u32, u16, u8);

impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl FromValue for Value {
    fn from_value(value: &Value) -> Result<Self, String> {
        Ok(value.clone())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b.clone()),
            other => Err(format!("expected a blob, found {other:?}")),
        }
    }
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Integer(i) => Ok(*i),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Result<Self, String> {
        i64::from_value(value).map(|i| i != 0)
    }
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: &Value) -> Result<Self, String> {
                let i = i64::from_value(value)?;
                <$t>::try_from(i).map_err(|_| format!("{i} out of range"))
            }
        }
    )*};
}
int_from_value!(i32, u32, u64, usize);

/// The parameters of one statement.
pub trait Params {
    fn into_values(self) -> Vec<Value>;
}

impl<T: ToValue, const N: usize> Params for [T; N] {
    fn into_values(self) -> Vec<Value> {
        self.iter().map(ToValue::to_value).collect()
    }
}

impl Params for Vec<Value> {
    fn into_values(self) -> Vec<Value> {
        self
    }
}

/// `params![a, b]`: each argument by reference, as rusqlite's macro of the same name.
macro_rules! params {
    () => {
        [] as [$crate::store::sql::Value; 0]
    };
    ($($x:expr),+ $(,)?) => {
        [$($crate::store::sql::ToValue::to_value(&$x)),+]
    };
}
pub(crate) use params;

/// Parameters from a list built at run time.
pub fn params_from_iter<T: ToValue>(values: impl IntoIterator<Item = T>) -> Vec<Value> {
    values.into_iter().map(|v| v.to_value()).collect()
}

/// One connection inside one transaction (or a read), as a backend gives it. Dropping it without
/// [`Sql::commit`] rolls back.
pub trait Sql {
    /// Runs one statement; the number of rows it changed.
    fn execute_values(&self, sql: &str, params: Vec<Value>) -> Result<usize, DbError>;

    /// Runs one query; every row it returned.
    fn query_values(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError>;

    /// Commits what this transaction wrote.
    fn commit(self: Box<Self>) -> Result<(), DbError>;
}

/// A boxed transaction passes where `&dyn Sql` is asked (`&tx`), as the transaction itself.
impl<S: Sql + ?Sized> Sql for Box<S> {
    fn execute_values(&self, sql: &str, params: Vec<Value>) -> Result<usize, DbError> {
        (**self).execute_values(sql, params)
    }

    fn query_values(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        (**self).query_values(sql, params)
    }

    fn commit(self: Box<Self>) -> Result<(), DbError> {
        (*self).commit()
    }
}

/// The queries' way of calling [`Sql`], in rusqlite's shapes.
pub trait SqlExt: Sql {
    fn execute(&self, sql: &str, params: impl Params) -> Result<usize, DbError> {
        self.execute_values(sql, params.into_values())
    }

    /// The first row, converted; [`DbError::NoRows`] when there is none.
    fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        read: impl FnOnce(&Row) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let rows = self.query_values(sql, params.into_values())?;
        rows.first().map_or(Err(DbError::NoRows), read)
    }

    fn prepare(&self, sql: &str) -> Result<Statement<'_, Self>, DbError> {
        Ok(Statement {
            conn: self,
            sql: sql.to_owned(),
        })
    }
}

impl<S: Sql + ?Sized> SqlExt for S {}

/// A query to run (kept as text: each backend prepares on its own terms).
pub struct Statement<'a, S: ?Sized> {
    conn: &'a S,
    sql: String,
}

impl<S: Sql + ?Sized> Statement<'_, S> {
    /// Every row, each converted by `read`. `&mut` as rusqlite's, so call sites read the same.
    pub fn query_map<T>(
        &mut self,
        params: impl Params,
        read: impl FnMut(&Row) -> Result<T, DbError>,
    ) -> Result<std::vec::IntoIter<Result<T, DbError>>, DbError> {
        let rows = self.conn.query_values(&self.sql, params.into_values())?;
        Ok(rows.iter().map(read).collect::<Vec<_>>().into_iter())
    }
}

/// rusqlite's `optional()`: no row is `None`.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>, DbError>;
}

impl<T> OptionalExtension<T> for Result<T, DbError> {
    fn optional(self) -> Result<Option<T>, DbError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A database engine: where transactions come from.
pub trait Backend: Send + Sync {
    /// A read: one consistent view for the statements run on it.
    fn read(&self) -> Result<Box<dyn Sql + '_>, DbError>;

    /// A write transaction, serialised with every other writer of the database (on every node):
    /// a read-then-write inside it sees no concurrent change, as under SQLite's `BEGIN IMMEDIATE`.
    fn write(&self) -> Result<Box<dyn Sql + '_>, DbError>;

    /// A write transaction on rows that only this node writes (its live sessions), not
    /// serialised with other nodes' writers: on SQLite the same as [`Backend::write`].
    fn write_own(&self) -> Result<Box<dyn Sql + '_>, DbError>;

    /// The id this store's grant reservations are recorded under (`grant_holds.holder`, see
    /// `store::grant_holds`), checked alive first: on PostgreSQL its lock is taken again if the
    /// connection that held it was lost. Called once per reserved block, never per use.
    fn holder(&self) -> Result<i64, DbError>;

    /// A query of the holder ids whose store is alive, for `holder IN (…)`: the stores of the
    /// holders it does not list are gone, and what they held counts as spent.
    fn live_holders(&self) -> String;

    /// Sends `payloads`, in order, to the other nodes sharing the database
    /// (`NodeStore::tell_nodes`).
    fn tell_nodes(&self, payloads: &[String]) -> Result<(), DbError>;
}

/// One engine's way of keeping its schema: `schema_migrations` (version, applied_at) in its own
/// types, and one transaction per migration.
pub trait Migrations {
    /// Creates `schema_migrations` when missing; the highest version applied (0: none).
    fn current(&mut self) -> Result<i64, DbError>;

    /// Runs `sql` and records `version` as applied at `applied_at` (unix µs), in one transaction.
    fn apply(&mut self, version: i64, sql: &str, applied_at: i64) -> Result<(), DbError>;
}

/// Applies, in order, each of `migrations` (`(version, sql)`, append only) that `engine` has not
/// applied yet. A database written by a newer Portcullis (a version this build does not know) is
/// refused rather than guessed at.
pub fn migrate(
    engine: &mut dyn Migrations,
    migrations: &[(i64, &str)],
) -> Result<(), super::StoreError> {
    let latest = migrations.last().map_or(0, |(v, _)| *v);
    let current = engine.current()?;
    if current > latest {
        return Err(super::StoreError::Corrupt(format!(
            "the database has schema version {current}, newer than this build knows ({latest})"
        )));
    }
    for (version, sql) in migrations.iter().filter(|(v, _)| *v > current) {
        let now = super::to_micros(time::OffsetDateTime::now_utc());
        engine.apply(*version, sql, now)?;
        tracing::info!(version, "applied store migration");
    }
    Ok(())
}
