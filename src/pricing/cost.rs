//! Per-token prices and the cost of one call under DESIGN.md's accounting
//! rules, where `input` tokens include the cached ones and `output` tokens
//! include the reasoning ones.

/// USD per token.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Price {
    /// Input tokens that were neither read from nor written to a prompt cache.
    pub input: f64,
    /// Output tokens (reasoning included unless `reasoning` is set).
    pub output: f64,
    /// Input tokens read from the prompt cache; `None`: charged as input.
    pub cache_read: Option<f64>,
    /// Input tokens written to the prompt cache; `None`: charged as input.
    pub cache_write: Option<f64>,
    /// Reasoning tokens, when priced apart from the rest of the output;
    /// `None`: they are charged as output.
    pub reasoning: Option<f64>,
}

/// Token counts of one call, as the record model carries them: `input`
/// includes `cache_read` and `cache_write`, `output` includes `reasoning`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

/// Cost in USD per DESIGN.md: (input − cache_read − cache_write) × input
/// price + cache_read × cache-read price (the input price when the entry has
/// none) + cache_write × cache-write price (the input price when none) +
/// output × output price; when the entry prices reasoning separately,
/// (output − reasoning) × output price + reasoning × reasoning price instead.
///
/// Subtractions saturate: a report claiming more cached than input tokens is
/// charged for its cached tokens and nothing else on the input side, never a
/// negative amount.
pub fn cost(price: &Price, tokens: &TokenCounts) -> f64 {
    let uncached_input =
        tokens.input.saturating_sub(tokens.cache_read).saturating_sub(tokens.cache_write);
    let input_cost = uncached_input as f64 * price.input
        + tokens.cache_read as f64 * price.cache_read.unwrap_or(price.input)
        + tokens.cache_write as f64 * price.cache_write.unwrap_or(price.input);
    let output_cost = match price.reasoning {
        Some(reasoning_price) => {
            tokens.output.saturating_sub(tokens.reasoning) as f64 * price.output
                + tokens.reasoning as f64 * reasoning_price
        }
        None => tokens.output as f64 * price.output,
    };
    input_cost + output_cost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64) {
        let tolerance = expected.abs() * 1e-12;
        assert!(
            (actual - expected).abs() <= tolerance,
            "cost {actual:e} differs from {expected:e}"
        );
    }

    /// gpt-4o's catalog price: cache reads priced, cache writes not.
    const GPT_4O: Price = Price {
        input: 2.5e-6,
        output: 1e-5,
        cache_read: Some(1.25e-6),
        cache_write: None,
        reasoning: None,
    };

    /// A Claude-style price with both cache prices.
    const CLAUDE: Price = Price {
        input: 3e-6,
        output: 1.5e-5,
        cache_read: Some(3e-7),
        cache_write: Some(3.75e-6),
        reasoning: None,
    };

    #[test]
    fn plain_call_is_input_plus_output() {
        let tokens = TokenCounts { input: 1000, output: 500, ..TokenCounts::default() };
        // 1000 × 2.5e-6 + 500 × 1e-5 = 0.0025 + 0.005
        assert_close(cost(&GPT_4O, &tokens), 0.0075);
    }

    #[test]
    fn zero_tokens_cost_nothing() {
        assert_eq!(cost(&CLAUDE, &TokenCounts::default()), 0.0);
    }

    #[test]
    fn cached_input_is_charged_at_cache_prices() {
        let tokens = TokenCounts {
            input: 1000,
            output: 200,
            cache_read: 600,
            cache_write: 100,
            reasoning: 0,
        };
        // uncached 300 × 3e-6 = 9e-4; read 600 × 3e-7 = 1.8e-4;
        // write 100 × 3.75e-6 = 3.75e-4; output 200 × 1.5e-5 = 3e-3.
        assert_close(cost(&CLAUDE, &tokens), 9e-4 + 1.8e-4 + 3.75e-4 + 3e-3);
        assert_close(cost(&CLAUDE, &tokens), 0.004455);
    }

    #[test]
    fn unpriced_cache_writes_are_charged_as_input() {
        let tokens =
            TokenCounts { input: 1000, output: 0, cache_read: 400, cache_write: 200, reasoning: 0 };
        // uncached 400 × 2.5e-6 = 1e-3; read 400 × 1.25e-6 = 5e-4;
        // write has no price: 200 × 2.5e-6 = 5e-4.
        assert_close(cost(&GPT_4O, &tokens), 2e-3);
    }

    #[test]
    fn entry_without_any_cache_price_charges_all_input_alike() {
        let price = Price {
            input: 1e-6,
            output: 2e-6,
            cache_read: None,
            cache_write: None,
            reasoning: None,
        };
        let cached = TokenCounts {
            input: 1000,
            output: 10,
            cache_read: 700,
            cache_write: 300,
            reasoning: 0,
        };
        let uncached = TokenCounts { input: 1000, output: 10, ..TokenCounts::default() };
        // 1000 × 1e-6 + 10 × 2e-6 either way.
        assert_close(cost(&price, &cached), 1.02e-3);
        assert_close(cost(&price, &uncached), 1.02e-3);
    }

    #[test]
    fn reasoning_priced_separately_when_the_entry_prices_it() {
        // dashscope/qwen-plus-2025-04-28 in the catalog.
        let price = Price {
            input: 4e-7,
            output: 1.2e-6,
            cache_read: None,
            cache_write: None,
            reasoning: Some(4e-6),
        };
        let tokens =
            TokenCounts { input: 100, output: 1000, reasoning: 400, ..TokenCounts::default() };
        // input 100 × 4e-7 = 4e-5; output 600 × 1.2e-6 = 7.2e-4;
        // reasoning 400 × 4e-6 = 1.6e-3.
        assert_close(cost(&price, &tokens), 4e-5 + 7.2e-4 + 1.6e-3);
        assert_close(cost(&price, &tokens), 2.36e-3);
    }

    #[test]
    fn reasoning_is_ordinary_output_when_the_entry_does_not_price_it() {
        let tokens =
            TokenCounts { input: 0, output: 1000, reasoning: 400, ..TokenCounts::default() };
        assert_close(cost(&GPT_4O, &tokens), 1000.0 * 1e-5);
    }

    #[test]
    fn subtractions_saturate_instead_of_going_negative() {
        // More cached than input tokens, more reasoning than output tokens.
        let tokens =
            TokenCounts { input: 100, output: 10, cache_read: 150, cache_write: 50, reasoning: 20 };
        let price = Price { reasoning: Some(2e-5), ..CLAUDE };
        // uncached 0; read 150 × 3e-7; write 50 × 3.75e-6; output 0; reasoning 20 × 2e-5.
        assert_close(cost(&price, &tokens), 4.5e-5 + 1.875e-4 + 4e-4);
    }
}
