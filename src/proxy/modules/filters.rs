//! The operator's filters (`filters:` in the config, `lua-free-filters`), attached to the
//! caller's key and to the model entry, run in the chain like any other module.
//!
//! They sit twice in the chain: on the client's side of translation (request bodies in the
//! client's format, response headers, bodies and stream events as the client receives them)
//! and on the provider's side (the upstream request's headers, bodies in the provider's
//! format), so that each hook sees the format it is documented to see.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use lua_free_filters::{Filter, HeaderEdit};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::auth::Principal;
use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::phases::{Phase, UpstreamRequest};

pub struct OperatorFilters {
    side: Side,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Provider,
}

impl OperatorFilters {
    pub fn client_side() -> OperatorFilters {
        OperatorFilters { side: Side::Client }
    }

    pub fn provider_side() -> OperatorFilters {
        OperatorFilters {
            side: Side::Provider,
        }
    }
}

impl Phase for OperatorFilters {
    fn name(&self) -> &'static str {
        match self.side {
            Side::Client => "filters-client",
            Side::Provider => "filters-provider",
        }
    }

    /// Provider side: the upstream request's headers, after the provider's own were set.
    fn upstream_request_filter(
        &self,
        upstream: &mut UpstreamRequest<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        if self.side == Side::Provider {
            let mut edit = RequestEdit(&mut upstream.header);
            for filter in attached(ctx) {
                filter.on_upstream_request(&mut edit);
            }
        }
        Ok(())
    }

    /// Client side: the response header as the client will receive it.
    fn response_filter(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        if self.side == Side::Client {
            let mut edit = ResponseEdit(resp);
            for filter in attached(ctx) {
                filter.on_client_response(&mut edit);
            }
        }
        Ok(())
    }
}

/// Filters attached to the caller's key, then to the model entry.
fn attached(ctx: &RequestCtx) -> impl Iterator<Item = &Arc<dyn Filter>> {
    let key_filters = match &ctx.principal {
        Some(Principal::Key(entry)) => entry.filters.as_slice(),
        _ => &[],
    };
    let model_filters = ctx.route.as_ref().map_or(&[][..], |r| r.filters.as_slice());
    key_filters.iter().chain(model_filters)
}

/// Lets filters edit a Pingora request header.
struct RequestEdit<'a>(&'a mut RequestHeader);

impl HeaderEdit for RequestEdit<'_> {
    fn set(&mut self, name: &HeaderName, value: &HeaderValue) {
        // Names and values were validated when the filter was built.
        let _ = self.0.insert_header(name.clone(), value.clone());
    }

    fn remove(&mut self, name: &HeaderName) {
        self.0.remove_header(name);
    }
}

/// Lets filters edit a Pingora response header.
struct ResponseEdit<'a>(&'a mut ResponseHeader);

impl HeaderEdit for ResponseEdit<'_> {
    fn set(&mut self, name: &HeaderName, value: &HeaderValue) {
        // Names and values were validated when the filter was built.
        let _ = self.0.insert_header(name.clone(), value.clone());
    }

    fn remove(&mut self, name: &HeaderName) {
        self.0.remove_header(name);
    }
}
