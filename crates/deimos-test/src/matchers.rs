//! Wildcard matchers for expected payloads, keys and headers, and the comparison behind [`assert_sent!`](crate::assert_sent).
//!
//! A matcher is a JSON value with one reserved key, so it can sit anywhere inside `json!`:
//!
//! ```
//! use deimos_test::matchers::{any, any_string, including, matches};
//! use serde_json::json;
//!
//! let expected = json!({"id": 1, "name": any_string(), "meta": including(json!({"v": 2})), "note": any()});
//! let actual = json!({"id": 1, "name": "w", "meta": {"v": 2, "extra": true}, "note": null});
//! assert!(matches(&expected, &actual));
//! assert!(!matches(&json!({"id": 1}), &actual)); // exact: the other keys are not expected
//! ```

use std::fmt::Write as _;

use serde_json::{Map, Value as Json, json};

/// The reserved key that marks a matcher.
const MARK: &str = "$deimos_test_matcher";

fn matcher(kind: &str, arg: Json) -> Json {
    json!({ MARK: { "kind": kind, "arg": arg } })
}

/// Matches anything, including `null`, a missing value and a tombstone (RSpec's `anything`).
///
/// ```
/// use deimos_test::matchers::{any, matches};
/// use serde_json::json;
///
/// assert!(matches(&json!({"id": 1, "note": any()}), &json!({"id": 1, "note": [1, 2]})));
/// assert!(matches(&json!({"id": 1, "note": any()}), &json!({"id": 1}))); // missing
/// assert!(matches(&any(), &json!(null)));
/// ```
pub fn any() -> Json {
    matcher("any", Json::Null)
}

/// Matches any value but `null` (and a tombstone).
///
/// ```
/// use deimos_test::matchers::{matches, not_null};
/// use serde_json::json;
///
/// assert!(matches(&json!({"id": not_null()}), &json!({"id": 0})));
/// assert!(!matches(&json!({"id": not_null()}), &json!({"id": null})));
/// assert!(!matches(&json!({"id": not_null()}), &json!({}))); // missing
/// ```
pub fn not_null() -> Json {
    matcher("not_null", Json::Null)
}

/// Matches any string (`a_kind_of(String)`).
///
/// ```
/// use deimos_test::matchers::{any_string, matches};
/// use serde_json::json;
///
/// assert!(matches(&json!({"name": any_string()}), &json!({"name": ""})));
/// assert!(!matches(&any_string(), &json!(1)));
/// assert!(!matches(&any_string(), &json!(null)));
/// ```
pub fn any_string() -> Json {
    matcher("string", Json::Null)
}

/// Matches any number.
///
/// ```
/// use deimos_test::matchers::{any_number, matches};
/// use serde_json::json;
///
/// assert!(matches(&json!({"price": any_number()}), &json!({"price": 9.99})));
/// assert!(matches(&any_number(), &json!(3)));
/// assert!(!matches(&any_number(), &json!("9.99")));
/// ```
pub fn any_number() -> Json {
    matcher("number", Json::Null)
}

/// Matches any integer.
///
/// ```
/// use deimos_test::matchers::{any_integer, matches};
/// use serde_json::json;
///
/// assert!(matches(&json!({"id": any_integer()}), &json!({"id": -3})));
/// assert!(!matches(&any_integer(), &json!(2.5)));
/// assert!(!matches(&any_integer(), &json!("3")));
/// ```
pub fn any_integer() -> Json {
    matcher("integer", Json::Null)
}

/// Matches `true` or `false`.
///
/// ```
/// use deimos_test::matchers::{any_bool, matches};
/// use serde_json::json;
///
/// assert!(matches(&json!({"active": any_bool()}), &json!({"active": false})));
/// assert!(!matches(&any_bool(), &json!("true")));
/// assert!(!matches(&any_bool(), &json!(null)));
/// ```
pub fn any_bool() -> Json {
    matcher("bool", Json::Null)
}

/// Matches any array.
///
/// ```
/// use deimos_test::matchers::{any_array, matches};
/// use serde_json::json;
///
/// assert!(matches(&json!({"tags": any_array()}), &json!({"tags": ["a", "b"]})));
/// assert!(matches(&any_array(), &json!([])));
/// assert!(!matches(&any_array(), &json!({"0": "a"})));
/// ```
pub fn any_array() -> Json {
    matcher("array", Json::Null)
}

/// Matches any object (record or map).
///
/// ```
/// use deimos_test::matchers::{any_object, matches};
/// use serde_json::json;
///
/// assert!(matches(&json!({"meta": any_object()}), &json!({"meta": {"v": 2}})));
/// assert!(matches(&any_object(), &json!({})));
/// assert!(!matches(&any_object(), &json!([1])));
/// ```
pub fn any_object() -> Json {
    matcher("object", Json::Null)
}

/// Matches a string that contains `part`.
///
/// ```
/// use deimos_test::matchers::{matches, string_containing};
/// use serde_json::json;
///
/// assert!(matches(&json!({"message": string_containing("ell")}), &json!({"message": "hello"})));
/// assert!(!matches(&string_containing("ell"), &json!("world")));
/// assert!(!matches(&string_containing("1"), &json!(1))); // not a string
/// ```
pub fn string_containing(part: &str) -> Json {
    matcher("containing", Json::String(part.to_string()))
}

/// Matches an object that has at least these keys with matching values (RSpec's `include`); nested values
/// are matched exactly unless they are matchers themselves. Given a matcher instead of an object
/// (`including(any())`), it matches what that matcher matches.
///
/// ```
/// use deimos_test::matchers::{any, including, matches};
/// use serde_json::json;
///
/// let actual = json!({"id": 1, "meta": {"v": 2, "extra": true}});
/// assert!(matches(&json!({"id": 1, "meta": including(json!({"v": 2}))}), &actual));
/// assert!(!matches(&json!({"id": 1, "meta": including(json!({"v": 3}))}), &actual));
/// assert!(matches(&including(any()), &actual));
/// ```
pub fn including(subset: Json) -> Json {
    matcher("including", subset)
}

/// Whether `actual` matches `expected` exactly: objects have the same keys, arrays the same length, numbers
/// the same value (`1` matches `1.0`), and matchers match what they say.
///
/// ```
/// use deimos_test::matchers::{any_integer, matches};
/// use serde_json::json;
///
/// assert!(matches(&json!({"id": 1, "tags": ["a"]}), &json!({"id": 1.0, "tags": ["a"]})));
/// assert!(!matches(&json!({"id": 1}), &json!({"id": 1, "extra": true}))); // no other keys
/// assert!(!matches(&json!({"tags": ["a"]}), &json!({"tags": ["a", "b"]}))); // the same length
/// assert!(matches(&json!([any_integer(), 2]), &json!([7, 2])));
/// ```
pub fn matches(expected: &Json, actual: &Json) -> bool {
    let mut diffs = Vec::new();
    compare(expected, Some(actual), "", &mut diffs);
    diffs.is_empty()
}

/// Whether `actual` is an object holding every key of `expected` (an object) with a matching value.
///
/// ```
/// use deimos_test::matchers::{any_string, matches_including};
/// use serde_json::json;
///
/// let actual = json!({"id": 1, "name": "w", "extra": true});
/// assert!(matches_including(&json!({"name": any_string()}), &actual)); // `id` and `extra` may be there
/// assert!(!matches_including(&json!({"name": "x"}), &actual));
/// assert!(!matches_including(&json!({"id": 1}), &json!("not an object")));
/// ```
pub fn matches_including(expected: &Json, actual: &Json) -> bool {
    let mut diffs = Vec::new();
    compare(&including(expected.clone()), Some(actual), "", &mut diffs);
    diffs.is_empty()
}

/// One difference between an expected and an actual value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Diff {
    pub(crate) path: String,
    pub(crate) expected: String,
    pub(crate) actual: String,
}

fn show(value: Option<&Json>) -> String {
    match value {
        None => "nothing (missing)".to_string(),
        Some(v) => describe(v),
    }
}

/// A value for messages: matchers by what they match, everything else as JSON.
pub(crate) fn describe(value: &Json) -> String {
    match as_matcher(value) {
        Some((kind, arg)) => match kind {
            "containing" => format!("a string containing {arg}"),
            "including" if as_matcher(arg).is_some() => describe(arg),
            "including" => format!("an object including {}", describe(arg)),
            "not_null" => "anything but null".to_string(),
            "any" => "anything".to_string(),
            other => format!("any {other}"),
        },
        None => match value {
            Json::Object(map) => {
                let mut out = String::from("{");
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "{}: {}", Json::String(k.clone()), describe(v));
                }
                out.push('}');
                out
            }
            Json::Array(items) => {
                let inner: Vec<String> = items.iter().map(describe).collect();
                format!("[{}]", inner.join(", "))
            }
            other => other.to_string(),
        },
    }
}

fn as_matcher(value: &Json) -> Option<(&str, &Json)> {
    let Json::Object(map) = value else { return None };
    if map.len() != 1 {
        return None;
    }
    let spec = map.get(MARK)?;
    Some((spec.get("kind")?.as_str()?, spec.get("arg").unwrap_or(&Json::Null)))
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if a == b {
        return true;
    }
    match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
        (Some(x), Some(y), _, _) => x == y,
        (_, _, Some(x), Some(y)) => x == y,
        _ => a
            .as_f64()
            .zip(b.as_f64())
            .is_some_and(|(x, y)| x == y || same_float(x, y)),
    }
}

/// A sent payload comes back through Avro, so a `float` field holds 32 bits: `123.456` reads back as
/// `123.45600128173828`. Two numbers are the same `float` when one of them is exactly a 32-bit value and both
/// round to it (a `double` field's value is compared as it is).
#[allow(clippy::cast_possible_truncation, clippy::float_cmp)]
fn same_float(x: f64, y: f64) -> bool {
    let is_f32 = |v: f64| f64::from(v as f32) == v;
    (is_f32(x) || is_f32(y)) && (x as f32) == (y as f32)
}

/// Compares `expected` with `actual` (`None`: missing), pushing every difference with its path.
pub(crate) fn compare(expected: &Json, actual: Option<&Json>, path: &str, diffs: &mut Vec<Diff>) {
    let differ = |diffs: &mut Vec<Diff>| {
        diffs.push(Diff {
            path: if path.is_empty() {
                "(the value)".into()
            } else {
                path.to_string()
            },
            expected: describe(expected),
            actual: show(actual),
        });
    };
    if let Some((kind, arg)) = as_matcher(expected) {
        // `including(any())`, `including(any_string())`, …: the wildcard stands for the whole value. It is not
        // a subset of keys (its reserved key is never in `actual`), so it is matched as itself.
        if kind == "including" && as_matcher(arg).is_some() {
            compare(arg, actual, path, diffs);
            return;
        }
        let ok = match (kind, actual) {
            ("any", _) => true,
            (_, None) => false,
            ("not_null", Some(a)) => !a.is_null(),
            ("string", Some(a)) => a.is_string(),
            ("number", Some(a)) => a.is_number(),
            ("integer", Some(a)) => a.is_i64() || a.is_u64(),
            ("bool", Some(a)) => a.is_boolean(),
            ("array", Some(a)) => a.is_array(),
            ("object", Some(a)) => a.is_object(),
            ("containing", Some(a)) => a.as_str().zip(arg.as_str()).is_some_and(|(s, part)| s.contains(part)),
            ("including", Some(Json::Object(a))) => {
                if let Json::Object(subset) = arg {
                    for (key, want) in subset {
                        compare(want, a.get(key), &child(path, key), diffs);
                    }
                    return;
                }
                false
            }
            _ => false,
        };
        if !ok {
            differ(diffs);
        }
        return;
    }
    let Some(actual) = actual else {
        differ(diffs);
        return;
    };
    match (expected, actual) {
        (Json::Object(want), Json::Object(got)) => compare_objects(want, got, path, diffs),
        (Json::Array(want), Json::Array(got)) => {
            if want.len() != got.len() {
                differ(diffs);
                return;
            }
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                compare(w, Some(g), &format!("{path}[{i}]"), diffs);
            }
        }
        (Json::Number(a), Json::Number(b)) if numbers_equal(a, b) => {}
        (a, b) if a == b => {}
        _ => differ(diffs),
    }
}

fn compare_objects(want: &Map<String, Json>, got: &Map<String, Json>, path: &str, diffs: &mut Vec<Diff>) {
    for (key, w) in want {
        compare(w, got.get(key), &child(path, key), diffs);
    }
    for (key, g) in got {
        if !want.contains_key(key) {
            diffs.push(Diff {
                path: child(path, key),
                expected: "nothing (the key is not expected)".into(),
                actual: describe(g),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diffs(expected: &Json, actual: &Json) -> Vec<String> {
        let mut out = Vec::new();
        compare(expected, Some(actual), "", &mut out);
        out.into_iter()
            .map(|d| format!("{}: {} / {}", d.path, d.expected, d.actual))
            .collect()
    }

    #[test]
    fn exact_match_needs_every_key_and_no_others() {
        let actual = json!({"a": 1, "b": {"c": [1, 2]}});
        assert!(matches(&json!({"a": 1.0, "b": {"c": [1, 2]}}), &actual));
        assert_eq!(
            diffs(&json!({"a": 1, "b": {"c": [1, 3]}, "d": null}), &actual),
            ["b.c[1]: 3 / 2", "d: null / nothing (missing)"]
        );
        assert_eq!(
            diffs(&json!({"a": 1}), &actual),
            [r#"b: nothing (the key is not expected) / {"c": [1, 2]}"#]
        );
    }

    #[test]
    fn matchers_match_what_they_say() {
        let actual = json!({"s": "hello", "n": 2.5, "i": 3, "b": false, "o": {"x": 1, "y": 2}, "z": null});
        let expected = json!({
            "s": string_containing("ell"), "n": any_number(), "i": any_integer(), "b": any_bool(),
            "o": including(json!({"x": 1})), "z": any()
        });
        assert!(matches(&expected, &actual));
        assert!(!matches(&json!({"s": any_integer()}), &json!({"s": "x"})));
        assert!(!matches(&not_null(), &Json::Null));
        assert!(matches_including(&json!({"i": 3}), &actual));
        assert_eq!(
            diffs(&json!({"o": including(json!({"x": 2}))}), &json!({"o": {"x": 1}})),
            ["o.x: 2 / 1"]
        );
    }

    #[test]
    fn a_wildcard_given_to_including_matches_as_itself_at_every_level() {
        let actual = json!({"a": 1, "o": {"x": "s"}, "t": "text"});
        // At the top, as `assert_sent_including!(kit, topic, any())` and `matches_including(&any(), …)` give it.
        assert!(matches(&including(any()), &actual));
        assert!(matches(&including(any()), &Json::Null));
        let mut missing = Vec::new();
        compare(&including(any()), None, "payload", &mut missing);
        assert!(missing.is_empty());
        assert!(matches_including(&any(), &actual));
        assert!(matches_including(&not_null(), &actual));
        assert!(!matches_including(&not_null(), &Json::Null));
        // Nested, inside an exact object and inside another `including`.
        assert!(matches(
            &json!({"a": 1, "o": including(any_object()), "t": including(any_string())}),
            &actual
        ));
        assert!(matches(
            &including(json!({"o": including(json!({"x": including(any_string())}))})),
            &actual
        ));
        assert!(matches(&including(including(not_null())), &actual));
        // A wildcard that does not match still fails, described as itself.
        assert_eq!(
            diffs(&json!({"a": 1, "o": including(any_string()), "t": "text"}), &actual),
            [r#"o: any string / {"x": "s"}"#]
        );
        assert_eq!(
            diffs(&including(json!({"a": including(any_bool())})), &actual),
            ["a: any bool / 1"]
        );
    }
}
