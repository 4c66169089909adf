//! Shared base64 helpers for the fixed-size identities.
//!
//! Everything we *write* is base64url without padding, because that is what
//! the OpenTelemetry profiler and Elastic's profiling indices use as document
//! ids (`_id` must be URL-safe; padding is dead weight on fixed sizes).
//! What we *read* is more lenient: Elasticsearch returns `binary` fields in
//! standard base64, and people paste either form with or without padding, so
//! both alphabets are accepted, padding optional. Non-zero trailing bits are
//! rejected so every accepted string maps to exactly one value and back.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use crate::error::{Encoding, ParseError};

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(false)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent);

/// The canonical output engine: URL-safe alphabet, no padding.
const URL_SAFE_NO_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false),
);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);

/// Encodes `bytes` as base64url without padding.
pub(crate) fn encode_base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Number of base64 characters (unpadded) for `n` bytes.
pub(crate) const fn base64_len(n: usize) -> usize {
    (n * 8).div_ceil(6)
}

/// Decodes base64 in either alphabet, padding optional.
pub(crate) fn decode_base64(what: &'static str, s: &str) -> Result<Vec<u8>, ParseError> {
    match URL_SAFE_LENIENT.decode(s) {
        Ok(v) => Ok(v),
        Err(url_err) => match STANDARD_LENIENT.decode(s) {
            Ok(v) => Ok(v),
            Err(std_err) => {
                // Report the error of the alphabet the input seems to use.
                let err = if s.contains(['+', '/']) {
                    std_err
                } else {
                    url_err
                };
                Err(ParseError::InvalidBase64 {
                    what,
                    reason: err.to_string(),
                })
            }
        },
    }
}

/// Decodes base64 that must yield exactly `N` bytes.
pub(crate) fn decode_base64_array<const N: usize>(
    what: &'static str,
    s: &str,
) -> Result<[u8; N], ParseError> {
    // Refuse oversized input before decoding it: the longest acceptable form
    // is the padded one.
    let padded = base64_len(N).div_ceil(4) * 4;
    if s.len() > padded {
        return Err(ParseError::InvalidLength {
            what,
            encoding: Encoding::Base64,
            expected: base64_len(N),
            actual: s.len(),
        });
    }
    let v = decode_base64(what, s)?;
    <[u8; N]>::try_from(v.as_slice()).map_err(|_| ParseError::InvalidLength {
        what,
        encoding: Encoding::Bytes,
        expected: N,
        actual: v.len(),
    })
}
