//! Values crossing the database boundary: [`Val`] parameters in,
//! [`Row`]s of [`Value`]s out, and [`FromValue`], the checked conversion
//! each typed row struct reads its fields with (type, length, range).

use std::sync::Arc;

use tokio_postgres::types::{IsNull, ToSql as PgToSql, Type};

use super::error::{Error, Result, ValueError};

/// A parameter.
#[derive(Clone, Copy, Debug)]
pub enum Val<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl From<i64> for Val<'_> {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}
impl<'a> From<&'a str> for Val<'a> {
    fn from(v: &'a str) -> Self {
        Val::Text(v)
    }
}
impl<'a> From<&'a String> for Val<'a> {
    fn from(v: &'a String) -> Self {
        Val::Text(v)
    }
}
impl<'a> From<&'a [u8]> for Val<'a> {
    fn from(v: &'a [u8]) -> Self {
        Val::Bytes(v)
    }
}
impl<'a> From<&'a Vec<u8>> for Val<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Val::Bytes(v)
    }
}
impl<'a, T: Into<Val<'a>>> From<Option<T>> for Val<'a> {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(Val::Null)
    }
}

/// `params![a, b]`: a slice of [`Val`].
#[macro_export]
macro_rules! params {
    ($($v:expr),* $(,)?) => { &[$($crate::store::Val::from($v)),*][..] };
}

impl rusqlite::ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput::Borrowed, ValueRef};
        Ok(Borrowed(match *self {
            Val::Null => ValueRef::Null,
            Val::Int(i) => ValueRef::Integer(i),
            Val::Text(s) => ValueRef::Text(s.as_bytes()),
            Val::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

impl PgToSql for Val<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) if *ty == Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
            Val::Int(i) => i.to_sql(ty, out),
            Val::Text(s) => s.to_sql(ty, out),
            Val::Bytes(b) => b.to_sql(ty, out),
        }
    }
    fn accepts(ty: &Type) -> bool {
        [
            Type::INT8,
            Type::INT4,
            Type::TEXT,
            Type::VARCHAR,
            Type::BYTEA,
        ]
        .contains(ty)
    }
    tokio_postgres::types::to_sql_checked!();
}

/// A column value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// One result row, its values by column name: a query's typed row struct
/// reads each field by the name in its column list, never by position.
#[derive(Debug)]
pub struct Row {
    names: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    /// Column `column`, converted with its checks (type, length, range).
    pub fn get<T: FromValue>(&self, column: &str) -> Result<T> {
        let i = self
            .names
            .iter()
            .position(|n| n == column)
            .ok_or_else(|| Error::Shape(format!("no column {column:?} in {:?}", self.names)))?;
        T::from_value(&self.values[i]).map_err(|problem| Error::Column {
            column: column.to_string(),
            problem,
        })
    }
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
        }
    }

    fn expected(&self, expected: &'static str) -> ValueError {
        ValueError::Type {
            expected,
            found: self.kind(),
        }
    }
}

/// A column type a row struct may declare, converted with its checks.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Result<Self, ValueError>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Result<Self, ValueError> {
        match v {
            Value::Int(i) => Ok(*i),
            v => Err(v.expected("an integer")),
        }
    }
}

/// The narrower integers: checked, never truncated by `as`.
macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value) -> Result<Self, ValueError> {
                let i = i64::from_value(v)?;
                <$t>::try_from(i).map_err(|_| ValueError::Range {
                    value: i,
                    ty: stringify!($t),
                })
            }
        }
    )*};
}
from_int!(u8, u16, u32, u64, i32);

impl FromValue for String {
    fn from_value(v: &Value) -> Result<Self, ValueError> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            v => Err(v.expected("text")),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Result<Self, ValueError> {
        match v {
            Value::Bytes(b) => Ok(b.clone()),
            v => Err(v.expected("bytes")),
        }
    }
}

/// Digests, keys, nonces and ids: exactly `N` bytes.
impl<const N: usize> FromValue for [u8; N] {
    fn from_value(v: &Value) -> Result<Self, ValueError> {
        match v {
            Value::Bytes(b) => b.as_slice().try_into().map_err(|_| ValueError::Length {
                expected: N,
                found: b.len(),
            }),
            v => Err(v.expected("bytes")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self, ValueError> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

pub(super) fn sqlite_row(r: &rusqlite::Row<'_>, names: &Arc<[String]>) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut out = Vec::with_capacity(names.len());
    for i in 0..names.len() {
        out.push(match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Int(f as i64),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
        });
    }
    Ok(Row {
        names: names.clone(),
        values: out,
    })
}

pub(super) fn postgres_row(r: &tokio_postgres::Row, names: &Arc<[String]>) -> Result<Row> {
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let ty = col.type_();
        let v = if *ty == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *ty == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes)
        } else if [Type::TEXT, Type::VARCHAR, Type::NAME].contains(ty) {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        } else {
            return Err(Error::Shape(format!(
                "column {} has PostgreSQL type {ty}",
                col.name()
            )));
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row {
        names: names.clone(),
        values: out,
    })
}

/// A node's u64 counter as a column value (a node could send 2^64 - 1):
/// the store's columns are signed 64-bit on both backends.
pub(super) fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Db, Sql};

    #[test]
    fn conversions_check_type_length_and_range() {
        let mut db = Db::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        let r = db
            .one(
                "SELECT 300 AS big, -1 AS negative, x'0102' AS two, 'x' AS t, NULL AS empty",
                &[],
            )
            .unwrap();
        assert_eq!(r.get::<u16>("big").unwrap(), 300);
        assert!(matches!(
            r.get::<u8>("big"),
            Err(Error::Column { column, problem: ValueError::Range { value: 300, ty: "u8" } }) if column == "big"
        ));
        assert!(matches!(
            r.get::<u64>("negative"),
            Err(Error::Column {
                problem: ValueError::Range { value: -1, .. },
                ..
            })
        ));
        assert_eq!(r.get::<[u8; 2]>("two").unwrap(), [1, 2]);
        assert!(matches!(
            r.get::<[u8; 32]>("two"),
            Err(Error::Column {
                problem: ValueError::Length {
                    expected: 32,
                    found: 2
                },
                ..
            })
        ));
        assert!(matches!(
            r.get::<Vec<u8>>("t"),
            Err(Error::Column {
                problem: ValueError::Type {
                    expected: "bytes",
                    found: "text"
                },
                ..
            })
        ));
        assert!(matches!(
            r.get::<i64>("empty"),
            Err(Error::Column {
                problem: ValueError::Type { found: "NULL", .. },
                ..
            })
        ));
        assert_eq!(r.get::<Option<[u8; 32]>>("empty").unwrap(), None);
        assert!(matches!(r.get::<i64>("absent"), Err(Error::Shape(_))));
        let shown = r.get::<[u8; 32]>("two").unwrap_err().to_string();
        assert_eq!(shown, "stored two holds 2 bytes, not 32");
    }
}
