//! `auth:` → the [`KeyTable`]: hashed API keys and keys a client certificate claims, each
//! with its models, filters, tenant and limits; `auth.jwt` and `auth.mode` are handed back
//! for their own builders.

use std::sync::Arc;

use ahash::AHashMap;
use lua_free_filters::Filter;
use serde_yaml::Value;

use super::build::{resolve_filters, Builder};
use super::file::{AuthConfig, KeyConfig};
use super::section;
use crate::auth::{parse_hash, KeyEntry, KeyTable};
use crate::glob::Glob;
use crate::models::ModelTable;

pub(super) fn build_keys(
    b: &mut Builder,
    value: Option<Value>,
    models: &ModelTable,
    filters: &AHashMap<String, Arc<dyn Filter>>,
    tenants: &AHashMap<String, Arc<super::limits::Tenant>>,
    jwt: &mut Option<Value>,
    open: &mut bool,
) -> KeyTable {
    let mut table = KeyTable::default();
    let Some(auth) = value.and_then(|v| section::<AuthConfig>(v, "auth", b.problems)) else {
        return table;
    };
    *jwt = auth.jwt;
    *open = auth.mode == Some(super::file::AuthMode::Open);
    let Some(keys) = auth
        .keys
        .and_then(|v| section::<Vec<Value>>(v, "auth.keys", b.problems))
    else {
        return table;
    };
    let mut names = AHashMap::new();
    for (i, raw) in keys.into_iter().enumerate() {
        let path = format!("auth.keys[{i}]");
        let Some(key) = section::<KeyConfig>(raw, &path, b.problems) else {
            continue;
        };
        let KeyConfig {
            name,
            hash,
            models: allowed,
            filters: filter_names,
            tenant,
            limits,
            route_header,
            mtls_subject,
        } = key;
        let tenant = tenant.and_then(|t| match tenants.get(&t) {
            Some(tenant) => Some(tenant.clone()),
            None => {
                b.problem(
                    format!("{path}.tenant"),
                    format!("unknown tenant {t:?}: add it under tenants:"),
                );
                None
            }
        });
        let limits = super::limits::limits(b, limits, &format!("{path}.limits"));
        if name.is_empty() {
            b.problem(format!("{path}.name"), "must not be empty");
        }
        if let Some(previous) = names.insert(name.clone(), i) {
            b.problem(
                format!("{path}.name"),
                format!("duplicate key name {name:?} (also auth.keys[{previous}])"),
            );
        }
        let digest = match (&hash, &mtls_subject) {
            (Some(hash), _) => match parse_hash(hash) {
                Ok(digest) => digest,
                Err(e) => {
                    b.problem(format!("{path}.hash"), e);
                    continue;
                }
            },
            // A key only a client certificate can claim: a digest no secret hashes to.
            (None, Some(_)) => {
                let mut random = [0u8; 32];
                if getrandom::fill(&mut random).is_err() {
                    b.problem(format!("{path}.hash"), "no randomness to seal the key with");
                    continue;
                }
                random
            }
            (None, None) => {
                b.problem(
                    path.clone(),
                    "needs a hash (an API key) or an mtls_subject (a client certificate)",
                );
                continue;
            }
        };
        if let Some(subject) = mtls_subject.as_deref() {
            if subject.is_empty() {
                b.problem(format!("{path}.mtls_subject"), "must not be empty");
            } else if table.mtls_taken(subject) {
                b.problem(
                    format!("{path}.mtls_subject"),
                    "another key claims the same client certificate subject",
                );
            }
        }
        if table.contains_digest(&digest) {
            b.problem(
                format!("{path}.hash"),
                "the same key hash is configured twice",
            );
            continue;
        }
        let globs = allowed.map(|patterns| {
            for (j, pattern) in patterns.iter().enumerate() {
                let matches_something = Glob::is_wildcard(pattern) || models.contains(pattern);
                if !matches_something {
                    b.problem(
                        format!("{path}.models[{j}]"),
                        format!("unknown model {pattern:?}"),
                    );
                }
            }
            patterns.iter().map(|p| Glob::new(p)).collect()
        });
        let attached = resolve_filters(b, &format!("{path}.filters"), &filter_names, filters);
        let mut entry = KeyEntry::new(&name, digest, globs, attached);
        entry.route_header = route_header;
        entry.counter = super::limits::counter(&format!("key {name}"), &limits);
        entry.limits = limits;
        entry.tenant = tenant;
        let entry = table.insert(entry);
        if let Some(subject) = mtls_subject.filter(|s| !s.is_empty()) {
            table.claim_mtls(subject, entry);
        }
    }
    table
}
