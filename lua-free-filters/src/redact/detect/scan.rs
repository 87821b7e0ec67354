//! Searches written by hand for the built-ins nearly every configuration names (email,
//! phone, card): each reports exactly the match its expression's `find_at` reports, for
//! less than the expression's engine costs on a prompt's few hundred bytes (a forward and a
//! backward automaton per search, after a prefilter).
//!
//! Each search walks only the places its value can start: the `@` an address is built
//! around, and the digits that begin a word (or a `+` or `(` for a phone), found sixteen
//! bytes at a time. From such a place the expression's one way of matching is followed as a
//! backtracking engine would, so the leftmost start and, there, the match the expression
//! prefers are what the engine reports. The tests hold every search to its expression.

/// A built-in searched by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scan {
    Email,
    Card,
    Phone,
    /// The placeholders the filter writes (`[EMAIL_3]`).
    Placeholder,
}

impl Scan {
    /// The start and end of the first match at `at` or later, as the built-in's expression
    /// reports it (`Regex::find_at`: the bytes before `at` are the context of a `\b`).
    pub(super) fn find_at(self, text: &[u8], at: usize) -> Option<(usize, usize)> {
        match self {
            Scan::Email => email(text, at),
            Scan::Placeholder => placeholder(text, at),
            Scan::Card => {
                // Starts inside a chain of digits that held no card hold none either.
                let mut past = 0;
                for start in Starts::new(text, at, false) {
                    if start < past {
                        continue;
                    }
                    match card_at(text, start) {
                        Ok(found) => return Some(found),
                        Err(resume) => past = resume,
                    }
                }
                None
            }
            Scan::Phone => Starts::new(text, at, true).find_map(|s| phone_at(text, s)),
        }
    }
}

/// What a byte is, as bits.
const DIGIT: u8 = 1;
/// `\w` in ASCII: `[0-9A-Za-z_]`.
const WORD: u8 = 2;
/// `[A-Za-z0-9._%+-]`, an address's local part.
const LOCAL: u8 = 4;
/// `[A-Za-z0-9-]`, a domain's label.
const LABEL: u8 = 8;
const ALPHA: u8 = 16;

static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        let digit = c.is_ascii_digit();
        let alpha = c.is_ascii_alphabetic();
        let mut class = 0;
        if digit {
            class |= DIGIT | WORD | LOCAL | LABEL;
        }
        if alpha {
            class |= ALPHA | WORD | LOCAL | LABEL;
        }
        if c == b'_' {
            class |= WORD;
        }
        if matches!(c, b'.' | b'_' | b'%' | b'+' | b'-') {
            class |= LOCAL;
        }
        if c == b'-' {
            class |= LABEL;
        }
        table[b] = class;
        b += 1;
    }
    table
};

#[inline(always)]
fn is(text: &[u8], at: usize, class: u8) -> bool {
    text.get(at)
        .is_some_and(|&b| CLASS[usize::from(b)] & class != 0)
}

/// How many bytes of `class` follow from `at`, counted up to `most`.
#[inline(always)]
fn run(text: &[u8], at: usize, class: u8, most: usize) -> usize {
    let mut len = 0;
    while len < most && is(text, at + len, class) {
        len += 1;
    }
    len
}

/// `(?-u:\b)` after a digit: the end of the text or a byte that is not `\w`.
#[inline(always)]
fn ends_word(text: &[u8], at: usize) -> bool {
    !is(text, at, WORD)
}

/// `[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,6}\.[A-Za-z]{2,24}`.
///
/// No class holds `@`, so a match holds one, and the matches around earlier `@`s start
/// before those around later ones: the first `@` with a domain after it and a local part
/// before it gives the leftmost match, which starts as far back as the local part goes.
fn email(text: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut from = at;
    while let Some(found) = memchr::memchr(b'@', text.get(from..)?) {
        let sign = from + found;
        from = sign + 1;
        let earliest = at.max(sign.saturating_sub(64));
        let mut start = sign;
        while start > earliest && is(text, start - 1, LOCAL) {
            start -= 1;
        }
        if start == sign {
            continue;
        }
        if let Some(end) = domain(text, sign + 1) {
            return Some((start, end));
        }
    }
    None
}

/// The end of `[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,6}\.[A-Za-z]{2,24}` at `at`.
///
/// A label is all of its run (the next item wants a dot), so the only choice is how many
/// dotted labels to take before the last dot: as many as there are (up to six), then
/// fewer until a dot followed by two letters or more is left.
fn domain(text: &[u8], at: usize) -> Option<usize> {
    let first = run(text, at, LABEL, 64);
    if !(1..=63).contains(&first) {
        return None;
    }
    let mut ends = [0usize; 7];
    ends[0] = at + first;
    let mut taken = 0;
    while taken < 6 {
        let dot = ends[taken];
        if text.get(dot) != Some(&b'.') {
            break;
        }
        let label = run(text, dot + 1, LABEL, 64);
        if !(1..=63).contains(&label) {
            break;
        }
        taken += 1;
        ends[taken] = dot + 1 + label;
    }
    ends[..=taken].iter().rev().find_map(|&dot| {
        if text.get(dot) != Some(&b'.') {
            return None;
        }
        let letters = run(text, dot + 1, ALPHA, 24);
        (letters >= 2).then_some(dot + 1 + letters)
    })
}

/// `\[[A-Z0-9_]{1,40}_[0-9]{1,6}\]` from `at`: a `[`, a run of the class that a `]` ends,
/// split at its last `_` (the digits after the split hold none) into a label of 1 to 40
/// and 1 to 6 digits.
fn placeholder(text: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut from = at;
    while let Some(found) = memchr::memchr(b'[', text.get(from..)?) {
        let open = from + found;
        from = open + 1;
        let inner = &text[open + 1..];
        let len = inner
            .iter()
            .take(48)
            .position(|&b| !matches!(b, b'A'..=b'Z' | b'0'..=b'9' | b'_'))
            .unwrap_or(inner.len().min(48));
        if inner.get(len) != Some(&b']') {
            continue;
        }
        let Some(split) = memchr::memrchr(b'_', &inner[..len]) else {
            continue;
        };
        let digits = len - split - 1;
        if (1..=40).contains(&split)
            && (1..=6).contains(&digits)
            && inner[split + 1..len].iter().all(u8::is_ascii_digit)
        {
            return Some((open, open + len + 2));
        }
    }
    None
}

/// The ends after each digit of `(?:SEP?[0-9]){0,most}` from `at`: a separator is taken
/// only before a digit, so the digits are one chain; `ends[n]` is the end after `n` of them.
fn chain(
    text: &[u8],
    mut at: usize,
    sep: fn(u8) -> bool,
    most: usize,
    ends: &mut [usize; 19],
) -> usize {
    let mut n = 0;
    while n < most {
        if is(text, at, DIGIT) {
            at += 1;
        } else if text.get(at).is_some_and(|&b| sep(b)) && is(text, at + 1, DIGIT) {
            at += 2;
        } else {
            break;
        }
        n += 1;
        ends[n] = at;
    }
    n
}

fn space_or_dash(b: u8) -> bool {
    matches!(b, b' ' | b'-')
}

fn space_dot_or_dash(b: u8) -> bool {
    matches!(b, b' ' | b'.' | b'-')
}

/// `(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)` at `start` (a digit that begins a word):
/// the most digits, 13 to 19, after which a word ends.
///
/// With none, where the next start may be: past the chain's end when the chain stopped by
/// itself (a start inside it has the same end and fewer digits, a subset of the same
/// places to end at), else the next byte.
fn card_at(text: &[u8], start: usize) -> Result<(usize, usize), usize> {
    let mut ends = [start + 1; 19];
    let n = chain(text, start + 1, space_or_dash, 18, &mut ends);
    match (12..=n)
        .rev()
        .map(|k| ends[k])
        .find(|&end| ends_word(text, end))
    {
        Some(end) => Ok((start, end)),
        None if n < 18 => Err(ends[n]),
        None => Err(start + 1),
    }
}

/// The phone expression at `start` (a `+`, a `(`, or a digit that begins a word):
///
/// ```text
/// (?:\+[1-9](?:[ .-]?[0-9]){6,14}
///   |\([0-9]{2,4}\)[ .-]?[0-9]{3,4}[ .-]?[0-9]{3,4}
///   |\b[2-9][0-9]{2}[ .-][0-9]{3}[ .-][0-9]{4}
///   |\b0[1-9][0-9]{0,3}[ -][0-9]{3,4}[ -]?[0-9]{3,4}
///   |\b0[1-9][0-9]{8,10})\b
/// ```
///
/// The first byte picks the one branch that can match (the two national ones exclude each
/// other: one has a separator within the first five digits, the other none in ten).
fn phone_at(text: &[u8], start: usize) -> Option<(usize, usize)> {
    let end = match text[start] {
        b'+' => {
            if !matches!(text.get(start + 1), Some(b'1'..=b'9')) {
                return None;
            }
            let mut ends = [0usize; 19];
            let n = chain(text, start + 2, space_dot_or_dash, 14, &mut ends);
            (6..=n)
                .rev()
                .map(|k| ends[k])
                .find(|&end| ends_word(text, end))?
        }
        b'(' => {
            let digits = run(text, start + 1, DIGIT, 5);
            if !(2..=4).contains(&digits) || text.get(start + 1 + digits) != Some(&b')') {
                return None;
            }
            let mut at = start + 2 + digits;
            if text.get(at).is_some_and(|&b| space_dot_or_dash(b)) {
                at += 1;
            }
            two_groups(text, at, space_dot_or_dash)?
        }
        b'2'..=b'9' => {
            let grouped = run(text, start, DIGIT, 3) == 3
                && text.get(start + 3).is_some_and(|&b| space_dot_or_dash(b))
                && run(text, start + 4, DIGIT, 3) == 3
                && text.get(start + 7).is_some_and(|&b| space_dot_or_dash(b))
                && run(text, start + 8, DIGIT, 4) == 4
                && ends_word(text, start + 12);
            if !grouped {
                return None;
            }
            start + 12
        }
        b'0' => {
            if !matches!(text.get(start + 1), Some(b'1'..=b'9')) {
                return None;
            }
            let digits = run(text, start + 2, DIGIT, 11);
            if digits <= 3 {
                if !text
                    .get(start + 2 + digits)
                    .is_some_and(|&b| space_or_dash(b))
                {
                    return None;
                }
                two_groups(text, start + 3 + digits, space_or_dash)?
            } else if (8..=10).contains(&digits) && ends_word(text, start + 2 + digits) {
                start + 2 + digits
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some((start, end))
}

/// The end of `[0-9]{3,4}SEP?[0-9]{3,4}\b` at `at`, trying four digits before three in
/// each group.
fn two_groups(text: &[u8], at: usize, sep: fn(u8) -> bool) -> Option<usize> {
    [4, 3].into_iter().find_map(|first| {
        if run(text, at, DIGIT, first) != first {
            return None;
        }
        let mut second = at + first;
        if text.get(second).is_some_and(|&b| sep(b)) {
            second += 1;
        }
        [4, 3].into_iter().find_map(|len| {
            let end = second + len;
            (run(text, second, DIGIT, len) == len && ends_word(text, end)).then_some(end)
        })
    })
}

/// The places from `at` on where a card or a phone number may start: a digit with no `\w`
/// before it and, for a phone, every `+` and `(`; in order, from masks of sixteen bytes.
struct Starts<'a> {
    text: &'a [u8],
    /// Where the chunk of `pending` starts.
    base: usize,
    pending: u32,
    /// Whether the byte before the next chunk is `\w`.
    after_word: bool,
    signs: bool,
}

impl<'a> Starts<'a> {
    fn new(text: &'a [u8], at: usize, signs: bool) -> Starts<'a> {
        Starts {
            text,
            // The first chunk is read at `at`.
            base: at.wrapping_sub(16),
            pending: 0,
            after_word: at
                .checked_sub(1)
                .is_some_and(|before| is(text, before, WORD)),
            signs,
        }
    }
}

impl Iterator for Starts<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.pending == 0 {
            self.base = self.base.wrapping_add(16);
            let rest = self.text.get(self.base..).filter(|r| !r.is_empty())?;
            let masks = match rest.first_chunk::<16>() {
                Some(chunk) => {
                    // A chunk without a digit (or sign) has no start: only its last byte is
                    // read, for the next chunk's first.
                    if !lanes::any_start(chunk, self.signs) {
                        self.after_word = CLASS[usize::from(chunk[15])] & WORD != 0;
                        continue;
                    }
                    lanes::classify(chunk)
                }
                // A last, short chunk is read padded with zeros: not digits, words or signs.
                None => {
                    let mut padded = [0u8; 16];
                    padded[..rest.len()].copy_from_slice(rest);
                    lanes::classify(&padded)
                }
            };
            let word_before = masks.word << 1 | u32::from(self.after_word);
            self.pending = masks.digit & !word_before;
            if self.signs {
                self.pending |= masks.sign;
            }
            self.pending &= 0xFFFF;
            self.after_word = masks.word & 0x8000 != 0;
        }
        let lane = self.pending.trailing_zeros() as usize;
        self.pending &= self.pending - 1;
        Some(self.base + lane)
    }
}

/// Which of sixteen bytes are digits, `\w`, or a phone's opening sign (`+`, `(`): bit `i`
/// for byte `i`.
#[derive(Debug, PartialEq, Eq)]
struct Masks {
    digit: u32,
    word: u32,
    sign: u32,
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod lanes {
    use super::Masks;
    use safe_arch::{
        bitand_m128i, bitor_m128i, cmp_eq_mask_i8_m128i, cmp_gt_mask_i8_m128i,
        cmp_lt_mask_i8_m128i, load_unaligned_m128i, m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };

    fn splat(byte: u8) -> m128i {
        set_splat_i8_m128i(byte as i8)
    }

    /// Within `low..=high` (ASCII bounds: bytes from 0x80 are negative, never within).
    fn within(chunk: m128i, low: u8, high: u8) -> m128i {
        bitand_m128i(
            cmp_gt_mask_i8_m128i(chunk, splat(low - 1)),
            cmp_lt_mask_i8_m128i(chunk, splat(high + 1)),
        )
    }

    /// Whether a chunk holds a digit (or, with `signs`, a `+` or `(`).
    #[inline(always)]
    pub(super) fn any_start(chunk: &[u8; 16], signs: bool) -> bool {
        let chunk = load_unaligned_m128i(chunk);
        let mut hits = within(chunk, b'0', b'9');
        if signs {
            hits = bitor_m128i(
                hits,
                bitor_m128i(
                    cmp_eq_mask_i8_m128i(chunk, splat(b'+')),
                    cmp_eq_mask_i8_m128i(chunk, splat(b'(')),
                ),
            );
        }
        move_mask_i8_m128i(hits) != 0
    }

    #[inline(always)]
    pub(super) fn classify(chunk: &[u8; 16]) -> Masks {
        let chunk = load_unaligned_m128i(chunk);
        let digit = within(chunk, b'0', b'9');
        // Setting 0x20 folds upper case onto lower and moves no other byte into a..z.
        let letter = within(bitor_m128i(chunk, splat(0x20)), b'a', b'z');
        let word = bitor_m128i(
            bitor_m128i(digit, letter),
            cmp_eq_mask_i8_m128i(chunk, splat(b'_')),
        );
        let sign = bitor_m128i(
            cmp_eq_mask_i8_m128i(chunk, splat(b'+')),
            cmp_eq_mask_i8_m128i(chunk, splat(b'(')),
        );
        let mask = |lanes: m128i| move_mask_i8_m128i(lanes) as u32;
        Masks {
            digit: mask(digit),
            word: mask(word),
            sign: mask(sign),
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
mod lanes {
    pub(super) use super::one_by_one as classify;

    pub(super) fn any_start(chunk: &[u8; 16], signs: bool) -> bool {
        chunk
            .iter()
            .any(|&b| b.is_ascii_digit() || (signs && matches!(b, b'+' | b'(')))
    }
}

/// [`lanes::classify`] a byte at a time: where there is no vector, and its reference.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn one_by_one(chunk: &[u8; 16]) -> Masks {
    let mut masks = Masks {
        digit: 0,
        word: 0,
        sign: 0,
    };
    for (lane, &b) in chunk.iter().enumerate() {
        let class = CLASS[usize::from(b)];
        masks.digit |= u32::from(class & DIGIT != 0) << lane;
        masks.word |= u32::from(class & WORD != 0) << lane;
        masks.sign |= u32::from(matches!(b, b'+' | b'(')) << lane;
    }
    masks
}

#[cfg(test)]
mod tests;
