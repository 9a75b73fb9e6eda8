//! Kubernetes resource quantities (`500m`, `8Gi`, `1e3`), compared exactly.
//!
//! Parsed as `k8s.io/apimachinery`'s `ParseQuantity` does (v0.36): any number
//! of digits, any decimal exponent (`1e19`, `1e99`: decimal values are not
//! capped), binary suffixes capped at 2^63-1, fractions of a nano-unit rounded
//! up. The value is kept as an exact decimal (digits × 10^exponent), so
//! `1500m < 2`, `8Gi > 8G` and `1e19 > 16Gi` compare without floating point
//! and no quantity the apiserver accepts escapes a cap by failing to parse.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A parsed quantity: its original text and its exact value.
#[derive(Clone, Debug)]
pub struct Quantity {
    text: String,
    value: Decimal,
}

/// Why a string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {text:?}: {reason} (expected e.g. 500m, 2, 1.5, 8Gi, 512Mi)")]
pub struct QuantityError {
    text: String,
    reason: &'static str,
}

/// An exact decimal: `digits × 10^exp`, negated when `negative`. `digits` has
/// no leading or trailing zeros (empty is zero), so equal values are equal structs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exp: i64,
}

/// `9223372036854775807`: Kubernetes caps binary-suffixed quantities here.
const MAX_INT64_DIGITS: &[u8] = b"9223372036854775807";

impl Decimal {
    fn new(negative: bool, mut digits: Vec<u8>, mut exp: i64) -> Decimal {
        let lead = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..lead);
        while digits.last() == Some(&0) {
            digits.pop();
            exp += 1;
        }
        if digits.is_empty() {
            exp = 0;
        }
        Decimal {
            negative: negative && !digits.is_empty(),
            digits,
            exp,
        }
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Multiplies the magnitude by `m` (a binary suffix: at most 2^60).
    fn times(self, m: u64) -> Decimal {
        let mut out = Vec::with_capacity(self.digits.len() + 20);
        let mut carry: u128 = 0;
        for d in self.digits.iter().rev() {
            let v = u128::from(*d) * u128::from(m) + carry;
            out.push((v % 10) as u8);
            carry = v / 10;
        }
        while carry > 0 {
            out.push((carry % 10) as u8);
            carry /= 10;
        }
        out.reverse();
        Decimal::new(self.negative, out, self.exp)
    }

    /// Rounds the magnitude up to whole nano-units (10^-9), as Kubernetes does
    /// ("if you want some resources, you should get some").
    fn round_up_to_nanos(self) -> Decimal {
        if self.exp >= -9 {
            return self;
        }
        let drop = usize::try_from(-9 - self.exp).unwrap_or(usize::MAX);
        let mut digits = self.digits;
        let keep = digits.len().saturating_sub(drop);
        let dropped_nonzero = digits[keep..].iter().any(|d| *d != 0);
        digits.truncate(keep);
        if dropped_nonzero {
            let mut i = digits.len();
            loop {
                if i == 0 {
                    digits.insert(0, 1);
                    break;
                }
                i -= 1;
                if digits[i] == 9 {
                    digits[i] = 0;
                } else {
                    digits[i] += 1;
                    break;
                }
            }
        }
        Decimal::new(self.negative, digits, -9)
    }

    /// Compares magnitudes.
    fn cmp_abs(&self, other: &Decimal) -> Ordering {
        match (self.is_zero(), other.is_zero()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        // The position of the leading digit decides first.
        let top = |d: &Decimal| d.digits.len() as i128 + i128::from(d.exp);
        top(self).cmp(&top(other)).then_with(|| {
            let n = self.digits.len().max(other.digits.len());
            let at = |d: &Decimal, i: usize| d.digits.get(i).copied().unwrap_or(0);
            (0..n)
                .map(|i| at(self, i).cmp(&at(other, i)))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        })
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_abs(other),
            (true, true) => other.cmp_abs(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Quantity {
    /// Parses a quantity the way the apiserver does (sign, decimal, suffix or exponent).
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let err = |reason| QuantityError {
            text: text.to_string(),
            reason,
        };
        let s = text;
        if s.is_empty() {
            return Err(err("empty"));
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_end);
        let (frac_part, suffix) = match after.strip_prefix('.') {
            Some(f) => {
                let end = f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len());
                f.split_at(end)
            }
            None => ("", after),
        };
        // An empty number is zero to Kubernetes (`+`, `.`, even `m`): kept, as
        // the apiserver stores such pods.
        // Multiplier: a power of ten, or a power of two for binary suffixes.
        let (pow10, pow2): (i64, u32) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            exp if exp.len() > 1 && exp.starts_with(['e', 'E']) => {
                let digits = exp[1..].trim_start_matches(['+', '-']);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("unknown suffix"));
                }
                // strconv.ParseInt(.., 64), then int32(...): Kubernetes wraps.
                let e: i64 = exp[1..].parse().map_err(|_| err("exponent out of range"))?;
                (i64::from(e as i32), 0)
            }
            _ => return Err(err("unknown suffix")),
        };
        let digits: Vec<u8> = int_part
            .bytes()
            .chain(frac_part.bytes())
            .map(|b| b - b'0')
            .collect();
        let exp = pow10 - frac_part.len() as i64;
        let mut value = Decimal::new(negative, digits, exp);
        if pow2 > 0 {
            value = value.times(1u64 << pow2);
        }
        value = value.round_up_to_nanos();
        if pow2 > 0 {
            let max = Decimal::new(
                false,
                MAX_INT64_DIGITS.iter().map(|b| b - b'0').collect(),
                0,
            );
            if value.cmp_abs(&max) == Ordering::Greater {
                value = Decimal { negative, ..max };
            }
        }
        Ok(Quantity {
            text: text.to_string(),
            value,
        })
    }

    /// The text as written in the policy or pod.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the amount is above zero.
    pub fn is_positive(&self) -> bool {
        !self.value.negative && !self.value.is_zero()
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
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
        self.value.cmp(&other.value)
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
    #[case("1e+3", "1k", Ordering::Equal)]
    #[case("1e-3", "1m", Ordering::Equal)]
    #[case("16Gi", "17179869184", Ordering::Equal)]
    #[case("100n", "1u", Ordering::Less)]
    #[case("1000n", "1u", Ordering::Equal)]
    #[case("-1", "0", Ordering::Less)]
    #[case("-2", "-1", Ordering::Less)]
    #[case("2", "2.0001", Ordering::Less)]
    #[case("1.5Ki", "1536", Ordering::Equal)]
    #[case("007", "7", Ordering::Equal)]
    // Large decimal exponents are exact and uncapped (issue #19: `1e19` skipped caps).
    #[case("1e19", "16Gi", Ordering::Greater)]
    #[case("1e19", "9223372036854775807", Ordering::Greater)]
    #[case("1e99", "1e98", Ordering::Greater)]
    #[case("10e18", "1e19", Ordering::Equal)]
    #[case("99999999999999999999999999999999999", "1e34", Ordering::Greater)]
    // Binary suffixes are capped at 2^63-1, as Kubernetes does.
    #[case("9Ei", "9223372036854775807", Ordering::Equal)]
    #[case("9223372036854775807Ki", "9Ei", Ordering::Equal)]
    #[case("7Ei", "8Ei", Ordering::Less)]
    #[case("8Ei", "9Ei", Ordering::Equal)]
    // Fractions of a nano-unit round up.
    #[case("0.1n", "1n", Ordering::Equal)]
    #[case("1e-30", "1n", Ordering::Equal)]
    #[case("1.0000000001", "1000000001n", Ordering::Equal)]
    #[case("0.000000000000000000000000000001e-18", "1n", Ordering::Equal)]
    // An empty number is zero to Kubernetes.
    #[case(".", "0", Ordering::Equal)]
    #[case("+", "0", Ordering::Equal)]
    // ParseInt(64) then int32(): 2^32 wraps to 0, so this is 1.
    #[case("1e4294967296", "1", Ordering::Equal)]
    fn compares_like_kubernetes(#[case] a: &str, #[case] b: &str, #[case] want: Ordering) {
        assert_eq!(q(a).cmp(&q(b)), want, "{a} vs {b}");
        assert_eq!(q(b).cmp(&q(a)), want.reverse(), "{b} vs {a}");
    }

    #[test]
    fn equal_means_the_same_amount() {
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1e19"), q("10000000000000000000"));
        assert_ne!(q("1"), q("2"));
        assert_ne!(q("1k"), q("1Ki"));
        assert_ne!(q("-1"), q("1"));
    }

    #[rstest]
    #[case("2 cores")]
    #[case("")]
    #[case("abc")]
    #[case("1.2.3")]
    #[case("5X")]
    #[case(" 1")]
    #[case("1 ")]
    #[case("1e")]
    #[case("1ee3")]
    #[case("1e+-3")]
    #[case("1e99999999999999999999")]
    #[case("１")]
    fn rejects_what_kubernetes_rejects(#[case] s: &str) {
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

        /// Below 2^63 base units the exact decimal orders as integer nano-units do.
        #[test]
        fn orders_as_nano_units(a in 0u64..u64::MAX, b in 0u64..u64::MAX, sa in 0usize..4, sb in 0usize..4) {
            const S: [(&str, i128); 4] = [("n", 1), ("m", 1_000_000), ("", 1_000_000_000), ("Ki", 1_024_000_000_000)];
            let (x, y) = (q(&format!("{a}{}", S[sa].0)), q(&format!("{b}{}", S[sb].0)));
            let cap = |v: i128, binary: bool| if binary { v.min(i128::from(i64::MAX) * 1_000_000_000) } else { v };
            let nx = cap(i128::from(a) * S[sa].1, sa == 3);
            let ny = cap(i128::from(b) * S[sb].1, sb == 3);
            proptest::prop_assert_eq!(x.cmp(&y), nx.cmp(&ny));
        }
    }

    #[test]
    fn keeps_text_and_sign() {
        assert_eq!(q("8Gi").as_str(), "8Gi");
        assert!(q("1.5").is_positive());
        assert!(!q("0").is_positive());
        assert!(!q("-1").is_positive());
        assert!(!q("0.0").is_positive());
    }
}
