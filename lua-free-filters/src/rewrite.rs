//! `model-rewrite`: a key's requests for one model sent to another, by glob.
//!
//! ```yaml
//! filters:
//!   cheaper:
//!     kind: model-rewrite
//!     rules:
//!       - { from: "gpt-4*", to: gpt-4o-mini }          # first match wins
//!       - { from: "claude-*", to: "anthropic/claude-*" } # `*` in `to`: what `*` matched
//! auth:
//!   keys:
//!     - { name: interns, hash: "sha256:…", filters: [cheaper] }
//! ```
//!
//! It runs before the model is resolved, so the rewritten name is routed, checked against
//! the key's models and priced like any other; attached to a model entry it would come too
//! late to choose one, and the config refuses it there.

use regex::Regex;
use serde::Deserialize;

use crate::{Filter, FilterError};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelRewriteSpec {
    pub rules: Vec<RuleSpec>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// A model name, `*` matching any run of characters.
    pub from: String,
    pub to: String,
}

#[derive(Debug)]
pub struct ModelRewrite {
    rules: Vec<(Regex, String)>,
}

impl ModelRewriteSpec {
    pub fn build(&self) -> Result<ModelRewrite, FilterError> {
        if self.rules.is_empty() {
            return Err(FilterError::InvalidOption(
                "a model-rewrite filter needs rules".into(),
            ));
        }
        let mut rules = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            if rule.from.is_empty() || rule.to.is_empty() {
                return Err(FilterError::InvalidOption(
                    "a rule needs a `from` and a `to`".into(),
                ));
            }
            if rule.to.contains('*') && rule.from.matches('*').count() != 1 {
                return Err(FilterError::InvalidOption(format!(
                    "rule {:?}: a `*` in `to` needs exactly one in `from`",
                    rule.from
                )));
            }
            let pattern = format!(
                "^{}$",
                rule.from
                    .split('*')
                    .map(regex::escape)
                    .collect::<Vec<_>>()
                    .join("(.*)")
            );
            let regex = Regex::new(&pattern)
                .map_err(|e| FilterError::InvalidOption(format!("rule {:?}: {e}", rule.from)))?;
            rules.push((regex, rule.to.clone()));
        }
        Ok(ModelRewrite { rules })
    }
}

impl Filter for ModelRewrite {
    fn rewrites_model(&self) -> bool {
        true
    }

    fn rewrite_model(&self, model: &str) -> Option<String> {
        self.rules.iter().find_map(|(from, to)| {
            let captures = from.captures(model)?;
            let matched = captures.get(1).map_or("", |m| m.as_str());
            Some(to.replacen('*', matched, 1))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(yaml: &str) -> ModelRewrite {
        serde_yaml::from_str::<ModelRewriteSpec>(yaml)
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn the_first_matching_rule_rewrites() {
        let f = filter(
            "rules:\n  - { from: \"gpt-4*\", to: gpt-4o-mini }\n  - { from: \"claude-*\", to: \"anthropic/claude-*\" }\n  - { from: \"*\", to: never }",
        );
        assert_eq!(f.rewrite_model("gpt-4o").as_deref(), Some("gpt-4o-mini"));
        assert_eq!(
            f.rewrite_model("claude-sonnet-4-5").as_deref(),
            Some("anthropic/claude-sonnet-4-5")
        );
        assert_eq!(f.rewrite_model("o3").as_deref(), Some("never"));
        let exact = filter("rules: [{ from: gpt-4o, to: gpt-4o-mini }]");
        assert_eq!(exact.rewrite_model("gpt-4o-2024").as_deref(), None);
        // Regex characters in names are names.
        let dotted = filter("rules: [{ from: \"a.b\", to: c }]");
        assert_eq!(dotted.rewrite_model("axb"), None);
    }

    #[test]
    fn bad_rules_are_refused() {
        for yaml in [
            "rules: []",
            "rules: [{ from: \"\", to: x }]",
            "rules: [{ from: \"a*b*\", to: \"x*\" }]",
        ] {
            assert!(serde_yaml::from_str::<ModelRewriteSpec>(yaml)
                .unwrap()
                .build()
                .is_err());
        }
    }
}
