//! Which endpoint of a provider a try goes to: weighted round robin over the provider's
//! endpoints, away from one that already failed this request.

use crate::models::Target;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::phases::Phase;

pub struct Selection;

impl Phase for Selection {
    fn name(&self) -> &'static str {
        "selection"
    }

    /// Reads: `ctx.upstream.failed`.
    fn upstream_peer(&self, target: &Target, ctx: &RequestCtx) -> Option<usize> {
        let provider = &target.provider;
        let failed = ctx
            .upstream
            .failed
            .iter()
            .filter(|(name, _)| *name == provider.name)
            .map(|(_, index)| *index);
        Some(provider.pick_endpoint(failed))
    }
}
