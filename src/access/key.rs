//! API keys as text: `tally_<scope>_<id>_<secret>`, made from 256 random
//! bits, and stored only as an HMAC-SHA256 under the data dir's access
//! secret.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Scope;

const PREFIX: &str = "tally_";
/// Hex digits of a key's id.
const ID_DIGITS: usize = 12;

/// A key just made: the text handed to its owner once, and what is kept.
pub struct NewKey {
    pub id: String,
    pub text: String,
}

/// A new key of `scope`: a fresh id and 32 random bytes of secret.
pub fn generate(scope: Scope) -> NewKey {
    let id = hex::encode(rand::random::<[u8; ID_DIGITS / 2]>());
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let text = format!("{PREFIX}{}_{id}_{secret}", scope.as_str());
    NewKey { id, text }
}

/// The scope and id a key's text names, when it has a Tally key's shape.
pub fn parse(text: &str) -> Option<(Scope, &str)> {
    let rest = text.strip_prefix(PREFIX)?;
    let (scope, rest) = rest.split_once('_')?;
    let scope = Scope::parse(scope)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str| s.len() == ID_DIGITS && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id) && secret.len() == 43).then_some((scope, id))
}

/// The keyed hash a key is stored as.
pub fn hash(secret: &[u8], text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `text` hashes to `stored`, in time independent of where they
/// differ.
pub fn matches(secret: &[u8], text: &str, stored: &str) -> bool {
    let Ok(stored) = hex::decode(stored) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(text.as_bytes());
    mac.verify_slice(&stored).is_ok()
}

/// Whether a credential looks like a Tally key at all (so a wrong one is
/// told apart from some other system's token).
pub fn looks_like_key(text: &str) -> bool {
    text.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_scope_and_id_and_matches_only_its_hash() {
        let key = generate(Scope::Read);
        assert!(key.text.starts_with("tally_read_"), "{}", key.text);
        assert_eq!(parse(&key.text), Some((Scope::Read, key.id.as_str())));
        let stored = hash(b"secret", &key.text);
        assert!(matches(b"secret", &key.text, &stored));
        assert!(!matches(b"other secret", &key.text, &stored));
        let other = generate(Scope::Read);
        assert!(!matches(b"secret", &other.text, &stored));
        assert_ne!(key.text, other.text);
    }

    #[test]
    fn text_of_another_shape_is_not_a_key() {
        for text in
            ["", "tally_", "tally_read_", "tally_root_0123456789ab_x", "sk-abc", "tally_read_zz"]
        {
            assert_eq!(parse(text), None, "{text}");
        }
        let key = generate(Scope::Ingest);
        assert_eq!(parse(&key.text[..key.text.len() - 1]), None);
    }
}
