//! Finding users: prefix search and profiles. Presence (online, last
//! seen) is shown only for contacts, users who share a conversation with
//! the caller; strangers get the name without it.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use storage::chat::{Millis, UserId};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Path, Query};
use super::DEFAULT_PAGE;
use crate::error::ErrorBody;
use crate::{AppState, AuthUser, Error};

/// Search parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// Name prefix, case-insensitive, not empty.
    pub q: String,
    /// Paging: the last name of the previous page.
    pub after: Option<String>,
    /// Page size (default 50, capped by the server's page limit).
    pub limit: Option<usize>,
}

/// A user found by a search.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserPresenceView {
    /// The user's id.
    pub id: UserId,
    /// The user's name.
    pub name: String,
    /// Whether they have a live session anywhere in the cluster. Only for
    /// contacts (users sharing a conversation with the caller); absent for
    /// others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
}

/// A page of search results.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserList {
    /// In name order.
    pub users: Vec<UserPresenceView>,
}

/// Registered users whose name starts with `q`, in name order. Only
/// registered users exist to be found.
#[utoipa::path(get, path = "/api/users", tag = "users",
    security(("bearer" = [])),
    params(SearchParams),
    responses(
        (status = 200, description = "Matching users", body = UserList),
        (status = 400, description = "Missing or empty `q`", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ))]
pub(crate) async fn search(
    State(state): State<AppState>,
    me: AuthUser,
    Query(params): Query<SearchParams>,
) -> Result<Json<UserList>, Error> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    let (found, contacts) = state
        .blocking(move |store| {
            let found = store.search_users(&params.q, params.after.as_deref(), limit)?;
            let contacts: std::collections::HashSet<UserId> = if found.is_empty() {
                Default::default()
            } else {
                store.contacts(me.user_id)?.into_iter().collect()
            };
            Ok((found, contacts))
        })
        .await?;
    let users = found
        .into_iter()
        .map(|u| UserPresenceView {
            online: (u.id == me.user_id || contacts.contains(&u.id))
                .then(|| state.cluster.is_online(u.id)),
            id: u.id,
            name: u.name,
        })
        .collect();
    Ok(Json(UserList { users }))
}

/// A user's public profile.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserProfile {
    /// The user's id.
    pub id: UserId,
    /// The user's name.
    pub name: String,
    /// Whether they have a live session anywhere in the cluster. Only for
    /// contacts; absent for others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// When their last session ended, ms since the Unix epoch; null if
    /// never recorded. Only for contacts; absent for others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Option<Millis>>,
}

/// One user's profile and presence.
#[utoipa::path(get, path = "/api/users/{id}", tag = "users",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserProfile),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub(crate) async fn profile(
    State(state): State<AppState>,
    me: AuthUser,
    Path(id): Path<UserId>,
) -> Result<Json<UserProfile>, Error> {
    let (user, last_seen) = state
        .blocking(move |store| {
            let user = store.user(id)?;
            let last_seen = if store.are_contacts(me.user_id, id)? {
                Some(store.last_seen(id)?)
            } else {
                None
            };
            Ok((user, last_seen))
        })
        .await?;
    Ok(Json(UserProfile {
        online: last_seen.map(|_| state.cluster.is_online(user.id)),
        id: user.id,
        name: user.name,
        last_seen,
    }))
}
