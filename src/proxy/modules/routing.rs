//! Which route the request is on (and so the client's surface), then, once the body is read,
//! which `models:` entry serves the model it names, and whether the caller may use it.

use pingora_http::RequestHeader;

use http::HeaderName;

use crate::auth::Principal;
use crate::error::GatewayError;
use crate::proxy::body;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::phases::{Flow, Phase, RequestBody};
use crate::routes::{classify, Operation, RouteError};

pub struct Routing;

/// A client's choice among a model's targets, for keys with `route_header: true`.
const X_SIRA_ROUTE: HeaderName = HeaderName::from_static("x-sira-route");

/// Model names are echoed in errors and logs: a longer one is refused, not repeated.
const MAX_MODEL_NAME: usize = 256;

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Phase for Routing {
    fn name(&self) -> &'static str {
        "routing"
    }

    /// Reads: the method and path. Writes: `ctx.format`, `ctx.op`, `ctx.path_model`.
    fn request_filter(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        // Codex tries the Responses WebSocket mode first and falls back to HTTP only on 426.
        let upgrade = req
            .headers
            .get(http::header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if upgrade && matches!(req.uri.path(), "/v1/responses" | "/responses") {
            return Err(GatewayError::UpgradeRequired);
        }
        let route = classify(&req.method, req.uri.path()).map_err(|e| match e {
            RouteError::NotFound => {
                GatewayError::NotFound(format!("{} {}", req.method, clip(req.uri.path(), 200)))
            }
            RouteError::MethodNotAllowed(allowed) => GatewayError::MethodNotAllowed(allowed),
        })?;
        ctx.format = route.format;
        ctx.op = Some(route.op);
        ctx.path_model = route.path_model.map(str::to_owned);
        ctx.response_id = route.response_id.map(str::to_owned);
        if let Some(choice) = req.headers.get(X_SIRA_ROUTE) {
            // Checked against the model entry once the body names it.
            let choice = choice
                .to_str()
                .map_err(|_| GatewayError::invalid("x-sira-route: not a target name"))?;
            ctx.route_choice = Some(clip(choice, MAX_MODEL_NAME).to_owned());
        }
        Ok(Flow::Continue)
    }

    /// Reads: the peeked body, `ctx.principal` (set by authentication). Writes: `ctx.model`,
    /// `ctx.stream`, `ctx.entry` and `ctx.route` (the same entry until a fallback serves),
    /// `ctx.capture`.
    fn request_body_filter(
        &self,
        body: &mut RequestBody,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        let in_path = ctx.path_model.is_some();
        let mut model = match (ctx.path_model.take(), &body.peek.model) {
            (Some(model), _) => model,
            (None, Some(model)) => model.clone(),
            (None, None) => {
                return Err(GatewayError::invalid_param(
                    "model",
                    "you must provide a model parameter",
                ))
            }
        };
        if let Some(principal) = &ctx.principal {
            // The caller's model-rewrite filters (its key's, then its tenant's): the first
            // that rewrites decides.
            let rewritten = principal
                .filters()
                .filter(|f| f.rewrites_model())
                .find_map(|f| f.rewrite_model(&model));
            if let Some(rewritten) = rewritten {
                if !in_path {
                    let edit = body::Rewrite {
                        model: Some(&rewritten),
                        include_usage: false,
                    };
                    body.bytes = body::rewrite(&body.bytes, &body.peek, &edit);
                    body.peek = body::peek(&body.bytes)?;
                }
                model = rewritten;
            }
        }
        ctx.stream =
            body.peek.stream || matches!(ctx.op, Some(Operation::GenerateContent { stream: true }));
        if model.len() > MAX_MODEL_NAME {
            return Err(GatewayError::invalid_param(
                "model",
                format!("the model name is longer than {MAX_MODEL_NAME} bytes"),
            ));
        }
        // Set before the checks, so that a refused request's log line names the model.
        ctx.model = Some(model.clone());
        let snap = ctx.snap.clone();
        let resolution = snap
            .models
            .resolve(&model)
            .ok_or_else(|| GatewayError::UnknownModel {
                model: model.clone(),
                surface: ctx.format,
            })?;
        if !ctx.principal.as_ref().is_some_and(|p| p.allows(&model)) {
            return Err(GatewayError::ModelNotAllowed(model));
        }
        if let Some(choice) = &ctx.route_choice {
            let may_choose = match &ctx.principal {
                Some(Principal::Key(entry)) => entry.route_header,
                Some(Principal::Jwt(_)) => false,
                // No keys configured: the operator's own gateway.
                _ => true,
            };
            if !may_choose {
                return Err(GatewayError::RouteNotAllowed);
            }
            if !resolution.route.has_target(choice) {
                return Err(GatewayError::invalid(format!(
                    "x-sira-route: model {model:?} has no target named {choice:?}"
                )));
            }
        }
        ctx.entry = Some(resolution.route.clone());
        ctx.route = Some(resolution.route.clone());
        ctx.capture = resolution.capture.map(str::to_owned);
        Ok(Flow::Continue)
    }
}
