#![allow(dead_code)] // each target uses what it needs of this
//! What the targets share: the formats, picked by a byte of the input.

use sira::format::Format;

pub const FORMATS: [Format; 4] = [
    Format::OpenAiChat,
    Format::OpenAiResponses,
    Format::Anthropic,
    Format::Gemini,
];

/// A format from the input's first byte, and the rest.
pub fn format(data: &[u8]) -> Option<(Format, &[u8])> {
    let (first, rest) = data.split_first()?;
    Some((FORMATS[usize::from(*first) % 4], rest))
}

/// `data` cut into pieces at the positions its first bytes choose: arbitrary splits of one
/// input, as TCP would deliver it.
pub fn pieces(data: &[u8]) -> Vec<&[u8]> {
    let Some((&cuts, rest)) = data.split_first() else {
        return Vec::new();
    };
    let cuts = usize::from(cuts % 16);
    if rest.len() <= cuts {
        return vec![rest];
    }
    let (sizes, body) = rest.split_at(cuts);
    let mut out = Vec::new();
    let mut at = 0;
    for size in sizes {
        let end = (at + usize::from(*size)).min(body.len());
        out.push(&body[at..end]);
        at = end;
    }
    out.push(&body[at..]);
    out
}
