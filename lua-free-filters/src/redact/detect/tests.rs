use super::*;

fn all() -> Detector {
    Detector::new(Pattern::all_builtins()).unwrap()
}

fn labels(text: &str) -> Vec<(String, String)> {
    let d = all();
    d.find(text)
        .into_iter()
        .map(|f| {
            (
                d.label(f.pattern).0.clone(),
                text[f.start..f.end].to_owned(),
            )
        })
        .collect()
}

#[test]
fn builtins_find_what_they_name_and_skip_look_alikes() {
    let text = "mail jane.doe+x@mail.example.co.uk, call +44 20 7946 0958 or (555) 123-4567, \
                or 555-123-4567 or 020 7946 0958, not 12.345.678 nor 10 000 000 nor v1.2.3, \
                card 4111 1111 1111 1111 (not 4111111111111112), iban DE89 3704 0044 0532 0130 00 \
                (not DE89370400440532013001), hosts 192.168.10.20 and 2001:db8::8a2e:370:7334, \
                at 12:30:45 on 2026-12-05, key sk-proj-abcdefghijklmnopqrstuvwxyz012345 and AKIAIOSFODNN7EXAMPLE";
    let found = labels(text);
    let want = [
        ("EMAIL", "jane.doe+x@mail.example.co.uk"),
        ("PHONE", "+44 20 7946 0958"),
        ("PHONE", "(555) 123-4567"),
        ("PHONE", "555-123-4567"),
        ("PHONE", "020 7946 0958"),
        ("CARD", "4111 1111 1111 1111"),
        ("IBAN", "DE89 3704 0044 0532 0130 00"),
        ("IP", "192.168.10.20"),
        ("IP", "2001:db8::8a2e:370:7334"),
        ("SECRET", "sk-proj-abcdefghijklmnopqrstuvwxyz012345"),
        ("SECRET", "AKIAIOSFODNN7EXAMPLE"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(l, v)| (l.to_string(), v.to_string()))
        .collect();
    assert_eq!(found, want);
}

#[test]
fn a_value_that_fails_its_check_with_a_neighbour_is_found_without_it() {
    assert_eq!(
        labels("pay 4111 1111 1111 1111 05 27 or DE89370400440532013000 EUR"),
        [
            ("CARD".into(), "4111 1111 1111 1111".into()),
            ("IBAN".into(), "DE89370400440532013000".into())
        ]
    );
}

#[test]
fn a_checked_prefix_of_a_longer_run_is_no_value() {
    // Fourteen digits fail Luhn; their first thirteen pass, but a digit follows them, so
    // they are not a number of their own (found in a stream cut after the fourteenth).
    let run = "6".repeat(14);
    assert!(labels(&format!("\u{3}{run}")).is_empty());
    assert!(labels(&format!("x {run}6666 y")).is_empty());
}

#[test]
fn code_is_not_an_address() {
    assert!(labels("std::vector<int> v; Vec::new(); a::b; x[1::2]; 12:30:45").is_empty());
    assert_eq!(labels("fe80::1 and 2001:db8::1")[0].1, "fe80::1");
}

#[test]
fn a_jwt_is_one_value() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
    assert_eq!(
        labels(&format!("token {jwt} end")),
        [("JWT".into(), jwt.into())]
    );
}

#[test]
fn a_tail_is_held_only_where_a_value_could_continue() {
    let d = Detector::new(Pattern::builtin("email").unwrap()).unwrap();
    let mut cache = d.cache();
    // Ends in a word: it could be an address's local part.
    assert_eq!(d.hold_from("write to jane", &mut cache), 9);
    // Ends in a space: nothing could continue.
    assert_eq!(d.hold_from("write to ", &mut cache), 9);
    assert_eq!(d.hold_from("write to jane@exa", &mut cache), 9);
    let cards = Detector::new(Pattern::builtin("credit-card").unwrap()).unwrap();
    let mut cache = cards.cache();
    assert_eq!(cards.hold_from("hello world", &mut cache), 11);
    assert_eq!(cards.hold_from("pay 4111 11", &mut cache), 4);
}

#[test]
fn bad_patterns_fail_with_their_text() {
    let err = Detector::new(vec![Pattern::custom("x", "(unclosed")]).unwrap_err();
    assert!(err.to_string().contains("(unclosed"), "{err}");
}

/// The rule [`Detector::find_from`] keeps for the built-ins, written the slow way: each
/// pattern's leftmost values (its longest passing match at each start: for the built-ins
/// the leftmost-first match is the longest), the leftmost of all taken, the search going
/// on after it.
fn reference(d: &Detector, text: &str) -> Vec<Found> {
    let value_of = |pattern: usize, from: usize| -> Option<Found> {
        let Each { whole, check, .. } = &d.each[pattern];
        (from..text.len())
            .filter(|&start| text.is_char_boundary(start))
            .find_map(|start| {
                let m = whole.search(&Input::new(text).range(start..).anchored(Anchored::Yes))?;
                (start + 1..=m.end())
                    .rev()
                    .filter(|&end| text.is_char_boundary(end))
                    .find(|&end| {
                        matches_exactly(whole, text, start, end) && check(&text[start..end])
                    })
                    .map(|end| Found {
                        start,
                        end,
                        pattern,
                    })
            })
    };
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(best) = (0..d.each.len())
        .filter_map(|p| value_of(p, at))
        .min_by_key(|f| (f.start, std::cmp::Reverse(f.end), f.pattern))
    {
        found.push(best);
        at = best.end;
    }
    found
}

/// Pieces values are made of, and look-alikes, for texts strung together at random.
const VALUE_PIECES: &[&str] = &[
    "4111",
    " 1111",
    "1",
    " ",
    "-",
    ".",
    "@",
    "a",
    "jane",
    ".co",
    "+44",
    " 20 ",
    "(555) ",
    "DE89",
    " 3704",
    "192.168.",
    "::",
    "2001:db8:",
    "sk-",
    "abcdefghij",
    "AKIA",
    "eyJhbGci",
    "x",
    "é",
    "_",
];

/// A repeatable stream of pseudo-random numbers for the randomised comparisons.
fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

#[test]
fn the_search_finds_the_leftmost_longest_checked_values() {
    let d = all();
    let pieces: Vec<&str> = VALUE_PIECES
        .iter()
        .copied()
        .chain([
            "-1111",
            "0",
            "9",
            "123-4567",
            "0044 ",
            "10.",
            "IOSFODNN7EXAMPLE",
        ])
        .collect();
    let mut next = xorshift(0x2545_f491_4f6c_dd1d_u64);
    for _ in 0..3000 {
        let len = 1 + (next() % 24) as usize;
        let text: String = (0..len)
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        assert_eq!(d.find(&text), reference(&d, &text), "{text:?}");
    }
}

#[test]
fn values_right_after_values_are_found_whatever_the_counts_say() {
    // After a value, a pattern is searched again only if what is left meets its needs:
    // the count must take in every byte after the value, up to its very first.
    for (text, want) in [
        ("a@b.co,c@d.co", vec!["a@b.co", "c@d.co"]),
        ("a@b.co c@d.co x", vec!["a@b.co", "c@d.co"]),
        (
            "4111 1111 1111 1111,4111111111111111",
            vec!["4111 1111 1111 1111", "4111111111111111"],
        ),
        (
            "+44 20 7946 0958,+44 20 7946 0959",
            vec!["+44 20 7946 0958", "+44 20 7946 0959"],
        ),
    ] {
        let d = all();
        let found = d.find(text);
        assert_eq!(found, reference(&d, text), "{text}");
        let values: Vec<&str> = found.iter().map(|f| &text[f.start..f.end]).collect();
        assert_eq!(values, want, "{text}");
    }
}

#[test]
fn a_tie_at_the_longest_end_goes_to_the_earlier_pattern() {
    // Both match all of `aaa`; the first listed wins, whichever order they come in.
    for (patterns, want) in [(["[a-z]+", "a+"], 0), (["a+", "[a-z]+"], 0)] {
        let d = Detector::new(patterns.iter().map(|p| Pattern::custom("x", p)).collect()).unwrap();
        let found = d.find("aaa");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].end, found[0].pattern), (3, want));
    }
}

/// The tail computed the slow way: the expressions run forward, anchored, from every start
/// in the window; the earliest from which the text can still become a value — some next
/// byte keeps the automaton alive, or the text is one already.
fn forward_hold(dfa: &DFA, cache: &mut Cache, text: &str, from: usize, hold: usize) -> usize {
    let window = from.max(text.len().saturating_sub(hold));
    let alive = |start: usize, cache: &mut Cache| {
        let input = Input::new(text).range(start..).anchored(Anchored::Yes);
        let Ok(mut state) = dfa.start_state_forward(cache, &input) else {
            return true;
        };
        for &byte in &text.as_bytes()[start..] {
            if state.is_dead() {
                return false;
            }
            if state.is_quit() {
                return true;
            }
            state = dfa.next_state(cache, state, byte).unwrap();
        }
        if state.is_dead() {
            return false;
        }
        // A match state may only be reporting a value that ended a byte before: alive
        // when some byte goes on, or the text itself matches.
        (0..=255u8).any(|b| !dfa.next_state(cache, state, b).unwrap().is_dead())
            || dfa.next_eoi_state(cache, state).unwrap().is_match()
    };
    (window..text.len())
        .filter(|&i| text.is_char_boundary(i))
        .find(|&start| alive(start, cache))
        .unwrap_or(text.len())
}

#[test]
fn the_backward_pass_holds_what_a_run_from_every_start_holds() {
    let customs = [
        r"id:[a-z]+?",
        r"(?-u:\b)EMP-[0-9]{6}(?-u:\b)",
        r"(?:foo|foobar)baz",
        r"x(?:ab)*y",
        r"ünï[ç]ode",
    ];
    let mut sources: Vec<String> = Pattern::all_builtins()
        .into_iter()
        .map(|p| p.regex)
        .collect();
    sources.extend(customs.iter().map(|c| (*c).to_owned()));
    let mut patterns = Pattern::all_builtins();
    patterns.extend(customs.iter().map(|c| Pattern::custom("c", c)));
    let d = Detector::new(patterns).unwrap();
    let forward = DFA::builder()
        .configure(
            DFA::config()
                .unicode_word_boundary(true)
                .match_kind(regex_automata::MatchKind::All),
        )
        .build_many(&sources)
        .unwrap();
    let mut forward_cache = forward.create_cache();
    let pieces: Vec<&str> = VALUE_PIECES
        .iter()
        .copied()
        .chain([
            "id:", "EMP-", "123456", "foo", "bar", "baz", "ab", "y", "ünï", "ç",
        ])
        .collect();
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15_u64);
    let mut cache = d.cache();
    let mut held = 0;
    for _ in 0..3000 {
        let len = 1 + (next() % 16) as usize;
        let text: String = (0..len)
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        let from = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .nth((next() % 3) as usize)
            .unwrap_or(0);
        let got = d.hold_after(&text, from, &mut cache);
        let want = forward_hold(&forward, &mut forward_cache, &text, from, d.hold());
        assert_eq!(got, want, "{text:?} from {from}");
        held += usize::from(got < text.len());
    }
    // Most texts end where a value could go on, some do not: both sides are compared.
    assert!((500..2900).contains(&held), "{held} of 3000 held");
    // A Unicode `\b` by non-ASCII text makes the automaton give up: the window is held.
    let unicode = Detector::new(vec![Pattern::custom("c", r"\bEMP-[0-9]{6}\b")]).unwrap();
    let mut cache = unicode.cache();
    assert_eq!(unicode.hold_from("né EMP-12", &mut cache), 0);
    assert_eq!(unicode.hold_from("ne EMP-12", &mut cache), 3);
}

#[test]
fn what_a_pattern_needs_is_in_its_shortest_values() {
    let shortest = [
        "eyJabcd.eyJabcd.",
        "a@b.cc",
        "DE00AAAAAAAAAAA",
        "1234567890123",
        "1.2.3.4",
        "::",
        "+1234567",
        "(12)345 678",
        "212 555 1234",
        "01 234 567",
        "0123456789",
        "[A_1]",
    ];
    let mut patterns = Pattern::all_builtins();
    patterns.push(Pattern::placeholder());
    let mut matched = 0;
    for p in &patterns {
        let regex = Regex::new(&p.regex).unwrap();
        for value in shortest.iter().filter(|v| regex.find(v).is_some()) {
            let found = regex.find(value).unwrap().as_str();
            assert!(
                needs::any_met(&[p.needs], found.as_bytes()),
                "{} matches {found:?} without what it needs ({:?})",
                p.regex,
                p.needs
            );
            matched += 1;
        }
    }
    assert!(matched >= shortest.len(), "only {matched} matched");
}

/// Config reloads build detectors on a blocking thread's 2 MiB stack: an operator's long
/// literal or deeply nested expression must not overflow it, nor fail to build.
#[test]
fn long_and_nested_patterns_build_on_a_small_stack_and_still_hold() {
    let nested = (0..30).fold("[a-z]{1,2000}".to_owned(), |p, _| format!("(x{p})"));
    let long = "a".repeat(20_000);
    let starts = ["a".repeat(40), format!("{}abc", "x".repeat(30))];
    for (pattern, value_start) in [long, nested].into_iter().zip(starts) {
        let held = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let d = Detector::new(vec![Pattern::custom("x", &pattern)]).unwrap();
                let mut cache = d.cache();
                let start = "some text then ".len();
                let text = format!("some text then {value_start}");
                (d.hold_from(&text, &mut cache), start)
            })
            .unwrap()
            .join()
            .unwrap();
        // The start of a value is held (an over-approximation may hold more).
        assert!(held.0 <= held.1, "{held:?}");
    }
}

#[test]
fn more_patterns_than_are_kept_on_the_stack_are_all_searched() {
    let mut patterns = Pattern::all_builtins();
    patterns.push(Pattern::custom("ticket", r"TICKET-[0-9]+"));
    patterns.push(Pattern::custom("badge", r"BADGE-[0-9]+"));
    assert!(patterns.len() > FEW);
    let d = Detector::new(patterns).unwrap();
    let text = "x TICKET-12 y jane@example.com BADGE-7 z TICKET-3";
    let found: Vec<(&str, &str)> = d
        .find(text)
        .into_iter()
        .map(|f| (d.label(f.pattern).0.as_str(), &text[f.start..f.end]))
        .collect();
    assert_eq!(
        found,
        [
            ("TICKET", "TICKET-12"),
            ("EMAIL", "jane@example.com"),
            ("BADGE", "BADGE-7"),
            ("TICKET", "TICKET-3"),
        ]
    );
}
