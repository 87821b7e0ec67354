//! `max-prompt-tokens`: refuses a request whose prompt is estimated above a bound, before
//! it costs anything. The estimate is the text of every string in the body (not its keys)
//! at four bytes a token, the rule of thumb the providers themselves publish; it is meant as
//! a guard against runaway contexts, not as the provider's count.

use serde::Deserialize;

use crate::{Filter, FilterError, Side};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaxPromptSpec {
    pub max: u64,
    #[serde(default)]
    pub at: Side,
}

impl MaxPromptSpec {
    pub fn build(&self) -> Result<MaxPrompt, FilterError> {
        if self.max == 0 {
            return Err(FilterError::InvalidOption("max must be at least 1".into()));
        }
        Ok(MaxPrompt {
            max: self.max,
            side: self.at,
        })
    }
}

#[derive(Debug)]
pub struct MaxPrompt {
    max: u64,
    side: Side,
}

impl Filter for MaxPrompt {
    fn side(&self) -> Side {
        self.side
    }

    fn edits_request_body(&self) -> bool {
        true
    }

    fn on_request_body(
        &self,
        body: &[u8],
        _memo: &mut crate::Memo,
    ) -> Result<Option<Vec<u8>>, FilterError> {
        let mut value = crate::json_body(body)?;
        self.on_request_tree(&mut value).map(|_| None)
    }

    fn edits_request_tree(&self) -> bool {
        true
    }

    fn on_request_tree(&self, doc: &mut serde_json::Value) -> Result<bool, FilterError> {
        let mut bytes = 0u64;
        crate::any_string(doc, &mut |text| {
            bytes += text.len() as u64;
            false
        });
        let estimate = bytes.div_ceil(4);
        if estimate > self.max {
            return Err(FilterError::PromptTooLong(format!(
                "the prompt is about {estimate} tokens, over this gateway's limit of {}",
                self.max
            )));
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_over_the_bound_is_refused_with_its_estimate() {
        let filter = MaxPromptSpec {
            max: 5,
            at: Side::Client,
        }
        .build()
        .unwrap_or_else(|e| unreachable!("{e}"));
        let short = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        assert!(filter
            .on_request_body(short, &mut crate::Memo::default())
            .is_ok_and(|edit| edit.is_none()));
        let long = format!(
            r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
            "x".repeat(40)
        );
        let err = filter
            .on_request_body(long.as_bytes(), &mut crate::Memo::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("about 11 tokens") && err.contains("limit of 5"),
            "{err}"
        );
        assert!(MaxPromptSpec {
            max: 0,
            at: Side::Client
        }
        .build()
        .is_err());
    }
}
