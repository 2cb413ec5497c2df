//! Parley Web's own steps, for the browser tests: signing in, waiting to
//! be online, opening a chat from the list.

use serde_json::Value;

use super::chromium::Browser;

impl Browser {
    /// Fills the login form and presses "Create account" or "Log in".
    pub async fn sign_in(&self, name: &str, register: bool) {
        self.until(
            "the login form",
            "return !document.getElementById('login-view').hidden",
        )
        .await;
        self.type_in("#login-name", name).await;
        self.type_in("#login-password", "correct horse").await;
        self.click(if register {
            "#register-btn"
        } else {
            "#login-btn"
        })
        .await;
        self.until_online().await;
    }

    /// Waits until the page says its WebSocket is online (and on which node).
    pub async fn until_online(&self) -> Value {
        self.until(
            "the connection to be online",
            "const s = document.getElementById('conn-state'); return s.dataset.state === 'online' && s.dataset.node;",
        )
        .await
    }

    /// Opens the conversation named `name` from the chat list.
    pub async fn open_chat(&self, name: &str) {
        self.until(&format!("{name} in the chat list"), &format!(
            "const b = [...document.querySelectorAll('.chat-item')].find(b => b.querySelector('.chat-name').textContent === {name:?}); if (b) b.click(); return !!b;"
        ))
        .await;
        self.until(
            "the conversation to open",
            &format!("return document.getElementById('conv-title').textContent === {name:?}"),
        )
        .await;
    }
}
