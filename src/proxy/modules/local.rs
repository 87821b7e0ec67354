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
        // The providers behind wildcard entries are asked for their lists on the first
        // listing (and kept fresh after): it waits for their first answers.
        let catalog = crate::models::catalog::catalog();
        let unasked: Vec<std::sync::Arc<str>> = crate::models::catalog::listable(&ctx.snap)
            .iter()
            .filter(|p| !catalog.was_asked(&p.name))
            .map(|p| p.name.clone())
            .collect();
        if !unasked.is_empty() {
            return Ok(Flow::Wait(Box::pin(async move {
                catalog.first_lists(unasked).await;
                Ok(Flow::Apply(Box::new(|_, ctx| {
                    Ok(Flow::Respond(LocalResponse {
                        status: 200,
                        body: list_models(ctx)?,
                    }))
                })))
            })));
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

/// The model names this caller may use, in OpenAI's list format: the exact entries, then
/// for each `prefix*` entry the models its providers listed (`crate::models::catalog`),
/// prefixed, where no exact entry already has the name.
fn list_models(ctx: &RequestCtx) -> Result<Bytes, GatewayError> {
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Model<'a>>,
    }
    #[derive(Serialize)]
    struct Model<'a> {
        id: std::borrow::Cow<'a, str>,
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
    let allowed = |name: &str| principal.is_some_and(|p| p.allows(name));
    let mut data: Vec<Model> = ctx
        .snap
        .models
        .listed()
        .filter(|route| allowed(&route.name))
        // A model whose own address filters refuse this caller is not one it may use.
        .filter(|route| super::filters::address_passes(route.filters.iter(), ctx))
        .map(|route| Model {
            id: std::borrow::Cow::Borrowed(&route.name),
            object: "model",
            created,
            owned_by: route.targets.first().map_or("sira", |t| &t.provider.name),
        })
        .collect();
    let mut seen: ahash::AHashSet<String> = data.iter().map(|m| m.id.to_string()).collect();
    let catalog = crate::models::catalog::catalog();
    for (glob, route) in ctx.snap.models.wildcards() {
        let Some(prefix) = crate::models::catalog::trailing_prefix(glob.as_str()) else {
            continue;
        };
        if !super::filters::address_passes(route.filters.iter(), ctx) {
            continue;
        }
        for target in route.targets.iter().filter(|t| t.model.is_none()) {
            let Some(ids) = catalog.ids(&target.provider.name) else {
                continue;
            };
            for id in ids.iter() {
                let name = format!("{prefix}{id}");
                // A more specific entry may route this name elsewhere: only names this
                // entry serves are listed as its.
                let serves = ctx
                    .snap
                    .models
                    .resolve(&name)
                    .is_some_and(|found| std::sync::Arc::ptr_eq(found.route, route));
                if serves && allowed(&name) && seen.insert(name.clone()) {
                    data.push(Model {
                        id: std::borrow::Cow::Owned(name),
                        object: "model",
                        created,
                        owned_by: &target.provider.name,
                    });
                }
            }
        }
    }
    serde_json::to_vec(&List {
        object: "list",
        data,
    })
    .map(Bytes::from)
    .map_err(|e| GatewayError::Internal(format!("cannot list models: {e}").into()))
}
