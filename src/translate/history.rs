//! Turn building for targets with strict conversation rules (Anthropic, Gemini): top-level
//! system prompt, alternating roles, tool results first in their user turn (§2.2).

use super::ir::{LateSystem, Message, Part, Role};

/// One piece of a turn: a canonical part, or the text of a system message that appeared
/// mid-conversation and is kept in place as user text (§11.3).
pub(crate) enum TurnPart<'r, 'a> {
    Part(&'r Part<'a>),
    SystemText(&'r str),
}

pub(crate) struct Turn<'r, 'a> {
    /// `User` or `Assistant`.
    pub role: Role,
    pub parts: Vec<TurnPart<'r, 'a>>,
}

pub(crate) struct History<'r, 'a> {
    /// Text parts of the system prompt, in order.
    pub system: Vec<&'r Part<'a>>,
    pub turns: Vec<Turn<'r, 'a>>,
}

/// Splits the system prompt off and repairs the turn sequence:
/// * empty text parts and turns left empty are dropped (Anthropic rejects empty content);
/// * consecutive same-role messages are merged into one turn (several OpenAI `tool` messages
///   become one user turn, as Anthropic and Gemini require);
/// * inside a user turn, tool results come first, in call order.
pub(crate) fn build<'r, 'a>(messages: &'r [Message<'a>], late: LateSystem) -> History<'r, 'a> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'r, 'a>> = Vec::new();
    for m in messages {
        let role = match m.role {
            Role::System if turns.is_empty() || late == LateSystem::Hoist => {
                system.extend(
                    m.parts
                        .iter()
                        .filter(|p| matches!(p, Part::Text { text, .. } if !text.is_empty())),
                );
                continue;
            }
            Role::System => Role::User,
            r => r,
        };
        let parts = m
            .parts
            .iter()
            .filter(|p| !p.is_empty_text())
            .map(|p| match (m.role, p) {
                (Role::System, Part::Text { text, .. }) => TurnPart::SystemText(text),
                _ => TurnPart::Part(p),
            });
        match turns.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => {
                let parts: Vec<_> = parts.collect();
                if !parts.is_empty() {
                    turns.push(Turn { role, parts });
                }
            }
        }
    }
    for turn in turns.iter_mut().filter(|t| t.role == Role::User) {
        // Stable: results keep their order, the rest keeps its order after them.
        turn.parts
            .sort_by_key(|p| !matches!(p, TurnPart::Part(Part::ToolResult(_))));
    }
    History { system, turns }
}

/// The wrapper used for a mid-conversation system message kept as user text.
pub(crate) fn wrap_system(text: &str) -> String {
    format!("<system>\n{text}\n</system>")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::translate::ir::{Args, ToolCall, ToolResult};

    fn text(t: &str) -> Part<'_> {
        Part::text(t)
    }

    fn result(id: &str) -> Part<'_> {
        Part::ToolResult(ToolResult {
            id: id.into(),
            name: None,
            content: vec![text("ok")],
            is_error: false,
        })
    }

    #[test]
    fn merges_same_role_and_puts_tool_results_first() {
        let call = |id: &'static str| {
            Part::ToolCall(ToolCall {
                id: id.into(),
                name: "f".into(),
                args: Args::Text("{}".into()),
            })
        };
        let messages = vec![
            Message {
                role: Role::System,
                parts: vec![text("sys")],
            },
            Message {
                role: Role::User,
                parts: vec![text("hi")],
            },
            Message {
                role: Role::Assistant,
                parts: vec![text(""), call("a"), call("b")],
            },
            Message {
                role: Role::User,
                parts: vec![result("a")],
            },
            Message {
                role: Role::User,
                parts: vec![text("and also"), result("b")],
            },
            Message {
                role: Role::Assistant,
                parts: vec![text("")],
            },
            Message {
                role: Role::User,
                parts: vec![text("next")],
            },
        ];
        let h = build(&messages, LateSystem::Hoist);
        assert_eq!(h.system.len(), 1);
        let roles: Vec<Role> = h.turns.iter().map(|t| t.role).collect();
        // The empty assistant message vanished and the two user turns around it merged.
        assert_eq!(roles, vec![Role::User, Role::Assistant, Role::User]);
        let last = &h.turns[2];
        assert!(matches!(last.parts[0], TurnPart::Part(Part::ToolResult(r)) if r.id == "a"));
        assert!(matches!(last.parts[1], TurnPart::Part(Part::ToolResult(r)) if r.id == "b"));
        assert!(
            matches!(last.parts[2], TurnPart::Part(Part::Text { text, .. }) if text == "and also")
        );
        assert!(matches!(last.parts[3], TurnPart::Part(Part::Text { text, .. }) if text == "next"));
        assert_eq!(h.turns[1].parts.len(), 2);
    }

    #[test]
    fn late_system_is_hoisted_or_inlined() {
        let messages = vec![
            Message {
                role: Role::User,
                parts: vec![text("hi")],
            },
            Message {
                role: Role::System,
                parts: vec![text("late")],
            },
        ];
        let hoisted = build(&messages, LateSystem::Hoist);
        assert_eq!(hoisted.system.len(), 1);
        assert_eq!(hoisted.turns.len(), 1);
        let inlined = build(&messages, LateSystem::InlineUser);
        assert!(inlined.system.is_empty());
        assert_eq!(inlined.turns.len(), 1);
        assert!(matches!(
            inlined.turns[0].parts[1],
            TurnPart::SystemText("late")
        ));
    }
}
