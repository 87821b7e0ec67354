//! Who is calling: the key in the request's headers (or `?key=`), against the snapshot's key
//! table (`crate::auth`).

use pingora_http::RequestHeader;

use crate::auth::authenticate;
use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::phases::{Flow, Phase};

pub struct Authenticate;

impl Phase for Authenticate {
    fn name(&self) -> &'static str {
        "auth"
    }

    /// Reads: the credential headers and query. Writes: `ctx.principal`. A missing or
    /// unknown key is a 401 before the body is read.
    fn request_filter(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        let principal = authenticate(&ctx.snap.keys, &req.headers, req.uri.query())?;
        ctx.principal = Some(principal);
        Ok(Flow::Continue)
    }
}
