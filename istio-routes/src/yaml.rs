//! Objects as YAML for people and `kubectl apply -f -`.
//!
//! Block style for maps and lists; every string double-quoted with JSON's escapes, which is
//! valid YAML, so no value can be misread (`"yes"`, `"1.0"`, `"*"`, `"@"` stay strings).

use serde_json::Value;

/// A YAML stream of documents, one per value.
pub fn documents(values: &[Value]) -> String {
    let mut out = String::new();
    for value in values {
        out.push_str("---\n");
        write_value(&mut out, value, 0);
    }
    out
}

/// A map key: plain when it is an identifier YAML cannot read as anything but a string.
fn key(key: &str) -> String {
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c))
        && !["y", "n", "yes", "no", "on", "off", "true", "false", "null"]
            .contains(&key.to_ascii_lowercase().as_str());
    if plain { key.to_owned() } else { scalar(&Value::String(key.to_owned())) }
}

fn scalar(value: &Value) -> String {
    // JSON's rendering of strings, numbers, booleans and null is YAML's too.
    value.to_string()
}

fn write_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                out.push_str(&" ".repeat(indent));
                out.push_str(&self::key(key));
                write_child(out, item, indent);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&" ".repeat(indent));
                out.push('-');
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // The first key on the dash's line, the rest below it.
                        let mut nested = String::new();
                        write_value(&mut nested, item, indent + 2);
                        out.push(' ');
                        out.push_str(nested.trim_start());
                    }
                    Value::Array(inner) if !inner.is_empty() => {
                        out.push('\n');
                        write_value(out, item, indent + 2);
                    }
                    _ => {
                        out.push(' ');
                        out.push_str(&scalar(item));
                        out.push('\n');
                    }
                }
            }
        }
        Value::Object(_) => out.push_str("{}\n"),
        Value::Array(_) => out.push_str("[]\n"),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn write_child(out: &mut String, item: &Value, indent: usize) {
    match item {
        Value::Object(map) if !map.is_empty() => {
            out.push_str(":\n");
            write_value(out, item, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str(":\n");
            write_value(out, item, indent);
        }
        _ => {
            out.push_str(": ");
            write_value(out, item, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn block_style_with_quoted_strings() {
        let value = json!({
            "kind": "VirtualService",
            "spec": {"hosts": ["*"], "http": [{"match": [{"uri": {"exact": "/a"}}, {"uri": {"prefix": "/a/"}}],
                      "route": [{"destination": {"host": "h", "port": {"number": 80}}}]}], "gateways": []},
            "empty": {},
            "flag": true
        });
        assert_eq!(
            documents(&[json!({"yes": 1, "a b": 2, "jupyterhub-istio-proxy/route": 3})]),
            "---\n\"a b\": 2\njupyterhub-istio-proxy/route: 3\n\"yes\": 1\n"
        );
        let yaml = documents(&[value]);
        let expected = r#"---
empty: {}
flag: true
kind: "VirtualService"
spec:
  gateways: []
  hosts:
  - "*"
  http:
  - match:
    - uri:
        exact: "/a"
    - uri:
        prefix: "/a/"
    route:
    - destination:
        host: "h"
        port:
          number: 80
"#;
        assert_eq!(yaml, expected);
    }
}
