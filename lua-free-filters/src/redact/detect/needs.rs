//! What a text must hold for a pattern to match in it, counted in one pass over its bytes:
//! most texts a stream or a prompt is made of (`" the"`, `"You are a helpful assistant."`)
//! hold nothing a built-in could match, and saying so costs less than starting a search.

/// A necessary condition for a pattern to match somewhere in a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Needs {
    /// Nothing known (an operator's expression): always searched.
    Anything,
    /// At least this many ASCII digits.
    Digits(u16),
    /// This byte, at least this many times.
    Byte(u8, u16),
    /// These bytes in a row.
    Literal(&'static [u8]),
}

/// Texts longer than this are searched without counting first: a long text mostly holds
/// what the counts ask for, and the count would only add to its search.
const COUNTED: usize = 256;

/// The bytes [`Needs::Byte`] may name, each counted (a built-in's table is checked in the
/// tests; another byte is never ruled out).
const COUNTED_BYTES: [u8; 4] = [b'@', b'.', b':', b']'];

/// For each byte, which count it adds to: 0 none (most text), 1 the digits, 2 and on
/// [`COUNTED_BYTES`]. One load and a branch that is rarely taken per byte.
static COUNTER: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut digit = b'0';
    while digit <= b'9' {
        table[digit as usize] = 1;
        digit += 1;
    }
    let mut i = 0;
    while i < COUNTED_BYTES.len() {
        table[COUNTED_BYTES[i] as usize] = 2 + i as u8;
        i += 1;
    }
    table
};

/// Whether any of `needs` is met by `text` (`true` for a long text, not counted).
#[cfg(test)]
pub(super) fn any_met(needs: &[Needs], text: &[u8]) -> bool {
    Gate::new(needs).met(text)
}

/// How many of each counted byte a text holds (slot 0 unused, 1 the digits, 2 and on
/// [`COUNTED_BYTES`]).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counts([u16; SLOTS]);

/// Slot 0 unused, 1 the digits, then one per [`COUNTED_BYTES`].
const SLOTS: usize = 2 + COUNTED_BYTES.len();

impl Counts {
    /// Sixteen bytes at a time where SSE2 is there (x86_64), then the rest one by one.
    fn of(text: &[u8]) -> Counts {
        let (mut counts, rest) = lanes::count(text);
        counts.add_each(rest);
        counts
    }

    /// One byte at a time, over the table: the rest of a text, and the reference the
    /// vector count is tested against.
    fn add_each(&mut self, text: &[u8]) {
        for &b in text {
            let counter = COUNTER[usize::from(b)];
            if counter != 0 {
                self.0[usize::from(counter)] += 1;
            }
        }
    }
}

/// Counts of sixteen bytes at a time: each kind compared in every lane, the lanes' matches
/// summed per lane (at most 255 chunks before the lanes are added up), then across them.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod lanes {
    use super::{Counts, COUNTED_BYTES};
    use safe_arch::{
        bitand_m128i, cmp_eq_mask_i8_m128i, cmp_gt_mask_i8_m128i, cmp_lt_mask_i8_m128i,
        load_unaligned_m128i, m128i, set_splat_i8_m128i, sub_i8_m128i, sum_of_u8_abs_diff_m128i,
        zeroed_m128i,
    };

    /// The counts of `text`'s whole chunks, and the bytes left over.
    pub(super) fn count(text: &[u8]) -> (Counts, &[u8]) {
        let mut counts = Counts::default();
        let mut chunks = text.chunks_exact(16);
        let rest = chunks.remainder();
        let splat = |byte: u8| set_splat_i8_m128i(byte as i8);
        let (below_zero, above_nine) = (splat(b'0' - 1), splat(b'9' + 1));
        let bytes = COUNTED_BYTES.map(splat);
        loop {
            // A lane gains one per match (a compare's all-ones lane is -1), so 255 chunks
            // at most before they are added up.
            let mut digits = zeroed_m128i();
            let mut each = [zeroed_m128i(); COUNTED_BYTES.len()];
            let mut taken = 0;
            for chunk in chunks.by_ref().take(255) {
                let Some(chunk) = chunk.first_chunk::<16>() else {
                    break;
                };
                let chunk = load_unaligned_m128i(chunk);
                // Signed compares: bytes from 0x80 are negative, never digits.
                let digit = bitand_m128i(
                    cmp_gt_mask_i8_m128i(chunk, below_zero),
                    cmp_lt_mask_i8_m128i(chunk, above_nine),
                );
                digits = sub_i8_m128i(digits, digit);
                for (sum, &byte) in each.iter_mut().zip(&bytes) {
                    *sum = sub_i8_m128i(*sum, cmp_eq_mask_i8_m128i(chunk, byte));
                }
                taken += 1;
            }
            if taken == 0 {
                return (counts, rest);
            }
            counts.0[1] += lane_sum(digits);
            for (slot, sum) in counts.0[2..].iter_mut().zip(each) {
                *slot += lane_sum(sum);
            }
        }
    }

    /// The sum of a vector's sixteen bytes.
    fn lane_sum(sums: m128i) -> u16 {
        let [low, high] = <[u64; 2]>::from(sum_of_u8_abs_diff_m128i(sums, zeroed_m128i()));
        // Sixteen lanes of at most 255: at most 4,080.
        (low + high) as u16
    }
}

/// No vector count elsewhere: every byte over the table.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
mod lanes {
    use super::Counts;

    pub(super) fn count(text: &[u8]) -> (Counts, &[u8]) {
        (Counts::default(), text)
    }
}

impl Needs {
    /// Whether a text with these `counts` (`text` itself, for a literal) meets this need.
    pub(super) fn met(&self, counts: &Counts, text: &[u8]) -> bool {
        match *self {
            Needs::Anything => true,
            Needs::Digits(n) => counts.0[1] >= n,
            Needs::Byte(byte, n) => match COUNTED_BYTES.iter().position(|&b| b == byte) {
                Some(i) => counts.0[2 + i] >= n,
                None => true,
            },
            Needs::Literal(literal) => memchr::memmem::find(text, literal).is_some(),
        }
    }

    /// Whether `text` meets this need, read only as far as it takes to say so (what
    /// follows a value taken: most often short, or holding what the need asks for early).
    pub(super) fn met_in(&self, text: &[u8]) -> bool {
        match *self {
            Needs::Anything => true,
            Needs::Digits(n) => {
                let mut left = usize::from(n);
                left == 0
                    || text.iter().any(|b| {
                        left -= usize::from(b.is_ascii_digit());
                        left == 0
                    })
            }
            Needs::Byte(byte, n) => memchr::memchr_iter(byte, text)
                .nth(usize::from(n).saturating_sub(1))
                .is_some(),
            Needs::Literal(literal) => memchr::memmem::find(text, literal).is_some(),
        }
    }
}

/// [`any_met`] for one set of needs, worked out once: the least count of each byte any of
/// them asks for (any pattern met is the same as any count reaching its least), and the
/// literals.
#[derive(Debug)]
pub(super) struct Gate {
    /// `u16::MAX` where no pattern counts that byte.
    least: [u16; SLOTS],
    literals: Vec<&'static [u8]>,
    /// A need nothing can rule out: every text passes.
    open: bool,
}

impl Gate {
    pub(super) fn new(needs: &[Needs]) -> Gate {
        let mut gate = Gate {
            least: [u16::MAX; SLOTS],
            literals: Vec::new(),
            open: false,
        };
        for need in needs {
            let (slot, n) = match *need {
                Needs::Anything => {
                    gate.open = true;
                    continue;
                }
                Needs::Digits(n) => (1, n),
                Needs::Byte(byte, n) => match COUNTED_BYTES.iter().position(|&b| b == byte) {
                    Some(i) => (2 + i, n),
                    None => {
                        gate.open = true;
                        continue;
                    }
                },
                Needs::Literal(literal) => {
                    gate.literals.push(literal);
                    continue;
                }
            };
            gate.least[slot] = gate.least[slot].min(n);
        }
        gate
    }

    /// The counts of `text`, when it is worth counting (`None`: anything may match).
    pub(super) fn count(&self, text: &[u8]) -> Option<Counts> {
        (!self.open && text.len() <= COUNTED).then(|| Counts::of(text))
    }

    /// Whether a text with these `counts` meets any need.
    pub(super) fn admits(&self, counts: &Counts, text: &[u8]) -> bool {
        counts.0[1..]
            .iter()
            .zip(&self.least[1..])
            .any(|(count, least)| count >= least)
            || self
                .literals
                .iter()
                .any(|literal| memchr::memmem::find(text, literal).is_some())
    }

    #[cfg(test)]
    fn met(&self, text: &[u8]) -> bool {
        self.count(text)
            .is_none_or(|counts| self.admits(&counts, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_decide_and_long_texts_are_searched() {
        let email = [Needs::Byte(b'@', 1)];
        assert!(!any_met(&email, b"no address here"));
        assert!(any_met(&email, b"a@b"));
        let card = [Needs::Digits(13)];
        assert!(!any_met(&card, b"4111 1111 1111"));
        assert!(any_met(&card, b"4111 1111 1111 1"));
        assert!(any_met(&[Needs::Literal(b"eyJ")], b"x eyJhb"));
        assert!(any_met(&[Needs::Anything, Needs::Digits(3)], b"x"));
        assert!(any_met(&[Needs::Digits(3)], b"a1b2c3"));
        assert!(any_met(&card, "x".repeat(COUNTED + 1).as_bytes()));
        assert!(!any_met(&[Needs::Byte(b':', 2)], b"a:b"));
        assert!(any_met(&[Needs::Byte(b':', 2)], b"a::b"));
        // A byte no count is kept for is never ruled out.
        assert!(any_met(&[Needs::Byte(b'#', 9)], b"x"));
        // Several needs: any one met is enough, each by its own count.
        let several = [Needs::Digits(13), Needs::Digits(7), Needs::Byte(b'@', 1)];
        assert!(any_met(&several, b"1234567"));
        assert!(any_met(&several, b"x@y"));
        assert!(!any_met(&several, b"123456 x.y"));
        let both = [
            Needs::Byte(b'.', 3),
            Needs::Byte(b':', 2),
            Needs::Literal(b"eyJ"),
        ];
        assert!(!any_met(&both, b"a.b.c:d"));
        assert!(any_met(&both, b"a.b.c.d"));
        assert!(any_met(&both, b"eyJ"));
    }

    #[test]
    fn counts_sixteen_bytes_at_a_time_are_the_counts_of_each_byte() {
        let one_by_one = |text: &[u8]| {
            let mut counts = Counts::default();
            counts.add_each(text);
            counts.0
        };
        // Every byte value in every lane, beside the counted bytes and their neighbours.
        let mut texts: Vec<Vec<u8>> = (0..=255u8)
            .map(|b| {
                let mut text = vec![b; 35];
                for (at, byte) in [(3, b'0'), (8, b'9'), (16, b'/'), (17, b':'), (31, b'@')] {
                    text[at] = byte;
                }
                text
            })
            .collect();
        let alphabet = b"0123456789/:@.?]A[-\x00\x7f\x80\xb0\xc0\xff ";
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        // Past 255 chunks too, where the lanes are added up and start again.
        for len in (0..300).chain([4079, 4080, 4081, 4096, 5000]) {
            let text = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            texts.push(text);
        }
        texts.push(vec![b'7'; 5000]);
        for text in &texts {
            assert_eq!(Counts::of(text).0, one_by_one(text), "{text:?}");
        }
    }
}
