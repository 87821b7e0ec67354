//! The modules of the request path, one concern each, listed in order in
//! [`super::phases::Chain::standard`]. Each implements the phases it acts on and delegates
//! the decisions to the crate module that owns them (`crate::auth`, `crate::translate`,
//! `crate::accounting`, …), so the logic stays testable without a session.

mod accounting;
mod auth;
pub(crate) mod budget_cut;
mod cache;
mod filters;
mod guard;
mod headers;
pub(crate) mod limits;
mod local;
mod observe;
mod routing;
mod selection;
mod stored;
mod translation;

pub use accounting::Accounting;
pub use auth::Authenticate;
pub use cache::ResponseCacheModule;
pub use filters::OperatorFilters;
pub(crate) use headers::header_error;
pub use headers::{Credentials, ProviderRequest, SiraHeaders, X_REQUEST_ID};
pub use limits::Admission;
pub use local::LocalAnswers;
pub use observe::Observe;
pub use routing::Routing;
pub use selection::Selection;
pub use stored::StoredResponses;
pub use translation::{response_options, stream_error_event, Translation};
