//! API keys, stored and compared as SHA-256 digests.
//!
//! The config holds only `sha256:<hex>` digests, so a leaked config file leaks no usable key.
//! A presented key is hashed once; the table is bucketed by the first 8 bytes of the digest
//! (a lookup keyed by a one-way hash of attacker input reveals nothing useful), and the full
//! digest is then compared in constant time with `subtle`.

use std::sync::Arc;

use ahash::AHashMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::glob::Glob;
use lua_free_filters::Filter;

pub const HASH_PREFIX: &str = "sha256:";
const KEY_PREFIX: &str = "sk-sira-";

/// One configured key.
#[derive(Debug)]
pub struct KeyEntry {
    /// Shown in logs and metrics; the secret never is.
    pub name: Arc<str>,
    /// What the key's spend and stored responses are kept under: its name for a config key,
    /// name and a random id for an issued one (a name issued again starts afresh).
    pub scope: Arc<str>,
    /// The first of the key's hashes: what its cached answers are filed under.
    digest: [u8; 32],
    /// Every hash the key is presented as (more than one while a rotation overlaps), each
    /// with the Unix second it stops working at, if it does.
    hashes: Vec<([u8; 32], Option<u64>)>,
    /// The Unix second the whole key stops working at.
    pub expires_at: Option<u64>,
    /// `None` = every model.
    models: Option<Vec<Glob>>,
    pub filters: Vec<Arc<dyn Filter>>,
    /// May choose a model's target with `x-sira-route`.
    pub route_header: bool,
    /// The key's own limits, and their running state when it has any.
    pub limits: crate::limits::Limits,
    pub counter: Option<Arc<crate::limits::Counter>>,
    /// The tenant whose limits the key shares.
    pub tenant: Option<Arc<crate::config::limits::Tenant>>,
}

impl KeyEntry {
    pub fn new(
        name: &str,
        digest: [u8; 32],
        models: Option<Vec<Glob>>,
        filters: Vec<Arc<dyn Filter>>,
    ) -> KeyEntry {
        let name: Arc<str> = name.into();
        KeyEntry {
            scope: name.clone(),
            name,
            digest,
            hashes: vec![(digest, None)],
            expires_at: None,
            models,
            filters,
            route_header: false,
            limits: crate::limits::Limits::default(),
            counter: None,
            tenant: None,
        }
    }

    /// The key is also presented as `digest` (a rotation's other hash), until `expires_at`.
    pub fn add_hash(&mut self, digest: [u8; 32], expires_at: Option<u64>) {
        if let Some(first) = self.hashes.iter_mut().find(|(d, _)| *d == digest) {
            first.1 = expires_at;
        } else {
            self.hashes.push((digest, expires_at));
        }
    }

    /// How many hashes present this key.
    pub fn hash_count(&self) -> usize {
        self.hashes.len()
    }

    /// What the key's cached answers are filed under: its name and a part of its digest, so
    /// that a name given to another secret on a reload never reads the old key's answers.
    pub fn cache_scope(&self) -> String {
        format!("key:{}:{}", self.name, hex::encode(&self.digest[..8]))
    }

    /// Whether this key may use the model the client asked for.
    pub fn allows(&self, model: &str) -> bool {
        match &self.models {
            None => true,
            Some(globs) => globs.iter().any(|g| g.matches(model)),
        }
    }
}

/// One way a key is presented: a hash, and when it stops working (the earlier of the
/// hash's own end and the key's).
#[derive(Debug)]
struct Slot {
    digest: [u8; 32],
    expires_at: Option<u64>,
    entry: Arc<KeyEntry>,
}

/// What a presented secret matched.
pub enum Found<'a> {
    Key(&'a Arc<KeyEntry>),
    /// A real key (or one of its hashes) past its `expires_at`.
    Expired,
}

/// Every configured key, looked up by digest.
#[derive(Debug, Default)]
pub struct KeyTable {
    buckets: AHashMap<u64, Vec<Slot>>,
    /// `auth.mode: keys`: a key is required even while the table is empty (keys issued
    /// through the admin API only).
    pub require_key: bool,
    /// Keys claimed by a client certificate's subject name (`mtls_subject`).
    mtls: AHashMap<String, Arc<KeyEntry>>,
    /// Every entry in config order, for listings.
    ordered: Vec<Arc<KeyEntry>>,
}

impl KeyTable {
    pub fn insert(&mut self, entry: KeyEntry) -> Arc<KeyEntry> {
        let entry = Arc::new(entry);
        self.ordered.push(entry.clone());
        for (digest, expires_at) in &entry.hashes {
            let expires_at = match (*expires_at, entry.expires_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.buckets.entry(bucket(digest)).or_default().push(Slot {
                digest: *digest,
                expires_at,
                entry: entry.clone(),
            });
        }
        entry
    }

    /// `entry` is also the key of clients whose certificate names `subject`.
    pub fn claim_mtls(&mut self, subject: String, entry: Arc<KeyEntry>) {
        self.mtls.insert(subject, entry);
    }

    pub fn mtls_taken(&self, subject: &str) -> bool {
        self.mtls.contains_key(subject)
    }

    /// Whether any key is claimed by a client certificate.
    pub fn has_mtls(&self) -> bool {
        !self.mtls.is_empty()
    }

    /// The key a verified client certificate's names claim, the first name that does (or
    /// [`Found::Expired`] past the key's end).
    pub fn find_mtls(&self, identity: &crate::tls::ClientIdentity) -> Option<Found<'_>> {
        let entry = identity.names.iter().find_map(|name| self.mtls.get(name))?;
        match entry.expires_at {
            Some(end) if now_secs() >= end => Some(Found::Expired),
            _ => Some(Found::Key(entry)),
        }
    }

    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    /// No keys configured: the gateway does not authenticate clients.
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// The key of that name, if the table has one.
    pub fn named(&self, name: &str) -> Option<&Arc<KeyEntry>> {
        self.ordered.iter().find(|e| &*e.name == name)
    }

    pub fn contains_digest(&self, digest: &[u8; 32]) -> bool {
        self.buckets
            .get(&bucket(digest))
            .is_some_and(|slots| slots.iter().any(|s| &s.digest == digest))
    }

    /// Finds the entry whose digest matches the presented secret.
    pub fn find(&self, secret: &[u8]) -> Option<&Arc<KeyEntry>> {
        match self.find_digest(&digest(secret), now_secs) {
            Some(Found::Key(entry)) => Some(entry),
            _ => None,
        }
    }

    /// The slot whose hash is `digest`, compared in constant time; `now` (Unix seconds)
    /// tells whether it expired.
    pub fn find_digest(&self, digest: &[u8; 32], now: impl Fn() -> u64) -> Option<Found<'_>> {
        let slot = self
            .buckets
            .get(&bucket(digest))?
            .iter()
            .find(|slot| bool::from(slot.digest.ct_eq(digest)))?;
        match slot.expires_at {
            Some(end) if now() >= end => Some(Found::Expired),
            _ => Some(Found::Key(&slot.entry)),
        }
    }

    /// Every entry, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<KeyEntry>> {
        self.ordered.iter()
    }
}

/// The SHA-256 of a presented secret: computed once, looked up in every table.
pub fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// The wall clock in Unix seconds, read only when a matched key has an end.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bucket(digest: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// `sha256:<hex>` of a secret, the form written in the config.
pub fn hash_key(secret: &str) -> String {
    format!(
        "{HASH_PREFIX}{}",
        hex::encode(Sha256::digest(secret.as_bytes()))
    )
}

/// Parses the config form back into a digest.
pub fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let hex_part = text.strip_prefix(HASH_PREFIX).ok_or_else(|| {
        format!("expected \"{HASH_PREFIX}<64 hex digits>\" (run `sira key hash` to make one)")
    })?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut digest)
        .map_err(|_| format!("expected 64 hex digits after \"{HASH_PREFIX}\""))?;
    Ok(digest)
}

/// A fresh random key: 192 bits from the OS generator.
pub fn new_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{KEY_PREFIX}{}", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(secrets: &[(&str, &str)]) -> KeyTable {
        let mut t = KeyTable::default();
        for (name, secret) in secrets {
            let digest = parse_hash(&hash_key(secret)).unwrap();
            t.insert(KeyEntry::new(name, digest, None, Vec::new()));
        }
        t
    }

    #[test]
    fn finds_by_secret_only() {
        let t = table(&[("a", "secret-a"), ("b", "secret-b")]);
        assert_eq!(&*t.find(b"secret-b").unwrap().name, "b");
        assert!(t.find(b"secret-c").is_none());
        assert!(t.find(b"").is_none());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn rotated_and_expiring_hashes() {
        let mut entry = KeyEntry::new("k", parse_hash(&hash_key("new")).unwrap(), None, Vec::new());
        entry.add_hash(parse_hash(&hash_key("old")).unwrap(), Some(1_000));
        entry.expires_at = Some(2_000);
        let mut t = KeyTable::default();
        t.insert(entry);
        let at = |secret: &str, now: u64| match t.find_digest(&digest(secret.as_bytes()), || now) {
            Some(Found::Key(e)) => Some(e.name.to_string()),
            Some(Found::Expired) => Some("expired".into()),
            None => None,
        };
        assert_eq!(at("old", 999).as_deref(), Some("k"));
        assert_eq!(at("old", 1_000).as_deref(), Some("expired"));
        assert_eq!(at("new", 1_999).as_deref(), Some("k"));
        assert_eq!(at("new", 2_000).as_deref(), Some("expired"));
        assert_eq!(at("other", 0), None);
        assert_eq!(t.named("k").unwrap().hash_count(), 2);
    }

    #[test]
    fn hash_format_round_trips() {
        // sha256("test"), the example digest of CONTRACT.md.
        assert_eq!(
            hash_key("test"),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert!(parse_hash("md5:abc").is_err());
        assert!(parse_hash("sha256:zz").is_err());
    }

    #[test]
    fn new_keys_are_distinct_and_prefixed() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("sk-sira-") && a.len() == 8 + 48);
    }

    #[test]
    fn model_allow_list_uses_globs() {
        let e = KeyEntry::new(
            "k",
            [0; 32],
            Some(vec![Glob::new("gpt-4o"), Glob::new("openai/*")]),
            Vec::new(),
        );
        assert!(e.allows("gpt-4o"));
        assert!(e.allows("openai/o3"));
        assert!(!e.allows("gpt-4o-mini"));
        assert!(!e.allows("sonnet"));
    }
}
