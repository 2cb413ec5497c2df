//! SessionActor: one per connected WebSocket client.
//!
//! It is the only writer to its socket (through the bounded queue the
//! gateway drains), and its membership of the `user:{id}` process group is
//! what makes its user online across the cluster.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorClusterMessage;
use storage::chat::UserId;
use tokio::sync::{mpsc, oneshot};

use crate::Cluster;

/// WebSocket close code for "try again later / elsewhere" (RFC 6455 1012,
/// service restart): the client should reconnect, to another node if this
/// one is going away.
pub const CLOSE_RESTART: u16 = 1012;
/// Close code for a client that read too slowly (1008, policy violation).
pub const CLOSE_SLOW_CONSUMER: u16 = 1008;

/// Why the server closes a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The WebSocket close code.
    pub code: u16,
    /// Human-readable reason (at most 123 bytes on the wire).
    pub reason: String,
}

/// Messages a session accepts. Only byte payloads, so it can be a member of
/// a cluster-wide process group (remote nodes hold proxies of it) without
/// any decoding that could panic.
#[derive(RactorClusterMessage)]
pub enum SessionMsg {
    /// A JSON text frame to write to the client.
    Frame(Vec<u8>),
    /// Close the socket: the node is shutting down. Payload: the reason.
    Close(Vec<u8>),
}

/// What the gateway hands the session when it spawns it.
pub struct SessionArgs {
    /// The authenticated user.
    pub user_id: UserId,
    /// The session's id on this node.
    pub session_id: u64,
    /// Frames for the socket writer; bounded, so a slow client cannot make
    /// the server grow without limit.
    pub outbound: mpsc::Sender<String>,
    /// Fired once when the server decides to close the socket.
    pub close: oneshot::Sender<CloseReason>,
    /// The node's cluster handle.
    pub cluster: Cluster,
}

/// The session's state: its identity and its way to the socket.
pub struct SessionState {
    user_id: UserId,
    session_id: u64,
    outbound: mpsc::Sender<String>,
    close: Option<oneshot::Sender<CloseReason>>,
    cluster: Cluster,
}

impl SessionState {
    fn close(&mut self, reason: CloseReason) {
        if let Some(tx) = self.close.take() {
            let _ = tx.send(reason);
        }
    }
}

/// The session actor.
pub struct SessionActor;

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let cluster = args.cluster;
        cluster
            .sessions()
            .insert(args.session_id, args.user_id, myself.clone());
        ractor::pg::join_scoped(
            cluster.users_scope().to_owned(),
            crate::user_group(args.user_id),
            vec![myself.get_cell()],
        );
        cluster.metrics().sessions.inc();
        Ok(SessionState {
            user_id: args.user_id,
            session_id: args.session_id,
            outbound: args.outbound,
            close: Some(args.close),
            cluster,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Frame(bytes) => {
                let Ok(text) = String::from_utf8(bytes) else {
                    tracing::warn!(session = state.session_id, "dropping a non-UTF-8 frame");
                    return Ok(());
                };
                match state.outbound.try_send(text) {
                    Ok(()) => {
                        state.cluster.metrics().frames_delivered.inc();
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        state.cluster.metrics().slow_consumers.inc();
                        tracing::info!(
                            session = state.session_id,
                            user = state.user_id,
                            "disconnecting a client that reads too slowly"
                        );
                        state.close(CloseReason {
                            code: CLOSE_SLOW_CONSUMER,
                            reason: "too slow: outbound queue full".into(),
                        });
                        myself.stop(Some("slow consumer".into()));
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        myself.stop(Some("socket closed".into()));
                    }
                }
            }
            SessionMsg::Close(reason) => {
                state.close(CloseReason {
                    code: CLOSE_RESTART,
                    reason: String::from_utf8_lossy(&reason).into_owned(),
                });
                myself.stop(Some("closed by the server".into()));
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.cluster.sessions().remove(state.session_id);
        state.cluster.metrics().sessions.dec();
        Ok(())
    }
}
