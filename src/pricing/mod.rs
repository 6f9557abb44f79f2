//! Pricing: the built-in price catalog, user price entries from the config
//! file, the rules that pick a price for a call, and the cost arithmetic.
//!
//! The catalog (`catalog.tsv`) is derived from LiteLLM's
//! `model_prices_and_context_window.json` (MIT licence, see `NOTICE`) by
//! `scripts/derive_price_catalog.py`, embedded in the binary and parsed once.
//! Everything here is pure and synchronous; a [`PriceTable`] is `Send + Sync`
//! and meant to be shared behind an `Arc`.
//!
//! # Matching order
//!
//! [`PriceTable::lookup`] takes a model name, the record's provider (an empty
//! provider counts as none) and the call's time in unix milliseconds, and tries
//! in this order:
//!
//! 1. **User entries with an exact `model`** that are in effect at the call's
//!    time (`effective_from <= at`, or no `effective_from`) and whose provider
//!    matches. The latest effective one wins; at the same date an entry naming
//!    the record's provider beats one naming none. These override the catalog
//!    from their effective date; before it the catalog applies. If no entry has
//!    the exact name, the name is compared case-insensitively.
//! 2. **Catalog, exact model name**, then the same name compared
//!    case-insensitively.
//! 3. **Catalog, `provider/model`** when a provider is given: provider
//!    `azure`, model `gpt-4o` → `azure/gpt-4o`. This is tried when step 2
//!    found nothing, *and also* when step 2 found an entry whose own provider
//!    is a different one (`gpt-4o` is OpenAI's entry, so an Azure call is
//!    priced by `azure/gpt-4o` when the catalog has it, and by `gpt-4o`
//!    otherwise). Then, if the model name has a `/` prefix (`openrouter/openai/gpt-4o`)
//!    and steps 2–3 found nothing for it, the part after the last `/` is
//!    tried as a plain name: user exact entries (step 1), then steps 2–3.
//! 4. **User `pattern` entries**, the first in config order that matches the
//!    whole model name, is in effect and whose provider matches. Because the
//!    first one wins, list a newer pattern entry before the older one it
//!    replaces.
//! 5. Nothing: the caller records cost 0 and flags the call unpriced.
//!
//! A user entry's `provider` matches a record with the same provider (ASCII
//! case-insensitive) or a record without a provider; an entry without a
//! provider matches every record. Provider names are compared the same way
//! against the catalog's `litellm_provider`.
//!
//! # Price ids
//!
//! Every priced call stores the id of the price it used, so a past window can
//! be audited and re-priced:
//!
//! - `catalog:<catalog key>`, e.g. `catalog:azure/gpt-4o`;
//! - `config:<index>:<model or pattern>@<effective_from or always>`, e.g.
//!   `config:0:gpt-4o@2025-03-01` or `config:2:^claude-.*$@always`, where
//!   `index` is the 0-based position of the entry in the config's price list
//!   and `effective_from` is as written in the config.

mod catalog;
mod cost;
mod error;
mod table;
mod user;

pub use catalog::CatalogEntry;
pub use cost::{Price, TokenCounts, cost};
pub use error::PricingError;
pub use table::{PriceMatch, PriceTable};
pub use user::UserPrice;
