//! OTLP trace exports read in place: spans, their attributes and events as
//! views into the request's protobuf bytes, checked as they are read, so
//! that a span's strings are copied once, into the record, and nothing is
//! allocated per attribute on the way. Decoded messages (OTLP/JSON, the
//! logs and metrics signals) are viewed the same way, so that one
//! conversion serves both. Pure: no I/O.
//!
//! Read as prost reads: unknown fields (groups too) are skipped, a scalar
//! or string sent twice keeps the last, and a field of the wrong wire type
//! is an error. Unlike prost, a message field sent twice is not merged
//! (the last one is kept): no encoder splits a message that way.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

/// Deepest nesting of arrays and key-value lists read (the depth prost
/// allows messages to nest).
const MAX_DEPTH: u32 = 100;

/// Why a request is not a valid protobuf export: in which message, and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what}: {problem}")]
pub struct WireError {
    what: &'static str,
    problem: Problem,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum Problem {
    #[error("a varint is cut short or longer than 10 bytes")]
    Varint,
    #[error("a field says {wanted} bytes follow, {left} do")]
    Short { wanted: u64, left: usize },
    #[error("bad field number in tag {0}")]
    FieldNumber(u64),
    #[error("field {number} has wire type {wire}")]
    WireType { number: u32, wire: &'static str },
    #[error("field {number} has wire type {wire}, which OTLP never uses")]
    Unused { number: u32, wire: u64 },
    #[error("group {0} is not closed, or groups nest too deep")]
    Group(u32),
    #[error("a string is not UTF-8: {0}")]
    Utf8(std::str::Utf8Error),
    #[error("arrays and lists nest too deep")]
    Deep,
}

impl WireError {
    fn at(what: &'static str, problem: Problem) -> Self {
        WireError { what, problem }
    }
}

/// One field's payload, by wire type.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    /// Read past: no field Tally keeps is 32-bit.
    Fixed32,
}

impl Payload<'_> {
    fn wire_type(&self) -> &'static str {
        match self {
            Payload::Varint(_) => "varint",
            Payload::Fixed64(_) => "64-bit",
            Payload::Bytes(_) => "length-delimited",
            Payload::Fixed32 => "32-bit",
        }
    }
}

/// The fields of one message, in the order sent.
struct Fields<'a> {
    rest: &'a [u8],
    /// The message's name, for errors.
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn of(bytes: &'a [u8], what: &'static str) -> Self {
        Fields { rest: bytes, what }
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        match self.rest.first() {
            Some(&byte) if byte < 0x80 => {
                self.rest = &self.rest[1..];
                Ok(u64::from(byte))
            }
            _ => self.long_varint(),
        }
    }

    fn long_varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            // The tenth byte holds the 64th bit only.
            if i == 9 && byte > 1 {
                break;
            }
            if byte < 0x80 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(WireError::at(self.what, Problem::Varint))
    }

    #[inline]
    fn take(&mut self, len: u64) -> Result<&'a [u8], WireError> {
        match usize::try_from(len) {
            Ok(len) if len <= self.rest.len() => {
                let (taken, rest) = self.rest.split_at(len);
                self.rest = rest;
                Ok(taken)
            }
            _ => {
                let problem = Problem::Short { wanted: len, left: self.rest.len() };
                Err(WireError::at(self.what, problem))
            }
        }
    }

    /// The payload of a length-delimited field whose one-byte `tag` comes
    /// next; `None` when another does.
    #[inline]
    fn lone(&mut self, tag: u8) -> Option<Result<&'a [u8], WireError>> {
        let (&first, rest) = self.rest.split_first()?;
        if first != tag {
            return None;
        }
        self.rest = rest;
        Some(self.varint().and_then(|len| self.take(len)))
    }

    fn wrong(&self, number: u32, payload: Payload<'_>) -> WireError {
        WireError::at(self.what, Problem::WireType { number, wire: payload.wire_type() })
    }

    /// The next field, past any groups; `None` at the end.
    #[inline]
    fn field(&mut self) -> Result<Option<(u32, Payload<'a>)>, WireError> {
        while !self.rest.is_empty() {
            let (number, wire) = self.tag()?;
            if wire == 3 {
                self.skip_group(number)?;
                continue;
            }
            return self.payload(number, wire).map(Some);
        }
        Ok(None)
    }

    #[inline]
    fn tag(&mut self) -> Result<(u32, u64), WireError> {
        let tag = self.varint()?;
        match u32::try_from(tag) {
            Ok(key) if key >> 3 > 0 => Ok((key >> 3, tag & 7)),
            _ => Err(WireError::at(self.what, Problem::FieldNumber(tag))),
        }
    }

    /// Reads past a (deprecated) group whose start tag was just read, and
    /// any groups inside it.
    fn skip_group(&mut self, number: u32) -> Result<(), WireError> {
        let mut open = vec![number];
        while let Some(&innermost) = open.last() {
            if open.len() > MAX_DEPTH as usize || self.rest.is_empty() {
                return Err(WireError::at(self.what, Problem::Group(number)));
            }
            match self.tag()? {
                (inner, 3) => open.push(inner),
                (end, 4) if end == innermost => {
                    open.pop();
                }
                (inner, wire) => {
                    self.payload(inner, wire)?;
                }
            }
        }
        Ok(())
    }

    #[inline]
    fn payload(&mut self, number: u32, wire: u64) -> Result<(u32, Payload<'a>), WireError> {
        let payload = match wire {
            0 => Payload::Varint(self.varint()?),
            1 => Payload::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("took 8 bytes"),
            )),
            2 => {
                let len = self.varint()?;
                Payload::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Payload::Fixed32
            }
            wire => {
                let problem = Problem::Unused { number, wire };
                return Err(WireError::at(self.what, problem));
            }
        };
        Ok((number, payload))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Payload<'a>), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let field = self.field();
        if field.is_err() {
            self.rest = &[];
        }
        field.transpose()
    }
}

/// `bytes` as text. Checked with SIMD (messages are most of a span's
/// bytes); only a failure is checked again, for the place it fails at.
#[inline]
fn text<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, WireError> {
    simdutf8::basic::from_utf8(bytes)
        .or_else(|_| std::str::from_utf8(bytes).map_err(|e| WireError::at(what, Problem::Utf8(e))))
}

/// An OTLP value (`AnyValue`) as sent.
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    /// An `AnyValue` with none of its values set.
    Empty,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(Items<'a>),
    KvList(Pairs<'a>),
    /// A string table index, meaningful only in the profiles signal.
    Strindex,
}

impl<'a> ValueRef<'a> {
    pub fn of(value: &'a AnyValue) -> Self {
        match &value.value {
            None => ValueRef::Empty,
            Some(any_value::Value::StringValue(text)) => ValueRef::Str(text),
            Some(any_value::Value::BoolValue(flag)) => ValueRef::Bool(*flag),
            Some(any_value::Value::IntValue(int)) => ValueRef::Int(*int),
            Some(any_value::Value::DoubleValue(double)) => ValueRef::Double(*double),
            Some(any_value::Value::BytesValue(bytes)) => ValueRef::Bytes(bytes),
            Some(any_value::Value::ArrayValue(array)) => {
                ValueRef::Array(Items::Decoded(&array.values))
            }
            Some(any_value::Value::KvlistValue(list)) => {
                ValueRef::KvList(Pairs::Decoded(&list.values))
            }
            Some(any_value::Value::StringValueStrindex(_)) => ValueRef::Strindex,
        }
    }

    /// An `AnyValue` message, its arrays and lists checked to `depth`.
    fn read(bytes: &'a [u8], depth: u32) -> Result<Self, WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError::at("AnyValue", Problem::Deep));
        }
        let mut fields = Fields::of(bytes, "AnyValue");
        // A string, the value most sent, alone as encoders write it.
        if let Some(string) = fields.lone(0x0a)
            && fields.rest.is_empty()
        {
            return Ok(ValueRef::Str(text(string?, "AnyValue.string_value")?));
        }
        let mut fields = Fields::of(bytes, "AnyValue");
        let mut value = ValueRef::Empty;
        while let Some(field) = fields.next() {
            value = match field? {
                (1, Payload::Bytes(b)) => ValueRef::Str(text(b, "AnyValue.string_value")?),
                (2, Payload::Varint(v)) => ValueRef::Bool(v != 0),
                (3, Payload::Varint(v)) => ValueRef::Int(v as i64),
                (4, Payload::Fixed64(v)) => ValueRef::Double(f64::from_bits(v)),
                (5, Payload::Bytes(b)) => {
                    for item in Fields::of(b, "ArrayValue") {
                        match item? {
                            (1, Payload::Bytes(item)) => {
                                ValueRef::read(item, depth + 1)?;
                            }
                            (1, other) => return Err(fields.wrong(5, other)),
                            _ => {}
                        }
                    }
                    ValueRef::Array(Items::Wire(b))
                }
                (6, Payload::Bytes(b)) => {
                    for pair in Fields::of(b, "KeyValueList") {
                        match pair? {
                            (1, Payload::Bytes(pair)) => {
                                KeyValueRef::read(pair, depth + 1)?;
                            }
                            (1, other) => return Err(fields.wrong(6, other)),
                            _ => {}
                        }
                    }
                    ValueRef::KvList(Pairs::Wire(b))
                }
                (7, Payload::Bytes(b)) => ValueRef::Bytes(b),
                (8, Payload::Varint(_)) => ValueRef::Strindex,
                (number @ 1..=8, other) => return Err(fields.wrong(number, other)),
                _ => value,
            };
        }
        Ok(value)
    }
}

/// The items of an array value.
#[derive(Debug, Clone, Copy)]
pub enum Items<'a> {
    Decoded(&'a [AnyValue]),
    /// An `ArrayValue` message, checked when read.
    Wire(&'a [u8]),
}

impl<'a> Items<'a> {
    pub fn iter(self) -> impl Iterator<Item = ValueRef<'a>> {
        let (decoded, wire) = match self {
            Items::Decoded(values) => (values, &[][..]),
            Items::Wire(bytes) => (&[][..], bytes),
        };
        decoded.iter().map(ValueRef::of).chain(checked_entries(wire, "ArrayValue", ValueRef::read))
    }
}

/// The entries (field 1) of an array or list message already checked as its
/// value was read, so none fails now.
fn checked_entries<'a, T>(
    message: &'a [u8],
    what: &'static str,
    read: fn(&'a [u8], u32) -> Result<T, WireError>,
) -> impl Iterator<Item = T> {
    Fields::of(message, what).filter_map(move |field| match field {
        Ok((1, Payload::Bytes(entry))) => read(entry, 0).ok(),
        _ => None,
    })
}

/// The pairs of a key-value list (attributes, or a list value).
#[derive(Debug, Clone, Copy)]
pub enum Pairs<'a> {
    Decoded(&'a [KeyValue]),
    /// A `KeyValueList` message, checked when read.
    Wire(&'a [u8]),
}

impl<'a> Pairs<'a> {
    pub fn iter(self) -> impl Iterator<Item = KeyValueRef<'a>> {
        let (decoded, wire) = match self {
            Pairs::Decoded(pairs) => (pairs, &[][..]),
            Pairs::Wire(bytes) => (&[][..], bytes),
        };
        decoded.iter().map(KeyValueRef::of).chain(checked_entries(
            wire,
            "KeyValueList",
            KeyValueRef::read,
        ))
    }
}

/// One attribute as sent; `value` is `None` when the pair has none.
#[derive(Debug, Clone, Copy)]
pub struct KeyValueRef<'a> {
    pub key: &'a str,
    pub value: Option<ValueRef<'a>>,
}

impl<'a> KeyValueRef<'a> {
    pub fn of(pair: &'a KeyValue) -> Self {
        KeyValueRef { key: &pair.key, value: pair.value.as_ref().map(ValueRef::of) }
    }

    fn read(bytes: &'a [u8], depth: u32) -> Result<Self, WireError> {
        if let Some(pair) = Self::short_text(bytes) {
            return Ok(pair);
        }
        // As encoders write a pair: the key, then the value, once each.
        let mut fields = Fields::of(bytes, "KeyValue");
        if let Some(key) = fields.lone(0x0a) {
            let key = text(key?, "KeyValue.key")?;
            if let Some(value) = fields.lone(0x12)
                && fields.rest.is_empty()
            {
                return Ok(KeyValueRef { key, value: Some(ValueRef::read(value?, depth)?) });
            }
        }
        let mut fields = Fields::of(bytes, "KeyValue");
        let mut pair = KeyValueRef { key: "", value: None };
        while let Some(field) = fields.next() {
            match field? {
                (1, Payload::Bytes(b)) => pair.key = text(b, "KeyValue.key")?,
                (2, Payload::Bytes(b)) => pair.value = Some(ValueRef::read(b, depth)?),
                (number @ 1..=2, other) => return Err(fields.wrong(number, other)),
                _ => {}
            }
        }
        Ok(pair)
    }

    /// A pair with a string value, each part under 128 bytes, as encoders
    /// write it: its lengths and tags are then ASCII, so the whole pair is
    /// checked as UTF-8 at once. Most of a span's pairs are such; checking
    /// each short key and value alone, a byte at a time below the length
    /// SIMD starts at, was the larger part of reading them. `None` for any
    /// other pair, or one that is not UTF-8: the field by field reading
    /// then says where.
    #[inline]
    fn short_text(bytes: &'a [u8]) -> Option<Self> {
        // One-byte lengths: the value (under 128) holds the text alone.
        let [0x0a, key_len @ 0..0x80, ..] = *bytes else { return None };
        let value_at = 2 + usize::from(key_len);
        let [0x12, value_len @ 0..0x80, 0x0a, text_len] = *bytes.get(value_at..value_at + 4)?
        else {
            return None;
        };
        let text_at = value_at + 4;
        if text_len.checked_add(2) != Some(value_len)
            || bytes.len() != text_at + usize::from(text_len)
        {
            return None;
        }
        let pair = simdutf8::basic::from_utf8(bytes).ok()?;
        let key = pair.get(2..value_at)?;
        let text = pair.get(text_at..)?;
        Some(KeyValueRef { key, value: Some(ValueRef::Str(text)) })
    }
}

/// A resource's attributes as sent.
#[derive(Debug, Default)]
pub struct ResourceRef<'a> {
    pub attributes: Vec<KeyValueRef<'a>>,
    pub dropped_attributes_count: u32,
}

impl<'a> ResourceRef<'a> {
    pub fn of(resource: &'a Resource) -> Self {
        ResourceRef {
            attributes: resource.attributes.iter().map(KeyValueRef::of).collect(),
            dropped_attributes_count: resource.dropped_attributes_count,
        }
    }

    fn read(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut resource = ResourceRef::default();
        let mut fields = Fields::of(bytes, "Resource");
        while let Some(field) = fields.next() {
            match field? {
                (1, Payload::Bytes(b)) => resource.attributes.push(KeyValueRef::read(b, 0)?),
                (2, Payload::Varint(v)) => resource.dropped_attributes_count = v as u32,
                (number @ 1..=2, other) => return Err(fields.wrong(number, other)),
                _ => {}
            }
        }
        Ok(resource)
    }
}

/// A span event as sent.
#[derive(Debug, Default)]
pub struct EventRef<'a> {
    pub time_unix_nano: u64,
    pub name: &'a str,
    pub attributes: Vec<KeyValueRef<'a>>,
    pub dropped_attributes_count: u32,
}

impl<'a> EventRef<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut event = EventRef::default();
        let mut fields = Fields::of(bytes, "Span.Event");
        while let Some(field) = fields.next() {
            match field? {
                (1, Payload::Fixed64(v)) => event.time_unix_nano = v,
                (2, Payload::Bytes(b)) => event.name = text(b, "Span.Event.name")?,
                (3, Payload::Bytes(b)) => event.attributes.push(KeyValueRef::read(b, 0)?),
                (4, Payload::Varint(v)) => event.dropped_attributes_count = v as u32,
                (number @ 1..=4, other) => return Err(fields.wrong(number, other)),
                _ => {}
            }
        }
        Ok(event)
    }
}

/// A span's status as sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct StatusRef<'a> {
    pub code: i32,
    pub message: &'a str,
}

/// A span as sent: what normalization reads of it.
#[derive(Debug, Default)]
pub struct SpanRef<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<KeyValueRef<'a>>,
    pub dropped_attributes_count: u32,
    pub events: Vec<EventRef<'a>>,
    pub dropped_events_count: u32,
    pub status: Option<StatusRef<'a>>,
}

impl<'a> SpanRef<'a> {
    pub fn of(span: &'a Span) -> Self {
        SpanRef {
            trace_id: &span.trace_id,
            span_id: &span.span_id,
            parent_span_id: &span.parent_span_id,
            name: &span.name,
            kind: span.kind,
            start_time_unix_nano: span.start_time_unix_nano,
            end_time_unix_nano: span.end_time_unix_nano,
            attributes: span.attributes.iter().map(KeyValueRef::of).collect(),
            dropped_attributes_count: span.dropped_attributes_count,
            events: span
                .events
                .iter()
                .map(|event| EventRef {
                    time_unix_nano: event.time_unix_nano,
                    name: &event.name,
                    attributes: event.attributes.iter().map(KeyValueRef::of).collect(),
                    dropped_attributes_count: event.dropped_attributes_count,
                })
                .collect(),
            dropped_events_count: span.dropped_events_count,
            status: span
                .status
                .as_ref()
                .map(|status| StatusRef { code: status.code, message: &status.message }),
        }
    }

    /// Reads a `Span` message into `self`, reusing its lists.
    fn read_into(&mut self, bytes: &'a [u8]) -> Result<(), WireError> {
        let mut attributes = std::mem::take(&mut self.attributes);
        attributes.clear();
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        *self = SpanRef { attributes, events, ..SpanRef::default() };
        let mut fields = Fields::of(bytes, "Span");
        while let Some(field) = fields.next() {
            match field? {
                (1, Payload::Bytes(b)) => self.trace_id = b,
                (2, Payload::Bytes(b)) => self.span_id = b,
                (3, Payload::Bytes(b)) => {
                    text(b, "Span.trace_state")?;
                }
                (4, Payload::Bytes(b)) => self.parent_span_id = b,
                (5, Payload::Bytes(b)) => self.name = text(b, "Span.name")?,
                (6, Payload::Varint(v)) => self.kind = v as i32,
                (7, Payload::Fixed64(v)) => self.start_time_unix_nano = v,
                (8, Payload::Fixed64(v)) => self.end_time_unix_nano = v,
                (9, Payload::Bytes(b)) => self.attributes.push(KeyValueRef::read(b, 0)?),
                (10, Payload::Varint(v)) => self.dropped_attributes_count = v as u32,
                (11, Payload::Bytes(b)) => self.events.push(EventRef::read(b)?),
                (12, Payload::Varint(v)) => self.dropped_events_count = v as u32,
                (13, Payload::Bytes(b)) => check_link(b)?,
                (14, Payload::Varint(_)) | (16, Payload::Fixed32) => {}
                (15, Payload::Bytes(b)) => self.status = Some(read_status(b)?),
                (number @ 1..=16, other) => return Err(fields.wrong(number, other)),
                _ => {}
            }
        }
        Ok(())
    }
}

fn read_status(bytes: &[u8]) -> Result<StatusRef<'_>, WireError> {
    let mut status = StatusRef::default();
    let mut fields = Fields::of(bytes, "Status");
    while let Some(field) = fields.next() {
        match field? {
            (2, Payload::Bytes(b)) => status.message = text(b, "Status.message")?,
            (3, Payload::Varint(v)) => status.code = v as i32,
            (number @ 2..=3, other) => return Err(fields.wrong(number, other)),
            _ => {}
        }
    }
    Ok(status)
}

/// Links are not stored; a malformed one still makes the request invalid.
fn check_link(bytes: &[u8]) -> Result<(), WireError> {
    let mut fields = Fields::of(bytes, "Span.Link");
    while let Some(field) = fields.next() {
        match field? {
            (1 | 2, Payload::Bytes(_)) | (5, Payload::Varint(_)) | (6, Payload::Fixed32) => {}
            (3, Payload::Bytes(b)) => {
                text(b, "Span.Link.trace_state")?;
            }
            (4, Payload::Bytes(b)) => {
                KeyValueRef::read(b, 0)?;
            }
            (number @ 1..=6, other) => return Err(fields.wrong(number, other)),
            _ => {}
        }
    }
    Ok(())
}

/// The scope is not stored; a malformed one still makes the request invalid.
fn check_scope(bytes: &[u8]) -> Result<(), WireError> {
    let mut fields = Fields::of(bytes, "InstrumentationScope");
    while let Some(field) = fields.next() {
        match field? {
            (1 | 2, Payload::Bytes(b)) => {
                text(b, "InstrumentationScope")?;
            }
            (3, Payload::Bytes(b)) => {
                KeyValueRef::read(b, 0)?;
            }
            (4, Payload::Varint(_)) => {}
            (number @ 1..=4, other) => return Err(fields.wrong(number, other)),
            _ => {}
        }
    }
    Ok(())
}

/// What `read_spans` hands over, in order: each resource before its spans.
pub enum Part<'a, 'r> {
    Resource(Option<ResourceRef<'a>>),
    Span(&'r SpanRef<'a>),
}

/// Reads an `ExportTraceServiceRequest`, handing over each resource and
/// then its spans. Stops at the first malformed field, which may come after
/// spans already handed over.
pub fn read_spans<'a>(
    request: &'a [u8],
    mut each: impl FnMut(Part<'a, '_>),
) -> Result<(), WireError> {
    let mut span = SpanRef::default();
    let mut exports = Fields::of(request, "ExportTraceServiceRequest");
    while let Some(field) = exports.next() {
        let resource_spans = match field? {
            (1, Payload::Bytes(b)) => b,
            (1, other) => return Err(exports.wrong(1, other)),
            _ => continue,
        };
        // The resource first, wherever it is among the fields.
        let mut resource = None;
        let mut fields = Fields::of(resource_spans, "ResourceSpans");
        while let Some(field) = fields.next() {
            match field? {
                (1, Payload::Bytes(b)) => resource = Some(b),
                (2 | 3, Payload::Bytes(_)) => {}
                (number @ 1..=3, other) => return Err(fields.wrong(number, other)),
                _ => {}
            }
        }
        each(Part::Resource(resource.map(ResourceRef::read).transpose()?));
        for field in Fields::of(resource_spans, "ResourceSpans") {
            let scope_spans = match field? {
                (2, Payload::Bytes(b)) => b,
                (3, Payload::Bytes(b)) => {
                    text(b, "ResourceSpans.schema_url")?;
                    continue;
                }
                _ => continue,
            };
            let mut fields = Fields::of(scope_spans, "ScopeSpans");
            while let Some(field) = fields.next() {
                match field? {
                    (1, Payload::Bytes(b)) => check_scope(b)?,
                    (2, Payload::Bytes(b)) => {
                        span.read_into(b)?;
                        each(Part::Span(&span));
                    }
                    (3, Payload::Bytes(b)) => {
                        text(b, "ScopeSpans.schema_url")?;
                    }
                    (number @ 1..=3, other) => return Err(fields.wrong(number, other)),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};
    use prost::Message;

    use super::*;
    use crate::normalize::span::testing::{any, kv};

    /// Views compared by what they say, whichever way they were made.
    fn describe(value: Option<ValueRef<'_>>) -> String {
        match value {
            None => "none".into(),
            Some(ValueRef::Array(items)) => {
                let items: Vec<_> = items.iter().map(|v| describe(Some(v))).collect();
                format!("[{}]", items.join(","))
            }
            Some(ValueRef::KvList(pairs)) => describe_pairs(pairs.iter()),
            Some(other) => format!("{other:?}"),
        }
    }

    fn describe_pairs<'a>(pairs: impl Iterator<Item = KeyValueRef<'a>>) -> String {
        let pairs: Vec<_> = pairs.map(|p| format!("{}={}", p.key, describe(p.value))).collect();
        format!("{{{}}}", pairs.join(","))
    }

    fn describe_span(span: &SpanRef<'_>) -> String {
        let events: Vec<_> = span
            .events
            .iter()
            .map(|e| {
                format!(
                    "{}@{} {} -{}",
                    e.name,
                    e.time_unix_nano,
                    describe_pairs(e.attributes.iter().copied()),
                    e.dropped_attributes_count
                )
            })
            .collect();
        format!(
            "{:?} {:?} {:?} {} {} {}-{} {} -{} {:?} -{} {:?}",
            span.trace_id,
            span.span_id,
            span.parent_span_id,
            span.name,
            span.kind,
            span.start_time_unix_nano,
            span.end_time_unix_nano,
            describe_pairs(span.attributes.iter().copied()),
            span.dropped_attributes_count,
            events,
            span.dropped_events_count,
            span.status,
        )
    }

    fn request() -> ExportTraceServiceRequest {
        let nested = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![
                    any(1),
                    any("two"),
                    AnyValue {
                        value: Some(any_value::Value::KvlistValue(KeyValueList {
                            values: vec![
                                kv("deep", 2.5),
                                KeyValue { key: "nothing".into(), ..Default::default() },
                            ],
                        })),
                    },
                    AnyValue { value: None },
                ],
            })),
        };
        let span = |n: u8| Span {
            trace_id: vec![n; 16],
            span_id: vec![n + 1; 8],
            parent_span_id: if n > 1 { vec![1; 8] } else { vec![] },
            trace_state: "k=v".into(),
            name: format!("span é {n}"),
            kind: 3,
            start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(n),
            end_time_unix_nano: 1_700_000_000_500_000_000,
            attributes: vec![
                kv("gen_ai.request.model", "gpt-4o"),
                kv("count", -3),
                kv("flag", true),
                kv("bytes", any_value::Value::BytesValue(vec![0, 255])),
                KeyValue {
                    key: "nested".into(),
                    value: Some(nested.clone()),
                    ..Default::default()
                },
                KeyValue { key: "absent".into(), ..Default::default() },
                KeyValue {
                    key: "empty".into(),
                    value: Some(AnyValue { value: None }),
                    ..Default::default()
                },
            ],
            dropped_attributes_count: 4,
            events: vec![Event {
                time_unix_nano: 9,
                name: "first token stream event".into(),
                attributes: vec![kv("i", 1)],
                dropped_attributes_count: 1,
            }],
            dropped_events_count: 2,
            links: vec![Link {
                trace_id: vec![7; 16],
                span_id: vec![7; 8],
                trace_state: "x".into(),
                attributes: vec![kv("l", 1)],
                dropped_attributes_count: 0,
                flags: 1,
            }],
            dropped_links_count: 1,
            status: (n == 2).then(|| Status { message: "boom".into(), code: 2 }),
            flags: 257,
        };
        let resource = |name: &str| Resource {
            attributes: vec![kv("service.name", name)],
            dropped_attributes_count: 1,
            entity_refs: vec![],
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(resource("a")),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "scope".into(),
                            version: "1".into(),
                            attributes: vec![kv("s", 1)],
                            dropped_attributes_count: 0,
                        }),
                        spans: vec![span(1), span(2)],
                        schema_url: "https://example.com".into(),
                    }],
                    schema_url: String::new(),
                },
                ResourceSpans {
                    resource: None,
                    scope_spans: vec![
                        ScopeSpans { scope: None, spans: vec![span(3)], schema_url: String::new() },
                        ScopeSpans { scope: None, spans: vec![], schema_url: String::new() },
                    ],
                    schema_url: String::new(),
                },
            ],
        }
    }

    /// What `read_spans` hands over, described.
    fn read(bytes: &[u8]) -> Result<Vec<String>, WireError> {
        let mut seen = Vec::new();
        read_spans(bytes, |part| {
            seen.push(match part {
                Part::Resource(None) => "resource none".to_owned(),
                Part::Resource(Some(r)) => format!(
                    "resource {} -{}",
                    describe_pairs(r.attributes.iter().copied()),
                    r.dropped_attributes_count
                ),
                Part::Span(span) => describe_span(span),
            })
        })?;
        Ok(seen)
    }

    #[test]
    fn a_request_reads_in_place_as_prost_decodes_it() {
        let request = request();
        let mut expected = Vec::new();
        for resource_spans in &request.resource_spans {
            expected.push(match &resource_spans.resource {
                None => "resource none".to_owned(),
                Some(r) => {
                    let r = ResourceRef::of(r);
                    format!(
                        "resource {} -{}",
                        describe_pairs(r.attributes.iter().copied()),
                        r.dropped_attributes_count
                    )
                }
            });
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                expected.push(describe_span(&SpanRef::of(span)));
            }
        }
        let bytes = request.encode_to_vec();
        assert_eq!(read(&bytes).unwrap(), expected);
        assert!(
            expected[1]
                .contains("nested=[Int(1),Str(\"two\"),{deep=Double(2.5),nothing=none},Empty]")
        );
        // And what prost decodes from the bytes is what they were made from.
        assert_eq!(ExportTraceServiceRequest::decode(&bytes[..]).unwrap(), request);
    }

    #[test]
    fn every_cut_short_request_is_refused_or_reads_as_prost_reads_it() {
        let bytes = request().encode_to_vec();
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            match (read(cut), ExportTraceServiceRequest::decode(cut)) {
                (Ok(_), Err(err)) => panic!("{len}: read, prost says {err}"),
                (Err(err), Ok(_)) => panic!("{len}: refused ({err}), prost reads it"),
                _ => {}
            }
        }
        // A flipped byte anywhere: never a panic.
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let _ = read(&bad);
            }
        }
    }

    #[test]
    fn malformed_fields_are_named() {
        // Span.name (field 5) sent as a varint.
        let span = [0x28, 0x01];
        let scope_spans = [&[0x12, span.len() as u8][..], &span].concat();
        let resource_spans = [&[0x12, scope_spans.len() as u8][..], &scope_spans].concat();
        let request = [&[0x0a, resource_spans.len() as u8][..], &resource_spans].concat();
        let err = read(&request).unwrap_err();
        assert_eq!(err.to_string(), "Span: field 5 has wire type varint");
        let not_utf8 = [0x2a, 0x01, 0xff];
        let scope_spans = [&[0x12, not_utf8.len() as u8][..], &not_utf8].concat();
        let resource_spans = [&[0x12, scope_spans.len() as u8][..], &scope_spans].concat();
        let request = [&[0x0a, resource_spans.len() as u8][..], &resource_spans].concat();
        assert!(
            read(&request).unwrap_err().to_string().starts_with("Span.name: a string is not UTF-8")
        );
        assert!(
            read(&[0x0a, 0x05, 0x01]).unwrap_err().to_string().contains("5 bytes follow, 1 do")
        );
    }

    /// A length-delimited field of `number` holding `bytes`.
    fn wrap(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut field = vec![number << 3 | 2];
        prost::encoding::encode_varint(bytes.len() as u64, &mut field);
        field.extend_from_slice(bytes);
        field
    }

    #[test]
    fn groups_are_skipped_as_prost_skips_them() {
        let span = request().resource_spans[0].scope_spans[0].spans[0].clone();
        // Group 99 holding a varint and group 98, then the span's fields.
        let group = [0x9b, 0x06, 0x08, 0x01, 0x93, 0x06, 0x94, 0x06, 0x9c, 0x06];
        let bytes = [&group[..], &span.encode_to_vec()].concat();
        let request = wrap(1, &wrap(2, &wrap(2, &bytes)));
        let decoded = ExportTraceServiceRequest::decode(&request[..]).unwrap();
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans[0], span);
        let read = read(&request).unwrap();
        assert_eq!(read[1], describe_span(&SpanRef::of(&span)));
        // Not closed: refused by both.
        let open = wrap(1, &wrap(2, &wrap(2, &group[..8])));
        assert!(ExportTraceServiceRequest::decode(&open[..]).is_err());
        assert!(super::read_spans(&open, |_| {}).is_err());
    }

    #[test]
    fn short_string_pairs_read_whole_as_prost_decodes_them_and_bad_text_is_named() {
        let text = |len: usize, tail: &str| "k".repeat(len.saturating_sub(tail.len())) + tail;
        for key_len in [1, 2, 63, 64, 126, 127, 128] {
            for value_len in [0, 1, 61, 62, 63, 64, 125, 126, 127, 128, 200] {
                for tail in ["", "é", "€ü"] {
                    let pair = kv(&text(key_len, tail), text(value_len, tail).as_str());
                    let bytes = pair.encode_to_vec();
                    let read = KeyValueRef::read(&bytes, 0).unwrap();
                    let sent = KeyValueRef::of(&pair);
                    assert_eq!(
                        describe_pairs([read].into_iter()),
                        describe_pairs([sent].into_iter())
                    );
                    // Read whole when every part is under 128 bytes.
                    let short = pair.key.len() < 128 && value_len < 126;
                    assert_eq!(
                        KeyValueRef::short_text(&bytes).is_some(),
                        short,
                        "{key_len} {value_len}"
                    );
                }
            }
        }
        // Text that is not UTF-8, in the key or the value, is named.
        let bad = |key: &[u8], value: &[u8]| {
            let pair = [wrap(1, key), wrap(2, &wrap(1, value))].concat();
            KeyValueRef::read(&pair, 0).unwrap_err().to_string()
        };
        assert!(bad(b"model\xff", b"gpt-4o").starts_with("KeyValue.key: a string is not UTF-8"));
        assert!(bad(b"model\xc3", b"gpt-4o").starts_with("KeyValue.key: a string is not UTF-8"));
        let value = bad(b"model", b"gpt\xe2\x82");
        assert!(value.starts_with("AnyValue.string_value: a string is not UTF-8"), "{value}");
        assert_eq!(
            KeyValueRef::read(&[wrap(1, b"k"), wrap(2, &wrap(1, b"\xc3\xa9"))].concat(), 0)
                .map(|p| describe(p.value))
                .unwrap(),
            "Str(\"é\")"
        );
    }

    #[test]
    fn nesting_past_the_limit_is_refused() {
        let mut value = any(1);
        for _ in 0..=MAX_DEPTH + 1 {
            value = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![value] })),
            };
        }
        let bytes = value.encode_to_vec();
        assert!(ValueRef::read(&bytes, 0).unwrap_err().to_string().contains("too deep"));
    }
}
