//! What a budget is — scope, metric, limit, period, thresholds, webhooks and
//! modes — checked from the JSON API or the config file, and which calls it
//! covers.

use std::collections::BTreeMap;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::period::{Period, parse_tz};
use super::target;
use crate::aggregate::SeriesKey;
use crate::model::{LlmCall, Tags};
use crate::normalize::KeyFingerprinter;

/// A budget as the API and the config file give it, before checking.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Stable id; generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    /// Project the budget belongs to (default `default`).
    #[serde(default)]
    pub project: Option<String>,
    /// Which calls count: any of model, provider, user, api_key (the raw
    /// key, fingerprinted at once), api_key_fingerprint, route, tag.NAME
    /// (or `tags: {NAME: VALUE}`); all given ones must match.
    #[serde(default)]
    pub scope: BTreeMap<String, Value>,
    /// `cost_usd` or `tokens`.
    pub metric: String,
    pub limit: f64,
    /// `day`, `week`, `month` or a rolling duration (`rolling 24h`).
    pub period: String,
    /// IANA zone for calendar periods (default: budgets.timezone).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Percentages of the limit that raise an alert (default 50, 80, 100).
    #[serde(default)]
    pub thresholds: Option<Vec<f64>>,
    /// http(s) URLs that receive each alert: no user name or password, and
    /// no literal address webhooks may not reach (see `target`).
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// Key for the webhook signature; generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// `enforce` (quota checks deny past the limit) or `observe`.
    #[serde(default)]
    pub mode: Option<String>,
    /// `open` or `closed`: what a quota check answers when Tally cannot decide.
    #[serde(default)]
    pub fail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    CostUsd,
    Tokens,
}

impl Metric {
    /// What one call adds to a budget of this metric.
    pub fn amount(self, call: &LlmCall) -> f64 {
        match self {
            Metric::CostUsd => call.cost_usd,
            Metric::Tokens => call.total_tokens as f64,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::CostUsd => "cost_usd",
            Metric::Tokens => "tokens",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Enforce,
    Observe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Api,
    Config,
}

/// The dimensions a budget may be scoped by; all given ones must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The key's fingerprint (`k_…`), never the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

/// The dimensions of a call, a series or a quota request, as a scope sees them.
pub struct Subject<'a> {
    pub project: &'a str,
    pub model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub user: Option<&'a str>,
    pub api_key: Option<&'a str>,
    pub route: Option<&'a str>,
    pub tags: &'a Tags,
}

impl<'a> From<&'a LlmCall> for Subject<'a> {
    fn from(c: &'a LlmCall) -> Self {
        Subject {
            project: &c.project,
            model: Some(&c.model),
            provider: c.provider.as_deref(),
            user: c.user.as_deref(),
            api_key: c.api_key.as_deref(),
            route: c.route.as_deref(),
            tags: &c.tags,
        }
    }
}

impl<'a> From<&'a SeriesKey> for Subject<'a> {
    fn from(k: &'a SeriesKey) -> Self {
        Subject {
            project: &k.project,
            model: Some(&k.model),
            provider: k.provider.as_deref(),
            user: k.user.as_deref(),
            api_key: k.api_key.as_deref(),
            route: k.route.as_deref(),
            tags: &k.tags,
        }
    }
}

impl Scope {
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        fn same(want: &Option<String>, have: Option<&str>) -> bool {
            want.as_deref().is_none_or(|w| have == Some(w))
        }
        same(&self.model, s.model)
            && same(&self.provider, s.provider)
            && same(&self.user, s.user)
            && same(&self.api_key, s.api_key)
            && same(&self.route, s.route)
            && self.tags.iter().all(|(k, v)| s.tags.get(k) == Some(v))
    }

    /// As the API shows it: flat, tags as `tag.NAME`.
    pub fn to_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        for (name, value) in [
            ("model", &self.model),
            ("provider", &self.provider),
            ("user", &self.user),
            ("api_key", &self.api_key),
            ("route", &self.route),
        ] {
            if let Some(v) = value {
                map.insert(name.to_owned(), Value::String(v.clone()));
            }
        }
        for (k, v) in &self.tags {
            map.insert(format!("tag.{k}"), Value::String(v.clone()));
        }
        Value::Object(map)
    }
}

/// A checked budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Budget {
    pub id: String,
    pub name: String,
    pub project: String,
    pub scope: Scope,
    pub metric: Metric,
    pub limit: f64,
    #[serde(with = "period_text")]
    pub period: Period,
    #[serde(with = "tz_text")]
    pub timezone: Tz,
    pub thresholds: Vec<f64>,
    pub webhooks: Vec<String>,
    pub mode: Mode,
    pub fail: FailMode,
    pub secret: String,
    pub origin: Origin,
    pub created_ms: i64,
    pub updated_ms: i64,
}

mod period_text {
    use super::Period;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Period, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(p)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Period, D::Error> {
        Period::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

mod tz_text {
    use chrono_tz::Tz;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(tz.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
        super::parse_tz(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A budget that cannot be accepted: which field, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> RuleError {
    RuleError { field: field.into(), message: message.into() }
}

/// What checking a spec needs from the server.
pub struct RuleContext<'a> {
    pub default_timezone: Tz,
    pub fingerprinter: &'a KeyFingerprinter,
    /// Whether webhooks may target loopback and private networks.
    pub allow_private_targets: bool,
    pub now_ms: i64,
}

pub const DEFAULT_THRESHOLDS: [f64; 3] = [50.0, 80.0, 100.0];
/// Highest threshold, in percent.
const MAX_THRESHOLD: f64 = 1000.0;
const MAX_THRESHOLDS: usize = 16;
const MAX_WEBHOOKS: usize = 8;

/// Ids are short and URL-safe.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn scope_text(field: &str, value: &Value) -> Result<String, RuleError> {
    match value {
        Value::String(s) if !s.is_empty() && s.len() <= 256 => Ok(s.clone()),
        Value::String(_) => Err(invalid(field, "must be 1 to 256 characters")),
        other => Err(invalid(field, format!("must be a string, got {other}"))),
    }
}

impl Budget {
    /// Checks `spec`; `origin` says where it came from.
    pub fn from_spec(
        spec: BudgetSpec,
        origin: Origin,
        context: &RuleContext<'_>,
    ) -> Result<Budget, RuleError> {
        let id = match spec.id {
            Some(id) if valid_id(&id) => id,
            Some(_) => {
                return Err(invalid("id", "must be 1 to 64 letters, digits, '-', '_' or '.'"));
            }
            None => format!("bud_{}", hex::encode(rand::random::<[u8; 6]>())),
        };
        let name = spec.name.trim().to_owned();
        if name.is_empty() || name.len() > 128 {
            return Err(invalid("name", "must be 1 to 128 characters"));
        }
        let project = spec.project.unwrap_or_else(|| "default".to_owned());
        if project.is_empty() {
            return Err(invalid("project", "must not be empty"));
        }
        let scope = parse_scope(&spec.scope, context.fingerprinter)?;
        let metric = match spec.metric.as_str() {
            "cost_usd" | "cost" => Metric::CostUsd,
            "tokens" => Metric::Tokens,
            other => {
                return Err(invalid("metric", format!("{other:?}: expected cost_usd or tokens")));
            }
        };
        if !spec.limit.is_finite() || spec.limit <= 0.0 {
            return Err(invalid("limit", format!("must be a number above 0, got {}", spec.limit)));
        }
        let period = Period::parse(&spec.period).map_err(|m| invalid("period", m))?;
        let timezone = match &spec.timezone {
            Some(name) => parse_tz(name).map_err(|m| invalid("timezone", m))?,
            None => context.default_timezone,
        };
        let thresholds = spec.thresholds.unwrap_or_else(|| DEFAULT_THRESHOLDS.to_vec());
        check_thresholds(&thresholds)?;
        if spec.webhooks.len() > MAX_WEBHOOKS {
            return Err(invalid("webhooks", format!("at most {MAX_WEBHOOKS} URLs")));
        }
        // What a name resolves to is known only when an alert is delivered;
        // `webhook` checks it then.
        for (i, url) in spec.webhooks.iter().enumerate() {
            target::check_url(url, context.allow_private_targets)
                .map_err(|e| invalid(format!("webhooks[{i}]"), e.to_string()))?;
        }
        let secret = match spec.secret {
            Some(s) if s.len() >= 16 => s,
            Some(_) => return Err(invalid("secret", "must be at least 16 characters")),
            None => hex::encode(rand::random::<[u8; 24]>()),
        };
        let mode = match spec.mode.as_deref() {
            None | Some("enforce") => Mode::Enforce,
            Some("observe") => Mode::Observe,
            Some(other) => {
                return Err(invalid("mode", format!("{other:?}: expected enforce or observe")));
            }
        };
        let fail = match spec.fail.as_deref() {
            None | Some("open") => FailMode::Open,
            Some("closed") => FailMode::Closed,
            Some(other) => {
                return Err(invalid("fail", format!("{other:?}: expected open or closed")));
            }
        };
        Ok(Budget {
            id,
            name,
            project,
            scope,
            metric,
            limit: spec.limit,
            period,
            timezone,
            thresholds,
            webhooks: spec.webhooks,
            mode,
            fail,
            secret,
            origin,
            created_ms: context.now_ms,
            updated_ms: context.now_ms,
        })
    }

    /// Whether calls of `subject` count against this budget.
    pub fn covers(&self, subject: &Subject<'_>) -> bool {
        subject.project == self.project && self.scope.matches(subject)
    }

    /// As the API shows it (the secret only when asked: on creation).
    pub fn to_json(&self, with_secret: bool) -> Value {
        let mut out = json!({
            "id": self.id,
            "name": self.name,
            "project": self.project,
            "scope": self.scope.to_json(),
            "metric": self.metric.as_str(),
            "limit": self.limit,
            "period": self.period.to_string(),
            "timezone": self.timezone.name(),
            "thresholds": self.thresholds,
            "webhooks": self.webhooks,
            "mode": self.mode,
            "fail": self.fail,
            "source": self.origin,
            "created_at": self.created_ms,
            "updated_at": self.updated_ms,
        });
        if with_secret {
            out["secret"] = Value::String(self.secret.clone());
        }
        out
    }
}

fn check_thresholds(thresholds: &[f64]) -> Result<(), RuleError> {
    if thresholds.len() > MAX_THRESHOLDS {
        return Err(invalid("thresholds", format!("at most {MAX_THRESHOLDS} thresholds")));
    }
    for (i, t) in thresholds.iter().enumerate() {
        if !t.is_finite() || *t <= 0.0 || *t > MAX_THRESHOLD {
            return Err(invalid(
                format!("thresholds[{i}]"),
                format!("{t} is not a percentage in (0, {MAX_THRESHOLD}]"),
            ));
        }
        if i > 0 && *t <= thresholds[i - 1] {
            return Err(invalid(
                format!("thresholds[{i}]"),
                format!(
                    "{t} is not above {}: thresholds must be in increasing order",
                    thresholds[i - 1]
                ),
            ));
        }
    }
    Ok(())
}

fn parse_scope(
    raw: &BTreeMap<String, Value>,
    fingerprinter: &KeyFingerprinter,
) -> Result<Scope, RuleError> {
    let mut scope = Scope::default();
    for (name, value) in raw {
        let field = format!("scope.{name}");
        match name.as_str() {
            "model" => scope.model = Some(scope_text(&field, value)?),
            "provider" => scope.provider = Some(scope_text(&field, value)?),
            "user" => scope.user = Some(scope_text(&field, value)?),
            "route" => scope.route = Some(scope_text(&field, value)?),
            "api_key" => {
                scope.api_key = Some(fingerprinter.fingerprint(&scope_text(&field, value)?));
            }
            "api_key_fingerprint" => scope.api_key = Some(scope_text(&field, value)?),
            "tags" => {
                let Value::Object(tags) = value else {
                    return Err(invalid(field, "must be an object of tag names to values"));
                };
                for (tag, v) in tags {
                    scope.tags.insert(tag.clone(), scope_text(&format!("scope.tags.{tag}"), v)?);
                }
            }
            _ => match name.strip_prefix("tag.") {
                Some(tag) if !tag.is_empty() => {
                    scope.tags.insert(tag.to_owned(), scope_text(&field, value)?);
                }
                _ => {
                    return Err(invalid(
                        field,
                        "unknown scope field; expected model, provider, user, api_key, api_key_fingerprint, route or tag.NAME",
                    ));
                }
            },
        }
    }
    if raw.contains_key("api_key") && raw.contains_key("api_key_fingerprint") {
        return Err(invalid("scope", "give api_key or api_key_fingerprint, not both"));
    }
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(f: &KeyFingerprinter) -> RuleContext<'_> {
        RuleContext {
            default_timezone: Tz::UTC,
            fingerprinter: f,
            allow_private_targets: false,
            now_ms: 1,
        }
    }

    fn spec(json: Value) -> BudgetSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn accepts_the_issue_example() {
        let f = KeyFingerprinter::new(b"s");
        let b = Budget::from_spec(
            spec(json!({"name": "alice-monthly", "scope": {"user": "alice", "tag.team": "search"},
                "metric": "cost_usd", "limit": 20.0, "period": "month",
                "thresholds": [50, 80, 100], "webhooks": ["http://hooks.example.com:9000/hook"],
                "mode": "enforce", "fail": "closed"})),
            Origin::Api,
            &context(&f),
        )
        .unwrap();
        assert!(b.id.starts_with("bud_"));
        assert_eq!(b.scope.user.as_deref(), Some("alice"));
        assert_eq!(b.scope.tags["team"], "search");
        assert_eq!((b.mode, b.fail), (Mode::Enforce, FailMode::Closed));
        assert_eq!(b.to_json(false)["scope"], json!({"user": "alice", "tag.team": "search"}));
        assert!(b.to_json(false).get("secret").is_none());
    }

    #[test]
    fn raw_api_keys_are_fingerprinted() {
        let f = KeyFingerprinter::new(b"s");
        let b = Budget::from_spec(
            spec(json!({"name": "k", "scope": {"api_key": "sk-123"}, "metric": "tokens",
                "limit": 2e6, "period": "day"})),
            Origin::Api,
            &context(&f),
        )
        .unwrap();
        assert_eq!(b.scope.api_key, Some(f.fingerprint("sk-123")));
        assert!(!b.to_json(true).to_string().contains("sk-123"));
    }

    #[test]
    fn bad_specs_name_the_field() {
        let f = KeyFingerprinter::new(b"s");
        let cases = [
            (json!({"scope": {"colour": "red"}}), "scope.colour: unknown scope field"),
            (json!({"limit": -5}), "limit: must be a number above 0"),
            (json!({"thresholds": [80, 50]}), "thresholds[1]: 50 is not above 80"),
            (json!({"thresholds": [0]}), "thresholds[0]: 0 is not a percentage"),
            (json!({"period": "fortnight"}), "period: \"fortnight\" is not a period"),
            (json!({"metric": "dollars"}), "metric: \"dollars\""),
            (json!({"mode": "strict"}), "mode: \"strict\""),
            (json!({"webhooks": ["ftp://x/y"]}), "webhooks[0]: scheme \"ftp\" is not allowed"),
            (
                json!({"webhooks": ["http://a.example/", "http://u:p@b.example/"]}),
                "webhooks[1]: must not carry a user name or password",
            ),
            (
                json!({"webhooks": ["http://169.254.169.254/latest"]}),
                "webhooks[0]: 169.254.169.254 is a cloud metadata address",
            ),
            (
                json!({"webhooks": ["http://127.0.0.1:9000/hook"]}),
                "webhooks[0]: 127.0.0.1 is a loopback address",
            ),
            (json!({"timezone": "Mars/Base"}), "timezone: \"Mars/Base\""),
            (json!({"scope": {"user": 7}}), "scope.user: must be a string"),
        ];
        for (patch, expected) in cases {
            let mut base =
                json!({"name": "b", "metric": "cost_usd", "limit": 1.0, "period": "day"});
            for (k, v) in patch.as_object().unwrap() {
                base[k] = v.clone();
            }
            let err = Budget::from_spec(spec(base), Origin::Api, &context(&f)).unwrap_err();
            assert!(err.to_string().starts_with(expected), "{err} vs {expected}");
        }
    }

    #[test]
    fn scope_matches_all_given_dimensions() {
        let scope = Scope {
            user: Some("alice".into()),
            tags: Tags::from([("team".to_owned(), "search".to_owned())]),
            ..Scope::default()
        };
        let mut call = LlmCall::example();
        call.user = Some("alice".into());
        assert!(!scope.matches(&Subject::from(&call)));
        call.tags.insert("team".into(), "search".into());
        assert!(scope.matches(&Subject::from(&call)));
        call.user = Some("bob".into());
        assert!(!scope.matches(&Subject::from(&call)));
        assert!(Scope::default().matches(&Subject::from(&call)));
    }
}
