//! Secrets: resolved by the host from environment variables or files (never written in
//! pipeline.toml itself), handed to the plugins granted them by name, and redacted from
//! every log line, error message and summary the host prints.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{OnceLock, RwLock};

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the host process.
    Env(String),
    /// A file; its content with trailing newlines removed.
    File(PathBuf),
}

/// Why a secret could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret `{name}`: environment variable {var} is not set (set it, or use `{{ file = \"PATH\" }}`)")]
    EnvMissing { name: String, var: String },
    #[error("secret `{name}`: cannot read {}: {source}", .path.display())]
    File {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret `{name}` is empty")]
    Empty { name: String },
    #[error(
        "secret `{name}` is {len} bytes long; secrets need at least {MIN_SECRET_BYTES} bytes, \
         because a shorter value cannot be redacted from logs without also cutting into ordinary words"
    )]
    TooShort { name: String, len: usize },
}

/// The shortest secret the host accepts. Redaction replaces every occurrence of a value in
/// every line the host prints; a value of a few bytes also occurs inside ordinary words
/// and numbers, which would garble messages while hinting at the secret.
pub const MIN_SECRET_BYTES: usize = 8;

/// Resolve every secret; the values are registered for redaction at once.
pub fn resolve(
    defs: &BTreeMap<String, SecretSource>,
) -> Result<BTreeMap<String, String>, Vec<SecretError>> {
    let mut values = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, source) in defs {
        let value = match source {
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) => v,
                Err(_) => {
                    errors.push(SecretError::EnvMissing {
                        name: name.clone(),
                        var: var.clone(),
                    });
                    continue;
                }
            },
            SecretSource::File(path) => match std::fs::read_to_string(path) {
                Ok(v) => v.trim_end_matches(['\n', '\r']).to_string(),
                Err(source) => {
                    errors.push(SecretError::File {
                        name: name.clone(),
                        path: path.clone(),
                        source,
                    });
                    continue;
                }
            },
        };
        if value.is_empty() {
            errors.push(SecretError::Empty { name: name.clone() });
            continue;
        }
        if value.len() < MIN_SECRET_BYTES {
            errors.push(SecretError::TooShort {
                name: name.clone(),
                len: value.len(),
            });
            continue;
        }
        register(&value);
        values.insert(name.clone(), value);
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

const MASK: &str = "[redacted]";

fn registry() -> &'static RwLock<Vec<String>> {
    static SECRETS: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| RwLock::new(Vec::new()))
}

/// Remember a secret value so that [`redact`] removes it from any text: as it is, and as
/// a JSON string or a Rust debug string writes it (quotes and backslashes escaped), which
/// is how it would appear in `--log-format json` lines and in debug output.
pub fn register(value: &str) {
    let mut secrets = registry().write().unwrap_or_else(|e| e.into_inner());
    let json = serde_json::to_string(value).unwrap_or_default();
    let debug = format!("{value:?}");
    let unquoted = |s: &'_ str| -> String {
        let s = s.strip_prefix('"').unwrap_or(s);
        s.strip_suffix('"').unwrap_or(s).to_string()
    };
    let (json, debug) = (unquoted(&json), unquoted(&debug));
    let forms = [value, json.as_str(), debug.as_str()];
    for form in forms {
        if !form.is_empty() && !secrets.iter().any(|s| s == form) {
            secrets.push(form.to_string());
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered secret value replaced by `[redacted]`.
pub fn redact(text: &str) -> String {
    let secrets = registry().read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    out
}

/// A `tracing` writer that redacts secrets from every line before it reaches stderr.
pub struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingStderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_redacted_in_its_json_escaped_form_too() {
        register("pa\"ss\\word-for-json-test");
        let line = serde_json::json!({ "message": "connecting with pa\"ss\\word-for-json-test" })
            .to_string();
        assert!(line.contains("\\\""), "the line escapes the quote: {line}");
        let shown = redact(&line);
        assert!(!shown.contains("word-for-json-test"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn registered_values_are_masked_wherever_they_appear() {
        register("s3cr3t-value-for-test");
        assert_eq!(
            redact("key=s3cr3t-value-for-test; again s3cr3t-value-for-test"),
            "key=[redacted]; again [redacted]"
        );
        assert_eq!(redact("nothing to hide"), "nothing to hide");
    }

    #[test]
    fn missing_environment_variable_names_the_secret_and_the_variable() {
        let mut defs = BTreeMap::new();
        defs.insert(
            "mask_key".to_string(),
            SecretSource::Env("INGEST_TEST_SURELY_UNSET_VAR".into()),
        );
        let errors = resolve(&defs).unwrap_err();
        let message = errors[0].to_string();
        assert!(message.contains("mask_key") && message.contains("INGEST_TEST_SURELY_UNSET_VAR"));
    }

    #[test]
    fn a_secret_too_short_to_redact_safely_is_refused_and_never_registered() {
        let mut defs = BTreeMap::new();
        defs.insert(
            "short_key".to_string(),
            SecretSource::Env("INGEST_TEST_SHORT_SECRET".into()),
        );
        std::env::set_var("INGEST_TEST_SHORT_SECRET", "ed");
        let errors = resolve(&defs).unwrap_err();
        let message = errors[0].to_string();
        assert!(
            message.contains("short_key") && message.contains("at least 8 bytes"),
            "{message}"
        );
        assert_eq!(redact("finished"), "finished");
    }
}
