//! The config of `pii-mask`: the serde model of what the user wrote ([`RawConfig`]), and the
//! validated form ([`MaskConfig`]) with one [`Rule`] per column. Validation collects every
//! problem and reports them together; nothing here needs the stream's schema or a secret, so
//! `check` can run it before any grant is exercised.

use std::collections::BTreeMap;

use ingest_sdk::{config, Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::rules::{Rule, DEFAULT_REDACTION};

/// The rules a column may name, as the error messages list them.
pub const ACCEPTED_RULES: &str = "`hmac-sha256`, `sha256`, `redact`, `keep-last-N` (e.g. \
    `keep-last-4`), `email-domain`, `null`, or a table `{ rule = \"redact\", with = \"XXX\" }` \
    / `{ rule = \"keep-last\", n = 4 }`";

/// The config as written in pipeline.toml (rendered to JSON by the host). Rules are kept as
/// JSON so that every bad one is reported with its column; the JSON Schema (the
/// transform's `spec`) is derived from it, with [`RuleSpec`] for the shape of a rule.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "pii-mask transform config",
    description = "Masks personal data column by column; masked columns become nullable strings."
)]
pub struct RawConfig {
    /// Name of a secret granted to this transform; its value (UTF-8) is the HMAC key.
    /// Required exactly when a column uses `hmac-sha256`.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub key_secret: Option<String>,
    /// Column name → masking rule. Masked columns become nullable strings; null stays null.
    #[schemars(with = "BTreeMap<String, RuleSpec>", extend("minProperties" = 1))]
    pub columns: BTreeMap<String, Value>,
}

/// The shape of one column's rule, for the JSON Schema only: validation reads the JSON.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum RuleSpec {
    /// hmac-sha256: lowercase hex HMAC-SHA256 keyed by `key_secret`; sha256: lowercase hex
    /// SHA-256; redact: `[REDACTED]`; keep-last-N: every character but the last N becomes
    /// `*`; email-domain: the part after the last `@` (null without `@`); null: always
    /// null.
    Name(
        #[schemars(regex(
            pattern = r"^(hmac-sha256|sha256|redact|keep-last-[0-9]+|email-domain|null)$"
        ))]
        String,
    ),
    /// A rule with its options.
    #[schemars(extend("additionalProperties" = false))]
    Table {
        /// The rule's name, as above, or `keep-last` with `n`.
        #[schemars(regex(
            pattern = r"^(hmac-sha256|sha256|redact|keep-last|keep-last-[0-9]+|email-domain|null)$"
        ))]
        rule: String,
        /// Replacement text for `redact`.
        with: Option<String>,
        /// Characters kept for `keep-last`.
        n: Option<u64>,
    },
}

/// A validated config: what to do with each column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskConfig {
    /// The secret keying `hmac-sha256`; present exactly when some column uses it.
    pub key_secret: Option<String>,
    /// Columns to mask, in name order.
    pub columns: Vec<(String, Rule)>,
}

impl MaskConfig {
    /// Parse and validate the host's JSON config. Every problem is reported in one
    /// `invalid-config` error.
    pub fn from_json(json: &str) -> Result<Self> {
        let raw: RawConfig = config::parse(json)?;
        Self::validate(raw)
    }

    /// Validate a parsed config.
    pub fn validate(raw: RawConfig) -> Result<Self> {
        let mut problems = Vec::new();
        let mut columns = Vec::with_capacity(raw.columns.len());
        if raw.columns.is_empty() {
            problems.push(
                "`columns` names no column; list each column to mask with its rule, e.g. \
                 `customer_email = \"hmac-sha256\"`"
                    .to_string(),
            );
        }
        for (column, spec) in &raw.columns {
            match parse_rule(spec) {
                Ok(rule) => columns.push((column.clone(), rule)),
                Err(problem) => problems.push(format!("columns.{column}: {problem}")),
            }
        }

        let keyed: Vec<&str> = columns
            .iter()
            .filter(|(_, rule)| *rule == Rule::HmacSha256)
            .map(|(c, _)| c.as_str())
            .collect();
        match (&raw.key_secret, keyed.is_empty()) {
            (None, false) => problems.push(format!(
                "`key_secret` is required because column(s) {} use `hmac-sha256`; set it to \
                 the name of a secret granted to this transform, e.g. `key_secret = \"mask_key\"`",
                quoted(&keyed)
            )),
            (Some(name), _) if name.trim().is_empty() => problems.push(
                "`key_secret` is empty; set it to the name of a secret granted to this \
                 transform"
                    .to_string(),
            ),
            (Some(name), true) => problems.push(format!(
                "`key_secret = \"{name}\"` is set but no column uses `hmac-sha256`; remove it, \
                 or use `hmac-sha256` for a column"
            )),
            _ => {}
        }

        if problems.is_empty() {
            Ok(MaskConfig {
                key_secret: raw.key_secret,
                columns,
            })
        } else {
            Err(Error::config(format!(
                "pii-mask config: {}",
                problems.join("; ")
            )))
        }
    }
}

/// One column's rule from its string or table form; the error says what was wrong and what
/// is accepted (the caller adds the column name).
fn parse_rule(spec: &Value) -> std::result::Result<Rule, String> {
    match spec {
        Value::String(name) => rule_by_name(name, None, None),
        Value::Object(table) => {
            let mut rule = None;
            let mut with = None;
            let mut n = None;
            for (key, value) in table {
                match (key.as_str(), value) {
                    ("rule", Value::String(s)) => rule = Some(s.as_str()),
                    ("with", Value::String(s)) => with = Some(s.as_str()),
                    ("n", v) => match v.as_u64() {
                        Some(v) => n = Some(usize::try_from(v).unwrap_or(usize::MAX)),
                        None => return Err(format!("`n` must be a whole number ≥ 0, got {v}")),
                    },
                    ("rule" | "with", v) => {
                        return Err(format!("`{key}` must be a string, got {v}"));
                    }
                    (other, _) => {
                        return Err(format!(
                            "unknown key `{other}` in the rule table; accepted keys: `rule`, \
                             `with` (for `redact`), `n` (for `keep-last`)"
                        ));
                    }
                }
            }
            match rule {
                Some(rule) => rule_by_name(rule, with, n),
                None => Err(format!(
                    "the rule table has no `rule` key; accepted rules: {ACCEPTED_RULES}"
                )),
            }
        }
        other => Err(format!(
            "a rule must be a string or a table, got {other}; accepted rules: {ACCEPTED_RULES}"
        )),
    }
}

fn rule_by_name(
    name: &str,
    with: Option<&str>,
    n: Option<usize>,
) -> std::result::Result<Rule, String> {
    let rule = match name {
        "hmac-sha256" => Rule::HmacSha256,
        "sha256" => Rule::Sha256,
        "redact" => Rule::Redact(with.unwrap_or(DEFAULT_REDACTION).to_string()),
        "email-domain" => Rule::EmailDomain,
        "null" => Rule::Null,
        "keep-last" => match n {
            Some(n) => Rule::KeepLast(n),
            None => {
                return Err(
                    "`keep-last` needs `n`, e.g. `{ rule = \"keep-last\", n = 4 }` or \
                     `\"keep-last-4\"`"
                        .to_string(),
                )
            }
        },
        _ => match name
            .strip_prefix("keep-last-")
            .and_then(|digits| digits.parse::<usize>().ok())
        {
            Some(suffix) => match n {
                Some(n) if n != suffix => {
                    return Err(format!(
                        "rule `{name}` and `n = {n}` disagree; write `keep-last` with `n`, or \
                         `keep-last-N` alone"
                    ))
                }
                _ => Rule::KeepLast(suffix),
            },
            None => {
                return Err(format!(
                    "unknown rule `{name}`; accepted rules: {ACCEPTED_RULES}"
                ))
            }
        },
    };
    if with.is_some() && !matches!(rule, Rule::Redact(_)) {
        return Err(format!("`with` applies to `redact` only, not to `{name}`"));
    }
    if n.is_some() && !matches!(rule, Rule::KeepLast(_)) {
        return Err(format!("`n` applies to `keep-last` only, not to `{name}`"));
    }
    Ok(rule)
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// JSON Schema of the config, as `spec()` reports it.
pub fn json_schema() -> String {
    ingest_sdk::config::spec::<RawConfig>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        match MaskConfig::from_json(json) {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("expected invalid-config, got {other:?}"),
        }
    }

    #[test]
    fn every_rule_form_parses() {
        let c = MaskConfig::from_json(
            r#"{"key_secret":"mask_key","columns":{
                "customer_email":"hmac-sha256","ssn":"sha256","customer_name":"redact",
                "alias":{"rule":"redact","with":"XXX"},"phone":"keep-last-4",
                "card":{"rule":"keep-last","n":2},"email2":"email-domain","notes":"null"}}"#,
        )
        .unwrap();
        assert_eq!(c.key_secret.as_deref(), Some("mask_key"));
        let rules: BTreeMap<_, _> = c.columns.into_iter().collect();
        assert_eq!(rules["customer_email"], Rule::HmacSha256);
        assert_eq!(rules["ssn"], Rule::Sha256);
        assert_eq!(rules["customer_name"], Rule::Redact("[REDACTED]".into()));
        assert_eq!(rules["alias"], Rule::Redact("XXX".into()));
        assert_eq!(rules["phone"], Rule::KeepLast(4));
        assert_eq!(rules["card"], Rule::KeepLast(2));
        assert_eq!(rules["email2"], Rule::EmailDomain);
        assert_eq!(rules["notes"], Rule::Null);
    }

    #[test]
    fn unknown_rule_names_column_rule_and_accepted_rules() {
        let m = err(r#"{"columns":{"phone":"scramble"}}"#);
        assert!(m.contains("columns.phone"), "{m}");
        assert!(m.contains("`scramble`"), "{m}");
        assert!(
            m.contains("hmac-sha256") && m.contains("keep-last-N"),
            "{m}"
        );
    }

    #[test]
    fn hmac_without_key_secret_is_rejected() {
        let m = err(r#"{"columns":{"customer_email":"hmac-sha256"}}"#);
        assert!(m.contains("`key_secret` is required"), "{m}");
        assert!(m.contains("`customer_email`"), "{m}");
    }

    #[test]
    fn key_secret_without_hmac_is_rejected() {
        let m = err(r#"{"key_secret":"k","columns":{"ssn":"sha256"}}"#);
        assert!(m.contains("no column uses `hmac-sha256`"), "{m}");
    }

    #[test]
    fn all_problems_are_reported_together() {
        let m = err(r#"{"columns":{"a":"nope","b":{"rule":"keep-last"},"c":"hmac-sha256"}}"#);
        assert!(m.contains("columns.a"), "{m}");
        assert!(m.contains("columns.b") && m.contains("needs `n`"), "{m}");
        assert!(m.contains("`key_secret` is required"), "{m}");
    }

    #[test]
    fn misplaced_options_and_unknown_keys_are_rejected() {
        assert!(err(r#"{"columns":{"a":{"rule":"sha256","with":"x"}}}"#).contains("`with`"));
        assert!(err(r#"{"columns":{"a":{"rule":"redact","n":3}}}"#).contains("`n`"));
        assert!(err(r#"{"columns":{"a":{"rule":"redact","mask":"x"}}}"#).contains("`mask`"));
        assert!(err(r#"{"columns":{"a":{"rule":"keep-last-3","n":4}}}"#).contains("disagree"));
        assert!(err(r#"{"columns":{"a":{"rule":"keep-last","n":-1}}}"#).contains("`n`"));
        assert!(err(r#"{"columns":{"a":7}}"#).contains("string or a table"));
        assert!(err(r#"{"columns":{}}"#).contains("names no column"));
        assert!(err(r#"{"columns":{"a":"null"},"salt":"x"}"#).contains("salt"));
    }

    #[test]
    fn spec_is_json() {
        let v: Value = serde_json::from_str(&json_schema()).unwrap();
        assert_eq!(v["required"], serde_json::json!(["columns"]));
        assert_eq!(v["additionalProperties"], false);
        assert_eq!(v["properties"]["columns"]["minProperties"], 1);
        let text = v.to_string();
        for wanted in ["keep-last-[0-9]+", "Replacement text for `redact`", "\"n\""] {
            assert!(text.contains(wanted), "{wanted} in {text}");
        }
    }
}
