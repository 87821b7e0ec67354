//! The built-in configuration used when no config file exists (CONTRACT.md, "Built-in
//! default"): loopback listeners, no client auth, one provider per API key found in the
//! environment, each reachable as `<provider>/<model>`.

use super::{parse, ConfigError, Snapshot, Source};

/// (provider name and kind, environment variable holding its key)
const PROVIDERS: &[(&str, &str)] = &[
    ("openai", "OPENAI_API_KEY"),
    ("anthropic", "ANTHROPIC_API_KEY"),
    ("gemini", "GEMINI_API_KEY"),
];

/// Builds the default by writing the equivalent YAML and compiling it like any file, so
/// the default gets exactly the validation an operator's file gets.
pub fn builtin_default(source: &dyn Source) -> Result<Snapshot, ConfigError> {
    parse(&default_yaml(source), None, source)
}

fn default_yaml(source: &dyn Source) -> String {
    let mut providers = String::new();
    let mut models = String::new();
    for (name, variable) in PROVIDERS {
        if source.env(variable).is_some_and(|v| !v.is_empty()) {
            providers.push_str(&format!(
                "  {name}:\n    kind: {name}\n    api_key: ${{{variable}}}\n"
            ));
            models.push_str(&format!(
                "  \"{name}/*\":\n    targets: [{{ provider: {name} }}]\n"
            ));
        }
    }
    let mut yaml =
        String::from("server:\n  listen: [\"127.0.0.1:8080\"]\n  admin: \"127.0.0.1:9901\"\n");
    if !providers.is_empty() {
        yaml.push_str("providers:\n");
        yaml.push_str(&providers);
        yaml.push_str("models:\n");
        yaml.push_str(&models);
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::interpolate::tests::FakeSource;

    #[test]
    fn one_provider_per_key_in_the_environment() {
        let mut source = FakeSource::default();
        source
            .env
            .insert("ANTHROPIC_API_KEY".into(), "sk-ant".into());
        source.env.insert("GEMINI_API_KEY".into(), String::new());
        let snap = builtin_default(&source).unwrap();
        assert_eq!(
            snap.providers.keys().map(|k| &**k).collect::<Vec<_>>(),
            ["anthropic"]
        );
        let r = snap.models.resolve("anthropic/claude-sonnet-4-5").unwrap();
        assert_eq!(r.capture, Some("claude-sonnet-4-5"));
        assert!(snap.keys.is_empty());
        assert_eq!(snap.server.listen, ["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(snap.server.admin, Some("127.0.0.1:9901".parse().unwrap()));
    }

    #[test]
    fn runs_without_any_provider() {
        let snap = builtin_default(&FakeSource::default()).unwrap();
        assert!(snap.providers.is_empty() && snap.models.is_empty());
    }
}
