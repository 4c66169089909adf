//! Parsing `/proc/PID/maps`.

use std::path::PathBuf;

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub executable: bool,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// The path, the pseudo name (`[vdso]`, `[heap]`) or empty for anonymous memory.
    pub pathname: String,
}

impl MapsEntry {
    /// A mapping of a file (not anonymous memory, not a pseudo mapping).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.pathname.starts_with('/')
    }

    /// Anonymous memory (also named with `PR_SET_VMA_ANON_NAME`), not a
    /// file, the vDSO or another pseudo mapping.
    pub fn is_anonymous(&self) -> bool {
        self.inode == 0 && (self.pathname.is_empty() || self.pathname.starts_with("[anon:"))
    }

    /// The file was deleted (or replaced) after it was mapped.
    pub fn is_deleted(&self) -> bool {
        self.pathname.ends_with(" (deleted)")
    }

    /// The path without the ` (deleted)` marker.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(
            self.pathname
                .strip_suffix(" (deleted)")
                .unwrap_or(&self.pathname),
        )
    }
}

/// Parses one line; `None` for a line that is not a maps entry.
pub fn parse_line(line: &str) -> Option<MapsEntry> {
    // address perms offset dev inode [pathname]; the pathname may contain spaces.
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start();
        let end = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        f
    };
    let range = field();
    let perms = field();
    let offset = field();
    let dev = field();
    let inode = field();
    let pathname = rest.trim_start().to_string();
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let perms = perms.as_bytes();
    if perms.len() < 4 {
        return None;
    }
    Some(MapsEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        readable: perms[0] == b'r',
        executable: perms[2] == b'x',
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev_major: u32::from_str_radix(major, 16).ok()?,
        dev_minor: u32::from_str_radix(minor, 16).ok()?,
        inode: inode.parse().ok()?,
        pathname,
    })
}

/// Parses a whole maps file, skipping lines that do not parse.
pub fn parse(text: &str) -> Vec<MapsEntry> {
    text.lines().filter_map(parse_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let e = parse_line(
            "7f1c2a428000-7f1c2a5bd000 r-xp 00028000 fe:01 1058814                    /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!(e.start, 0x7f1c2a428000);
        assert_eq!(e.end, 0x7f1c2a5bd000);
        assert!(e.executable && e.readable && e.is_file());
        assert_eq!(e.offset, 0x28000);
        assert_eq!((e.dev_major, e.dev_minor, e.inode), (0xfe, 1, 1058814));
        assert_eq!(e.pathname, "/usr/lib/x86_64-linux-gnu/libc.so.6");

        let v = parse_line(
            "7ffd3b5f0000-7ffd3b5f2000 r-xp 00000000 00:00 0                          [vdso]",
        )
        .unwrap();
        assert!(!v.is_file());
        assert_eq!(v.pathname, "[vdso]");

        let anon = parse_line("7f1c2a400000-7f1c2a428000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.pathname, "");

        let del =
            parse_line("55d0c1a00000-55d0c1a01000 r-xp 00001000 fe:01 42 /tmp/my prog (deleted)")
                .unwrap();
        assert!(del.is_deleted());
        assert_eq!(del.path(), PathBuf::from("/tmp/my prog"));

        assert!(parse_line("garbage").is_none());
        assert!(parse_line("").is_none());
    }
}
