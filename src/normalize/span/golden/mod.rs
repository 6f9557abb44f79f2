//! Golden cases of span normalization, one file per convention beside this
//! runner (`otel_genai.json`, `openinference.json`, …). Each case is one
//! span in OTLP/JSON, read by the same serde mapping the OTLP/HTTP JSON
//! path decodes exports with, and what `normalize_span` makes of it: the
//! `SpanRecord`, and the call it describes after the accounting rules
//! (built-in prices, default rules; all but `source`, which ingest sets), or
//! the error that rejects the span.
//!
//! One test runs every file; a mismatch names the file and the case and
//! lists each field that differs. `GOLDEN_UPDATE=1` rewrites the
//! expectations from what the code gives now (review the diff: the
//! expectations are the specification).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::trace::v1::Span;
use serde::Deserialize;
use serde_json::{Value, json};

use super::testing::{try_account, try_normalize};

/// Where the golden files are: beside this runner.
const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/normalize/span/golden");
/// Lines are broken where an object or array would pass this width.
const WIDTH: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GoldenFile {
    /// The convention the cases' attributes follow, for the reader.
    convention: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// What the case pins, for the reader.
    note: Option<String>,
    /// One span as OTLP/JSON writes it (an element of `scopeSpans[].spans`).
    span: Value,
    /// `{"span": SpanRecord, "call": LlmCall or null}`, or `{"error": …}`.
    expected: Value,
}

#[test]
fn conventions_match_their_golden_files() {
    let update = std::env::var_os("GOLDEN_UPDATE").is_some_and(|value| value == "1");
    let mut failures = Vec::new();
    let files = golden_files();
    assert!(!files.is_empty(), "no golden files in {GOLDEN_DIR}");
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut file: GoldenFile = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{name}: not a golden file: {err}"));
        assert!(!file.cases.is_empty(), "{name}: no cases");
        let mut names = BTreeSet::new();
        for case in &mut file.cases {
            assert!(names.insert(case.name.clone()), "{name}: two cases named {:?}", case.name);
            let actual = match outcome(&case.span) {
                Ok(actual) => actual,
                Err(err) => {
                    failures.push(format!("{name}, case {:?}: {err}", case.name));
                    continue;
                }
            };
            if update {
                case.expected = actual;
                continue;
            }
            // Compared as read back from text, as the expectations were:
            // serde_json reads some floats one ulp off what it wrote (it has
            // no `float_roundtrip` here).
            let actual: Value = serde_json::from_str(&actual.to_string()).unwrap();
            let mut differences = Vec::new();
            diff("expected".to_owned(), Some(&case.expected), Some(&actual), &mut differences);
            if !differences.is_empty() {
                failures.push(format!(
                    "{name}, case {:?}:\n  {}",
                    case.name,
                    differences.join("\n  ")
                ));
            }
        }
        if update {
            let rendered = render_file(&file);
            if rendered != text {
                std::fs::write(&path, rendered).unwrap();
                eprintln!("golden: rewrote {name}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) differ (GOLDEN_UPDATE=1 rewrites the expectations):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn golden_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(GOLDEN_DIR))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

/// What normalizing the span gives, as the expectations write it; an error
/// when the case's span is not OTLP/JSON.
fn outcome(span: &Value) -> Result<Value, String> {
    let span: Span = serde_json::from_value(span.clone())
        .map_err(|err| format!("span: not an OTLP/JSON span: {err}"))?;
    let normalized = match try_normalize(&span) {
        Ok(normalized) => normalized,
        Err(err) => return Ok(json!({ "error": err.to_string() })),
    };
    let call = match normalized.call {
        None => Value::Null,
        Some(report) => match try_account(report) {
            Ok(call) => {
                let mut call = serde_json::to_value(call).unwrap();
                // Ingest marks the call as a span's; the rules leave their default.
                call.as_object_mut().unwrap().remove("source");
                call
            }
            Err(err) => json!({ "error": err.to_string() }),
        },
    };
    let record = serde_json::to_value(&normalized.span).unwrap();
    Ok(json!({ "span": record, "call": call }))
}

/// Each difference between `expected` and `actual` as "path: expected X,
/// got Y", field by field.
fn diff(path: String, expected: Option<&Value>, actual: Option<&Value>, out: &mut Vec<String>) {
    match (expected, actual) {
        (Some(Value::Object(expected)), Some(Value::Object(actual))) => {
            let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
            for key in keys {
                diff(format!("{path}.{key}"), expected.get(key), actual.get(key), out);
            }
        }
        (Some(Value::Array(expected)), Some(Value::Array(actual))) => {
            for index in 0..expected.len().max(actual.len()) {
                diff(format!("{path}[{index}]"), expected.get(index), actual.get(index), out);
            }
        }
        (expected, actual) if expected == actual => {}
        (expected, actual) => {
            out.push(format!("{path}: expected {}, got {}", shown(expected), shown(actual)));
        }
    }
}

fn shown(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return "(absent)".to_owned();
    };
    let text = inline(value);
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The file as `GOLDEN_UPDATE` writes it: JSON whose objects and arrays
/// stay on one line when they fit, the fields of a case in reading order.
fn render_file(file: &GoldenFile) -> String {
    let convention = Value::String(file.convention.clone());
    let cases: Vec<String> = file.cases.iter().map(render_case).collect();
    format!(
        "{{\n  \"convention\": {},\n  \"cases\": [\n{}\n  ]\n}}\n",
        inline(&convention),
        cases.join(",\n")
    )
}

fn render_case(case: &Case) -> String {
    let name = Value::String(case.name.clone());
    let note = case.note.clone().map(Value::String);
    let mut fields = vec![("name", &name)];
    if let Some(note) = &note {
        fields.push(("note", note));
    }
    fields.push(("span", &case.span));
    // The record before the call it describes.
    let expected: Vec<(&str, &Value)> = match &case.expected {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|key| (key.as_str() != "span", key.as_str()));
            keys.into_iter().map(|key| (key.as_str(), &map[key])).collect()
        }
        _ => Vec::new(),
    };
    let expected = if expected.is_empty() {
        render(&case.expected, 6, "\"expected\": ".len())
    } else {
        render_fields(&expected, 6)
    };
    let mut lines: Vec<String> = fields
        .into_iter()
        .map(|(key, value)| {
            let prefix = format!("{}: ", inline(&Value::String(key.to_owned())));
            format!("      {prefix}{}", render(value, 6, prefix.len()))
        })
        .collect();
    lines.push(format!("      \"expected\": {expected}"));
    format!("    {{\n{}\n    }}", lines.join(",\n"))
}

/// `value` written at `indent` after `prefix` columns of its line.
fn render(value: &Value, indent: usize, prefix: usize) -> String {
    let one_line = inline(value);
    if indent + prefix + one_line.len() <= WIDTH {
        return one_line;
    }
    match value {
        Value::Array(items) if !items.is_empty() => {
            let inner = " ".repeat(indent + 2);
            let lines: Vec<String> = items
                .iter()
                .map(|item| format!("{inner}{}", render(item, indent + 2, 0)))
                .collect();
            format!("[\n{}\n{}]", lines.join(",\n"), " ".repeat(indent))
        }
        Value::Object(map) if !map.is_empty() => {
            let fields: Vec<(&str, &Value)> =
                map.iter().map(|(key, value)| (key.as_str(), value)).collect();
            render_fields(&fields, indent)
        }
        _ => one_line,
    }
}

/// An object of `fields` in their order, one a line.
fn render_fields(fields: &[(&str, &Value)], indent: usize) -> String {
    let inner = " ".repeat(indent + 2);
    let lines: Vec<String> = fields
        .iter()
        .map(|(key, value)| {
            let prefix = format!("{}: ", inline(&Value::String((*key).to_owned())));
            format!("{inner}{prefix}{}", render(value, indent + 2, prefix.len()))
        })
        .collect();
    format!("{{\n{}\n{}}}", lines.join(",\n"), " ".repeat(indent))
}

/// `value` on one line, with a space after each `:` and `,`.
fn inline(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(key, value)| {
                    format!("{}: {}", inline(&Value::String(key.clone())), inline(value))
                })
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        scalar => serde_json::to_string(scalar).unwrap(),
    }
}
