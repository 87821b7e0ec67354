//! `*` wildcards for model names (`openai/*`, `claude-*-latest`).
//!
//! Model names are short and patterns few, so a direct matcher beats pulling in a glob
//! crate built for paths (where `/` is special, which it must not be here).

/// A compiled pattern: the literal pieces between `*`s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    pieces: Vec<String>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob {
            pattern: pattern.to_owned(),
            pieces: pattern.split('*').map(str::to_owned).collect(),
        }
    }

    pub fn is_wildcard(pattern: &str) -> bool {
        pattern.contains('*')
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Characters that must match literally: more means more specific.
    pub fn literal_len(&self) -> usize {
        self.pieces.iter().map(String::len).sum()
    }

    pub fn matches(&self, text: &str) -> bool {
        self.capture(text).is_some()
    }

    /// Matches `text` and returns what the first `*` matched (`""` for a pattern without `*`).
    pub fn capture<'t>(&self, text: &'t str) -> Option<&'t str> {
        let (first, rest) = self.pieces.split_first()?;
        let Some((last, middle)) = rest.split_last() else {
            return (text == first).then_some("");
        };
        let body = text.strip_prefix(first.as_str())?;
        if body.len() < last.len() || !body.ends_with(last.as_str()) {
            return None;
        }
        let body = &body[..body.len() - last.len()];
        // Leftmost-shortest for the middle pieces; the first `*` captures up to the first
        // middle piece (or everything when there is none).
        let mut pos = 0;
        let mut capture_end = body.len();
        for (i, piece) in middle.iter().enumerate() {
            let found = body[pos..].find(piece.as_str())?;
            if i == 0 {
                capture_end = pos + found;
            }
            pos += found + piece.len();
        }
        Some(&body[..capture_end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_the_first_star() {
        let g = Glob::new("openai/*");
        assert_eq!(g.capture("openai/gpt-4o"), Some("gpt-4o"));
        assert_eq!(g.capture("openai/"), Some(""));
        assert_eq!(g.capture("anthropic/x"), None);
        assert_eq!(Glob::new("*").capture("anything"), Some("anything"));
        assert_eq!(
            Glob::new("claude-*-latest").capture("claude-3-opus-latest"),
            Some("3-opus")
        );
        assert_eq!(Glob::new("a*b*c").capture("axxbyyc"), Some("xx"));
        assert_eq!(Glob::new("a*b*c").capture("axxc"), None);
        assert_eq!(Glob::new("gpt-4o").capture("gpt-4o"), Some(""));
        assert_eq!(Glob::new("gpt-4o").capture("gpt-4o-mini"), None);
        assert_eq!(Glob::new("ab*ba").capture("aba"), None);
    }

    #[test]
    fn specificity() {
        assert!(Glob::new("openai/gpt-*").literal_len() > Glob::new("openai/*").literal_len());
    }
}
