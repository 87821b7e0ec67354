//! One stored response, and the conversation a chain of them makes.

use bytes::Bytes;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ResponseStore, StoreError};

/// A chain longer than this is refused rather than walked (ids are the providers' own on
/// passthrough, so a hostile upstream could repeat one and make a cycle); each link is one
/// store read.
const MAX_CHAIN: usize = 1_000;

/// What sira keeps of one response. Items are kept as the client and the provider wrote
/// them (raw JSON), never re-encoded.
#[derive(Serialize, Deserialize)]
pub struct Record {
    /// Who may read it: the key's name (`anonymous` on a gateway without keys).
    pub owner: String,
    /// The provider that answered.
    pub provider: String,
    /// The provider speaks Responses and answered without translation: it stored the
    /// response itself too, so a follow-up to the same provider may just name it.
    pub native: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// The conversation before this response is not all in the store (it continued one
    /// only its provider keeps): only that provider can be given it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// The request's own input items (a string input as one user message).
    pub input: Vec<Box<RawValue>>,
    /// The Response object the client received.
    pub response: Box<RawValue>,
}

impl Record {
    pub fn encode(&self) -> Bytes {
        // Serialising owned strings and raw JSON cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// `None` for bytes that are not a record (another program's key in a shared Redis).
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }

    /// The response's output items.
    pub fn output(&self) -> Vec<Box<RawValue>> {
        #[derive(Deserialize)]
        struct Output {
            #[serde(default)]
            output: Vec<Box<RawValue>>,
        }
        serde_json::from_str::<Output>(self.response.get())
            .map_or_else(|_| Vec::new(), |o| o.output)
    }
}

/// Why a stored conversation cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// No such response for this caller (another key's is "not found" too).
    #[error("not found")]
    NotFound,
    #[error("the stored conversation is larger than {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The conversation up to and including a stored response.
pub struct History {
    /// Every input and output item, oldest first.
    pub items: Vec<Box<RawValue>>,
    /// The newest record's provider, when it answered natively in Responses.
    pub native_provider: Option<String>,
    /// Part of the conversation is missing (an earlier response expired or was deleted, or
    /// the conversation began at a provider that keeps it): `items` must not be replayed
    /// as if they were all of it.
    pub partial: bool,
}

/// Walks the chain that ends with `id`, for `owner`, holding at most `max_bytes` of
/// records.
pub async fn history(
    store: &ResponseStore,
    owner: &str,
    id: &str,
    max_bytes: usize,
) -> Result<History, ChainError> {
    let mut chain: Vec<Record> = Vec::new();
    let mut next = Some(id.to_owned());
    let mut held = 0usize;
    let mut partial = false;
    while let Some(current) = next.take() {
        let found = store.get(owner, &current).await?.and_then(|b| {
            held += b.len();
            Record::decode(&b)
        });
        let record = match found {
            Some(record) if record.owner == owner => record,
            _ if chain.is_empty() => return Err(ChainError::NotFound),
            _ => {
                partial = true;
                break;
            }
        };
        if held > max_bytes || chain.len() >= MAX_CHAIN {
            return Err(ChainError::TooLarge(max_bytes));
        }
        partial |= record.partial;
        next = record.previous.clone();
        chain.push(record);
    }
    let native_provider = chain
        .first()
        .filter(|r| r.native)
        .map(|r| r.provider.clone());
    let mut items = Vec::new();
    for record in chain.iter_mut().rev() {
        let output = record.output();
        items.append(&mut record.input);
        items.extend(output);
    }
    Ok(History {
        items,
        native_provider,
        partial,
    })
}

/// A Responses request's `input` as items: a string is one user message.
pub fn input_items(input: Option<&RawValue>) -> Result<Vec<Box<RawValue>>, &'static str> {
    let Some(input) = input else {
        return Ok(Vec::new());
    };
    match input.get().as_bytes().first() {
        Some(b'"') => {
            let item = format!(
                r#"{{"type":"message","role":"user","content":{}}}"#,
                input.get()
            );
            RawValue::from_string(item)
                .map(|item| vec![item])
                .map_err(|_| "`input` must be a string or an array of items")
        }
        Some(b'[') => serde_json::from_str(input.get())
            .map_err(|_| "`input` must be a string or an array of items"),
        _ => Err("`input` must be a string or an array of items"),
    }
}

/// The request's own input items, read from its body.
pub fn own_input(body: &[u8]) -> Vec<Box<RawValue>> {
    #[derive(Deserialize)]
    struct Input<'a> {
        #[serde(borrow, default)]
        input: Option<&'a RawValue>,
    }
    serde_json::from_slice::<Input>(body)
        .ok()
        .and_then(|i| input_items(i.input).ok())
        .unwrap_or_default()
}

/// A request that continued a stored conversation, rewritten to carry all of it.
pub struct Expanded {
    pub body: Vec<u8>,
}

/// `body` with `previous_response_id` removed and `history` put before its own input.
/// Everything else (instructions included: OpenAI does not carry them over either) is the
/// client's, in the client's order.
pub fn expand(body: &[u8], history: Vec<Box<RawValue>>) -> Result<Expanded, &'static str> {
    let mut map: IndexMap<String, Box<RawValue>> =
        serde_json::from_slice(body).map_err(|_| "the request body is not a JSON object")?;
    map.shift_remove("previous_response_id");
    let own = input_items(map.get("input").map(|v| &**v))?;
    let mut items = history;
    items.extend(own);
    let input = serde_json::value::to_raw_value(&items).map_err(|_| "invalid input items")?;
    map.insert("input".to_owned(), input);
    serde_json::to_vec(&map)
        .map(|body| Expanded { body })
        .map_err(|_| "the request body cannot be rewritten")
}

/// Gives every item an `id` (`{prefix}_{index}` for those the client sent without one), for
/// `input_items` listings whose cursor is an item id.
pub fn with_ids(items: Vec<Box<RawValue>>, prefix: &str) -> Vec<(String, Box<RawValue>)> {
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let Ok(mut map) = serde_json::from_str::<IndexMap<String, Box<RawValue>>>(item.get())
            else {
                return (format!("{prefix}_{index}"), item);
            };
            if let Some(id) = map
                .get("id")
                .and_then(|id| serde_json::from_str::<String>(id.get()).ok())
            {
                return (id, item);
            }
            let id = format!("{prefix}_{index}");
            match serde_json::value::to_raw_value(&id) {
                Ok(raw) => {
                    map.insert("id".to_owned(), raw);
                    let item = serde_json::value::to_raw_value(&map).unwrap_or(item);
                    (id, item)
                }
                Err(_) => (id, item),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn record(owner: &str, previous: Option<&str>, input: &str, output: &str) -> Bytes {
        Record {
            owner: owner.into(),
            provider: "p".into(),
            native: false,
            partial: false,
            previous: previous.map(str::to_owned),
            input: vec![raw(input)],
            response: raw(&format!(r#"{{"id":"x","output":[{output}]}}"#)),
        }
        .encode()
    }

    #[tokio::test]
    async fn a_chain_replays_in_order_for_its_owner_only() {
        let store = std::sync::Arc::new(ResponseStore::memory(1 << 20, Duration::from_secs(60)));
        store.put(
            "a",
            "r1",
            record("a", None, r#""hi""#, r#"{"type":"message","n":1}"#),
        );
        store.put(
            "a",
            "r2",
            record("a", Some("r1"), r#"{"n":2}"#, r#"{"n":3}"#),
        );
        let h = history(&store, "a", "r2", 1 << 20).await.unwrap();
        let items: Vec<&str> = h.items.iter().map(|i| i.get()).collect();
        assert_eq!(
            items,
            [
                r#""hi""#,
                r#"{"type":"message","n":1}"#,
                r#"{"n":2}"#,
                r#"{"n":3}"#
            ]
        );
        assert!(matches!(
            history(&store, "b", "r2", 1 << 20).await,
            Err(ChainError::NotFound)
        ));
        assert!(matches!(
            history(&store, "a", "r2", 10).await,
            Err(ChainError::TooLarge(10))
        ));
        store.delete("a", "r1").await.unwrap();
        let h = history(&store, "a", "r2", 1 << 20).await.unwrap();
        assert!(h.partial, "what is left is not the whole conversation");
    }

    #[tokio::test]
    async fn a_cycle_is_bounded() {
        let store = std::sync::Arc::new(ResponseStore::memory(1 << 20, Duration::from_secs(60)));
        store.put("a", "r1", record("a", Some("r1"), "{}", "{}"));
        assert!(matches!(
            history(&store, "a", "r1", usize::MAX).await,
            Err(ChainError::TooLarge(_))
        ));
    }

    #[test]
    fn expansion_puts_history_first_and_drops_the_link() {
        let body = br#"{"model":"m","previous_response_id":"r1","input":"next","stream":true}"#;
        let out = expand(body, vec![raw(r#"{"n":1}"#)]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model":"m","input":[{"n":1},{"type":"message","role":"user","content":"next"}],"stream":true})
        );
        assert!(expand(br#"{"input":5}"#, vec![]).is_err());
    }

    #[test]
    fn listing_ids_keep_the_clients_and_name_the_rest() {
        let items = with_ids(
            vec![raw(r#"{"id":"msg_1"}"#), raw(r#"{"role":"user"}"#)],
            "resp_9",
        );
        assert_eq!(items[0].0, "msg_1");
        assert_eq!(items[1].0, "resp_9_1");
        assert_eq!(items[1].1.get(), r#"{"role":"user","id":"resp_9_1"}"#);
    }
}
