//! `FileId`: the identity of an executable, shared object or kernel image.
//!
//! Backends (Elastic, devfiler, symbol servers) key symbols and executable
//! metadata on upstream's FileID, so ours must be the same 128 bits:
//!
//! * user-space files: SHA-256 over the first 4 KiB, the last 4 KiB and the
//!   big-endian file size, truncated to 16 bytes. Only the two windows are
//!   read (via seek), so hashing a 2 GiB binary costs two small reads. The
//!   header window covers ELF program headers and usually the build-id note;
//!   the trailer covers section headers and `.gnu_debuglink`; the size guards
//!   against appended data.
//! * kernel image and modules: FNV-128a over the ASCII hex GNU build ID, so
//!   it can be computed from the build ID alone, anywhere.
//!
//! In OTLP the hex form is `process.executable.build_id.htlhash`; in BPF maps
//! upstream keys executables by [`FileId::hi`] only.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::ParseError;
use crate::fnv::Fnv128a;
use crate::Hash128;

/// Size of each of the two hashed windows.
const WINDOW: u64 = 4096;

/// Identity of an executable file (see the module docs for the algorithms).
///
/// `Display`/`FromStr` use the hex form (`FromStr` also accepts base64, see
/// [`Hash128::parse`]); [`FileId::to_base64`] gives the form used as
/// Elasticsearch executable ids. Ordering is [`Hash128`]'s (signed words).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(Hash128);

impl FileId {
    /// Used for kernel frames whose file could not be identified
    /// (upstream's `UnknownKernelFileID`).
    pub const UNKNOWN_KERNEL: FileId = FileId::new(u64::MAX - 2, u64::MAX - 2);

    /// Used when symbolization failed (upstream's `UnsymbolizedFileID`).
    pub const UNSYMBOLIZED: FileId = FileId::new(u64::MAX, u64::MAX);

    /// Builds a FileId from its two words.
    pub const fn new(hi: u64, lo: u64) -> Self {
        Self(Hash128::new(hi, lo))
    }

    /// Wraps a [`Hash128`].
    pub const fn from_hash128(h: Hash128) -> Self {
        Self(h)
    }

    /// The underlying [`Hash128`].
    pub const fn hash128(self) -> Hash128 {
        self.0
    }

    /// The high 64 bits: upstream's key for executables in BPF maps.
    pub const fn hi(self) -> u64 {
        self.0.hi
    }

    /// The low 64 bits.
    pub const fn lo(self) -> u64 {
        self.0.lo
    }

    /// Builds a FileId from its 16-byte big-endian identity form.
    /// (This does *not* hash anything; see [`FileId::from_bytes`] for that.)
    pub const fn from_be_bytes(b: [u8; 16]) -> Self {
        Self(Hash128::from_bytes(b))
    }

    /// The 16-byte big-endian identity form.
    pub const fn to_be_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// Computes the FileID of a file held in memory.
    pub fn from_bytes(contents: &[u8]) -> Self {
        let size = contents.len();
        let window = WINDOW as usize;
        let mut h = Sha256::new();
        h.update(&contents[..size.min(window)]);
        h.update(&contents[size - size.min(window)..]);
        h.update((size as u64).to_be_bytes());
        Self::from_digest(&h.finalize())
    }

    /// Computes the FileID of a seekable stream, reading only the first and
    /// last 4 KiB. The stream is read from its start whatever its current
    /// position; the size is taken from seeking to its end.
    pub fn from_reader<R: Read + Seek + ?Sized>(r: &mut R) -> io::Result<Self> {
        let mut buf = [0u8; WINDOW as usize];
        let mut h = Sha256::new();

        r.seek(SeekFrom::Start(0))?;
        let head = read_up_to(r, &mut buf)?;
        h.update(&buf[..head]);

        let size = r.seek(SeekFrom::End(0))?;
        let tail = size.min(WINDOW);
        r.seek(SeekFrom::Start(size - tail))?;
        // `tail` <= WINDOW, so the cast cannot truncate.
        r.read_exact(&mut buf[..tail as usize])?;
        h.update(&buf[..tail as usize]);

        h.update(size.to_be_bytes());
        Ok(Self::from_digest(&h.finalize()))
    }

    /// Computes the FileID of the file at `path` (see [`FileId::from_reader`]).
    pub fn from_file(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::from_reader(&mut File::open(path)?)
    }

    /// FileID of a kernel image or module from its GNU build ID in hex, as
    /// the string is given: upstream hashes the lowercase hex produced by
    /// encoding the note, and this function does no normalization (an
    /// uppercase string yields a different id). Use
    /// [`FileId::from_kernel_build_id_bytes`] when holding the raw note.
    pub fn from_kernel_build_id(build_id_hex: &str) -> Self {
        Self(Fnv128a::digest(build_id_hex.as_bytes()))
    }

    /// FileID of a kernel image or module from its raw GNU build ID bytes
    /// (hex-encodes them in lowercase, then as [`FileId::from_kernel_build_id`]).
    pub fn from_kernel_build_id_bytes(build_id: &[u8]) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut h = Fnv128a::new();
        for &b in build_id {
            h.update(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]);
        }
        Self(h.finish())
    }

    /// The id with `hi` and `lo` exchanged: links a kernel module's FileID to
    /// its debug file's (and back, it is its own inverse). Both stay
    /// computable from the build ID alone while remaining distinct.
    pub const fn swap(self) -> Self {
        Self(self.0.swapped())
    }

    /// 32 lowercase hex digits (the OTLP `htlhash` attribute).
    pub fn to_hex(self) -> String {
        self.0.to_hex()
    }

    /// base64url without padding (22 characters).
    pub fn to_base64(self) -> String {
        self.0.to_base64()
    }

    /// Parses the hex form (`0x` prefix and dashes allowed).
    pub fn parse_hex(s: &str) -> Result<Self, ParseError> {
        Hash128::parse_hex(s).map(Self)
    }

    /// Parses the base64 form (either alphabet, padding optional).
    pub fn parse_base64(s: &str) -> Result<Self, ParseError> {
        Hash128::parse_base64(s).map(Self)
    }

    fn from_digest(d: &[u8]) -> Self {
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        Self::from_be_bytes(b)
    }
}

/// Reads until `buf` is full or the stream ends; returns the byte count.
fn read_up_to<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl From<Hash128> for FileId {
    fn from(h: Hash128) -> Self {
        Self(h)
    }
}

impl From<FileId> for Hash128 {
    fn from(f: FileId) -> Self {
        f.0
    }
}

/// 32 lowercase hex digits.
impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::LowerHex for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({:x})", self.0)
    }
}

/// Accepts hex or base64, see [`Hash128::parse`].
impl FromStr for FileId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hash128::parse(s).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    /// Straightforward reference: read everything, hash the windows.
    fn reference_file_id(data: &[u8]) -> FileId {
        let n = data.len();
        let k = n.min(4096);
        let mut h = Sha256::new();
        h.update(&data[0..k]);
        h.update(&data[n - k..n]);
        h.update((n as u64).to_be_bytes());
        let d = h.finalize();
        FileId::new(
            u64::from_be_bytes(d[0..8].try_into().unwrap()),
            u64::from_be_bytes(d[8..16].try_into().unwrap()),
        )
    }

    /// Deterministic non-repeating test content.
    fn content(n: usize) -> Vec<u8> {
        let mut x: u32 = 0x9e37_79b9;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// A reader that counts the bytes handed out, to prove we only read the
    /// two windows.
    struct CountingReader<R> {
        inner: R,
        bytes_read: u64,
    }
    impl<R: Read> Read for CountingReader<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.bytes_read += n as u64;
            Ok(n)
        }
    }
    impl<R: Seek> Seek for CountingReader<R> {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    #[test]
    fn published_vector_nine_byte_file() {
        let data = [0x7f, 0x45, 0x4c, 0x46, 0x00, 0x01, 0x02, 0x03, 0x04];
        let want = "caf6e5907166ac76eef618e5f7f59cd9";
        assert_eq!(FileId::from_bytes(&data).to_hex(), want);
        assert_eq!(
            FileId::from_reader(&mut Cursor::new(&data))
                .unwrap()
                .to_hex(),
            want
        );
        assert_eq!(reference_file_id(&data).to_hex(), want);
    }

    #[test]
    fn published_vector_kernel() {
        let id = FileId::from_kernel_build_id("f8e1cf0f60558098edaec164ac7749df");
        assert_eq!(id.to_hex(), "026a2d6a60ee6b4eb8ec85adf2e76f4d");
        assert_eq!(id.swap().to_hex(), "b8ec85adf2e76f4d026a2d6a60ee6b4e");
        assert_eq!(id.swap().swap(), id);
        let raw = [
            0xf8, 0xe1, 0xcf, 0x0f, 0x60, 0x55, 0x80, 0x98, 0xed, 0xae, 0xc1, 0x64, 0xac, 0x77,
            0x49, 0xdf,
        ];
        assert_eq!(FileId::from_kernel_build_id_bytes(&raw), id);
    }

    #[test]
    fn constants() {
        assert_eq!(FileId::UNKNOWN_KERNEL.hi(), u64::MAX - 2);
        assert_eq!(FileId::UNKNOWN_KERNEL.lo(), u64::MAX - 2);
        assert_eq!(
            FileId::UNSYMBOLIZED.hash128(),
            Hash128::new(u64::MAX, u64::MAX)
        );
    }

    #[test]
    fn sizes_match_reference_on_disk_and_in_memory() {
        let dir = std::env::temp_dir().join(format!("libpf-fileid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for size in [
            0usize,
            1,
            9,
            4095,
            4096,
            4097,
            5000,
            8191,
            8192,
            8193,
            1 << 20,
        ] {
            let data = content(size);
            let want = reference_file_id(&data);
            assert_eq!(FileId::from_bytes(&data), want, "from_bytes size {size}");

            let mut r = CountingReader {
                inner: Cursor::new(&data),
                bytes_read: 0,
            };
            // Start from a non-zero position: from_reader must rewind.
            r.seek(SeekFrom::Start(size as u64 / 2)).unwrap();
            assert_eq!(
                FileId::from_reader(&mut r).unwrap(),
                want,
                "reader size {size}"
            );
            let k = size.min(4096) as u64;
            assert_eq!(r.bytes_read, 2 * k, "bytes read for size {size}");

            let path = dir.join(format!("f{size}"));
            std::fs::write(&path, &data).unwrap();
            assert_eq!(FileId::from_file(&path).unwrap(), want, "file size {size}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_is_an_error() {
        assert!(FileId::from_file("/nonexistent/libpf/file").is_err());
    }

    #[test]
    fn text_forms() {
        let id = FileId::new(0x12345678124397f5, 0x876543218774849e);
        assert_eq!(id.to_string(), "12345678124397f5876543218774849e");
        assert_eq!(id.to_base64(), "EjRWeBJDl_WHZUMhh3SEng");
        assert_eq!("EjRWeBJDl_WHZUMhh3SEng".parse::<FileId>().unwrap(), id);
        assert_eq!(
            "0x12345678124397f5876543218774849e"
                .parse::<FileId>()
                .unwrap(),
            id
        );
        assert!("nope".parse::<FileId>().is_err());
        assert_eq!(FileId::from_be_bytes(id.to_be_bytes()), id);
    }

    proptest! {
        #[test]
        fn round_trips(hi: u64, lo: u64) {
            let id = FileId::new(hi, lo);
            prop_assert_eq!(FileId::parse_hex(&id.to_hex()).unwrap(), id);
            prop_assert_eq!(FileId::parse_base64(&id.to_base64()).unwrap(), id);
            prop_assert_eq!(id.to_string().parse::<FileId>().unwrap(), id);
            prop_assert_eq!(id.to_base64().parse::<FileId>().unwrap(), id);
        }

        #[test]
        fn reader_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..10_000)) {
            prop_assert_eq!(FileId::from_reader(&mut Cursor::new(&data)).unwrap(), reference_file_id(&data));
            prop_assert_eq!(FileId::from_bytes(&data), reference_file_id(&data));
        }
    }
}
