use super::interpolate::tests::FakeSource;
use super::*;

fn source() -> FakeSource {
    let mut s = FakeSource::default();
    s.env
        .insert("OPENAI_API_KEY".into(), "sk-openai-secret".into());
    s.env
        .insert("ANTHROPIC_API_KEY".into(), "sk-ant-secret".into());
    s
}

fn ok(yaml: &str) -> Snapshot {
    match parse(yaml, None, &source()) {
        Ok(snapshot) => snapshot,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn problems(yaml: &str) -> Vec<String> {
    match parse(yaml, None, &source()) {
        Ok(_) => panic!("expected problems"),
        Err(ConfigError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

const GOOD: &str = r#"
server:
  listen: ["127.0.0.1:18080"]
  admin: "127.0.0.1:19901"
  threads: "${THREADS:-2}"
  max_request_body: 1MiB
  grace_period: 5s
providers:
  openai:
    kind: openai
    api_key: ${OPENAI_API_KEY}
  claude:
    kind: anthropic
    endpoints: ["https://api.anthropic.com"]
    api_key: ${ANTHROPIC_API_KEY}
    timeouts: { connect: 1s, first_byte: 30s, idle: 10s, total: 5m }
    headers: { x-extra: value }
models:
  gpt-4o:
    targets: [{ provider: openai, model: gpt-4o }]
    pricing: { input: 2.50, output: 10.00, cached_input: 1.25 }
  sonnet:
    targets:
      - { provider: claude, model: claude-sonnet-4-5, weight: 3 }
    fallbacks: [gpt-4o]
    retry: { attempts: 2, backoff: 100ms, max_backoff: 2s }
    filters: [tag]
  "openai/*":
    targets: [{ provider: openai }]
auth:
  keys:
    - name: team-a
      hash: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
      models: [gpt-4o, "openai/*"]
filters:
  tag: { kind: headers, request: { set: { x-team: a } } }
logging: { level: info, access_log: off, format: json }
"#;

#[test]
fn good_config_compiles() {
    let snap = ok(GOOD);
    assert_eq!(snap.server.threads, 2);
    assert_eq!(snap.server.max_request_body, 1 << 20);
    assert_eq!(snap.server.grace_period, Duration::from_secs(5));
    assert_eq!(snap.providers.len(), 2);
    assert_eq!(snap.providers["openai"].endpoints[0].host, "api.openai.com");
    assert_eq!(
        snap.providers["claude"].timeouts.total,
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        snap.providers["openai"].api_key.as_ref().unwrap().expose(),
        "sk-openai-secret"
    );
    let sonnet = snap.models.resolve("sonnet").unwrap().route;
    assert_eq!(sonnet.retry.attempts, 2);
    assert_eq!(sonnet.filters.len(), 1);
    assert_eq!(snap.keys.len(), 1);
    assert_eq!(snap.logging.access_log, AccessLogTarget::Off);
    assert_eq!(snap.meta.sha256.len(), 64);
}

#[test]
fn empty_file_is_the_minimal_config() {
    let snap = ok("");
    assert_eq!(snap.server.listen, ["127.0.0.1:8080".parse().unwrap()]);
    assert!(snap.models.is_empty() && snap.keys.is_empty());
}

#[test]
fn unknown_keys_are_rejected_with_paths() {
    assert_eq!(problems("sever: {}"), ["sever: unknown field `sever`, expected one of `server`, `providers`, `models`, `auth`, `filters`, `logging`, `tenants`, `limits`, `cache`, `responses_store`, `alerts`"]);
    let p = problems("providers:\n  openai:\n    kind: openai\n    api_kye: x\n");
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("providers.openai.api_kye: unknown field `api_kye`"),
        "{p:?}"
    );
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let p = problems(
        r#"
providers:
  openai: { kind: opneai }
  local: { kind: openai-compatible }
models:
  gpt-4o:
    targets: [{ provider: opneai }]
  other:
    targets: []
auth:
  keys:
    - { name: a, hash: "md5:abc" }
"#,
    );
    assert_eq!(
        p,
        [
            "providers.openai.kind: unknown variant `opneai`, expected one of `openai`, `anthropic`, `gemini`, `azure`, `openai-compatible`",
            "providers.local.endpoints: required for kind openai-compatible",
            "models.gpt-4o.targets[0].provider: unknown provider \"opneai\"",
            "models.other.targets: needs at least one target",
            "auth.keys[0].hash: expected \"sha256:<64 hex digits>\" (run `sira key hash` to make one)",
        ]
    );
}

#[test]
fn secrets_never_appear_in_problems() {
    // The secret lands in a numeric field: serde would quote it in its message.
    let p = problems("server:\n  threads: ${OPENAI_API_KEY}\n");
    assert_eq!(p.len(), 1);
    assert!(!p[0].contains("sk-openai-secret"), "{p:?}");
    let p = problems("server:\n  listen: ${OPENAI_API_KEY}\n");
    assert!(!p.join("\n").contains("sk-openai-secret"), "{p:?}");
}

#[test]
fn missing_environment_variables_are_reported() {
    let p = problems("providers:\n  o:\n    kind: openai\n    api_key: ${NOT_SET}\n");
    assert_eq!(p, ["providers.o.api_key: environment variable NOT_SET is not set (write ${NOT_SET:-default} to give a default)"]);
}

#[test]
fn empty_api_key_is_a_problem_unless_allowed() {
    let mut s = source();
    s.env.insert("EMPTY".into(), String::new());
    let err = parse(
        "providers:\n  o:\n    kind: openai\n    api_key: ${EMPTY}\n",
        None,
        &s,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("providers.o.api_key: environment variable EMPTY is empty"),
        "{err}"
    );
    // Written to allow it: no credential, and a note says so.
    let snap = parse(
        "providers:\n  o:\n    kind: openai\n    api_key: ${EMPTY:-}\nmodels:\n  m: { targets: [{ provider: o }] }\n",
        None,
        &s,
    )
    .unwrap();
    assert!(snap.providers["o"].api_key.is_none());
    assert!(
        snap.notes[0].starts_with("providers.o: no api_key"),
        "{:?}",
        snap.notes
    );
}

#[test]
fn cache_settings_are_checked() {
    assert!(parse(
        "cache: { memory: { capacity: 1MiB, ttl: 1m }, shared: true }\n",
        None,
        &source()
    )
    .is_ok());
    let p = problems(
        "cache: { memory: { capacity: 1MiB, ttl: 0s }, max_entry: 2MiB, redis: { url: \"nope://x\" } }\n",
    );
    assert_eq!(
        p,
        [
            "cache.memory.ttl: must be longer than 0s",
            "cache.max_entry: must be more than 0 bytes and at most the memory's capacity",
            "cache.redis.url: not a valid Redis URL (redis://[user:password@]host[:port][/db] or unix:///path)",
        ]
    );
    let p = problems("cache: { memroy: {} }\n");
    assert!(
        p[0].starts_with("cache.memroy: unknown field `memroy`"),
        "{p:?}"
    );
}

#[test]
fn cross_references_are_checked() {
    let p = problems(
        r#"
providers: { o: { kind: openai } }
models:
  a: { targets: [{ provider: o }], fallbacks: [a, nope], filters: [missing] }
auth:
  keys:
    - { name: k, hash: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", models: [b] }
    - { name: k, hash: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }
"#,
    );
    assert_eq!(
        p,
        [
            "models.a.fallbacks[0]: a model cannot fall back to itself",
            "models.a.fallbacks[1]: unknown model \"nope\"",
            "models.a.filters[0]: unknown filter \"missing\"",
            "auth.keys[0].models[0]: unknown model \"b\"",
            "auth.keys[1].name: duplicate key name \"k\" (also auth.keys[0])",
            "auth.keys[1].hash: the same key hash is configured twice",
        ]
    );
}

#[test]
fn bad_values_are_reported() {
    let p = problems(
        r#"
server: { listen: ["nowhere"], max_request_body: 8 parsecs, grace_period: soon, threads: 0 }
providers:
  o: { kind: openai, endpoints: ["api.openai.com"], api_version: "1" }
logging: { level: "loud!!", access_log: "" }
"#,
    );
    assert_eq!(p.len(), 5, "{p:?}");
    assert!(
        p[0].starts_with("server.max_request_body: invalid size"),
        "{p:?}"
    );
    let p = problems(
        r#"
server: { listen: ["nowhere"], threads: 0 }
providers:
  o: { kind: openai, endpoints: ["api.openai.com"], api_version: "1" }
logging: { level: "loud!!", access_log: "" }
"#,
    );
    assert_eq!(
        p,
        [
            "server.listen[0]: invalid address \"nowhere\": expected host:port, e.g. 0.0.0.0:8080",
            "server.threads: must be at least 1",
            "providers.o.endpoints[0]: api.openai.com: expected http://host[:port][/path] or https://…",
            "providers.o.api_version: only applies to kind azure",
            "logging.level: invalid level \"loud!!\": use error, warn, info, debug or trace",
            "logging.access_log: must be stdout, off or a file path",
        ]
    );
}

#[test]
fn yaml_syntax_errors_are_reported() {
    let p = problems("server: [unclosed");
    assert!(p[0].starts_with("invalid YAML"), "{p:?}");
}

#[test]
fn client_limits_and_timeouts_default_and_validate() {
    let snap = ok("");
    let server = &snap.server;
    assert_eq!(server.header_timeout, std::time::Duration::from_secs(10));
    assert_eq!(server.max_header_size, 64 << 10);
    assert_eq!(server.max_headers, 100);
    assert_eq!(server.max_sse_event, 16 << 20);
    assert!(server.resolver.is_empty());
    let snap = ok("server:\n  timeouts: { header: 500ms, keepalive: 5s }\n  max_header_size: 8KiB\n  resolver: [\"10.0.0.2\", \"127.0.0.1:5353\"]\n");
    assert_eq!(
        snap.server.header_timeout,
        std::time::Duration::from_millis(500)
    );
    assert_eq!(snap.server.max_header_size, 8 << 10);
    assert_eq!(
        snap.server.resolver,
        [
            "10.0.0.2:53".parse().unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        ]
    );
    let found = problems(
        "server:\n  timeouts: { body: 0s, keepalive: 1500ms }\n  max_headers: 300\n  max_header_size: 2MiB\n  max_sse_event: 0\n  resolver: [\"dns.example\"]\n",
    );
    for expected in [
        "server.timeouts.body: must be greater than zero",
        "server.timeouts.keepalive: must be a whole number of seconds",
        "server.max_headers: must be at most 256",
        "server.max_header_size: must be at most 1048576 bytes",
        "server.max_sse_event: must be greater than zero",
        "server.resolver[0]: invalid address",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{expected:?} not in {found:#?}"
        );
    }
}

#[test]
fn body_filters_are_checked_with_their_path() {
    let found = problems(
        "filters:\n  bad-path: { kind: set-field, fields: { \"a..b\": 1 } }\n  bad-clamp: { kind: clamp, field: max_tokens }\n  bad-side: { kind: remove-field, fields: [x], on: [response], at: provider }\n",
    );
    for expected in [
        "filters.bad-path:",
        "filters.bad-clamp:",
        "filters.bad-side:",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{expected:?} not in {found:#?}"
        );
    }
}

#[test]
fn pools_are_built_from_balance_hash_key_health_and_circuit() {
    let snap = ok(r#"
providers:
  vllm:
    kind: openai-compatible
    endpoints:
      - { url: "http://10.9.0.5:8000", weight: 2 }
      - "http://10.9.0.6:8000"
    balance: consistent-hash
    hash_key: prompt-prefix:4KiB
    balance_load_factor: 1.5
    health: { path: /health, interval: 2s, timeout: 500ms, healthy_after: 1, unhealthy_after: 2 }
    circuit: { failures: 3, window: 10s, open_for: 5s }
  single:
    kind: openai-compatible
    endpoints: ["http://10.9.0.7:8000"]
  off:
    kind: openai-compatible
    endpoints: ["http://10.9.0.8:8000", "http://10.9.0.9:8000"]
    circuit: { failures: 0 }
models:
  m: { targets: [{ provider: vllm }] }
"#);
    let pool = &snap.providers["vllm"].pool;
    assert_eq!(pool.balance, crate::pool::Balance::ConsistentHash);
    assert_eq!(
        pool.hash_key,
        Some(crate::pool::affinity::HashKey::PromptPrefix(4096))
    );
    let group = pool.health.as_ref().expect("health checks");
    assert_eq!(group.policy.path.as_deref(), Some("/health"));
    assert_eq!(group.policy.interval, std::time::Duration::from_secs(2));
    assert_eq!(pool.circuit.map(|c| c.failures), Some(3));
    assert!(
        snap.providers["single"].pool.circuit.is_none(),
        "a lone endpoint has no circuit unless asked"
    );
    assert!(
        snap.providers["off"].pool.circuit.is_none(),
        "failures: 0 turns it off"
    );
}

#[test]
fn bad_pool_settings_are_named() {
    let p = problems(
        r#"
providers:
  a:
    kind: openai-compatible
    endpoints: ["http://10.9.1.1:8000", "http://10.9.1.2:8000"]
    balance: consistent-hash
  b:
    kind: openai-compatible
    endpoints: ["http://10.9.1.3:8000"]
    hash_key: user
    balance_load_factor: 0.5
    health: { path: health, interval: 1s, timeout: 2s, healthy_after: 0 }
  c:
    kind: openai-compatible
    endpoints: ["http://10.9.1.4:8000"]
    balance: consistent-hash
    hash_key: cookie
    circuit: { window: 0s }
  d:
    kind: openai-compatible
    endpoints: ["http://10.9.1.5:8000"]
    balance: fastest
"#,
    );
    let expected = [
        "providers.a.hash_key: required for balance: consistent-hash",
        "providers.b.hash_key: only applies to balance: consistent-hash",
        "providers.b.balance_load_factor: must be between 1.0",
        "providers.b.health.path: must be an absolute path",
        "providers.b.health.timeout: must be longer than 0s and no longer than the interval",
        "providers.b.health.healthy_after: must be at least 1",
        "providers.c.hash_key: \"cookie\": expected header:NAME",
        "providers.c.circuit.window: must be longer than 0s",
        "providers.d.balance: unknown variant `fastest`",
    ];
    for want in expected {
        assert!(
            p.iter().any(|got| got.starts_with(want)),
            "missing {want:?} in {p:#?}"
        );
    }
}

#[test]
fn target_names_prices_pins_and_route_strategies_are_checked() {
    let p = problems(
        r#"
providers:
  a: { kind: openai-compatible, endpoints: ["http://10.9.2.1:8000"] }
models:
  m:
    route: cheapest
    targets: [{ provider: a }]
  unpriced:
    route: lowest-cost
    targets: [{ provider: a }]
  n:
    targets:
      - { provider: a }
      - { provider: a, pricing: { input: -1 }, pinned_keys: [ghost] }
auth:
  keys:
    - { name: team-a, hash: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", route_header: yes }
"#,
    );
    for want in [
        "models.m.route: unknown variant `cheapest`",
        "models.n.targets[1].name: another target of this model is already named \"a\"",
        "models.n.targets[1].pricing: prices must be non-negative numbers",
        "models.unpriced.route: lowest-cost needs prices",
    ] {
        assert!(
            p.iter().any(|got| got.starts_with(want)),
            "missing {want:?} in {p:#?}"
        );
    }
    let snap = ok(r#"
providers:
  a: { kind: openai-compatible, endpoints: ["http://10.9.2.1:8000"] }
models:
  m:
    route: lowest-cost
    pricing: { input: 3, output: 15 }
    targets:
      - { provider: a, name: main }
      - { provider: a, name: canary, pricing: { input: 1, output: 2 }, pinned_keys: [team-a] }
auth:
  keys:
    - { name: team-a, hash: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", route_header: true }
"#);
    let m = snap.models.resolve("m").unwrap().route;
    assert_eq!(m.strategy, crate::models::RouteStrategy::LowestCost);
    assert_eq!(&*m.targets[1].name, "canary");
    assert_eq!(
        m.targets[1].pinned_keys,
        [std::sync::Arc::<str>::from("team-a")]
    );
    assert!(snap.keys.iter().next().unwrap().route_header);
    let ghost = problems(
        r#"
providers:
  a: { kind: openai-compatible, endpoints: ["http://10.9.2.1:8000"] }
models:
  m: { targets: [{ provider: a, pinned_keys: [ghost] }] }
"#,
    );
    assert_eq!(
        ghost,
        ["models.m.targets[0].pinned_keys[0]: unknown key \"ghost\""]
    );
}

#[test]
fn the_reasoning_seal_follows_its_key_or_the_provider_credentials() {
    let p = problems("server: { reasoning_key: short }\n");
    assert!(
        p.iter().any(|p| p.starts_with("server.reasoning_key")),
        "{p:?}"
    );
    let keyed = |key: &str| ok(&format!("server: {{ reasoning_key: {key} }}\n")).seal;
    assert_eq!(keyed("0123456789abcdef-one"), keyed("0123456789abcdef-one"));
    assert_ne!(keyed("0123456789abcdef-one"), keyed("0123456789abcdef-two"));
    // Without a key: the same credentials give the same seal on every host, others not.
    let by_credential = |key: &str| {
        ok(&format!("providers:\n  p: {{ kind: openai, endpoints: [\"http://127.0.0.1:9\"], api_key: {key} }}\n")).seal
    };
    assert_eq!(by_credential("sk-a"), by_credential("sk-a"));
    assert_ne!(by_credential("sk-a"), by_credential("sk-b"));
    assert_ne!(by_credential("sk-a"), keyed("0123456789abcdef-one"));
}
