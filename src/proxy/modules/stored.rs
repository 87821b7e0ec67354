//! Stored Responses on the request path (`crate::responses_store`): a `store: true`
//! response is kept when it completes, a `previous_response_id` is replaced by the stored
//! conversation before the request is translated, and `GET` / `DELETE /v1/responses/{id}`
//! and `…/input_items` are answered from the store, for the key that created the response
//! only.
//!
//! It sits on the client's side of translation, so it keeps what the client sent and
//! received (the Responses format), whichever provider answered.

use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::GatewayError;
use crate::format::Format;
use crate::proxy::body;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::downstream::join;
use crate::proxy::phases::{Flow, LocalResponse, Phase, RequestBody};
use crate::responses_store::{expand, history, record, ChainError, History, Record, ResponseStore};
use crate::routes::{valid_response_id, Operation, StoredAction};
use crate::sse::{Event, SseScanner};

pub struct StoredResponses;

/// A stored conversation larger than this is not replayed: beyond it no provider's context
/// window would take it anyway.
const MAX_CONVERSATION: usize = 32 << 20;

impl Phase for StoredResponses {
    fn name(&self) -> &'static str {
        "stored-responses"
    }

    /// Reads: `ctx.op`, `ctx.response_id`, `ctx.principal`. Answers the stored-response
    /// routes.
    fn request_filter(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        let Some(Operation::StoredResponse(action)) = ctx.op else {
            return Ok(Flow::Continue);
        };
        let id = ctx.response_id.clone().unwrap_or_default();
        let Some(store) = ctx.snap.responses_store.clone() else {
            return Err(GatewayError::ResponseNotFound(id));
        };
        let owner = ctx.owner().into_owned();
        let page = Page::parse(req.uri.query())?;
        Ok(Flow::Wait(Box::pin(async move {
            let body = answer(&store, &owner, &id, action, &page).await?;
            Ok(Flow::Respond(LocalResponse { status: 200, body }))
        })))
    }

    /// Reads: the peeked `store` and `previous_response_id`. Writes: `ctx.stored`; replaces
    /// the body with the whole conversation when it continues a stored one.
    fn request_body_filter(
        &self,
        body: &mut RequestBody,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        if ctx.op != Some(Operation::Responses) {
            return Ok(Flow::Continue);
        }
        let Some(store) = ctx.snap.responses_store.clone() else {
            return Ok(Flow::Continue);
        };
        ctx.stored.store = body.peek.store != Some(false);
        if ctx.stored.store {
            ctx.stored.original = Some(body.bytes.clone());
        }
        let Some(previous) = body.peek.previous_response_id.clone() else {
            return Ok(Flow::Continue);
        };
        if !valid_response_id(&previous) {
            return Err(GatewayError::invalid_param(
                "previous_response_id",
                "not a response id (at most 128 letters, digits, `_` and `-`)",
            ));
        }
        let owner = ctx.owner().into_owned();
        Ok(Flow::Wait(Box::pin(async move {
            let found = history(&store, &owner, &previous, MAX_CONVERSATION).await;
            Ok(Flow::Apply(Box::new(move |body, ctx| {
                replay(found, previous, body, ctx)
            })))
        })))
    }

    /// Reads: the response status and kind. Writes: `ctx.stored.capturing`, and frames the
    /// stream to find its terminal event. A JSON answer is not held up for this: its pieces
    /// are kept as they pass.
    fn response_filter(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        if !ctx.stored.store || ctx.response.local || !resp.status.is_success() {
            return Ok(());
        }
        ctx.stored.capturing = true;
        if ctx.response.sse {
            // The terminal event repeats the whole answer: bounded like the whole answer.
            let server = &ctx.snap.server;
            let limit = server.max_sse_event.max(server.max_response_body);
            ctx.stored.scanner = Some(SseScanner::with_limit(limit));
        }
        Ok(())
    }

    fn wants_response_body(&self, ctx: &RequestCtx) -> bool {
        ctx.stored.capturing
    }

    /// Keeps the Response object: the whole JSON answer, or the `response` of a stream's
    /// `response.completed` / `response.incomplete` event. The client's bytes are not
    /// changed, and an answer too large to keep is still delivered, unstored.
    fn response_body_filter(
        &self,
        body: &mut Vec<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        if !ctx.stored.capturing {
            return Ok(());
        }
        let Some(scanner) = ctx.stored.scanner.as_mut() else {
            let limit = ctx.snap.server.max_response_body;
            let state = &mut ctx.stored;
            state.kept_len += body.iter().map(Bytes::len).sum::<usize>();
            if state.kept_len > limit {
                tracing::warn!(request_id = ?ctx.id, "a response too large to store was not stored");
                state.capturing = false;
                state.kept = Vec::new();
                return Ok(());
            }
            state.kept.extend(body.iter().cloned());
            if end_of_stream {
                let whole = join(&mut std::mem::take(&mut state.kept));
                keep(ctx, &whole);
            }
            return Ok(());
        };
        let mut frames = Vec::new();
        for piece in body.iter() {
            if scanner.feed(piece.clone(), &mut frames).is_err() {
                tracing::warn!(request_id = ?ctx.id, "a streamed response too large to store was not stored");
                ctx.stored.scanner = None;
                ctx.stored.capturing = false;
                return Ok(());
            }
        }
        for frame in frames {
            if let Some(response) = terminal_response(&frame) {
                keep(ctx, response.get().as_bytes());
                break;
            }
        }
        Ok(())
    }
}

/// Puts the stored conversation in front of the request's input. What sira cannot replay
/// whole is left as the client wrote it: a Responses provider may hold the conversation
/// itself (a translated try then refuses it with OpenAI's not-found error).
fn replay(
    found: Result<History, ChainError>,
    previous: String,
    body: &mut RequestBody,
    ctx: &mut RequestCtx,
) -> Result<Flow, GatewayError> {
    let history = match found {
        Ok(history) => history,
        // Not sira's: this conversation began where sira did not keep it.
        Err(ChainError::NotFound) => {
            ctx.stored.partial = true;
            return Ok(Flow::Continue);
        }
        Err(ChainError::Store(e)) => return Err(e.into()),
        Err(e) => {
            return Err(GatewayError::PreviousResponse {
                id: previous,
                reason: e.to_string(),
            })
        }
    };
    if history.partial {
        if history.native_provider.is_none() {
            return Err(GatewayError::PreviousResponse {
                id: previous,
                reason: "an earlier response of this conversation is no longer stored".into(),
            });
        }
        // Only the provider that keeps the conversation can continue it.
        ctx.stored.partial = true;
        ctx.stored.previous = Some(previous);
        return Ok(Flow::Continue);
    }
    let expanded =
        expand(&body.bytes, history.items).map_err(|m| GatewayError::invalid_param("input", m))?;
    if expanded.body.len() > MAX_CONVERSATION {
        return Err(GatewayError::PreviousResponse {
            id: previous,
            reason: format!("the conversation is larger than {MAX_CONVERSATION} bytes"),
        });
    }
    let bytes = Bytes::from(expanded.body);
    let peek = body::peek(&bytes)?;
    let own = std::mem::replace(body, RequestBody { bytes, peek });
    if let Some(provider) = history.native_provider {
        ctx.stored.native = Some((provider, own));
    }
    ctx.stored.previous = Some(previous);
    Ok(Flow::Continue)
}

/// The `response` of a terminal Responses event, if `frame` is one.
fn terminal_response(frame: &[u8]) -> Option<Box<RawValue>> {
    #[derive(Deserialize)]
    struct Terminal {
        #[serde(rename = "type")]
        kind: String,
        response: Box<RawValue>,
    }
    const TERMINAL: [&[u8]; 2] = [b"response.completed", b"response.incomplete"];
    let event = Event::parse(frame);
    // Responses events name their type in `event:`, so only the terminal ones are parsed;
    // a server that sends `data:` alone has each checked for the type first.
    match event.event {
        Some(name) if !TERMINAL.contains(&name) => return None,
        Some(_) => {}
        None => {
            let data = event.data();
            let head = &data[..data.len().min(96)];
            let named = TERMINAL
                .iter()
                .any(|t| memchr::memmem::find(head, t).is_some());
            if !named {
                return None;
            }
        }
    }
    let terminal: Terminal = serde_json::from_slice(event.data()).ok()?;
    TERMINAL
        .contains(&terminal.kind.as_bytes())
        .then_some(terminal.response)
}

/// Stores the Response object `response` with the request's own input, once.
fn keep(ctx: &mut RequestCtx, response: &[u8]) {
    ctx.stored.capturing = false;
    ctx.stored.scanner = None;
    #[derive(Deserialize)]
    struct Head<'a> {
        id: &'a str,
        #[serde(default)]
        status: Option<&'a str>,
        #[serde(default)]
        store: Option<bool>,
    }
    let Some(store) = ctx.snap.responses_store.clone() else {
        return;
    };
    let Ok(head) = serde_json::from_slice::<Head>(response) else {
        return;
    };
    // A failed answer is not a turn to continue from; a queued or in-progress one (OpenAI's
    // background mode) would be stale. An id sira would not accept in a URL is not filed.
    if !matches!(head.status, Some("completed" | "incomplete")) || !valid_response_id(head.id) {
        return;
    }
    let Ok(text) = std::str::from_utf8(response) else {
        return;
    };
    let Ok(response_raw) = RawValue::from_string(text.to_owned()) else {
        return;
    };
    let input = ctx
        .stored
        .original
        .as_deref()
        .map(record::own_input)
        .unwrap_or_default();
    // The provider answered in Responses and stored the answer too: it can be handed the
    // conversation by id.
    let native = ctx.upstream_format() == Format::OpenAiResponses && head.store != Some(false);
    let owner = ctx.owner().into_owned();
    let record = Record {
        owner: owner.clone(),
        provider: ctx.provider_label().to_owned(),
        native,
        previous: ctx.stored.previous.clone(),
        partial: ctx.stored.partial,
        input,
        response: response_raw,
    };
    store.put(&owner, head.id, record.encode());
}

/// `?limit=&order=&after=` of an input-items listing (OpenAI's defaults: 20, newest first).
struct Page {
    limit: usize,
    ascending: bool,
    after: Option<String>,
}

impl Page {
    fn parse(query: Option<&str>) -> Result<Page, GatewayError> {
        let mut page = Page {
            limit: 20,
            ascending: false,
            after: None,
        };
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "limit" => {
                    page.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| {
                            GatewayError::invalid_param("limit", "limit must be 1 to 100")
                        })?;
                }
                "order" => {
                    page.ascending = match value {
                        "asc" => true,
                        "desc" => false,
                        _ => {
                            return Err(GatewayError::invalid_param(
                                "order",
                                "order must be asc or desc",
                            ))
                        }
                    }
                }
                "after" => page.after = Some(value.to_owned()),
                // `include[]` and anything newer: the items are returned whole anyway.
                _ => {}
            }
        }
        Ok(page)
    }
}

async fn answer(
    store: &ResponseStore,
    owner: &str,
    id: &str,
    action: StoredAction,
    page: &Page,
) -> Result<Bytes, GatewayError> {
    let record = store
        .get(owner, id)
        .await?
        .and_then(|bytes| Record::decode(&bytes))
        .filter(|record| record.owner == owner)
        .ok_or_else(|| GatewayError::ResponseNotFound(id.to_owned()))?;
    match action {
        StoredAction::Get => Ok(Bytes::from(record.response.get().to_owned())),
        StoredAction::Delete => {
            store.delete(owner, id).await?;
            #[derive(Serialize)]
            struct Deleted<'a> {
                id: &'a str,
                object: &'static str,
                deleted: bool,
            }
            encode(&Deleted {
                id,
                object: "response",
                deleted: true,
            })
        }
        StoredAction::InputItems => {
            // The input the model saw: the conversation before this response (what is
            // left of it) and the request's own items.
            let mut items = match &record.previous {
                Some(previous) => match history(store, owner, previous, MAX_CONVERSATION).await {
                    Ok(history) => history.items,
                    Err(ChainError::Store(e)) => return Err(e.into()),
                    Err(_) => Vec::new(),
                },
                None => Vec::new(),
            };
            items.extend(record.input);
            list(record::with_ids(items, id), page)
        }
    }
}

fn list(mut items: Vec<(String, Box<RawValue>)>, page: &Page) -> Result<Bytes, GatewayError> {
    if !page.ascending {
        items.reverse();
    }
    let start = match &page.after {
        Some(after) => items
            .iter()
            .position(|(id, _)| id == after)
            .map_or(items.len(), |i| i + 1),
        None => 0,
    };
    let rest = &items[start.min(items.len())..];
    let shown = &rest[..rest.len().min(page.limit)];
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<&'a RawValue>,
        first_id: Option<&'a str>,
        last_id: Option<&'a str>,
        has_more: bool,
    }
    encode(&List {
        object: "list",
        data: shown.iter().map(|(_, item)| &**item).collect(),
        first_id: shown.first().map(|(id, _)| id.as_str()),
        last_id: shown.last().map(|(id, _)| id.as_str()),
        has_more: rest.len() > shown.len(),
    })
}

fn encode(value: &impl Serialize) -> Result<Bytes, GatewayError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| GatewayError::Internal(format!("cannot encode a stored response: {e}").into()))
}
