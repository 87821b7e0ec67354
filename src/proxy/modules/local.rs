//! Answers sira gives without a provider: `GET /v1/models` (the models the caller may use)
//! and Anthropic's `count_tokens` for a model no provider of which can count (an estimate).

use bytes::Bytes;
use pingora_http::RequestHeader;
use serde::Serialize;

use crate::error::GatewayError;
use crate::models::ModelRoute;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::phases::{Flow, LocalResponse, Phase, RequestBody};
use crate::routes::Operation;

pub struct LocalAnswers;

impl Phase for LocalAnswers {
    fn name(&self) -> &'static str {
        "local"
    }

    /// Reads: `ctx.op`, `ctx.principal`. Answers `GET /v1/models`.
    fn request_filter(
        &self,
        _req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        if ctx.op != Some(Operation::ListModels) {
            return Ok(Flow::Continue);
        }
        Ok(Flow::Respond(LocalResponse {
            status: 200,
            body: list_models(ctx)?,
        }))
    }

    /// Reads: `ctx.op`, `ctx.route`. Answers `count_tokens` for a model not served by
    /// Anthropic (CONTRACT.md: "answered locally when the provider has none").
    fn request_body_filter(
        &self,
        body: &mut RequestBody,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        let counts_upstream = ctx
            .route
            .as_deref()
            .is_some_and(|route| counts_upstream(route, &ctx.snap.models));
        if ctx.op != Some(Operation::CountTokens) || counts_upstream {
            return Ok(Flow::Continue);
        }
        let tokens = crate::translate::estimate_input_tokens(ctx.format, &body.bytes)?;
        ctx.response.estimate = true;
        let body =
            serde_json::to_vec(&serde_json::json!({ "input_tokens": tokens })).map_err(|e| {
                GatewayError::Internal(format!("cannot encode token count: {e}").into())
            })?;
        Ok(Flow::Respond(LocalResponse {
            status: 200,
            body: Bytes::from(body),
        }))
    }
}

/// Whether some place the request could go — a target, whatever the order picks, or a
/// fallback — counts tokens itself (Anthropic, Gemini, OpenAI); the count goes there, and a
/// target that cannot count is passed over. With none, the count is a local estimate: a
/// count is never translated into a completion, a real generation billed for a question
/// that costs nothing.
fn counts_upstream(route: &ModelRoute, models: &crate::models::ModelTable) -> bool {
    let counts = |route: &ModelRoute| {
        route
            .targets
            .iter()
            .any(|t| t.provider.kind.counts_tokens())
    };
    counts(route)
        || route
            .fallbacks
            .iter()
            .any(|name| models.resolve(name).is_some_and(|f| counts(f.route)))
}

/// The exact model names this caller may use, in OpenAI's list format. Wildcard entries
/// cannot be enumerated and are left out.
fn list_models(ctx: &RequestCtx) -> Result<Bytes, GatewayError> {
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Model<'a>>,
    }
    #[derive(Serialize)]
    struct Model<'a> {
        id: &'a str,
        object: &'static str,
        created: u64,
        owned_by: &'a str,
    }
    let created = ctx
        .snap
        .meta
        .loaded_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let principal = ctx.principal.as_ref();
    let data = ctx
        .snap
        .models
        .listed()
        .filter(|route| principal.is_some_and(|p| p.allows(&route.name)))
        .map(|route| Model {
            id: &route.name,
            object: "model",
            created,
            owned_by: route.targets.first().map_or("sira", |t| &t.provider.name),
        })
        .collect();
    serde_json::to_vec(&List {
        object: "list",
        data,
    })
    .map(Bytes::from)
    .map_err(|e| GatewayError::Internal(format!("cannot list models: {e}").into()))
}
