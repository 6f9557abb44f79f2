//! Request bodies: size limit (applied after decompression too, so a gzip
//! bomb is refused), gzip, and parsing a batch into its records.

use std::io::Read;
use std::marker::PhantomData;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::BytesMut;
use flate2::read::GzDecoder;
use http_body_util::BodyExt;
use serde::de::{
    self, DeserializeSeed, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer,
};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request body is larger than {limit} bytes (after decompression); split the batch"),
    )
}

/// Why a body could not be read: the client stopped sending (the listener
/// answers 408 in place of this when the body read deadline passed).
fn unreadable(err: axum::Error) -> ApiError {
    ApiError::bad_request(format!("the request body could not be read: {}", err.into_inner()))
}

/// A request body as it arrived, and its share of the bytes the server lets
/// all bodies being received and processed hold at once (given back when
/// this is dropped).
pub struct Received {
    pub bytes: Bytes,
    _held: Option<OwnedSemaphorePermit>,
}

/// Reads the whole body as sent (still compressed), refusing more than
/// `limit` bytes, and taking its bytes from `budget` as they arrive: when
/// bodies in flight hold the whole budget, further ones get 429 rather
/// than memory. Decompress it with `inflate`, off the async threads.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    budget: &Arc<Semaphore>,
) -> Result<Received, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let mut body = body;
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut bytes = BytesMut::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(unreadable)?.into_data() else { continue };
        if bytes.len() + data.len() > limit {
            return Err(too_large(limit));
        }
        let share = u32::try_from(data.len()).map_err(|_| too_large(limit))?;
        let permit = budget.clone().try_acquire_many_owned(share).map_err(|_| {
            ApiError::overloaded(
                "the server holds as many request bytes as ingest.max_receiving_bytes allows; \
                 retry later",
            )
        })?;
        match &mut held {
            Some(all) => all.merge(permit),
            None => held = Some(permit),
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Received { bytes: bytes.freeze(), _held: held })
}

/// The body decompressed as its `Content-Encoding` says (gzip or none),
/// refusing more than `limit` bytes after decompression, so a gzip bomb is
/// refused. CPU work: call it off the async threads.
pub fn inflate(headers: &HeaderMap, raw: &Bytes, limit: usize) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(raw.clone()),
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
            GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| ApiError::bad_request(format!("body is not valid gzip: {e}")))?;
            if out.len() > limit {
                return Err(too_large(limit));
            }
            Ok(Bytes::from(out))
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not supported (use gzip or none)"),
        )),
    }
}

/// Is the body newline-delimited JSON (by Content-Type)?
pub fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("application/x-ndjson")
                || ct.starts_with("application/ndjson")
                || ct.starts_with("application/jsonl")
                || ct.starts_with("application/json-lines")
        })
        .unwrap_or(false)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    records: Option<Vec<&'a RawValue>>,
}

/// One record of a batch: parsed already when the whole batch parsed in one
/// pass, else its JSON text, to be parsed alone so that its error names it.
pub enum Record<'a, T> {
    Parsed(T),
    Text(&'a str),
}

/// A record that must be a JSON object (a derived deserializer would also
/// read an array as the fields in order).
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

/// Hands each record of an array to `each` as soon as it is parsed.
struct EachInArray<'f, T, F> {
    each: &'f mut F,
    /// How many records `each` was given; kept when a later record fails,
    /// so that the split pass goes on from the first record not given.
    handed_over: &'f mut usize,
    record: PhantomData<T>,
}

impl<'de, T, F> DeserializeSeed<'de> for EachInArray<'_, T, F>
where
    T: Deserialize<'de>,
    F: FnMut(usize, Record<'de, T>),
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T, F> Visitor<'de> for EachInArray<'_, T, F>
where
    T: Deserialize<'de>,
    F: FnMut(usize, Record<'de, T>),
{
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(Object(record)) = seq.next_element::<Object<T>>()? {
            (self.each)(*self.handed_over, Record::Parsed(record));
            *self.handed_over += 1;
        }
        Ok(())
    }
}

/// `{"records": [...]}` with nothing else in it, through `EachInArray`.
struct EachInEnvelope<'f, T, F>(EachInArray<'f, T, F>);

impl<'de, T, F> Visitor<'de> for EachInEnvelope<'_, T, F>
where
    T: Deserialize<'de>,
    F: FnMut(usize, Record<'de, T>),
{
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object with only \"records\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        match map.next_key::<String>()? {
            Some(key) if key == "records" => {}
            _ => return Err(de::Error::custom("expected \"records\"")),
        }
        map.next_value_seed(self.0)?;
        match map.next_key::<String>()? {
            None => Ok(()),
            Some(_) => Err(de::Error::custom("expected only \"records\"")),
        }
    }
}

/// The most records a batch body can hold: each is an object, so it has a
/// `{` of its own (a cheap count that sizes a request's vectors once).
pub fn max_records(body: &[u8]) -> usize {
    memchr::memchr_iter(b'{', body).count()
}

/// Each record of a batch (the forms of `split_records`) through `each`,
/// with its index: every record exactly once, in order. Returns how many
/// there were.
///
/// A JSON array or `{"records": [...]}` is parsed in one pass, each record
/// handed over as soon as it is parsed, borrowing from the body. When a
/// record does not parse (or the body is in another form), the body is
/// split and the records from that one on are handed over as JSON text, to
/// be parsed (and named in an error) alone; those handed over already are
/// not handed over again. An error means the body as a whole is not a
/// batch: what `each` was given is then to be dropped.
pub fn each_record<'a, T>(
    body: &'a [u8],
    ndjson: bool,
    mut each: impl FnMut(usize, Record<'a, T>),
) -> Result<usize, ApiError>
where
    T: Deserialize<'a>,
{
    let text = utf8(body)?;
    let mut handed_over = 0;
    if !ndjson {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let array =
            EachInArray { each: &mut each, handed_over: &mut handed_over, record: PhantomData };
        let parsed = match text.trim_start().as_bytes().first() {
            Some(b'[') => array.deserialize(&mut deserializer).is_ok(),
            Some(b'{') => deserializer.deserialize_map(EachInEnvelope(array)).is_ok(),
            _ => false,
        };
        if parsed && deserializer.end().is_ok() {
            return Ok(handed_over);
        }
    }
    let records = split_records(body, ndjson)?;
    // The split reads the same array the one pass read, so it holds every
    // record handed over already.
    debug_assert!(records.len() >= handed_over, "{} < {handed_over}", records.len());
    for (index, &json) in records.iter().enumerate().skip(handed_over) {
        each(index, Record::Text(json));
    }
    Ok(records.len())
}

fn utf8(body: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("body is not UTF-8 text: {e}")))
}

/// The JSON text of each record in a batch: a JSON array, an object
/// `{"records": [...]}`, a single record object, or NDJSON (one per line;
/// blank lines skipped).
pub fn split_records(body: &[u8], ndjson: bool) -> Result<Vec<&str>, ApiError> {
    let text = utf8(body)?;
    if ndjson {
        return Ok(text.lines().map(str::trim).filter(|line| !line.is_empty()).collect());
    }
    match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
                ApiError::bad_request(format!("body is not a JSON array of records: {e}"))
            })?;
            Ok(items.into_iter().map(RawValue::get).collect())
        }
        Some(b'{') => {
            let envelope: Envelope<'_> = serde_json::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
            match envelope.records {
                Some(items) => Ok(items.into_iter().map(RawValue::get).collect()),
                None => Ok(vec![text]),
            }
        }
        Some(_) => Err(ApiError::bad_request(
            "body is not JSON: expected an array of records, {\"records\": [...]}, or NDJSON with Content-Type: application/x-ndjson",
        )),
        None => Err(ApiError::bad_request("body is empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_every_batch_form() {
        assert_eq!(
            split_records(br#"[{"a":1}, {"b":2}]"#, false).unwrap(),
            vec![r#"{"a":1}"#, r#"{"b":2}"#]
        );
        assert_eq!(split_records(br#"{"records":[{"a":1}]}"#, false).unwrap(), vec![r#"{"a":1}"#]);
        assert_eq!(split_records(br#"{"model":"x"}"#, false).unwrap(), vec![r#"{"model":"x"}"#]);
        assert_eq!(
            split_records(b"{\"a\":1}\n\n{\"b\":2}\n", true).unwrap(),
            vec!["{\"a\":1}", "{\"b\":2}"]
        );
        assert!(split_records(b"model=x", false).is_err());
        assert!(split_records(b"[{\"a\":1}", false).is_err());
        assert!(split_records(b"  ", false).is_err());
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Rec {
        a: Option<u32>,
    }

    /// Each record as given to `each`: parsed in the one pass, or as text.
    fn forms(body: &[u8]) -> Vec<Result<Option<u32>, String>> {
        let mut forms = Vec::new();
        let count = each_record::<Rec>(body, false, |index, r| {
            assert_eq!(index, forms.len(), "each record once, in order");
            forms.push(match r {
                Record::Parsed(rec) => Ok(rec.a),
                Record::Text(text) => Err(text.to_owned()),
            });
        })
        .unwrap();
        assert_eq!(count, forms.len());
        forms
    }

    #[test]
    fn good_batches_parse_in_one_pass_and_bad_ones_are_split() {
        assert_eq!(forms(br#"[{"a":1}, {"a":2}]"#), vec![Ok(Some(1)), Ok(Some(2))]);
        assert_eq!(forms(br#"{"records":[{"a":1}]}"#), vec![Ok(Some(1))]);
        // From a bad record on, records come as text, to be parsed (and
        // named) alone; those before it stay as the one pass parsed them.
        assert_eq!(
            forms(br#"[{"a":1}, {"a":"x"}]"#),
            vec![Ok(Some(1)), Err(r#"{"a":"x"}"#.into())]
        );
        // A record that is an array, or a single record: text.
        assert_eq!(forms(br#"[[1]]"#), vec![Err("[1]".into())]);
        assert_eq!(forms(br#"{"a":1}"#), vec![Err(r#"{"a":1}"#.into())]);
        // The envelope fails after its records were handed over: none again.
        assert_eq!(forms(br#"{"records":[{"a":1}],"b":2}"#), vec![Ok(Some(1))]);
        assert!(each_record::<Rec>(br#"{"records":[{"a":1}]} x"#, false, |_, _| ()).is_err());
        assert!(each_record::<Rec>(b"[{", false, |_, _| ()).is_err());
        assert_eq!(max_records(br#"[{"a":1}, {"a":"x"}]"#), 2);
    }

    /// What a caller makes of a batch: each record's value, or its index
    /// and the error of parsing it alone.
    fn read(body: &[u8], ndjson: bool) -> (Vec<u32>, Vec<(usize, String)>) {
        let (mut values, mut errors) = (Vec::new(), Vec::new());
        let mut seen = Vec::new();
        let count = each_record::<Rec>(body, ndjson, |index, record| {
            seen.push(index);
            let parsed = match record {
                Record::Parsed(rec) => Ok(rec),
                Record::Text(json) => serde_json::from_str::<Rec>(json),
            };
            match parsed {
                Ok(rec) => values.push(rec.a.unwrap_or_default()),
                Err(err) => errors.push((index, err.to_string())),
            }
        })
        .unwrap();
        assert_eq!(seen, (0..count).collect::<Vec<_>>(), "each record once, in order");
        (values, errors)
    }

    #[test]
    fn a_bad_third_record_is_named_and_the_others_come_once() {
        let bodies: [(&[u8], bool); 3] = [
            (br#"[{"a":1}, {"a":2}, {"a":"x"}, {"a":4}]"#, false),
            (br#"{"records": [{"a":1}, {"a":2}, {"a":"x"}, {"a":4}]}"#, false),
            (b"{\"a\":1}\n{\"a\":2}\n{\"a\":\"x\"}\n{\"a\":4}\n", true),
        ];
        for (body, ndjson) in bodies {
            let (values, errors) = read(body, ndjson);
            let label = String::from_utf8_lossy(body);
            assert_eq!(values, vec![1, 2, 4], "{label}");
            assert_eq!(errors.len(), 1, "{label}");
            assert_eq!(errors[0].0, 2, "{label}");
            assert!(errors[0].1.starts_with("invalid type: string \"x\""), "{label}: {errors:?}");
        }
    }
}
