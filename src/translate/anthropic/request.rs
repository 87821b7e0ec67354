//! Anthropic Messages requests: client body → canonical, canonical → upstream body.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::wire::*;
use crate::format::Format;
use crate::translate::error::TranslateError;
use crate::translate::history::{self, TurnPart};
use crate::translate::ir::*;
use crate::translate::util::{anthropic_tool_id, split_signature, to_body, StrOr};
use crate::translate::RequestOptions;

// ------------------------------------------------------------------ client → canonical

pub(crate) fn parse(body: &[u8]) -> Result<Request<'_>, TranslateError> {
    let req: MessagesRequest<'_> = serde_json::from_slice(body)?;
    if req.container.is_some() {
        return Err(TranslateError::invalid(
            "container",
            "code-execution containers exist only on Anthropic",
        ));
    }
    if req.mcp_servers.is_some() {
        return Err(TranslateError::invalid(
            "mcp_servers",
            "remote MCP servers exist only on Anthropic",
        ));
    }
    let mut out = Request {
        late_system: LateSystem::InlineUser,
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop: req.stop_sequences,
        user: req.metadata.and_then(|m| m.user_id),
        thinking_param: "thinking",
        ..Request::default()
    };
    if req.context_management.is_some() {
        out.dropped.push("context_management");
    }
    if req.service_tier.is_some() {
        // Anthropic's tiers (`auto`, `standard_only`) mean something else elsewhere (§2.1).
        out.dropped.push("service_tier");
    }
    let system = blocks(req.system)?;
    if !system.is_empty() {
        out.messages.push(Message {
            role: Role::System,
            parts: system,
        });
    }
    for m in req.messages {
        let role = match &*m.role {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            // Claude Code sends one after a turn when it switches models: where it stands
            // in the conversation is part of its meaning, so it stays there (a system or
            // developer turn where the target has one).
            "system" => Role::System,
            other => {
                return Err(TranslateError::invalid(
                    "messages",
                    format!("unknown role `{other}`"),
                ))
            }
        };
        out.messages.push(Message {
            role,
            parts: blocks(m.content)?,
        });
    }
    if req.tools.iter().any(|t| t.defer_loading == Some(true)) {
        // Anthropic loads such tools on demand; elsewhere every tool is offered up front.
        out.dropped.push("defer_loading");
    }
    for tool in req.tools {
        if tool.kind.as_deref().is_some_and(|k| k != "custom") {
            return Err(TranslateError::invalid(
                "tools",
                format!("Anthropic server tool `{}` cannot be translated", tool.name),
            ));
        }
        out.tools.push(Tool {
            name: tool.name,
            description: tool.description,
            schema: tool.input_schema.map_or(Schema::None, Schema::Json),
            strict: None,
            cache_control: tool.cache_control,
        });
    }
    if let Some(choice) = req.tool_choice {
        if choice.disable_parallel_tool_use == Some(true) {
            out.parallel_tool_calls = Some(false);
        }
        out.tool_choice = Some(match (&*choice.kind, choice.name) {
            ("auto", _) => ToolChoice::Auto,
            ("any", _) => ToolChoice::Required,
            ("none", _) => ToolChoice::None,
            ("tool", Some(name)) => ToolChoice::Named(name),
            (kind, _) => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    format!("unsupported type `{kind}`"),
                ))
            }
        });
    }
    let effort = req
        .output_config
        .as_ref()
        .and_then(|c| c.effort.as_deref())
        .and_then(Effort::parse);
    out.thinking = match req.thinking {
        Some(t) => Some(match (&*t.kind, t.budget_tokens) {
            ("enabled", Some(budget)) => Thinking::Budget(budget),
            ("disabled", _) => Thinking::Disabled,
            ("adaptive", _) | ("enabled", None) => {
                effort.map_or(Thinking::Adaptive, Thinking::Effort)
            }
            (kind, _) => {
                return Err(TranslateError::invalid(
                    "thinking",
                    format!("unknown type `{kind}`"),
                ))
            }
        }),
        None => effort.map(Thinking::Effort),
    };
    // Anthropic always returns the thinking text when thinking is on.
    out.include_thoughts = matches!(out.thinking, Some(t) if t != Thinking::Disabled);
    if let Some(schema) = req
        .output_config
        .and_then(|c| c.format)
        .and_then(|f| f.schema)
    {
        out.format = Some(OutputFormat::JsonSchema {
            name: None,
            description: None,
            schema: Schema::Json(schema),
            strict: Some(true),
        });
    }
    Ok(out)
}

fn blocks<'a>(content: StrOr<'a, Block<'a>>) -> Result<Vec<Part<'a>>, TranslateError> {
    match content {
        StrOr::Null => Ok(Vec::new()),
        StrOr::Str(text) => Ok(vec![Part::text(text)]),
        StrOr::Many(items) => items.into_iter().map(block).collect(),
    }
}

pub(crate) fn source(s: SourceIn<'_>) -> Result<Source<'_>, TranslateError> {
    match (&*s.kind, s.media_type, s.data, s.url, s.file_id) {
        ("base64", Some(mime), Some(data), _, _) => Ok(Source::Base64 { mime, data }),
        ("url", mime, _, Some(url), _) => Ok(Source::Url { url, mime }),
        ("file", _, _, _, Some(id)) => Ok(Source::FileId(id)),
        (kind, ..) => Err(TranslateError::invalid(
            "messages",
            format!("unsupported source type `{kind}`"),
        )),
    }
}

fn block(b: Block<'_>) -> Result<Part<'_>, TranslateError> {
    Ok(match b {
        Block::Text(t) => Part::Text {
            text: t.text,
            cache_control: t.cache_control,
        },
        Block::Image(m) => Part::Media {
            kind: MediaKind::Image,
            source: source(m.source)?,
            cache_control: m.cache_control,
        },
        // A plain-text document is just text.
        Block::Document(m) if m.source.kind == "text" => Part::Text {
            text: m.source.data.unwrap_or_default(),
            cache_control: m.cache_control,
        },
        Block::Document(m) => Part::Media {
            kind: MediaKind::Document,
            source: source(m.source)?,
            cache_control: m.cache_control,
        },
        Block::ToolUse(t) => Part::ToolCall(ToolCall {
            id: t.id,
            name: t.name,
            args: t.input.map_or(Args::Text(Cow::Borrowed("{}")), Args::Json),
        }),
        Block::ToolResult(r) => Part::ToolResult(ToolResult {
            id: r.tool_use_id,
            name: None,
            content: blocks(r.content)?,
            is_error: r.is_error,
        }),
        Block::Thinking(t) => Part::Thinking {
            text: t.thinking,
            signature: t.signature,
        },
        Block::RedactedThinking(r) => Part::RedactedThinking { data: r.data },
        // Anthropic's own web search in the history, for another provider: what was searched
        // and found, as text (its encrypted results only Anthropic can read).
        Block::ServerToolUse(t) => {
            let query = t
                .input
                .and_then(|i| search_query(i.get()))
                .unwrap_or_default();
            Part::text(format!("[web search: {query}]"))
        }
        Block::SearchResult(r) => {
            let mut text = String::from("[web search results]");
            for page in r.sources() {
                text.push_str("\n- ");
                text.push_str(page.title.as_deref().unwrap_or_default());
                text.push_str(" <");
                text.push_str(&page.url);
                text.push('>');
            }
            Part::text(text)
        }
        Block::Unknown(raw) => {
            let kind = crate::translate::util::tag_of(raw, "type")
                .ok()
                .flatten()
                .unwrap_or_default();
            return Err(TranslateError::invalid(
                "messages",
                format!("unsupported content block type `{kind}`"),
            ));
        }
    })
}

// ------------------------------------------------------------------ canonical → upstream

/// Whether the last assistant turn called a tool without the signed thinking Anthropic
/// requires before it when thinking is on.
fn unsigned_tool_turn(messages: &[Message<'_>]) -> bool {
    let Some(last) = messages.iter().rev().find(|m| m.role == Role::Assistant) else {
        return false;
    };
    let calls = last.parts.iter().any(|p| matches!(p, Part::ToolCall(_)));
    let signed = last.parts.iter().any(|p| match p {
        Part::Thinking { signature, .. } => signature.as_deref().is_some_and(|s| !s.is_empty()),
        Part::RedactedThinking { .. } => true,
        _ => false,
    });
    calls && !signed
}

/// Anthropic's minimum thinking budget (§2.6).
const MIN_THINKING_BUDGET: u32 = 1024;

pub(crate) fn write(
    req: &Request<'_>,
    opts: &RequestOptions<'_>,
    dropped: &mut Vec<&'static str>,
) -> Result<Vec<u8>, TranslateError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(TranslateError::unsupported(
            "n",
            Format::Anthropic,
            "Anthropic returns exactly one choice",
        ));
    }
    // Hints Anthropic has no place for (§2.1, §10.3).
    for (name, set) in [
        ("seed", req.seed.is_some()),
        ("presence_penalty", req.presence_penalty.is_some()),
        ("frequency_penalty", req.frequency_penalty.is_some()),
        ("logprobs", req.logprobs.is_some()),
        ("top_logprobs", req.top_logprobs.is_some()),
    ] {
        if set {
            dropped.push(name);
        }
    }
    dropped.extend(req.openai.set_fields());
    let max_tokens = req.max_tokens.unwrap_or(u64::from(opts.default_max_tokens));

    let forced_tool = matches!(
        req.tool_choice,
        Some(
            ToolChoice::Required
                | ToolChoice::Named(_)
                | ToolChoice::Allowed { required: true, .. }
        )
    );
    let mut thinking = match req.thinking {
        None => None,
        Some(Thinking::Disabled) => Some(ThinkingOut {
            kind: "disabled",
            budget_tokens: None,
        }),
        Some(Thinking::Adaptive) => Some(ThinkingOut {
            kind: "adaptive",
            budget_tokens: None,
        }),
        Some(t) if t.budget() == 0 => Some(ThinkingOut {
            kind: "disabled",
            budget_tokens: None,
        }),
        Some(t) => {
            // The budget counts inside max_tokens and must stay below it (§2.6); at most half
            // of it goes to thinking so the answer keeps room.
            let half = u32::try_from(max_tokens / 2).unwrap_or(u32::MAX);
            let budget = t.budget().min(half).max(MIN_THINKING_BUDGET);
            (u64::from(budget) < max_tokens).then_some(ThinkingOut {
                kind: "enabled",
                budget_tokens: Some(budget),
            })
        }
    };
    if req.thinking.is_some() && thinking.is_none() {
        dropped.push(req.thinking_param);
    }
    let thinking_on = thinking.as_ref().is_some_and(|t| t.kind != "disabled");
    if thinking_on && (forced_tool || unsigned_tool_turn(&req.messages)) {
        // "Thinking may not be enabled when tool_choice forces tool use" (§2.4), and with
        // thinking on Anthropic wants the last assistant turn of a tool loop to open with
        // its signed thinking, which a client may not have kept (a Chat client, or a
        // carrier whose seal no longer holds): the tool choice and the turn carry meaning,
        // the thinking level is a hint.
        thinking = None;
        dropped.push(req.thinking_param);
    }
    let thinking_on = thinking.as_ref().is_some_and(|t| t.kind != "disabled");
    let mut temperature = req.temperature.map(|t| t.clamp(0.0, 1.0));
    let mut top_k = req.top_k;
    if thinking_on {
        // Thinking rejects non-default temperature/top_k (§2.6).
        if temperature.take().is_some() {
            dropped.push("temperature");
        }
        if top_k.take().is_some() {
            dropped.push("top_k");
        }
    }

    let history = history::build(&req.messages, req.late_system);
    let mut system = write_system(&history.system);
    let mut messages = Vec::with_capacity(history.turns.len());
    for turn in &history.turns {
        let mut content = Vec::with_capacity(turn.parts.len());
        for p in &turn.parts {
            match p {
                TurnPart::SystemText(text) => content.push(BlockOut::Text {
                    text: Cow::Owned(history::wrap_system(text)),
                    cache_control: None,
                }),
                TurnPart::Part(p) => content.extend(write_block(p)?),
            }
        }
        if !content.is_empty() {
            messages.push(MessageOut {
                role: if turn.role == Role::Assistant {
                    "assistant"
                } else {
                    "user"
                },
                content,
            });
        }
    }

    // An agent resends its whole multi-KB prefix every turn; OpenAI caches it implicitly,
    // Anthropic only at explicit breakpoints: end of system and last user turn (§11.15).
    let ephemeral = RawValue::from_string(r#"{"type":"ephemeral"}"#.to_owned())?;
    let auto_cache = req.auto_cache
        && !req.tools.iter().any(|t| t.cache_control.is_some())
        && !history
            .turns
            .iter()
            .any(|t| t.parts.iter().any(has_cache_control));
    if auto_cache {
        if let Some(SystemOut::Text(text)) = system {
            system = Some(SystemOut::Blocks(vec![BlockOut::Text {
                text: Cow::Borrowed(text),
                cache_control: None,
            }]));
        }
        if let Some(SystemOut::Blocks(blocks)) = &mut system {
            if let Some(block) = blocks.last_mut() {
                set_cache_control(block, &ephemeral);
            }
        }
        if let Some(block) = messages
            .iter_mut()
            .rev()
            .find(|m| m.role == "user")
            .and_then(|m| m.content.last_mut())
        {
            set_cache_control(block, &ephemeral);
        }
    }

    let allowed: Option<&[Str<'_>]> = match &req.tool_choice {
        Some(ToolChoice::Allowed { names, .. }) => Some(names),
        _ => None,
    };
    let mut tools: Vec<ToolOut<'_>> = req
        .tools
        .iter()
        .filter(|t| allowed.is_none_or(|names| names.contains(&t.name)))
        .map(|t| ToolOut {
            name: &t.name,
            description: t.description.as_deref(),
            input_schema: t.schema.json_schema(),
            cache_control: t.cache_control,
        })
        .collect();
    // Tools come first in Anthropic's cache order: a breakpoint on the last one caches
    // them all, for every turn that keeps the same tools.
    if auto_cache {
        if let Some(last) = tools.last_mut() {
            last.cache_control = Some(&ephemeral);
        }
    }
    let mut tools: Vec<AnyToolOut<'_>> = tools.into_iter().map(AnyToolOut::Function).collect();
    if let Some(search) = &req.web_search {
        // Anthropic's own search, unless the client has a tool of that name already.
        let taken = req.tools.iter().any(|t| t.name == "web_search");
        if opts.web_search && !taken {
            tools.push(AnyToolOut::WebSearch(WebSearchToolOut {
                kind: "web_search_20250305",
                name: "web_search",
                allowed_domains: &search.allowed_domains,
                user_location: search.user_location.as_ref().map(|l| LocationOut {
                    kind: "approximate",
                    city: l.city.as_deref(),
                    region: l.region.as_deref(),
                    country: l.country.as_deref(),
                    timezone: l.timezone.as_deref(),
                }),
            }));
        } else {
            dropped.push("web_search");
        }
    }
    let disable_parallel = (req.parallel_tool_calls == Some(false)).then_some(true);
    let tool_choice = match &req.tool_choice {
        None if disable_parallel.is_some() && !req.tools.is_empty() => {
            Some(choice("auto", None, disable_parallel))
        }
        None => None,
        Some(ToolChoice::Auto)
        | Some(ToolChoice::Allowed {
            required: false, ..
        }) => Some(choice("auto", None, disable_parallel)),
        Some(ToolChoice::None) => Some(choice("none", None, None)),
        Some(ToolChoice::Required) | Some(ToolChoice::Allowed { required: true, .. }) => {
            Some(choice("any", None, disable_parallel))
        }
        Some(ToolChoice::Named(name)) => Some(choice("tool", Some(name), disable_parallel)),
    };
    let output_config = match &req.format {
        None => None,
        // No native "any JSON" switch: structured outputs with an object schema (§2.5 a).
        Some(OutputFormat::JsonObject) => Some(OutputConfigOut {
            format: OutputFormatOut {
                kind: "json_schema",
                schema: Cow::Owned(crate::translate::util::to_raw(
                    &serde_json::json!({"type": "object"}),
                )),
            },
        }),
        Some(OutputFormat::JsonSchema { schema, .. }) => Some(OutputConfigOut {
            format: OutputFormatOut {
                kind: "json_schema",
                schema: schema.json_schema(),
            },
        }),
    };
    let out = MessagesRequestOut {
        model: opts.model,
        max_tokens,
        system,
        messages,
        temperature,
        top_p: req.top_p,
        top_k,
        stop_sequences: &req.stop,
        stream: opts.stream,
        tools,
        tool_choice,
        thinking,
        output_config,
        metadata: req
            .user
            .as_deref()
            .or(req.openai.safety_identifier.as_deref())
            .map(|user_id| MetadataOut { user_id }),
    };
    Ok(to_body(&out))
}

fn has_cache_control(p: &TurnPart<'_, '_>) -> bool {
    matches!(
        p,
        TurnPart::Part(
            Part::Text {
                cache_control: Some(_),
                ..
            } | Part::Media {
                cache_control: Some(_),
                ..
            }
        )
    )
}

fn set_cache_control<'r>(block: &mut BlockOut<'r>, value: &'r RawValue) {
    match block {
        BlockOut::Text { cache_control, .. }
        | BlockOut::Image { cache_control, .. }
        | BlockOut::Document { cache_control, .. }
        | BlockOut::ToolResult { cache_control, .. } => *cache_control = Some(value),
        BlockOut::ToolUse { .. }
        | BlockOut::Thinking { .. }
        | BlockOut::RedactedThinking { .. } => {}
    }
}

fn choice<'r>(
    kind: &'static str,
    name: Option<&'r str>,
    disable_parallel: Option<bool>,
) -> ToolChoiceOut<'r> {
    ToolChoiceOut {
        kind,
        name,
        disable_parallel_tool_use: disable_parallel,
    }
}

fn write_system<'r>(parts: &[&'r Part<'_>]) -> Option<SystemOut<'r>> {
    match parts {
        [] => None,
        [Part::Text {
            text,
            cache_control: None,
        }] => Some(SystemOut::Text(text)),
        // Several blocks stay separate so `cache_control` breakpoints survive (§2.2).
        parts => Some(SystemOut::Blocks(
            parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text {
                        text,
                        cache_control,
                    } => Some(BlockOut::Text {
                        text: Cow::Borrowed(text),
                        cache_control: *cache_control,
                    }),
                    _ => None,
                })
                .collect(),
        )),
    }
}

fn write_source<'r>(source: &'r Source<'_>) -> Result<SourceOut<'r>, TranslateError> {
    match source {
        Source::Base64 { mime, data } => Ok(SourceOut::Base64 {
            media_type: mime,
            data,
        }),
        Source::Url { url, .. } => Ok(SourceOut::Url { url }),
        Source::FileId(_) => Err(TranslateError::unsupported(
            "messages",
            Format::Anthropic,
            "OpenAI file ids cannot be resolved by Anthropic",
        )),
    }
}

fn write_block<'r>(p: &'r Part<'_>) -> Result<Option<BlockOut<'r>>, TranslateError> {
    Ok(Some(match p {
        Part::Text { text, .. } if text.is_empty() => return Ok(None),
        Part::Text {
            text,
            cache_control,
        } => BlockOut::Text {
            text: Cow::Borrowed(text),
            cache_control: *cache_control,
        },
        Part::Media {
            kind: MediaKind::Image,
            source,
            cache_control,
        } => BlockOut::Image {
            source: write_source(source)?,
            cache_control: *cache_control,
        },
        Part::Media {
            kind: MediaKind::Document,
            source,
            cache_control,
        } => BlockOut::Document {
            source: write_source(source)?,
            cache_control: *cache_control,
        },
        Part::Media {
            kind: MediaKind::Audio,
            ..
        } => {
            return Err(TranslateError::unsupported(
                "messages",
                Format::Anthropic,
                "audio input is not supported",
            ))
        }
        // A Gemini signature carried in the id means nothing to Anthropic (§2.2).
        Part::ToolCall(call) => BlockOut::ToolUse {
            id: anthropic_tool_id(split_signature(&call.id).0),
            name: &call.name,
            input: call.args.to_object(),
        },
        Part::ToolResult(r) => {
            let content = match r.content.as_slice() {
                [Part::Text {
                    text,
                    cache_control: None,
                }] => ToolResultContentOut::Text(text),
                parts => {
                    let mut blocks = Vec::with_capacity(parts.len());
                    for p in parts {
                        blocks.extend(write_block(p)?);
                    }
                    ToolResultContentOut::Blocks(blocks)
                }
            };
            BlockOut::ToolResult {
                tool_use_id: anthropic_tool_id(split_signature(&r.id).0),
                content,
                is_error: r.is_error,
                cache_control: None,
            }
        }
        // Only Anthropic-signed thinking can go back: an unsigned block (from Gemini or a
        // compat server) is rejected by the API (§3.4).
        Part::Thinking {
            text,
            signature: Some(signature),
        } if !signature.is_empty()
            && !signature.starts_with(crate::translate::util::OPENAI_REASONING_PREFIX) =>
        {
            BlockOut::Thinking {
                thinking: text,
                signature,
            }
        }
        Part::Thinking { .. } => return Ok(None),
        Part::RedactedThinking { data } => BlockOut::RedactedThinking { data },
    }))
}
