use super::*;

/// Every pattern searched by hand, with the expression it stands for.
fn scans() -> Vec<(Scan, regex::Regex)> {
    let placeholder = super::super::Pattern::placeholder();
    assert_eq!(placeholder.scan, Some(Scan::Placeholder));
    let placeholder = (
        Scan::Placeholder,
        regex::Regex::new(&placeholder.regex).unwrap_or_else(|e| unreachable!("{e}")),
    );
    [
        (Scan::Email, "email"),
        (Scan::Card, "credit-card"),
        (Scan::Phone, "phone"),
    ]
    .into_iter()
    .map(|(scan, name)| {
        let builtin = super::super::BUILTINS
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| unreachable!("{name} is a built-in"));
        assert_eq!(builtin.scan, Some(scan), "{name}");
        let regex = regex::Regex::new(builtin.regex).unwrap_or_else(|e| unreachable!("{e}"));
        (scan, regex)
    })
    .chain([placeholder])
    .collect()
}

/// The scan and the expression agree on `text` searched from every char boundary.
fn agree(scans: &[(Scan, regex::Regex)], text: &str) {
    for (scan, regex) in scans {
        for at in (0..=text.len()).filter(|&at| text.is_char_boundary(at)) {
            let want = regex.find_at(text, at).map(|m| (m.start(), m.end()));
            assert_eq!(
                scan.find_at(text.as_bytes(), at),
                want,
                "{scan:?} in {text:?} from {at}"
            );
        }
    }
}

#[test]
fn each_scan_finds_what_its_expression_finds() {
    let scans = scans();
    for text in [
        "",
        "Hello! Write to jane.doe@example.com or call +1 415 555 0100 about card \
         4111 1111 1111 1111. What is the capital of France?",
        "a@b.co a@b.c x@-.-.com @example.com x@example.com.",
        "mail.me+tag@sub.example.co.uk, or a.b@c.d.e.f.g.h.i.jk",
        "4111-1111-1111-1111 12/25 and 4111 1111 1111 1111 1 and x4111111111111111",
        "6666666666666 66666666666666666666 5555 5555 5555 4444_",
        "(415) 555-0100, (20)1234 5678, (12345)555-0100, 415.555.0100x, 415-555-01000",
        "+44 20 7946 0958, +1-800-555-0199, +0 123 456 789, ++15551234567, +1234567",
        "020 7946 0958, 0201234567, 01234567890123, 030-1234-5678, 0 1234 5678, 07",
        "tel:+33123456789é, é0612345678é, _0612345678, 06123456789a, 2024-05-01",
        "+1 (415) 555 0100 +1 415 555 0100 123 4567 890 1234 5678 9012 3456 7890",
        "01234 5678 9012, 0612 345 678, 06123-4567, 012345 678 901, 0123 4567-890",
        "[EMAIL_1] [CARD_12] [A_B_3] [_1] [X_] [x_1] [X_1234567] [[PHONE_2]] [A__9]",
    ] {
        agree(&scans, text);
    }
    // The local part is at most 64 bytes back, and a label at most 63 long.
    let long = format!(
        "{}@{}.com {}@x.{}",
        "a".repeat(70),
        "b".repeat(63),
        "c",
        "d".repeat(64)
    );
    agree(&scans, &long);
    agree(&scans, &format!("x@{}.io", "e".repeat(64)));
    agree(&scans, &format!("x@e.{}", "f".repeat(30)));
    for label in [39, 40, 41, 47, 48] {
        agree(
            &scans,
            &format!("[{}_1] [{}_12]", "A".repeat(label), "B".repeat(label)),
        );
    }
}

/// A small random generator, so the tests need no crate and fail the same way each run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn random_texts_are_found_the_same() {
    let scans = scans();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    // Single characters, where every rule meets every neighbour.
    let chars = [
        "0", "1", "2", "5", "9", " ", "-", ".", "+", "(", ")", "@", "a", "Z", "_", "%", "é", "/",
    ];
    // Pieces of values, so that most texts hold a value or nearly one.
    let pieces = [
        "4111", "1111", "555", "0100", "+1", "+44", "(415)", "(20)", "0", "06", "020", " ", "-",
        ".", "@", "jane", "example", ".com", ".co", "x", "é", "12345678", "_", "a.b", "01", "234",
        "0612", "[", "]", "EMAIL", "_1", "[CARD_2]",
    ];
    for round in 0..6000 {
        let len = rng.below(24);
        let text: String = (0..len)
            .map(|_| {
                if round % 2 == 0 {
                    chars[rng.below(chars.len())]
                } else {
                    pieces[rng.below(pieces.len())]
                }
            })
            .collect();
        agree(&scans, &text);
    }
}

#[test]
fn starts_are_the_digits_that_begin_a_word_and_the_signs() {
    for len in 0..50 {
        for at in 0..=len {
            let mut rng = Rng(0x9E37_79B9 + len as u64);
            let alphabet = b"0a_ +(.-9\x80";
            let text: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            for signs in [false, true] {
                let want: Vec<usize> = (at..len)
                    .filter(|&i| {
                        let digit = text[i].is_ascii_digit();
                        let after_word = i > 0 && is(&text, i - 1, WORD);
                        (digit && !after_word) || (signs && matches!(text[i], b'+' | b'('))
                    })
                    .collect();
                let got: Vec<usize> = Starts::new(&text, at, signs).collect();
                assert_eq!(got, want, "{text:?} from {at}");
            }
        }
    }
    assert_eq!(Starts::new(b"12", 5, true).next(), None);
}

#[test]
fn sixteen_bytes_are_classed_as_one_at_a_time_would() {
    for byte in 0..=255u8 {
        for lane in 0..16 {
            for filler in [b'a', b' ', b'0', 0x80, b'_'] {
                let mut chunk = [filler; 16];
                chunk[lane] = byte;
                assert_eq!(lanes::classify(&chunk), one_by_one(&chunk), "{chunk:?}");
            }
        }
    }
}
