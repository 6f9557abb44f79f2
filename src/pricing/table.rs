//! The price table: the catalog plus validated user entries, and the lookup
//! that picks one price for a call in the order the module doc gives. Lookup
//! runs on the ingest hot path, so exact names cost a hash lookup and no
//! allocation, and pattern results are cached per model name.

use std::fmt;
use std::sync::{PoisonError, RwLock};

use regex::RegexSet;
use rustc_hash::FxHashMap;

use super::catalog::{Catalog, CatalogEntry, lowercased};
use super::cost::Price;
use super::error::PricingError;
use super::user::{Selector, UserEntry, UserPrice, validate};

/// How a price was found; stored with every call as its price id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriceMatch<'a> {
    /// `catalog:<key>` or `config:<index>:<model or pattern>@<effective_from or always>`.
    pub price_id: &'a str,
    pub price: &'a Price,
    /// The catalog entry's `litellm_provider`, or the user entry's provider.
    pub provider: Option<&'a str>,
}

/// Pattern-match results kept per model name before the cache is emptied.
const PATTERN_CACHE_CAPACITY: usize = 10_000;
/// Longer names are matched without caching, so a flood of huge made-up
/// names cannot pin megabytes in the cache.
const PATTERN_CACHE_MAX_NAME_LEN: usize = 256;
/// Room for a `provider/model` key on the stack.
const JOINED_KEY_CAPACITY: usize = 160;

/// The catalog plus the user's entries. `Send + Sync`; share it behind an
/// `Arc` and rebuild it when the config changes.
pub struct PriceTable {
    catalog: &'static Catalog,
    /// Validated user entries in config order (index = config index).
    user: Vec<UserEntry>,
    /// Exact `model` → indices into `user`.
    user_by_model: FxHashMap<String, Vec<usize>>,
    /// Lowercased `model` → indices into `user`, for names that differ only
    /// in case.
    user_by_lowercase_model: FxHashMap<String, Vec<usize>>,
    /// Indices into `user` of the pattern entries in config order; the i-th
    /// pattern of `pattern_set` belongs to `pattern_entries[i]`.
    pattern_entries: Vec<usize>,
    /// All patterns, anchored, in one set: one pass over a name tells which
    /// of them match. `None` when there are no pattern entries.
    pattern_set: Option<RegexSet>,
    /// Model name → positions in `pattern_set` that match it (often none).
    /// Read-mostly, emptied when it reaches `PATTERN_CACHE_CAPACITY`.
    pattern_cache: RwLock<FxHashMap<Box<str>, Box<[u32]>>>,
}

impl PriceTable {
    /// The built-in catalog alone.
    pub fn builtin() -> PriceTable {
        PriceTable {
            catalog: Catalog::builtin(),
            user: Vec::new(),
            user_by_model: FxHashMap::default(),
            user_by_lowercase_model: FxHashMap::default(),
            pattern_entries: Vec::new(),
            pattern_set: None,
            pattern_cache: RwLock::new(FxHashMap::default()),
        }
    }

    /// The built-in catalog plus the user's entries, which are validated
    /// first (see [`PricingError`]).
    pub fn new(user: &[UserPrice]) -> Result<PriceTable, PricingError> {
        let user = validate(user)?;
        let mut user_by_model: FxHashMap<String, Vec<usize>> = FxHashMap::default();
        let mut user_by_lowercase_model: FxHashMap<String, Vec<usize>> = FxHashMap::default();
        let mut pattern_entries = Vec::new();
        let mut anchored_patterns = Vec::new();
        for (position, entry) in user.iter().enumerate() {
            debug_assert_eq!(position, entry.index);
            match &entry.selector {
                Selector::Model(model) => {
                    user_by_model.entry(model.clone()).or_default().push(position);
                    user_by_lowercase_model
                        .entry(lowercased(model).into_owned())
                        .or_default()
                        .push(position);
                }
                Selector::Pattern(pattern) => {
                    pattern_entries.push(position);
                    anchored_patterns.push(format!(r"\A(?:{pattern})\z"));
                }
            }
        }
        let pattern_set = if anchored_patterns.is_empty() {
            None
        } else {
            let set = RegexSet::new(&anchored_patterns)
                .map_err(|reason| PricingError::PatternsTooLarge { reason })?;
            Some(set)
        };
        Ok(PriceTable {
            catalog: Catalog::builtin(),
            user,
            user_by_model,
            user_by_lowercase_model,
            pattern_entries,
            pattern_set,
            pattern_cache: RwLock::new(FxHashMap::default()),
        })
    }

    /// Number of catalog entries.
    pub fn len(&self) -> usize {
        self.catalog.entries().len()
    }

    /// Whether the catalog is empty (it never is; here for completeness).
    pub fn is_empty(&self) -> bool {
        self.catalog.entries().is_empty()
    }

    /// The built-in catalog, sorted by model name.
    pub fn catalog(&self) -> &[CatalogEntry] {
        self.catalog.entries()
    }

    /// The price for a call to `model` from `provider` at `at_ms` (unix
    /// milliseconds), found in the order the module doc gives, or `None`
    /// when the model is unknown.
    pub fn lookup(
        &self,
        model: &str,
        provider: Option<&str>,
        at_ms: i64,
    ) -> Option<PriceMatch<'_>> {
        let provider = provider.filter(|provider| !provider.is_empty());
        if let Some(found) = self.lookup_plain_name(model, provider, at_ms) {
            return Some(found);
        }
        if let Some((_, tail)) = model.rsplit_once('/')
            && !tail.is_empty()
            && let Some(found) = self.lookup_plain_name(tail, provider, at_ms)
        {
            return Some(found);
        }
        let position = self.user_pattern(model, provider, at_ms)?;
        Some(self.user_match(position))
    }

    /// Steps 1–3 for one name: user exact entries, then the catalog.
    fn lookup_plain_name(
        &self,
        name: &str,
        provider: Option<&str>,
        at_ms: i64,
    ) -> Option<PriceMatch<'_>> {
        if let Some(position) = self.user_exact(name, provider, at_ms) {
            return Some(self.user_match(position));
        }
        let index = self.catalog_index(name, provider)?;
        let entry = self.catalog.entry(index);
        Some(PriceMatch {
            price_id: entry.price_id(),
            price: &entry.price,
            provider: Some(entry.provider),
        })
    }

    fn user_match(&self, position: usize) -> PriceMatch<'_> {
        let entry = &self.user[position];
        PriceMatch {
            price_id: &entry.price_id,
            price: &entry.price,
            provider: entry.provider.as_deref(),
        }
    }

    /// Step 1: the user exact entry in effect with the latest
    /// `effective_from`; at equal dates the better provider fit, then the
    /// earlier entry.
    fn user_exact(&self, name: &str, provider: Option<&str>, at_ms: i64) -> Option<usize> {
        if self.user_by_model.is_empty() {
            return None;
        }
        if let Some(candidates) = self.user_by_model.get(name)
            && let Some(position) = self.best_exact(candidates, provider, at_ms)
        {
            return Some(position);
        }
        let candidates = self.user_by_lowercase_model.get(lowercased(name).as_ref())?;
        self.best_exact(candidates, provider, at_ms)
    }

    fn best_exact(
        &self,
        candidates: &[usize],
        provider: Option<&str>,
        at_ms: i64,
    ) -> Option<usize> {
        let mut best: Option<(usize, (Option<i64>, u8))> = None;
        for &position in candidates {
            let entry = &self.user[position];
            if !entry.in_effect(at_ms) {
                continue;
            }
            let Some(fit) = entry.provider_fit(provider) else {
                continue;
            };
            let rank = (entry.effective_ms, fit);
            // Candidates are in config order: only a strictly better rank
            // replaces an earlier entry.
            if best.is_none_or(|(_, best_rank)| rank > best_rank) {
                best = Some((position, rank));
            }
        }
        best.map(|(position, _)| position)
    }

    /// Steps 2–3: the catalog entry named `name`, unless a provider is given
    /// and the catalog has `provider/name` while `name`'s own entry belongs
    /// to another provider (or does not exist).
    fn catalog_index(&self, name: &str, provider: Option<&str>) -> Option<usize> {
        let exact = self.catalog.find(name);
        let Some(provider) = provider else {
            return exact;
        };
        if let Some(index) = exact
            && self.catalog.entry(index).provider.eq_ignore_ascii_case(provider)
        {
            return exact;
        }
        with_joined_key(provider, name, |key| self.catalog.find(key)).or(exact)
    }

    /// Step 4: the first pattern entry in config order that matches the
    /// whole name, is in effect and fits the provider.
    fn user_pattern(&self, model: &str, provider: Option<&str>, at_ms: i64) -> Option<usize> {
        let set = self.pattern_set.as_ref()?;
        if model.len() > PATTERN_CACHE_MAX_NAME_LEN {
            return self.first_pattern_in_effect(set.matches(model).iter(), provider, at_ms);
        }
        {
            let cache = self.pattern_cache.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(hits) = cache.get(model) {
                let hits = hits.iter().map(|&hit| hit as usize);
                return self.first_pattern_in_effect(hits, provider, at_ms);
            }
        }
        let hits: Box<[u32]> = set
            .matches(model)
            .iter()
            .map(|hit| u32::try_from(hit).expect("fewer than 2^32 patterns"))
            .collect();
        let found =
            self.first_pattern_in_effect(hits.iter().map(|&hit| hit as usize), provider, at_ms);
        let mut cache = self.pattern_cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= PATTERN_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(model.into(), hits);
        found
    }

    /// `hits` are positions in `pattern_set`, ascending, i.e. in config order.
    fn first_pattern_in_effect(
        &self,
        hits: impl Iterator<Item = usize>,
        provider: Option<&str>,
        at_ms: i64,
    ) -> Option<usize> {
        hits.map(|hit| self.pattern_entries[hit]).find(|&position| {
            let entry = &self.user[position];
            entry.in_effect(at_ms) && entry.provider_fit(provider).is_some()
        })
    }

    #[cfg(test)]
    fn cached_pattern_names(&self) -> usize {
        self.pattern_cache.read().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl fmt::Debug for PriceTable {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PriceTable")
            .field("catalog_entries", &self.catalog.entries().len())
            .field("user_entries", &self.user.len())
            .field("pattern_entries", &self.pattern_entries.len())
            .finish_non_exhaustive()
    }
}

/// Calls `f` with `prefix/name`, built on the stack when it fits.
fn with_joined_key<R>(prefix: &str, name: &str, f: impl FnOnce(&str) -> R) -> R {
    let len = prefix.len() + 1 + name.len();
    let mut buffer = [0_u8; JOINED_KEY_CAPACITY];
    if len <= buffer.len() {
        buffer[..prefix.len()].copy_from_slice(prefix.as_bytes());
        buffer[prefix.len()] = b'/';
        buffer[prefix.len() + 1..len].copy_from_slice(name.as_bytes());
        // Two strings joined by an ASCII byte are valid UTF-8.
        if let Ok(key) = std::str::from_utf8(&buffer[..len]) {
            return f(key);
        }
    }
    f(&format!("{prefix}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARCH_2025: i64 = 1_740_787_200_000; // 2025-03-01T00:00:00Z
    const DAY_MS: i64 = 86_400_000;

    fn model_price(model: &str, input_per_mtok: f64) -> UserPrice {
        UserPrice {
            model: Some(model.to_owned()),
            input_per_mtok,
            output_per_mtok: 1.0,
            ..UserPrice::default()
        }
    }

    fn pattern_price(pattern: &str, input_per_mtok: f64) -> UserPrice {
        UserPrice {
            model: None,
            pattern: Some(pattern.to_owned()),
            ..model_price("", input_per_mtok)
        }
    }

    fn price_id(
        table: &PriceTable,
        model: &str,
        provider: Option<&str>,
        at_ms: i64,
    ) -> Option<String> {
        table.lookup(model, provider, at_ms).map(|found| found.price_id.to_owned())
    }

    #[test]
    fn price_table_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PriceTable>();
        assert_send_sync::<std::sync::Arc<PriceTable>>();
    }

    #[test]
    fn builtin_finds_catalog_models_by_exact_name() {
        let table = PriceTable::builtin();
        assert_eq!(table.len(), table.catalog().len());
        assert!(!table.is_empty());
        let found = table.lookup("gpt-4o", None, MARCH_2025).expect("priced");
        assert_eq!(found.price_id, "catalog:gpt-4o");
        assert_eq!(found.provider, Some("openai"));
        assert_eq!(found.price.input, 2.5e-06);
        assert_eq!(found.price.output, 1e-05);
        assert_eq!(found.price.cache_read, Some(1.25e-06));
    }

    #[test]
    fn catalog_name_is_also_tried_lowercased() {
        let table = PriceTable::builtin();
        assert_eq!(price_id(&table, "GPT-4o", None, 0).as_deref(), Some("catalog:gpt-4o"));
    }

    #[test]
    fn provider_prefixed_catalog_name() {
        let table = PriceTable::builtin();
        // gpt-4o's own entry is OpenAI's: an Azure call takes azure/gpt-4o.
        let azure = table.lookup("gpt-4o", Some("azure"), 0).expect("priced");
        assert_eq!(azure.price_id, "catalog:azure/gpt-4o");
        assert_eq!(azure.provider, Some("azure"));
        // Provider names compare case-insensitively.
        assert_eq!(
            price_id(&table, "gpt-4o", Some("Azure"), 0).as_deref(),
            Some("catalog:azure/gpt-4o")
        );
        // The model's own provider, an empty provider, or one without a
        // prefixed entry: the plain name.
        assert_eq!(
            price_id(&table, "gpt-4o", Some("openai"), 0).as_deref(),
            Some("catalog:gpt-4o")
        );
        assert_eq!(price_id(&table, "gpt-4o", Some(""), 0).as_deref(), Some("catalog:gpt-4o"));
        assert_eq!(
            price_id(&table, "gpt-4o", Some("no-such-provider"), 0).as_deref(),
            Some("catalog:gpt-4o")
        );
        // A name only the prefixed form knows.
        let only_prefixed = table
            .catalog()
            .iter()
            .find_map(|entry| {
                let (prefix, rest) = entry.model.split_once('/')?;
                (prefix == entry.provider
                    && table.catalog.find(rest).is_none()
                    && !rest.contains('/'))
                .then_some((prefix, rest, entry.model))
            })
            .expect("the catalog has provider-only names");
        let (provider, rest, key) = only_prefixed;
        assert_eq!(price_id(&table, rest, None, 0), None);
        assert_eq!(price_id(&table, rest, Some(provider), 0), Some(format!("catalog:{key}")));
    }

    #[test]
    fn long_provider_and_model_names_fall_back_to_a_heap_key() {
        let long_model = "m".repeat(JOINED_KEY_CAPACITY * 2);
        let table = PriceTable::builtin();
        assert_eq!(table.lookup(&long_model, Some("azure"), 0), None);
        assert_eq!(with_joined_key("azure", &long_model, str::len), long_model.len() + 6);
        assert_eq!(with_joined_key("azure", "gpt-4o", str::to_owned), "azure/gpt-4o");
    }

    #[test]
    fn unknown_slash_prefix_falls_back_to_the_trailing_name() {
        let table = PriceTable::builtin();
        assert_eq!(
            price_id(&table, "my-gateway/team-a/gpt-4o", None, 0).as_deref(),
            Some("catalog:gpt-4o")
        );
        // The trailing name goes through the provider step too.
        assert_eq!(
            price_id(&table, "my-gateway/gpt-4o", Some("azure"), 0).as_deref(),
            Some("catalog:azure/gpt-4o")
        );
        // A known prefixed name is used as it is.
        assert_eq!(
            price_id(&table, "azure/gpt-4o", None, 0).as_deref(),
            Some("catalog:azure/gpt-4o")
        );
        assert_eq!(price_id(&table, "my-gateway/", None, 0), None);
        assert_eq!(price_id(&table, "my-gateway/no-such-model", None, 0), None);
    }

    #[test]
    fn unknown_model_is_none() {
        let table = PriceTable::new(&[model_price("house-model", 1.0)]).expect("valid");
        assert_eq!(table.lookup("no-such-model-anywhere", None, 0), None);
        assert_eq!(table.lookup("no-such-model-anywhere", Some("openai"), 0), None);
        assert_eq!(table.lookup("", None, 0), None);
    }

    #[test]
    fn user_exact_entry_overrides_the_catalog() {
        let table = PriceTable::new(&[model_price("gpt-4o", 2.0)]).expect("valid");
        let found = table.lookup("gpt-4o", Some("openai"), 0).expect("priced");
        assert_eq!(found.price_id, "config:0:gpt-4o@always");
        assert_eq!(found.price.input, 2e-6);
        assert_eq!(found.provider, None);
        // Also for a differently cased name, which would otherwise reach the
        // catalog's gpt-4o.
        assert_eq!(price_id(&table, "GPT-4o", None, 0).as_deref(), Some("config:0:gpt-4o@always"));
        // And for the trailing name of an unknown prefixed one.
        assert_eq!(
            price_id(&table, "my-gateway/gpt-4o", None, 0).as_deref(),
            Some("config:0:gpt-4o@always")
        );
        // A user entry for gpt-4o does not capture a catalog name that merely
        // ends in it.
        assert_eq!(
            price_id(&table, "azure/gpt-4o", None, 0).as_deref(),
            Some("catalog:azure/gpt-4o")
        );
    }

    #[test]
    fn user_exact_entry_applies_from_its_effective_date() {
        let table = PriceTable::new(&[UserPrice {
            effective_from: Some("2025-03-01".into()),
            ..model_price("gpt-4o", 2.0)
        }])
        .expect("valid");
        assert_eq!(
            price_id(&table, "gpt-4o", None, MARCH_2025 - 1).as_deref(),
            Some("catalog:gpt-4o")
        );
        assert_eq!(
            price_id(&table, "gpt-4o", None, MARCH_2025).as_deref(),
            Some("config:0:gpt-4o@2025-03-01")
        );
        assert_eq!(
            price_id(&table, "gpt-4o", None, MARCH_2025 + DAY_MS).as_deref(),
            Some("config:0:gpt-4o@2025-03-01")
        );
    }

    #[test]
    fn latest_effective_user_entry_wins_whatever_the_config_order() {
        let table = PriceTable::new(&[
            UserPrice { effective_from: Some("2025-04-01".into()), ..model_price("house", 3.0) },
            model_price("house", 1.0),
            UserPrice { effective_from: Some("2025-03-01".into()), ..model_price("house", 2.0) },
        ])
        .expect("valid");
        let at = |ms| price_id(&table, "house", None, ms);
        assert_eq!(at(0).as_deref(), Some("config:1:house@always"));
        assert_eq!(at(MARCH_2025).as_deref(), Some("config:2:house@2025-03-01"));
        assert_eq!(at(MARCH_2025 + 31 * DAY_MS).as_deref(), Some("config:0:house@2025-04-01"));
    }

    #[test]
    fn user_entry_provider_filter() {
        let table = PriceTable::new(&[
            UserPrice { provider: Some("azure".into()), ..model_price("house", 2.0) },
            model_price("house", 1.0),
            UserPrice { provider: Some("bedrock".into()), ..model_price("only-bedrock", 1.0) },
        ])
        .expect("valid");
        // Same date: the entry naming the record's provider beats the generic one…
        let azure = table.lookup("house", Some("AZURE"), 0).expect("priced");
        assert_eq!(azure.price_id, "config:0:house@always");
        assert_eq!(azure.provider, Some("azure"));
        // …a record from another provider or from none takes the generic one.
        assert_eq!(
            price_id(&table, "house", Some("openai"), 0).as_deref(),
            Some("config:1:house@always")
        );
        assert_eq!(price_id(&table, "house", None, 0).as_deref(), Some("config:1:house@always"));
        // A provider-only entry applies to records without a provider, not
        // to records from another one.
        assert_eq!(
            price_id(&table, "only-bedrock", None, 0).as_deref(),
            Some("config:2:only-bedrock@always")
        );
        assert_eq!(price_id(&table, "only-bedrock", Some("openai"), 0), None);
    }

    #[test]
    fn newer_generic_entry_beats_older_provider_entry() {
        let table = PriceTable::new(&[
            UserPrice { provider: Some("azure".into()), ..model_price("house", 2.0) },
            UserPrice { effective_from: Some("2025-03-01".into()), ..model_price("house", 1.0) },
        ])
        .expect("valid");
        assert_eq!(
            price_id(&table, "house", Some("azure"), 0).as_deref(),
            Some("config:0:house@always")
        );
        assert_eq!(
            price_id(&table, "house", Some("azure"), MARCH_2025).as_deref(),
            Some("config:1:house@2025-03-01")
        );
    }

    #[test]
    fn patterns_come_after_the_catalog() {
        let table = PriceTable::new(&[pattern_price("gpt-4o.*", 9.0)]).expect("valid");
        assert_eq!(price_id(&table, "gpt-4o", None, 0).as_deref(), Some("catalog:gpt-4o"));
        assert_eq!(
            price_id(&table, "gpt-4o-house-finetune", None, 0).as_deref(),
            Some("config:0:gpt-4o.*@always")
        );
    }

    #[test]
    fn patterns_match_the_whole_name() {
        let table = PriceTable::new(&[pattern_price("house-[0-9]+", 1.0)]).expect("valid");
        assert_eq!(
            price_id(&table, "house-42", None, 0).as_deref(),
            Some("config:0:house-[0-9]+@always")
        );
        assert_eq!(price_id(&table, "my-house-42", None, 0), None);
        assert_eq!(price_id(&table, "house-42-b", None, 0), None);
        // The unknown prefix is dropped for the catalog, not for patterns:
        // a pattern sees the full name.
        assert_eq!(price_id(&table, "gw/house-42", None, 0), None);
    }

    #[test]
    fn first_pattern_in_config_order_in_effect_and_fitting_wins() {
        let table = PriceTable::new(&[
            UserPrice {
                effective_from: Some("2025-03-01".into()),
                ..pattern_price("house-.*", 3.0)
            },
            UserPrice { provider: Some("azure".into()), ..pattern_price("house-.*", 2.0) },
            pattern_price("house-.*", 1.0),
            pattern_price("house-a", 0.5),
        ])
        .expect("valid");
        let at = |provider, ms| price_id(&table, "house-a", provider, ms);
        assert_eq!(at(None, MARCH_2025).as_deref(), Some("config:0:house-.*@2025-03-01"));
        assert_eq!(at(Some("azure"), 0).as_deref(), Some("config:1:house-.*@always"));
        assert_eq!(at(Some("openai"), 0).as_deref(), Some("config:2:house-.*@always"));
        assert_eq!(at(None, 0).as_deref(), Some("config:1:house-.*@always"));
        // The same answers from the cache on a second round.
        assert_eq!(at(Some("openai"), 0).as_deref(), Some("config:2:house-.*@always"));
        assert_eq!(at(None, MARCH_2025).as_deref(), Some("config:0:house-.*@2025-03-01"));
    }

    #[test]
    fn user_exact_beats_pattern_and_pattern_fills_in_before_exact_date() {
        let table = PriceTable::new(&[
            pattern_price("house-.*", 1.0),
            UserPrice { effective_from: Some("2025-03-01".into()), ..model_price("house-a", 2.0) },
        ])
        .expect("valid");
        assert_eq!(
            price_id(&table, "house-a", None, 0).as_deref(),
            Some("config:0:house-.*@always")
        );
        assert_eq!(
            price_id(&table, "house-a", None, MARCH_2025).as_deref(),
            Some("config:1:house-a@2025-03-01")
        );
    }

    #[test]
    fn patterns_are_case_sensitive_unless_asked() {
        let table =
            PriceTable::new(&[pattern_price("(?i)house-.*", 1.0), pattern_price("shed", 1.0)])
                .expect("valid");
        assert!(table.lookup("HOUSE-A", None, 0).is_some());
        assert!(table.lookup("SHED", None, 0).is_none());
    }

    #[test]
    fn pattern_cache_is_bounded() {
        let table = PriceTable::new(&[pattern_price("house-.*", 1.0)]).expect("valid");
        for number in 0..PATTERN_CACHE_CAPACITY + 10 {
            let model = format!("unknown-{number}");
            assert_eq!(table.lookup(&model, None, 0), None);
            assert!(table.cached_pattern_names() <= PATTERN_CACHE_CAPACITY);
        }
        assert_eq!(table.cached_pattern_names(), 10);
        // Overlong names are matched but not cached.
        let long_name = format!("house-{}", "x".repeat(PATTERN_CACHE_MAX_NAME_LEN));
        assert!(table.lookup(&long_name, None, 0).is_some());
        assert_eq!(table.cached_pattern_names(), 10);
    }

    #[test]
    fn catalog_only_tables_never_touch_the_pattern_cache() {
        let table = PriceTable::builtin();
        assert_eq!(table.lookup("unknown", None, 0), None);
        assert_eq!(table.cached_pattern_names(), 0);
    }

    #[test]
    fn new_reports_the_first_bad_entry() {
        let error = PriceTable::new(&[model_price("ok", 1.0), pattern_price("(", 1.0)])
            .expect_err("bad regex");
        assert!(matches!(error, PricingError::BadPattern { index: 1, .. }), "{error:?}");
        assert!(
            error.to_string().starts_with("price entry 1: `pattern` \"(\" is not a valid regex")
        );
    }

    #[test]
    fn debug_output_summarises() {
        let table =
            PriceTable::new(&[pattern_price("a", 1.0), model_price("b", 1.0)]).expect("valid");
        let debug = format!("{table:?}");
        assert!(debug.contains("user_entries: 2"), "{debug}");
        assert!(debug.contains("pattern_entries: 1"), "{debug}");
    }
}
