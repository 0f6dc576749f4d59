//! Keeps secrets out of every line ecamp prints: URL user-info and query strings are masked,
//! and the values of credential-bearing environment variables are replaced wherever they appear.

use std::sync::OnceLock;

const MASK: &str = "***";

/// Name fragments of environment variables whose values are secrets.
const SECRET_HINTS: &[&str] = &["SECRET", "KEY", "TOKEN", "PASSWORD", "SAS", "CREDENTIAL", "SIGNATURE"];
/// Prefixes of the variables the stores and the LLM distiller read.
const CLOUD_PREFIXES: &[&str] = &["AWS_", "GOOGLE_", "AZURE_", "OBJECT_STORE_", "ECAMP_", "OPENAI_"];

fn secret_values() -> &'static [String] {
    static VALUES: OnceLock<Vec<String>> = OnceLock::new();
    VALUES.get_or_init(|| {
        let mut values: Vec<String> = std::env::vars()
            .filter(|(k, v)| {
                let k = k.to_ascii_uppercase();
                CLOUD_PREFIXES.iter().any(|p| k.starts_with(p))
                    && SECRET_HINTS.iter().any(|h| k.contains(h))
                    && !k.ends_with("_ID")
                    && !k.ends_with("_FILE")
                    && !k.ends_with("_PATH")
                    && v.len() >= 4
            })
            .map(|(_, v)| v)
            .collect();
        // Longest first, so a secret containing another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values
    })
}

/// Returns `text` with every known secret value masked.
pub fn scrub(text: &str) -> String {
    let mut out = text.to_string();
    for secret in secret_values() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    out
}

/// Returns a URL safe to print: password and query string masked, then scrubbed.
pub fn url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some(MASK));
            }
            if u.query().is_some() {
                u.set_query(Some(MASK));
            }
            scrub(u.as_str())
        }
        Err(_) => scrub(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_password_and_query() {
        let shown = url("s3://user:hunter2@bucket/path?sig=abc");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("abc"), "{shown}");
        assert!(shown.contains("bucket/path"));
    }

    #[test]
    fn plain_text_passes() {
        assert_eq!(scrub("nothing secret here"), "nothing secret here");
    }
}
