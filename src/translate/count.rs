//! Token counts at the provider's own counting endpoint: Anthropic's `count_tokens` request
//! becomes Gemini's `countTokens` or OpenAI's `responses/input_tokens`, and their answers
//! become Anthropic's `{"input_tokens": N}`. A count is never sent as a generation.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{translate_request, RequestOptions, TranslateError};
use crate::format::Format;

/// A provider's token-counting endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountApi {
    /// `models/{model}:countTokens`, given the whole `generateContentRequest` so that the
    /// system instruction and tools are counted too.
    Gemini,
    /// `POST /v1/responses/input_tokens`.
    OpenAi,
}

/// The fields OpenAI's counting endpoint takes; a generation's own (`stream`, `store`,
/// `max_output_tokens`, `include`…) are refused there.
const OPENAI_COUNT_FIELDS: [&str; 9] = [
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "reasoning",
    "text",
    "parallel_tool_calls",
    "truncation",
];

/// The counting request for `api`, from a client's count request in `from`.
pub fn count_request(
    api: CountApi,
    from: Format,
    body: &[u8],
    opts: &RequestOptions,
) -> Result<Vec<u8>, TranslateError> {
    let plain = RequestOptions {
        stream: false,
        // A count has no output: none of sira's cache breakpoints either.
        prompt_cache: false,
        ..*opts
    };
    match api {
        CountApi::Gemini => {
            let translated = translate_request(from, Format::Gemini, body, &plain)?;
            let mut inner: Map<String, Value> = serde_json::from_slice(&translated.body)?;
            inner.insert("model".into(), format!("models/{}", opts.model).into());
            let mut outer = Map::new();
            outer.insert("generateContentRequest".into(), Value::Object(inner));
            Ok(serde_json::to_vec(&outer)?)
        }
        CountApi::OpenAi => {
            let translated = translate_request(from, Format::OpenAiResponses, body, &plain)?;
            let mut map: Map<String, Value> = serde_json::from_slice(&translated.body)?;
            map.retain(|key, _| OPENAI_COUNT_FIELDS.contains(&key.as_str()));
            Ok(serde_json::to_vec(&map)?)
        }
    }
}

/// The provider's count as Anthropic's answer, and the count itself.
pub fn count_response(api: CountApi, body: &[u8]) -> Result<(Vec<u8>, u64), TranslateError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct GeminiCount {
        total_tokens: u64,
    }
    #[derive(Deserialize)]
    struct OpenAiCount {
        input_tokens: u64,
    }
    let tokens = match api {
        CountApi::Gemini => serde_json::from_slice::<GeminiCount>(body)?.total_tokens,
        CountApi::OpenAi => serde_json::from_slice::<OpenAiCount>(body)?.input_tokens,
    };
    Ok((
        format!(r#"{{"input_tokens":{tokens}}}"#).into_bytes(),
        tokens,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts() -> RequestOptions<'static> {
        RequestOptions {
            model: "m-1",
            stream: false,
            default_max_tokens: 1024,
            legacy_max_tokens: false,
            prompt_cache: true,
            web_search: false,
            seal: crate::translate::Seal::fixed(),
        }
    }

    fn claude_count() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "model": "claude", "system": "be brief",
            "tools": [{"name": "t", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "hello"}]
        }))
        .unwrap()
    }

    #[test]
    fn gemini_counts_the_whole_generation_request() {
        let body = count_request(
            CountApi::Gemini,
            Format::Anthropic,
            &claude_count(),
            &opts(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let inner = &v["generateContentRequest"];
        assert_eq!(inner["model"], "models/m-1");
        assert_eq!(inner["contents"][0]["parts"][0]["text"], "hello");
        assert!(inner["systemInstruction"].is_object(), "{v}");
        assert!(inner["tools"].is_array(), "{v}");
        assert_eq!(v.as_object().unwrap().len(), 1);
    }

    #[test]
    fn openai_gets_only_counting_fields() {
        let body = count_request(
            CountApi::OpenAi,
            Format::Anthropic,
            &claude_count(),
            &opts(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["model"], "m-1");
        assert_eq!(v["instructions"], "be brief");
        assert!(v["tools"].is_array());
        for key in v.as_object().unwrap().keys() {
            assert!(OPENAI_COUNT_FIELDS.contains(&key.as_str()), "{key}");
        }
    }

    #[test]
    fn answers_become_anthropics() {
        let (body, n) = count_response(
            CountApi::Gemini,
            br#"{"totalTokens":31,"promptTokensDetails":[]}"#,
        )
        .unwrap();
        assert_eq!((body.as_slice(), n), (&br#"{"input_tokens":31}"#[..], 31));
        let (body, _) = count_response(
            CountApi::OpenAi,
            br#"{"object":"response.input_tokens","input_tokens":7}"#,
        )
        .unwrap();
        assert_eq!(body, br#"{"input_tokens":7}"#);
        assert!(count_response(CountApi::OpenAi, b"{}").is_err());
    }
}
