//! Responses sira writes itself: errors in the client's shape, and the model list.

use bytes::Bytes;
use http::{header, HeaderValue};
use pingora_core::protocols::http::ServerSession;
use pingora_http::ResponseHeader;
use serde::Serialize;

use super::ctx::RequestCtx;
use super::relay::sira_headers;
use crate::error::GatewayError;

/// Answers with `error` rendered for the client's surface, unless the client is gone or a
/// response already started (then there is nothing left to say).
pub async fn fail(session: &mut ServerSession, ctx: &mut RequestCtx, error: GatewayError) {
    let status = error.status();
    let body = error.render(ctx.format);
    ctx.error = Some(error);
    if ctx.client_gone || session.response_written().is_some() {
        return;
    }
    let too_large = matches!(ctx.error, Some(GatewayError::BodyTooLarge { .. }));
    if too_large {
        // The rest of the body is still on the wire: the connection cannot be reused.
        session.set_keepalive(None);
    }
    ctx.status = status;
    if write_json(session, ctx, status, body).await.is_err() {
        ctx.client_gone = true;
        return;
    }
    if too_large {
        linger(session).await;
    }
}

/// Keeps reading (and discarding) a refused upload for a moment after answering, as nginx's
/// lingering close does: closing at once would make the client's next write fail with a
/// reset before it reads the 413, so it would report a broken pipe instead of the error.
async fn linger(session: &mut ServerSession) {
    const MAX_BYTES: usize = 16 << 20;
    const MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);
    let drain = async {
        let mut drained = 0;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            drained += chunk.len();
            if drained > MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(MAX_TIME, drain).await;
}

async fn write_json(
    session: &mut ServerSession,
    ctx: &RequestCtx,
    status: u16,
    body: Bytes,
) -> Result<(), ()> {
    let mut header = ResponseHeader::build_no_case(status, Some(6)).map_err(|_| ())?;
    header
        .insert_header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .map_err(|_| ())?;
    header
        .insert_header(header::CONTENT_LENGTH, body.len())
        .map_err(|_| ())?;
    sira_headers(ctx, &mut header).map_err(|_| ())?;
    if let Some(GatewayError::MethodNotAllowed(allowed)) = &ctx.error {
        header
            .insert_header(header::ALLOW, *allowed)
            .map_err(|_| ())?;
    }
    session
        .write_response_header(Box::new(header))
        .await
        .map_err(|_| ())?;
    session
        .write_response_body(body, true)
        .await
        .map_err(|_| ())
}

/// `GET /v1/models`: the exact model names this caller may use, in OpenAI's list format.
/// Wildcard entries cannot be enumerated and are left out.
pub async fn list_models(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
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
    let body = serde_json::to_vec(&List {
        object: "list",
        data,
    })
    .map_err(|e| GatewayError::Internal(format!("cannot list models: {e}").into()))?;
    ctx.status = 200;
    if write_json(session, ctx, 200, Bytes::from(body))
        .await
        .is_err()
    {
        ctx.client_gone = true;
    }
    Ok(())
}

/// `POST /v1/messages/count_tokens` for a model whose provider cannot count: an estimate
/// from the request's text (see `translate::estimate_input_tokens`).
pub async fn count_tokens(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    body: &[u8],
) -> Result<(), GatewayError> {
    let tokens = crate::translate::estimate_input_tokens(ctx.format, body)?;
    let body = serde_json::to_vec(&serde_json::json!({ "input_tokens": tokens }))
        .map_err(|e| GatewayError::Internal(format!("cannot encode token count: {e}").into()))?;
    ctx.status = 200;
    if write_json(session, ctx, 200, Bytes::from(body))
        .await
        .is_err()
    {
        ctx.client_gone = true;
    }
    Ok(())
}
