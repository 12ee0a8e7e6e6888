//! Certificate fingerprints: what `lapwing-server` prints at start and what
//! `lapwing --fingerprint` pins.

use sha2::{Digest, Sha256};

/// SHA-256 of a certificate's DER bytes, as 64 lowercase hex digits.
pub fn sha256_fingerprint(cert_der: &[u8]) -> String {
    let digest = Sha256::digest(cert_der);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A fingerprint as a user may type it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fingerprint must be 64 hex digits (SHA-256; ':' separators allowed), got {got:?}")]
pub struct FingerprintError {
    /// The input as given.
    pub got: String,
}

/// Normalises a user-typed fingerprint (any case, optional `:` separators, as
/// `openssl x509 -fingerprint -sha256` prints it) to the form
/// [`sha256_fingerprint`] returns.
pub fn parse_fingerprint(input: &str) -> Result<String, FingerprintError> {
    let hex: String = input
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() == 64 && hex.bytes().all(|b| HEX.contains(&b)) {
        Ok(hex)
    } else {
        Err(FingerprintError {
            got: input.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parse_accepts_openssl_form() {
        let fp = sha256_fingerprint(b"abc");
        let openssl: Vec<String> = fp
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).to_uppercase())
            .collect();
        assert_eq!(parse_fingerprint(&openssl.join(":")), Ok(fp.clone()));
        assert_eq!(parse_fingerprint(&format!(" {fp}\n")), Ok(fp));
        assert!(parse_fingerprint("abc").is_err());
        assert!(parse_fingerprint(&"g".repeat(64)).is_err());
    }
}
