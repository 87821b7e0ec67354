//! What a cache key is made of besides the caller's scope: the request as the provider
//! would get it, so that clients of different formats asking the same thing share an
//! answer, each getting it in its own format.
//!
//! A request is seen in the provider's format only where that makes two requests with
//! one view get the same answer: every target the request may reach (the entry's, and its
//! fallbacks') speaks that one format, and the translation into it dropped nothing. Then
//! whichever target serves, it gets the same request. Otherwise the key is the client's
//! own body in the client's own format, as it always was.

use serde_json::{Map, Value};

use crate::format::Format;
use crate::models::{ModelRoute, Target};
use crate::provider::ProviderKind;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::phases::RequestBody;
use crate::translate::{translate_request, RequestOptions};

pub(super) struct KeyView {
    /// Who may be answered alike (see [`crate::cache::KeyParts::class`]).
    pub class: String,
    pub operation: &'static str,
    pub variant: String,
    pub fields: Map<String, Value>,
    /// The provider format the request is seen in, when it is: an answer kept in that
    /// format may be translated for a client of any other.
    pub provider: Option<Format>,
}

/// The key's view of the request; `None` when the body is not a JSON object.
///
/// Never across formats: Responses clients (their answers carry tools and reasoning in forms
/// of their own), embeddings, and an OpenAI stream whose client did not ask for the usage
/// chunk (it shares only with its kind, whose kept answers lack it).
pub(super) fn key_view(
    ctx: &RequestCtx,
    entry: &ModelRoute,
    operation: &'static str,
    body: &RequestBody,
) -> Option<KeyView> {
    let shareable = ctx.format != Format::OpenAiResponses && operation != "embeddings";
    if let Some(target) = key_target(ctx, entry).filter(|_| shareable) {
        let provider = target.provider.kind.format_for(ctx.format);
        let fields = one_format(ctx, entry, provider)
            .then(|| provider_fields(ctx, entry, target, provider, body))
            .flatten();
        if let Some(fields) = fields {
            let usage_hidden =
                ctx.format == Format::OpenAiChat && ctx.stream && !body.peek.include_usage;
            let mut class = provider.as_str().to_owned();
            if usage_hidden {
                class.push_str("/usage-hidden");
            }
            return Some(KeyView {
                class,
                operation: provider_operation(provider),
                variant: variant_for(ctx, target),
                fields,
                provider: Some(provider),
            });
        }
    }
    let Value::Object(fields) = serde_json::from_slice(&body.bytes).ok()? else {
        return None;
    };
    Some(KeyView {
        class: format!("client:{}", ctx.format.as_str()),
        operation,
        variant: ctx.cache.variant.clone(),
        fields,
        provider: None,
    })
}

/// The target whose request the key is made of: the one the client chose, else the first.
fn key_target<'a>(ctx: &RequestCtx, entry: &'a ModelRoute) -> Option<&'a Target> {
    ctx.route_choice
        .as_deref()
        .and_then(|choice| entry.targets.iter().find(|t| &*t.name == choice))
        .or_else(|| entry.targets.first())
}

/// Whether every target of the entry and of its fallbacks takes this client's requests in
/// `provider`'s format.
fn one_format(ctx: &RequestCtx, entry: &ModelRoute, provider: Format) -> bool {
    let speaks = |route: &ModelRoute| {
        route
            .targets
            .iter()
            .all(|t| t.provider.kind.format_for(ctx.format) == provider)
    };
    speaks(entry)
        && entry.fallbacks.iter().all(|name| {
            ctx.snap
                .models
                .resolve(name)
                .is_none_or(|found| speaks(found.route))
        })
}

/// The body `target` would get, as a JSON object: translated when the formats differ,
/// else the client's with the upstream model and (OpenAI streams) the usage chunk asked
/// for, as each try writes it; without the prompt-cache breakpoints, which change no
/// answer. `None` when it cannot be written in the provider's format, or only by leaving
/// something out (two requests differing there would get one answer).
fn provider_fields(
    ctx: &RequestCtx,
    entry: &ModelRoute,
    target: &Target,
    provider: Format,
    body: &RequestBody,
) -> Option<Map<String, Value>> {
    let requested = ctx.model.as_deref().unwrap_or_default();
    let model = ModelRoute::upstream_model(target, requested, ctx.capture.as_deref());
    let written;
    let bytes: &[u8] = if provider == ctx.format {
        &body.bytes
    } else {
        let translated = translate_request(
            ctx.format,
            provider,
            &body.bytes,
            &RequestOptions {
                model,
                stream: ctx.stream,
                default_max_tokens: entry.default_max_tokens,
                legacy_max_tokens: target.provider.kind == ProviderKind::OpenaiCompatible,
                // Breakpoints are left out of the key.
                prompt_cache: false,
                web_search: entry.web_search,
                seal: &ctx.snap.seal,
            },
        )
        .ok()
        .filter(|translated| translated.dropped.is_empty())?;
        written = translated.body;
        &written
    };
    let Value::Object(mut fields) = serde_json::from_slice(bytes).ok()? else {
        return None;
    };
    if provider == ctx.format {
        if provider != Format::Gemini {
            fields.insert("model".into(), model.into());
        }
        if provider == Format::OpenAiChat && ctx.stream {
            let options = fields
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(options) = options {
                options.insert("include_usage".into(), true.into());
            }
        }
    }
    if provider == Format::Anthropic {
        strip_breakpoints(&mut fields);
        text_as_blocks(&mut fields);
    }
    Some(fields)
}

/// Anthropic's shorthand written out: a `system` or a message `content` given as a string
/// is one text block, which is how translations write it.
fn text_as_blocks(fields: &mut Map<String, Value>) {
    let spell_out = |value: &mut Value| {
        if let Value::String(text) = value {
            let text = std::mem::take(text);
            *value = serde_json::json!([{"type": "text", "text": text}]);
        }
    };
    if let Some(system) = fields.get_mut("system") {
        spell_out(system);
    }
    if let Some(Value::Array(messages)) = fields.get_mut("messages") {
        for message in messages {
            if let Some(content) = message.get_mut("content") {
                spell_out(content);
            }
        }
    }
}

/// Removes `cache_control` where Anthropic takes a breakpoint: the request, its system
/// blocks, its messages' content blocks and its tools. Elsewhere (a tool's schema, a tool
/// call's input) a field of that name is the client's data.
fn strip_breakpoints(fields: &mut Map<String, Value>) {
    fields.remove("cache_control");
    let strip = |list: Option<&mut Value>| {
        if let Some(Value::Array(items)) = list {
            for item in items {
                if let Value::Object(block) = item {
                    block.remove("cache_control");
                }
            }
        }
    };
    strip(fields.get_mut("system"));
    strip(fields.get_mut("tools"));
    if let Some(Value::Array(messages)) = fields.get_mut("messages") {
        for message in messages {
            strip(message.get_mut("content"));
        }
    }
}

/// The operation's name for a provider of this format.
fn provider_operation(provider: Format) -> &'static str {
    match provider {
        Format::OpenAiChat => "chat",
        Format::OpenAiResponses => "responses",
        Format::Anthropic => "messages",
        Format::Gemini => "generate",
    }
}

/// The variant headers as `target` would get them: Anthropic's go to Anthropic only, with
/// the provider's `anthropic-version` where the client sent none.
fn variant_for(ctx: &RequestCtx, target: &Target) -> String {
    let anthropic = target.provider.kind == ProviderKind::Anthropic;
    let mut variant = String::new();
    let mut version_sent = false;
    for line in ctx.cache.variant.lines() {
        if line.starts_with("anthropic-") {
            if !anthropic {
                continue;
            }
            version_sent |= line.starts_with("anthropic-version:");
        }
        variant.push_str(line);
        variant.push('\n');
    }
    if anthropic && !version_sent {
        variant.push_str("anthropic-version:");
        variant.push_str(&String::from_utf8_lossy(
            target.provider.anthropic_version.as_bytes(),
        ));
        variant.push('\n');
    }
    variant
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breakpoints_go_where_anthropic_takes_them_and_nowhere_else() {
        let mut fields: Map<String, Value> = serde_json::from_str(
            r#"{"cache_control":{"type":"ephemeral"},
                "system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral"}}],
                "messages":[{"role":"user","content":[{"type":"text","text":"hi",
                    "cache_control":{"type":"ephemeral"}}]},
                    {"role":"assistant","content":[{"type":"tool_use","id":"t","name":"h",
                    "input":{"cache_control":"no-cache"}}]}],
                "tools":[{"name":"h","input_schema":{"type":"object","properties":
                    {"cache_control":{"type":"string"}}},"cache_control":{"type":"ephemeral"}}]}"#,
        )
        .unwrap();
        strip_breakpoints(&mut fields);
        let text = Value::Object(fields).to_string();
        assert_eq!(text.matches("cache_control").count(), 2, "{text}");
        assert!(
            text.contains(r#""input":{"cache_control":"no-cache"}"#),
            "{text}"
        );
        assert!(text.contains(r#""properties":{"cache_control""#), "{text}");
    }

    #[test]
    fn anthropic_text_shorthand_is_one_text_block() {
        let mut short: Map<String, Value> = serde_json::from_str(
            r#"{"system":"be brief","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let long: Map<String, Value> = serde_json::from_str(
            r#"{"system":[{"type":"text","text":"be brief"}],
                "messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
        )
        .unwrap();
        text_as_blocks(&mut short);
        assert_eq!(short, long);
    }
}
