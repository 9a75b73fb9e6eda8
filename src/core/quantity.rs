//! Kubernetes resource quantities (`500m`, `8Gi`, `1e3`), compared exactly.
//!
//! Values are kept as integer nano-units (10⁻⁹), the finest unit Kubernetes
//! accepts, so `1500m < 2` and `8Gi > 8G` compare without floating point.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A parsed quantity: its original text and its exact value in nano-units.
#[derive(Clone, Debug)]
pub struct Quantity {
    text: String,
    nanos: i128,
}

/// Why a string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {text:?}: {reason} (expected e.g. 500m, 2, 1.5, 8Gi, 512Mi)")]
pub struct QuantityError {
    text: String,
    reason: &'static str,
}

const NANO: i128 = 1_000_000_000;
// 2^63 nano-units is far beyond any real request; rejecting bigger numbers
// keeps every later arithmetic step inside i128.
const LIMIT: i128 = 1 << 100;

impl Quantity {
    /// Parses a quantity the way the apiserver does (sign, decimal, suffix or exponent).
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let err = |reason| QuantityError {
            text: text.to_string(),
            reason,
        };
        let s = text.trim();
        if s.is_empty() || s.len() != text.len() {
            return Err(err("empty or surrounded by spaces"));
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err("no number"));
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        // Multiplier as (numerator power of 10 or 2) applied to nano-units.
        let (mul, div): (i128, i128) = match suffix {
            "" => (NANO, 1),
            "n" => (1, 1),
            "u" => (1_000, 1),
            "m" => (1_000_000, 1),
            "k" => (NANO * 1_000, 1),
            "M" => (NANO * 1_000_000, 1),
            "G" => (NANO * 1_000_000_000, 1),
            "T" => (NANO * 1_000_000_000_000, 1),
            "P" => (NANO * 1_000_000_000_000_000, 1),
            "E" => (NANO * 1_000_000_000_000_000_000, 1),
            "Ki" => (NANO << 10, 1),
            "Mi" => (NANO << 20, 1),
            "Gi" => (NANO << 30, 1),
            "Ti" => (NANO << 40, 1),
            "Pi" => (NANO << 50, 1),
            "Ei" => (NANO << 60, 1),
            exp if exp.starts_with(['e', 'E']) => {
                let e: i32 = exp[1..].parse().map_err(|_| err("unknown suffix"))?;
                if !(-9..=18).contains(&e) {
                    return Err(err("exponent out of range"));
                }
                // e >= -9 here, so the multiplier is a whole number of nano-units.
                (10i128.pow((e + 9).unsigned_abs()), 1)
            }
            _ => return Err(err("unknown suffix")),
        };
        if int_part.len() + frac_part.len() > 30 {
            return Err(err("too many digits"));
        }
        let digits = format!("{int_part}{frac_part}");
        let mantissa: i128 = digits.parse().map_err(|_| err("no number"))?;
        let scale = 10i128.pow(frac_part.len() as u32);
        let value = mantissa.checked_mul(mul).ok_or_else(|| err("too large"))?;
        // Kubernetes rounds fractions of the smallest unit up.
        let denom = scale
            .checked_mul(div)
            .ok_or_else(|| err("too many digits"))?;
        let mut nanos = value / denom + i128::from(value % denom != 0);
        if nanos > LIMIT {
            return Err(err("too large"));
        }
        if negative {
            nanos = -nanos;
        }
        Ok(Quantity {
            text: text.to_string(),
            nanos,
        })
    }

    /// The text as written in the policy or pod.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The exact value in nano-units.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}
impl Eq for Quantity {}
impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML users write `cpu: 2` as often as `cpu: "2"`; accept both.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Kubernetes quantity such as 500m, 2 or 8Gi")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Quantity::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Quantity::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Quantity::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                Quantity::parse(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl schemars::JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Kubernetes quantity, e.g. 500m, 2, 8Gi",
            "anyOf": [
                {"type": "string", "pattern": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"},
                {"type": "number"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[rstest]
    #[case("1500m", "2", Ordering::Less)]
    #[case("8Gi", "8G", Ordering::Greater)]
    #[case("1", "1000m", Ordering::Equal)]
    #[case("0.5", "500m", Ordering::Equal)]
    #[case("1k", "1000", Ordering::Equal)]
    #[case("1Ki", "1024", Ordering::Equal)]
    #[case("1e3", "1k", Ordering::Equal)]
    #[case("1E3", "1000", Ordering::Equal)]
    #[case("16Gi", "17179869184", Ordering::Equal)]
    #[case("100n", "1u", Ordering::Less)]
    #[case("1000n", "1u", Ordering::Equal)]
    #[case("-1", "0", Ordering::Less)]
    #[case("2", "2.0001", Ordering::Less)]
    fn compares_like_kubernetes(#[case] a: &str, #[case] b: &str, #[case] want: Ordering) {
        assert_eq!(q(a).cmp(&q(b)), want, "{a} vs {b}");
    }

    #[test]
    fn equal_means_the_same_amount() {
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_ne!(q("1"), q("2"));
        assert_ne!(q("1k"), q("1Ki"));
    }

    #[rstest]
    #[case("2 cores")]
    #[case("")]
    #[case("abc")]
    #[case("1.2.3")]
    #[case("5X")]
    #[case(" 1")]
    #[case("1e99")]
    #[case("99999999999999999999999999999999999")]
    #[case(".")]
    #[case("0.000000000000000000000000000001e-18")]
    #[case("１")]
    fn rejects_garbage(#[case] s: &str) {
        let e = Quantity::parse(s).expect_err(s);
        assert!(e.to_string().contains("invalid quantity"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = Quantity::parse(&s);
        }

        #[test]
        fn numbers_round_trip(n in 0u64..1_000_000_000, suffix in proptest::sample::select(vec!["", "m", "k", "Mi", "Gi"])) {
            let q = Quantity::parse(&format!("{n}{suffix}"));
            proptest::prop_assert!(q.is_ok());
        }
    }

    #[test]
    fn keeps_text() {
        assert_eq!(q("8Gi").as_str(), "8Gi");
        assert_eq!(q("1.5").nanos(), 1_500_000_000);
    }
}
