//! The model names clients ask for, and where each one goes.
//!
//! A name resolves to a `models:` entry by exact match first, then by the most specific
//! wildcard (most literal characters; file order breaks ties). An entry lists weighted
//! targets (provider + upstream model), a price table, retry policy, fallbacks and filters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;
use lua_free_filters::Filter;

use crate::glob::Glob;
pub mod catalog;
mod order;

pub use order::{estimate_tokens, OrderHints, RouteStrategy};

use crate::pool::state::PeakEwma;
use crate::provider::Provider;
use crate::usage::Usage;

/// One place a model can be served from.
#[derive(Debug)]
pub struct Target {
    pub provider: Arc<Provider>,
    /// `None` = the client's name, or what the wildcard's `*` matched.
    pub model: Option<Arc<str>>,
    pub weight: u32,
    /// How `x-sira-route` and the access log name it: the config's `name`, else the
    /// provider's.
    pub name: Arc<str>,
    /// This target's own prices (for `route: lowest-cost`); `None` = the entry's.
    pub pricing: Option<Pricing>,
    /// Keys whose requests try this target first (a canary pinned to a team).
    pub pinned_keys: Vec<Arc<str>>,
    /// Peak EWMA of this target's time to first byte (for `route: lowest-latency`), kept
    /// across reloads.
    pub latency: Arc<PeakEwma>,
}

impl Target {
    pub fn new(provider: Arc<Provider>, model: Option<Arc<str>>, weight: u32) -> Target {
        Target {
            name: provider.name.clone(),
            latency: Arc::new(PeakEwma::default()),
            provider,
            model,
            weight,
            pricing: None,
            pinned_keys: Vec::new(),
        }
    }
}

/// USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pricing {
    pub input: f64,
    pub output: f64,
    /// Defaults to the input price when the provider has no cache discount.
    pub cached_input: f64,
    /// Tokens written to a prompt cache (Anthropic's `cache_creation_input_tokens`, billed
    /// at a premium); defaults to the input price.
    pub cache_write: f64,
}

impl Pricing {
    pub fn cost(&self, usage: &Usage) -> f64 {
        // `input` counts every prompt token: the cache's reads and writes are parts of it.
        let cached = usage.cached_input.min(usage.input);
        let written = usage.cache_creation_input.min(usage.input - cached);
        let uncached = usage.input - cached - written;
        (uncached as f64 * self.input
            + cached as f64 * self.cached_input
            + written as f64 * self.cache_write
            + usage.output as f64 * self.output)
            / 1_000_000.0
    }
}

/// How many times a model's targets are tried before its fallbacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries across this model's targets, the first one included.
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // No retries unless configured: a retry doubles cost when the provider did the work.
        RetryPolicy {
            attempts: 1,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (1-based): exponential, capped, with "equal
    /// jitter" (half fixed, half random) so that clients failed by one outage do not come
    /// back in lockstep.
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let full = self.backoff.saturating_mul(factor).min(self.max_backoff);
        let random = f64::from(getrandom::u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
        full / 2 + full.mul_f64(random / 2.0)
    }
}

/// Anthropic's required `max_tokens` when neither client nor config gives one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// One `models:` entry.
#[derive(Debug)]
pub struct ModelRoute {
    /// The name or pattern as written in the config.
    pub name: Arc<str>,
    pub targets: Vec<Target>,
    /// Round-robin cursor over the weighted targets, kept across reloads.
    next: Arc<AtomicUsize>,
    pub pricing: Option<Pricing>,
    pub fallbacks: Vec<Arc<str>>,
    pub retry: RetryPolicy,
    pub filters: Vec<Arc<dyn Filter>>,
    pub default_max_tokens: u32,
    /// How the targets are ordered for each request.
    pub strategy: RouteStrategy,
    /// Second attempts for a slow first byte (opt-in).
    pub hedge: Option<HedgePolicy>,
    /// Place Anthropic cache breakpoints for clients that cannot (`prompt_cache: auto`).
    pub prompt_cache: bool,
    /// A client's hosted web search runs as the provider's own (`web_search: native`).
    pub web_search: bool,
    /// Limits on the entry, whoever calls it, and their running state.
    pub limits: crate::limits::Limits,
    pub counter: Option<std::sync::Arc<crate::limits::Counter>>,
    /// `cache:` on the entry: whether and how long its answers are cached.
    pub cache: crate::config::cache::ModelCache,
}

/// `hedge: { after, max }`: when no response header came within `after`, another attempt
/// starts on another endpoint (or a target in the same format); up to `max` more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HedgePolicy {
    pub after: Duration,
    pub max: u32,
}

impl ModelRoute {
    pub fn new(name: &str, targets: Vec<Target>) -> ModelRoute {
        ModelRoute {
            name: name.into(),
            targets,
            next: crate::runtime::registry().cursor(&format!("model:{name}")),
            pricing: None,
            fallbacks: Vec::new(),
            retry: RetryPolicy::default(),
            filters: Vec::new(),
            default_max_tokens: DEFAULT_MAX_TOKENS,
            strategy: RouteStrategy::default(),
            hedge: None,
            prompt_cache: true,
            web_search: false,
            limits: crate::limits::Limits::default(),
            counter: None,
            cache: crate::config::cache::ModelCache::default(),
        }
    }

    /// A weighted pick first, then the others in config order.
    fn weighted_order(&self) -> impl Iterator<Item = usize> + '_ {
        let total: usize = self.targets.iter().map(|t| t.weight.max(1) as usize).sum();
        let tick = self.next.fetch_add(1, Ordering::Relaxed) % total.max(1);
        let mut acc = 0;
        let first = self
            .targets
            .iter()
            .position(|t| {
                acc += t.weight.max(1) as usize;
                tick < acc
            })
            .unwrap_or(0);
        std::iter::once(first).chain((0..self.targets.len()).filter(move |i| *i != first))
    }

    /// The model name to send upstream for `target`.
    pub fn upstream_model<'a>(
        target: &'a Target,
        requested: &'a str,
        capture: Option<&'a str>,
    ) -> &'a str {
        match (&target.model, capture) {
            (Some(model), _) => model,
            (None, Some(captured)) if !captured.is_empty() => captured,
            (None, _) => requested,
        }
    }
}

/// Every `models:` entry of a snapshot.
#[derive(Debug, Default)]
pub struct ModelTable {
    exact: AHashMap<Arc<str>, Arc<ModelRoute>>,
    /// Sorted most specific first.
    wildcards: Vec<(Glob, Arc<ModelRoute>)>,
    /// Exact names in config order, for `GET /v1/models`.
    listed: Vec<Arc<ModelRoute>>,
}

/// A resolved model name.
#[derive(Debug)]
pub struct Resolution<'a> {
    pub route: &'a Arc<ModelRoute>,
    /// What the wildcard's `*` matched; `None` for an exact entry.
    pub capture: Option<&'a str>,
}

impl ModelTable {
    pub fn insert(&mut self, route: ModelRoute) {
        let route = Arc::new(route);
        if Glob::is_wildcard(&route.name) {
            self.wildcards.push((Glob::new(&route.name), route));
            // Stable sort keeps file order among equally specific patterns.
            self.wildcards
                .sort_by_key(|(glob, _)| std::cmp::Reverse(glob.literal_len()));
        } else {
            self.listed.push(route.clone());
            self.exact.insert(route.name.clone(), route);
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    pub fn resolve<'a>(&'a self, name: &'a str) -> Option<Resolution<'a>> {
        if let Some(route) = self.exact.get(name) {
            return Some(Resolution {
                route,
                capture: None,
            });
        }
        self.wildcards.iter().find_map(|(glob, route)| {
            glob.capture(name).map(|capture| Resolution {
                route,
                capture: Some(capture),
            })
        })
    }

    /// Exact model names, in config order (wildcards cannot be enumerated).
    pub fn listed(&self) -> impl Iterator<Item = &Arc<ModelRoute>> {
        self.listed.iter()
    }

    /// Every entry, exact ones in config order, then the wildcards.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ModelRoute>> {
        self.listed
            .iter()
            .chain(self.wildcards.iter().map(|(_, route)| route))
    }

    /// The wildcard entries with their patterns, most specific first.
    pub fn wildcards(&self) -> impl Iterator<Item = (&Glob, &Arc<ModelRoute>)> {
        self.wildcards.iter().map(|(glob, route)| (glob, route))
    }

    pub fn wildcard_patterns(&self) -> impl Iterator<Item = &str> {
        self.wildcards.iter().map(|(glob, _)| glob.as_str())
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::provider::ProviderKind;

    fn provider() -> Arc<Provider> {
        Arc::new(Provider::for_tests(
            "openai",
            ProviderKind::Openai,
            &["http://127.0.0.1:1"],
        ))
    }

    fn route(name: &str, model: Option<&str>, weights: &[u32]) -> ModelRoute {
        let targets = weights
            .iter()
            .map(|w| Target::new(provider(), model.map(Into::into), *w))
            .collect();
        ModelRoute::new(name, targets)
    }

    #[test]
    fn exact_beats_wildcard_and_specific_beats_general() {
        let mut t = ModelTable::default();
        t.insert(route("*", None, &[1]));
        t.insert(route("openai/*", None, &[1]));
        t.insert(route("openai/gpt-*", None, &[1]));
        t.insert(route("openai/gpt-4o", Some("gpt-4o-2024"), &[1]));
        assert_eq!(
            &*t.resolve("openai/gpt-4o").unwrap().route.name,
            "openai/gpt-4o"
        );
        let r = t.resolve("openai/gpt-5").unwrap();
        assert_eq!((&*r.route.name, r.capture), ("openai/gpt-*", Some("5")));
        let r = t.resolve("openai/o3").unwrap();
        assert_eq!((&*r.route.name, r.capture), ("openai/*", Some("o3")));
        assert_eq!(&*t.resolve("mistral").unwrap().route.name, "*");
        assert_eq!(t.listed().count(), 1);
    }

    #[test]
    fn upstream_model_names() {
        let r = route("openai/*", None, &[1]);
        assert_eq!(
            ModelRoute::upstream_model(&r.targets[0], "openai/o3", Some("o3")),
            "o3"
        );
        let r = route("sonnet", Some("claude-sonnet-4-5"), &[1]);
        assert_eq!(
            ModelRoute::upstream_model(&r.targets[0], "sonnet", None),
            "claude-sonnet-4-5"
        );
        let r = route("gpt-4o", None, &[1]);
        assert_eq!(
            ModelRoute::upstream_model(&r.targets[0], "gpt-4o", None),
            "gpt-4o"
        );
    }

    #[test]
    fn weighted_target_order_covers_every_target() {
        let r = route("m", None, &[3, 1]);
        let firsts: Vec<usize> = (0..8).map(|_| r.weighted_order().next().unwrap()).collect();
        assert_eq!(firsts.iter().filter(|i| **i == 0).count(), 6);
        let order: Vec<usize> = r.weighted_order().collect();
        assert_eq!(order.len(), 2);
        assert_ne!(order[0], order[1]);
    }

    #[test]
    fn pricing_discounts_cached_tokens() {
        let p = Pricing {
            input: 2.5,
            output: 10.0,
            cached_input: 1.25,
            cache_write: 3.75,
        };
        let u = Usage {
            input: 1_000_000,
            output: 100_000,
            cached_input: 400_000,
            ..Usage::default()
        };
        let cost = p.cost(&u);
        assert!(
            (cost - (0.6 * 2.5 + 0.4 * 1.25 + 0.1 * 10.0)).abs() < 1e-9,
            "{cost}"
        );
    }

    #[test]
    fn pricing_charges_cache_writes_at_their_price() {
        let p = Pricing {
            input: 3.0,
            output: 15.0,
            cached_input: 0.3,
            cache_write: 3.75,
        };
        // Anthropic's prompt of 1M: 200k read from the cache, 500k written to it, 300k plain.
        let u = Usage {
            input: 1_000_000,
            output: 0,
            cached_input: 200_000,
            cache_creation_input: 500_000,
            reasoning: 0,
        };
        let cost = p.cost(&u);
        assert!(
            (cost - (0.3 * 3.0 + 0.2 * 0.3 + 0.5 * 3.75)).abs() < 1e-9,
            "{cost}"
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let r = RetryPolicy {
            attempts: 4,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
        };
        let within = |retry: u32, full_ms: u64| {
            let full = Duration::from_millis(full_ms);
            for _ in 0..50 {
                let d = r.delay(retry);
                assert!(
                    d >= full / 2 && d <= full,
                    "retry {retry}: {d:?} outside [{:?}, {full:?}]",
                    full / 2
                );
            }
        };
        within(1, 100);
        within(2, 200);
        within(3, 250);
        within(40, 250);
        let spread: std::collections::HashSet<Duration> = (0..20).map(|_| r.delay(2)).collect();
        assert!(spread.len() > 1, "jittered");
    }
}
