//! Who and what the demo's traffic is about: the models (all priced by the
//! built-in catalog), the users and their teams, the gateway's API keys and
//! routes, and how busy each hour of the week is.

use chrono::{Datelike, TimeZone, Timelike};
use rand::Rng;
use rand::rngs::StdRng;

/// A model the demo calls, with what shapes its calls.
#[derive(Debug)]
pub struct Model {
    pub name: &'static str,
    pub provider: &'static str,
    pub embedding: bool,
    /// Emits reasoning tokens (a part of its output).
    pub reasoning: bool,
    /// Prompt caching writes as well as reads (Anthropic style); others only
    /// read.
    pub cache_writes: bool,
    /// Output tokens per second once streaming.
    pub tokens_per_s: f64,
    /// Typical time to the first token, in ms, before the prompt's share.
    pub first_token_ms: f64,
}

const fn chat(
    name: &'static str,
    provider: &'static str,
    tokens_per_s: f64,
    first_token_ms: f64,
) -> Model {
    Model {
        name,
        provider,
        embedding: false,
        reasoning: false,
        cache_writes: false,
        tokens_per_s,
        first_token_ms,
    }
}

pub static GPT_41: Model = chat("gpt-4.1", "openai", 62.0, 480.0);
pub static GPT_41_MINI: Model = chat("gpt-4.1-mini", "openai", 95.0, 330.0);
pub static O4_MINI: Model = Model { reasoning: true, ..chat("o4-mini", "openai", 85.0, 900.0) };
pub static CLAUDE_SONNET: Model =
    Model { cache_writes: true, ..chat("claude-sonnet-4-5", "anthropic", 58.0, 620.0) };
pub static CLAUDE_HAIKU: Model =
    Model { cache_writes: true, ..chat("claude-haiku-4-5", "anthropic", 120.0, 380.0) };
pub static GEMINI_PRO: Model = chat("gemini-2.5-pro", "gemini", 72.0, 750.0);
pub static GEMINI_FLASH: Model =
    Model { reasoning: true, ..chat("gemini-2.5-flash", "gemini", 160.0, 300.0) };
pub static DEEPSEEK: Model = chat("deepseek-chat", "deepseek", 38.0, 700.0);
pub static EMBEDDING: Model =
    Model { embedding: true, ..chat("text-embedding-3-small", "openai", f64::INFINITY, 0.0) };

/// A team and its people.
pub struct Team {
    pub name: &'static str,
    pub users: &'static [&'static str],
}

pub static TEAMS: [Team; 3] = [
    Team {
        name: "support",
        users: &[
            "amara.okafor",
            "ben.hughes",
            "chen.wei",
            "dana.levi",
            "elif.kaya",
            "femi.adeyemi",
            "grace.lin",
        ],
    },
    Team {
        name: "research",
        users: &[
            "hiro.tanaka",
            "isabel.ruiz",
            "jonas.berg",
            "kavya.iyer",
            "liam.oconnor",
            "maya.cohen",
            "nadia.haddad",
        ],
    },
    Team {
        name: "engineering",
        users: &[
            "omar.farouk",
            "priya.nair",
            "quinn.baker",
            "rosa.martins",
            "sven.olsen",
            "tara.singh",
        ],
    },
];

pub const SUPPORT: usize = 0;
pub const RESEARCH: usize = 1;
pub const ENGINEERING: usize = 2;

/// One of the gateway's API keys: the raw key clients send (Tally keeps only
/// a fingerprint of it) and the short id the gateway's own metrics use.
#[derive(Debug)]
pub struct ApiKey {
    pub key: &'static str,
    pub id: &'static str,
}

pub static SUPPORT_BOT: ApiKey = ApiKey { key: "sk-demo-support-bot-4f9c2a71", id: "support-bot" };
pub static RESEARCH_APP: ApiKey =
    ApiKey { key: "sk-demo-research-app-9b1e6d03", id: "research-app" };
pub static CODING_ASSISTANT: ApiKey =
    ApiKey { key: "sk-demo-coding-assistant-27c8f5e4", id: "coding-assistant" };
pub static WORKSPACE_CHAT: ApiKey =
    ApiKey { key: "sk-demo-workspace-chat-c3d0a819", id: "workspace-chat" };
pub static EVALS: ApiKey = ApiKey { key: "sk-demo-evals-e6b47f25", id: "evals" };

pub static API_KEYS: [&ApiKey; 5] =
    [&SUPPORT_BOT, &RESEARCH_APP, &CODING_ASSISTANT, &WORKSPACE_CHAT, &EVALS];

/// The gateway's routes: people waiting on an answer, and jobs that are not.
pub const INTERACTIVE: &str = "interactive";
pub const BATCH: &str = "batch";

/// A user of a team, picked at random.
pub fn user_of(team: usize, rng: &mut StdRng) -> &'static str {
    let users = TEAMS[team].users;
    users[rng.random_range(0..users.len())]
}

/// Any user, with their team.
pub fn anyone(rng: &mut StdRng) -> (&'static str, usize) {
    let team = match rng.random_range(0..20) {
        0..=7 => SUPPORT,
        8..=13 => RESEARCH,
        _ => ENGINEERING,
    };
    (user_of(team, rng), team)
}

/// How busy the hour around `t_ms` is, from 0.25 (a weekend night) to 1 (a
/// weekday afternoon, UTC): the same curve shapes the week of history and
/// the live traffic, so charts run on without a step at "now".
pub fn busyness(t_ms: i64) -> f64 {
    let Some(at) = chrono::Utc.timestamp_millis_opt(t_ms).single() else {
        return 0.5;
    };
    let hour = f64::from(at.hour()) + f64::from(at.minute()) / 60.0;
    // Office hours around 14:00 UTC (Europe's afternoon, America's morning).
    let distance = (hour - 14.0).abs().min(24.0 - (hour - 14.0).abs());
    let day = 0.3 + 0.7 * (-(distance * distance) / (2.0 * 4.5 * 4.5)).exp();
    let weekend = matches!(at.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun);
    if weekend { day * 0.55 } else { day }
}

/// A sample of a Poisson distribution with mean `mean` (Knuth's method for
/// small means, a normal approximation for large ones).
pub fn poisson(mean: f64, rng: &mut StdRng) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 30.0 {
        // Box-Muller.
        let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
        let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        return (mean + normal * mean.sqrt()).round().max(0.0) as u64;
    }
    let limit = (-mean).exp();
    let mut product: f64 = rng.random();
    let mut count = 0;
    while product > limit {
        product *= rng.random::<f64>();
        count += 1;
    }
    count
}

/// A duration with a long tail: mostly near `typical`, sometimes several
/// times it (a log-normal with the given spread).
pub fn long_tail(typical: f64, spread: f64, rng: &mut StdRng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
    let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    typical * (normal * spread).exp()
}

/// A random lowercase hex string of `bytes` bytes.
pub fn hex_id(bytes: usize, rng: &mut StdRng) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rng.random()).collect();
    hex::encode(raw)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn the_cast_has_the_promised_size() {
        let users: std::collections::BTreeSet<_> = TEAMS.iter().flat_map(|t| t.users).collect();
        assert_eq!(users.len(), 20);
        assert_eq!(TEAMS.len(), 3);
        assert_eq!(API_KEYS.len(), 5);
        let models = [
            &GPT_41,
            &GPT_41_MINI,
            &O4_MINI,
            &CLAUDE_SONNET,
            &CLAUDE_HAIKU,
            &GEMINI_PRO,
            &GEMINI_FLASH,
            &DEEPSEEK,
            &EMBEDDING,
        ];
        let providers: std::collections::BTreeSet<_> = models.iter().map(|m| m.provider).collect();
        assert!(models.len() >= 6 && providers.len() >= 3);
    }

    #[test]
    fn busyness_follows_the_office_day_and_the_week() {
        // 2026-03-04 was a Wednesday, 2026-03-07 a Saturday.
        let at = |d: u32, h: u32| {
            chrono::Utc.with_ymd_and_hms(2026, 3, d, h, 0, 0).unwrap().timestamp_millis()
        };
        assert!((busyness(at(4, 14)) - 1.0).abs() < 1e-9);
        assert!(busyness(at(4, 2)) < 0.4);
        assert!(busyness(at(7, 14)) < 0.6);
        for h in 0..24 {
            let b = busyness(at(4, h));
            assert!((0.25..=1.0).contains(&b), "{h}: {b}");
        }
    }

    #[test]
    fn poisson_means_come_out_right() {
        let mut rng = StdRng::seed_from_u64(7);
        for mean in [0.2, 3.0, 80.0] {
            let n = 20_000;
            let total: u64 = (0..n).map(|_| poisson(mean, &mut rng)).sum();
            let got = total as f64 / n as f64;
            assert!((got - mean).abs() < mean * 0.05 + 0.02, "mean {mean}: {got}");
        }
    }
}
