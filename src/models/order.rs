//! In which order a request tries a model entry's targets (`route:`).
//!
//! - `weighted` (default): a weighted pick first, then the rest in config order (A/B splits
//!   and canaries by share of traffic);
//! - `ordered`: config order (primary, then backups);
//! - `lowest-cost`: cheapest first, priced from each target's table (or the entry's) for the
//!   request's estimated tokens;
//! - `lowest-latency`: lowest peak-EWMA time to first byte first; a target never measured
//!   counts as fastest, so each gets measured.
//!
//! Whatever the strategy, targets with no endpoint that could take a request go last, a
//! target pinned to the request's key goes first, and a target the client chose with
//! `x-sira-route` (when its key may) goes before everything.

use serde::Deserialize;

use super::{ModelRoute, Pricing};
use crate::usage::Usage;

/// `models.<name>.route`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RouteStrategy {
    #[default]
    Weighted,
    Ordered,
    LowestCost,
    LowestLatency,
}

impl RouteStrategy {
    pub const fn as_str(self) -> &'static str {
        match self {
            RouteStrategy::Weighted => "weighted",
            RouteStrategy::Ordered => "ordered",
            RouteStrategy::LowestCost => "lowest-cost",
            RouteStrategy::LowestLatency => "lowest-latency",
        }
    }
}

/// What the order may depend on besides the entry itself.
#[derive(Default)]
pub struct OrderHints<'a> {
    /// The authenticated key's name.
    pub key: Option<&'a str>,
    /// The target the client chose (`x-sira-route`), already checked.
    pub chosen: Option<&'a str>,
    /// Estimated prompt and completion tokens (for `lowest-cost`).
    pub tokens: (u64, u64),
}

/// A request's tokens as `lowest-cost` prices them: a quarter of the body's bytes for the
/// prompt, the asked-for completion limit (or `default_output`) for the answer.
pub fn estimate_tokens(body: &[u8], default_output: u32) -> (u64, u64) {
    // Separate fields, not aliases: a body with two of them is valid JSON, not a duplicate.
    #[derive(Deserialize)]
    struct Limits {
        #[serde(default)]
        max_tokens: Option<u64>,
        #[serde(default)]
        max_completion_tokens: Option<u64>,
        #[serde(default)]
        max_output_tokens: Option<u64>,
        #[serde(default, rename = "generationConfig")]
        generation: Option<GenerationLimits>,
    }
    #[derive(Deserialize)]
    struct GenerationLimits {
        #[serde(default, rename = "maxOutputTokens")]
        max_output_tokens: Option<u64>,
    }
    let asked = serde_json::from_slice::<Limits>(body).ok().and_then(|l| {
        l.max_completion_tokens
            .or(l.max_tokens)
            .or(l.max_output_tokens)
            .or(l.generation.and_then(|g| g.max_output_tokens))
    });
    (
        (body.len() / 4) as u64,
        asked.unwrap_or(u64::from(default_output)),
    )
}

impl ModelRoute {
    /// Target indexes in the order this request should try them.
    pub fn target_order(&self, hints: &OrderHints<'_>) -> Vec<usize> {
        let mut order: Vec<usize> = match self.strategy {
            RouteStrategy::Weighted => self.weighted_order().collect(),
            RouteStrategy::Ordered => (0..self.targets.len()).collect(),
            RouteStrategy::LowestCost => {
                let usage = Usage {
                    input: hints.tokens.0,
                    output: hints.tokens.1,
                    ..Usage::default()
                };
                let cost = |i: usize| {
                    self.targets[i]
                        .pricing
                        .or(self.pricing)
                        .map_or(0.0, |p: Pricing| p.cost(&usage))
                };
                let mut order: Vec<usize> = (0..self.targets.len()).collect();
                order.sort_by(|a, b| cost(*a).total_cmp(&cost(*b)));
                order
            }
            RouteStrategy::LowestLatency => {
                let latency = |i: usize| self.targets[i].latency.estimate().unwrap_or_default();
                let mut order: Vec<usize> = (0..self.targets.len()).collect();
                order.sort_by_key(|i| latency(*i));
                order
            }
        };
        // Stable sorts: each rule below only reorders what the one before left tied.
        if let Some(key) = hints.key {
            order.sort_by_key(|i| !self.targets[*i].pinned_keys.iter().any(|k| &**k == key));
        }
        order.sort_by_key(|i| !self.targets[*i].provider.pool.available());
        if let Some(chosen) = hints.chosen {
            order.sort_by_key(|i| &*self.targets[*i].name != chosen);
        }
        order
    }

    /// Whether `name` is one of this entry's targets (for `x-sira-route`).
    pub fn has_target(&self, name: &str) -> bool {
        self.targets.iter().any(|t| &*t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::models::Target;
    use crate::provider::{Provider, ProviderKind};

    fn target(name: &str, price: Option<(f64, f64)>) -> Target {
        let provider = Arc::new(Provider::for_tests(
            name,
            ProviderKind::OpenaiCompatible,
            &["http://10.0.0.1:1"],
        ));
        let mut t = Target::new(provider, None, 1);
        t.pricing = price.map(|(input, output)| Pricing {
            input,
            output,
            cached_input: input,
            cache_write: input,
        });
        t
    }

    fn route(strategy: RouteStrategy, targets: Vec<Target>) -> ModelRoute {
        let mut r = ModelRoute::new("order-test", targets);
        r.strategy = strategy;
        r
    }

    #[test]
    fn token_estimates_read_each_surface() {
        assert_eq!(estimate_tokens(br#"{"max_tokens":7}"#, 100).1, 7);
        assert_eq!(estimate_tokens(br#"{"max_completion_tokens":8}"#, 100).1, 8);
        assert_eq!(estimate_tokens(br#"{"max_output_tokens":9}"#, 100).1, 9);
        assert_eq!(
            estimate_tokens(br#"{"generationConfig":{"maxOutputTokens":10}}"#, 100).1,
            10
        );
        assert_eq!(estimate_tokens(b"{}", 100), (0, 100));
        assert_eq!(
            estimate_tokens(br#"{"max_tokens":5,"max_completion_tokens":6}"#, 100).1,
            6,
            "both spellings at once still parse"
        );
    }

    #[test]
    fn lowest_cost_prices_the_request() {
        let r = route(
            RouteStrategy::LowestCost,
            vec![
                target("cheap-in", Some((0.1, 20.0))),
                target("cheap-out", Some((5.0, 1.0))),
            ],
        );
        let long_prompt = OrderHints {
            tokens: (100_000, 100),
            ..Default::default()
        };
        assert_eq!(r.target_order(&long_prompt), [0, 1]);
        let long_answer = OrderHints {
            tokens: (100, 100_000),
            ..Default::default()
        };
        assert_eq!(r.target_order(&long_answer), [1, 0]);
    }

    #[test]
    fn lowest_latency_measures_every_target_then_prefers_the_fast() {
        let r = route(
            RouteStrategy::LowestLatency,
            vec![target("a", None), target("b", None)],
        );
        r.targets[0].latency.observe(Duration::from_millis(300));
        assert_eq!(
            r.target_order(&OrderHints::default()),
            [1, 0],
            "b unmeasured"
        );
        r.targets[1].latency.observe(Duration::from_millis(900));
        assert_eq!(r.target_order(&OrderHints::default()), [0, 1]);
    }

    #[test]
    fn pins_and_choices_go_first() {
        let mut canary = target("canary", None);
        canary.pinned_keys = vec!["team-b".into()];
        let r = route(
            RouteStrategy::Ordered,
            vec![target("main", None), canary, target("backup", None)],
        );
        assert_eq!(r.target_order(&OrderHints::default()), [0, 1, 2]);
        let pinned = OrderHints {
            key: Some("team-b"),
            ..Default::default()
        };
        assert_eq!(r.target_order(&pinned), [1, 0, 2]);
        let chosen = OrderHints {
            key: Some("team-b"),
            chosen: Some("backup"),
            ..Default::default()
        };
        assert_eq!(r.target_order(&chosen), [2, 1, 0]);
        assert!(r.has_target("canary") && !r.has_target("nope"));
    }
}
