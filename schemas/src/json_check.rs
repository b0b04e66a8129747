//! A small JSON Schema (draft-07) checker covering exactly the keywords `schemars` emits for
//! our stored types: `type`, `properties`, `required`, `additionalProperties`, `items`,
//! `enum`, `const`, `oneOf`, `anyOf`, `allOf`, `$ref` to `#/definitions/..`, `minimum`, and
//! the formats `uint32`, `uint64`, `uuid`, `date-time`.
//!
//! Why not a full validator crate: the common ones pull in an HTTP client and regex engines
//! for remote references and patterns we never use. A keyword this checker does not know is
//! reported as an error rather than ignored, so a schema change cannot silently weaken a test.

use serde_json::{Map, Value};

/// Limits `$ref` chains and nesting: our schemas are a few levels deep; a cycle is a bug.
const MAX_DEPTH: usize = 64;

/// Checks `instance` against `root` (a schema with optional `definitions`).
pub fn validate(root: &Value, instance: &Value) -> Result<(), String> {
    check(root, root, instance, "$", 0)
}

fn check(root: &Value, schema: &Value, v: &Value, path: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{path}: schema nesting too deep"));
    }
    let s = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err(format!("{path}: no value is allowed here")),
        Value::Object(s) => s,
        _ => return Err(format!("{path}: schema is not an object")),
    };
    for (k, kv) in s {
        match k.as_str() {
            "$schema" | "title" | "description" | "definitions" | "default" | "examples" => {}
            "$ref" => {
                let target = resolve(root, kv)?;
                check(root, target, v, path, depth + 1)?;
            }
            "type" => check_type(kv, v, path)?,
            "format" => check_format(kv, v, path)?,
            "minimum" => {
                if let (Some(min), Some(n)) = (kv.as_f64(), v.as_f64()) {
                    if n < min {
                        return Err(format!("{path}: {n} is below the minimum {min}"));
                    }
                }
            }
            "enum" => {
                let options = kv.as_array().ok_or("enum must be an array")?;
                if !options.contains(v) {
                    return Err(format!("{path}: {v} is not one of {kv}"));
                }
            }
            "const" => {
                if kv != v {
                    return Err(format!("{path}: {v} is not {kv}"));
                }
            }
            "properties" | "required" | "additionalProperties" => {
                if let Value::Object(obj) = v {
                    check_object(root, s, k, obj, path, depth)?;
                }
            }
            "items" => {
                if let Value::Array(items) = v {
                    for (i, item) in items.iter().enumerate() {
                        check(root, kv, item, &format!("{path}[{i}]"), depth + 1)?;
                    }
                }
            }
            "oneOf" => {
                let n = alternatives(kv)?
                    .iter()
                    .filter(|alt| check(root, alt, v, path, depth + 1).is_ok())
                    .count();
                if n != 1 {
                    return Err(format!(
                        "{path}: matches {n} of the oneOf alternatives, not 1"
                    ));
                }
            }
            "anyOf" => {
                if !alternatives(kv)?
                    .iter()
                    .any(|alt| check(root, alt, v, path, depth + 1).is_ok())
                {
                    return Err(format!("{path}: matches none of the anyOf alternatives"));
                }
            }
            "allOf" => {
                for alt in alternatives(kv)? {
                    check(root, alt, v, path, depth + 1)?;
                }
            }
            other => return Err(format!("{path}: unsupported schema keyword {other:?}")),
        }
    }
    Ok(())
}

fn alternatives(v: &Value) -> Result<&Vec<Value>, String> {
    v.as_array()
        .ok_or_else(|| "oneOf/anyOf/allOf must be an array".to_owned())
}

fn resolve<'r>(root: &'r Value, r: &Value) -> Result<&'r Value, String> {
    let r = r.as_str().ok_or("$ref must be a string")?;
    let name = r
        .strip_prefix("#/definitions/")
        .ok_or_else(|| format!("unsupported $ref {r}"))?;
    root.get("definitions")
        .and_then(|d| d.get(name))
        .ok_or_else(|| format!("$ref {r} not found"))
}

fn check_object(
    root: &Value,
    s: &Map<String, Value>,
    keyword: &str,
    obj: &Map<String, Value>,
    path: &str,
    depth: usize,
) -> Result<(), String> {
    let props = s.get("properties").and_then(Value::as_object);
    match keyword {
        "properties" => {
            for (name, sub) in props.into_iter().flatten() {
                if let Some(val) = obj.get(name) {
                    check(root, sub, val, &format!("{path}.{name}"), depth + 1)?;
                }
            }
        }
        "required" => {
            for name in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = name.as_str().unwrap_or_default();
                if !obj.contains_key(name) {
                    return Err(format!("{path}: required property {name:?} is missing"));
                }
            }
        }
        _ => {
            if s.get("additionalProperties") == Some(&Value::Bool(false)) {
                for name in obj.keys() {
                    if !props.is_some_and(|p| p.contains_key(name)) {
                        return Err(format!("{path}: unexpected property {name:?}"));
                    }
                }
            }
        }
    }
    Ok(())
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

fn check_type(t: &Value, v: &Value, path: &str) -> Result<(), String> {
    let ok = match t {
        Value::String(t) => type_matches(t, v),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .any(|t| type_matches(t, v)),
        _ => return Err(format!("{path}: malformed type {t}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{path}: {v} is not of type {t}"))
    }
}

fn check_format(f: &Value, v: &Value, path: &str) -> Result<(), String> {
    let ok = match (f.as_str(), v) {
        (Some("uint64"), Value::Number(n)) => n.is_u64(),
        (Some("uint32"), Value::Number(n)) => n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)),
        (Some("uuid"), Value::String(s)) => uuid::Uuid::parse_str(s).is_ok(),
        (Some("date-time"), Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        // A format applies only to values of its type; other types are the `type` check's job.
        (Some("uint64" | "uint32" | "uuid" | "date-time"), _) => true,
        (Some(other), _) => return Err(format!("{path}: unsupported format {other:?}")),
        (None, _) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{path}: {v} is not a valid {f}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_checker_rejects_what_it_should() {
        let schema = json!({
            "type": "object",
            "required": ["a", "b"],
            "properties": {
                "a": { "type": "integer", "format": "uint64", "minimum": 0.0 },
                "b": { "$ref": "#/definitions/K" },
                "c": { "type": ["string", "null"], "format": "uuid" }
            },
            "definitions": { "K": { "type": "string", "enum": ["x", "y"] } }
        });
        assert_eq!(validate(&schema, &json!({"a": 1, "b": "x"})), Ok(()));
        assert!(validate(&schema, &json!({"a": 1})).is_err());
        assert!(validate(&schema, &json!({"a": -1, "b": "x"})).is_err());
        assert!(validate(&schema, &json!({"a": 1, "b": "z"})).is_err());
        assert!(validate(&schema, &json!({"a": "1", "b": "x"})).is_err());
        assert!(validate(&schema, &json!({"a": 1, "b": "x", "c": "not-a-uuid"})).is_err());
        assert_eq!(
            validate(&schema, &json!({"a": 1, "b": "x", "c": null})),
            Ok(())
        );
        assert!(validate(&json!({"patternProperties": {}}), &json!({})).is_err());
    }
}
