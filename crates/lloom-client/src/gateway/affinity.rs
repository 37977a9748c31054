//! Conversation affinity: the gateway asks first the executor that answered a conversation's
//! previous request, whose prompt cache holds the history, so that its engine computes only
//! what is new (an OpenAI API client sends the whole history with every turn, and an agent its
//! instructions and tools with every call).
//!
//! A conversation is known by its model and its messages up to and including the first user
//! message (the system prompt and the opening question, which every later turn repeats). Every
//! verified answer records which executor gave it; a request that continues a conversation
//! (it holds an assistant message) prefers that executor ([`ChatRequest::prefer`]). What is kept
//! is bounded ([`MAX_CONVERSATIONS`]; the oldest recorded goes first) and holds only hashes.
//!
//! [`ChatRequest::prefer`]: crate::ChatRequest::prefer

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Mutex;

use lloom_core::{Address, ChatMessage, Role};

/// Conversations remembered.
pub(crate) const MAX_CONVERSATIONS: usize = 16_384;

/// Which executor answered each recent conversation.
#[derive(Debug, Default)]
pub(crate) struct Affinity {
    hasher: RandomState,
    recorded: Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    executors: HashMap<u64, Address>,
    /// Conversations in the order they were first recorded.
    order: VecDeque<u64>,
}

impl Affinity {
    /// The executor to ask first for a request of `model` with `messages`: the one that
    /// answered its conversation last, if it continues one.
    pub(crate) fn preferred(&self, model: &str, messages: &[ChatMessage]) -> Option<Address> {
        if !messages.iter().any(|m| m.role == Role::Assistant) {
            return None;
        }
        let key = self.key(model, messages)?;
        self.lock().executors.get(&key).copied()
    }

    /// Records that `executor` answered a request of `model` with `messages`.
    pub(crate) fn answered(&self, model: &str, messages: &[ChatMessage], executor: Address) {
        let Some(key) = self.key(model, messages) else { return };
        let mut recorded = self.lock();
        if recorded.executors.insert(key, executor).is_none() {
            recorded.order.push_back(key);
            while recorded.order.len() > MAX_CONVERSATIONS {
                if let Some(oldest) = recorded.order.pop_front() {
                    recorded.executors.remove(&oldest);
                }
            }
        }
    }

    /// The conversation of `messages`: a hash of `model` and the messages up to the first
    /// user message; `None` without one.
    fn key(&self, model: &str, messages: &[ChatMessage]) -> Option<u64> {
        let opening = messages.iter().position(|m| m.role == Role::User)?;
        let mut hasher = self.hasher.build_hasher();
        model.hash(&mut hasher);
        for message in messages.get(..=opening)? {
            (message.role as u8).hash(&mut hasher);
            message.content.hash(&mut hasher);
        }
        Some(hasher.finish())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: Role, content: &str) -> ChatMessage {
        ChatMessage { role, content: content.into() }
    }

    #[test]
    fn a_continued_conversation_prefers_who_answered_it_last() {
        let affinity = Affinity::default();
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let first = vec![message(Role::System, "Be brief."), message(Role::User, "Hi, I am Ana.")];
        assert_eq!(affinity.preferred("m", &first), None, "nothing recorded");
        affinity.answered("m", &first, a);
        // A first turn prefers no one (no shared history to reuse), even if recorded.
        assert_eq!(affinity.preferred("m", &first), None);
        let mut second = first;
        second.push(message(Role::Assistant, "Hello Ana."));
        second.push(message(Role::User, "What is my name?"));
        assert_eq!(affinity.preferred("m", &second), Some(a));
        affinity.answered("m", &second, b);
        assert_eq!(affinity.preferred("m", &second), Some(b), "the last to answer");
        // Another model, another opening, or no user message: another conversation.
        assert_eq!(affinity.preferred("other", &second), None);
        let mut other = second.clone();
        other[1] = message(Role::User, "Hi, I am Bo.");
        assert_eq!(affinity.preferred("m", &other), None);
        let no_user = [message(Role::System, "x"), message(Role::Assistant, "y")];
        affinity.answered("m", &no_user, a);
        assert_eq!(affinity.preferred("m", &no_user), None);
    }

    #[test]
    fn what_is_remembered_is_bounded_oldest_first() {
        let affinity = Affinity::default();
        let conversation = |i: usize| {
            vec![
                message(Role::User, &format!("question {i}")),
                message(Role::Assistant, "answer"),
                message(Role::User, "more"),
            ]
        };
        for i in 0..=MAX_CONVERSATIONS {
            affinity.answered("m", &conversation(i), Address::repeat_byte(1));
        }
        assert_eq!(affinity.lock().executors.len(), MAX_CONVERSATIONS);
        assert_eq!(affinity.preferred("m", &conversation(0)), None, "the oldest went");
        assert!(affinity.preferred("m", &conversation(MAX_CONVERSATIONS)).is_some());
    }
}
