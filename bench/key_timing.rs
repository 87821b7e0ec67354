//! Can the time sira takes to refuse a key tell an attacker how close the key came?
//!
//! `cargo bench --bench key_timing` measures the whole request-path check (header parsing,
//! SHA-256, table lookup) for two classes of wrong key against a table of 1,000 keys: near
//! misses (a real key with its last character changed) and far misses (nothing in common),
//! 512 keys of each, one drawn at random for every batch.
//! The classes are interleaved at random, batch by batch, so that drift on a shared machine
//! falls on both alike, and compared with Welch's t-test as dudect does (Reparaz et al.,
//! 2017): |t| under 4.5 over hundreds of thousands of batches is no detectable difference.
//! It exits non-zero otherwise. Real keys (hits) are timed too, for the record: a hit does
//! more work (the model allow-list) and is not a secret.

// A report printed for a person, as criterion's are.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use http::{HeaderMap, HeaderValue};
use sira::auth::{authenticate, hash_key, parse_hash, KeyEntry, KeyTable};

const KEYS: usize = 1_000;
const BATCHES: usize = 400_000;
const PER_BATCH: usize = 32;
const KEY_VARIANTS: usize = 512;
/// dudect's threshold for "a leak is likely".
const T_LIMIT: f64 = 4.5;

fn table() -> KeyTable {
    let mut table = KeyTable::default();
    for i in 0..KEYS {
        let Ok(digest) = parse_hash(&hash_key(&format!("sk-sira-timing-{i:06}"))) else {
            continue;
        };
        table.insert(KeyEntry::new(&format!("key-{i}"), digest, None, Vec::new()));
    }
    table
}

fn headers(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {key}")) {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    headers
}

/// Running mean and variance (Welford).
#[derive(Default)]
struct Stats {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Stats {
    fn add(&mut self, x: f64) {
        self.n += 1.0;
        let d = x - self.mean;
        self.mean += d / self.n;
        self.m2 += d * (x - self.mean);
    }

    fn var(&self) -> f64 {
        self.m2 / (self.n - 1.0)
    }
}

fn welch_t(a: &Stats, b: &Stats) -> f64 {
    (a.mean - b.mean) / (a.var() / a.n + b.var() / b.n).sqrt()
}

/// A small xorshift: the class order must not be predictable by the branch predictor, and
/// the bench takes no dependency for it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() {
    // `cargo bench` passes `--bench`. Without it this is `cargo test --all-targets` building
    // the bench in the test profile: a short run that checks the harness works, judged by
    // nothing (timing is measured here, never asserted by tests).
    let measuring = std::env::args().any(|a| a == "--bench");
    let table = table();
    // No issued keys: the config table is what is timed.
    let empty = KeyTable::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Many keys per class, one drawn at random for each batch: a single key per class would
    // measure that key's place in the table's hash map (a probe that happens to meet a
    // stored digest's tag costs one compare more), not its class.
    let mut near = Vec::with_capacity(KEY_VARIANTS);
    let mut far = Vec::with_capacity(KEY_VARIANTS);
    for _ in 0..KEY_VARIANTS {
        let real = format!("sk-sira-timing-{:06}", rng.next() % KEYS as u64);
        // The last digit turned into a letter: one character from a real key.
        let letter = char::from(b'a' + (rng.next() % 26) as u8);
        near.push(headers(&format!("{}{letter}", &real[..real.len() - 1])));
        let random: String = (0..real.len())
            .map(|_| char::from(b'a' + (rng.next() % 26) as u8))
            .collect();
        far.push(headers(&random));
    }
    let hits: Vec<HeaderMap> = (0..KEY_VARIANTS)
        .map(|_| headers(&format!("sk-sira-timing-{:06}", rng.next() % KEYS as u64)))
        .collect();
    let classes = [("near miss", near), ("far miss", far), ("hit", hits)];
    let mut stats: [Stats; 3] = Default::default();
    // Warm caches and the allocator.
    for (_, keys) in &classes {
        for h in keys {
            for _ in 0..20 {
                black_box(authenticate(&table, &empty, black_box(h), None, None).is_ok());
            }
        }
    }
    let batches = if measuring { BATCHES } else { BATCHES / 100 };
    for _ in 0..batches {
        let class = (rng.next() % 3) as usize;
        let keys = &classes[class].1;
        let h = &keys[(rng.next() % keys.len() as u64) as usize];
        let started = Instant::now();
        for _ in 0..PER_BATCH {
            black_box(authenticate(&table, &empty, black_box(h), None, None).is_ok());
        }
        stats[class].add(started.elapsed().as_nanos() as f64 / PER_BATCH as f64);
    }
    for (i, (name, _)) in classes.iter().enumerate() {
        println!(
            "key_timing {name:>9}: {:7.1} ns mean over {} batches of {PER_BATCH}",
            stats[i].mean, stats[i].n
        );
    }
    let t = welch_t(&stats[0], &stats[1]);
    let verdict = if t.abs() < T_LIMIT {
        "no detectable difference"
    } else {
        "DIFFERENT"
    };
    println!("key_timing near vs far miss: Welch t = {t:+.2} (|t| < {T_LIMIT}: {verdict})");
    if measuring && t.abs() >= T_LIMIT {
        std::process::exit(1);
    }
}
