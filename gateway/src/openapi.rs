//! The OpenAPI document served at `/openapi.json`, generated from the
//! handlers' `#[utoipa::path]` attributes so it cannot drift from the code.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::{
    admin, blocks, chats, cluster, conversations, groups, health, members, messages, mute, push,
    search, send, session, users,
};

/// The API's description: every REST route, its bodies and its errors.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Parley",
        description = "Parley's HTTP API. Errors are `{\"error\": {\"code\", \"message\"}}`; \
                       the WebSocket protocol at `/ws` is described in docs/PROTOCOL.md."
    ),
    paths(
        health::health,
        cluster::gateways,
        session::register,
        session::login,
        session::logout,
        users::search,
        users::profile,
        chats::list,
        chats::open_direct,
        groups::create,
        groups::edit,
        groups::delete,
        groups::history,
        members::add,
        members::remove,
        members::leave,
        conversations::show,
        messages::history,
        messages::status,
        messages::receipts,
        messages::edits,
        messages::reactions,
        send::send,
        send::edit,
        send::delete,
        send::react,
        send::react_with_body,
        send::unreact,
        mute::mute,
        mute::unmute,
        search::search,
        push::add,
        push::list,
        push::remove,
        push::vapid_public_key,
        blocks::add,
        blocks::list,
        blocks::remove,
        admin::cluster,
        admin::events,
        admin::cut_link,
        admin::heal_link,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the authenticated paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document, rendered once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|e| format!(r#"{{"error":{{"code":"internal","message":"{e}"}}}}"#))
});

/// `GET /openapi.json`.
pub(crate) async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).expect("the document is JSON");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, method) in [
            ("/healthz", "get"),
            ("/api/register", "post"),
            ("/api/login", "post"),
            ("/api/logout", "post"),
            ("/api/users", "get"),
            ("/api/users/{id}", "get"),
            ("/api/chats", "get"),
            ("/api/direct/{user_id}", "post"),
            ("/api/groups", "post"),
            ("/api/groups/{id}", "patch"),
            ("/api/groups/{id}", "delete"),
            ("/api/groups/{id}/history", "get"),
            ("/api/groups/{id}/members", "post"),
            ("/api/groups/{id}/members/{user_id}", "delete"),
            ("/api/groups/{id}/leave", "post"),
            ("/api/conversations/{id}", "get"),
            ("/api/conversations/{id}/messages", "get"),
            ("/api/conversations/{id}/messages/{seq}/status", "get"),
            ("/api/conversations/{id}/receipts", "get"),
            ("/api/conversations/{id}/messages", "post"),
            ("/api/conversations/{id}/messages/{seq}", "patch"),
            ("/api/conversations/{id}/messages/{seq}", "delete"),
            ("/api/conversations/{id}/messages/{seq}/edits", "get"),
            ("/api/conversations/{id}/messages/{seq}/reactions", "get"),
            ("/api/conversations/{id}/messages/{seq}/reactions", "post"),
            (
                "/api/conversations/{id}/messages/{seq}/reactions/{emoji}",
                "put",
            ),
            (
                "/api/conversations/{id}/messages/{seq}/reactions/{emoji}",
                "delete",
            ),
            ("/api/conversations/{id}/mute", "put"),
            ("/api/conversations/{id}/mute", "delete"),
            ("/api/search", "get"),
            ("/api/push-subscriptions", "post"),
            ("/api/push-subscriptions", "get"),
            ("/api/push-subscriptions/{id}", "delete"),
            ("/api/push/vapid-public-key", "get"),
            ("/api/blocks", "post"),
            ("/api/blocks", "get"),
            ("/api/blocks/{user_id}", "delete"),
            ("/api/admin/cluster", "get"),
            ("/api/admin/events", "get"),
        ] {
            assert!(paths[path][method].is_object(), "{method} {path} missing");
        }
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for name in ["ErrorBody", "LoginResponse", "ChatList", "ConversationView"] {
            assert!(schemas.contains_key(name), "schema {name} missing");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
