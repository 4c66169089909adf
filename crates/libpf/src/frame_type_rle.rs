//! Run-length encoding of frame types for Elasticsearch (`frame.types`).
//!
//! Elastic's stacktrace documents store the type of every frame compactly:
//! root first, as `[count, type]` byte pairs with `count` in 1..=255 (longer
//! runs are split), the bytes written as base64url without padding. Example:
//! types `0,0,0,0,0,2,2,2` → bytes `05 00 03 02` → `BQADAg`. Kibana decodes
//! this, so the format is fixed. The type byte is the full [`FrameType`]
//! value, error bit included (the abort marker is `0x80`).

use crate::codec;
use crate::error::ParseError;
use crate::FrameType;

/// Run-length encodes frame types (given root first) into byte pairs.
pub fn encode_frame_type_bytes<I>(types: I) -> Vec<u8>
where
    I: IntoIterator<Item = FrameType>,
{
    let mut out = Vec::new();
    let mut run: Option<(u8, u8)> = None; // (count, type)
    for t in types {
        let t = t.as_u8();
        run = match run {
            Some((count, cur)) if cur == t && count < u8::MAX => Some((count + 1, cur)),
            Some((count, cur)) => {
                out.extend_from_slice(&[count, cur]);
                Some((1, t))
            }
            None => Some((1, t)),
        };
    }
    if let Some((count, cur)) = run {
        out.extend_from_slice(&[count, cur]);
    }
    out
}

/// Run-length encodes frame types (given root first) as the base64url
/// string stored in Elasticsearch.
pub fn encode_frame_types<I>(types: I) -> String
where
    I: IntoIterator<Item = FrameType>,
{
    codec::encode_base64url(&encode_frame_type_bytes(types))
}

/// Expands `[count, type]` byte pairs back into frame types, root first.
pub fn decode_frame_type_bytes(bytes: &[u8]) -> Result<Vec<FrameType>, ParseError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(ParseError::RunLengthOddLength { len: bytes.len() });
    }
    let mut out = Vec::new();
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let (count, t) = (pair[0], pair[1]);
        if count == 0 {
            return Err(ParseError::RunLengthZeroCount { offset: 2 * i });
        }
        out.extend(std::iter::repeat_n(
            FrameType::from_u8(t),
            usize::from(count),
        ));
    }
    Ok(out)
}

/// Decodes the base64 string stored in Elasticsearch (either alphabet,
/// padding optional) into frame types, root first.
pub fn decode_frame_types(s: &str) -> Result<Vec<FrameType>, ParseError> {
    decode_frame_type_bytes(&codec::decode_base64("frame types", s)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn types(v: &[u8]) -> Vec<FrameType> {
        v.iter().copied().map(FrameType::from_u8).collect()
    }

    #[test]
    fn published_vector() {
        let t = types(&[0, 0, 0, 0, 0, 2, 2, 2]);
        assert_eq!(encode_frame_type_bytes(t.clone()), vec![5, 0, 3, 2]);
        assert_eq!(encode_frame_types(t.clone()), "BQADAg");
        assert_eq!(decode_frame_types("BQADAg").unwrap(), t);
        assert_eq!(decode_frame_types("BQADAg==").unwrap(), t);
    }

    #[test]
    fn long_runs_split_at_255() {
        let t = vec![FrameType::from_u8(3); 600];
        assert_eq!(
            encode_frame_type_bytes(t.clone()),
            vec![255, 3, 255, 3, 90, 3]
        );
        assert_eq!(
            decode_frame_types(&encode_frame_types(t.clone())).unwrap(),
            t
        );
    }

    #[test]
    fn empty_and_abort_marker() {
        assert_eq!(encode_frame_types([]), "");
        assert_eq!(decode_frame_types("").unwrap(), vec![]);
        let t = vec![FrameType::from_u8(3), FrameType::ABORT];
        assert_eq!(encode_frame_type_bytes(t.clone()), vec![1, 3, 1, 0x80]);
        assert_eq!(
            decode_frame_types(&encode_frame_types(t.clone())).unwrap(),
            t
        );
    }

    #[test]
    fn invalid() {
        assert_eq!(
            decode_frame_type_bytes(&[1, 2, 3]),
            Err(ParseError::RunLengthOddLength { len: 3 })
        );
        assert_eq!(
            decode_frame_type_bytes(&[1, 2, 0, 3]),
            Err(ParseError::RunLengthZeroCount { offset: 2 })
        );
        assert!(matches!(
            decode_frame_types("B!AD"),
            Err(ParseError::InvalidBase64 { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(v in proptest::collection::vec(
            prop_oneof![Just(0u8), Just(3u8), Just(4u8), Just(0x80u8), any::<u8>()], 0..1000)) {
            let t = types(&v);
            let s = encode_frame_types(t.clone());
            prop_assert_eq!(decode_frame_types(&s).unwrap(), t);
            // Canonical: counts never zero, adjacent pairs differ unless the
            // first is a full 255 run.
            let b = encode_frame_type_bytes(types(&v));
            for p in b.chunks(2).collect::<Vec<_>>().windows(2) {
                prop_assert!(p[0][0] != 0);
                prop_assert!(p[0][1] != p[1][1] || p[0][0] == 255);
            }
        }

        #[test]
        fn never_panics(s in "\\PC{0,64}") {
            let _ = decode_frame_types(&s);
        }
    }
}
