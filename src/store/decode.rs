//! Reading the typed text columns (a run's `status`, its `trigger`) from either backend: each
//! is stored as its name, and a name this version does not know is an error naming it, never
//! a guess.

use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Type};

use super::{RunStatus, Trigger};

/// `Type` and `Decode` for a type stored as its name, on any backend that stores text.
macro_rules! stored_as_name {
    ($ty:ty, $parse:expr) => {
        impl<DB: Database> Type<DB> for $ty
        where
            String: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $ty
        where
            String: Decode<'r, DB>,
        {
            fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let name = <String as Decode<'r, DB>>::decode(value)?;
                let parse: fn(&str) -> Result<$ty, String> = $parse;
                Ok(parse(&name)?)
            }
        }
    };
}

stored_as_name!(RunStatus, str::parse);
stored_as_name!(Trigger, |name| Trigger::from_name(name)
    .ok_or_else(|| format!("{name:?} is not a trigger")));
