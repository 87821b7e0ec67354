//! OpenAI embeddings (`POST /v1/embeddings`) and the model list (`GET /v1/models`).
//! No recordings exist for these; the shapes follow the OpenAI API reference.

use crate::reply::{Ctx, Reject, Reply};
use crate::wire::{base64, pretty, splitmix64, Json, Out};
use serde::Deserialize;
use std::borrow::Cow;

/// Small vectors keep bodies light; `dimensions` in the request overrides (up to 4096).
pub const DEFAULT_DIMENSIONS: usize = 8;
const MAX_DIMENSIONS: usize = 4096;

#[derive(Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input: Option<Input<'a>>,
    #[serde(borrow)]
    encoding_format: Option<Cow<'a, str>>,
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Item<'a>>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Item<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Token(u64),
    Tokens(Vec<u64>),
}

/// One input to embed: its identity (for the vector) and its token count.
struct Piece {
    seed: u64,
    tokens: u64,
}

fn text_piece(s: &str) -> Piece {
    // FNV-1a: the same text always gets the same vector.
    let seed = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Piece {
        seed,
        tokens: (s.len() as u64).div_ceil(4).max(1),
    }
}

fn token_piece(tokens: &[u64]) -> Piece {
    let seed = tokens
        .iter()
        .fold(0x8422_2325u64, |h, t| splitmix64(&mut (h ^ t)));
    Piece {
        seed,
        tokens: tokens.len() as u64,
    }
}

/// One embedding per input string (or token array). Usage: `prompt_tokens` = `total_tokens` =
/// sum over inputs of max(1, ceil(bytes / 4)) (token arrays count their length), or
/// `x-mock-input-tokens`.
pub(crate) fn embeddings(ctx: &Ctx<'_>, deployment: Option<&str>) -> Result<Reply, Reject> {
    let req: EmbeddingsRequest<'_> = serde_json::from_slice(ctx.body).map_err(Reject::json)?;
    let model = match (deployment, req.model.as_deref()) {
        (Some(d), _) => d,
        (None, Some(m)) => m,
        (None, None) => return Err(Reject("you must provide a model parameter".to_owned())),
    };
    let pieces: Vec<Piece> = match req.input {
        None => return Err(Reject("'input' is a required property".to_owned())),
        Some(Input::One(s)) => vec![text_piece(&s)],
        Some(Input::Many(items))
            if items.iter().all(|i| matches!(i, Item::Token(_))) && !items.is_empty() =>
        {
            let tokens: Vec<u64> = items
                .iter()
                .filter_map(|i| {
                    if let Item::Token(t) = i {
                        Some(*t)
                    } else {
                        None
                    }
                })
                .collect();
            vec![token_piece(&tokens)]
        }
        Some(Input::Many(items)) => items
            .iter()
            .map(|i| match i {
                Item::Text(s) => text_piece(s),
                Item::Token(t) => token_piece(std::slice::from_ref(t)),
                Item::Tokens(t) => token_piece(t),
            })
            .collect(),
    };
    if pieces.is_empty() {
        return Err(Reject(
            "'input' : input cannot be an empty array".to_owned(),
        ));
    }
    let dims = req
        .dimensions
        .unwrap_or(DEFAULT_DIMENSIONS)
        .clamp(1, MAX_DIMENSIONS);
    let as_base64 = req.encoding_format.as_deref() == Some("base64");
    let prompt = ctx
        .knobs
        .input_tokens
        .unwrap_or_else(|| pieces.iter().map(|p| p.tokens).sum());

    let mut o = Out::with_capacity(128 + pieces.len() * dims * 24);
    o.push(br#"{"object":"list","data":["#);
    let mut vector = vec![0f32; dims];
    for (index, piece) in pieces.iter().enumerate() {
        fill(&mut vector, piece.seed);
        if index > 0 {
            o.push(b",");
        }
        write!(o, r#"{{"object":"embedding","index":{index},"embedding":"#);
        if as_base64 {
            let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
            o.push(b"\"");
            base64(&bytes, &mut o);
            o.push(b"\"");
        } else {
            o.push(b"[");
            for (j, v) in vector.iter().enumerate() {
                if j > 0 {
                    o.push(b",");
                }
                write!(o, "{v:?}");
            }
            o.push(b"]");
        }
        o.push(b"}");
    }
    write!(
        o,
        r#"],"model":{},"usage":{{"prompt_tokens":{prompt},"total_tokens":{prompt}}}}}"#,
        Json(model)
    );
    Ok(Reply::Json {
        status: http::StatusCode::OK,
        body: pretty(&o.0).into(),
    })
}

/// A unit-length vector derived from `seed` (embeddings are normalized; cosine tests work).
fn fill(vector: &mut [f32], seed: u64) {
    let mut state = seed;
    for v in vector.iter_mut() {
        let r = splitmix64(&mut state) >> 11;
        *v = (r as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32;
    }
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
}

/// `GET /v1/models`: a fixed list in the API reference shape.
pub(crate) const MODELS: &str = r#"{
  "object": "list",
  "data": [
    {
      "id": "gpt-4o-mini",
      "object": "model",
      "created": 1721172741,
      "owned_by": "system"
    },
    {
      "id": "gpt-4o",
      "object": "model",
      "created": 1715367049,
      "owned_by": "system"
    },
    {
      "id": "gpt-5-nano",
      "object": "model",
      "created": 1754426384,
      "owned_by": "system"
    },
    {
      "id": "text-embedding-3-small",
      "object": "model",
      "created": 1705948997,
      "owned_by": "system"
    }
  ]
}
"#;
