//! OpenAI Responses requests from a client → canonical (§11.2–11.6); the reverse direction
//! is in [`super::request_out`].

use std::borrow::Cow;
use std::collections::HashSet;

use super::wire::*;
use crate::translate::error::TranslateError;
use crate::translate::ir::*;
use crate::translate::openai_chat::request::url_source;
use crate::translate::schema;
use crate::translate::util::{decode_carrier, tag_of, StrOr, StrOrObj};
use crate::translate::ResponseContext;

pub(crate) fn parse<'a>(
    body: &'a [u8],
    seal: &crate::translate::Seal,
) -> Result<(Request<'a>, ResponseContext), TranslateError> {
    let req: ResponsesRequest<'_> = serde_json::from_slice(body)?;
    // State a stateless translator cannot expand (§11.14).
    if let Some(id) = req.previous_response_id {
        return Err(TranslateError::StoredState {
            param: "previous_response_id",
            id: id.into_owned(),
        });
    }
    if let Some(conv) = req.conversation {
        return Err(TranslateError::StoredState {
            param: "conversation",
            id: conv.get().trim_matches('"').to_owned(),
        });
    }
    if req.background == Some(true) {
        return Err(TranslateError::invalid(
            "background",
            "background responses need server-side state",
        ));
    }
    if req.prompt.is_some() {
        return Err(TranslateError::invalid(
            "prompt",
            "stored prompt templates need server-side state",
        ));
    }
    let mut ctx = ResponseContext {
        reasoning_summary: req.reasoning.as_ref().is_some_and(|r| r.summary.is_some()),
        // Carriers only help clients that replay encrypted reasoning (§11.5).
        reasoning_carrier: req.store == Some(false)
            || req
                .include
                .iter()
                .any(|i| i == "reasoning.encrypted_content"),
        seal: seal.clone(),
        ..ResponseContext::default()
    };
    let mut out = Request {
        late_system: LateSystem::InlineUser,
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        logprobs: req.top_logprobs.map(|_| true),
        top_logprobs: req.top_logprobs,
        parallel_tool_calls: req.parallel_tool_calls,
        user: req.user,
        thinking_param: "reasoning",
        include_thoughts: ctx.reasoning_summary,
        auto_cache: true,
        ..Request::default()
    };
    out.openai = OpenAiExtras {
        store: req.store,
        metadata: req.metadata,
        service_tier: req.service_tier,
        prompt_cache_key: req.prompt_cache_key,
        safety_identifier: req.safety_identifier,
        verbosity: req.text.as_ref().and_then(|t| t.verbosity.clone()),
    };
    for (name, set) in [
        ("truncation", req.truncation.as_deref() == Some("auto")),
        ("max_tool_calls", req.max_tool_calls.is_some()),
        ("context_management", req.context_management.is_some()),
        ("moderation", req.moderation.is_some()),
    ] {
        if set {
            out.dropped.push(name);
        }
    }
    if let Some(instructions) = req.instructions.filter(|i| !i.is_empty()) {
        // Instructions go before any system/developer items (§11.2).
        out.messages.push(Message {
            role: Role::System,
            parts: vec![Part::text(instructions)],
        });
    }
    match req.input {
        StrOr::Null => {}
        StrOr::Str(text) => out.messages.push(Message {
            role: Role::User,
            parts: vec![Part::text(text)],
        }),
        StrOr::Many(items) => fold_items(items, &mut out.messages, seal)?,
    }

    let mut hosted_dropped = false;
    for tool in req.tools {
        match &*tool.kind {
            "namespace" => {
                let Some(namespace) = tool.name.clone() else {
                    return Err(TranslateError::invalid("tools", "namespace without a name"));
                };
                let first = out.tools.len();
                for inner in tool.tools {
                    declare(inner, Some(&namespace), &mut out, &mut ctx)?;
                }
                // Every tool says which group it belongs to (two servers may both have a
                // `search`); the group's own description, once, on its first tool.
                let about = tool.description.filter(|d| !d.is_empty());
                for (i, declared) in out.tools[first..].iter_mut().enumerate() {
                    let own = declared.description.as_deref().unwrap_or_default();
                    let text = match (&about, i) {
                        (Some(about), 0) => format!("[{namespace}] {about}\n\n{own}"),
                        _ => format!("[{namespace}] {own}"),
                    };
                    declared.description = Some(Cow::Owned(text));
                }
            }
            "function" | "custom" | "local_shell" => declare(tool, None, &mut out, &mut ctx)?,
            // A live web search runs as the provider's own where it has one and the model
            // entry allows it; the writer drops and lists it otherwise. Cached-only search
            // (`external_web_access: false`, Codex's default) exists only at OpenAI.
            kind if kind.starts_with("web_search") && tool.external_web_access != Some(false) => {
                hosted_dropped = true;
                out.web_search = Some(WebSearch {
                    allowed_domains: tool
                        .filters
                        .map(|f| f.allowed_domains.into_iter().map(bare_domain).collect())
                        .unwrap_or_default(),
                    user_location: tool.user_location.map(LocationIn::into_ir),
                });
            }
            hosted => {
                // A hosted tool the target cannot run is dropped, never a failed turn: Codex
                // sends web_search to every model (§11.4).
                hosted_dropped = true;
                out.dropped.push(hosted_label(hosted));
            }
        }
    }
    // A tool declared twice under one provider-side name is offered once (providers refuse
    // duplicates); the first declaration stands.
    let mut seen = HashSet::new();
    out.tools.retain(|t| seen.insert(t.name.to_string()));
    out.tool_choice = match req.tool_choice {
        None => None,
        Some(StrOrObj::Str(mode)) => Some(match &*mode {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    format!("unknown value `{other}`"),
                ))
            }
        }),
        Some(StrOrObj::Obj(obj)) => Some(match (&*obj.kind, obj.name) {
            ("function" | "custom", Some(name)) => ToolChoice::Named(choice_name(
                &ctx,
                &out.tools,
                obj.namespace.as_deref(),
                name,
            )),
            ("allowed_tools", _) => ToolChoice::Allowed {
                required: obj.mode.as_deref() == Some("required"),
                names: obj
                    .tools
                    .into_iter()
                    .filter_map(|t| t.name)
                    .map(|name| choice_name(&ctx, &out.tools, None, name))
                    .collect(),
            },
            (kind, _) if hosted_dropped && !matches!(kind, "function" | "custom") => {
                ToolChoice::Auto
            }
            (kind, _) => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    format!("hosted tool choice `{kind}` is only available on OpenAI"),
                ))
            }
        }),
    };
    if let Some(effort) = req.reasoning.and_then(|r| r.effort) {
        let e = Effort::parse(&effort).ok_or_else(|| {
            TranslateError::invalid("reasoning", format!("unknown effort `{effort}`"))
        })?;
        out.thinking = Some(Thinking::Effort(e));
    }
    out.format = match req.text.and_then(|t| t.format) {
        None => None,
        Some(f) => match &*f.kind {
            "text" => None,
            "json_object" => Some(OutputFormat::JsonObject),
            "json_schema" => Some(OutputFormat::JsonSchema {
                name: f.name,
                description: f.description,
                schema: f.schema.map_or(Schema::None, Schema::Json),
                strict: f.strict,
            }),
            other => {
                return Err(TranslateError::invalid(
                    "text",
                    format!("unknown format type `{other}`"),
                ))
            }
        },
    };
    Ok((out, ctx))
}

/// Appends parts to the last message when it has `role`, else starts a new message: a run of
/// assistant items becomes ONE assistant turn and consecutive outputs ONE user turn (§11.3).
fn push<'a>(messages: &mut Vec<Message<'a>>, role: Role, part: Part<'a>) {
    match messages.last_mut() {
        Some(m) if m.role == role => m.parts.push(part),
        _ => messages.push(Message {
            role,
            parts: vec![part],
        }),
    }
}

fn fold_items<'a>(
    items: Vec<InputItem<'a>>,
    messages: &mut Vec<Message<'a>>,
    seal: &crate::translate::Seal,
) -> Result<(), TranslateError> {
    let mut calls: HashSet<String> = HashSet::new();
    for item in items {
        match item {
            InputItem::Message(m) => {
                let role = match &*m.role {
                    "system" | "developer" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    other => {
                        return Err(TranslateError::invalid(
                            "input",
                            format!("unknown role `{other}`"),
                        ))
                    }
                };
                let parts = content_parts(m.content)?;
                if role == Role::System {
                    messages.push(Message { role, parts });
                } else if parts.is_empty() {
                    // An empty assistant message (fx parallel_function_call_outputs.json)
                    // still opens the assistant turn its calls belong to.
                    if messages.last().is_none_or(|m| m.role != role) {
                        messages.push(Message { role, parts });
                    }
                } else {
                    for p in parts {
                        push(messages, role, p);
                    }
                }
            }
            InputItem::FunctionCall(c) => {
                calls.insert(c.call_id.to_string());
                push(
                    messages,
                    Role::Assistant,
                    Part::ToolCall(ToolCall {
                        id: c.call_id,
                        name: flat_or_plain(c.namespace.as_deref(), c.name),
                        args: Args::Text(c.arguments),
                    }),
                );
            }
            InputItem::CustomToolCall(c) => {
                calls.insert(c.call_id.to_string());
                // A custom tool is exposed as a function taking `{"input": "<raw text>"}` (§11.3).
                let args = serde_json::to_string(&serde_json::json!({ "input": c.input }))?;
                push(
                    messages,
                    Role::Assistant,
                    Part::ToolCall(ToolCall {
                        id: c.call_id,
                        name: flat_or_plain(c.namespace.as_deref(), c.name),
                        args: Args::Text(Cow::Owned(args)),
                    }),
                );
            }
            InputItem::LocalShellCall(c) => {
                calls.insert(c.call_id.to_string());
                push(
                    messages,
                    Role::Assistant,
                    Part::ToolCall(ToolCall {
                        id: c.call_id,
                        name: Cow::Borrowed("local_shell"),
                        args: Args::Json(c.action),
                    }),
                );
            }
            InputItem::CallOutput(o) => {
                let call_id = o.call_id.or(o.id).unwrap_or_default();
                if !calls.contains(&*call_id) {
                    // Orphan outputs are what `previous_response_id` clients send (§11.3 rule 3).
                    return Err(TranslateError::invalid(
                        "input",
                        format!("no function_call with call_id `{call_id}` precedes its output; resend the full conversation"),
                    ));
                }
                let content = content_parts(o.output)?;
                push(
                    messages,
                    Role::User,
                    Part::ToolResult(ToolResult {
                        id: call_id,
                        name: None,
                        content,
                        is_error: false,
                    }),
                );
            }
            InputItem::Reasoning(r) => {
                // Only sira's own carriers hold something a non-OpenAI upstream can use (§11.5).
                let carried = r.encrypted_content.as_deref();
                if let Some(c) = carried.and_then(|e| decode_carrier(e, seal)) {
                    let part = match (c.redacted, c.thinking) {
                        (Some(data), _) => Part::RedactedThinking { data },
                        (None, thinking) => Part::Thinking {
                            text: thinking.unwrap_or_default(),
                            signature: c.signature,
                        },
                    };
                    push(messages, Role::Assistant, part);
                }
            }
            InputItem::ItemReference(r) => {
                return Err(TranslateError::StoredState {
                    param: "input",
                    id: r.id.into_owned(),
                })
            }
            InputItem::Hosted(_) => {}
            InputItem::Unknown(raw) => {
                let kind = tag_of(raw, "type").ok().flatten().unwrap_or_default();
                return Err(TranslateError::invalid(
                    "input",
                    format!("unsupported item type `{kind}`"),
                ));
            }
        }
    }
    Ok(())
}

fn content_parts<'a>(content: StrOr<'a, ContentPart<'a>>) -> Result<Vec<Part<'a>>, TranslateError> {
    let items = match content {
        StrOr::Null => return Ok(Vec::new()),
        StrOr::Str(text) if text.is_empty() => return Ok(Vec::new()),
        StrOr::Str(text) => return Ok(vec![Part::text(text)]),
        StrOr::Many(items) => items,
    };
    let mut out = Vec::with_capacity(items.len());
    for p in items {
        out.push(match p {
            ContentPart::Text(t) => Part::text(t.text),
            ContentPart::Refusal(r) => Part::text(r.refusal),
            ContentPart::Image(img) => Part::Media {
                kind: MediaKind::Image,
                source: match (img.image_url, img.file_id) {
                    (Some(url), _) => url_source(url),
                    (None, Some(id)) => Source::FileId(id),
                    (None, None) => {
                        return Err(TranslateError::invalid(
                            "input",
                            "input_image without image_url",
                        ))
                    }
                },
                cache_control: None,
            },
            ContentPart::File(f) => Part::Media {
                kind: MediaKind::Document,
                source: match (f.file_data, f.file_url, f.file_id) {
                    (Some(data), _, _) => url_source(data),
                    (None, Some(url), _) => Source::Url { url, mime: None },
                    (None, None, Some(id)) => Source::FileId(id),
                    _ => return Err(TranslateError::invalid("input", "input_file without data")),
                },
                cache_control: None,
            },
            ContentPart::Unknown(raw) => {
                let kind = tag_of(raw, "type").ok().flatten().unwrap_or_default();
                return Err(TranslateError::invalid(
                    "input",
                    format!("unsupported content part type `{kind}`"),
                ));
            }
        });
    }
    Ok(out)
}

/// Declares one function, custom or `local_shell` tool, `namespace` being the `namespace`
/// tool it was declared in.
fn declare<'a>(
    tool: ToolIn<'a>,
    namespace: Option<&str>,
    out: &mut Request<'a>,
    ctx: &mut ResponseContext,
) -> Result<(), TranslateError> {
    let kind = match &*tool.kind {
        "function" => ToolKind::Function,
        "custom" => ToolKind::Custom,
        "local_shell" if namespace.is_none() => ToolKind::LocalShell,
        other => {
            return Err(TranslateError::invalid(
                "tools",
                format!("a namespace cannot hold a `{other}` tool"),
            ))
        }
    };
    let name = match (kind, tool.name) {
        (ToolKind::LocalShell, _) => Cow::Borrowed("local_shell"),
        (_, Some(name)) => name,
        (_, None) => return Err(TranslateError::invalid("tools", "tool without a name")),
    };
    let name = match namespace {
        Some(ns) => {
            let flat = flat_name(ns, &name);
            ctx.namespaced
                .push((flat.clone(), ns.to_owned(), name.into_owned()));
            Cow::Owned(flat)
        }
        None => name,
    };
    match kind {
        ToolKind::Custom => ctx.custom_tools.push(name.to_string()),
        ToolKind::LocalShell => ctx.local_shell = true,
        ToolKind::Function => {}
    }
    let description = match (kind, tool.description, tool.format) {
        (ToolKind::Custom, desc, Some(f)) if f.kind == "grammar" => Some(Cow::Owned(format!(
            "{}\n\nThe `input` argument is raw text (not JSON) that must match this {} grammar:\n{}",
            desc.as_deref().unwrap_or_default(),
            f.syntax.as_deref().unwrap_or("lark"),
            f.definition.as_deref().unwrap_or_default()
        ))),
        (ToolKind::Custom, desc, _) => Some(Cow::Owned(format!(
            "{}\n\nThe `input` argument is free-form raw text, not JSON.",
            desc.as_deref().unwrap_or_default()
        ))),
        (ToolKind::LocalShell, None, _) => Some(Cow::Borrowed(
            "Runs a shell command (argv array) and returns its output.",
        )),
        (_, desc, _) => desc,
    };
    out.tools.push(Tool {
        name,
        description,
        schema: match (kind, tool.parameters) {
            (ToolKind::Function, Some(p)) => Schema::Json(p),
            (kind, _) => schema::for_kind(kind),
        },
        strict: if kind == ToolKind::Function {
            tool.strict
        } else {
            None
        },
        cache_control: None,
    });
    Ok(())
}

/// The one name a provider knows a namespaced tool by: `namespace__name` when that is a
/// valid tool name everywhere (at most 64 of `[A-Za-z0-9_-]`, the strictest of the
/// providers' rules); otherwise a digest of both with as much of the name as fits. The same
/// namespace and name always give the same flat name, so a later turn's history maps to the
/// tools of that turn; the way back is the request's table, never a parse of this string.
pub(crate) fn flat_name(namespace: &str, name: &str) -> String {
    const MAX: usize = 64;
    let plain = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let joined = format!("{namespace}__{name}");
    // Readable where it fits (Codex's MCP namespaces are `mcp__<server>`); two tools that
    // would still meet under one name in a request are offered once (see `parse`).
    if joined.len() <= MAX && plain(namespace) && plain(name) {
        return joined;
    }
    let digest = format!(
        "{:016x}",
        crate::translate::util::fnv1a(format!("{namespace}\0{name}").as_bytes())
    );
    let tail: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX - digest.len() - 3)
        .collect();
    format!("ns{digest}_{tail}")
}

/// The provider-side name of a tool a `tool_choice` names: its flat name when it is a
/// namespaced tool (named with its namespace, or by a name only one namespace declares and
/// no plain tool shares).
fn choice_name<'a>(
    ctx: &ResponseContext,
    tools: &[Tool<'_>],
    namespace: Option<&str>,
    name: Str<'a>,
) -> Str<'a> {
    if let Some(ns) = namespace {
        return Cow::Owned(flat_name(ns, &name));
    }
    let plain = tools
        .iter()
        .any(|t| t.name == name && ctx.namespace_of(&t.name).is_none());
    let mut matches = ctx.namespaced.iter().filter(|(_, _, n)| *n == *name);
    match (matches.next(), matches.next()) {
        (Some((flat, _, _)), None) if !plain => Cow::Owned(flat.clone()),
        _ => name,
    }
}

/// A history call's provider-side name.
fn flat_or_plain<'a>(namespace: Option<&str>, name: Str<'a>) -> Str<'a> {
    match namespace {
        Some(ns) => Cow::Owned(flat_name(ns, &name)),
        None => name,
    }
}

/// A site as Anthropic's search takes it: `docs.rs`, not `https://docs.rs/`.
fn bare_domain(domain: Str<'_>) -> Str<'_> {
    let bare = domain
        .strip_prefix("https://")
        .or_else(|| domain.strip_prefix("http://"))
        .unwrap_or(&domain)
        .trim_end_matches('/');
    if bare.len() == domain.len() {
        domain
    } else {
        Cow::Owned(bare.to_owned())
    }
}

/// The `x-sira-dropped-params` entry for a hosted tool nobody but OpenAI runs.
fn hosted_label(kind: &str) -> &'static str {
    match kind {
        k if k.starts_with("web_search") => "web_search",
        "file_search" => "file_search",
        "code_interpreter" => "code_interpreter",
        "image_generation" => "image_generation",
        k if k.starts_with("computer_use") => "computer_use",
        "mcp" => "mcp",
        "tool_search" => "tool_search",
        _ => "tools",
    }
}
