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

/// Whether any of `needs` is met by `text` (`true` for a long text, not counted). The
/// caller has taken out [`Needs::Anything`] (with it, every text is searched).
pub(super) fn any_met(needs: &[Needs], text: &[u8]) -> bool {
    if text.len() > COUNTED {
        return true;
    }
    let mut counts = [0u16; 6];
    for &b in text {
        let counter = COUNTER[usize::from(b)];
        if counter != 0 {
            counts[usize::from(counter)] += 1;
        }
    }
    needs.iter().any(|need| match *need {
        Needs::Anything => true,
        Needs::Digits(n) => counts[1] >= n,
        Needs::Byte(byte, n) => COUNTED_BYTES
            .iter()
            .position(|&b| b == byte)
            .is_none_or(|i| counts[2 + i] >= n),
        Needs::Literal(literal) => memchr::memmem::find(text, literal).is_some(),
    })
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
    }
}
