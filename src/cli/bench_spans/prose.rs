//! Prose for the message content of `--shape sdk` spans: sentences of a few
//! hundred common English words, drawn by the bench's seeded generator, so
//! that content compresses as text does rather than as a repeated string
//! would; and the per-cycle letter substitution that keeps copies of one
//! template export from repeating each other byte for byte.

use crate::cli::bench::Rng;

/// Common English words, roughly most frequent first: `word` draws the
/// first ones more often, as text uses them.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "for", "on", "was", "with",
    "as", "are", "this", "be", "at", "have", "from", "or", "by", "not", "but", "what", "all",
    "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do",
    "how", "their", "if", "will", "up", "other", "about", "out", "many", "then", "them", "these",
    "so", "some", "her", "would", "make", "like", "him", "into", "time", "has", "look", "two",
    "more", "write", "go", "see", "number", "no", "way", "could", "people", "my", "than", "first",
    "water", "been", "call", "who", "its", "now", "find", "long", "down", "day", "did", "get",
    "come", "made", "may", "part", "over", "new", "after", "also", "account", "order", "invoice",
    "customer", "plan", "team", "report", "price", "service", "request", "support", "before",
    "should", "because", "through", "where", "most", "only", "just", "still", "again", "while",
    "since", "every", "under", "last", "never", "always", "often", "here", "why", "both", "between",
    "during", "without", "against", "around", "however", "another", "same", "few", "little", "much",
    "own", "such", "next", "early", "late", "small", "large", "great", "good", "right", "old",
    "high", "different", "important", "possible", "clear", "simple", "free", "full", "open", "sure",
    "ready", "recent", "current", "previous", "monthly", "annual", "billing", "payment", "refund",
    "charge", "credit", "card", "balance", "subscription", "upgrade", "downgrade", "renewal",
    "trial", "discount", "tax", "receipt", "address", "email", "password", "login", "access",
    "permission", "setting", "option", "feature", "update", "version", "release", "change", "issue",
    "problem", "error", "message", "answer", "question", "reply", "ticket", "case", "status",
    "detail", "note", "document", "page", "section", "guide", "policy", "rule", "limit", "usage",
    "quota", "storage", "file", "folder", "project", "user", "admin", "owner", "member", "group",
    "company", "office", "week", "month", "year", "today", "tomorrow", "yesterday", "morning",
    "evening", "hour", "minute", "moment", "place", "world", "country", "city", "system", "data",
    "record", "history", "search", "result", "list", "item", "product", "delivery", "shipping",
    "package", "return", "exchange", "warranty", "store", "check", "confirm", "explain", "describe",
    "help", "need", "want", "know", "think", "try", "keep", "let", "begin", "seem", "show", "hear",
    "play", "run", "move", "live", "believe", "bring", "happen", "provide", "include", "continue",
    "learn", "understand", "follow", "stop", "create", "read", "spend", "grow", "offer", "remember",
    "consider", "appear", "buy", "wait", "send", "expect", "build", "stay", "fall", "reach",
    "remain", "suggest", "raise", "pass", "sell", "require", "decide", "pull", "carefully",
    "quickly", "usually", "probably", "actually", "exactly", "already", "soon", "later", "together",
    "instead", "perhaps",
];

/// A word index: the minimum of two uniform draws, so that the first words
/// of the list come up far more often than the last, as in text.
fn word(rng: &mut Rng) -> &'static str {
    let n = WORDS.len() as u64;
    WORDS[rng.below(n).min(rng.below(n)) as usize]
}

/// One sentence of 4–19 words: capitalized, with the odd comma, ending in a
/// full stop, now and then a question or an exclamation.
fn sentence(rng: &mut Rng, out: &mut String) {
    let words = 4 + rng.below(16);
    for i in 0..words {
        let word = word(rng);
        if i == 0 {
            let mut chars = word.chars();
            out.extend(chars.next().map(|c| c.to_ascii_uppercase()));
            out.push_str(chars.as_str());
        } else {
            out.push(' ');
            out.push_str(word);
        }
        if i + 1 < words && i > 1 && rng.below(9) == 0 {
            out.push(',');
        }
    }
    out.push(match rng.below(20) {
        0 | 1 => '?',
        2 => '!',
        _ => '.',
    });
}

/// Whole sentences, at least `bytes` long (one sentence over at most).
pub(super) fn prose(rng: &mut Rng, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 160);
    while out.len() < bytes {
        if !out.is_empty() {
            out.push(' ');
        }
        sentence(rng, &mut out);
    }
    out
}

/// Prose of `min..max` bytes (a length drawn uniformly).
pub(super) fn prose_between(rng: &mut Rng, min: usize, max: usize) -> String {
    let bytes = min + rng.below((max - min).max(1) as u64) as usize;
    prose(rng, bytes)
}

/// Shortest stretch of prose characters a stamp rewrites: enough to leave
/// alone the short words that JSON keys, roles, names and enumerations are
/// made of.
pub(super) const MIN_RUN: usize = 48;

/// Characters of prose: letters, spaces and sentence punctuation. Quotes,
/// backslashes, digits, hyphens and underscores are not, so that a run never
/// reaches into JSON syntax, ids or attribute-style names.
fn is_prose(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || matches!(byte, b' ' | b',' | b'.' | b'?' | b'!')
}

/// The runs of prose characters at least `MIN_RUN` long in `text`, as
/// (start, length).
pub(super) fn runs(text: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, byte) in text.iter().chain(std::iter::once(&0)).enumerate() {
        match (is_prose(*byte), start) {
            (true, None) => start = Some(i),
            (false, Some(from)) => {
                if i - from >= MIN_RUN {
                    runs.push((from, i - from));
                }
                start = None;
            }
            _ => {}
        }
    }
    runs
}

/// A substitution of letters (the same for both cases), one per `cycle` of
/// the templates; cycle 0 leaves text as it is. A bijection changes no
/// statistics of the text a compressor sees within one export, but two
/// copies of a template in different cycles share no long strings.
pub(super) fn letter_substitution(cycle: u64) -> [u8; 256] {
    let mut table: [u8; 256] = std::array::from_fn(|i| i as u8);
    if cycle == 0 {
        return table;
    }
    let mut letters: [u8; 26] = std::array::from_fn(|i| b'a' + i as u8);
    let mut rng = Rng(cycle.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for i in (1..letters.len()).rev() {
        letters.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for (i, letter) in letters.iter().enumerate() {
        table[b'a' as usize + i] = *letter;
        table[b'A' as usize + i] = letter.to_ascii_uppercase();
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_reads_as_sentences_of_many_words() {
        let text = prose(&mut Rng(7), 2_000);
        assert!((2_000..2_200).contains(&text.len()), "{}", text.len());
        assert!(text.chars().next().unwrap().is_ascii_uppercase());
        assert!(text.ends_with(['.', '?', '!']));
        let distinct: std::collections::HashSet<&str> =
            text.split([' ', ',', '.', '?', '!']).filter(|w| !w.is_empty()).collect();
        assert!(distinct.len() > 120, "{} distinct words", distinct.len());
        // The whole text is one run of prose characters.
        assert_eq!(runs(text.as_bytes()), vec![(0, text.len())]);
    }

    #[test]
    fn runs_leave_json_syntax_ids_and_short_words_alone() {
        let text = br#"{"role":"user","content":"Short one.","id":"chatcmpl-17-000000000001-0","text":"This sentence is long enough to count as a run of prose, surely."}"#;
        let found: Vec<&[u8]> = runs(text).iter().map(|&(at, len)| &text[at..at + len]).collect();
        assert_eq!(
            found,
            vec![&b"This sentence is long enough to count as a run of prose, surely."[..]]
        );
    }

    #[test]
    fn letter_substitution_is_a_bijection_on_letters_only() {
        assert!(letter_substitution(0).iter().enumerate().all(|(i, b)| usize::from(*b) == i));
        let table = letter_substitution(3);
        let mut image: Vec<u8> = (b'a'..=b'z').map(|b| table[usize::from(b)]).collect();
        assert_ne!(image, (b'a'..=b'z').collect::<Vec<_>>());
        image.sort_unstable();
        assert_eq!(image, (b'a'..=b'z').collect::<Vec<_>>());
        for byte in 0..=255u8 {
            if !byte.is_ascii_alphabetic() {
                assert_eq!(table[usize::from(byte)], byte);
            }
        }
        assert_eq!(table[usize::from(b'Q')], table[usize::from(b'q')].to_ascii_uppercase());
    }
}
