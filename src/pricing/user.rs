//! User price entries from the config file: their serde shape, their
//! validation, and the checked form the table matches against.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveTime};

use super::catalog::lowercased;
use super::cost::Price;
use super::error::PricingError;

/// A user price from the config file (TOML), per 1 M tokens for readability.
///
/// ```toml
/// [[prices]]
/// model = "gpt-4o"                 # exact model name, or:
/// # pattern = "ft:gpt-4o-.*"       # regex over the whole model name
/// provider = "azure"               # optional: only for this provider
/// input_per_mtok = 2.0
/// output_per_mtok = 8.0
/// cache_read_per_mtok = 1.0        # optional, default: input price
/// effective_from = 2025-03-01      # optional, default: always
/// ```
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserPrice {
    /// Exact model name. Set exactly one of `model` and `pattern`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Regular expression (Rust `regex` syntax) that must match the whole
    /// model name; it is anchored for you. Use `(?i)` for case-insensitivity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Only for calls from this provider (compared case-insensitively).
    /// Calls that carry no provider match it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// USD per million uncached input tokens.
    pub input_per_mtok: f64,
    /// USD per million output tokens.
    pub output_per_mtok: f64,
    /// USD per million input tokens read from the prompt cache; default: the
    /// input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_mtok: Option<f64>,
    /// USD per million input tokens written to the prompt cache; default: the
    /// input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
    /// USD per million reasoning tokens; default: the output price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_per_mtok: Option<f64>,
    /// From when the price applies: RFC 3339 (`2025-03-01T12:00:00Z`) or a
    /// date (`2025-03-01`, UTC midnight), quoted or as a TOML date. Before it
    /// the next matching rule applies; absent: always.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "date_or_string::deserialize"
    )]
    pub effective_from: Option<String>,
}

/// What a user entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Selector {
    Model(String),
    Pattern(String),
}

/// A validated user entry.
#[derive(Debug, Clone)]
pub(super) struct UserEntry {
    pub index: usize,
    pub selector: Selector,
    pub provider: Option<String>,
    pub price: Price,
    /// Unix milliseconds from which the entry applies; `None`: always.
    pub effective_ms: Option<i64>,
    /// `config:<index>:<model or pattern>@<effective_from or always>`.
    pub price_id: String,
}

impl UserEntry {
    pub fn in_effect(&self, at_ms: i64) -> bool {
        self.effective_ms.is_none_or(|from| from <= at_ms)
    }

    /// How well the entry's provider fits the record's: `None` when it does
    /// not apply, else a rank where higher is more specific (an entry naming
    /// the record's provider beats one naming none, which beats one naming a
    /// provider when the record has none).
    pub fn provider_fit(&self, record_provider: Option<&str>) -> Option<u8> {
        match (self.provider.as_deref(), record_provider) {
            (None, _) => Some(1),
            (Some(_), None) => Some(0),
            (Some(own), Some(record)) => own.eq_ignore_ascii_case(record).then_some(2),
        }
    }
}

/// Validates `prices` in config order; the first bad entry is reported.
pub(super) fn validate(prices: &[UserPrice]) -> Result<Vec<UserEntry>, PricingError> {
    let mut entries: Vec<UserEntry> = Vec::with_capacity(prices.len());
    // (selector, lowercased provider, effective_ms) → first entry index.
    let mut first_with_key: HashMap<(Selector, Option<String>, Option<i64>), usize> =
        HashMap::new();
    for (index, price) in prices.iter().enumerate() {
        let entry = validate_one(index, price)?;
        let key = (
            entry.selector.clone(),
            entry.provider.as_deref().map(|provider| lowercased(provider).into_owned()),
            entry.effective_ms,
        );
        if let Some(&first) = first_with_key.get(&key) {
            let (field, name) = match &entry.selector {
                Selector::Model(model) => ("model", model.clone()),
                Selector::Pattern(pattern) => ("pattern", pattern.clone()),
            };
            return Err(PricingError::Duplicate { index, first, field, name });
        }
        first_with_key.insert(key, index);
        entries.push(entry);
    }
    Ok(entries)
}

fn validate_one(index: usize, price: &UserPrice) -> Result<UserEntry, PricingError> {
    let selector = match (&price.model, &price.pattern) {
        (Some(_), Some(_)) => return Err(PricingError::BothModelAndPattern { index }),
        (None, None) => return Err(PricingError::NeitherModelNorPattern { index }),
        (Some(model), None) => {
            if model.is_empty() {
                return Err(PricingError::EmptyField { index, field: "model" });
            }
            Selector::Model(model.clone())
        }
        (None, Some(pattern)) => {
            if pattern.is_empty() {
                return Err(PricingError::EmptyField { index, field: "pattern" });
            }
            // Compile the pattern on its own first: wrapped in anchors, an
            // unbalanced `a)|(b` would compile and mean something else.
            if let Err(reason) = regex::Regex::new(pattern) {
                return Err(PricingError::BadPattern { index, pattern: pattern.clone(), reason });
            }
            Selector::Pattern(pattern.clone())
        }
    };
    if price.provider.as_deref() == Some("") {
        return Err(PricingError::EmptyField { index, field: "provider" });
    }

    let per_token = |field: &'static str, per_mtok: f64| {
        if per_mtok.is_finite() && per_mtok >= 0.0 {
            Ok(per_mtok / 1_000_000.0)
        } else {
            Err(PricingError::BadPrice { index, field, value: per_mtok })
        }
    };
    let optional_per_token = |field: &'static str, per_mtok: Option<f64>| {
        per_mtok.map(|per_mtok| per_token(field, per_mtok)).transpose()
    };
    let unit_price = Price {
        input: per_token("input_per_mtok", price.input_per_mtok)?,
        output: per_token("output_per_mtok", price.output_per_mtok)?,
        cache_read: optional_per_token("cache_read_per_mtok", price.cache_read_per_mtok)?,
        cache_write: optional_per_token("cache_write_per_mtok", price.cache_write_per_mtok)?,
        reasoning: optional_per_token("reasoning_per_mtok", price.reasoning_per_mtok)?,
    };

    let effective_ms = match &price.effective_from {
        None => None,
        Some(value) => match parse_effective_from(value) {
            Some(ms) => Some(ms),
            None => {
                return Err(PricingError::BadEffectiveFrom { index, value: value.clone() });
            }
        },
    };

    let name = match &selector {
        Selector::Model(name) | Selector::Pattern(name) => name,
    };
    let price_id =
        format!("config:{index}:{name}@{}", price.effective_from.as_deref().unwrap_or("always"));
    Ok(UserEntry {
        index,
        selector,
        provider: price.provider.clone(),
        price: unit_price,
        effective_ms,
        price_id,
    })
}

/// Unix milliseconds of an RFC 3339 timestamp or of UTC midnight of a
/// `YYYY-MM-DD` date.
fn parse_effective_from(value: &str) -> Option<i64> {
    if let Ok(timestamp) = DateTime::parse_from_rfc3339(value) {
        return Some(timestamp.timestamp_millis());
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
    Some(date.and_time(NaiveTime::MIN).and_utc().timestamp_millis())
}

/// `effective_from` as a string, whether the config quotes it or writes a
/// TOML date: the `toml` crate hands a date to serde as a one-entry map under
/// a private key, which a plain `Option<String>` would refuse.
mod date_or_string {
    use std::fmt;

    use serde::de::{self, Deserializer, MapAccess, Visitor};

    /// The key under which `toml` (via `toml_datetime`) passes a date.
    const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";
    const EXPECTING: &str = "an RFC 3339 timestamp or a YYYY-MM-DD date";

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        deserializer.deserialize_option(OptionalDate)
    }

    struct OptionalDate;

    impl<'de> Visitor<'de> for OptionalDate {
        type Value = Option<String>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str(EXPECTING)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(Date).map(Some)
        }
    }

    struct Date;

    impl<'de> Visitor<'de> for Date {
        type Value = String;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str(EXPECTING)
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
            Ok(value.to_owned())
        }

        fn visit_string<E: de::Error>(self, value: String) -> Result<String, E> {
            Ok(value)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
            let not_a_date = || de::Error::invalid_type(de::Unexpected::Map, &EXPECTING);
            let Some(key) = map.next_key::<String>()? else {
                return Err(not_a_date());
            };
            if key != TOML_DATETIME_KEY {
                return Err(not_a_date());
            }
            let value = map.next_value::<String>()?;
            if map.next_key::<de::IgnoredAny>()?.is_some() {
                return Err(not_a_date());
            }
            Ok(value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_price(model: &str) -> UserPrice {
        UserPrice {
            model: Some(model.to_owned()),
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
            ..UserPrice::default()
        }
    }

    fn error_message(prices: &[UserPrice]) -> String {
        match validate(prices) {
            Ok(_) => panic!("{prices:?} should be rejected"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn prices_are_converted_from_per_million_to_per_token() {
        let entries = validate(&[UserPrice {
            cache_read_per_mtok: Some(1.25),
            reasoning_per_mtok: Some(10.0),
            ..model_price("m")
        }])
        .expect("valid");
        assert_eq!(
            entries[0].price,
            Price {
                input: 1e-6,
                output: 2e-6,
                cache_read: Some(1.25e-6),
                cache_write: None,
                reasoning: Some(1e-5),
            }
        );
        assert_eq!(entries[0].effective_ms, None);
        assert_eq!(entries[0].price_id, "config:0:m@always");
    }

    #[test]
    fn effective_from_accepts_rfc3339_and_dates() {
        assert_eq!(parse_effective_from("2025-03-01"), Some(1_740_787_200_000));
        assert_eq!(parse_effective_from("2025-03-01T00:00:00Z"), Some(1_740_787_200_000));
        assert_eq!(parse_effective_from("2025-03-01T02:00:00.5+02:00"), Some(1_740_787_200_500));
        assert_eq!(parse_effective_from("2025-03-01T00:00:00"), None);
        assert_eq!(parse_effective_from("March 1st"), None);
        assert_eq!(parse_effective_from("2025-02-30"), None);
    }

    #[test]
    fn both_or_neither_model_and_pattern_is_rejected() {
        let both = UserPrice { pattern: Some("m.*".into()), ..model_price("m") };
        assert_eq!(
            error_message(&[model_price("a"), both]),
            "price entry 1: set one of `model` or `pattern`, not both"
        );
        let neither = UserPrice { model: None, ..model_price("m") };
        assert_eq!(
            error_message(&[neither]),
            "price entry 0: one of `model` or `pattern` is required"
        );
    }

    #[test]
    fn empty_names_are_rejected() {
        assert_eq!(error_message(&[model_price("")]), "price entry 0: `model` must not be empty");
        let no_provider = UserPrice { provider: Some(String::new()), ..model_price("m") };
        assert_eq!(error_message(&[no_provider]), "price entry 0: `provider` must not be empty");
    }

    #[test]
    fn bad_regex_names_the_entry_and_the_reason() {
        let bad = UserPrice { model: None, pattern: Some("gpt-(4o".into()), ..model_price("m") };
        let message = error_message(&[model_price("a"), model_price("b"), bad]);
        assert!(
            message.starts_with("price entry 2: `pattern` \"gpt-(4o\" is not a valid regex: "),
            "{message}"
        );
        assert!(message.contains("unclosed group"), "{message}");

        // Balanced only once wrapped in the anchoring group: still rejected.
        let escapes_group =
            UserPrice { model: None, pattern: Some("a)|(b".into()), ..model_price("m") };
        assert!(error_message(&[escapes_group]).starts_with("price entry 0: `pattern` \"a)|(b\""));
    }

    #[test]
    fn negative_and_non_finite_prices_are_rejected() {
        let negative = UserPrice { output_per_mtok: -1.0, ..model_price("m") };
        assert_eq!(
            error_message(&[negative]),
            "price entry 0: `output_per_mtok` must be a finite number >= 0, got -1"
        );
        let nan_cache = UserPrice { cache_write_per_mtok: Some(f64::NAN), ..model_price("m") };
        assert_eq!(
            error_message(&[model_price("a"), nan_cache]),
            "price entry 1: `cache_write_per_mtok` must be a finite number >= 0, got NaN"
        );
        let infinite = UserPrice { reasoning_per_mtok: Some(f64::INFINITY), ..model_price("m") };
        assert!(error_message(&[infinite]).contains("`reasoning_per_mtok`"));
    }

    #[test]
    fn bad_effective_from_is_rejected() {
        let bad = UserPrice { effective_from: Some("2025-13-01".into()), ..model_price("m") };
        assert_eq!(
            error_message(&[bad]),
            "price entry 0: `effective_from` \"2025-13-01\" is neither an RFC 3339 timestamp \
             (2025-03-01T00:00:00Z) nor a date (2025-03-01, meaning UTC midnight)"
        );
    }

    #[test]
    fn duplicates_are_rejected() {
        let dated = |model: &str, provider: Option<&str>, from: &str| UserPrice {
            provider: provider.map(str::to_owned),
            effective_from: Some(from.to_owned()),
            ..model_price(model)
        };
        // Same instant spelled two ways, provider in another case.
        let message = error_message(&[
            dated("m", Some("azure"), "2025-03-01"),
            dated("m", None, "2025-03-01"),
            dated("m", Some("Azure"), "2025-03-01T00:00:00Z"),
        ]);
        assert_eq!(
            message,
            "price entry 2: same `model` \"m\", provider and effective_from as entry 0, \
             so one of the two could never apply"
        );
        // A different date, provider or selector kind is not a duplicate.
        let pattern_m = UserPrice { model: None, pattern: Some("m".into()), ..model_price("x") };
        validate(&[
            dated("m", Some("azure"), "2025-03-01"),
            dated("m", Some("azure"), "2025-04-01"),
            dated("m", Some("openai"), "2025-03-01"),
            model_price("m"),
            pattern_m,
        ])
        .expect("distinct entries");
    }

    #[test]
    fn deserializes_from_json_and_rejects_unknown_fields() {
        let price: UserPrice = serde_json::from_str(
            r#"{"pattern": "^ft:.*$", "input_per_mtok": 3, "output_per_mtok": 6,
                "effective_from": "2025-01-01"}"#,
        )
        .expect("valid json");
        assert_eq!(price.pattern.as_deref(), Some("^ft:.*$"));
        assert_eq!(price.effective_from.as_deref(), Some("2025-01-01"));
        assert_eq!(price.model, None);

        let null_date: UserPrice = serde_json::from_str(
            r#"{"model": "m", "input_per_mtok": 1, "output_per_mtok": 1, "effective_from": null}"#,
        )
        .expect("valid json");
        assert_eq!(null_date.effective_from, None);

        let unknown = serde_json::from_str::<UserPrice>(
            r#"{"model": "m", "input_per_mtok": 1, "output_per_mtok": 1, "input_per_token": 1}"#,
        )
        .expect_err("unknown field");
        assert!(unknown.to_string().contains("unknown field `input_per_token`"), "{unknown}");

        let not_a_date = serde_json::from_str::<UserPrice>(
            r#"{"model": "m", "input_per_mtok": 1, "output_per_mtok": 1, "effective_from": 20250101}"#,
        )
        .expect_err("number is not a date");
        assert!(not_a_date.to_string().contains("YYYY-MM-DD"), "{not_a_date}");
    }

    #[test]
    fn toml_dates_quoted_or_bare_are_accepted() {
        #[derive(Debug, serde::Deserialize)]
        struct Config {
            prices: Vec<UserPrice>,
        }
        let config: Config = toml::from_str(
            r#"
            [[prices]]
            model = "a"
            input_per_mtok = 1.0
            output_per_mtok = 2.0
            effective_from = 2025-03-01

            [[prices]]
            model = "b"
            input_per_mtok = 1.0
            output_per_mtok = 2.0
            effective_from = 2025-03-01T12:00:00Z

            [[prices]]
            model = "c"
            input_per_mtok = 1.0
            output_per_mtok = 2.0
            effective_from = "2025-03-01"

            [[prices]]
            model = "d"
            input_per_mtok = 1.0
            output_per_mtok = 2.0
            "#,
        )
        .expect("valid toml");
        let dates: Vec<_> =
            config.prices.iter().map(|price| price.effective_from.as_deref()).collect();
        assert_eq!(
            dates,
            [Some("2025-03-01"), Some("2025-03-01T12:00:00Z"), Some("2025-03-01"), None]
        );
        let entries = validate(&config.prices).expect("valid entries");
        assert_eq!(entries[1].effective_ms, Some(1_740_830_400_000));
        assert_eq!(entries[1].price_id, "config:1:b@2025-03-01T12:00:00Z");

        let round_trip: Config = toml::from_str(&format!(
            "[[prices]]\n{}",
            toml::to_string(&config.prices[0]).expect("serializes")
        ))
        .expect("round trip");
        assert_eq!(round_trip.prices[0], config.prices[0]);
    }
}
