//! Typed translation errors.

/// Why a body could not be translated.
///
/// Request errors are turned into a 400 in the client's error shape by the engine (Display is
/// the message, [`TranslateError::param`] the offending field).
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// The body is not valid JSON, or not the shape of its format.
    #[error("invalid request body: {0}")]
    Json(#[from] serde_json::Error),

    /// A field the target format cannot honour without changing the request's meaning
    /// ("never change meaning silently"), e.g. `n > 1` to Anthropic.
    #[error("`{param}` is not supported when translating to {target}: {reason}")]
    Unsupported {
        param: &'static str,
        target: &'static str,
        reason: &'static str,
    },

    /// A field has a value this translator cannot interpret.
    #[error("invalid value for `{param}`: {detail}")]
    Invalid { param: &'static str, detail: String },

    /// The request depends on state stored by OpenAI (`previous_response_id`, `conversation`,
    /// `item_reference`), which a stateless translator cannot expand (TRANSLATION.md §11.14).
    #[error("{}", stored_state_message(param, id))]
    StoredState { param: &'static str, id: String },

    /// The upstream answered 200 with a body that reports a failure (Responses
    /// `status:"failed"`).
    #[error("upstream response failed: {0}")]
    UpstreamFailed(String),

    /// A provider's stream made the translator hold more than its bound: one event, or a
    /// tool call's arguments held back until the call is complete.
    #[error("{what} larger than the gateway's limit of {limit} bytes ({})", buffer.setting())]
    TooLarge {
        what: &'static str,
        /// Which bound.
        buffer: crate::metrics::Buffer,
        limit: usize,
    },
}

/// OpenAI's own not-found wording for `previous_response_id`, so clients that handle it
/// behave the same (§11.14 rule 1).
fn stored_state_message(param: &str, id: &str) -> String {
    const RESEND: &str = "resend the full conversation in input with store:false";
    if param == "previous_response_id" {
        format!("Previous response with id '{id}' not found. It was not stored by this gateway for this key, or has expired; {RESEND}")
    } else {
        format!("`{param}` refers to '{id}', stored by OpenAI; this gateway does not store it: {RESEND}")
    }
}

impl TranslateError {
    /// The request field the error is about, when there is one.
    pub fn param(&self) -> Option<&str> {
        match self {
            TranslateError::Unsupported { param, .. }
            | TranslateError::Invalid { param, .. }
            | TranslateError::StoredState { param, .. } => Some(param),
            TranslateError::Json(_)
            | TranslateError::UpstreamFailed(_)
            | TranslateError::TooLarge { .. } => None,
        }
    }

    /// An OpenAI-style machine-readable code, when one is conventional for this error.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            TranslateError::Unsupported { .. } => Some("unsupported_parameter"),
            TranslateError::Invalid { .. } => Some("invalid_value"),
            TranslateError::StoredState { param, .. } if *param == "previous_response_id" => {
                Some("previous_response_not_found")
            }
            TranslateError::StoredState { .. } => Some("unsupported_parameter"),
            TranslateError::Json(_)
            | TranslateError::UpstreamFailed(_)
            | TranslateError::TooLarge { .. } => None,
        }
    }

    pub(crate) fn unsupported(
        param: &'static str,
        target: crate::format::Format,
        reason: &'static str,
    ) -> Self {
        TranslateError::Unsupported {
            param,
            target: target.as_str(),
            reason,
        }
    }

    pub(crate) fn invalid(param: &'static str, detail: impl Into<String>) -> Self {
        TranslateError::Invalid {
            param,
            detail: detail.into(),
        }
    }
}
