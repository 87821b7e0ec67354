//! Finding sensitive values in text: the built-in detectors (each a bounded regular
//! expression, several with a checksum that weeds out look-alikes) and operators' own
//! expressions, compiled once per config snapshot.
//!
//! Two questions are asked of a text. [`Detector::find`]: which values does it hold, without
//! overlaps, leftmost first, longest on a tie, the more specific detector on a full tie (an
//! IPv4 address is not a phone number). [`Detector::hold_from`]: from where could a value
//! still be growing at the end of the text — the stream side keeps that tail back until the
//! next event says. The second is one backward pass from the end of the text: the
//! expressions are rewritten to match every prefix of their values (see [`prefixes`]), and
//! the earliest start from which the rest of the text is such a prefix is the tail.

use std::net::Ipv6Addr;

use regex::Regex;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::nfa::thompson;
use regex_automata::MatchKind;
use regex_automata::{Anchored, Input};
use regex_syntax::hir::Look;

use crate::FilterError;
use needs::Needs;
use prefixes::prefixes;
use scan::Scan;

/// How far back a stream may hold text for a value that might continue: the longest
/// value a detector can match, but never more than this (a custom expression without a
/// bound is matched within it when split across events, and whole within one).
pub const MAX_HOLD: usize = 8 << 10;

/// What a value is, in the placeholder or hash that replaces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label(pub String);

/// A check of a found value beyond its expression (a checksum, a parse).
type Check = fn(&str) -> bool;

/// A built-in detector: its config name, label, expression and check.
struct Builtin {
    name: &'static str,
    label: &'static str,
    regex: &'static str,
    check: Check,
    /// What a text must hold for `regex` to match in it.
    needs: Needs,
    /// The same search written by hand, where there is one.
    scan: Option<Scan>,
}

/// Most specific first: on a full tie the earlier one wins.
const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "jwt",
        label: "JWT",
        regex: r"eyJ[A-Za-z0-9_-]{4,1500}\.eyJ[A-Za-z0-9_-]{4,3000}\.[A-Za-z0-9_-]{0,700}",
        check: always,
        needs: Needs::Literal(b"eyJ"),
        scan: None,
    },
    Builtin {
        name: "api-key",
        label: "SECRET",
        regex: r"(?:sk-[A-Za-z0-9_-]{20,200}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}|xox[abprs]-[A-Za-z0-9-]{10,100}|AIza[0-9A-Za-z_-]{35})",
        check: always,
        needs: Needs::Anything,
        scan: None,
    },
    Builtin {
        name: "email",
        label: "EMAIL",
        regex: r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,6}\.[A-Za-z]{2,24}",
        check: always,
        needs: Needs::Byte(b'@', 1),
        scan: Some(Scan::Email),
    },
    Builtin {
        name: "iban",
        label: "IBAN",
        regex: r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)",
        check: iban_checksum,
        needs: Needs::Digits(2),
        scan: None,
    },
    Builtin {
        name: "credit-card",
        label: "CARD",
        regex: r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)",
        check: luhn,
        needs: Needs::Digits(13),
        scan: Some(Scan::Card),
    },
    Builtin {
        name: "ipv4",
        label: "IP",
        regex: r"(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?-u:\b)",
        check: always,
        needs: Needs::Byte(b'.', 3),
        scan: None,
    },
    Builtin {
        name: "ipv6",
        label: "IP",
        regex: r"(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}",
        check: ipv6,
        needs: Needs::Byte(b':', 2),
        scan: None,
    },
    Builtin {
        name: "phone",
        label: "PHONE",
        // E.164; a parenthesised area code; North American 3-3-4; a national number with
        // its trunk 0, grouped or not. Not any run of grouped digits: amounts, ids and
        // dotted versions are not phone numbers.
        regex: r"(?:\+[1-9](?:[ .-]?[0-9]){6,14}|\([0-9]{2,4}\)[ .-]?[0-9]{3,4}[ .-]?[0-9]{3,4}|(?-u:\b)[2-9][0-9]{2}[ .-][0-9]{3}[ .-][0-9]{4}|(?-u:\b)0[1-9][0-9]{0,3}[ -][0-9]{3,4}[ -]?[0-9]{3,4}|(?-u:\b)0[1-9][0-9]{8,10})(?-u:\b)",
        check: phone_digits,
        needs: Needs::Digits(7),
        scan: Some(Scan::Phone),
    },
];

/// The names `patterns:` accepts, for error messages.
pub fn builtin_names() -> String {
    let mut names: Vec<&str> = BUILTINS.iter().map(|b| b.name).collect();
    names.push("ip");
    names.join(", ")
}

/// One detector as configured.
pub struct Pattern {
    pub label: Label,
    pub regex: String,
    check: Check,
    needs: Needs,
    scan: Option<Scan>,
}

impl Pattern {
    /// A built-in by its config name (`ip` is both address families).
    pub fn builtin(name: &str) -> Option<Vec<Pattern>> {
        let wanted: Vec<&Builtin> = BUILTINS
            .iter()
            .filter(|b| b.name == name || (name == "ip" && b.name.starts_with("ip")))
            .collect();
        (!wanted.is_empty()).then(|| wanted.into_iter().map(Pattern::of).collect())
    }

    /// Every built-in.
    pub fn all_builtins() -> Vec<Pattern> {
        BUILTINS.iter().map(Pattern::of).collect()
    }

    fn of(builtin: &Builtin) -> Pattern {
        Pattern {
            label: Label(builtin.label.to_owned()),
            regex: builtin.regex.to_owned(),
            check: builtin.check,
            needs: builtin.needs,
            scan: builtin.scan,
        }
    }

    /// An operator's expression, labelled by its name.
    pub fn custom(name: &str, regex: &str) -> Pattern {
        let label = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        Pattern {
            label: Label(label),
            regex: regex.to_owned(),
            check: always,
            needs: Needs::Anything,
            scan: None,
        }
    }

    /// The placeholders this filter writes (`[EMAIL_3]`), found again in answers to restore.
    pub fn placeholder() -> Pattern {
        Pattern {
            label: Label(String::new()),
            regex: r"\[[A-Z0-9_]{1,40}_[0-9]{1,6}\]".to_owned(),
            check: always,
            needs: Needs::Byte(b']', 1),
            scan: Some(Scan::Placeholder),
        }
    }
}

/// A text [`Detector::admit`] let through, and its counts when it was counted.
#[derive(Debug)]
pub struct Admitted(Option<needs::Counts>);

/// Patterns whose next values [`Detector::find_admitted`] keeps on the stack.
const FEW: usize = 8;

/// A value found in a text: its byte range and which pattern found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub pattern: usize,
}

/// Whether `whole` matches exactly `text[start..end]`, its look-arounds (`\b`) seeing the
/// text around the span: `6666666666666` is no card where a `6` follows it.
fn matches_exactly(
    whole: &regex_automata::meta::Regex,
    text: &str,
    start: usize,
    end: usize,
) -> bool {
    let input = Input::new(text).range(start..end).anchored(Anchored::Yes);
    // All-matches semantics from an anchored start report the longest match in the span.
    whole.search(&input).is_some_and(|m| m.end() == end)
}

/// A compiled set of patterns.
pub struct Detector {
    /// What a text must hold for any of them to match: counted before any search (`None`
    /// when one of them could match anything: then there is nothing to count).
    gate: Option<needs::Gate>,
    /// Each pattern's own need, asked again of what follows a value taken.
    needs: Vec<Needs>,
    /// Any of them, for the common answer: nothing here. `None` when every pattern is
    /// searched by hand: each search costs less than the set's.
    any: Option<regex::RegexSet>,
    /// Each pattern, and the same for matching exactly a span of the text in its context
    /// (to try a shorter value when the longest one fails its check).
    each: Vec<Each>,
    labels: Vec<Label>,
    /// Every prefix of every pattern's values, as one lazy DFA run backwards from the end of
    /// a stream's text.
    tail: DFA,
    /// Its caches, kept between streams: a cache holds the DFA states determinized so far,
    /// which a new cache would build again for every stream.
    caches: std::sync::Mutex<Vec<Cache>>,
    hold: usize,
    /// Whether every pattern judges a value by its neighbours alone (`\b` at most, no `^` or
    /// `$`): then a value inside a JSON string matches the same in the raw bytes around
    /// it, the quote standing for the string's edge.
    edge_blind: bool,
}

/// One pattern, compiled.
struct Each {
    regex: Regex,
    /// The same for matching exactly a span of the text in its context (to try a shorter
    /// value when the longest one fails its check).
    whole: regex_automata::meta::Regex,
    check: Check,
    /// `regex`'s search written by hand, where there is one.
    scan: Option<Scan>,
}

impl Each {
    /// The first match at `at` or later, before its check.
    fn find_at(&self, text: &str, at: usize) -> Option<(usize, usize)> {
        match self.scan {
            Some(scan) => scan.find_at(text.as_bytes(), at),
            None => self.regex.find_at(text, at).map(|m| (m.start(), m.end())),
        }
    }
}

/// The automaton [`Detector::hold_after`] runs backwards from the end of a text.
fn tail_automaton(prefixes: &[regex_syntax::hir::Hir]) -> Result<DFA, Box<dyn std::error::Error>> {
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .reverse(true)
                .which_captures(thompson::WhichCaptures::None)
                // Only empty matches could split a character; the hold is rounded to one.
                .utf8(false)
                .nfa_size_limit(Some(SIZE_LIMIT)),
        )
        .build_many_from_hir(prefixes)?;
    Ok(DFA::builder()
        .configure(
            DFA::config()
                // Every prefix, not the first found: the earliest start is wanted.
                .match_kind(MatchKind::All)
                // Operators' `\b` is Unicode-aware: the DFA gives up on non-ASCII text next
                // to one, and a give-up holds the whole window.
                .unicode_word_boundary(true)
                .cache_capacity(1 << 20)
                // A large automaton may not fit: its searches give up, which holds the
                // window, instead of failing the config.
                .skip_cache_capacity_check(true),
        )
        .build_from_nfa(nfa)?)
}

/// Caches kept for the next streams, at most (each holds at most its DFA's capacity).
const KEPT_CACHES: usize = 8;

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("labels", &self.labels)
            .field("hold", &self.hold)
            .finish()
    }
}

/// Compiled expressions are bounded like every other buffer: a pathological pattern fails
/// the config instead of the process.
const SIZE_LIMIT: usize = 16 << 20;

impl Detector {
    pub fn new(patterns: Vec<Pattern>) -> Result<Detector, FilterError> {
        let invalid = |regex: &str, e: &dyn std::fmt::Display| {
            FilterError::InvalidOption(format!("pattern {regex:?} does not compile: {e}"))
        };
        let mut each = Vec::with_capacity(patterns.len());
        let mut hold = 0usize;
        let mut edge_blind = true;
        let mut prefix_hirs = Vec::with_capacity(patterns.len());
        for p in &patterns {
            let regex = regex::RegexBuilder::new(&p.regex)
                .size_limit(SIZE_LIMIT)
                .build()
                .map_err(|e| invalid(&p.regex, &e))?;
            let hir = regex_syntax::Parser::new()
                .parse(&p.regex)
                .map_err(|e| invalid(&p.regex, &e))?;
            let longest = hir.properties().maximum_len().unwrap_or(MAX_HOLD);
            edge_blind &= hir.properties().look_set().iter().all(|look| {
                !matches!(
                    look,
                    Look::Start
                        | Look::End
                        | Look::StartLF
                        | Look::EndLF
                        | Look::StartCRLF
                        | Look::EndCRLF
                )
            });
            prefix_hirs.push(prefixes(&hir));
            hold = hold.max(longest.min(MAX_HOLD));
            // Longest-match semantics, run anchored on a span of the text: a shorter value is
            // judged with its real neighbours (`\b` sees the digit after a cut-short card).
            let whole = regex_automata::meta::Regex::builder()
                .configure(
                    regex_automata::meta::Regex::config()
                        .match_kind(regex_automata::MatchKind::All)
                        .nfa_size_limit(Some(SIZE_LIMIT)),
                )
                .build(&p.regex)
                .map_err(|e| invalid(&p.regex, &e))?;
            each.push(Each {
                regex,
                whole,
                check: p.check,
                scan: p.scan,
            });
        }
        // The set only where some pattern has no search written by hand.
        let any = if patterns.iter().any(|p| p.scan.is_none()) {
            let sources: Vec<&str> = patterns.iter().map(|p| p.regex.as_str()).collect();
            let set = regex::RegexSetBuilder::new(&sources)
                .size_limit(SIZE_LIMIT)
                .build()
                .map_err(|e| invalid("(all patterns)", &e))?;
            Some(set)
        } else {
            None
        };
        // Prefixes too large for an automaton (an operator's expression of many thousand
        // states) fall back to "anything": the whole window is held, which is bounded.
        let anything = || prefixes::anything(patterns.len());
        let tail = tail_automaton(&prefix_hirs)
            .or_else(|_| tail_automaton(&anything()))
            .map_err(|e| invalid("(all patterns' prefixes)", &e))?;
        let needs: Vec<Needs> = patterns.iter().map(|p| p.needs).collect();
        Ok(Detector {
            gate: (!needs.contains(&Needs::Anything)).then(|| needs::Gate::new(&needs)),
            needs,
            any,
            each,
            labels: patterns.into_iter().map(|p| p.label).collect(),
            tail,
            caches: std::sync::Mutex::new(Vec::new()),
            hold,
            edge_blind,
        })
    }

    pub fn label(&self, pattern: usize) -> &Label {
        // `pattern` comes from `find`, which only yields indexes of `each` (same length).
        &self.labels[pattern]
    }

    /// The values in `text`: validated, without overlaps, in order.
    pub fn find(&self, text: &str) -> Vec<Found> {
        self.find_from(text, 0)
    }

    /// The values of `text` that start at `from` or later, judged with what comes before
    /// `from` as their context (a value must start at a word boundary: `4111…` is no card
    /// inside `x4111…`).
    pub fn find_from(&self, text: &str, from: usize) -> Vec<Found> {
        // Most texts hold nothing: counting a short text's digits and signs, or one search
        // with the set's prefilter, says so. Then each pattern looks for its first value: a
        // pattern that has none costs one forward scan, less than asking the set which
        // patterns match (an overlapping scan of the text).
        match self.admit(&text.as_bytes()[from..]) {
            Some(admitted) => self.find_admitted(text, from, admitted),
            None => Vec::new(),
        }
    }

    /// Whether `text` (its bytes) may hold a value, by its counts alone (before any
    /// search); what they were, for [`Detector::find_admitted`] not to count again.
    pub fn admit(&self, text: &[u8]) -> Option<Admitted> {
        let Some(gate) = &self.gate else {
            return Some(Admitted(None));
        };
        match gate.count(text) {
            Some(counts) => gate.admits(&counts, text).then_some(Admitted(Some(counts))),
            None => Some(Admitted(None)),
        }
    }

    /// [`Detector::find_from`] for a text whose `text[from..]` was admitted.
    pub fn find_admitted(&self, text: &str, from: usize, admitted: Admitted) -> Vec<Found> {
        let bytes = text.as_bytes();
        let counts = admitted.0;
        if self
            .any
            .as_ref()
            .is_some_and(|any| !any.is_match_at(text, from))
        {
            return Vec::new();
        }
        // Leftmost value first (the longest on a tie, then the more specific pattern); the
        // search goes on after it. Each pattern's next value is looked for again only when
        // the one it had overlaps what was taken, and only when what follows still meets
        // the pattern's need: a candidate that loses never hides a value of its own pattern
        // further on.
        // Each pattern's next value, on the stack for the usual few patterns.
        let mut few = [None; FEW];
        let mut many = Vec::new();
        let next: &mut [Option<Found>] = if self.each.len() <= FEW {
            &mut few[..self.each.len()]
        } else {
            many.resize(self.each.len(), None);
            &mut many
        };
        for (i, slot) in next.iter_mut().enumerate() {
            let may_match = counts
                .as_ref()
                .is_none_or(|c| self.needs[i].met(c, &bytes[from..]));
            if may_match {
                *slot = self.next_value(i, text, from);
            }
        }
        let mut kept = Vec::new();
        loop {
            let mut best: Option<Found> = None;
            for found in next.iter().flatten() {
                let better = best.is_none_or(|b| {
                    (found.start, std::cmp::Reverse(found.end), found.pattern)
                        < (b.start, std::cmp::Reverse(b.end), b.pattern)
                });
                if better {
                    best = Some(*found);
                }
            }
            let Some(best) = best else {
                return kept;
            };
            kept.push(best);
            for slot in next.iter_mut() {
                if let Some(found) = slot.filter(|f| f.start < best.end) {
                    *slot = None;
                    if self.needs[found.pattern].met_in(&bytes[best.end..]) {
                        *slot = self.next_value(found.pattern, text, best.end);
                    }
                }
            }
        }
    }

    /// The first value of `pattern` that starts at `from` or later, judged in its context.
    fn next_value(&self, pattern: usize, text: &str, from: usize) -> Option<Found> {
        let each = &self.each[pattern];
        let mut at = from;
        while at <= text.len() {
            let (start, longest) = each.find_at(text, at)?;
            // The longest match may carry a neighbour (a card number and its expiry date):
            // then the longest shorter value that passes is the value.
            let end = (start + 1..=longest)
                .rev()
                .filter(|&end| text.is_char_boundary(end))
                .find(|&end| {
                    let value = &text[start..end];
                    (end == longest || matches_exactly(&each.whole, text, start, end))
                        && (each.check)(value)
                });
            if let Some(end) = end {
                return Some(Found {
                    start,
                    end,
                    pattern,
                });
            }
            // No value here: one that starts inside this candidate may still be.
            at = text[start..]
                .chars()
                .next()
                .map_or(text.len() + 1, |c| start + c.len_utf8());
        }
        None
    }

    /// Whether `text` holds anything any pattern would match (before checks).
    pub fn any(&self, text: &[u8]) -> bool {
        // Patterns match text; bytes that are not UTF-8 are not text to match.
        std::str::from_utf8(text).is_ok_and(|t| {
            self.admit(text).is_some()
                && match &self.any {
                    Some(any) => any.is_match(t),
                    None => self.each.iter().any(|each| each.find_at(t, 0).is_some()),
                }
        })
    }

    /// Whether a stream's events may be judged in their bytes (see `edge_blind`).
    pub fn reads_raw(&self) -> bool {
        self.edge_blind
    }

    /// The longest tail [`Detector::hold_from`] holds back.
    pub fn hold(&self) -> usize {
        self.hold
    }

    /// A cache for [`Detector::hold_from`], one per stream: one a finished stream gave
    /// back, or a new one.
    pub fn cache(&self) -> Cache {
        let kept = self.caches.lock().map(|mut c| c.pop()).unwrap_or(None);
        kept.unwrap_or_else(|| self.tail.create_cache())
    }

    /// Keeps a stream's cache for the next (up to [`KEPT_CACHES`]).
    pub fn give_back(&self, cache: Cache) {
        if let Ok(mut caches) = self.caches.lock() {
            if caches.len() < KEPT_CACHES {
                caches.push(cache);
            }
        }
    }

    /// The earliest byte (a char boundary) from which a value could start and still be
    /// continuing at the end of `text`; `text.len()` when none could. Only the last
    /// [`MAX_HOLD`]-bounded window is considered.
    pub fn hold_from(&self, text: &str, cache: &mut Cache) -> usize {
        self.hold_after(text, 0, cache)
    }

    /// [`Detector::hold_from`] for starts at `from` (a char boundary) or later, with what
    /// comes before as context.
    pub fn hold_after(&self, text: &str, from: usize, cache: &mut Cache) -> usize {
        let mut window = from.max(text.len().saturating_sub(self.hold));
        while !text.is_char_boundary(window) {
            window += 1;
        }
        // Gave up (non-ASCII text by a Unicode `\b`, or a thrashing cache): the whole
        // window is held, which is bounded.
        let Some(mut start) = self.earliest_prefix(text, window, cache) else {
            return window;
        };
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        start
    }

    /// Anchored at the end, backwards: every start where the rest of the text is a prefix
    /// of a value is a match (the empty prefix at the end included), and the scan runs
    /// until no prefix can grow; the earliest start. (The library's reverse search does
    /// the same with more set-up than a stream event's few bytes are worth.)
    fn earliest_prefix(&self, text: &str, window: usize, cache: &mut Cache) -> Option<usize> {
        let input = Input::new(text).range(window..).anchored(Anchored::Yes);
        let dfa = &self.tail;
        let mut state = dfa.start_state_reverse(cache, &input).ok()?;
        let bytes = text.as_bytes();
        let mut earliest = text.len();
        let mut at = text.len();
        while at > window {
            at -= 1;
            state = dfa.next_state(cache, state, bytes[at]).ok()?;
            // A match state reports the match one byte late: a prefix starting after `at`.
            if state.is_match() {
                earliest = at + 1;
            } else if state.is_dead() {
                return Some(earliest);
            } else if state.is_quit() {
                return None;
            }
        }
        // The byte before the window is the context a start there is judged in.
        state = match window.checked_sub(1) {
            Some(before) => dfa.next_state(cache, state, bytes[before]).ok()?,
            None => dfa.next_eoi_state(cache, state).ok()?,
        };
        if state.is_quit() {
            return None;
        }
        if state.is_match() {
            earliest = window;
        }
        Some(earliest)
    }
}

fn always(_: &str) -> bool {
    true
}

/// Card numbers: 13 to 19 digits passing the Luhn check.
fn luhn(value: &str) -> bool {
    // From the last digit back, every second one doubled; no list of digits is kept (every
    // card found in a request is checked).
    let (mut count, mut sum) = (0u32, 0u32);
    for d in value
        .bytes()
        .rev()
        .filter(u8::is_ascii_digit)
        .map(|b| u32::from(b - b'0'))
    {
        sum += if count % 2 == 1 {
            if d * 2 > 9 {
                d * 2 - 9
            } else {
                d * 2
            }
        } else {
            d
        };
        count += 1;
    }
    (13..=19).contains(&count) && sum.is_multiple_of(10)
}

/// IBANs: ISO 13616's mod-97 check over the rearranged characters.
fn iban_checksum(value: &str) -> bool {
    let compact: Vec<char> = value.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut remainder = 0u32;
    for c in rearranged {
        let n = match c.to_digit(36) {
            Some(n) => n,
            None => return false,
        };
        remainder = if n < 10 {
            (remainder * 10 + n) % 97
        } else {
            (remainder * 100 + n) % 97
        };
    }
    remainder == 1
}

/// IPv6: what the standard library parses, with three groups or more, or two with five hex
/// digits (`fe80::1`): `std::vector`, `Vec::new` and `a::b` in code are not addresses, nor
/// times such as `12:30:45`.
fn ipv6(value: &str) -> bool {
    let groups = value.split(':').filter(|g| !g.is_empty()).count();
    let digits = value.chars().filter(char::is_ascii_hexdigit).count();
    value.parse::<Ipv6Addr>().is_ok() && (groups >= 3 || (groups == 2 && digits >= 5))
}

/// Phone numbers: 7 to 15 digits (E.164's range), and not an ISO date.
fn phone_digits(value: &str) -> bool {
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let date = value.len() == 10
        && value.as_bytes().get(4) == Some(&b'-')
        && value.as_bytes().get(7) == Some(&b'-');
    (7..=15).contains(&digits) && !date
}

mod needs;
mod prefixes;
mod scan;
#[cfg(test)]
mod tests;
