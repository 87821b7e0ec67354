//! The prefix language of a pattern, for a stream's held tail: a text that stops where a
//! value may still be going on.

use regex_syntax::hir::{Dot, Hir, HirKind, Literal, Repetition};

/// Items of one sequence (characters of a literal, parts of a concatenation) rewritten one
/// by one; past them the rest of the sequence is "any characters, as many as it has". Each
/// item nests the result one level deeper, and the automaton compiler recurses per level.
const ITEMS: usize = 16;

/// Sequences nested within sequences rewritten; deeper ones become "any characters".
const DEPTH: usize = 16;

/// An expression matching every prefix of what `hir` matches, the empty one and the whole
/// included: where a value may have got to when its text stops.
///
/// A look-around (`\b`) at the very end of a prefix is dropped — what follows it is not
/// known yet — and kept wherever bytes follow it. A sequence nests (`P(ab) = P(a) | a·P(b)`)
/// and a repetition keeps its bound (`P(x{n,m}) = x{0,m-1}·P(x)`), so the result stays
/// within a small multiple of the expression's size. Past [`ITEMS`] items or [`DEPTH`]
/// levels the rest is over-approximated (more text held, never less), so no operator's
/// expression makes an automaton too deep or too large to build.
pub(super) fn prefixes(hir: &Hir) -> Hir {
    prefixes_within(hir, DEPTH)
}

/// For each of `count` patterns, "any text at all": every start may be a value's.
pub(super) fn anything(count: usize) -> Vec<Hir> {
    let any = Hir::repetition(Repetition {
        min: 0,
        max: None,
        greedy: true,
        sub: Box::new(Hir::dot(Dot::AnyByte)),
    });
    vec![any; count]
}

/// Any characters, as many as `hir` can match bytes (each character is a byte or more).
fn anything_as_long_as(hir: &Hir) -> Hir {
    Hir::repetition(Repetition {
        min: 0,
        max: hir
            .properties()
            .maximum_len()
            .and_then(|len| u32::try_from(len).ok()),
        greedy: true,
        sub: Box::new(Hir::dot(Dot::AnyChar)),
    })
}

fn prefixes_within(hir: &Hir, depth: usize) -> Hir {
    let Some(depth) = depth.checked_sub(1) else {
        return anything_as_long_as(hir);
    };
    let either = |a: Hir, b: Hir| Hir::alternation(vec![a, b]);
    // `P(first) | first·P(rest)`, from the last item back (`P(last)` holds `last`).
    let sequence = |mut items: Vec<Hir>, prefix: &dyn Fn(&Hir) -> Hir| {
        if items.len() > ITEMS {
            let rest = Hir::concat(items.split_off(ITEMS));
            items.push(anything_as_long_as(&rest));
        }
        let Some(last) = items.pop() else {
            return Hir::empty();
        };
        items.into_iter().rev().fold(prefix(&last), |rest, item| {
            either(prefix(&item), Hir::concat(vec![item, rest]))
        })
    };
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Hir::empty(),
        HirKind::Literal(Literal(bytes)) => {
            // Cut between characters only: a text ends on a whole one.
            let pieces: Vec<Hir> = match std::str::from_utf8(bytes) {
                Ok(text) => text
                    .chars()
                    .map(|c| Hir::literal(c.to_string().into_bytes()))
                    .collect(),
                Err(_) => bytes.iter().map(|&b| Hir::literal(vec![b])).collect(),
            };
            // One character's prefixes are nothing and itself.
            let single = |piece: &Hir| match piece.kind() {
                HirKind::Literal(_) => either(Hir::empty(), piece.clone()),
                _ => piece.clone(),
            };
            sequence(pieces, &single)
        }
        HirKind::Class(_) => either(Hir::empty(), hir.clone()),
        HirKind::Repetition(rep) => match rep.max {
            Some(0) => Hir::empty(),
            max => Hir::concat(vec![
                Hir::repetition(Repetition {
                    min: 0,
                    max: max.map(|m| m - 1),
                    greedy: rep.greedy,
                    sub: rep.sub.clone(),
                }),
                prefixes_within(&rep.sub, depth),
            ]),
        },
        HirKind::Capture(capture) => prefixes_within(&capture.sub, depth),
        HirKind::Concat(items) => sequence(items.clone(), &|item| prefixes_within(item, depth)),
        HirKind::Alternation(items) => Hir::alternation(
            items
                .iter()
                .map(|item| prefixes_within(item, depth))
                .collect(),
        ),
    }
}
