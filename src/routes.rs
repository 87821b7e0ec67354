//! The HTTP surface of the main listeners: which route a request is, and which format the
//! client speaks there.

use http::Method;

use crate::format::Format;

/// What the client asked sira to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    ChatCompletions,
    Responses,
    Messages,
    CountTokens,
    /// Gemini `generateContent` (`stream: false`) or `streamGenerateContent` (`stream: true`).
    GenerateContent {
        stream: bool,
    },
    Embeddings,
    ListModels,
}

/// A recognised route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub op: Operation,
    /// The format of the client's request and of the response it expects.
    pub format: Format,
    /// Gemini carries the model in the path.
    pub path_model: Option<&'a str>,
}

/// Why a request matched no route.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    /// The path exists but not with this method.
    MethodNotAllowed(&'static str),
}

/// Maps method and path to a route.
pub fn classify<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, RouteError> {
    let (op, format, path_model) = match path {
        "/v1/chat/completions" | "/chat/completions" => {
            (Operation::ChatCompletions, Format::OpenAiChat, None)
        }
        "/v1/responses" | "/responses" => (Operation::Responses, Format::OpenAiResponses, None),
        "/v1/messages" => (Operation::Messages, Format::Anthropic, None),
        "/v1/messages/count_tokens" => (Operation::CountTokens, Format::Anthropic, None),
        "/v1/embeddings" | "/embeddings" => (Operation::Embeddings, Format::OpenAiChat, None),
        "/v1/models" | "/models" => {
            return if method == Method::GET {
                Ok(Route {
                    op: Operation::ListModels,
                    format: Format::OpenAiChat,
                    path_model: None,
                })
            } else {
                Err(RouteError::MethodNotAllowed("GET"))
            };
        }
        _ => {
            let (model, stream) = gemini_model(path).ok_or(RouteError::NotFound)?;
            (
                Operation::GenerateContent { stream },
                Format::Gemini,
                Some(model),
            )
        }
    };
    if method != Method::POST {
        return Err(RouteError::MethodNotAllowed("POST"));
    }
    Ok(Route {
        op,
        format,
        path_model,
    })
}

/// `/v1beta/models/{model}:generateContent` (also `/v1/models/…`, the google-genai default),
/// returning the model and whether it is the streaming method.
fn gemini_model(path: &str) -> Option<(&str, bool)> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, method) = rest.rsplit_once(':')?;
    if model.is_empty() || model.contains('/') {
        return None;
    }
    match method {
        "generateContent" => Some((model, false)),
        "streamGenerateContent" => Some((model, true)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_surfaces() {
        let r = classify(&Method::POST, "/v1/chat/completions").unwrap();
        assert_eq!(
            (r.op, r.format),
            (Operation::ChatCompletions, Format::OpenAiChat)
        );
        let r = classify(&Method::POST, "/v1/messages").unwrap();
        assert_eq!(r.format, Format::Anthropic);
        let r = classify(
            &Method::POST,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        )
        .unwrap();
        assert_eq!(r.op, Operation::GenerateContent { stream: true });
        assert_eq!(r.path_model, Some("gemini-2.5-flash"));
        let r = classify(&Method::POST, "/v1/models/gemini-2.0:generateContent").unwrap();
        assert_eq!(
            (r.op, r.path_model),
            (
                Operation::GenerateContent { stream: false },
                Some("gemini-2.0")
            )
        );
        assert_eq!(
            classify(&Method::GET, "/v1/models").unwrap().op,
            Operation::ListModels
        );
    }

    #[test]
    fn rejects_unknown_paths_and_methods() {
        assert_eq!(
            classify(&Method::POST, "/v2/chat"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            classify(&Method::GET, "/v1/chat/completions"),
            Err(RouteError::MethodNotAllowed("POST"))
        );
        assert_eq!(
            classify(&Method::POST, "/v1/models"),
            Err(RouteError::MethodNotAllowed("GET"))
        );
        assert_eq!(
            classify(&Method::POST, "/v1beta/models/x:embed"),
            Err(RouteError::NotFound)
        );
    }
}
