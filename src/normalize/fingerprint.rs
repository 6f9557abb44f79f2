//! Keyed fingerprints of API keys, so raw keys are never stored or shown.

use std::sync::Mutex;

use hmac::{Hmac, Mac};
use rustc_hash::FxHashMap;
use sha2::Sha256;

/// Hex characters kept from the HMAC: 48 bits, enough that distinct keys of
/// one deployment do not collide in practice, short enough to read.
const FINGERPRINT_HEX_CHARS: usize = 12;

/// Turns API keys into stable, non-reversible identifiers with a secret that
/// stays on the server (so a leaked database cannot be used to confirm a
/// guessed key).
pub struct KeyFingerprinter {
    mac: Hmac<Sha256>,
    /// Recent fingerprints: a deployment has few keys and each report carries
    /// one, so most HMACs need not be computed again. Cleared when full.
    recent: Mutex<FxHashMap<String, String>>,
}

/// Most API keys whose fingerprints are remembered.
const RECENT_KEYS: usize = 10_000;

impl KeyFingerprinter {
    pub fn new(secret: &[u8]) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac accepts keys of any length");
        Self { mac, recent: Mutex::new(FxHashMap::default()) }
    }

    pub fn fingerprint(&self, api_key: &str) -> String {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = recent.get(api_key) {
            return known.clone();
        }
        let fingerprint = self.compute(api_key);
        if recent.len() >= RECENT_KEYS {
            recent.clear();
        }
        recent.insert(api_key.to_owned(), fingerprint.clone());
        fingerprint
    }

    fn compute(&self, api_key: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(api_key.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = hex::encode(&digest[..FINGERPRINT_HEX_CHARS / 2]);
        out.insert_str(0, "k_");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_per_secret_and_never_the_key() {
        let a = KeyFingerprinter::new(b"secret-one");
        let b = KeyFingerprinter::new(b"secret-two");
        let fp = a.fingerprint("sk-live-123");
        assert_eq!(fp, a.fingerprint("sk-live-123"));
        assert_ne!(fp, b.fingerprint("sk-live-123"));
        assert_ne!(fp, a.fingerprint("sk-live-124"));
        assert_eq!(fp.len(), 2 + FINGERPRINT_HEX_CHARS);
        assert!(!fp.contains("sk-live"));
    }
}
