//! Pseudonymised customer ids (`--pseudonymize`).
//!
//! Input: a secret key, from the file `--pseudonym-key-file` names or else
//! the environment variable [`KEY_ENV`]. Output: for each customer id (as
//! the text ingest gives it, so the integer 42 and the text "42" agree) its
//! pseudonym, the first [`PSEUDONYM_BYTES`] bytes of HMAC-SHA-256(key, id)
//! in unpadded URL-safe base64 (RFC 4648 §5): 16 characters of
//! `A–Z a–z 0–9 - _`, case-sensitive. 16 characters keep a pseudonym within
//! the sort's 16-byte text prefix, so sorting by customer costs what it
//! costs with short raw ids.
//!
//! Ingest replaces every customer id with its pseudonym before anything is
//! counted or written, so no table, manifest or report.html of the run
//! holds a raw id. The same key gives the same pseudonym in every run, so
//! tables still join night to night; without the key a pseudonym cannot be
//! turned back into an id or made from one. 96 bits make two customers
//! sharing a pseudonym vanishingly unlikely (about 6 in 10^12 for a billion
//! customers).
//!
//! The key is never written anywhere: the manifest names only its
//! [`Pseudonymizer::key_id`], a keyed hash of a fixed text, which tells
//! whether two runs used the same key without telling the key.

use std::path::Path;

use datafusion::arrow::array::{Array, StringArray};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// The environment variable a key is read from when no key file is named.
pub const KEY_ENV: &str = "RECUR_PSEUDONYM_KEY";
/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;
/// Bytes of the HMAC kept in a pseudonym.
pub const PSEUDONYM_BYTES: usize = 12;
/// Characters of a pseudonym: [`PSEUDONYM_BYTES`] in base64.
pub const PSEUDONYM_CHARS: usize = PSEUDONYM_BYTES / 3 * 4;

/// Turns customer ids into pseudonyms under one key.
#[derive(Clone)]
pub struct Pseudonymizer {
    mac: Hmac<Sha256>,
    key_id: String,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonymizer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// In the manifest: what was done and which key, never the key.
impl serde::Serialize for Pseudonymizer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Pseudonymizer", 2)?;
        st.serialize_field("method", "HMAC-SHA-256, first 12 bytes, base64url")?;
        st.serialize_field("key_id", &self.key_id)?;
        st.end()
    }
}

impl Pseudonymizer {
    /// A pseudonymizer under `key` (at least [`MIN_KEY_BYTES`] bytes).
    pub fn new(key: &[u8]) -> std::result::Result<Self, String> {
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key has {} bytes; give at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)",
                key.len()
            ));
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .map_err(|e| format!("the key cannot be used: {e}"))?;
        let mut id = mac.clone();
        id.update(b"\0recur pseudonym key id");
        let key_id = hex::encode(&id.finalize().into_bytes()[..8]);
        Ok(Pseudonymizer { mac, key_id })
    }

    /// The key from `key_file` (its bytes, without a trailing newline) or,
    /// when none is named, from [`KEY_ENV`]; an error names where it looked.
    pub fn load(key_file: Option<&Path>) -> Result<Self> {
        let (key, from) = match key_file {
            Some(path) => {
                let mut bytes = std::fs::read(path).map_err(|e| {
                    Error::param(
                        "--pseudonym-key-file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                (bytes, format!("the key file {}", path.display()))
            }
            None => match std::env::var_os(KEY_ENV) {
                Some(v) => (v.into_encoded_bytes(), format!("${KEY_ENV}")),
                None => {
                    return Err(Error::param(
                        "--pseudonymize",
                        format!(
                            "needs a key: set {KEY_ENV} or name a file with --pseudonym-key-file"
                        ),
                    ));
                }
            },
        };
        Self::new(&key).map_err(|e| Error::param("--pseudonymize", format!("{from}: {e}")))
    }

    /// Names the key without telling it: 16 hex characters.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The pseudonym of one id.
    pub fn pseudonym(&self, id: &str) -> String {
        let mut buf = [0; PSEUDONYM_CHARS];
        self.encode(id, &mut buf).to_string()
    }

    /// Writes the pseudonym of `id` into `buf`, without allocating.
    fn encode<'b>(&self, id: &str, buf: &'b mut [u8; PSEUDONYM_CHARS]) -> &'b str {
        use base64::Engine;
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let written = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(&digest[..PSEUDONYM_BYTES], buf)
            .expect("12 bytes are 16 base64 characters");
        debug_assert_eq!(written, PSEUDONYM_CHARS);
        std::str::from_utf8(buf).expect("base64 is ASCII")
    }

    /// The pseudonyms of a column of ids, nulls kept.
    pub fn column(&self, ids: &StringArray) -> StringArray {
        let mut out = datafusion::arrow::array::StringBuilder::with_capacity(
            ids.len(),
            ids.len() * PSEUDONYM_CHARS,
        );
        let mut buf = [0; PSEUDONYM_CHARS];
        for id in ids.iter() {
            match id {
                Some(id) => out.append_value(self.encode(id, &mut buf)),
                None => out.append_null(),
            }
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_stable_and_short_keys_refused() {
        let a = Pseudonymizer::new(b"0123456789abcdef").unwrap();
        let a2 = Pseudonymizer::new(b"0123456789abcdef").unwrap();
        let b = Pseudonymizer::new(b"0123456789abcdeg").unwrap();
        assert_eq!(a.pseudonym("C1"), a2.pseudonym("C1"));
        assert_ne!(a.pseudonym("C1"), b.pseudonym("C1"));
        assert_ne!(a.pseudonym("C1"), a.pseudonym("C2"));
        assert_eq!(a.pseudonym("C1").len(), PSEUDONYM_CHARS);
        assert_eq!(a.key_id(), a2.key_id());
        assert_ne!(a.key_id(), b.key_id());
        assert!(Pseudonymizer::new(b"short").is_err());
        let shown = format!("{a:?} {}", serde_json::to_string(&a).unwrap());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn matches_the_rfc_4231_vector() {
        // RFC 4231 test case 2 has a 4-byte key; case 1's 20-byte key fits:
        // key 0x0b × 20, data "Hi There".
        let p = Pseudonymizer::new(&[0x0b; 20]).unwrap();
        // its HMAC begins b0344c61d8db38535ca8afce: in base64url
        assert_eq!(p.pseudonym("Hi There"), "sDRMYdjbOFNcqK_O");
    }
}
