//! Client format ⇄ provider format (`crate::translate`): the request of each try, then the
//! response, stream and errors on the way back. When both sides speak the same format the
//! client's bytes pass through, edited only where they must be (the model name, the usage
//! request of OpenAI streams).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue};
use pingora_http::ResponseHeader;

use super::headers::header_error;
use crate::error::{render_error, Category, GatewayError};
use crate::format::Format;
use crate::metrics::metrics;
use crate::provider::ProviderKind;
use crate::proxy::body::{self, Rewrite};
use crate::proxy::ctx::RequestCtx;
use crate::proxy::downstream::join;
use crate::proxy::phases::{Phase, UpstreamRequest};
use crate::routes::Operation;
use crate::translate::{
    count_response, translate_error, translate_request, translate_response_with, RequestOptions,
    ResponseOptions, StreamLimits, StreamTranslator, TranslateError,
};

pub struct Translation;

impl Phase for Translation {
    fn name(&self) -> &'static str {
        "translation"
    }

    /// Reads: the client's body and format, the try's target and model. Writes: the
    /// upstream body and operation, `ctx.translation`, `ctx.response.dropped_params`.
    /// `Err` when this target cannot take the request (a field its format cannot express, an
    /// operation it does not serve): the next target may.
    fn upstream_request_filter(
        &self,
        upstream: &mut UpstreamRequest<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let provider = &upstream.target.provider;
        if upstream.op == Operation::Embeddings && !provider.kind.has_embeddings() {
            return Err(GatewayError::Unsupported(
                format!(
                    "provider {:?} ({}) has no embeddings endpoint",
                    provider.name,
                    provider.kind.as_str()
                )
                .into(),
            ));
        }
        if upstream.op == Operation::CountTokens {
            return count_request(upstream, ctx);
        }
        ctx.translation.count = None;
        // A try to the provider that answered the previous response itself gets the
        // client's own body: that provider remembers the conversation (and its reasoning).
        let native = ctx
            .stored
            .native
            .as_ref()
            .filter(|(name, _)| {
                upstream.format == Format::OpenAiResponses && **name == *provider.name
            })
            .map(|(_, own)| own.clone());
        let client = native.as_ref().unwrap_or(upstream.client);
        let stored = ctx.stored.store;
        let state = &mut ctx.translation;
        if upstream.format != ctx.format {
            let translated = translate_request(
                ctx.format,
                upstream.format,
                &client.bytes,
                &RequestOptions {
                    model: upstream.model,
                    stream: upstream.stream,
                    default_max_tokens: ctx
                        .route
                        .as_ref()
                        .map_or(crate::models::DEFAULT_MAX_TOKENS, |r| r.default_max_tokens),
                    legacy_max_tokens: provider.kind == ProviderKind::OpenaiCompatible,
                    prompt_cache: ctx.route.as_ref().is_none_or(|r| r.prompt_cache),
                    web_search: ctx.route.as_ref().is_some_and(|r| r.web_search),
                    seal: &ctx.snap.seal,
                },
            )?;
            upstream.body = Bytes::from(translated.body);
            upstream.op = translated_op(upstream.format, upstream.stream);
            let mut context = translated.context;
            if stored {
                // The stored output is what a follow-up replays: its reasoning must be in it.
                // Its id is sira's own: the provider's may repeat (small servers count them)
                // and the client's x-request-id is the client's to choose.
                context.stored = true;
                context.reasoning_carrier = true;
                context.response_id = Some(fresh_response_id());
            }
            state.context = Some(context);
            state.injected_usage = false;
            ctx.response.dropped_params = translated.dropped;
            return Ok(());
        }
        // Usage on OpenAI streams only comes when asked for (TRANSLATION.md §2.1).
        let peek = &client.peek;
        let injected_usage =
            upstream.stream && upstream.format == Format::OpenAiChat && !peek.include_usage;
        let model_in_body =
            upstream.format != Format::Gemini && provider.kind != ProviderKind::Azure;
        upstream.body = body::rewrite(
            &client.bytes,
            peek,
            &Rewrite {
                model: model_in_body.then_some(upstream.model),
                include_usage: injected_usage,
            },
        );
        if let Some(clean) =
            crate::translate::strip_foreign_reasoning(upstream.format, &upstream.body)
        {
            upstream.body = Bytes::from(clean);
        }
        state.context = None;
        state.injected_usage = injected_usage;
        ctx.response.dropped_params.clear();
        Ok(())
    }

    /// Reads: `ctx.translation.context`, the response status and kind. Writes: the content
    /// type; `ctx.response.whole` for JSON and error bodies (translated whole, before the
    /// header), `ctx.translation.stream` for streams.
    fn response_filter(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        if ctx.response.local {
            return Ok(());
        }
        if ctx.translation.count.is_some() {
            ctx.response.whole = true;
            let openai = ctx.translation.count == Some(crate::translate::CountApi::OpenAi);
            if openai
                && matches!(ctx.response.status, 404 | 405)
                && ctx.translation.count_estimate.is_some()
            {
                // No counting endpoint there after all: the estimate, marked as one.
                ctx.response.estimate = true;
            }
            return Ok(());
        }
        let Some(context) = ctx.translation.context.take() else {
            return Ok(());
        };
        if ctx.response.sse {
            resp.insert_header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            )
            .map_err(header_error)?;
            let mut translator = Box::new(StreamTranslator::with_context(
                ctx.upstream_format(),
                ctx.format,
                response_options(ctx),
                context,
            ));
            let server = &ctx.snap.server;
            translator.set_limits(StreamLimits {
                event: server.max_sse_event,
                tool_arguments: server.max_tool_arguments,
                answer: server.max_response_body,
            });
            ctx.translation.stream = Some(translator);
        } else {
            resp.insert_header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .map_err(header_error)?;
            ctx.response.whole = true;
            ctx.translation.context = Some(context);
        }
        Ok(())
    }

    fn wants_response_body(&self, ctx: &RequestCtx) -> bool {
        ctx.translation.stream.is_some()
            || ctx.translation.context.is_some()
            || ctx.translation.count.is_some()
    }

    /// A stream: provider events in, the client's events out (one buffer per batch). A
    /// whole JSON body: translated at once, its usage taken from the provider's answer. An
    /// error body: into the client's error shape and the status its SDK expects.
    fn response_body_filter(
        &self,
        body: &mut Vec<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let provider = ctx.provider_label().to_owned();
        let broken = move |reason: String| GatewayError::UpstreamBroken { provider, reason };
        if let Some(translator) = ctx.translation.stream.as_mut() {
            let failure = translator
                .translate_batch(body, &mut ctx.translation.out, end_of_stream)
                .err();
            // A translated stream has no provider tap in accounting: the events it
            // translated are what a cut stream's estimate counts as delivered.
            ctx.accounting.frames = ctx.accounting.frames.max(translator.translated_events());
            let usage = translator.usage();
            ctx.usage = usage;
            ctx.usage_seen = !usage.is_zero();
            return match failure {
                Some(e) => {
                    if let TranslateError::TooLarge { buffer, .. } = &e {
                        metrics().buffer_limit(*buffer);
                    }
                    Err(broken(match e {
                        TranslateError::Json(e) => {
                            format!("an event of the provider's stream is not valid JSON: {e}")
                        }
                        e => format!("cannot translate the provider's stream: {e}"),
                    }))
                }
                None => Ok(()),
            };
        }
        if let Some(api) = ctx.translation.count.take() {
            let whole = join(body);
            if ctx.response.estimate {
                let tokens = ctx.translation.count_estimate.unwrap_or_default();
                ctx.response.status = 200;
                body.push(Bytes::from(format!(r#"{{"input_tokens":{tokens}}}"#)));
                return Ok(());
            }
            if ctx.response.status >= 400 {
                let translated = translate_error(
                    ctx.upstream_format(),
                    ctx.format,
                    ctx.response.status,
                    &whole,
                );
                ctx.response.status = translated.status;
                body.push(Bytes::from(translated.body));
                return Ok(());
            }
            let (answer, _) = count_response(api, &whole)
                .map_err(|e| broken(format!("cannot read the provider's token count: {e}")))?;
            body.push(Bytes::from(answer));
            return Ok(());
        }
        let Some(context) = ctx.translation.context.take() else {
            return Ok(());
        };
        let whole = join(body);
        let upstream_format = ctx.upstream_format();
        if ctx.response.status >= 400 {
            let translated =
                translate_error(upstream_format, ctx.format, ctx.response.status, &whole);
            ctx.response.status = translated.status;
            body.push(Bytes::from(translated.body));
            return Ok(());
        }
        let translated = translate_response_with(
            upstream_format,
            ctx.format,
            &whole,
            &response_options(ctx),
            &context,
        )
        .map_err(|e| broken(format!("cannot translate the provider's response: {e}")))?;
        ctx.usage = translated.usage;
        ctx.usage_seen = !translated.usage.is_zero();
        body.push(Bytes::from(translated.body));
        Ok(())
    }

    /// A translated stream ends with the client format's own error event.
    fn response_error_filter(
        &self,
        error: &GatewayError,
        event: &mut Option<Bytes>,
        ctx: &mut RequestCtx,
    ) {
        if let Some(translator) = ctx.translation.stream.as_mut() {
            let out = &mut ctx.translation.out;
            out.clear();
            translator.error_event(&error.to_string(), out);
            ctx.usage = translator.usage();
            ctx.usage_seen = !ctx.usage.is_zero();
            if !out.is_empty() {
                *event = Some(out.split().freeze());
            }
        }
    }
}

/// A token count for this try's provider: Anthropic's request as it is to Anthropic, the
/// provider's own counting request to Gemini and OpenAI. A provider that cannot count is
/// not a place for it (the next target may be): a count is never sent as a generation.
fn count_request(
    upstream: &mut UpstreamRequest<'_>,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let provider = &upstream.target.provider;
    ctx.translation.context = None;
    ctx.translation.injected_usage = false;
    ctx.response.dropped_params.clear();
    if provider.kind == ProviderKind::Anthropic && ctx.format == Format::Anthropic {
        ctx.translation.count = None;
        upstream.body = body::rewrite(
            &upstream.client.bytes,
            &upstream.client.peek,
            &Rewrite {
                model: Some(upstream.model),
                include_usage: false,
            },
        );
        if let Some(clean) =
            crate::translate::strip_foreign_reasoning(Format::Anthropic, &upstream.body)
        {
            upstream.body = Bytes::from(clean);
        }
        return Ok(());
    }
    let Some(api) = provider.kind.count_api() else {
        return Err(GatewayError::Unsupported(
            format!(
                "provider {:?} ({}) has no token counting endpoint",
                provider.name,
                provider.kind.as_str()
            )
            .into(),
        ));
    };
    let counted = crate::translate::count_request(
        api,
        ctx.format,
        &upstream.client.bytes,
        &RequestOptions {
            model: upstream.model,
            stream: false,
            default_max_tokens: crate::models::DEFAULT_MAX_TOKENS,
            legacy_max_tokens: false,
            prompt_cache: false,
            web_search: false,
            seal: &ctx.snap.seal,
        },
    )?;
    upstream.body = Bytes::from(counted);
    ctx.translation.count = Some(api);
    ctx.translation.count_estimate =
        crate::translate::estimate_input_tokens(ctx.format, &upstream.client.bytes).ok();
    Ok(())
}

/// `resp_` and 24 random hex digits.
fn fresh_response_id() -> String {
    let mut random = [0u8; 12];
    // Without randomness the id still comes out well-formed; uniqueness then rests on the
    // store's per-owner filing.
    let _ = getrandom::fill(&mut random);
    format!("resp_{}", hex::encode(random))
}

/// What response translators need to fill in fields the provider may not send.
pub fn response_options(ctx: &RequestCtx) -> ResponseOptions {
    ResponseOptions {
        model: ctx.upstream.model.clone().unwrap_or_default(),
        request_id: ctx.id.to_str().unwrap_or("req").to_owned(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// The provider operation a translated request becomes.
fn translated_op(provider: Format, stream: bool) -> Operation {
    match provider {
        Format::OpenAiChat => Operation::ChatCompletions,
        Format::OpenAiResponses => Operation::Responses,
        Format::Anthropic => Operation::Messages,
        Format::Gemini => Operation::GenerateContent { stream },
    }
}

/// The in-stream error event of each surface (CONTRACT.md, errors after streaming began),
/// for streams that pass through untranslated.
pub fn stream_error_event(format: Format, error: &GatewayError, request_id: &str) -> Bytes {
    let message = error.to_string();
    let payload = render_error(
        format,
        502,
        Category::Upstream,
        &message,
        None,
        Some("upstream_error"),
    );
    let mut event = BytesMut::with_capacity(payload.len() + 32);
    match format {
        Format::Anthropic | Format::OpenAiResponses => {
            event.extend_from_slice(b"event: error\ndata: ")
        }
        Format::OpenAiChat | Format::Gemini => event.extend_from_slice(b"data: "),
    }
    event.extend_from_slice(&payload);
    event.extend_from_slice(b"\n\n");
    if format == Format::OpenAiResponses {
        // Responses clients (Codex) end a turn on `response.failed`, as a translated stream
        // ends: the same ending whether the stream was translated or passed through.
        let failed = serde_json::json!({
            "type": "response.failed",
            "response": {
                "id": format!("resp_{request_id}"),
                "object": "response",
                "status": "failed",
                "output": [],
                "error": {"code": "upstream_error", "message": message},
            }
        });
        event.extend_from_slice(b"event: response.failed\ndata: ");
        event.extend_from_slice(failed.to_string().as_bytes());
        event.extend_from_slice(b"\n\n");
    }
    event.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_events_per_surface() {
        let error = GatewayError::UpstreamBroken {
            provider: "p".into(),
            reason: "reset".into(),
        };
        let anthropic = stream_error_event(Format::Anthropic, &error, "r1");
        assert!(anthropic.starts_with(b"event: error\ndata: {\"type\":\"error\""));
        let openai = stream_error_event(Format::OpenAiChat, &error, "r1");
        assert!(openai.starts_with(b"data: {\"error\":"));
        assert!(openai.ends_with(b"\n\n"));
        let responses = stream_error_event(Format::OpenAiResponses, &error, "r1");
        let text = String::from_utf8(responses.to_vec()).unwrap();
        assert!(text.starts_with("event: error\n"), "{text}");
        assert!(text.contains("event: response.failed\ndata: {"), "{text}");
        assert!(text.contains("\"status\":\"failed\""), "{text}");
        assert!(text.ends_with("\n\n"));
    }
}
