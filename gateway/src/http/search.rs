//! Searching the text of the caller's conversations.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use storage::chat::{ConvId, Millis, Seq, UserId};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Query};
use crate::error::ErrorBody;
use crate::{AppState, AuthUser, Error};

/// Results per page when `limit` is left out.
const DEFAULT_HITS: usize = 20;

/// A search.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// Words (1 to 8, at most 256 bytes); a message matches when it holds
    /// every one, whole-word and case-insensitively.
    pub q: String,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size (default 20, capped by the server's page limit).
    pub limit: Option<usize>,
}

/// A piece of a result's text.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FragmentView {
    /// The text.
    pub text: String,
    /// Whether it is a word of the query (to highlight).
    #[serde(rename = "match")]
    pub matched: bool,
}

/// One matching message.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HitView {
    /// Its conversation.
    pub conv_id: ConvId,
    /// Its seq.
    pub seq: Seq,
    /// Its sender.
    pub sender: UserId,
    /// When it was sent.
    pub sent_at: Millis,
    /// Its current text.
    pub body: String,
    /// The text in pieces, the matching words marked: concatenated, they
    /// are `body`.
    pub fragments: Vec<FragmentView>,
}

/// A page of results.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SearchResults {
    /// Newest first.
    pub hits: Vec<HitView>,
    /// For the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// Messages of the caller's conversations holding every word of `q`,
/// newest first. Only conversations the caller is a member of, and only
/// messages sent since they (last) joined; deleted messages are never
/// found, edited ones by their current text. Counts against the caller's
/// write budget (a search reads an index range per conversation).
#[utoipa::path(get, path = "/api/search", tag = "messages",
    security(("bearer" = [])),
    params(SearchParams),
    responses(
        (status = 200, description = "The page", body = SearchResults),
        (status = 400, description = "No word, too many words, a bad cursor", body = ErrorBody),
        (status = 429, description = "Too many searches; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn search(
    State(state): State<AppState>,
    me: AuthUser,
    Query(params): Query<SearchParams>,
) -> Result<Json<SearchResults>, Error> {
    state.throttles.write(me.user_id)?;
    let limit = params.limit.unwrap_or(DEFAULT_HITS);
    let page = state
        .blocking(move |store| store.search(me.user_id, &params.q, params.cursor.as_deref(), limit))
        .await?;
    Ok(Json(SearchResults {
        hits: page
            .hits
            .into_iter()
            .map(|h| HitView {
                conv_id: h.message.conv_id,
                seq: h.message.seq,
                sender: h.message.sender,
                sent_at: h.message.sent_at,
                body: h.message.body,
                fragments: h
                    .fragments
                    .into_iter()
                    .map(|f| FragmentView {
                        text: f.text,
                        matched: f.matched,
                    })
                    .collect(),
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}
