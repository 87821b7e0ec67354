//! `${ENV}`, `${ENV:-default}` and `${file:/path}` references inside YAML strings.
//!
//! Interpolation runs on the parsed YAML tree, string scalars only, so a value can never
//! change the structure of the document (a secret containing `: ` stays one string).

use serde_yaml::Value;

use super::ConfigProblem;

/// Where interpolation reads from; a trait so tests need not touch the process environment.
pub trait Source {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &str) -> std::io::Result<String>;
}

/// The real process environment and filesystem.
pub struct ProcessSource;

impl Source for ProcessSource {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Replaces every reference in every string of `value`, collecting one problem per bad
/// reference (with its path) instead of stopping at the first.
pub fn interpolate_tree(value: &mut Value, source: &dyn Source, problems: &mut Vec<ConfigProblem>) {
    walk(value, &mut String::new(), source, problems);
}

fn walk(
    value: &mut Value,
    path: &mut String,
    source: &dyn Source,
    problems: &mut Vec<ConfigProblem>,
) {
    match value {
        Value::String(text) => {
            if text.contains('$') {
                match interpolate(text, source) {
                    Ok(replaced) => *text = replaced,
                    Err(message) => problems.push(ConfigProblem::new(path.clone(), message)),
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, source, problems);
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                match key {
                    Value::String(k) => path.push_str(k),
                    other => path.push_str(&format!("{other:?}")),
                }
                walk(item, path, source, problems);
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, source, problems),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Expands the references in one string. `$${` escapes a literal `${`.
pub fn interpolate(text: &str, source: &dyn Source) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(format!("unterminated reference in {}", describe(text)));
        };
        out.push_str(&resolve(&body[..end], source)?);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(reference: &str, source: &dyn Source) -> Result<String, String> {
    if let Some(path) = reference.strip_prefix("file:") {
        let path = path.trim();
        return source
            .file(path)
            .map(|content| content.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| format!("cannot read ${{file:{path}}}: {e}"));
    }
    let (name, default) = match reference.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (reference, None),
    };
    let valid_name =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(format!(
            "invalid reference ${{{name}}}: use ${{NAME}}, ${{NAME:-default}} or ${{file:/path}}"
        ));
    }
    // As in POSIX shells, `:-` also replaces a set-but-empty variable.
    match (source.env(name), default) {
        // A plain reference promises a value: set but empty is as wrong as unset (an
        // empty key or token would otherwise pass for "none"); `${NAME:-}` allows it.
        (Some(value), None) if value.is_empty() => Err(format!(
            "environment variable {name} is empty (write ${{{name}:-}} if empty is meant)"
        )),
        (Some(value), None) => Ok(value),
        (Some(value), Some(_)) if !value.is_empty() => Ok(value),
        (_, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(format!(
            "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
        )),
    }
}

/// Names a string in an error without printing it whole: it may hold a secret.
fn describe(text: &str) -> String {
    let prefix: String = text.chars().take(12).collect();
    format!("{prefix:?}…")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    pub struct FakeSource {
        pub env: HashMap<String, String>,
        pub files: HashMap<String, String>,
    }

    impl Source for FakeSource {
        fn env(&self, name: &str) -> Option<String> {
            self.env.get(name).cloned()
        }
        fn file(&self, path: &str) -> std::io::Result<String> {
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
        }
    }

    fn source() -> FakeSource {
        let mut s = FakeSource::default();
        s.env.insert("KEY".into(), "sk-123".into());
        s.env.insert("EMPTY".into(), String::new());
        s.files.insert("/run/secret".into(), "from-file\n".into());
        s
    }

    #[test]
    fn expands_env_defaults_and_files() {
        let s = source();
        assert_eq!(interpolate("${KEY}", &s), Ok("sk-123".into()));
        assert_eq!(
            interpolate("Bearer ${KEY}!", &s),
            Ok("Bearer sk-123!".into())
        );
        assert_eq!(interpolate("${MISSING:-dflt}", &s), Ok("dflt".into()));
        assert_eq!(interpolate("${EMPTY:-dflt}", &s), Ok("dflt".into()));
        assert!(interpolate("${EMPTY}", &s)
            .unwrap_err()
            .contains("EMPTY is empty"));
        assert_eq!(interpolate("${EMPTY:-}", &s), Ok(String::new()));
        assert_eq!(
            interpolate("${file:/run/secret}", &s),
            Ok("from-file".into())
        );
        assert_eq!(
            interpolate("cost $5 and $${KEY}", &s),
            Ok("cost $5 and ${KEY}".into())
        );
    }

    #[test]
    fn reports_problems() {
        let s = source();
        assert!(interpolate("${MISSING}", &s)
            .unwrap_err()
            .contains("MISSING is not set"));
        assert!(interpolate("${file:/nope}", &s)
            .unwrap_err()
            .contains("/nope"));
        assert!(interpolate("${KEY", &s)
            .unwrap_err()
            .contains("unterminated"));
        assert!(interpolate("${bad name}", &s)
            .unwrap_err()
            .contains("invalid reference"));
    }

    #[test]
    fn tree_errors_carry_paths() {
        let mut v: Value = serde_yaml::from_str(
            "providers:\n  a:\n    api_key: ${NOPE}\n    endpoints: [\"${ALSO_NOPE}\"]\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        interpolate_tree(&mut v, &source(), &mut problems);
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["providers.a.api_key", "providers.a.endpoints[0]"]);
    }
}
