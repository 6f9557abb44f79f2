//! OTLP values (`AnyValue`, `KeyValue` lists) into the JSON attribute maps
//! Tally stores, within the caps on what one map holds: the string budget
//! that cuts long values and drops attributes past the count, key and text
//! caps. Spans, their events, resources and log records all convert here.
//! Pure: no I/O.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use serde_json::{Map, Number, Value};

use super::limits::Truncation;
use super::otlp_wire::{KeyValueRef, ResourceRef, ValueRef};
use crate::model::{Attributes, PackedAttributes};

/// Longest string value an attribute map stores whole; prompts and
/// completions can be megabytes.
const MAX_VALUE_BYTES: usize = 8 * 1024;
/// String content one attribute map stores in total.
const MAX_MAP_BYTES: usize = 64 * 1024;
/// Strings up to this length are never cut by the map's total, so that ids
/// and model names survive in a map whose prompts used up the budget.
const SHORT_STRING_BYTES: usize = 256;
/// What long strings leave of a map's text for short strings and keys.
const SHORT_RESERVE_BYTES: usize = 8 * 1024;
/// Longest array an attribute value keeps.
const MAX_ARRAY_ITEMS: usize = 1024;
/// Most attributes one map keeps (a span's, a resource's, an event's, a log
/// record's, and each nested key-value list), as the OpenTelemetry SDKs'
/// default span limits.
pub const MAX_ATTRIBUTES: usize = 128;
/// Longest attribute key kept; an attribute with a longer key is dropped
/// (a cut key could collide with another).
pub const MAX_KEY_BYTES: usize = 256;
/// What a value that is not a string (a number, a boolean, null, an array
/// or list itself) costs of the map's text budget, so that the budget
/// bounds every map, not only its strings.
const SCALAR_BYTES: usize = 8;

/// A resource's attributes, converted as `attributes_to_json` does and
/// marked (`mark_truncated`) when cut; what was cut is added to `cut`.
pub fn resource_attributes(resource: Option<&ResourceRef<'_>>, cut: &mut Truncation) -> Attributes {
    let Some(resource) = resource else {
        return Attributes::new();
    };
    let mut budget = StringBudget::for_attributes();
    let mut attributes = key_values_to_json(resource.attributes.iter().copied(), &mut budget);
    mark_truncated(&mut attributes, budget.cut, resource.dropped_attributes_count);
    cut.add(budget.cut);
    attributes
}

/// OTLP attributes as stored: ints stay JSON integers, non-finite doubles
/// become strings, bytes lowercase hex, arrays arrays and key-value lists
/// objects. A map keeps 128 attributes and 64 KiB of text (keys and
/// strings, nested ones included; other values count 8 bytes each); an
/// attribute whose key is over 256 bytes, or that finds no budget left for
/// its key, is dropped. Strings longer than 8 KiB are cut, and long strings
/// stop 8 KiB short of the map's budget, keeping at least their first 256
/// bytes while it lasts, so that short values after them survive; a cut
/// string ends in `…[truncated N bytes]`. Arrays keep 1024 items (fewer once
/// the budget is spent). Embedding vectors are dropped.
pub fn attributes_to_json(kvs: &[KeyValue]) -> Attributes {
    key_values_to_json(kvs.iter().map(KeyValueRef::of), &mut StringBudget::for_attributes())
}

/// A map attributes are added to: a JSON map, or one being packed.
pub(super) trait AttributeSink {
    /// Adds an attribute, replacing one of the same key.
    fn put(&mut self, key: &str, value: Value);
}

impl AttributeSink for Attributes {
    fn put(&mut self, key: &str, value: Value) {
        self.insert(key.to_owned(), value);
    }
}

/// Marks a map that lost something to the caps: `tally.truncated` when Tally
/// cut anything, `tally.dropped_attributes_count` counting the attributes
/// dropped here and those the sender dropped (`dropped_by_sender`).
pub(super) fn mark_truncated(
    attributes: &mut impl AttributeSink,
    cut: Truncation,
    dropped_by_sender: u32,
) {
    let dropped = cut.attributes + u64::from(dropped_by_sender);
    if dropped > 0 {
        attributes.put("tally.dropped_attributes_count", Value::from(dropped));
    }
    if !cut.is_empty() {
        attributes.put("tally.truncated", Value::Bool(true));
    }
}

/// An attribute map written straight into its stored form, MessagePack,
/// within the caps `key_values_to_json` keeps: the same map, once
/// unpacked, without a `String` per key and value on the way. The keys
/// must be distinct (a later one would replace an earlier one when
/// unpacked, but count against the caps twice).
pub(super) struct PackedMap {
    bytes: Vec<u8>,
    len: u32,
}

/// A MessagePack map with a 32-bit length, set at `finish`.
const MAP32: u8 = 0xdf;

impl PackedMap {
    pub(super) fn of(kvs: &[KeyValueRef<'_>], budget: &mut StringBudget) -> Self {
        // Room for each pair as sent (a cut value is shorter), and marks.
        let sent: usize = kvs
            .iter()
            .map(|kv| match kv.value {
                Some(ValueRef::Str(text)) => kv.key.len() + text.len() + 10,
                _ => kv.key.len() + 16,
            })
            .sum();
        let mut map = PackedMap { bytes: Vec::with_capacity(sent + 96), len: 0 };
        map.bytes.extend_from_slice(&[MAP32, 0, 0, 0, 0]);
        for kv in kvs {
            if is_dropped(kv.key) {
                continue;
            }
            if map.len as usize >= MAX_ATTRIBUTES || !budget.admit(kv.key) {
                budget.cut.attributes += 1;
                continue;
            }
            map.key(kv.key);
            let bytes = &mut map.bytes;
            match kv.value {
                None => rmp::encode::write_nil(bytes).expect(WRITE),
                Some(ValueRef::Str(text)) => {
                    let limit = budget.take(text.len());
                    if text.len() <= limit {
                        rmp::encode::write_str(bytes, text).expect(WRITE);
                    } else {
                        rmp::encode::write_str(bytes, &truncated(text, limit)).expect(WRITE);
                    }
                }
                Some(ValueRef::Int(int)) => {
                    budget.charge(SCALAR_BYTES);
                    rmp::encode::write_sint(bytes, int).expect(WRITE);
                }
                Some(ValueRef::Bool(flag)) => {
                    budget.charge(SCALAR_BYTES);
                    rmp::encode::write_bool(bytes, flag).expect(WRITE);
                }
                // As its JSON would be written (not finite, it is text).
                Some(ValueRef::Double(double)) if double.is_finite() => {
                    budget.charge(SCALAR_BYTES);
                    rmp::encode::write_f64(bytes, double).expect(WRITE);
                }
                Some(other) => {
                    let value = any_value_to_json(other, budget);
                    rmp_serde::encode::write(bytes, &value).expect(WRITE);
                }
            }
        }
        map
    }

    fn key(&mut self, key: &str) {
        rmp::encode::write_str(&mut self.bytes, key).expect(WRITE);
        self.len += 1;
    }

    pub(super) fn finish(mut self) -> PackedAttributes {
        self.bytes[1..5].copy_from_slice(&self.len.to_be_bytes());
        PackedAttributes(self.bytes)
    }
}

impl AttributeSink for PackedMap {
    fn put(&mut self, key: &str, value: Value) {
        self.key(key);
        rmp_serde::encode::write(&mut self.bytes, &value).expect(WRITE);
    }
}

/// Writing MessagePack into a `Vec` fails only when out of memory.
const WRITE: &str = "writing MessagePack into a Vec cannot fail";

/// OpenInference sends whole embedding vectors as attributes
/// (`embedding.embeddings.N.embedding.vector`): thousands of doubles per
/// input that nobody reads from a trace view.
fn is_dropped(key: &str) -> bool {
    key.starts_with("embedding.embeddings.") && key.contains(".vector")
}

/// One OTLP value as JSON, its strings capped by `budget`.
pub(super) fn any_value_to_json(value: ValueRef<'_>, budget: &mut StringBudget) -> Value {
    match value {
        ValueRef::Str(text) => Value::String(budget.keep(text)),
        ValueRef::Empty => {
            budget.charge(SCALAR_BYTES);
            Value::Null
        }
        ValueRef::Bool(flag) => {
            budget.charge(SCALAR_BYTES);
            Value::Bool(flag)
        }
        ValueRef::Int(int) => {
            budget.charge(SCALAR_BYTES);
            Value::from(int)
        }
        ValueRef::Double(double) => {
            budget.charge(SCALAR_BYTES);
            Number::from_f64(double)
                .map_or_else(|| Value::String(double.to_string()), Value::Number)
        }
        ValueRef::Bytes(bytes) => Value::String(budget.keep(&hex::encode(bytes))),
        ValueRef::Array(array) => {
            budget.charge(SCALAR_BYTES);
            let mut items = Vec::new();
            let mut sent = 0;
            for item in array.iter() {
                sent += 1;
                if items.len() < MAX_ARRAY_ITEMS && !budget.is_spent() {
                    items.push(any_value_to_json(item, budget));
                }
            }
            let dropped = sent - items.len();
            if dropped > 0 {
                budget.cut.values += 1;
                items.push(Value::String(format!("…[truncated {dropped} items]")));
            }
            Value::Array(items)
        }
        ValueRef::KvList(list) => {
            budget.charge(SCALAR_BYTES);
            Value::Object(key_values_to_json(list.iter(), budget))
        }
        // Meaningful only in the profiles signal, which says to treat it as
        // absent everywhere else.
        ValueRef::Strindex => Value::Null,
    }
}

pub(super) fn key_values_to_json<'a>(
    kvs: impl IntoIterator<Item = KeyValueRef<'a>>,
    budget: &mut StringBudget,
) -> Map<String, Value> {
    let mut map = Map::new();
    for kv in kvs {
        if is_dropped(kv.key) {
            continue;
        }
        if map.len() >= MAX_ATTRIBUTES || !budget.admit(kv.key) {
            budget.cut.attributes += 1;
            continue;
        }
        let value = kv.value.map_or(Value::Null, |value| any_value_to_json(value, budget));
        map.insert(kv.key.to_owned(), value);
    }
    map
}

/// How much text a conversion may still store, and what it cut.
pub(super) struct StringBudget {
    per_value: usize,
    remaining: usize,
    /// Left to short strings and keys: long strings stop this far short.
    reserve: usize,
    pub(super) cut: Truncation,
}

impl StringBudget {
    pub(super) fn new(per_value: usize, total: usize) -> Self {
        Self { per_value, remaining: total, reserve: 0, cut: Truncation::default() }
    }

    /// The budget of one attribute map (or of all the events of a span).
    pub(super) fn for_attributes() -> Self {
        Self { reserve: SHORT_RESERVE_BYTES, ..Self::new(MAX_VALUE_BYTES, MAX_MAP_BYTES) }
    }

    /// Charges an attribute's key; false when the attribute must be dropped
    /// (the key is too long, or no budget is left for it).
    fn admit(&mut self, key: &str) -> bool {
        if key.len() > MAX_KEY_BYTES || key.len() >= self.remaining {
            return false;
        }
        self.remaining -= key.len();
        true
    }

    fn charge(&mut self, bytes: usize) {
        self.remaining = self.remaining.saturating_sub(bytes);
    }

    fn is_spent(&self) -> bool {
        self.remaining == 0
    }

    /// How much of a text of `len` bytes to keep, charged to the budget.
    fn take(&mut self, len: usize) -> usize {
        let limit = if len <= SHORT_STRING_BYTES {
            len.min(self.remaining)
        } else {
            let beyond_reserve = self.remaining.saturating_sub(self.reserve);
            self.per_value.min(beyond_reserve.max(SHORT_STRING_BYTES.min(self.remaining)))
        };
        let kept = len.min(limit);
        if kept < len {
            self.cut.values += 1;
        }
        self.remaining -= kept;
        limit
    }

    fn keep(&mut self, text: &str) -> String {
        let limit = self.take(text.len());
        if text.len() <= limit { text.to_owned() } else { truncated(text, limit) }
    }
}

/// The first `limit` bytes of `text` (back to a character boundary), and
/// how much was cut.
fn truncated(text: &str, limit: usize) -> String {
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[truncated {} bytes]", &text[..cut], text.len() - cut)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValueList, any_value};

    use super::*;
    use crate::normalize::span::testing::{any, kv};

    #[test]
    fn attributes_read_in_place_convert_as_decoded_ones_do() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        use prost::Message;

        let long = "é".repeat(MAX_VALUE_BYTES);
        let list = KeyValueList { values: vec![kv("a", 1), kv("b", long.as_str())] };
        let kvs = vec![
            kv("gen_ai.request.model", "gpt-4o"),
            kv("count", 3),
            kv("long", long.as_str()),
            kv("embedding.embeddings.0.embedding.vector", "dropped"),
            KeyValue { key: "empty".into(), value: None, ..Default::default() },
            kv("list", any_value::Value::KvlistValue(list)),
            kv(
                "array",
                any_value::Value::ArrayValue(ArrayValue { values: (0..1030).map(any).collect() }),
            ),
            kv("count", 4),
        ];
        let span = Span { attributes: kvs.clone(), ..Default::default() };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let mut read = None;
        crate::normalize::otlp_wire::read_spans(&request, |part| {
            if let crate::normalize::otlp_wire::Part::Span(span) = part {
                read = Some(key_values_to_json(
                    span.attributes.iter().copied(),
                    &mut StringBudget::for_attributes(),
                ));
            }
        })
        .unwrap();
        let read = read.unwrap();
        assert_eq!(read, attributes_to_json(&kvs));
        assert_eq!(read["count"], 4);
        assert!(
            read["long"]
                .as_str()
                .unwrap()
                .ends_with(&format!("[truncated {} bytes]", long.len() - MAX_VALUE_BYTES))
        );
        assert_eq!(read["array"][1024], "…[truncated 6 items]");
        assert!(!read.contains_key("embedding.embeddings.0.embedding.vector"));
    }

    #[test]
    fn packed_maps_unpack_to_the_maps_conversion_makes_within_the_same_caps() {
        let list = KeyValueList { values: vec![kv("a", 1), kv("b", "two")] };
        let mut kvs = vec![
            kv("s", "text"),
            kv("b", false),
            kv("i", -7),
            kv("big", i32::MAX),
            kv("d", 1.5),
            kv("nan", f64::NAN),
            kv("bytes", any_value::Value::BytesValue(vec![0xde, 0xad])),
            kv("list", any_value::Value::KvlistValue(list)),
            kv(
                "array",
                any_value::Value::ArrayValue(ArrayValue { values: (0..1030).map(any).collect() }),
            ),
            KeyValue { key: "none".into(), value: None, ..Default::default() },
            KeyValue {
                key: "empty".into(),
                value: Some(AnyValue { value: None }),
                ..Default::default()
            },
            kv("embedding.embeddings.0.embedding.vector", "dropped"),
            kv(&"k".repeat(MAX_KEY_BYTES + 1), "long key"),
        ];
        kvs.extend((0..9).map(|i| kv(&format!("p{i}"), "é".repeat(5000))));
        kvs.extend((0..150).map(|i| kv(&format!("n{i:03}"), i)));
        let kvs: Vec<KeyValueRef<'_>> = kvs.iter().map(KeyValueRef::of).collect();
        let mut map_budget = StringBudget::for_attributes();
        let mut map = key_values_to_json(kvs.iter().copied(), &mut map_budget);
        let mut packed_budget = StringBudget::for_attributes();
        let mut packed = PackedMap::of(&kvs, &mut packed_budget);
        assert_eq!(packed_budget.cut, map_budget.cut);
        assert!(map_budget.cut.attributes > 0 && map_budget.cut.values > 0);
        mark_truncated(&mut map, map_budget.cut, 3);
        mark_truncated(&mut packed, packed_budget.cut, 3);
        assert_eq!(packed.finish().unpack(), map);
        assert_eq!(map.len(), MAX_ATTRIBUTES + 2);
    }

    #[test]
    fn attribute_conversion() {
        let list = KeyValueList { values: vec![kv("a", 1), kv("b", "two")] };
        let array = ArrayValue { values: vec![any(1), any("x"), any(true), any(0.5)] };
        let attributes = attributes_to_json(&[
            kv("s", "text"),
            kv("b", false),
            kv("i", -7),
            kv("d", 1.5),
            kv("nan", f64::NAN),
            kv("inf", f64::NEG_INFINITY),
            kv("bytes", any_value::Value::BytesValue(vec![0xde, 0xad, 0xbe, 0xef])),
            kv("list", any_value::Value::KvlistValue(list)),
            kv("array", any_value::Value::ArrayValue(array)),
            KeyValue { key: "empty".to_owned(), value: None, ..Default::default() },
        ]);
        let expected = serde_json::json!({
            "s": "text", "b": false, "i": -7, "d": 1.5, "nan": "NaN", "inf": "-inf",
            "bytes": "deadbeef", "list": {"a": 1, "b": "two"}, "array": [1, "x", true, 0.5],
            "empty": null,
        });
        assert_eq!(Value::Object(attributes), expected);
    }

    #[test]
    fn attribute_sizes_are_capped() {
        // 3-byte characters: 8 KiB is not a character boundary.
        let long = "€".repeat(3000);
        let attributes = attributes_to_json(&[kv("prompt", long.as_str())]);
        let kept = attributes["prompt"].as_str().unwrap();
        assert_eq!(kept, format!("{}…[truncated 810 bytes]", "€".repeat(2730)));

        // Nine long values: seven fill the 64 KiB but for the reserve of
        // short values, the others keep a short prefix, and short values
        // after them stay whole.
        let mut kvs: Vec<KeyValue> =
            (0..9).map(|i| kv(&format!("p{i}"), "x".repeat(10_000))).collect();
        kvs.push(kv("gen_ai.request.model", "gpt-4o"));
        let attributes = attributes_to_json(&kvs);
        let truncated_at = |key: &str| {
            let text = attributes[key].as_str().unwrap();
            text.find('…').unwrap_or(text.len())
        };
        assert_eq!(truncated_at("p0"), 8192);
        assert_eq!(truncated_at("p5"), 8192);
        assert_eq!(truncated_at("p6"), 8178, "stops at the reserve for short values");
        assert_eq!(truncated_at("p7"), 256);
        assert_eq!(truncated_at("p8"), 256);
        assert_eq!(attributes["gen_ai.request.model"], "gpt-4o");

        let array = ArrayValue { values: (0..1030).map(any).collect() };
        let attributes = attributes_to_json(&[kv("array", any_value::Value::ArrayValue(array))]);
        let items = attributes["array"].as_array().unwrap();
        assert_eq!(items.len(), 1025);
        assert_eq!(items[1024], "…[truncated 6 items]");
    }

    /// The text a stored map holds: keys and strings, nested ones included.
    fn text_bytes(value: &Value) -> usize {
        match value {
            Value::String(text) => text.len(),
            Value::Array(items) => items.iter().map(text_bytes).sum(),
            Value::Object(map) => map.iter().map(|(k, v)| k.len() + text_bytes(v)).sum(),
            _ => 0,
        }
    }

    #[test]
    fn attribute_text_is_capped_nested_values_too() {
        // Short values under long keys after long values: the text budget
        // drops what no longer fits, so the map stays within 64 KiB.
        let mut kvs: Vec<KeyValue> =
            (0..5).map(|i| kv(&format!("p{i}"), "x".repeat(10_000))).collect();
        kvs.extend((0..120).map(|i| kv(&format!("{i:0>250}"), "v".repeat(250).as_str())));
        let attributes = attributes_to_json(&kvs);
        // 64 KiB, plus the marks of what was cut.
        assert!(text_bytes(&Value::Object(attributes.clone())) <= MAX_MAP_BYTES + 200);
        assert!(attributes.len() < 125);
        assert!(attributes.get("tally.truncated").is_none(), "marked only by its callers");

        // Nested arrays and lists are charged too.
        let array = || {
            any_value::Value::ArrayValue(ArrayValue {
                values: (0..1024).map(|_| any("x".repeat(200).as_str())).collect(),
            })
        };
        let kvs: Vec<KeyValue> = (0..100).map(|i| kv(&format!("a{i}"), array())).collect();
        let attributes = attributes_to_json(&kvs);
        let stored = serde_json::to_string(&attributes).unwrap();
        assert!(stored.len() < 2 * MAX_MAP_BYTES, "{} bytes stored", stored.len());
    }
}
