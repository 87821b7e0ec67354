//! OpenAI Chat requests: client body → canonical, canonical → upstream body.

use std::borrow::Cow;

use super::wire::*;
use crate::format::Format;
use crate::translate::error::TranslateError;
use crate::translate::ir::*;
use crate::translate::util::{openai_tool_id, parse_data_url, to_body, StrOr, StrOrObj};
use crate::translate::{RequestOptions, ResponseContext};

// ------------------------------------------------------------------ client → canonical

pub(crate) fn parse(body: &[u8]) -> Result<(Request<'_>, ResponseContext), TranslateError> {
    let req: ChatRequest<'_> = serde_json::from_slice(body)?;
    // OpenAI sends the trailing usage chunk only when asked (§5.2).
    let ctx = ResponseContext {
        include_usage: req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        ..ResponseContext::default()
    };
    let mut out = Request {
        late_system: LateSystem::Hoist,
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        n: req.n,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        logprobs: req.logprobs,
        top_logprobs: req.top_logprobs,
        parallel_tool_calls: req.parallel_tool_calls,
        user: req.user,
        ..Request::default()
    };
    out.stop = match req.stop {
        StrOr::Str(s) => vec![s],
        StrOr::Many(v) => v,
        StrOr::Null => Vec::new(),
    };
    out.openai = OpenAiExtras {
        store: req.store,
        metadata: req.metadata,
        service_tier: req.service_tier,
        prompt_cache_key: req.prompt_cache_key,
        safety_identifier: req.safety_identifier,
        verbosity: req.verbosity,
    };
    // Latency/search hints with no equivalent outside OpenAI Chat (§2.1).
    if req.prediction.is_some() {
        out.dropped.push("prediction");
    }
    if let Some(options) = req.web_search_options {
        #[derive(serde::Deserialize)]
        struct Options<'a> {
            #[serde(borrow)]
            user_location: Option<Located<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Located<'a> {
            #[serde(borrow)]
            approximate: Option<crate::translate::responses::wire::LocationIn<'a>>,
        }
        // A hint: a shape sira does not know still asks for a search, without a location.
        let location = serde_json::from_str::<Options<'_>>(options.get())
            .ok()
            .and_then(|o| o.user_location)
            .and_then(|l| l.approximate);
        out.web_search = Some(WebSearch {
            allowed_domains: Vec::new(),
            user_location: location.map(|l| l.into_ir()),
        });
    }
    if req.logit_bias.is_some_and(|b| b.get().trim() != "{}") {
        return Err(TranslateError::Unsupported {
            param: "logit_bias",
            target: "this provider",
            reason: "token biasing cannot be expressed",
        });
    }
    let wants_audio = req.audio.is_some() || req.modalities.iter().flatten().any(|m| m == "audio");
    if wants_audio {
        return Err(TranslateError::Unsupported {
            param: "modalities",
            target: "this provider",
            reason: "audio output is only available from OpenAI",
        });
    }

    for m in req.messages {
        out.messages.push(message(m)?);
    }

    for tool in req.tools.into_iter().flatten() {
        let Some(f) = tool.function.filter(|_| tool.kind == "function") else {
            return Err(TranslateError::invalid(
                "tools",
                format!("unsupported tool type `{}`", tool.kind),
            ));
        };
        out.tools.push(function_tool(f));
    }
    out.tools
        .extend(req.functions.into_iter().flatten().map(function_tool));
    out.tool_choice = match (req.tool_choice, req.function_call) {
        (Some(choice), _) => Some(tool_choice(choice)?),
        (None, Some(StrOrObj::Obj(named))) => Some(ToolChoice::Named(named.name)),
        (None, Some(StrOrObj::Str(mode))) => Some(mode_choice(&mode)?),
        (None, None) => None,
    };
    out.format = match req.response_format {
        None => None,
        Some(f) => match &*f.kind {
            "text" => None,
            "json_object" => Some(OutputFormat::JsonObject),
            "json_schema" => {
                let s = f.json_schema.ok_or_else(|| {
                    TranslateError::invalid("response_format", "json_schema is missing")
                })?;
                Some(OutputFormat::JsonSchema {
                    name: s.name,
                    description: s.description,
                    schema: s.schema.map_or(Schema::None, Schema::Json),
                    strict: s.strict,
                })
            }
            other => {
                return Err(TranslateError::invalid(
                    "response_format",
                    format!("unknown type `{other}`"),
                ))
            }
        },
    };
    if let Some(effort) = req.reasoning_effort {
        let e = Effort::parse(&effort).ok_or_else(|| {
            TranslateError::invalid("reasoning_effort", format!("unknown value `{effort}`"))
        })?;
        out.thinking = Some(Thinking::Effort(e));
    }
    Ok((out, ctx))
}

fn function_tool(f: FunctionDef<'_>) -> Tool<'_> {
    Tool {
        name: f.name,
        description: f.description,
        schema: f.parameters.map_or(Schema::None, Schema::Json),
        strict: f.strict,
        cache_control: None,
    }
}

fn mode_choice(mode: &str) -> Result<ToolChoice<'static>, TranslateError> {
    Ok(match mode {
        "auto" => ToolChoice::Auto,
        "none" => ToolChoice::None,
        "required" | "any" => ToolChoice::Required,
        other => {
            return Err(TranslateError::invalid(
                "tool_choice",
                format!("unknown value `{other}`"),
            ))
        }
    })
}

fn tool_choice<'a>(
    choice: StrOrObj<'a, ChatToolChoiceObj<'a>>,
) -> Result<ToolChoice<'a>, TranslateError> {
    match choice {
        StrOrObj::Str(mode) => mode_choice(&mode),
        StrOrObj::Obj(obj) => match (&*obj.kind, obj.function, obj.allowed_tools) {
            ("function", Some(f), _) => Ok(ToolChoice::Named(f.name)),
            ("allowed_tools", _, Some(allowed)) => Ok(ToolChoice::Allowed {
                required: allowed.mode == "required",
                names: allowed
                    .tools
                    .into_iter()
                    .filter_map(|t| t.function.map(|f| f.name))
                    .collect(),
            }),
            (kind, _, _) => Err(TranslateError::invalid(
                "tool_choice",
                format!("unsupported type `{kind}`"),
            )),
        },
    }
}

fn message(m: ChatMessage<'_>) -> Result<Message<'_>, TranslateError> {
    let role = match &*m.role {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" | "function" => {
            let id = match (m.tool_call_id, &m.name) {
                (Some(id), _) => id,
                // Legacy `function` results are paired with the call by name.
                (None, Some(name)) => Cow::Owned(format!("legacy_{name}")),
                (None, None) => {
                    return Err(TranslateError::invalid(
                        "messages",
                        "tool message without tool_call_id",
                    ))
                }
            };
            let result = ToolResult {
                id,
                name: m.name,
                content: parts(m.content)?,
                is_error: false,
            };
            return Ok(Message {
                role: Role::User,
                parts: vec![Part::ToolResult(result)],
            });
        }
        other => {
            return Err(TranslateError::invalid(
                "messages",
                format!("unknown role `{other}`"),
            ))
        }
    };
    let mut out = Vec::new();
    if role == Role::Assistant {
        // Thinking first: Anthropic wants it at the start of the assistant turn (§2.6).
        for block in m.thinking_blocks.into_iter().flatten() {
            match (&*block.kind, block.signature, block.data) {
                ("redacted_thinking", _, Some(data)) => out.push(Part::RedactedThinking { data }),
                (_, signature, _) => out.push(Part::Thinking {
                    text: block
                        .thinking
                        .or_else(|| m.reasoning_content.clone())
                        .unwrap_or_default(),
                    signature,
                }),
            }
        }
    }
    out.extend(parts(m.content)?);
    if let Some(refusal) = m.refusal.filter(|r| !r.is_empty()) {
        out.push(Part::text(refusal));
    }
    for call in m.tool_calls.into_iter().flatten() {
        out.push(Part::ToolCall(ToolCall {
            id: call.id.unwrap_or_default(),
            name: call.function.name,
            args: Args::Text(call.function.arguments.unwrap_or_default()),
        }));
    }
    if let Some(call) = m.function_call {
        out.push(Part::ToolCall(ToolCall {
            id: Cow::Owned(format!("legacy_{}", call.name)),
            name: call.name,
            args: Args::Text(call.arguments.unwrap_or_default()),
        }));
    }
    Ok(Message { role, parts: out })
}

fn parts<'a>(content: StrOr<'a, ChatPart<'a>>) -> Result<Vec<Part<'a>>, TranslateError> {
    match content {
        StrOr::Null => Ok(Vec::new()),
        StrOr::Str(text) => Ok(vec![Part::text(text)]),
        StrOr::Many(items) => items.into_iter().map(part).collect(),
    }
}

fn part(p: ChatPart<'_>) -> Result<Part<'_>, TranslateError> {
    Ok(match p {
        ChatPart::Text(t) => Part::text(t.text),
        ChatPart::Refusal(r) => Part::text(r.refusal),
        ChatPart::Image(img) => Part::Media {
            kind: MediaKind::Image,
            source: url_source(img.image_url.url),
            cache_control: None,
        },
        ChatPart::Audio(a) => Part::Media {
            kind: MediaKind::Audio,
            source: Source::Base64 {
                mime: Cow::Owned(format!("audio/{}", a.input_audio.format)),
                data: a.input_audio.data,
            },
            cache_control: None,
        },
        ChatPart::File(f) => {
            let source = match (f.file.file_data, f.file.file_id) {
                (Some(data), _) => url_source(data),
                (None, Some(id)) => Source::FileId(id),
                (None, None) => {
                    return Err(TranslateError::invalid(
                        "messages",
                        "file part without file_data or file_id",
                    ))
                }
            };
            Part::Media {
                kind: MediaKind::Document,
                source,
                cache_control: None,
            }
        }
        ChatPart::Unknown(raw) => {
            return Err(TranslateError::invalid(
                "messages",
                format!("unsupported content part {}", raw.get()),
            ))
        }
    })
}

/// `data:` URLs become base64 sources, anything else a URL source (§2.3).
pub(crate) fn url_source(url: Cow<'_, str>) -> Source<'_> {
    match url {
        Cow::Borrowed(u) => match parse_data_url(u) {
            Some((mime, data)) => Source::Base64 {
                mime: Cow::Borrowed(mime),
                data: Cow::Borrowed(data),
            },
            None => Source::Url { url, mime: None },
        },
        Cow::Owned(u) => match parse_data_url(&u) {
            Some((mime, data)) => Source::Base64 {
                mime: Cow::Owned(mime.to_owned()),
                data: Cow::Owned(data.to_owned()),
            },
            None => Source::Url {
                url: Cow::Owned(u),
                mime: None,
            },
        },
    }
}

// ------------------------------------------------------------------ canonical → upstream

pub(crate) fn write(
    req: &Request<'_>,
    opts: &RequestOptions<'_>,
    dropped: &mut Vec<&'static str>,
) -> Result<Vec<u8>, TranslateError> {
    if req.top_k.is_some() {
        // OpenAI has no top_k (§2.1: drop when going to OpenAI).
        dropped.push("top_k");
    }
    if req.web_search.is_some() {
        // Chat search runs only on OpenAI's search models, named as such by the client.
        dropped.push("web_search");
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        write_message(m, &mut messages)?;
    }
    let out = ChatRequestOut {
        model: opts.model,
        messages,
        max_completion_tokens: req.max_tokens.filter(|_| !opts.legacy_max_tokens),
        max_tokens: req.max_tokens.filter(|_| opts.legacy_max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        n: req.n,
        stop: &req.stop,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        logprobs: req.logprobs,
        top_logprobs: req.top_logprobs,
        stream: opts.stream,
        // The client format needs usage at the end of the stream; OpenAI only sends it when
        // asked (§5.2, §6.6).
        stream_options: opts.stream.then_some(StreamOptions {
            include_usage: true,
        }),
        tools: req.tools.iter().map(tool).collect(),
        tool_choice: req.tool_choice.as_ref().map(write_tool_choice),
        parallel_tool_calls: req.parallel_tool_calls,
        response_format: req.format.as_ref().map(response_format),
        reasoning_effort: match req.thinking {
            None | Some(Thinking::Disabled) => None,
            Some(t) => Some(t.effort().as_str()),
        },
        user: req.user.as_deref(),
        safety_identifier: req.openai.safety_identifier.as_deref(),
        service_tier: req.openai.service_tier.as_deref(),
        prompt_cache_key: req.openai.prompt_cache_key.as_deref(),
        verbosity: req.openai.verbosity.as_deref(),
        store: req.openai.store,
        metadata: req.openai.metadata,
    };
    Ok(to_body(&out))
}

pub(crate) fn tool<'r>(t: &'r Tool<'_>) -> ToolOut<'r> {
    ToolOut {
        kind: "function",
        function: FunctionDefOut {
            name: &t.name,
            description: t.description.as_deref().map(Cow::Borrowed),
            parameters: t.schema.json_schema(),
            strict: t.strict,
        },
    }
}

fn named(name: &str) -> ToolChoiceOut<'_> {
    ToolChoiceOut::Named {
        kind: "function",
        function: NamedFunctionOut { name },
    }
}

fn write_tool_choice<'r>(c: &'r ToolChoice<'_>) -> ToolChoiceOut<'r> {
    match c {
        ToolChoice::Auto => ToolChoiceOut::Mode("auto"),
        ToolChoice::None => ToolChoiceOut::Mode("none"),
        ToolChoice::Required => ToolChoiceOut::Mode("required"),
        ToolChoice::Named(name) => named(name),
        ToolChoice::Allowed { required, names } => ToolChoiceOut::Allowed {
            kind: "allowed_tools",
            allowed_tools: AllowedToolsOut {
                mode: if *required { "required" } else { "auto" },
                tools: names.iter().map(|n| named(n)).collect(),
            },
        },
    }
}

fn response_format<'r>(f: &'r OutputFormat<'_>) -> ResponseFormatOut<'r> {
    match f {
        OutputFormat::JsonObject => ResponseFormatOut {
            kind: "json_object",
            json_schema: None,
        },
        OutputFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        } => ResponseFormatOut {
            kind: "json_schema",
            json_schema: Some(JsonSchemaOut {
                name: name.as_deref().unwrap_or("response"),
                description: description.as_deref(),
                schema: schema.json_schema_opt(),
                strict: *strict,
            }),
        },
    }
}

fn media_url<'r>(source: &'r Source<'_>) -> Option<Cow<'r, str>> {
    match source {
        Source::Base64 { mime, data } => Some(Cow::Owned(format!("data:{mime};base64,{data}"))),
        Source::Url { url, .. } => Some(Cow::Borrowed(url)),
        Source::FileId(_) => None,
    }
}

fn write_part<'r>(p: &'r Part<'_>) -> Result<Option<PartOut<'r>>, TranslateError> {
    Ok(match p {
        Part::Text { text, .. } => Some(PartOut::Text { text }),
        Part::Media {
            kind: MediaKind::Image,
            source,
            ..
        } => match media_url(source) {
            Some(url) => Some(PartOut::ImageUrl {
                image_url: ImageUrlOut { url },
            }),
            None => Some(PartOut::File {
                file: FileOut {
                    file_data: None,
                    file_id: file_id(source),
                },
            }),
        },
        Part::Media {
            kind: MediaKind::Audio,
            source: Source::Base64 { mime, data },
            ..
        } => Some(PartOut::InputAudio {
            input_audio: InputAudioOut {
                data,
                format: mime.strip_prefix("audio/").unwrap_or(mime),
            },
        }),
        Part::Media {
            kind: MediaKind::Audio,
            ..
        } => {
            return Err(TranslateError::unsupported(
                "messages",
                Format::OpenAiChat,
                "audio must be inline base64",
            ))
        }
        Part::Media { source, .. } => Some(PartOut::File {
            file: FileOut {
                file_data: match source {
                    Source::Base64 { mime, data } => Some(format!("data:{mime};base64,{data}")),
                    Source::Url { url, .. } => Some(url.to_string()),
                    Source::FileId(_) => None,
                },
                file_id: file_id(source),
            },
        }),
        // Chat has no input for reasoning (§11.5 "Responses → Chat: drop").
        Part::Thinking { .. } | Part::RedactedThinking { .. } => None,
        Part::ToolCall(_) | Part::ToolResult(_) => None,
    })
}

fn file_id<'r>(source: &'r Source<'_>) -> Option<&'r str> {
    match source {
        Source::FileId(id) => Some(id),
        _ => None,
    }
}

/// A single text part becomes a plain string; anything else keeps its parts.
fn content<'r>(parts: &[&'r Part<'_>]) -> Result<ContentOut<'r>, TranslateError> {
    if let [Part::Text { text, .. }] = parts {
        return Ok(ContentOut::Text(Cow::Borrowed(text)));
    }
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        out.extend(write_part(p)?);
    }
    Ok(if out.is_empty() {
        ContentOut::Null
    } else {
        ContentOut::Parts(out)
    })
}

fn write_message<'r>(
    m: &'r Message<'_>,
    out: &mut Vec<MessageOut<'r>>,
) -> Result<(), TranslateError> {
    match m.role {
        Role::System => {
            let parts: Vec<&Part<'_>> = m.parts.iter().filter(|p| !p.is_empty_text()).collect();
            if !parts.is_empty() {
                out.push(MessageOut {
                    role: "system",
                    content: content(&parts)?,
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                });
            }
        }
        Role::User => {
            // Tool results first, one `tool` message each (§2.2); Chat tool messages take
            // text only, so media they carried follow in a user message (§11.3).
            let mut rest: Vec<&Part<'_>> = Vec::new();
            let mut media: Vec<&Part<'_>> = Vec::new();
            for p in &m.parts {
                match p {
                    Part::ToolResult(r) => {
                        let mut text = String::new();
                        if r.is_error {
                            // Anthropic's is_error has no OpenAI field (§2.4).
                            text.push_str("Error: ");
                        }
                        for c in &r.content {
                            match c {
                                Part::Text { text: t, .. } => text.push_str(t),
                                other => media.push(other),
                            }
                        }
                        out.push(MessageOut {
                            role: "tool",
                            content: ContentOut::Text(Cow::Owned(text)),
                            tool_calls: Vec::new(),
                            tool_call_id: Some(openai_tool_id(&r.id)),
                        });
                    }
                    other => rest.push(other),
                }
            }
            media.extend(rest);
            if !media.is_empty() {
                out.push(MessageOut {
                    role: "user",
                    content: content(&media)?,
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                });
            }
        }
        Role::Assistant => {
            let mut text = String::new();
            let mut tool_calls = Vec::new();
            for p in &m.parts {
                match p {
                    Part::Text { text: t, .. } => text.push_str(t),
                    Part::ToolCall(call) => tool_calls.push(ToolCallOut {
                        id: openai_tool_id(&call.id),
                        kind: "function",
                        function: FunctionCallOut {
                            name: &call.name,
                            arguments: call.args.to_json_string(),
                        },
                    }),
                    _ => {}
                }
            }
            if text.is_empty() && tool_calls.is_empty() {
                return Ok(());
            }
            out.push(MessageOut {
                role: "assistant",
                content: if text.is_empty() {
                    ContentOut::Null
                } else {
                    ContentOut::Text(Cow::Owned(text))
                },
                tool_calls,
                tool_call_id: None,
            });
        }
    }
    Ok(())
}
