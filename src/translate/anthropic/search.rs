//! Anthropic's web search, as its answers carry it: the cited pages of a text block and the
//! results of a `web_search` server tool call.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

type Str<'a> = Cow<'a, str>;

#[derive(Deserialize)]
pub(crate) struct CitationIn<'a> {
    #[serde(borrow)]
    pub url: Option<Str<'a>>,
    #[serde(borrow)]
    pub title: Option<Str<'a>>,
}

impl<'a> CitationIn<'a> {
    pub fn cited(self) -> Option<crate::translate::ir::Cited<'a>> {
        crate::translate::ir::Cited::web(self.url?, self.title)
    }
}

/// The results of Anthropic's web search server tool: a list of pages, or an error object.
#[derive(Deserialize)]
pub(crate) struct SearchResultBlock<'a> {
    #[serde(borrow)]
    pub tool_use_id: Str<'a>,
    #[serde(borrow)]
    pub content: Option<&'a RawValue>,
}

impl<'a> SearchResultBlock<'a> {
    /// The pages found (none when the search failed).
    pub fn sources(&self) -> Vec<crate::translate::ir::Cited<'a>> {
        #[derive(Deserialize)]
        struct Page<'a> {
            #[serde(borrow)]
            url: Option<Str<'a>>,
            #[serde(borrow)]
            title: Option<Str<'a>>,
        }
        self.content
            .and_then(|c| serde_json::from_str::<Vec<Page<'a>>>(c.get()).ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| crate::translate::ir::Cited::web(p.url?, p.title))
            .collect()
    }
}

/// The query of a `server_tool_use` web search.
pub(crate) fn search_query(input: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Input {
        query: Option<String>,
    }
    serde_json::from_str::<Input>(input).ok()?.query
}
