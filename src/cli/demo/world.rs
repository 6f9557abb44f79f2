//! The conditions the demo's calls meet: the usual few percent of provider
//! errors, one provider's incident a few hours before the demo started
//! (errors and latency up, so that a chart shows when it began), and the
//! conversations people carry on across several agent runs.

use std::collections::HashMap;

use rand::Rng;
use rand::rngs::StdRng;

use super::calls::{Outcome, draw_error};
use super::cast::Model;

const MINUTE_MS: i64 = 60_000;

/// Conditions by time: fixed once the demo starts.
#[derive(Debug, Clone)]
pub struct World {
    /// The provider that has an incident, and when (unix ms, [from, to)).
    pub incident: (&'static str, i64, i64),
}

impl World {
    /// The world of a demo started at `started_ms`: Anthropic's API has a
    /// 25-minute incident from 4 h 40 min before the start.
    pub fn new(started_ms: i64) -> World {
        let from = started_ms - 280 * MINUTE_MS;
        World { incident: ("anthropic", from, from + 25 * MINUTE_MS) }
    }

    fn in_incident(&self, model: &Model, t_ms: i64) -> bool {
        let (provider, from, to) = self.incident;
        model.provider == provider && (from..to).contains(&t_ms)
    }

    /// Whether a call at `t_ms` fails: about 3 % of chat calls, fewer
    /// embeddings, and a third of the incident provider's calls during it.
    pub fn outcome(&self, model: &Model, t_ms: i64, rng: &mut StdRng) -> Outcome {
        let p = if self.in_incident(model, t_ms) {
            0.35
        } else if model.embedding {
            0.005
        } else {
            0.03
        };
        if !rng.random_bool(p) {
            return Outcome::Ok;
        }
        if self.in_incident(model, t_ms) {
            return Outcome::Failed(
                "InternalServerError",
                "529 overloaded: the provider is temporarily overloaded",
            );
        }
        draw_error(rng)
    }

    /// How much slower than usual calls to `model` are at `t_ms`.
    pub fn slowdown(&self, model: &Model, t_ms: i64) -> f64 {
        if self.in_incident(model, t_ms) { 2.4 } else { 1.0 }
    }

    /// Whether the gateway's circuit breaker for the incident provider is
    /// open at `t_ms` (during the incident's worst minutes).
    pub fn circuits_open(&self, t_ms: i64) -> u32 {
        let (_, from, to) = self.incident;
        u32::from((from + 5 * MINUTE_MS..to - 5 * MINUTE_MS).contains(&t_ms))
    }
}

/// How long a conversation stays open for another turn.
const CONVERSATION_IDLE_MS: i64 = 20 * MINUTE_MS;
/// Most turns in one conversation.
const MAX_TURNS: u32 = 5;

/// The conversation each (agent, user) is in, so that several runs share a
/// session. Bounded by the cast: one entry per agent and user.
#[derive(Debug, Default)]
pub struct Sessions {
    open: HashMap<(&'static str, &'static str), (String, i64, u32)>,
}

impl Sessions {
    /// The session of a run of `agent` for `user` at `t_ms`: the user's open
    /// conversation if it was active lately, else a new one.
    pub fn session(
        &mut self,
        agent: &'static str,
        user: &'static str,
        t_ms: i64,
        rng: &mut StdRng,
    ) -> String {
        let entry = self.open.entry((agent, user)).or_insert_with(|| (String::new(), i64::MIN, 0));
        let (id, last, turns) = entry;
        let fresh = id.is_empty()
            || t_ms.saturating_sub(*last) > CONVERSATION_IDLE_MS
            || *turns >= MAX_TURNS
            || rng.random_bool(0.35);
        if fresh {
            *id = format!("conv_{agent}_{}", super::cast::hex_id(6, rng));
            *turns = 0;
        }
        *last = t_ms;
        *turns += 1;
        id.clone()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::super::cast::{CLAUDE_HAIKU, GPT_41};
    use super::*;

    #[test]
    fn errors_are_rare_except_in_the_incident() {
        let world = World::new(100 * 3_600_000);
        let mut rng = StdRng::seed_from_u64(3);
        let rate = |model: &Model, t: i64, rng: &mut StdRng| {
            let n = 20_000;
            (0..n).filter(|_| world.outcome(model, t, rng) != Outcome::Ok).count() as f64 / n as f64
        };
        let (_, from, _) = world.incident;
        let normal = rate(&GPT_41, from, &mut rng);
        assert!((0.02..0.04).contains(&normal), "{normal}");
        assert!(rate(&CLAUDE_HAIKU, from + MINUTE_MS, &mut rng) > 0.3);
        assert!(rate(&CLAUDE_HAIKU, from - MINUTE_MS, &mut rng) < 0.04);
    }

    #[test]
    fn conversations_continue_then_end() {
        let mut sessions = Sessions::default();
        let mut rng = StdRng::seed_from_u64(4);
        let mut ids = std::collections::HashSet::new();
        for turn in 0..200 {
            ids.insert(sessions.session("support", "amara.okafor", turn * 60_000, &mut rng));
        }
        // Several turns per conversation on average, never more than five.
        assert!(ids.len() > 40 && ids.len() < 150, "{}", ids.len());
        let later = sessions.session("support", "amara.okafor", 10 * 3_600_000, &mut rng);
        assert!(!ids.contains(&later));
    }
}
