//! The activity generator: makes the seeded account busy, as Qpien's own app would, so
//! that webhooks have something to report. At `activity_per_minute` steps a minute, a
//! conversation chosen by a seeded random generator (the same sequence on every run)
//! gets a customer's message (reopening it if it was resolved), an agent's message, or
//! another agent joining. Each step changes the store first and then emits its event,
//! so a read made once the delivery arrives shows the change.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::ID;
use chrono::{SubsecRound, Utc};
use tokio::time::MissedTickBehavior;

use crate::data::{self, Store};
use crate::events::{Message, Sender, join_conversation};
use crate::types::{ConversationStatusEnum, Date, LastMessageType};
use crate::webhooks::Webhooks;

const CUSTOMER_LINES: [&str; 6] = [
    "Any news on my order?",
    "I was charged twice this month.",
    "The tracking link does not open.",
    "Can I change the delivery address?",
    "Still waiting for an answer, please.",
    "Great, thank you!",
];
const AGENT_LINES: [&str; 4] = [
    "Thanks for your patience, I am looking into it.",
    "Your refund is on its way.",
    "Could you send us your order number?",
    "This is fixed now; let us know if it happens again.",
];

/// Runs `limit` steps (None: until the task is aborted, when the sandbox stops).
/// `per_minute` is at least 1.
pub(crate) async fn run(
    store: Arc<Store>,
    webhooks: Arc<Webhooks>,
    per_minute: u32,
    seed: u64,
    limit: Option<u64>,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(60.0 / f64::from(per_minute)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate; the first step comes one period after start-up.
    ticks.tick().await;
    let mut messages = 0usize;
    let mut steps = 0u64;
    while limit.is_none_or(|most| steps < most) {
        ticks.tick().await;
        step(&store, &webhooks, &mut rng, &mut messages);
        steps += 1;
    }
}

fn step(store: &Store, webhooks: &Webhooks, rng: &mut fastrand::Rng, messages: &mut usize) {
    let index = rng.usize(..data::CONVERSATION_COUNT);
    match rng.u8(..4) {
        0 | 1 => write(store, webhooks, rng, index, Sender::Customer, messages),
        2 => write(store, webhooks, rng, index, Sender::Agent, messages),
        _ => join(store, webhooks, rng, index),
    }
}

fn write(
    store: &Store,
    webhooks: &Webhooks,
    rng: &mut fastrand::Rng,
    index: usize,
    sender: Sender,
    messages: &mut usize,
) {
    *messages += 1;
    let id = data::object_id("6650a7", *messages);
    let content = match sender {
        Sender::Customer => CUSTOMER_LINES[rng.usize(..CUSTOMER_LINES.len())],
        Sender::Agent => AGENT_LINES[rng.usize(..AGENT_LINES.len())],
    };
    // Whole seconds: the Date scalar shows no more, so the store holds what reads show.
    let sent_at = Date(Utc::now().trunc_subsecs(0));
    let Some(conversation) = store.change_at(index, |c| {
        let channel = c.channels.iter().flatten().flatten().next().cloned();
        c.last_message = Some(LastMessageType {
            id: ID(id.clone()),
            content: Some(content.to_owned()),
            channel_type: channel.as_ref().map(|ch| ch.channel_type),
            is_incoming: Some(sender == Sender::Customer),
            created_at: Some(sent_at),
        });
        if sender == Sender::Customer {
            if let Some(channel) = channel {
                c.last_received_message_channel = Some(channel.id);
            }
            if c.status == Some(ConversationStatusEnum::Resolved) {
                c.status = Some(ConversationStatusEnum::Open);
            }
        }
    }) else {
        return;
    };
    let message = Message {
        id: &id,
        conversation: &conversation.id.0,
        sender,
        channel_type: conversation
            .last_message
            .as_ref()
            .and_then(|m| m.channel_type),
        content,
        created_at: sent_at,
    };
    webhooks.emit(message.kind(), message.data());
}

fn join(store: &Store, webhooks: &Webhooks, rng: &mut fastrand::Rng, index: usize) {
    // One of the other agents, so that every join is a change.
    let pick = rng.usize(..data::AGENT_COUNT - 1);
    let Some(conversation) = store.change_at(index, |c| {
        let others: Vec<String> = (1..=data::AGENT_COUNT)
            .map(data::agent_id)
            .filter(|a| c.joined_person.as_ref().is_none_or(|p| p.0 != *a))
            .collect();
        c.joined_person = Some(ID(others[pick.min(others.len() - 1)].clone()));
    }) else {
        return;
    };
    webhooks.emit(
        crate::events::WebhookEvent::JoinConversation,
        join_conversation(&conversation),
    );
}
