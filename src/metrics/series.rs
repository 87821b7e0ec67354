//! Handles of labelled series, kept per thread. `with_label_values` hashes every label with
//! FNV and takes the vector's lock on each call, nine calls a request on the request path,
//! which asks for the same few series again and again. Here a request's label set is hashed
//! once and finds every handle it needs.

use std::collections::hash_map::Entry;

use ahash::{AHashMap, RandomState};

/// More label sets than this on one thread (a config with thousands of keys and models):
/// the cache starts over rather than grow.
const MAX_SETS: usize = 4096;

/// Handles `T` by their label values `[&str; N]`.
pub struct Series<const N: usize, T> {
    state: RandomState,
    sets: AHashMap<u64, ([Box<str>; N], T)>,
}

impl<const N: usize, T> Default for Series<N, T> {
    fn default() -> Self {
        Series {
            state: RandomState::new(),
            sets: AHashMap::new(),
        }
    }
}

impl<const N: usize, T> Series<N, T> {
    /// The handles of `labels`, made by `make` the first time (or after a collision of
    /// their hash with another set's, which replaces it).
    pub fn get(&mut self, labels: [&str; N], make: impl FnOnce(&[&str; N]) -> T) -> &T {
        let hash = self.state.hash_one(labels);
        if self.sets.len() >= MAX_SETS && !self.sets.contains_key(&hash) {
            self.sets.clear();
        }
        let owned = |labels: &[&str; N]| labels.map(Box::<str>::from);
        match self.sets.entry(hash) {
            Entry::Occupied(entry) => {
                let entry = entry.into_mut();
                if !entry.0.iter().map(|l| &**l).eq(labels) {
                    *entry = (owned(&labels), make(&labels));
                }
                &entry.1
            }
            Entry::Vacant(entry) => &entry.insert((owned(&labels), make(&labels))).1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_label_set_gets_its_own_handles_made_once() {
        let mut series: Series<2, String> = Series::default();
        let mut made = 0;
        for _ in 0..3 {
            for (a, b) in [("m", "p"), ("m", "q"), ("mp", ""), ("", "mp")] {
                let got = series.get([a, b], |l| {
                    made += 1;
                    format!("{}|{}", l[0], l[1])
                });
                assert_eq!(got, &format!("{a}|{b}"));
            }
        }
        assert_eq!(made, 4);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let mut series: Series<1, usize> = Series::default();
        for i in 0..MAX_SETS + 10 {
            let label = i.to_string();
            assert_eq!(*series.get([&label], |_| i), i);
        }
        assert!(series.sets.len() <= MAX_SETS);
    }
}
