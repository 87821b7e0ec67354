//! Who is calling: the key in the request's headers (or `?key=`), against the snapshot's key
//! table (`crate::auth`).

use pingora_http::RequestHeader;

use crate::auth::{authenticate_any, jwt, AuthError, Authenticated, Principal};
use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::phases::{Flow, Phase};

pub struct Authenticate;

impl Phase for Authenticate {
    fn name(&self) -> &'static str {
        "auth"
    }

    /// Reads: the credential headers and query. Writes: `ctx.principal`. A missing or
    /// unknown key, or a token that does not verify, is a 401 before the body is read.
    fn request_filter(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        let snap = &ctx.snap;
        let found = authenticate_any(
            &snap.keys,
            &snap.jwt,
            &snap.tenants,
            &req.headers,
            req.uri.query(),
        )?;
        match found {
            Authenticated::Caller(principal) => {
                ctx.principal = Some(principal);
                Ok(Flow::Continue)
            }
            // The token's key is not among those fetched: fetch once (rate-limited per
            // issuer), then verify again; still unknown is a 401.
            Authenticated::Refetch(jwks, token) => Ok(Flow::Wait(Box::pin(async move {
                jwks.refetch_for_unknown_kid().await;
                Ok(Flow::Apply(Box::new(move |_, ctx| {
                    let snap = ctx.snap.clone();
                    match jwt::verify(&snap.jwt, &token, &snap.tenants, true) {
                        Ok(jwt::Verdict::Caller(caller)) => {
                            ctx.principal = Some(Principal::Jwt(std::sync::Arc::new(caller)));
                            Ok(Flow::Continue)
                        }
                        Ok(jwt::Verdict::Refetch(_)) => {
                            Err(AuthError::Token(jwt::JwtError::UnknownKey).into())
                        }
                        Err(e) => Err(AuthError::Token(e).into()),
                    }
                })))
            }))),
        }
    }
}
