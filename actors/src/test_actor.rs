//! A stand-in actor for unit tests of the registries: it handles nothing,
//! only its address (an `ActorRef` of the right message type) matters.

use std::marker::PhantomData;

use ractor::{Actor, ActorProcessingErr, ActorRef};

/// An actor of message type `M` that ignores every message.
struct Idle<M>(PhantomData<fn() -> M>);

impl<M: ractor::Message> Actor for Idle<M> {
    type Msg = M;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<M>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// Spawns one; stop it with `ActorRef::stop` when the test is done.
pub(crate) async fn idle<M: ractor::Message>() -> ActorRef<M> {
    let (actor, _) = Actor::spawn(None, Idle(PhantomData), ())
        .await
        .expect("an idle actor spawns");
    actor
}
