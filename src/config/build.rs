//! File types → runtime [`Snapshot`]: every check lives here (and, for `server:`, in
//! `super::server`), none at request time.

use std::path::PathBuf;
use std::sync::Arc;

use ahash::AHashMap;
use http::{HeaderName, HeaderValue};
use indexmap::IndexMap;
use lua_free_filters::{Filter, FilterSpec};
use serde_yaml::Value;

use super::file::{
    EndpointConfig, Entries, LoggingConfig, ModelConfig, PricingConfig, ProviderConfig, RawFile,
};
use super::{
    section, AccessLogTarget, ConfigMeta, ConfigProblem, LoggingSettings, Secret, Snapshot,
};
use crate::auth::KeyTable;
use crate::models::{
    HedgePolicy, ModelRoute, ModelTable, Pricing, RetryPolicy, Target, DEFAULT_MAX_TOKENS,
};
use crate::provider::{Endpoint, Provider, ProviderKind, Timeouts, DEFAULT_ANTHROPIC_VERSION};

/// Collects problems while building; a section that fails yields `None` and the build
/// carries on so later sections are checked too.
pub(super) struct Builder<'p> {
    pub(super) problems: &'p mut Vec<ConfigProblem>,
    /// Providers written in the file but refused: a reference to one is not a second
    /// problem (one cause, one message).
    pub(super) broken_providers: Vec<String>,
    /// What a valid file likely left out by mistake (see [`notes`]).
    pub(super) notes: Vec<String>,
}

impl Builder<'_> {
    pub(super) fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem::new(path, message));
    }

    fn entries(&mut self, value: Option<Value>, path: &str) -> Entries {
        value
            .and_then(|v| section::<Entries>(v, path, self.problems))
            .unwrap_or_default()
    }
}

pub(super) fn build(
    raw: RawFile,
    meta: ConfigMeta,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Snapshot> {
    let mut b = Builder {
        problems,
        broken_providers: Vec::new(),
        notes: Vec::new(),
    };
    let RawFile {
        server,
        providers,
        models,
        auth,
        filters,
        logging,
        tenants,
        limits,
        cache,
        responses_store,
        alerts,
    } = raw;
    let limits_store = super::limits::store(&mut b, limits);
    let filters = build_filters(&mut b, filters);
    let tenants = super::limits::tenants(&mut b, tenants, &filters);
    let alerts = super::limits::alerts(&mut b, alerts);
    let cache = super::cache::cache(&mut b, cache);

    let server = super::server::server_settings(&mut b, server);
    let providers = build_providers(&mut b, providers);
    let models = build_models(&mut b, models, &providers, &filters);
    let mut auth_rest = super::keys::AuthRest::default();
    let keys = super::keys::build_keys(
        &mut b,
        auth,
        &super::keys::KeyScope {
            models: &models,
            filters: &filters,
            tenants: &tenants,
        },
        &mut auth_rest,
    );
    let jwt = super::jwt::issuers(&mut b, auth_rest.jwt);
    check_pins(&mut b, &models, &keys);
    let logging = logging_settings(&mut b, logging);
    let responses_store = super::store::responses_store(&mut b, responses_store);
    let server = server?;
    if keys.has_mtls() && !server.tls.iter().any(|t| t.client.is_some()) {
        b.problem(
            "auth.keys",
            "an mtls_subject needs a server.tls listener with client_ca to verify certificates",
        );
    }
    let open = auth_rest.mode == Some(super::file::AuthMode::Open);
    if open && keys.require_key {
        b.problem("auth.mode", "is either open or keys");
    }
    let no_auth = keys.is_empty() && !keys.require_key && jwt.is_empty();
    refuse_silently_open(&mut b, &server, no_auth, open);
    let key_store = super::keys::key_store(
        &mut b,
        auth_rest.key_store.as_deref(),
        meta.path.as_deref(),
        limits_store.as_ref().and_then(Option::as_ref),
    );
    let seal = seal(&server, &providers);
    let mut notes = std::mem::take(&mut b.notes);
    notes.extend(self::notes(&providers));
    Some(Snapshot {
        notes,
        auth_open: open,
        server,
        seal,
        providers,
        models,
        keys,
        issued: Default::default(),
        key_store,
        filters,
        jwt,
        verified: crate::auth::jwt::Verified::default(),
        tenants,
        alerts,
        logging: logging?,
        responses_store: responses_store?,
        cache,
        limits_store: limits_store?,
        meta,
    })
}

/// What a valid config leaves out that an operator likely meant to set: shown by `sira
/// check` and logged at start.
fn notes(providers: &IndexMap<Arc<str>, Arc<Provider>>) -> Vec<String> {
    use crate::provider::ProviderKind;
    let mut notes = Vec::new();
    for provider in providers.values() {
        let hosted = !matches!(provider.kind, ProviderKind::OpenaiCompatible);
        if hosted && provider.api_key.is_none() {
            notes.push(format!(
                "providers.{}: no api_key (its variable is unset?): requests to it carry no credential and the provider will refuse them",
                provider.name
            ));
        }
    }
    notes
}

/// A gateway anyone on the network can spend through must be asked for: listeners beyond
/// loopback need keys or JWT (or `auth: { mode: open }`), and an admin listener beyond
/// loopback needs `admin_token`.
fn refuse_silently_open(
    b: &mut Builder,
    server: &super::ServerSettings,
    no_auth: bool,
    open: bool,
) {
    let exposed = server.listen.iter().find(|a| !a.ip().is_loopback());
    if let (Some(addr), true, false) = (exposed, no_auth, open) {
        b.problem(
            "auth",
            format!("{addr} is reachable beyond loopback but no auth.keys or auth.jwt is configured: add them, set `auth: {{ mode: keys }}` to require keys issued through /admin/keys, or `auth: {{ mode: open }}` to serve without authentication"),
        );
    }
    if let Some(admin) = server.admin.filter(|a| !a.ip().is_loopback()) {
        if server.admin_token.is_none() {
            b.problem(
                "server.admin_token",
                format!("the admin listener {admin} is reachable beyond loopback: it needs an admin_token"),
            );
        }
    }
}

/// The reasoning seal: from `server.reasoning_key`, else from the provider credentials
/// (secret, stable across restarts and reloads, and the same on every host of a fleet that
/// shares the config), else from a key drawn once per process (carriers then last as long
/// as the process: `server.reasoning_key` is the fix, and the startup log says so). A
/// carrier sealed under another key is dropped, never an error: the turn goes on without
/// that reasoning (the Anthropic writer then turns thinking off for a tool loop it would
/// refuse).
fn seal(
    server: &super::ServerSettings,
    providers: &IndexMap<Arc<str>, Arc<Provider>>,
) -> crate::translate::Seal {
    use crate::translate::Seal;
    if let Some(key) = &server.reasoning_key {
        return Seal::derive([&b"key"[..], key.expose().as_bytes()]);
    }
    let mut credentials: Vec<(&str, &str)> = providers
        .values()
        .filter_map(|p| p.api_key.as_ref().map(|k| (&*p.name, k.expose())))
        .collect();
    if credentials.is_empty() {
        static PROCESS: std::sync::LazyLock<Seal> = std::sync::LazyLock::new(|| {
            let mut random = [0u8; 32];
            // Without randomness the key is still secret-free but fixed; never a panic.
            let _ = getrandom::fill(&mut random);
            Seal::derive([&b"process"[..], &random])
        });
        return PROCESS.clone();
    }
    credentials.sort_unstable();
    let parts = credentials
        .iter()
        .flat_map(|(name, key)| [name.as_bytes(), key.as_bytes()]);
    Seal::derive(std::iter::once(&b"providers"[..]).chain(parts))
}

fn build_filters(b: &mut Builder, value: Option<Value>) -> AHashMap<String, Arc<dyn Filter>> {
    let mut filters = AHashMap::new();
    for (name, raw) in b.entries(value, "filters") {
        let path = format!("filters.{name}");
        let Some(spec) = section::<FilterSpec>(raw, &path, b.problems) else {
            continue;
        };
        match spec.build() {
            Ok(filter) => {
                filters.insert(name, filter);
            }
            Err(e) => b.problem(path, e.to_string()),
        }
    }
    filters
}

fn build_providers(b: &mut Builder, value: Option<Value>) -> IndexMap<Arc<str>, Arc<Provider>> {
    let mut providers = IndexMap::new();
    for (name, raw) in b.entries(value, "providers") {
        let path = format!("providers.{name}");
        let Some(config) = section::<ProviderConfig>(raw, &path, b.problems) else {
            b.broken_providers.push(name);
            continue;
        };
        match build_provider(b, &name, &path, config) {
            Some(provider) => {
                providers.insert(provider.name.clone(), Arc::new(provider));
            }
            None => b.broken_providers.push(name),
        }
    }
    providers
}

fn build_provider(
    b: &mut Builder,
    name: &str,
    path: &str,
    config: ProviderConfig,
) -> Option<Provider> {
    let ProviderConfig {
        kind,
        endpoints,
        api_key,
        api_version,
        deployments,
        headers,
        timeouts,
        anthropic_version,
        balance,
        hash_key,
        balance_load_factor,
        health,
        circuit,
        tls,
    } = config;
    let problems_before = b.problems.len();
    let upstream_tls = super::tls::upstream(b, &format!("{path}.tls"), tls);
    let mut parsed = Vec::new();
    let configured: Vec<(String, u32)> = endpoints
        .into_iter()
        .map(|e| match e {
            EndpointConfig::Url(url) => (url, 1),
            EndpointConfig::Weighted(w) => (w.url, w.weight.unwrap_or(1)),
        })
        .collect();
    let endpoint_list = if configured.is_empty() {
        match kind.default_endpoint() {
            Some(url) => vec![(url.to_owned(), 1)],
            None => {
                b.problem(
                    format!("{path}.endpoints"),
                    format!("required for kind {}", kind.as_str()),
                );
                Vec::new()
            }
        }
    } else {
        configured
    };
    for (i, (url, weight)) in endpoint_list.iter().enumerate() {
        if !(1..=1000).contains(weight) {
            b.problem(
                format!("{path}.endpoints[{i}].weight"),
                "must be from 1 to 1000",
            );
        }
        if endpoint_list[..i].iter().any(|(earlier, _)| earlier == url) {
            b.problem(
                format!("{path}.endpoints[{i}]"),
                format!("{url} is listed twice"),
            );
        }
        match Endpoint::parse(url, *weight) {
            Ok(mut endpoint) => {
                endpoint.upstream_tls = upstream_tls.clone();
                parsed.push(endpoint)
            }
            Err(e) => b.problem(format!("{path}.endpoints[{i}]"), e.to_string()),
        }
    }
    let api_key = match api_key {
        // `${VAR:-}` with VAR unset: no credential, said by `sira check` and at start
        // (a plain `${VAR}` that is unset is refused by interpolation).
        Some(key) if key.is_empty() => None,
        Some(key) if HeaderValue::from_str(&key).is_err() => {
            b.problem(
                format!("{path}.api_key"),
                "contains characters not allowed in an HTTP header",
            );
            None
        }
        other => other.map(Secret::new),
    };
    if kind != ProviderKind::Azure {
        if api_version.is_some() {
            b.problem(format!("{path}.api_version"), "only applies to kind azure");
        }
        if !deployments.is_empty() {
            b.problem(format!("{path}.deployments"), "only applies to kind azure");
        }
    }
    let mut extra_headers = Vec::new();
    for (header, value) in headers {
        let header_path = format!("{path}.headers.{header}");
        match (
            HeaderName::from_bytes(header.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(n), Ok(v)) => extra_headers.push((n, v)),
            (Err(_), _) => b.problem(header_path, "invalid header name"),
            (_, Err(_)) => b.problem(header_path, "invalid header value"),
        }
    }
    let defaults = Timeouts::default();
    let timeouts = Timeouts {
        connect: timeouts.connect.map_or(defaults.connect, |d| d.0),
        first_byte: timeouts.first_byte.map_or(defaults.first_byte, |d| d.0),
        idle: timeouts.idle.map_or(defaults.idle, |d| d.0),
        total: timeouts.total.map(|d| d.0).or(defaults.total),
    };
    let anthropic_version = match HeaderValue::from_str(
        anthropic_version
            .as_deref()
            .unwrap_or(DEFAULT_ANTHROPIC_VERSION),
    ) {
        Ok(v) => v,
        Err(_) => {
            b.problem(format!("{path}.anthropic_version"), "invalid header value");
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION)
        }
    };
    let pool = super::pool::pool_spec(
        b,
        path,
        parsed.len(),
        super::pool::PoolConfig {
            balance,
            hash_key,
            balance_load_factor,
            health,
            circuit,
        },
    );
    if b.problems.len() > problems_before {
        return None;
    }
    let provider = Provider::new(
        name,
        kind,
        parsed,
        api_key,
        api_version,
        deployments.into_iter().collect(),
        extra_headers,
        timeouts,
        anthropic_version,
    );
    Some(provider.with_pool(pool))
}

fn build_models(
    b: &mut Builder,
    value: Option<Value>,
    providers: &IndexMap<Arc<str>, Arc<Provider>>,
    filters: &AHashMap<String, Arc<dyn Filter>>,
) -> ModelTable {
    let entries = b.entries(value, "models");
    let mut table = ModelTable::default();
    let names: Vec<String> = entries.keys().cloned().collect();
    for (name, raw) in entries {
        let path = format!("models.{name}");
        let Some(config) = section::<ModelConfig>(raw, &path, b.problems) else {
            continue;
        };
        if let Some(route) = build_model(b, &name, &path, config, providers, filters, &names) {
            table.insert(route);
        }
    }
    table
}

fn build_model(
    b: &mut Builder,
    name: &str,
    path: &str,
    config: ModelConfig,
    providers: &IndexMap<Arc<str>, Arc<Provider>>,
    filters: &AHashMap<String, Arc<dyn Filter>>,
    model_names: &[String],
) -> Option<ModelRoute> {
    let ModelConfig {
        targets,
        pricing,
        fallbacks,
        retry,
        filters: filter_names,
        default_max_tokens,
        route: strategy,
        hedge,
        prompt_cache,
        web_search,
        limits,
        cache,
    } = config;
    let problems_before = b.problems.len();
    if targets.is_empty() {
        b.problem(format!("{path}.targets"), "needs at least one target");
    }
    let mut built = Vec::new();
    for (i, target) in targets.into_iter().enumerate() {
        let target_path = format!("{path}.targets[{i}]");
        let Some(provider) = providers.get(target.provider.as_str()) else {
            if !b.broken_providers.contains(&target.provider) {
                b.problem(
                    format!("{target_path}.provider"),
                    format!("unknown provider {:?}", target.provider),
                );
            }
            continue;
        };
        if target.weight == Some(0) {
            b.problem(format!("{target_path}.weight"), "must be at least 1");
        }
        let mut built_target = Target::new(
            provider.clone(),
            target.model.map(Into::into),
            target.weight.unwrap_or(1),
        );
        if let Some(target_name) = target.name {
            if target_name.is_empty() || target_name.len() > 128 {
                b.problem(format!("{target_path}.name"), "must be 1 to 128 characters");
            }
            built_target.name = target_name.into();
        }
        if built.iter().any(|t: &Target| t.name == built_target.name) {
            b.problem(
                format!("{target_path}.name"),
                format!(
                    "another target of this model is already named {:?}; give each a name",
                    built_target.name
                ),
            );
        }
        built_target.pricing = target
            .pricing
            .and_then(|p| pricing_table(b, &format!("{target_path}.pricing"), p));
        built_target.pinned_keys = target.pinned_keys.into_iter().map(Into::into).collect();
        built_target.latency = crate::runtime::registry().target_latency(&format!(
            "{name}\0{}\0{}\0{}",
            built_target.name,
            provider.name,
            built_target.model.as_deref().unwrap_or("")
        ));
        built.push(built_target);
    }
    let pricing = pricing.and_then(|p| pricing_table(b, &format!("{path}.pricing"), p));
    for (i, fallback) in fallbacks.iter().enumerate() {
        if fallback == name {
            b.problem(
                format!("{path}.fallbacks[{i}]"),
                "a model cannot fall back to itself",
            );
        } else if !model_names.iter().any(|m| m == fallback) {
            b.problem(
                format!("{path}.fallbacks[{i}]"),
                format!("unknown model {fallback:?}"),
            );
        }
    }
    let mut retry_policy = RetryPolicy::default();
    if let Some(retry) = retry {
        if retry.attempts == Some(0) {
            b.problem(
                format!("{path}.retry.attempts"),
                "must be at least 1 (1 = no retry)",
            );
        }
        retry_policy.attempts = retry.attempts.unwrap_or(retry_policy.attempts);
        retry_policy.backoff = retry.backoff.map_or(retry_policy.backoff, |d| d.0);
        retry_policy.max_backoff = retry
            .max_backoff
            .map_or(retry_policy.max_backoff.max(retry_policy.backoff), |d| d.0);
    }
    let attached = resolve_filters(b, &format!("{path}.filters"), &filter_names, filters);
    for (i, filter) in attached.iter().enumerate() {
        if filter.rewrites_model() {
            b.problem(
                format!("{path}.filters[{i}]"),
                "a model-rewrite filter chooses the model, so it belongs on keys (auth.keys[].filters), not on a model entry",
            );
        }
    }
    if default_max_tokens == Some(0) {
        b.problem(format!("{path}.default_max_tokens"), "must be at least 1");
    }
    if strategy == Some(crate::models::RouteStrategy::LowestCost)
        && pricing.is_none()
        && built.iter().any(|t| t.pricing.is_none())
    {
        b.problem(
            format!("{path}.route"),
            "lowest-cost needs prices: give the model a pricing table, or every target its own",
        );
    }
    let hedge_policy = hedge.map(|h| HedgePolicy {
        after: h.after.0,
        max: h.max.unwrap_or(1),
    });
    if let Some(h) = &hedge_policy {
        if h.after < std::time::Duration::from_millis(10) {
            b.problem(format!("{path}.hedge.after"), "must be at least 10ms");
        }
        if !(1..=3).contains(&h.max) {
            b.problem(format!("{path}.hedge.max"), "must be 1, 2 or 3");
        }
    }
    if b.problems.len() > problems_before {
        return None;
    }
    let mut route = ModelRoute::new(name, built);
    route.pricing = pricing;
    route.fallbacks = fallbacks.into_iter().map(Into::into).collect();
    route.retry = retry_policy;
    route.filters = attached;
    route.default_max_tokens = default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    route.strategy = strategy.unwrap_or_default();
    route.hedge = hedge_policy;
    route.prompt_cache = prompt_cache != Some(super::file::PromptCache::Off);
    route.web_search = web_search == Some(super::file::WebSearchMode::Native);
    route.limits = super::limits::limits(b, limits, &format!("{path}.limits"));
    route.cache = super::cache::model_cache(b, cache, &format!("{path}.cache"));
    route.counter = super::limits::counter(&format!("model {name}"), &route.limits);
    Some(route)
}

fn pricing_table(b: &mut Builder, path: &str, p: PricingConfig) -> Option<Pricing> {
    let input = p.input.unwrap_or(0.0);
    let table = Pricing {
        input,
        output: p.output.unwrap_or(0.0),
        cached_input: p.cached_input.unwrap_or(input),
        cache_write: p.cache_write.unwrap_or(input),
    };
    if [
        table.input,
        table.output,
        table.cached_input,
        table.cache_write,
    ]
    .iter()
    .any(|v| !v.is_finite() || *v < 0.0)
    {
        b.problem(path, "prices must be non-negative numbers");
        return None;
    }
    Some(table)
}

/// A target pinned to a key that does not exist pins nothing: the operator mistyped.
fn check_pins(b: &mut Builder, models: &ModelTable, keys: &KeyTable) {
    for route in models.all() {
        for (i, target) in route.targets.iter().enumerate() {
            for (j, key) in target.pinned_keys.iter().enumerate() {
                if !keys.iter().any(|k| k.name == *key) {
                    b.problem(
                        format!("models.{}.targets[{i}].pinned_keys[{j}]", route.name),
                        format!("unknown key {key:?}"),
                    );
                }
            }
        }
    }
}

pub(super) fn resolve_filters(
    b: &mut Builder,
    path: &str,
    names: &[String],
    filters: &AHashMap<String, Arc<dyn Filter>>,
) -> Vec<Arc<dyn Filter>> {
    let mut attached = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match filters.get(name) {
            Some(filter) => attached.push(filter.clone()),
            None => b.problem(format!("{path}[{i}]"), format!("unknown filter {name:?}")),
        }
    }
    attached
}

fn logging_settings(b: &mut Builder, value: Option<Value>) -> Option<LoggingSettings> {
    let config: LoggingConfig = match value {
        Some(v) => section(v, "logging", b.problems)?,
        None => LoggingConfig::default(),
    };
    let LoggingConfig {
        level,
        access_log,
        format,
    } = config;
    let level = level.unwrap_or_else(|| "info".to_owned());
    let plain_level = matches!(
        level.as_str(),
        "error" | "warn" | "info" | "debug" | "trace" | "off"
    );
    if !plain_level
        && (!level.contains('=') || tracing_subscriber::EnvFilter::try_new(&level).is_err())
    {
        b.problem(
            "logging.level",
            format!("invalid level {level:?}: use error, warn, info, debug or trace"),
        );
    }
    let access_log = match access_log.as_deref() {
        None | Some("stdout") => AccessLogTarget::Stdout,
        Some("off") => AccessLogTarget::Off,
        Some("") => {
            b.problem("logging.access_log", "must be stdout, off or a file path");
            AccessLogTarget::Off
        }
        Some(path) => AccessLogTarget::File(PathBuf::from(path)),
    };
    Some(LoggingSettings {
        level,
        access_log,
        format: format.unwrap_or_default(),
    })
}
