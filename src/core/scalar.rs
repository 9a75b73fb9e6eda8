//! Scalars read as YAML 1.2 core data and JSON Schema see them, for the
//! policy model: the YAML reader's options, and `bool` and integer readers
//! (serde's own also take a quoted `"true"` or `"30"`, which the schema rejects).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// YAML 1.2 core scalars (`yes` is a string; a plain `1`, `true` or `null`
/// is never taken for a string), one document, no duplicate keys.
pub(crate) fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        no_schema: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        with_snippet: false,
    }
}

/// The YAML 1.2 core booleans, for messages.
pub(crate) const BOOLEANS: &str = "true or false (YAML 1.2 booleans: true, True, TRUE, false, False, FALSE; yes, no, on, off and quoted values are strings)";

/// A YAML 1.2 boolean: `true`/`false` (also `True`, `TRUE`, ...), never `yes`,
/// `on`, `1` or a quoted `"true"`, which the JSON Schema rejects as well.
pub(crate) fn strict_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(BOOLEANS)
        }
        fn visit_bool<E>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
    }
    d.deserialize_any(V)
}

/// An integer as JSON Schema reads one: a whole number (`30`, also `30.0`),
/// never a quoted `"30"`.
pub(crate) fn strict_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a whole number of seconds")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            // 2^63 as f64; `as` saturates, so check the range first.
            let whole = v.fract() == 0.0 && v.abs() < 9.223_372_036_854_775e18;
            if whole {
                Ok(Some(v as i64))
            } else {
                Err(E::invalid_value(de::Unexpected::Float(v), &self))
            }
        }
    }
    d.deserialize_option(V)
}
