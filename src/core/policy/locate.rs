//! Finds the line and column of a field path in a YAML document, so that
//! errors found after parsing (a missing default profile, say) point at the
//! right place just like syntax errors do.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One segment of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Formats a path the way users read it: `placement.profiles.fargate.tolerations[0]`.
pub fn format_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Line and column, 1-based.
pub type Pos = (u64, u64);

fn pos(loc: serde_saphyr::Location) -> Pos {
    (loc.line(), loc.column())
}

enum Node {
    /// Entries by key, each with where its key starts.
    Map(BTreeMap<String, (Pos, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(n) = a.next_element::<Spanned<Node>>()? {
                    v.push(n);
                }
                Ok(Node::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut m = BTreeMap::new();
                while let Some(k) = a.next_key::<Spanned<KeyString>>()? {
                    let v = a.next_value::<Spanned<Node>>()?;
                    m.insert(k.value.0, (pos(k.referenced), v));
                }
                Ok(Node::Map(m))
            }
        }
        d.deserialize_any(V)
    }
}

/// Any scalar key, as text (YAML allows `1: x`).
struct KeyString(String);

impl<'de> Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The deepest node of `path` that exists in `src`, and whether it is the whole path.
fn walk<'a>(root: &'a Spanned<Node>, path: &[Seg]) -> (&'a Spanned<Node>, bool) {
    let mut cur = root;
    for seg in path {
        let next = match (&cur.value, seg) {
            (Node::Map(m), Seg::Key(k)) => m.get(k).map(|(_, v)| v),
            (Node::Seq(v), Seg::Index(i)) => v.get(*i),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return (cur, false),
        }
    }
    (cur, true)
}

/// Line and column (1-based) of the deepest node of `path` that exists in `src`.
pub fn locate(src: &str, path: &[Seg]) -> Option<Pos> {
    let root: Spanned<Node> =
        serde_saphyr::from_str_with_options(src, crate::core::scalar::yaml_options()).ok()?;
    let loc = walk(&root, path).0.referenced;
    (loc.line() > 0).then(|| pos(loc))
}

/// The key of the mapping at `map` whose entry holds `at`: the last key that
/// starts at or before it. It names the key of an error serde reports without
/// one (`rules.?`), whether the key itself or its value is wrong.
pub fn key_at(src: &str, map: &[Seg], at: Pos) -> Option<String> {
    let root: Spanned<Node> =
        serde_saphyr::from_str_with_options(src, crate::core::scalar::yaml_options()).ok()?;
    let (
        Spanned {
            value: Node::Map(m),
            ..
        },
        true,
    ) = walk(&root, map)
    else {
        return None;
    };
    m.iter()
        .filter(|(_, (key_pos, _))| *key_pos <= at)
        .max_by_key(|(_, (key_pos, _))| *key_pos)
        .map(|(k, _)| k.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_indexes() {
        let src = "a:\n  b:\n    - x\n    - {c: 1}\n";
        assert_eq!(locate(src, &[Seg::Key("a".into())]), Some((2, 3)));
        let p = [Seg::Key("a".into()), Seg::Key("b".into()), Seg::Index(1)];
        assert_eq!(locate(src, &p).map(|l| l.0), Some(4));
        assert_eq!(format_path(&p), "a.b[1]");
    }

    #[test]
    fn key_at_names_the_entry_holding_a_position() {
        let src = "a:\n  x: 1\n  y: {z: [2]}\nb: {u: 3, v: 4}\n";
        let a = [Seg::Key("a".into())];
        assert_eq!(
            key_at(src, &a, (2, 3)).as_deref(),
            Some("x"),
            "the key itself"
        );
        assert_eq!(
            key_at(src, &a, (3, 13)).as_deref(),
            Some("y"),
            "inside its value"
        );
        let b = [Seg::Key("b".into())];
        assert_eq!(key_at(src, &b, (4, 12)).as_deref(), Some("v"), "flow style");
        assert_eq!(key_at(src, &b, (1, 1)), None, "before every key");
        assert_eq!(key_at(src, &[Seg::Key("zz".into())], (2, 3)), None);
    }

    #[test]
    fn missing_path_points_at_deepest_parent() {
        let src = "a:\n  b: 1\n";
        let p = [Seg::Key("a".into()), Seg::Key("zz".into())];
        assert_eq!(locate(src, &p).map(|l| l.0), Some(2));
    }
}
