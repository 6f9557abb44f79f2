//! The built-in price catalog: `catalog.tsv`, derived from LiteLLM's price
//! list by `scripts/derive_price_catalog.py`, embedded in the binary and
//! parsed once on first use. A parse error is a bug in the derived file, so
//! it panics at first use, and the tests below prove that it does not.
//!
//! The table gives per-token USD prices; a missing input or output price (the
//! source prices some image and video models per image or per second) is
//! taken as 0, a missing cache or reasoning price as "charged like input /
//! output" (see [`super::cost`]).

use std::borrow::Cow;
use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::sync::LazyLock;

use super::cost::Price;

const SOURCE: &str = include_str!("catalog.tsv");
const HEADER: &str = "model\tprovider\tmode\tinput\toutput\tcache_read\tcache_write\treasoning";
const FIELD_COUNT: usize = 8;

static BUILTIN: LazyLock<Catalog> = LazyLock::new(|| match Catalog::parse(SOURCE) {
    Ok(catalog) => catalog,
    Err(error) => panic!("embedded src/pricing/catalog.tsv is invalid: {error}"),
});

/// One row of the built-in catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// The catalog key, e.g. `gpt-4o` or `azure/gpt-4o`.
    pub model: &'static str,
    /// LiteLLM's `litellm_provider`, e.g. `openai`.
    pub provider: &'static str,
    /// LiteLLM's `mode` (`chat`, `embedding`, …) when it gives one.
    pub mode: Option<&'static str>,
    pub price: Price,
    /// `catalog:<model>`, built once so a lookup can lend it out.
    price_id: String,
}

impl CatalogEntry {
    pub(super) fn price_id(&self) -> &str {
        &self.price_id
    }
}

/// The parsed catalog and its name indexes.
#[derive(Debug)]
pub(super) struct Catalog {
    entries: Vec<CatalogEntry>,
    /// Catalog key → index into `entries`.
    by_name: FxHashMap<&'static str, usize>,
    /// Lowercased key → index, only for keys that are not lowercase already
    /// (the others are found in `by_name`).
    by_lowercase_name: FxHashMap<String, usize>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum CatalogParseError {
    #[error("line {line}: expected the column header {HEADER:?}")]
    MissingHeader { line: usize },
    #[error("line {line}: expected {FIELD_COUNT} tab-separated fields, found {found}")]
    FieldCount { line: usize, found: usize },
    #[error("line {line}: empty {field}")]
    EmptyField { line: usize, field: &'static str },
    #[error("line {line}: {field} {value:?} is not a finite number >= 0")]
    BadPrice { line: usize, field: &'static str, value: String },
    #[error("line {line}: neither an input nor an output price")]
    Unpriced { line: usize },
    #[error("line {line}: model {model:?} already on line {first}")]
    DuplicateModel { line: usize, model: String, first: usize },
}

impl Catalog {
    /// The embedded catalog, parsed on first use.
    pub(super) fn builtin() -> &'static Catalog {
        &BUILTIN
    }

    fn parse(source: &'static str) -> Result<Catalog, CatalogParseError> {
        let mut entries = Vec::new();
        let mut first_line_of: HashMap<&'static str, usize> = HashMap::new();
        let mut header_seen = false;
        for (line_index, line) in source.lines().enumerate() {
            let line_number = line_index + 1;
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if !header_seen {
                if line != HEADER {
                    return Err(CatalogParseError::MissingHeader { line: line_number });
                }
                header_seen = true;
                continue;
            }
            let entry = parse_row(line_number, line)?;
            if let Some(&first) = first_line_of.get(entry.model) {
                return Err(CatalogParseError::DuplicateModel {
                    line: line_number,
                    model: entry.model.to_owned(),
                    first,
                });
            }
            first_line_of.insert(entry.model, line_number);
            entries.push(entry);
        }
        if !header_seen {
            return Err(CatalogParseError::MissingHeader { line: source.lines().count() + 1 });
        }

        let by_name: FxHashMap<&'static str, usize> =
            entries.iter().enumerate().map(|(index, entry)| (entry.model, index)).collect();
        let mut by_lowercase_name = FxHashMap::default();
        for (index, entry) in entries.iter().enumerate() {
            if let Cow::Owned(lowercase) = lowercased(entry.model) {
                // A lowercase key that exists as such is found in `by_name`
                // first; among mixed-case keys that fold together the first
                // in the file wins.
                by_lowercase_name.entry(lowercase).or_insert(index);
            }
        }
        Ok(Catalog { entries, by_name, by_lowercase_name })
    }

    pub(super) fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    pub(super) fn entry(&self, index: usize) -> &CatalogEntry {
        &self.entries[index]
    }

    /// The entry named exactly `name`, else the one whose name equals it
    /// case-insensitively. Allocates only when `name` is not lowercase and
    /// has no exact match.
    pub(super) fn find(&self, name: &str) -> Option<usize> {
        if let Some(&index) = self.by_name.get(name) {
            return Some(index);
        }
        let lowercase = lowercased(name);
        if let Cow::Owned(lowercase) = &lowercase
            && let Some(&index) = self.by_name.get(lowercase.as_str())
        {
            return Some(index);
        }
        self.by_lowercase_name.get(lowercase.as_ref()).copied()
    }
}

/// `name` lowercased, borrowed when it already is lowercase.
pub(super) fn lowercased(name: &str) -> Cow<'_, str> {
    let may_change = !name.is_ascii() || name.bytes().any(|byte| byte.is_ascii_uppercase());
    if !may_change {
        return Cow::Borrowed(name);
    }
    let lowercase = name.to_lowercase();
    if lowercase == name { Cow::Borrowed(name) } else { Cow::Owned(lowercase) }
}

fn parse_row(line: usize, row: &'static str) -> Result<CatalogEntry, CatalogParseError> {
    let fields: Vec<&'static str> = row.split('\t').collect();
    let [model, provider, mode, input, output, cache_read, cache_write, reasoning] = fields[..]
    else {
        return Err(CatalogParseError::FieldCount { line, found: fields.len() });
    };
    if model.is_empty() {
        return Err(CatalogParseError::EmptyField { line, field: "model" });
    }
    if provider.is_empty() {
        return Err(CatalogParseError::EmptyField { line, field: "provider" });
    }
    let input = parse_price(line, "input", input)?;
    let output = parse_price(line, "output", output)?;
    if input.is_none() && output.is_none() {
        return Err(CatalogParseError::Unpriced { line });
    }
    Ok(CatalogEntry {
        model,
        provider,
        mode: (!mode.is_empty()).then_some(mode),
        price: Price {
            input: input.unwrap_or(0.0),
            output: output.unwrap_or(0.0),
            cache_read: parse_price(line, "cache_read", cache_read)?,
            cache_write: parse_price(line, "cache_write", cache_write)?,
            reasoning: parse_price(line, "reasoning", reasoning)?,
        },
        price_id: format!("catalog:{model}"),
    })
}

fn parse_price(
    line: usize,
    field: &'static str,
    cell: &str,
) -> Result<Option<f64>, CatalogParseError> {
    if cell.is_empty() {
        return Ok(None);
    }
    match cell.parse::<f64>() {
        Ok(price) if price.is_finite() && price >= 0.0 => Ok(Some(price)),
        _ => Err(CatalogParseError::BadPrice { line, field, value: cell.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> &'static CatalogEntry {
        let catalog = Catalog::builtin();
        let index = catalog.find(name).unwrap_or_else(|| panic!("{name} missing"));
        catalog.entry(index)
    }

    #[test]
    fn embedded_catalog_parses() {
        if let Err(error) = Catalog::parse(SOURCE) {
            panic!("catalog.tsv does not parse: {error}");
        }
    }

    #[test]
    fn row_count_is_sane_and_matches_the_declared_count() {
        let catalog = Catalog::builtin();
        let rows = catalog.entries().len();
        assert!(
            (3_000..20_000).contains(&rows),
            "{rows} rows: the derivation lost or invented entries"
        );
        // The script writes "# source sha256 …, N rows" into the header.
        let declared = SOURCE
            .lines()
            .take_while(|line| line.starts_with('#'))
            .find_map(|line| line.strip_suffix(" rows")?.rsplit(' ').next())
            .and_then(|count| count.parse::<usize>().ok());
        assert_eq!(declared, Some(rows), "declared row count vs parsed rows");
    }

    #[test]
    fn gpt_4o_has_its_published_price() {
        let gpt_4o = entry("gpt-4o");
        assert_eq!(gpt_4o.model, "gpt-4o");
        assert_eq!(gpt_4o.provider, "openai");
        assert_eq!(gpt_4o.mode, Some("chat"));
        assert_eq!(
            gpt_4o.price,
            Price {
                input: 2.5e-06,
                output: 1e-05,
                cache_read: Some(1.25e-06),
                cache_write: None,
                reasoning: None,
            }
        );
        assert_eq!(gpt_4o.price_id(), "catalog:gpt-4o");
    }

    #[test]
    fn cache_write_and_reasoning_prices_are_carried() {
        let priced_cache_writes = Catalog::builtin()
            .entries()
            .iter()
            .filter(|entry| entry.price.cache_write.is_some())
            .count();
        let priced_reasoning = Catalog::builtin()
            .entries()
            .iter()
            .filter(|entry| entry.price.reasoning.is_some())
            .count();
        assert!(priced_cache_writes > 100, "{priced_cache_writes}");
        assert!(priced_reasoning > 10, "{priced_reasoning}");
        assert_eq!(entry("dashscope/qwen-plus-2025-04-28").price.reasoning, Some(4e-6));
    }

    #[test]
    fn find_falls_back_to_case_insensitive_names() {
        let catalog = Catalog::builtin();
        assert_eq!(catalog.find("GPT-4o"), catalog.find("gpt-4o"));
        let mixed_case = catalog
            .entries()
            .iter()
            .find(|entry| entry.model.bytes().any(|byte| byte.is_ascii_uppercase()))
            .expect("the catalog has mixed-case keys");
        let index = catalog.find(&mixed_case.model.to_ascii_lowercase());
        assert_eq!(index.map(|index| catalog.entry(index).model), Some(mixed_case.model));
        assert_eq!(catalog.find("no-such-model"), None);
    }

    #[test]
    fn malformed_tables_are_rejected_with_their_line() {
        let cases: [(&'static str, &str); 6] = [
            ("a\tb\n", "line 1: expected the column header"),
            (
                "# c\nmodel\tprovider\tmode\tinput\toutput\tcache_read\tcache_write\treasoning\nm\tp\tchat\t1e-6\n",
                "line 3: expected 8 tab-separated fields, found 4",
            ),
            (
                "model\tprovider\tmode\tinput\toutput\tcache_read\tcache_write\treasoning\nm\t\tchat\t1e-6\t\t\t\t\n",
                "line 2: empty provider",
            ),
            (
                "model\tprovider\tmode\tinput\toutput\tcache_read\tcache_write\treasoning\nm\tp\tchat\t-1\t\t\t\t\n",
                "line 2: input \"-1\" is not a finite number >= 0",
            ),
            (
                "model\tprovider\tmode\tinput\toutput\tcache_read\tcache_write\treasoning\nm\tp\tchat\t\t\t1e-6\t\t\n",
                "line 2: neither an input nor an output price",
            ),
            (
                "model\tprovider\tmode\tinput\toutput\tcache_read\tcache_write\treasoning\nm\tp\t\t1\t1\t\t\t\nm\tp\t\t1\t1\t\t\t\n",
                "line 3: model \"m\" already on line 2",
            ),
        ];
        for (source, expected) in cases {
            let error = Catalog::parse(source).expect_err(source);
            assert!(
                error.to_string().starts_with(expected),
                "{error} should start with {expected}"
            );
        }
    }

    #[test]
    fn missing_input_or_output_price_counts_as_zero() {
        let source = "model\tprovider\tmode\tinput\toutput\tcache_read\tcache_write\treasoning\n\
                      img\tazure\timage_generation\t5e-06\t\t\t\t\n";
        let catalog = Catalog::parse(source).expect("valid table");
        let price = catalog.entry(0).price;
        assert_eq!((price.input, price.output), (5e-6, 0.0));
        assert_eq!(catalog.entry(0).mode, Some("image_generation"));
    }
}
