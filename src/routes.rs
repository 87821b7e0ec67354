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
    /// `GET` / `DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`: a
    /// response sira stored ([`crate::responses_store`]).
    StoredResponse(StoredAction),
}

/// What a client asks of a stored response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredAction {
    Get,
    Delete,
    InputItems,
}

/// A recognised route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub op: Operation,
    /// The format of the client's request and of the response it expects.
    pub format: Format,
    /// Gemini carries the model in the path.
    pub path_model: Option<&'a str>,
    /// The stored response a `/v1/responses/{id}` route names.
    pub response_id: Option<&'a str>,
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
                    response_id: None,
                })
            } else {
                Err(RouteError::MethodNotAllowed("GET"))
            };
        }
        _ if stored_response(path).is_some() => {
            let (id, items) = stored_response(path).ok_or(RouteError::NotFound)?;
            let action = match (method, items) {
                (&Method::GET, false) => StoredAction::Get,
                (&Method::DELETE, false) => StoredAction::Delete,
                (&Method::GET, true) => StoredAction::InputItems,
                (_, false) => return Err(RouteError::MethodNotAllowed("GET, DELETE")),
                (_, true) => return Err(RouteError::MethodNotAllowed("GET")),
            };
            return Ok(Route {
                op: Operation::StoredResponse(action),
                format: Format::OpenAiResponses,
                path_model: None,
                response_id: Some(id),
            });
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
        response_id: None,
    })
}

/// `/v1/responses/{id}` or `/v1/responses/{id}/input_items` (also without `/v1`), returning
/// the id and whether it is the input items. Ids are one plain segment of URL-safe
/// characters: they are looked up, never spliced into anything.
fn stored_response(path: &str) -> Option<(&str, bool)> {
    let rest = path
        .strip_prefix("/v1/responses/")
        .or_else(|| path.strip_prefix("/responses/"))?;
    let (id, items) = match rest.strip_suffix("/input_items") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    // `input_tokens`, `compact` and other sub-resources of OpenAI's are not responses.
    if matches!(id, "input_tokens" | "compact") {
        return None;
    }
    valid_response_id(id).then_some((id, items))
}

/// Whether `id` can name a stored response: one plain segment of URL-safe characters, so it
/// is looked up and echoed, never spliced into anything.
pub fn valid_response_id(id: &str) -> bool {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    !id.is_empty() && id.len() <= 128 && id.chars().all(plain)
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
        let r = classify(&Method::GET, "/v1/responses/resp_1").unwrap();
        assert_eq!(
            (r.op, r.response_id),
            (Operation::StoredResponse(StoredAction::Get), Some("resp_1"))
        );
        let r = classify(&Method::GET, "/v1/responses/resp_1/input_items").unwrap();
        assert_eq!(r.op, Operation::StoredResponse(StoredAction::InputItems));
        let r = classify(&Method::DELETE, "/responses/resp_1").unwrap();
        assert_eq!(r.op, Operation::StoredResponse(StoredAction::Delete));
        assert_eq!(
            classify(&Method::POST, "/v1/responses/resp_1"),
            Err(RouteError::MethodNotAllowed("GET, DELETE"))
        );
        assert!(classify(&Method::GET, "/v1/responses/a%2Fb").is_err());
        assert!(classify(&Method::GET, "/v1/responses/").is_err());
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
