//! Gemini requests: client body → canonical, canonical → upstream body.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::value::RawValue;

use super::wire::*;
use crate::format::Format;
use crate::translate::error::TranslateError;
use crate::translate::history::{self, TurnPart};
use crate::translate::ir::*;
use crate::translate::util::{compact, is_object, split_signature, to_body, to_raw};
use crate::translate::RequestOptions;

// ------------------------------------------------------------------ client → canonical

pub(crate) fn parse(body: &[u8]) -> Result<Request<'_>, TranslateError> {
    let req: GenerateRequest<'_> = serde_json::from_slice(body)?;
    if let Some(name) = req.cached_content {
        return Err(TranslateError::StoredState {
            param: "cachedContent",
            id: name.into_owned(),
        });
    }
    let cfg = req.generation_config;
    let mut out = Request {
        late_system: LateSystem::Hoist,
        max_tokens: cfg.max_output_tokens,
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        top_k: cfg.top_k.map(|k| k as u64),
        stop: cfg.stop_sequences,
        n: cfg.candidate_count,
        seed: cfg.seed,
        presence_penalty: cfg.presence_penalty,
        frequency_penalty: cfg.frequency_penalty,
        logprobs: cfg.response_logprobs,
        top_logprobs: cfg.logprobs,
        thinking_param: "generationConfig.thinkingConfig",
        ..Request::default()
    };
    if req.safety_settings.is_some() {
        out.dropped.push("safetySettings");
    }
    if req.labels.is_some() {
        out.dropped.push("labels");
    }
    if cfg
        .response_modalities
        .iter()
        .any(|m| !m.eq_ignore_ascii_case("text"))
    {
        return Err(TranslateError::invalid(
            "generationConfig.responseModalities",
            "only TEXT output can be translated",
        ));
    }
    if let Some(system) = req.system_instruction {
        let parts = parts(system.parts, &mut Pairing::default(), 0)?;
        out.messages.push(Message {
            role: Role::System,
            parts,
        });
    }
    let mut pairing = Pairing::default();
    for (turn, content) in req.contents.into_iter().enumerate() {
        let role = match content.role.as_deref() {
            Some("model") => Role::Assistant,
            Some("user") | Some("function") | None => Role::User,
            Some(other) => {
                return Err(TranslateError::invalid(
                    "contents",
                    format!("unknown role `{other}`"),
                ))
            }
        };
        out.messages.push(Message {
            role,
            parts: parts(content.parts, &mut pairing, turn)?,
        });
    }
    for tool in req.tools {
        if tool.has_builtin() {
            return Err(TranslateError::invalid(
                "tools",
                "Gemini built-in tools cannot be translated",
            ));
        }
        for f in tool.function_declarations {
            out.tools.push(Tool {
                name: f.name,
                description: f.description,
                schema: match (f.parameters_json_schema, f.parameters) {
                    (Some(json), _) => Schema::Json(json),
                    (None, Some(openapi)) => Schema::Gemini(openapi),
                    (None, None) => Schema::None,
                },
                strict: None,
                cache_control: None,
            });
        }
    }
    if let Some(cfg) = req.tool_config.and_then(|c| c.function_calling_config) {
        let mut names = cfg.allowed_function_names;
        out.tool_choice = match (cfg.mode.as_deref().unwrap_or("AUTO"), names.len()) {
            ("NONE", _) => Some(ToolChoice::None),
            ("ANY", 1) => names.pop().map(ToolChoice::Named),
            ("ANY", 0) => Some(ToolChoice::Required),
            ("ANY", _) => Some(ToolChoice::Allowed {
                required: true,
                names,
            }),
            (_, 0) => Some(ToolChoice::Auto),
            (_, _) => Some(ToolChoice::Allowed {
                required: false,
                names,
            }),
        };
    }
    out.format = match (
        cfg.response_mime_type.as_deref(),
        cfg.response_json_schema,
        cfg.response_schema,
    ) {
        (_, Some(schema), _) => Some(json_schema(Schema::Json(schema))),
        (_, None, Some(schema)) => Some(json_schema(Schema::Gemini(schema))),
        (Some("application/json"), None, None) => Some(OutputFormat::JsonObject),
        _ => None,
    };
    if let Some(t) = cfg.thinking_config {
        out.include_thoughts = t.include_thoughts.unwrap_or(false);
        out.thinking = match (t.thinking_budget, t.thinking_level.as_deref()) {
            (Some(0), _) => Some(Thinking::Disabled),
            (Some(b), _) if b < 0 => Some(Thinking::Adaptive),
            (Some(b), _) => Some(Thinking::Budget(u32::try_from(b).unwrap_or(u32::MAX))),
            (None, Some(level)) => {
                Some(Thinking::Effort(Effort::parse(level).ok_or_else(|| {
                    TranslateError::invalid(
                        "generationConfig.thinkingConfig",
                        format!("unknown thinkingLevel `{level}`"),
                    )
                })?))
            }
            (None, None) => None,
        };
    }
    Ok(out)
}

fn json_schema(schema: Schema<'_>) -> OutputFormat<'_> {
    OutputFormat::JsonSchema {
        name: None,
        description: None,
        schema,
        strict: None,
    }
}

/// Gemini 2.x history has no call ids: calls get positional ids and each functionResponse
/// takes the oldest pending call of the same name (§2.4).
#[derive(Default)]
struct Pairing {
    pending: Vec<(String, String)>,
}

fn parts<'a>(
    items: Vec<PartIn<'a>>,
    pairing: &mut Pairing,
    turn: usize,
) -> Result<Vec<Part<'a>>, TranslateError> {
    let mut out = Vec::with_capacity(items.len());
    for (i, p) in items.into_iter().enumerate() {
        if let Some(call) = p.function_call {
            let id = call
                .id
                .unwrap_or_else(|| Cow::Owned(format!("call_{turn}_{i}")));
            pairing
                .pending
                .push((call.name.to_string(), id.to_string()));
            out.push(Part::ToolCall(ToolCall {
                id,
                name: call.name,
                args: call
                    .args
                    .map_or(Args::Text(Cow::Borrowed("{}")), Args::Json),
            }));
        } else if let Some(resp) = p.function_response {
            let id = match resp.id {
                Some(id) => {
                    pairing.pending.retain(|(_, pending)| *pending != *id);
                    id
                }
                None => match pairing
                    .pending
                    .iter()
                    .position(|(name, _)| *name == *resp.name)
                {
                    Some(pos) => Cow::Owned(pairing.pending.remove(pos).1),
                    None => Cow::Owned(format!("call_{turn}_{i}")),
                },
            };
            out.push(Part::ToolResult(ToolResult {
                id,
                content: vec![Part::text(response_text(resp.response))],
                name: Some(resp.name),
                is_error: false,
            }));
        } else if let Some(blob) = p.inline_data {
            out.push(Part::Media {
                kind: media_kind(&blob.mime_type),
                source: Source::Base64 {
                    mime: blob.mime_type,
                    data: blob.data,
                },
                cache_control: None,
            });
        } else if let Some(file) = p.file_data {
            out.push(Part::Media {
                kind: file
                    .mime_type
                    .as_deref()
                    .map_or(MediaKind::Image, media_kind),
                source: Source::Url {
                    url: file.file_uri,
                    mime: file.mime_type,
                },
                cache_control: None,
            });
        } else if let Some(text) = p.text {
            if p.thought {
                // A streamed thought comes back as several parts, its signature on the last
                // (often empty) one: one thought, one signature.
                if let Some(Part::Thinking {
                    text: previous,
                    signature: unsigned @ None,
                }) = out.last_mut()
                {
                    previous.to_mut().push_str(&text);
                    *unsigned = p.thought_signature.map(native_signature);
                    continue;
                }
                out.push(Part::Thinking {
                    text,
                    signature: p.thought_signature.map(native_signature),
                });
            } else {
                out.push(Part::text(text));
            }
        } else if p.thought {
            // A signed thought with its empty text left out (protobuf JSON omits empty
            // strings): the signature alone, joined to the thought before it.
            match out.last_mut() {
                Some(Part::Thinking {
                    signature: unsigned @ None,
                    ..
                }) => *unsigned = p.thought_signature.map(native_signature),
                _ => out.push(Part::Thinking {
                    text: Cow::Borrowed(""),
                    signature: p.thought_signature.map(native_signature),
                }),
            }
        } else {
            return Err(TranslateError::invalid(
                "contents",
                "unsupported part (executable code or other Gemini-only data)",
            ));
        }
    }
    Ok(out)
}

fn media_kind(mime: &str) -> MediaKind {
    if mime.starts_with("image/") {
        MediaKind::Image
    } else if mime.starts_with("audio/") {
        MediaKind::Audio
    } else {
        MediaKind::Document
    }
}

/// A functionResponse `response` object as tool-result text: sira's own `{"output": "…"}`
/// wrapper is unwrapped, anything else is compact JSON (§2.4).
pub(crate) fn response_text(response: Option<&RawValue>) -> Cow<'_, str> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapped<'a> {
        #[serde(borrow)]
        output: Cow<'a, str>,
    }
    match response {
        None => Cow::Borrowed(""),
        Some(raw) => match serde_json::from_str::<Wrapped<'_>>(raw.get()) {
            Ok(w) => w.output,
            Err(_) => compact(raw.get()),
        },
    }
}

// ------------------------------------------------------------------ canonical → upstream

pub(crate) fn write(
    req: &Request<'_>,
    opts: &RequestOptions<'_>,
    dropped: &mut Vec<&'static str>,
) -> Result<Vec<u8>, TranslateError> {
    dropped.extend(req.openai.set_fields());
    if req.user.is_some() {
        dropped.push("user");
    }
    if req.parallel_tool_calls.is_some() {
        // Gemini has no switch for parallel calls (§2.4).
        dropped.push("parallel_tool_calls");
    }
    // Gemini answers tool results by function name; OpenAI/Anthropic results only carry the
    // call id, so look the name up from the calls in the same request (§2.4).
    let mut names: HashMap<&str, &str> = HashMap::new();
    for m in &req.messages {
        for p in &m.parts {
            if let Part::ToolCall(call) = p {
                names.insert(&call.id, &call.name);
            }
        }
    }
    let history = history::build(&req.messages, req.late_system);
    let system_instruction = (!history.system.is_empty()).then(|| SystemOut {
        parts: history
            .system
            .iter()
            .filter_map(|p| match p {
                Part::Text { text, .. } => Some(text_part(Cow::Borrowed(text))),
                _ => None,
            })
            .collect(),
    });
    let mut contents = Vec::with_capacity(history.turns.len());
    for turn in &history.turns {
        let mut parts = Vec::with_capacity(turn.parts.len());
        for p in &turn.parts {
            match p {
                TurnPart::SystemText(text) => {
                    parts.push(text_part(Cow::Owned(history::wrap_system(text))))
                }
                TurnPart::Part(p) => write_part(p, &names, &mut parts)?,
            }
        }
        if !parts.is_empty() {
            contents.push(ContentOut {
                role: if turn.role == Role::Assistant {
                    "model"
                } else {
                    "user"
                },
                parts,
            });
        }
    }

    let mut tools = if req.tools.is_empty() {
        Vec::new()
    } else {
        vec![ToolOut {
            function_declarations: req
                .tools
                .iter()
                .map(|t| FunctionDeclOut {
                    name: &t.name,
                    description: t.description.as_deref(),
                    // Gemini-native schemas stay in `parameters`; JSON Schema goes to
                    // `parametersJsonSchema`, which accepts the full dialect (§2.4).
                    parameters: match t.schema {
                        Schema::Gemini(raw) => Some(raw),
                        _ => None,
                    },
                    parameters_json_schema: match t.schema {
                        Schema::Gemini(_) => None,
                        _ => Some(t.schema.json_schema()),
                    },
                })
                .collect(),
            google_search: None,
        }]
    };
    if let Some(search) = &req.web_search {
        // Google Search grounding has no site filter: a search limited to some sites is not
        // widened to the whole web, it is dropped. Gemini 2.x refuses grounding beside
        // function declarations, and an agent turn must not fail for a search: with tools,
        // the search is dropped too.
        if opts.web_search && search.allowed_domains.is_empty() && req.tools.is_empty() {
            tools.push(ToolOut {
                function_declarations: Vec::new(),
                google_search: Some(EmptyOut {}),
            });
        } else {
            dropped.push("web_search");
        }
    }
    let tool_config = req.tool_choice.as_ref().map(|c| {
        let (mode, names): (&'static str, Vec<&str>) = match c {
            ToolChoice::Auto => ("AUTO", Vec::new()),
            ToolChoice::None => ("NONE", Vec::new()),
            ToolChoice::Required => ("ANY", Vec::new()),
            ToolChoice::Named(name) => ("ANY", vec![name]),
            ToolChoice::Allowed { required, names } => (
                if *required { "ANY" } else { "AUTO" },
                names.iter().map(|n| &**n).collect(),
            ),
        };
        ToolConfigOut {
            function_calling_config: FunctionCallingConfigOut {
                mode,
                allowed_function_names: names,
            },
        }
    });
    let mut generation_config = GenerationConfigOut {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        max_output_tokens: req.max_tokens,
        stop_sequences: &req.stop,
        candidate_count: req.n,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        response_logprobs: req.logprobs,
        logprobs: req.top_logprobs,
        ..GenerationConfigOut::default()
    };
    match &req.format {
        None => {}
        Some(OutputFormat::JsonObject) => {
            generation_config.response_mime_type = Some("application/json")
        }
        Some(OutputFormat::JsonSchema { schema, .. }) => {
            generation_config.response_mime_type = Some("application/json");
            match schema {
                Schema::Gemini(raw) => generation_config.response_schema = Some(raw),
                other => generation_config.response_json_schema = other.json_schema_opt(),
            }
        }
    }
    generation_config.thinking_config = req.thinking.map(|t| ThinkingConfigOut {
        thinking_budget: match t {
            // -1 asks Gemini for a dynamic budget.
            Thinking::Adaptive => -1,
            t => i64::from(t.budget()),
        },
        include_thoughts: req.include_thoughts && t.budget() != 0,
    });
    let out = GenerateRequestOut {
        contents,
        system_instruction,
        tools,
        tool_config,
        generation_config,
    };
    Ok(to_body(&out))
}

fn text_part(text: Cow<'_, str>) -> PartOut<'_> {
    PartOut {
        text: Some(text),
        ..PartOut::default()
    }
}

fn media_part<'r>(source: &'r Source<'_>) -> Result<PartOut<'r>, TranslateError> {
    Ok(match source {
        Source::Base64 { mime, data } => PartOut {
            inline_data: Some(BlobOut {
                mime_type: mime,
                data,
            }),
            ..PartOut::default()
        },
        Source::Url { url, mime } => PartOut {
            file_data: Some(FileDataOut {
                mime_type: mime.as_deref().unwrap_or_else(|| guess_mime(url)),
                file_uri: url,
            }),
            ..PartOut::default()
        },
        Source::FileId(_) => {
            return Err(TranslateError::unsupported(
                "messages",
                Format::Gemini,
                "OpenAI file ids cannot be resolved by Gemini",
            ))
        }
    })
}

/// `fileData` needs a MIME type; URLs from OpenAI/Anthropic clients do not carry one.
fn guess_mime(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        Some("mp3") => "audio/mpeg",
        Some("wav") => "audio/wav",
        _ => "application/octet-stream",
    }
}

fn write_part<'r>(
    p: &'r Part<'_>,
    names: &HashMap<&str, &'r str>,
    out: &mut Vec<PartOut<'r>>,
) -> Result<(), TranslateError> {
    match p {
        Part::Text { text, .. } => out.push(text_part(Cow::Borrowed(text))),
        Part::Media { source, .. } => out.push(media_part(source)?),
        Part::ToolCall(call) => {
            let (_, signature) = split_signature(&call.id);
            out.push(PartOut {
                function_call: Some(FunctionCallOut {
                    id: None,
                    name: &call.name,
                    args: call.args.to_object(),
                }),
                // Gemini 3 requires the signature back on the replayed call (§2.2).
                thought_signature: signature.map(Cow::Owned),
                ..PartOut::default()
            });
        }
        Part::ToolResult(r) => {
            let name = match (&r.name, names.get(&*r.id)) {
                (Some(name), _) => &**name,
                (None, Some(name)) => *name,
                (None, None) => {
                    return Err(TranslateError::invalid(
                        "messages",
                        format!(
                            "tool result `{}` does not answer any tool call in the request",
                            r.id
                        ),
                    ))
                }
            };
            let mut text = String::new();
            let mut media = Vec::new();
            for c in &r.content {
                match c {
                    Part::Text { text: t, .. } => text.push_str(t),
                    Part::Media { source, .. } => media.push(media_part(source)?),
                    _ => {}
                }
            }
            out.push(PartOut {
                function_response: Some(FunctionResponseOut {
                    name,
                    response: response_object(text, r.is_error),
                }),
                ..PartOut::default()
            });
            // Images returned by a tool follow the functionResponse parts (§11.3).
            out.extend(media);
        }
        // Gemini takes no reasoning back (thought signatures ride on the calls).
        Part::Thinking { .. } | Part::RedactedThinking { .. } => {}
    }
    Ok(())
}

/// `response` must be an object: a JSON-object result passes through parsed, anything else
/// is wrapped as `{"output": …}` ([ENVOY] convention, §2.4); errors as `{"error": …}`.
fn response_object(text: String, is_error: bool) -> Cow<'static, RawValue> {
    #[derive(serde::Serialize)]
    struct Wrapped<'b> {
        #[serde(skip_serializing_if = "Option::is_none")]
        output: Option<&'b str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'b str>,
    }
    if !is_error {
        if let Ok(raw) = RawValue::from_string(text.clone()) {
            if is_object(&raw) {
                return Cow::Owned(raw);
            }
        }
    }
    let w = if is_error {
        Wrapped {
            output: None,
            error: Some(&text),
        }
    } else {
        Wrapped {
            output: Some(&text),
            error: None,
        }
    };
    Cow::Owned(to_raw(&w))
}

/// An Anthropic signature a Gemini client carried (`ant1.`…) back as Anthropic's own.
fn native_signature(signature: Cow<'_, str>) -> Cow<'_, str> {
    match signature.strip_prefix(crate::translate::util::ANTHROPIC_SIGNATURE_PREFIX) {
        Some(native) => Cow::Owned(native.to_owned()),
        None => signature,
    }
}
