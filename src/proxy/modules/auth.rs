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
        let issued = snap.issued.load();
        let found = match authenticate_any(
            snap,
            &issued,
            &req.headers,
            req.uri.query(),
            ctx.client_identity.as_deref(),
        ) {
            Ok(found) => found,
            // Just started on a Redis key store not read yet: an unknown key may be an
            // issued one, so it waits for that first read (bounded) and is checked again.
            Err(AuthError::Invalid) if crate::keystore::first_read_pending(snap) => {
                let headers = req.headers.clone();
                let query = req.uri.query().map(str::to_owned);
                return Ok(Flow::Wait(Box::pin(async move {
                    crate::keystore::first_read().await;
                    Ok(Flow::Apply(Box::new(move |_, ctx| {
                        let snap = ctx.snap.clone();
                        let issued = snap.issued.load();
                        let identity = ctx.client_identity.clone();
                        match authenticate_any(
                            &snap,
                            &issued,
                            &headers,
                            query.as_deref(),
                            identity.as_deref(),
                        )? {
                            Authenticated::Caller(principal) => {
                                ctx.principal = Some(principal);
                                Ok(Flow::Continue)
                            }
                            // A JWT never reaches the key tables.
                            Authenticated::Refetch(..) => Err(AuthError::Invalid.into()),
                        }
                    })))
                })));
            }
            Err(e) => return Err(e.into()),
        };
        match found {
            Authenticated::Caller(principal) => {
                if matches!(principal, Principal::Anonymous) {
                    browser_guard(req, &ctx.snap.server)?;
                }
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

/// A gateway without authentication that listens on loopback only (the no-config default)
/// is still reachable from a web page the user opens: through DNS rebinding (another name
/// resolving to 127.0.0.1) and through "simple" cross-site POSTs, which browsers send
/// without asking when the body is not JSON. So the `Host` must be a loopback name, and a
/// body must say it is JSON, which a page can only send after a CORS preflight sira never
/// grants. A gateway opened on purpose beyond loopback (`auth.mode: open`) is the
/// operator's choice and is not checked.
fn browser_guard(
    req: &RequestHeader,
    server: &crate::config::ServerSettings,
) -> Result<(), GatewayError> {
    if !server.listen.iter().all(|a| a.ip().is_loopback()) {
        return Ok(());
    }
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or_default();
    if !crate::auth::is_loopback_host(host) {
        return Err(GatewayError::LocalOnly("the Host is not a loopback name"));
    }
    if req.method == http::Method::POST && !crate::auth::says_json(&req.headers) {
        return Err(GatewayError::LocalOnly("send the body as application/json"));
    }
    Ok(())
}
