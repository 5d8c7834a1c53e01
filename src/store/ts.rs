//! A timestamp as both backends keep it ([`Ts`]): UTC text with milliseconds on SQLite
//! (`2026-11-26T04:43:00.123Z`, which sqlite3's date functions read and which sorts as text),
//! `timestamptz` on PostgreSQL (read back to the millisecond, as SQLite keeps it); one
//! statement binds and reads it on either.

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

use super::{format_ts, parse_ts};

/// A UTC instant, bound and read the same way on SQLite and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ts(pub DateTime<Utc>);

impl From<DateTime<Utc>> for Ts {
    fn from(t: DateTime<Utc>) -> Self {
        Self(t)
    }
}

impl Type<Sqlite> for Ts {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Ts {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as sqlx::Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'_, Sqlite>>::encode(format_ts(self.0), buf)
    }
}

impl Decode<'_, Sqlite> for Ts {
    fn decode(value: sqlx::sqlite::SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
        let text = <String as Decode<'_, Sqlite>>::decode(value)?;
        parse_ts(&text)
            .map(Ts)
            .ok_or_else(|| format!("not a timestamp: {text:?}").into())
    }
}

impl Type<Postgres> for Ts {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as sqlx::Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<'_, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl Decode<'_, Postgres> for Ts {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, BoxDynError> {
        // Milliseconds, as SQLite keeps them (PostgreSQL keeps microseconds).
        <DateTime<Utc> as Decode<'_, Postgres>>::decode(value).map(|t| Ts(t.trunc_subsecs(3)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On SQLite a timestamp goes in as the stored text and comes back the same instant, with
    /// `$N` placeholders (one statement text for both backends).
    #[tokio::test]
    async fn a_timestamp_round_trips_on_sqlite_with_numbered_placeholders() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let t = Ts(DateTime::from_timestamp_millis(1_800_000_000_123).unwrap());
        let (text, back): (String, Ts) = sqlx::query_as("SELECT $1, $1")
            .bind(t)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(text, "2027-01-15T08:00:00.123Z");
        assert_eq!(back, t);
        let two: (i64, i64) = sqlx::query_as("SELECT $2, $1")
            .bind(1_i64)
            .bind(2_i64)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(two, (2, 1));
    }
}
