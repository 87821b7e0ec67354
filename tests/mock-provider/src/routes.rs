//! Request dispatch: route, knobs, then the provider handler, then pacing of the reply.

use crate::body::{End, EventBody, MockBody, Tracker};
use crate::errors;
use crate::fixtures::Fixture;
use crate::knobs::{Hang, Knobs};
use crate::provider::Provider;
use crate::record::Shared;
use crate::reply::{Ctx, Reject, Reply};
use crate::wire::{Alphabet, Id};
use crate::{anthropic, azure, embeddings, gemini, openai, responses};
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The endpoints the mock implements.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Health,
    Chat,
    /// `deployment`, and whether `api-version` was in the query (Azure 404s without it).
    AzureChat(&'a str, bool),
    AzureEmbeddings(&'a str, bool),
    Responses,
    Embeddings,
    Models,
    Messages,
    CountTokens,
    /// OpenAI `POST /v1/responses/input_tokens`.
    ResponsesInputTokens,
    /// Gemini `models/{model}:countTokens`.
    GeminiCount(&'a str),
    Gemini {
        model: &'a str,
        stream: bool,
        sse: bool,
    },
    NotFound,
}

pub(crate) fn route<'a>(method: &Method, path: &'a str, query: Option<&str>) -> Route<'a> {
    let post = method == Method::POST;
    let get = method == Method::GET;
    match path {
        "/health" if get => return Route::Health,
        "/v1/chat/completions" | "/openai/v1/chat/completions" if post => return Route::Chat,
        "/v1/responses" | "/openai/v1/responses" if post => return Route::Responses,
        "/v1/responses/input_tokens" if post => return Route::ResponsesInputTokens,
        "/v1/embeddings" | "/openai/v1/embeddings" if post => return Route::Embeddings,
        "/v1/models" if get => return Route::Models,
        "/v1/messages" if post => return Route::Messages,
        "/v1/messages/count_tokens" if post => return Route::CountTokens,
        _ => {}
    }
    if !post {
        return Route::NotFound;
    }
    if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        let versioned =
            query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("api-version=")));
        if let Some(dep) = rest
            .strip_suffix("/chat/completions")
            .filter(|d| !d.is_empty() && !d.contains('/'))
        {
            return Route::AzureChat(dep, versioned);
        }
        if let Some(dep) = rest
            .strip_suffix("/embeddings")
            .filter(|d| !d.is_empty() && !d.contains('/'))
        {
            return Route::AzureEmbeddings(dep, versioned);
        }
        return Route::NotFound;
    }
    // Gemini Developer API (`/v1beta/models/{m}:…`, `/v1/models/{m}:…`) and Vertex AI
    // (`/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:…`, also `/v1beta1`).
    let gemini = ["/v1beta/", "/v1/", "/v1beta1/"]
        .iter()
        .any(|p| path.starts_with(p));
    let rest = path
        .rsplit_once("/models/")
        .map(|(_, rest)| rest)
        .filter(|_| gemini);
    if let Some((model, action)) = rest.and_then(|r| r.rsplit_once(':')) {
        let sse = query.is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
        match action {
            _ if model.is_empty() || model.contains('/') => {}
            "generateContent" => {
                return Route::Gemini {
                    model,
                    stream: false,
                    sse,
                }
            }
            "streamGenerateContent" => {
                return Route::Gemini {
                    model,
                    stream: true,
                    sse,
                }
            }
            "countTokens" => return Route::GeminiCount(model),
            _ => {}
        }
    }
    Route::NotFound
}

impl Route<'_> {
    fn provider(&self) -> Option<Provider> {
        Some(match self {
            Route::Health | Route::NotFound => return None,
            Route::Chat | Route::Embeddings | Route::Models => Provider::OpenAi,
            Route::AzureChat(..) | Route::AzureEmbeddings(..) => Provider::Azure,
            Route::Responses | Route::ResponsesInputTokens => Provider::Responses,
            Route::Messages | Route::CountTokens => Provider::Anthropic,
            Route::Gemini { .. } | Route::GeminiCount(_) => Provider::Gemini,
        })
    }
}

/// The hyper service: never fails, every problem becomes an HTTP answer.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        // The client went away mid-body; nobody will read this answer.
        Err(_) => {
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                "sira-mock: could not read the request body",
            ))
        }
    };
    let request_index = shared.record_request(&parts, &body);
    let seq = shared.next_seq();
    Ok(respond(&shared, &parts, &body, request_index, seq).await)
}

async fn respond(
    shared: &Arc<Shared>,
    parts: &Parts,
    body: &Bytes,
    request_index: Option<usize>,
    seq: u64,
) -> Response<MockBody> {
    let path = parts.uri.path();
    let route = route(&parts.method, path, parts.uri.query());
    let Some(provider) = route.provider() else {
        return match route {
            Route::Health => plain(StatusCode::OK, "ok"),
            _ => not_found(&parts.method, path, seq),
        };
    };
    let knobs = match Knobs::resolve(&parts.headers, &shared.config, provider) {
        Ok(k) => k,
        Err(e) => return error(provider, StatusCode::BAD_REQUEST, &e.0, seq),
    };
    match knobs.hang {
        Some(Hang::For(d)) => tokio::time::sleep(d).await,
        // Held until the client gives up or the server shuts down.
        Some(Hang::Forever) => std::future::pending::<()>().await,
        None => {}
    }
    let ctx = Ctx {
        knobs: &knobs,
        body,
        seq,
        created: unix_now(),
        provider,
    };
    let mut content_type = None;
    let reply = if knobs.wants_http_error() {
        let (status, body) = errors::injected(provider, knobs.status, knobs.error, seq);
        Ok(Reply::Json { status, body })
    } else if let Some(fixture) = knobs.fixture {
        content_type = Some(fixture.content_type());
        Ok(replay(&ctx, fixture))
    } else {
        dispatch(&ctx, &route)
    };
    let reply = match reply {
        Ok(r) => r,
        Err(Reject(msg)) => return error(provider, StatusCode::BAD_REQUEST, &msg, seq),
    };
    match reply {
        Reply::Json { status, body } => {
            let ct = content_type.unwrap_or(provider.json_type());
            let mut resp = response(status, ct, MockBody::full(body), provider, seq);
            if let Some(secs) = knobs.retry_after.filter(|_| status.as_u16() >= 400) {
                resp.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
        Reply::Stream(mut events) => {
            let end = match knobs.fail_after {
                Some(n) => {
                    events.truncate(n);
                    End::Cut
                }
                None => End::Clean,
            };
            let log = request_index.map(|i| shared.open_stream(i, path));
            let track = Tracker {
                shared: Arc::clone(shared),
                uri: parts.uri.clone(),
                log,
            };
            let body = EventBody::new(events, end, knobs.delay, knobs.split, track);
            response(
                StatusCode::OK,
                content_type.unwrap_or(provider.sse_type()),
                MockBody::Events(Box::new(body)),
                provider,
                seq,
            )
        }
    }
}

fn dispatch(ctx: &Ctx<'_>, route: &Route<'_>) -> Result<Reply, Reject> {
    match *route {
        Route::Chat => openai::chat(ctx),
        Route::AzureChat(dep, true) => azure::chat(ctx, dep),
        Route::AzureEmbeddings(dep, true) => embeddings::embeddings(ctx, Some(dep)),
        Route::AzureChat(_, false) | Route::AzureEmbeddings(_, false) => Ok(azure_not_found()),
        Route::Responses => responses::create(ctx),
        Route::Embeddings => embeddings::embeddings(ctx, None),
        Route::Models => Ok(Reply::Json { status: StatusCode::OK, body: Bytes::from_static(embeddings::MODELS.as_bytes()) }),
        Route::Messages => anthropic::messages(ctx),
        Route::CountTokens => anthropic::count_tokens(ctx),
        Route::ResponsesInputTokens => responses::input_tokens(ctx),
        Route::GeminiCount(_) => gemini::count_tokens(ctx),
        Route::Gemini { stream: true, sse: false, .. } => Err(Reject(
            "sira-mock: streamGenerateContent is only implemented with ?alt=sse (JSON-array streaming is not)".to_owned(),
        )),
        Route::Gemini { model, stream, .. } => gemini::generate(ctx, model, stream),
        Route::Health | Route::NotFound => Err(Reject("sira-mock: no handler".to_owned())),
    }
}

/// Serves a recorded body byte for byte; an SSE recording is paced event by event like a
/// synthesized stream. Error recordings keep the status in their name.
fn replay(ctx: &Ctx<'_>, fixture: Fixture) -> Reply {
    if fixture.is_sse() {
        Reply::Stream(ctx.with_error_tail(fixture.events()))
    } else {
        Reply::Json {
            status: fixture.status().unwrap_or(StatusCode::OK),
            body: Bytes::from_static(fixture.bytes()),
        }
    }
}

/// What Azure answers when `api-version` is missing: its routing-error envelope.
fn azure_not_found() -> Reply {
    Reply::Json {
        status: StatusCode::NOT_FOUND,
        body: Bytes::from_static(br#"{"error":{"code":"404","message":"Resource not found"}}"#),
    }
}

fn not_found(method: &Method, path: &str, seq: u64) -> Response<MockBody> {
    let provider = Provider::guess(path);
    let message = match provider {
        Provider::Anthropic => "Not Found".to_owned(),
        Provider::Gemini => format!("The requested URL {path} was not found on this server."),
        _ => format!("Invalid URL ({method} {path})"),
    };
    error(provider, StatusCode::NOT_FOUND, &message, seq)
}

fn error(provider: Provider, status: StatusCode, message: &str, seq: u64) -> Response<MockBody> {
    let body = errors::synthesize(provider, status, message, seq);
    response(
        status,
        provider.json_type(),
        MockBody::full(body),
        provider,
        seq,
    )
}

fn plain(status: StatusCode, text: &'static str) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: MockBody,
    provider: Provider,
    seq: u64,
) -> Response<MockBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(name) = provider.request_id_header() {
        let prefix = if provider == Provider::Anthropic {
            "req_011C"
        } else {
            "req_"
        };
        let alphabet = if provider == Provider::Anthropic {
            Alphabet::Base62
        } else {
            Alphabet::Hex
        };
        let id = Id {
            prefix,
            seed: seq.wrapping_add(0xE1),
            alphabet,
            len: if provider == Provider::Anthropic {
                20
            } else {
                32
            },
        };
        if let Ok(v) = HeaderValue::try_from(id.to_string()) {
            headers.insert(name, v);
        }
    }
    resp
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let p = Method::POST;
        assert_eq!(route(&p, "/v1/chat/completions", None), Route::Chat);
        assert_eq!(
            route(&Method::GET, "/v1/chat/completions", None),
            Route::NotFound
        );
        assert_eq!(
            route(
                &p,
                "/openai/deployments/gpt-4o/chat/completions",
                Some("api-version=2024-10-21")
            ),
            Route::AzureChat("gpt-4o", true)
        );
        assert_eq!(
            route(&p, "/openai/deployments/gpt-4o/chat/completions", None),
            Route::AzureChat("gpt-4o", false)
        );
        assert_eq!(
            route(
                &p,
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
                Some("alt=sse")
            ),
            Route::Gemini {
                model: "gemini-2.0-flash",
                stream: true,
                sse: true
            }
        );
        assert_eq!(
            route(&p, "/v1/models/gemini-2.0-flash:generateContent", None),
            Route::Gemini {
                model: "gemini-2.0-flash",
                stream: false,
                sse: false
            }
        );
        assert_eq!(
            route(&p, "/v1beta/models/:generateContent", None),
            Route::NotFound
        );
        assert_eq!(
            route(&p, "/v1/messages/count_tokens", None),
            Route::CountTokens
        );
        assert_eq!(
            route(&p, "/v1beta/models/gemini-2.5-flash:countTokens", None),
            Route::GeminiCount("gemini-2.5-flash")
        );
        assert_eq!(
            route(&p, "/v1/responses/input_tokens", None),
            Route::ResponsesInputTokens
        );
        assert_eq!(route(&Method::GET, "/health", None), Route::Health);
        assert_eq!(route(&p, "/v2/whatever", None), Route::NotFound);
    }
}
