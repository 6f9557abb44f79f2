//! Why a set of user price entries was rejected. Every message names the
//! entry (its 0-based index in the config's price list) and the field.

/// A user price entry that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("price entry {index}: set one of `model` or `pattern`, not both")]
    BothModelAndPattern { index: usize },

    #[error("price entry {index}: one of `model` or `pattern` is required")]
    NeitherModelNorPattern { index: usize },

    #[error("price entry {index}: `{field}` must not be empty")]
    EmptyField { index: usize, field: &'static str },

    #[error("price entry {index}: `pattern` {pattern:?} is not a valid regex: {reason}")]
    BadPattern { index: usize, pattern: String, reason: regex::Error },

    #[error("price entry {index}: `{field}` must be a finite number >= 0, got {value}")]
    BadPrice { index: usize, field: &'static str, value: f64 },

    #[error(
        "price entry {index}: `effective_from` {value:?} is neither an RFC 3339 timestamp \
         (2025-03-01T00:00:00Z) nor a date (2025-03-01, meaning UTC midnight)"
    )]
    BadEffectiveFrom { index: usize, value: String },

    #[error(
        "price entry {index}: same `{field}` {name:?}, provider and effective_from as entry \
         {first}, so one of the two could never apply"
    )]
    Duplicate { index: usize, first: usize, field: &'static str, name: String },

    #[error("the price entries' patterns are too large to compile together: {reason}")]
    PatternsTooLarge { reason: regex::Error },
}
