//! Byte classes of JSON text, sixteen bytes at a time where SSE2 is there: whitespace,
//! string ends, characters a string must escape. The redaction walk, the access log and
//! accounting's usage reader all step over JSON this way.

/// The first byte at or after `at` that is not JSON whitespace (or the end).
#[inline(always)]
pub fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    // Most often the next token already (a compact document), or after one space (an
    // indented one's `": "`).
    match bytes.get(at) {
        Some(&byte) if byte > b' ' => return at,
        None => return at,
        Some(b' ') if bytes.get(at + 1).is_some_and(|&next| next > b' ') => return at + 1,
        _ => {}
    }
    // Sixteen bytes at a time: an indented line's newline and indent in one step.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    while let Some(chunk) = bytes.get(at..).and_then(|rest| rest.first_chunk::<16>()) {
        let other = !lanes::space(chunk) & 0xFFFF;
        if other != 0 {
            return at + other.trailing_zeros() as usize;
        }
        at += 16;
    }
    while let Some(&byte) = bytes.get(at) {
        if !SPACE[usize::from(byte)] {
            break;
        }
        at += 1;
    }
    at
}

/// JSON's whitespace.
static SPACE: [bool; 256] = {
    let mut table = [false; 256];
    table[b' ' as usize] = true;
    table[b'\n' as usize] = true;
    table[b'\r' as usize] = true;
    table[b'\t' as usize] = true;
    table
};

/// The first `"` or `\\` in `bytes`: the first 32 bytes sixteen at a time (most keys and
/// short values end there, and the vectorised search's set-up costs more than they do),
/// then that search.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
pub(crate) fn quote_or_escape(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..).and_then(|rest| rest.first_chunk::<16>()) {
        let hits = lanes::quote_or_escape(chunk);
        if hits != 0 {
            return Some(at + hits.trailing_zeros() as usize);
        }
        at += 16;
        if at == 32 {
            break;
        }
    }
    memchr::memchr2(b'"', b'\\', &bytes[at..]).map(|found| at + found)
}

/// The same without SSE2: the first sixteen bytes as two words, then the search.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
pub(crate) fn quote_or_escape(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(word) = bytes.get(at..).and_then(|rest| rest.first_chunk::<8>()) {
        let word = u64::from_le_bytes(*word);
        let hits = zero_bytes(word ^ (LOW_BITS * u64::from(b'"')))
            | zero_bytes(word ^ (LOW_BITS * u64::from(b'\\')));
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
        if at == 16 {
            break;
        }
    }
    memchr::memchr2(b'"', b'\\', &bytes[at..]).map(|found| at + found)
}

/// Which of sixteen bytes are of a kind: bit `i` for byte `i`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod lanes {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, m128i, min_u8_m128i,
        move_mask_i8_m128i, set_splat_i8_m128i,
    };

    #[inline(always)]
    fn equal(chunk: m128i, byte: u8) -> m128i {
        cmp_eq_mask_i8_m128i(chunk, set_splat_i8_m128i(byte as i8))
    }

    /// JSON's whitespace.
    #[inline(always)]
    pub(super) fn space(chunk: &[u8; 16]) -> u32 {
        let chunk = load_unaligned_m128i(chunk);
        let space = bitor_m128i(equal(chunk, b' '), equal(chunk, b'\n'));
        let other = bitor_m128i(equal(chunk, b'\r'), equal(chunk, b'\t'));
        move_mask_i8_m128i(bitor_m128i(space, other)) as u32
    }

    /// Below 0x20: what stays itself under an unsigned minimum with 0x1F.
    #[inline(always)]
    pub(super) fn control(chunk: &[u8; 16]) -> u32 {
        let chunk = load_unaligned_m128i(chunk);
        let low = min_u8_m128i(chunk, set_splat_i8_m128i(0x1F));
        move_mask_i8_m128i(cmp_eq_mask_i8_m128i(low, chunk)) as u32
    }

    /// What a JSON string must escape: a control character, a quote or a backslash.
    #[inline(always)]
    pub(super) fn escape(chunk: &[u8; 16]) -> u32 {
        control(chunk) | quote_or_escape(chunk)
    }

    /// A quote or a backslash.
    #[inline(always)]
    pub(super) fn quote_or_escape(chunk: &[u8; 16]) -> u32 {
        let chunk = load_unaligned_m128i(chunk);
        move_mask_i8_m128i(bitor_m128i(equal(chunk, b'"'), equal(chunk, b'\\'))) as u32
    }
}

/// The top bit of each byte of `word` that is zero; the lowest one set is exact (a
/// borrow only reaches the bytes above a zero one).
#[inline(always)]
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(LOW_BITS) & !word & HIGH_BITS
}

/// Lanes of a word: one in each byte, and each byte's top bit.
const LOW_BITS: u64 = u64::from_le_bytes([0x01; 8]);
const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);

/// Whether `bytes` holds a control character (below 0x20).
pub(crate) fn has_control(bytes: &[u8]) -> bool {
    any_in(bytes, Class::Control)
}

/// Whether `text`, written as a JSON string, needs an escape (a control character, a quote
/// or a backslash): most texts a gateway logs or rewrites do not, and are copied as they are.
pub fn needs_escape(text: &[u8]) -> bool {
    any_in(text, Class::Escape)
}

/// The kinds of byte [`any_in`] looks for.
#[derive(Clone, Copy)]
enum Class {
    /// Below 0x20.
    Control,
    /// A control character, a quote or a backslash.
    Escape,
}

impl Class {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[inline(always)]
    fn in_lanes(self, chunk: &[u8; 16]) -> u32 {
        match self {
            Class::Control => lanes::control(chunk),
            Class::Escape => lanes::escape(chunk),
        }
    }

    /// Nonzero when a byte of `word` is of the class: a byte is zero once masked to its top
    /// three bits (a control character) or compared with a quote or a backslash.
    #[inline(always)]
    fn in_word(self, word: u64) -> u64 {
        let control = zero_bytes(word & u64::from_le_bytes([0xE0; 8]));
        match self {
            Class::Control => control,
            Class::Escape => {
                control
                    | zero_bytes(word ^ (LOW_BITS * u64::from(b'"')))
                    | zero_bytes(word ^ (LOW_BITS * u64::from(b'\\')))
            }
        }
    }

    #[inline(always)]
    fn has(self, byte: u8) -> bool {
        byte < 0x20 || (matches!(self, Class::Escape) && (byte == b'"' || byte == b'\\'))
    }
}

/// Whether `bytes` holds a byte of `class`: sixteen bytes at a time where SSE2 is there,
/// then the rest as words and bytes.
#[inline(always)]
fn any_in(bytes: &[u8], class: Class) -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    let bytes = {
        let mut chunks = bytes.chunks_exact(16);
        if chunks
            .by_ref()
            .filter_map(|chunk| chunk.first_chunk::<16>())
            .any(|chunk| class.in_lanes(chunk) != 0)
        {
            return true;
        }
        chunks.remainder()
    };
    any_in_words(bytes, class)
}

/// [`any_in`] eight bytes at a time.
fn any_in_words(bytes: &[u8], class: Class) -> bool {
    let mut words = bytes.chunks_exact(8);
    words.by_ref().any(|w| {
        w.try_into()
            .is_ok_and(|w| class.in_word(u64::from_le_bytes(w)) != 0)
    }) || words.remainder().iter().any(|&b| class.has(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[test]
    fn sixteen_bytes_are_classed_as_one_at_a_time_would() {
        let mask = |chunk: &[u8; 16], of_kind: &dyn Fn(u8) -> bool| {
            (0..16)
                .filter(|&i| of_kind(chunk[i]))
                .fold(0, |m, i| m | 1 << i)
        };
        for byte in 0..=255u8 {
            for lane in 0..16 {
                for filler in [b'a', b' ', b'"', 0x80] {
                    let mut chunk = [filler; 16];
                    chunk[lane] = byte;
                    let space = mask(&chunk, &|b| SPACE[usize::from(b)]);
                    assert_eq!(lanes::space(&chunk), space, "{chunk:?}");
                    assert_eq!(lanes::control(&chunk), mask(&chunk, &|b| b < 0x20));
                    let quote = mask(&chunk, &|b| b == b'"' || b == b'\\');
                    assert_eq!(lanes::quote_or_escape(&chunk), quote, "{chunk:?}");
                }
            }
        }
    }

    #[test]
    fn whitespace_and_string_ends_are_found_across_every_chunk_boundary() {
        for len in 0..70 {
            for run in 0..len {
                // A run of mixed whitespace, then a token.
                let mut bytes: Vec<u8> = (0..len).map(|i| b" \n\t\r"[i % 4]).collect();
                bytes[run] = b'x';
                assert_eq!(skip_space(&bytes, 0), run);
                assert_eq!(skip_space(&bytes, run), run);
                // A string's text, then its end (or an escape).
                for end in [b'"', b'\\'] {
                    let mut text = vec![b'a'; len];
                    text[run] = end;
                    assert_eq!(quote_or_escape(&text), Some(run));
                }
            }
            let spaces: Vec<u8> = (0..len).map(|i| b" \n\t\r"[i % 4]).collect();
            assert_eq!(skip_space(&spaces, 0), len);
            // The first of two ends is the end.
            for later in 0..len {
                let mut text = vec![b'a'; len + 1];
                text[later] = b'"';
                text[len] = b'\\';
                assert_eq!(quote_or_escape(&text), Some(later));
            }
            assert_eq!(quote_or_escape(&vec![b'a'; len]), None);
        }
    }

    #[test]
    fn control_characters_are_found_at_every_place() {
        for len in 0..40 {
            assert!(!has_control(&vec![b'a'; len]));
            assert!(!has_control("é€".repeat(len).as_bytes()));
            for at in 0..len {
                for control in [0u8, 0x0a, 0x1f] {
                    let mut bytes = vec![b' '; len];
                    bytes[at] = control;
                    assert!(has_control(&bytes), "{len} {at} {control}");
                }
                let mut bytes = vec![b'a'; len];
                bytes[at] = 0x20;
                assert!(!has_control(&bytes));
            }
        }
    }

    #[test]
    fn what_needs_an_escape_is_found_at_every_place() {
        for len in 0..40 {
            assert!(!needs_escape(&vec![b'a'; len]));
            assert!(!needs_escape("é€ ~".repeat(len).as_bytes()));
            for at in 0..len {
                for byte in [0u8, 0x0a, 0x1f, b'"', b'\\'] {
                    let mut text = vec![b'a'; len];
                    text[at] = byte;
                    assert!(needs_escape(&text), "{len} {at} {byte}");
                    assert!(any_in_words(&text, Class::Escape));
                }
                for byte in [0x20, b'!', b'#', b'[', b']', 0x7f, 0x80, 0xff] {
                    let mut text = vec![b'a'; len];
                    text[at] = byte;
                    assert!(!needs_escape(&text), "{len} {at} {byte}");
                    assert!(!any_in_words(&text, Class::Escape));
                }
            }
        }
    }
}
