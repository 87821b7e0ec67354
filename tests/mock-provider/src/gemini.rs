//! Gemini `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`, modelled on
//! fixtures/gemini/generate_content_basic.json / generate_content_function_call.json (JSON, in
//! Google's wire order and 2-space layout) and stream_generate_content.sse /
//! stream_function_call.sse (CRLF framing, Google's `"key": value` spacing, every chunk a full
//! GenerateContentResponse with `usageMetadata`, the function call whole in one chunk).

use crate::reply::{Ctx, Plan, Reject, Reply};
use crate::wire::{pretty, text, word, Alphabet, Events, Json, Out};
use serde::de::IgnoredAny;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest {
    tools: Option<Vec<Tool>>,
    #[serde(alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
}

/// Google's JSON mapping accepts both camelCase and snake_case field names.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tool {
    #[serde(alias = "function_declarations")]
    function_declarations: Option<Vec<IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
}

pub(crate) fn generate(ctx: &Ctx<'_>, model: &str, stream: bool) -> Result<Reply, Reject> {
    let req: GenerateRequest = serde_json::from_slice(ctx.body)
        .map_err(|e| Reject(format!("Invalid JSON payload received. {e}")))?;
    let has_tools = req.tools.iter().flatten().any(|t| {
        t.function_declarations
            .as_ref()
            .is_some_and(|f| !f.is_empty())
    });
    let plan = ctx.plan(
        req.generation_config.and_then(|g| g.max_output_tokens),
        has_tools,
    );
    if stream {
        Ok(ctx.stream(chunks(ctx, model, &plan)))
    } else {
        let mut o = Out::with_capacity(1024);
        o.push(b"{");
        candidate_and_usage(&mut o, &plan, ContentPart::Whole, true, true);
        write!(
            o,
            r#","modelVersion":{},"responseId":"{}"}}"#,
            Json(model),
            response_id(ctx)
        );
        Ok(Reply::Json {
            status: http::StatusCode::OK,
            body: pretty(&o.0).into(),
        })
    }
}

fn response_id(ctx: &Ctx<'_>) -> crate::wire::Id {
    ctx.id("", 0, Alphabet::Base64Url, 23)
}

fn finish_reason(plan: &Plan<'_>) -> &'static str {
    // Gemini has no tool-call finish reason: a function call ends with STOP too.
    if plan.truncated && plan.tool.is_none() {
        "MAX_TOKENS"
    } else {
        "STOP"
    }
}

/// Which text a candidate carries.
#[derive(Clone, Copy)]
enum ContentPart {
    /// The whole answer (JSON body, or the single chunk of a function call).
    Whole,
    /// One streamed word.
    Word(usize),
    /// The empty text part Gemini sends when there is nothing left to say.
    Empty,
}

/// Writes `"candidates": […],"usageMetadata": {…}`. `last` adds the finish reason and the
/// output counts, which Gemini only reports once the candidate is finished; `avg_logprobs` is
/// only in non-streamed bodies.
fn candidate_and_usage(
    o: &mut Out,
    plan: &Plan<'_>,
    part: ContentPart,
    last: bool,
    avg_logprobs: bool,
) {
    o.push(br#""candidates": [{"content": {"parts": ["#);
    match (plan.tool, part) {
        (Some(tool), _) => write!(
            o,
            r#"{{"functionCall": {{"name": {},"args": {}}}}}"#,
            Json(tool.name),
            tool.args
        ),
        (None, ContentPart::Whole) => write!(o, r#"{{"text": {}}}"#, Json(&text(plan.words))),
        (None, ContentPart::Word(i)) => write!(o, r#"{{"text": {}}}"#, Json(word(i))),
        (None, ContentPart::Empty) => o.push(br#"{"text": ""}"#),
    }
    o.push(br#"],"role": "model"}"#);
    if last {
        write!(o, r#","finishReason": "{}""#, finish_reason(plan));
        if avg_logprobs {
            o.push(br#","avgLogprobs": -0.0625"#);
        }
    }
    let t = plan.tokens;
    write!(
        o,
        r#"}}],"usageMetadata": {{"promptTokenCount": {}"#,
        t.prompt
    );
    // Gemini omits zero counters; cached tokens are part of promptTokenCount.
    if t.cached > 0 {
        write!(o, r#","cachedContentTokenCount": {}"#, t.cached);
    }
    if last {
        write!(
            o,
            r#","candidatesTokenCount": {},"totalTokenCount": {}"#,
            t.output,
            t.total()
        );
    } else {
        write!(o, r#","totalTokenCount": {}"#, t.prompt);
    }
    write!(
        o,
        r#","promptTokensDetails": [{{"modality": "TEXT","tokenCount": {}}}]"#,
        t.prompt
    );
    if t.cached > 0 {
        write!(
            o,
            r#","cacheTokensDetails": [{{"modality": "TEXT","tokenCount": {}}}]"#,
            t.cached
        );
    }
    if last {
        write!(
            o,
            r#","candidatesTokensDetails": [{{"modality": "TEXT","tokenCount": {}}}]"#,
            t.output
        );
    }
    o.push(b"}");
}

/// One chunk per word (the last one carries finishReason and the final usage); a function call
/// is a single chunk; zero words give one chunk with an empty text part.
fn chunks(ctx: &Ctx<'_>, model: &str, plan: &Plan<'_>) -> Events {
    let count = if plan.tool.is_some() {
        1
    } else {
        plan.words.max(1)
    };
    let mut ev = Events::with_capacity(400 * count, count);
    let rid = response_id(ctx).to_string();
    for i in 0..count {
        let part = match (plan.tool, plan.words) {
            (Some(_), _) => ContentPart::Whole,
            (None, 0) => ContentPart::Empty,
            (None, _) => ContentPart::Word(i),
        };
        ev.out.push(b"data: {");
        candidate_and_usage(&mut ev.out, plan, part, i + 1 == count, false);
        write!(
            ev.out,
            r#","modelVersion": {},"responseId": "{rid}"}}"#,
            Json(model)
        );
        ev.out.push(b"\r\n\r\n");
        ev.end();
    }
    ev
}

/// `models/{model}:countTokens`: `{"totalTokens":P}`. The body holds either `contents` or
/// a whole `generateContentRequest` (with its `model`), never both.
pub(crate) fn count_tokens(ctx: &Ctx<'_>) -> Result<Reply, Reject> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Count {
        contents: Option<IgnoredAny>,
        generate_content_request: Option<Inner>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Inner {
        model: String,
        // Required, as Gemini requires it; its value is not looked at.
        #[allow(dead_code)]
        contents: IgnoredAny,
    }
    let count: Count = serde_json::from_slice(ctx.body).map_err(Reject::json)?;
    match (&count.contents, &count.generate_content_request) {
        (Some(_), None) => {}
        (None, Some(inner)) if inner.model.starts_with("models/") => {}
        _ => {
            return Err(Reject(
                "countTokens takes contents or generateContentRequest (with model: models/…)"
                    .to_owned(),
            ))
        }
    }
    let prompt = ctx.tokens(0).prompt;
    let mut o = Out::with_capacity(96);
    write!(
        o,
        r#"{{"totalTokens":{prompt},"promptTokensDetails":[{{"modality":"TEXT","tokenCount":{prompt}}}]}}"#
    );
    Ok(Reply::Json {
        status: http::StatusCode::OK,
        body: o.0.into(),
    })
}
