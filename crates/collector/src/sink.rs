//! The first sink: gzipped pprof files, one per source and flush interval.
//!
//! Profiles are buffered per source — the host (`host.name`, else
//! `unknown-host`) and the process (`pid-N`, else `service-NAME`, else
//! `exe-NAME`, else `unknown`) — and merged: samples appended, executables
//! united, the window widened to cover all. [`Sink::flush`] writes each
//! buffer as `DIR/HOST/SOURCE-STARTMS-SEQ.pb.gz` (STARTMS: the data's
//! window start in Unix ms; SEQ: a flush counter seeded from the clock at
//! start, so names never repeat across restarts) through
//! `profile::pprof::encode`, via a temporary name and a rename, so readers
//! never see half a file.
//!
//! Source names come from the network: they are reduced to
//! `[A-Za-z0-9._-]` (64 characters at most, never `.` or `..`) so no request
//! can write outside the directory.

use crate::ingest::Stats;
use otlp::DecodedResource;
use profile::Profile;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Where buffered profiles go and how much may wait.
pub struct Sink {
    dir: PathBuf,
    max_samples: usize,
    stats: Arc<Stats>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    buffers: HashMap<(String, String), Profile>,
    samples: usize,
    seq: u64,
}

/// A file-name-safe version of a network-supplied name.
pub fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        s = format!("_{s}");
    }
    s
}

fn source_of(res: &DecodedResource) -> (String, String) {
    let host = sanitize(res.host_name.as_deref().unwrap_or("unknown-host"));
    let src = if let Some(pid) = res.pid {
        format!("pid-{pid}")
    } else if let Some(s) = &res.service_name {
        sanitize(&format!("service-{s}"))
    } else if let Some(e) = &res.executable_name {
        sanitize(&format!("exe-{e}"))
    } else {
        "unknown".to_string()
    };
    (host, src)
}

impl Sink {
    pub fn new(dir: PathBuf, max_samples: usize, stats: Arc<Stats>) -> Self {
        Self {
            dir,
            max_samples,
            stats,
            // Sequence numbers start from the wall clock (ms) so that a
            // restarted collector never reuses a file name.
            state: Mutex::new(State {
                seq: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the buffers in a
        // state worse than "some samples appended": keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Buffers one profile; refuses it (with the reason) when the buffer is
    /// full.
    pub fn add(&self, res: &DecodedResource, p: Profile) -> Result<(), String> {
        let key = source_of(res);
        let mut st = self.lock();
        if st.samples.saturating_add(p.samples.len()) > self.max_samples {
            return Err(format!(
                "collector buffer full ({} samples waiting for the next flush)",
                st.samples
            ));
        }
        st.samples += p.samples.len();
        match st.buffers.get_mut(&key) {
            None => {
                st.buffers.insert(key, p);
            }
            Some(b) => merge(b, p),
        }
        Ok(())
    }

    /// Writes every buffer to its file and empties the buffers.
    pub fn flush(&self) -> std::io::Result<Vec<PathBuf>> {
        let (buffers, seq) = {
            let mut st = self.lock();
            st.samples = 0;
            st.seq += 1;
            (std::mem::take(&mut st.buffers), st.seq)
        };
        let mut written = Vec::new();
        let mut first_err = None;
        let mut buffers: Vec<_> = buffers.into_iter().collect();
        buffers.sort_by(|a, b| a.0.cmp(&b.0));
        for ((host, src), p) in buffers {
            let dir = self.dir.join(&host);
            let name = format!("{src}-{}-{seq}.pb.gz", p.start_unix_ns / 1_000_000);
            let res = (|| {
                std::fs::create_dir_all(&dir)?;
                let tmp = dir.join(format!(".{name}.tmp"));
                let path = dir.join(&name);
                std::fs::write(&tmp, profile::pprof::encode(&p))?;
                std::fs::rename(&tmp, &path)?;
                Ok::<_, std::io::Error>(path)
            })();
            match res {
                Ok(path) => {
                    self.stats.files_written.fetch_add(1, Ordering::Relaxed);
                    written.push(path);
                }
                Err(e) => {
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("writing {}: {e}", dir.join(&name).display());
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if written.is_empty() => Err(e),
            _ => Ok(written),
        }
    }
}

/// Appends `p` to `into`: samples, executables, and the union of windows.
fn merge(into: &mut Profile, p: Profile) {
    let end = (into.start_unix_ns.saturating_add(into.duration_ns))
        .max(p.start_unix_ns.saturating_add(p.duration_ns));
    into.start_unix_ns = into.start_unix_ns.min(p.start_unix_ns);
    into.duration_ns = end - into.start_unix_ns;
    if into.frequency_hz == 0 {
        into.frequency_hz = p.frequency_hz;
    }
    if into.host_name.is_empty() {
        into.host_name = p.host_name;
    }
    into.samples.extend(p.samples);
    for (id, e) in p.executables {
        into.executables.entry(id).or_insert(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_directory() {
        assert_eq!(sanitize("node-1.example"), "node-1.example");
        assert_eq!(sanitize("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(sanitize(".."), "_..");
        assert_eq!(sanitize(""), "_");
        assert_eq!(sanitize("a/b\\c\0d"), "a_b_c_d");
        assert_eq!(sanitize(&"x".repeat(500)).len(), 64);
    }

    #[test]
    fn unwritable_directory_is_an_error_and_counted() {
        let base = std::env::temp_dir().join(format!("sink-err-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        // A file where the host directory should be.
        std::fs::write(base.join("h"), b"not a directory").unwrap();
        let stats = Arc::new(Stats::default());
        let sink = Sink::new(base.clone(), 100, stats.clone());
        let res = DecodedResource {
            host_name: Some("h".into()),
            pid: Some(1),
            ..Default::default()
        };
        sink.add(&res, Profile::default()).unwrap();
        assert!(sink.flush().is_err());
        assert_eq!(stats.write_errors.load(Ordering::Relaxed), 1);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn merge_widens_the_window() {
        let mut a = Profile {
            start_unix_ns: 100,
            duration_ns: 10,
            ..Profile::default()
        };
        let b = Profile {
            start_unix_ns: 90,
            duration_ns: 5,
            frequency_hz: 20,
            ..Profile::default()
        };
        merge(&mut a, b);
        assert_eq!(
            (a.start_unix_ns, a.duration_ns, a.frequency_hz),
            (90, 20, 20)
        );
    }
}
