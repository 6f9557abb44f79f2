//! Lenient JSON value types for usage reports: each accepts the spellings
//! real gateways send and fails with a message that says what it expected.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::limits::{clip, shown};
use crate::time::parse_instant;

/// A string field that also accepts numbers (GPUStack's collector sends integer ids for
/// users, routes and clusters).
#[derive(Debug, Clone, PartialEq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        TextRef::<'de>::deserialize(deserializer).map(|text| Text(text.0.into_owned()))
    }
}

/// A string field that also accepts numbers, borrowed from the request
/// body when it needs no unescaping.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRef<'a>(pub Cow<'a, str>);

impl<'a> TextRef<'a> {
    /// The text, if it borrows from the body (so outlives this value).
    pub fn borrowed(&self) -> Option<&'a str> {
        match self.0 {
            Cow::Borrowed(text) => Some(text),
            Cow::Owned(_) => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for TextRef<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextRefVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextRefVisitor<'a> {
            type Value = TextRef<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TextRef(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextRef(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TextRef(Cow::Owned(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(TextRef(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(TextRef(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(TextRef(Cow::Owned(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(TextRef(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_any(TextRefVisitor(std::marker::PhantomData))
    }
}

/// Largest count one report may carry (a trillion): far above any real
/// request, far enough below `i64::MAX` that sums over billions of reports
/// cannot overflow.
pub const MAX_COUNT: u64 = 1_000_000_000_000;

/// A token or byte count: a non-negative integer up to `MAX_COUNT` (or a
/// string of digits, as OTLP/JSON encodes 64-bit integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub u64);

fn checked_count<E: de::Error>(v: u64) -> Result<Count, E> {
    if v > MAX_COUNT {
        return Err(E::custom(format_args!("is too large: {v} (at most {MAX_COUNT})")));
    }
    Ok(Count(v))
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl Visitor<'_> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                checked_count(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                match u64::try_from(v) {
                    Ok(v) => checked_count(v),
                    Err(_) => {
                        Err(E::custom(format_args!("must be a non-negative integer, got {v}")))
                    }
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                if v.fract() == 0.0 && v >= 0.0 && v < u64::MAX as f64 {
                    checked_count(v as u64)
                } else if v >= u64::MAX as f64 {
                    Err(E::custom(format_args!("is too large: {} (at most {MAX_COUNT})", shown(v))))
                } else {
                    Err(E::custom(format_args!("must be a non-negative integer, got {}", shown(v))))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                match v.parse::<u64>() {
                    Ok(n) => checked_count(n),
                    Err(_) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => Err(
                        E::custom(format_args!("is too large: {} (at most {MAX_COUNT})", clip(v))),
                    ),
                    Err(_) => Err(E::custom(format_args!(
                        "must be a non-negative integer, got {:?}",
                        clip(v)
                    ))),
                }
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

/// A non-negative finite number (durations, costs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Amount(pub f64);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AmountVisitor;
        impl Visitor<'_> for AmountVisitor {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
                self.visit_f64(v as f64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Amount, E> {
                if v.is_finite() && v >= 0.0 {
                    Ok(Amount(v))
                } else {
                    Err(E::custom(format_args!("must be a non-negative number, got {}", shown(v))))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
                match v.parse::<f64>() {
                    Ok(n) => self.visit_f64(n),
                    Err(_) => Err(E::custom(format_args!(
                        "must be a non-negative number, got {:?}",
                        clip(v)
                    ))),
                }
            }
        }
        deserializer.deserialize_any(AmountVisitor)
    }
}

/// An instant: unix milliseconds or an RFC 3339 string. Zero milliseconds
/// mean "absent", as GPUStack-style legacy gateways send it; a negative instant
/// is kept, for the caller's bounds (`limits::check_time_ms`) to refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant(pub Option<i64>);

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InstantVisitor;
        impl Visitor<'_> for InstantVisitor {
            type Value = Instant;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("unix milliseconds or an RFC 3339 timestamp")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Instant, E> {
                // Past i64::MAX saturates, for the caller's bounds to refuse.
                let ms = i64::try_from(v).unwrap_or(i64::MAX);
                Ok(Instant((ms != 0).then_some(ms)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Instant, E> {
                Ok(Instant((v != 0).then_some(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Instant, E> {
                if v.is_nan() {
                    return Err(E::custom("must be unix milliseconds or an RFC 3339 timestamp"));
                }
                Ok(Instant((v != 0.0).then_some(v as i64)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Instant, E> {
                parse_instant(v).map(|ms| Instant(Some(ms))).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(InstantVisitor)
    }
}

/// A string map whose values may also be numbers or booleans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagMap(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for TagMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TagVisitor;
        impl<'de> Visitor<'de> for TagVisitor {
            type Value = TagMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TagMap, A::Error> {
                let mut tags = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, Text>()? {
                    tags.insert(key, value.0);
                }
                Ok(TagMap(tags))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TagMap, E> {
                Ok(TagMap::default())
            }
        }
        deserializer.deserialize_any(TagVisitor)
    }
}
