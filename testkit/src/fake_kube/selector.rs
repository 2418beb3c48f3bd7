//! Label selectors, as `labelSelector` spells them.

use serde_json::{Map, Value};

/// A parsed label selector: every requirement must hold. Empty selects everything.
#[derive(Debug, Clone, Default)]
pub(super) struct Selector(Vec<Requirement>);

#[derive(Debug, Clone)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Selector {
    /// Parses `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)` and `k notin (a,b)`, separated by
    /// commas.
    pub(super) fn parse(text: &str) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(term)?);
        }
        Ok(Selector(requirements))
    }

    /// Whether an object's labels satisfy the selector.
    pub(super) fn matches(&self, object: &Value) -> bool {
        let empty = Map::new();
        let labels =
            object.get("metadata").and_then(|m| m.get("labels")).and_then(Value::as_object).unwrap_or(&empty);
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, values) => label(k).is_some_and(|l| values.iter().any(|v| v == l)),
            Requirement::NotIn(k, values) => !label(k).is_some_and(|l| values.iter().any(|v| v == l)),
        })
    }
}

/// Splits on the commas that are not inside `( )`.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(key_of(key)?));
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(key_of(k)?, value_of(v)?));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(key_of(k)?, value_of(v)?));
    }
    if let Some((k, rest)) = term.split_once(char::is_whitespace) {
        let rest = rest.trim_start();
        let (negated, list) = if let Some(list) = rest.strip_prefix("notin") {
            (true, list)
        } else if let Some(list) = rest.strip_prefix("in") {
            (false, list)
        } else {
            return Err(format!("unable to parse requirement {term:?}"));
        };
        let list = list
            .trim()
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(|| format!("expected a parenthesised list of values in {term:?}"))?;
        let values = list.split(',').map(value_of).collect::<Result<Vec<_>, _>>()?;
        let key = key_of(k)?;
        return Ok(if negated { Requirement::NotIn(key, values) } else { Requirement::In(key, values) });
    }
    Ok(Requirement::Exists(key_of(term)?))
}

fn key_of(text: &str) -> Result<String, String> {
    let key = text.trim();
    let valid = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if valid { Ok(key.to_owned()) } else { Err(format!("invalid label key {key:?}")) }
}

fn value_of(text: &str) -> Result<String, String> {
    let value = text.trim();
    if value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        Ok(value.to_owned())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn matches(selector: &str, labels: Value) -> bool {
        Selector::parse(selector).expect("valid selector").matches(&json!({"metadata": {"labels": labels}}))
    }

    #[test]
    fn every_form() {
        let labels = json!({"app": "jhub", "tier": "proxy"});
        assert!(matches("", labels.clone()));
        assert!(matches("app=jhub,tier==proxy", labels.clone()));
        assert!(!matches("app=jhub,tier!=proxy", labels.clone()));
        assert!(matches("app,!missing", labels.clone()));
        assert!(!matches("!app", labels.clone()));
        assert!(matches("tier in (web, proxy),app notin (other)", labels.clone()));
        assert!(!matches("tier notin (proxy)", labels.clone()));
        assert!(matches("missing!=x", labels));
        assert!(!matches("app", json!(null)));
    }

    #[test]
    fn rejects_nonsense() {
        assert!(Selector::parse("a=b=c").is_err());
        assert!(Selector::parse("=b").is_err());
        assert!(Selector::parse("a in b").is_err());
        assert!(Selector::parse("a (b)").is_err());
    }
}
