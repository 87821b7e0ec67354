//! Which endpoint of a provider a try goes to: the provider's pool ([`crate::pool`]) decides,
//! with the request's affinity key when the pool hashes, away from endpoints that already
//! failed this request.

use pingora_http::RequestHeader;

use crate::auth::Principal;
use crate::error::GatewayError;
use crate::models::Target;
use crate::pool::Pick;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::phases::{Phase, RequestBody};

pub struct Selection;

impl Phase for Selection {
    fn name(&self) -> &'static str {
        "selection"
    }

    /// Reads: `ctx.upstream.failed`, `ctx.principal` (for `hash_key: client-key`).
    fn upstream_peer(
        &self,
        target: &Target,
        req: &RequestHeader,
        body: &RequestBody,
        ctx: &RequestCtx,
    ) -> Option<Result<Pick, GatewayError>> {
        let provider = &target.provider;
        let pool = &provider.pool;
        let client_key = match &ctx.principal {
            Some(Principal::Key(entry)) => Some(&*entry.name),
            Some(Principal::Jwt(caller)) => Some(caller.owner.as_str()),
            _ => None,
        };
        let key = pool
            .hash_key
            .as_ref()
            .and_then(|k| k.extract(req, &body.bytes, client_key));
        // Empty unless a try failed: collecting nothing does not allocate.
        let avoid: Vec<usize> = ctx
            .upstream
            .failed
            .iter()
            .filter(|(name, _)| *name == provider.name)
            .map(|(_, index)| *index)
            .collect();
        Some(
            pool.select(key.as_deref(), &avoid)
                .map_err(|e| GatewayError::no_endpoint(&provider.name, &e)),
        )
    }
}
