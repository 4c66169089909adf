//! Frame ids: the Elasticsearch `stackframe` document id.
//!
//! A frame id is `FileID (16 bytes, BE) ‖ address_or_line (u64 BE)`, 24 bytes,
//! written as base64url without padding: exactly 32 characters (24 bytes
//! are a whole number of base64 quanta, so there is never padding to strip).
//! Elastic's profiling UI joins stacktraces to stackframes and symbols on
//! this id, so it must be byte-identical to upstream's `libpf.FrameID`.

use std::fmt;
use std::str::FromStr;

use crate::codec;
use crate::error::{Encoding, ParseError};
use crate::{AddressOrLineno, FileId};

/// A frame's identity: the file it belongs to and its address or line.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct FrameId {
    /// The file (executable, script, ...) the frame belongs to.
    pub file_id: FileId,
    /// Address in the file (native) or line/interpreter-specific value.
    pub address_or_line: AddressOrLineno,
}

impl FrameId {
    /// Length of the byte form.
    pub const BYTES: usize = 24;
    /// Length of the base64url text form.
    pub const BASE64_LEN: usize = 32;

    /// Builds a frame id.
    pub const fn new(file_id: FileId, address_or_line: AddressOrLineno) -> Self {
        Self {
            file_id,
            address_or_line,
        }
    }

    /// The 24-byte form: FileID BE ‖ address_or_line BE.
    pub fn to_bytes(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..16].copy_from_slice(&self.file_id.to_be_bytes());
        b[16..].copy_from_slice(&self.address_or_line.0.to_be_bytes());
        b
    }

    /// Builds a frame id from its 24-byte form.
    pub fn from_array(b: [u8; 24]) -> Self {
        let mut file = [0u8; 16];
        file.copy_from_slice(&b[..16]);
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&b[16..]);
        Self::new(
            FileId::from_be_bytes(file),
            AddressOrLineno(u64::from_be_bytes(addr)),
        )
    }

    /// Parses the 24-byte form from a slice that must be exactly 24 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ParseError> {
        let b: [u8; 24] = b.try_into().map_err(|_| ParseError::InvalidLength {
            what: "frame id",
            encoding: Encoding::Bytes,
            expected: 24,
            actual: b.len(),
        })?;
        Ok(Self::from_array(b))
    }

    /// The 32-character base64url form (same as `Display`).
    pub fn to_base64(self) -> String {
        codec::encode_base64url(&self.to_bytes())
    }

    /// Parses the base64 form (URL-safe or standard alphabet).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        codec::decode_base64_array::<24>("frame id", s).map(Self::from_array)
    }
}

/// The 32-character base64url form.
impl fmt::Display for FrameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl FromStr for FrameId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The Elasticsearch stackframe id of `(file_id, address_or_line)`:
/// 32 base64url characters.
pub fn frame_id(file_id: FileId, address_or_line: AddressOrLineno) -> String {
    FrameId::new(file_id, address_or_line).to_base64()
}

/// Parses a stackframe id back into its parts.
pub fn parse_frame_id(s: &str) -> Result<(FileId, AddressOrLineno), ParseError> {
    FrameId::parse(s).map(|f| (f.file_id, f.address_or_line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout() {
        let f = FileId::new(0x12345678124397f5, 0x876543218774849e);
        let id = frame_id(f, AddressOrLineno(0x1122334455667788));
        assert_eq!(id.len(), 32);
        // The first 21 characters carry bits 0..126, all from the FileID, so
        // they equal the first 21 of the FileID's own base64 form.
        assert_eq!(&id[..21], &"EjRWeBJDl_WHZUMhh3SEng"[..21]);
        let b = FrameId::new(f, AddressOrLineno(0x1122334455667788)).to_bytes();
        assert_eq!(&b[..16], &f.to_be_bytes());
        assert_eq!(&b[16..], &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
        assert_eq!(
            parse_frame_id(&id).unwrap(),
            (f, AddressOrLineno(0x1122334455667788))
        );
        // All-zero id: 24 zero bytes.
        assert_eq!(
            frame_id(FileId::default(), AddressOrLineno(0)),
            "A".repeat(32)
        );
    }

    #[test]
    fn invalid() {
        assert!(FrameId::parse("").is_err());
        assert!(FrameId::parse("EjRWeBJDl_WHZUMhh3SEng").is_err()); // a FileID, 16 bytes
        assert!(FrameId::parse(&"A".repeat(31)).is_err());
        assert!(FrameId::parse(&"A".repeat(36)).is_err());
        assert!(FrameId::parse(&"*".repeat(32)).is_err());
        assert!(FrameId::from_bytes(&[0; 23]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(hi: u64, lo: u64, addr: u64) {
            let id = FrameId::new(FileId::new(hi, lo), AddressOrLineno(addr));
            let s = id.to_string();
            prop_assert_eq!(s.len(), 32);
            prop_assert_eq!(s.parse::<FrameId>().unwrap(), id);
            prop_assert_eq!(FrameId::from_bytes(&id.to_bytes()).unwrap(), id);
            let std_form = s.replace('-', "+").replace('_', "/");
            prop_assert_eq!(FrameId::parse(&std_form).unwrap(), id);
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = FrameId::parse(&s);
        }
    }
}
