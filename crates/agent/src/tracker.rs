//! Process and executable tracking: what the eBPF unwinder needs to know
//! about every process it samples.
//!
//! Lifecycle: a process is scanned (at start-up, or when the eBPF side
//! reports it) into an *address space* (asid): its executable mappings as
//! LPM-trie prefixes pointing at executables whose unwind tables are loaded
//! once, whatever the number of processes that map them. A forked child
//! shares its parent's address space (the eBPF fork hook points it there at
//! once); a rescan gives a process a fresh address space, so a shared one is
//! never modified in place. Address spaces and tables are reference counted
//! and freed with their last user, so nothing leaks across process churn.

use crate::loader::KernelMaps;
use crate::lpm;
use crate::procinfo::{self, ProcessMeta};
use crate::procmaps::{self, MapsEntry};
use crate::rows::{self, RangeAllocator};
use libpf::FileId;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use support::abi::{
    ExeTable, FileKey, FileTable, MappingKey, MappingValue, ProcessFlag, ProcessInfo, JIT_EXE_ID,
};
use unwind::UnwindTable;

/// An executable file seen in some process.
#[derive(Debug)]
pub struct FileInfo {
    pub file_id: FileId,
    /// The path as the process mapped it.
    pub path: PathBuf,
    /// Kept open so the file can be symbolized after the process exited or
    /// the file was deleted or replaced on disk.
    pub file: File,
}

impl FileInfo {
    /// A path that reaches the open file (works for deleted files).
    pub fn open_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// A `PT_LOAD` segment: how file offsets map to ELF virtual addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub executable: bool,
}

/// Reads the `PT_LOAD` segments of an ELF file.
pub fn load_segments(data: &[u8]) -> Result<Vec<Segment>, String> {
    use object::read::elf::{ElfFile64, ProgramHeader};
    let elf = ElfFile64::<object::Endianness>::parse(data).map_err(|e| e.to_string())?;
    let endian = elf.endian();
    Ok(elf
        .elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == object::elf::PT_LOAD)
        .map(|ph| Segment {
            offset: ph.p_offset(endian),
            vaddr: ph.p_vaddr(endian),
            filesz: ph.p_filesz(endian),
            executable: ph.p_flags(endian).0 & object::elf::PF_X.0 != 0,
        })
        .collect())
}

/// What outputs want to know of an executable file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfSummary {
    /// GNU build id, hex.
    pub gnu_build_id: Option<String>,
    /// ELF virtual address range covered by executable segments.
    pub text_start: u64,
    pub text_end: u64,
}

/// Reads the build id and executable range of an open ELF file; a file that
/// cannot be parsed gives the default (no id, empty range).
pub fn elf_summary(file: &File) -> ElfSummary {
    use object::Object;
    // SAFETY: read-only private mapping, see `load_executable`.
    let Ok(data) = (unsafe { memmap2::Mmap::map(file) }) else {
        return ElfSummary::default();
    };
    let Ok(obj) = object::File::parse(&*data) else {
        return ElfSummary::default();
    };
    let gnu_build_id = obj
        .build_id()
        .ok()
        .flatten()
        .map(|b| b.iter().map(|x| format!("{x:02x}")).collect());
    let segs = load_segments(&data).unwrap_or_default();
    let text = segs.iter().filter(|s| s.executable);
    let start = text.clone().map(|s| s.vaddr).min().unwrap_or(0);
    let end = text.map(|s| s.vaddr + s.filesz).max().unwrap_or(0);
    ElfSummary {
        gnu_build_id,
        text_start: start,
        text_end: end,
    }
}

/// The bias of a mapping: process address − bias = ELF virtual address.
/// `None` when no segment covers the mapping's file offset.
pub fn mapping_bias(segments: &[Segment], start: u64, file_offset: u64) -> Option<u64> {
    const PAGE: u64 = 4096;
    let covers = |s: &&Segment| {
        let first = s.offset & !(PAGE - 1);
        first <= file_offset && file_offset < s.offset + s.filesz.max(1)
    };
    let seg = segments
        .iter()
        .filter(covers)
        .find(|s| s.executable)
        .or_else(|| segments.iter().find(covers))?;
    Some(
        start
            .wrapping_sub(file_offset)
            .wrapping_add(seg.offset)
            .wrapping_sub(seg.vaddr),
    )
}

/// What the eBPF side needs to find a mapping's bias without a scan, from
/// the executable segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecLayout {
    /// File offset − virtual address of the first executable segment, for
    /// a mapping found by `bpf_find_vma`.
    pub offset_minus_vaddr: u64,
    /// End of the last one, for the main executable's `mm->end_code`.
    pub end: u64,
    /// Where a later executable segment with another offset − vaddr starts
    /// in the file, and that difference (libLLVM keeps its hot text in a
    /// 2 MiB-aligned second segment).
    pub second: Option<(u64, u64)>,
}

/// The [`ExecLayout`] of `segments`; `None` with no executable segment, or
/// more than two different offset − vaddr among them.
pub fn exec_layout(segments: &[Segment]) -> Option<ExecLayout> {
    let mut exec: Vec<&Segment> = segments.iter().filter(|s| s.executable).collect();
    exec.sort_by_key(|s| s.offset);
    let delta = |s: &Segment| s.offset.wrapping_sub(s.vaddr);
    let first = delta(exec.first()?);
    // In file order: segments of the first difference, then (the kernel
    // tells them apart by file offset) segments of a second one.
    let mut second: Option<(u64, u64)> = None;
    for s in &exec {
        let d = delta(s);
        match second {
            None if d == first => {}
            None => second = Some((s.offset, d)),
            Some((_, d2)) if d == d2 => {}
            Some(_) => return None,
        }
    }
    let end = exec.iter().map(|s| s.vaddr + s.filesz).max()?;
    Some(ExecLayout {
        offset_minus_vaddr: first,
        end,
        second,
    })
}

/// The span of virtual addresses of the executable segments, for the
/// kernel to tell a PC in a dynamic loader mapped at AT_BASE.
pub fn exec_vaddr_range(segments: &[Segment]) -> Option<(u64, u64)> {
    let exec = segments.iter().filter(|s| s.executable);
    let start = exec.clone().map(|s| s.vaddr).min()?;
    let end = exec.map(|s| s.vaddr + s.filesz).max()?;
    Some((start, end))
}

/// AT_BASE from a process's auxiliary vector (`/proc/PID/auxv`): where the
/// kernel loaded its dynamic loader. `None` for a static executable or a
/// process that is gone.
pub fn loader_base(proc_root: &std::path::Path, pid: u32) -> Option<u64> {
    let auxv = std::fs::read(proc_root.join(format!("{pid}/auxv"))).ok()?;
    auxv.chunks_exact(16)
        .map(|p| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
            (word(&p[..8]), word(&p[8..]))
        })
        .take_while(|&(kind, _)| kind != libc::AT_NULL)
        .find(|&(kind, _)| kind == libc::AT_BASE)
        .map(|(_, base)| base)
        .filter(|&base| base != 0)
}

/// A main executable's dynamic loader, as the kernel finds it (file_table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loader {
    exe_id: u64,
    exec_start: u64,
    exec_end: u64,
}

/// A `stat` device number in the kernel's internal encoding (`MKDEV`:
/// major << 20 | minor), which is what `inode->i_sb->s_dev` holds.
pub fn kernel_dev(st_dev: u64) -> u64 {
    let (major, minor) = (libc::major(st_dev) as u64, libc::minor(st_dev) as u64);
    (major << 20) | minor
}

/// The file_tables value of a loaded executable.
fn file_table(exe_id: u64, exe: &Executable) -> Option<FileTable> {
    let layout = exec_layout(&exe.segments)?;
    let loader = exe.loader.unwrap_or(Loader {
        exe_id: 0,
        exec_start: 0,
        exec_end: 0,
    });
    let (exec2_offset, exec2_offset_minus_vaddr) = layout.second.unwrap_or((0, 0));
    Some(FileTable {
        exe_id,
        offset_minus_vaddr: layout.offset_minus_vaddr,
        exec_end_vaddr: layout.end,
        interp_exe_id: loader.exe_id,
        interp_exec_start: loader.exec_start,
        interp_exec_end: loader.exec_end,
        exec2_offset,
        exec2_offset_minus_vaddr,
    })
}

/// An executable whose table is (or could not be) in the row array.
///
/// A table outlives the processes that map it: the next process of the same
/// file (the next compiler of a build) needs no parsing and no row writes,
/// and the kernel can resolve it before it is scanned (`file_tables`). Idle
/// tables go, least recently used first, when the row array needs room (and
/// in a continuous session also after a while unused).
#[derive(Debug)]
struct Executable {
    segments: Vec<Segment>,
    /// Rows in the array, `None` when the table could not be loaded.
    rows: Option<(u32, u32)>,
    /// Address spaces that map it.
    refs: u32,
    /// Since when no address space maps it.
    idle_since: Option<std::time::Instant>,
    /// The files (by the kernel's device and inode) entered in file_tables
    /// for it.
    file_keys: Vec<FileKey>,
    /// The dynamic loader its processes run, once a scan saw one.
    loader: Option<Loader>,
}

#[derive(Debug, Default)]
struct AddressSpace {
    /// Processes using it.
    pids: u32,
    keys: Vec<MappingKey>,
    exes: Vec<u64>,
}

/// Counters of the tracker's own work (agent metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    pub scans: u64,
    pub scan_errors: u64,
    pub scans_unchanged: u64,
    pub table_errors: u64,
    pub tables_loaded: u64,
    pub rows_loaded: u64,
    /// Idle tables unloaded to make room for one that was needed.
    pub tables_evicted: u64,
    /// Processes whose tables were loaded without giving them an address
    /// space ([`Tracker::load_tables`]).
    pub table_only_scans: u64,
    /// CPython interpreters whose loop Python frames replace.
    pub python_files: u64,
    /// CPython interpreters left native (version or offsets not ours).
    pub python_files_rejected: u64,
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("process {0} is gone")]
    Gone(u32),
    #[error("reading /proc/{0}/maps: {1}")]
    Maps(u32, std::io::Error),
    #[error("updating the eBPF maps for process {0}: {1}")]
    Map(u32, String),
}

/// What the tracker knows; see the module doc for the lifecycle.
pub struct Tracker {
    /// Every file ever seen this session, by executable id; never dropped,
    /// so traces read after a process exited still symbolize.
    files: HashMap<u64, Arc<FileInfo>>,
    /// Loaded executables by executable id.
    exes: HashMap<u64, Executable>,
    /// Tables built in earlier runs.
    table_cache: Option<crate::table_cache::TableCache>,
    /// (dev, inode, size, mtime) → executable id: skips re-hashing a file
    /// that hundreds of processes map.
    identities: HashMap<(u64, u64, u64, i64, i64), u64>,
    pids: HashMap<u32, u32>,
    /// Processes a filter excluded (kept in the kernel so their samples are
    /// dropped before any unwinding).
    excluded: HashSet<u32>,
    /// Labels of every process seen this session, kept after it exits so
    /// its last traces are still labelled.
    meta: HashMap<u32, Arc<ProcessMeta>>,
    /// Fingerprint of each process's executable mappings at its last scan.
    fingerprints: HashMap<u32, u64>,
    spaces: HashMap<u32, AddressSpace>,
    next_asid: u32,
    /// Executable id of the vDSO, once read.
    vdso: Option<u64>,
    /// Labels and files to drop once they have been unused for a while.
    forgotten: std::collections::VecDeque<(std::time::Instant, Forget)>,
    /// How long to keep them; `None` (a bounded recording) keeps them all.
    forget_after: Option<std::time::Duration>,
    alloc: RangeAllocator,
    proc_root: PathBuf,
    pub stats: TrackerStats,
}

fn map_err(pid: u32) -> impl Fn(aya::maps::MapError) -> ScanError {
    move |e| ScanError::Map(pid, e.to_string())
}

impl Tracker {
    pub fn new(row_capacity: u32) -> Self {
        Tracker {
            files: HashMap::new(),
            exes: HashMap::new(),
            table_cache: None,
            identities: HashMap::new(),
            pids: HashMap::new(),
            excluded: HashSet::new(),
            meta: HashMap::new(),
            fingerprints: HashMap::new(),
            spaces: HashMap::new(),
            next_asid: 1,
            vdso: None,
            forgotten: std::collections::VecDeque::new(),
            forget_after: None,
            alloc: RangeAllocator::new(row_capacity),
            proc_root: PathBuf::from("/proc"),
            stats: TrackerStats::default(),
        }
    }

    /// A continuous agent resolves traces every few seconds: labels of exited
    /// processes and files of unloaded executables can go after `after`, so
    /// its memory does not grow with every PID and binary it ever saw. A
    /// recording keeps them all (it resolves once, at the end).
    pub fn set_forget_after(&mut self, after: Option<std::time::Duration>) {
        self.forget_after = after;
    }

    /// The file behind an executable id seen in a trace.
    pub fn file(&self, exe_id: u64) -> Option<&Arc<FileInfo>> {
        self.files.get(&exe_id)
    }

    pub fn is_tracked(&self, pid: u32) -> bool {
        self.pids.contains_key(&pid)
    }

    /// The address space id the eBPF side knows `pid` by.
    pub fn asid(&self, pid: u32) -> Option<u32> {
        self.pids.get(&pid).copied()
    }

    pub fn is_excluded(&self, pid: u32) -> bool {
        self.excluded.contains(&pid)
    }

    /// Labels of a process (read now if it was never seen).
    pub fn meta(&mut self, pid: u32) -> Arc<ProcessMeta> {
        self.meta
            .entry(pid)
            .or_insert_with(|| Arc::new(procinfo::read(&self.proc_root, pid)))
            .clone()
    }

    /// Labels of a process seen this session, without touching /proc.
    pub fn known_meta(&self, pid: u32) -> Option<&Arc<ProcessMeta>> {
        self.meta.get(&pid)
    }

    /// Sets a process's labels (a forked child has its parent's).
    pub fn set_meta(&mut self, pid: u32, meta: Arc<ProcessMeta>) {
        self.meta.insert(pid, meta);
    }

    /// Forgets a process's labels (it exec'd): the next [`Tracker::meta`]
    /// reads them anew.
    pub fn forget_meta(&mut self, pid: u32) {
        self.meta.remove(&pid);
    }

    /// Reads a process's labels again (after exec).
    pub fn refresh_meta(&mut self, pid: u32) -> Arc<ProcessMeta> {
        let m = Arc::new(procinfo::read(&self.proc_root, pid));
        self.meta.insert(pid, m.clone());
        m
    }

    /// Marks a process as excluded by the filter: the eBPF side drops its
    /// samples with one hash lookup and never unwinds them.
    pub fn exclude(&mut self, maps: &mut KernelMaps, pid: u32) -> Result<(), ScanError> {
        self.remove(maps, pid);
        let info = ProcessInfo {
            asid: 0,
            flags: ProcessFlag::Excluded as u32,
        };
        maps.processes
            .insert(pid, info.to_bytes(), 0)
            .map_err(map_err(pid))?;
        self.excluded.insert(pid);
        if !self.alive(pid) {
            self.remove(maps, pid);
        }
        Ok(())
    }

    /// A child the eBPF fork hook already marked excluded (its parent was):
    /// remember it so its entry is removed when it exits.
    pub fn adopt_excluded(&mut self, pid: u32) {
        self.excluded.insert(pid);
    }

    pub fn tracked_pids(&self) -> Vec<u32> {
        self.pids.keys().copied().collect()
    }

    /// Processes the filter excluded.
    pub fn excluded_count(&self) -> usize {
        self.excluded.len()
    }

    /// (processes, address spaces, LPM keys, loaded executables, rows in use)
    /// of the processes being profiled.
    pub fn footprint(&self) -> (usize, usize, usize, usize, u64) {
        (
            self.pids.len(),
            self.spaces.len(),
            self.spaces.values().map(|s| s.keys.len()).sum(),
            self.exes.values().filter(|e| e.rows.is_some()).count(),
            self.alloc.capacity() as u64 - self.alloc.available(),
        )
    }

    /// Who keeps an executable loaded: (asid, processes using it, pids we
    /// know in it). For leak diagnostics.
    pub fn holders(&self, exe_id: u64) -> Vec<(u32, u32, Vec<u32>)> {
        self.spaces
            .iter()
            .filter(|(_, s)| s.exes.contains(&exe_id))
            .map(|(&asid, s)| {
                let pids = self
                    .pids
                    .iter()
                    .filter(|(_, &a)| a == asid)
                    .map(|(&p, _)| p)
                    .collect();
                (asid, s.pids, pids)
            })
            .collect()
    }

    /// Scans `pid` and points it at a fresh address space. Returns false when
    /// its executable mappings did not change since the last scan.
    pub fn scan(&mut self, maps: &mut KernelMaps, pid: u32) -> Result<bool, ScanError> {
        self.stats.scans += 1;
        let res = self.scan_inner(maps, pid);
        match &res {
            Err(_) => self.stats.scan_errors += 1,
            Ok(false) => self.stats.scans_unchanged += 1,
            Ok(true) => {}
        }
        res
    }

    /// The executable mappings of `pid`: files, the vDSO and anonymous
    /// memory (code a JIT wrote).
    fn executable_mappings(&self, pid: u32) -> Result<Vec<MapsEntry>, ScanError> {
        let text =
            std::fs::read_to_string(self.proc_root.join(format!("{pid}/maps"))).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    ScanError::Gone(pid)
                } else {
                    ScanError::Maps(pid, e)
                }
            })?;
        Ok(procmaps::parse(&text)
            .into_iter()
            .filter(|e| e.executable && (e.is_file() || e.pathname == VDSO || e.is_anonymous()))
            .collect())
    }

    /// Loads the tables of every file `pid` maps (and notes its loader), but
    /// gives it no address space: the kernel resolves its PCs through
    /// file_tables (bpf_find_vma kernels). What a process the kernel could
    /// not fully unwind gets first; most are short-lived, and an address
    /// space costs dozens of trie writes to set up and as many to remove.
    pub fn load_tables(&mut self, maps: &mut KernelMaps, pid: u32) -> Result<(), ScanError> {
        self.stats.table_only_scans += 1;
        let entries = self.executable_mappings(pid).inspect_err(|_| {
            self.stats.scan_errors += 1;
        })?;
        let mut biases = Vec::with_capacity(entries.len());
        for e in entries.iter().filter(|e| !e.is_anonymous()) {
            let Some(exe_id) = self.executable_for(maps, pid, e) else {
                continue;
            };
            if let Some(bias) = self
                .exes
                .get(&exe_id)
                .and_then(|exe| mapping_bias(&exe.segments, e.start, e.offset))
            {
                biases.push((exe_id, bias));
            }
        }
        self.note_loader(maps, pid, &biases);
        self.mark_used(biases.iter().map(|&(id, _)| id));
        Ok(())
    }

    /// Keeps built tables on disk across runs (or stops doing so).
    pub fn set_table_cache(&mut self, cache: Option<crate::table_cache::TableCache>) {
        self.table_cache = cache;
    }

    /// What the table cache did, when there is one.
    pub fn table_cache_stats(&self) -> Option<&crate::table_cache::CacheStats> {
        self.table_cache.as_ref().map(|c| &c.stats)
    }

    /// Marks the tables a trace was unwound with as used now: a table that
    /// only processes without an address space use (the kernel finds it
    /// through file_tables) looks idle otherwise, and would be unloaded or
    /// evicted first while in use.
    pub fn note_used(&mut self, trace: &support::trace::RawTrace) {
        let mut last = None;
        let ids = trace.frames.iter().filter_map(|f| match f {
            // Consecutive frames mostly share an executable: look it up once.
            support::trace::RawFrame::Native { exe_id, .. } if last != Some(*exe_id) => {
                last = Some(*exe_id);
                Some(*exe_id)
            }
            _ => None,
        });
        self.mark_used(ids);
    }

    /// Marks idle tables as used now (the eviction and unloading order):
    /// tables that only processes without an address space use hold no
    /// reference that says so.
    fn mark_used(&mut self, ids: impl IntoIterator<Item = u64>) {
        let now = std::time::Instant::now();
        for id in ids {
            if let Some(exe) = self.exes.get_mut(&id) {
                if exe.refs == 0 {
                    exe.idle_since = Some(now);
                }
            }
        }
    }

    fn scan_inner(&mut self, maps: &mut KernelMaps, pid: u32) -> Result<bool, ScanError> {
        // Included now (a filter changed its mind after exec): the entry
        // written below replaces the exclusion.
        self.excluded.remove(&pid);
        let entries = self.executable_mappings(pid)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        entries.hash(&mut h);
        let fingerprint = h.finish();
        if self.pids.contains_key(&pid) && self.fingerprints.get(&pid) == Some(&fingerprint) {
            // Still make sure the eBPF side knows it (exec removes it there).
            if let Some(&asid) = self.pids.get(&pid) {
                let info = ProcessInfo { asid, flags: 0 };
                maps.processes
                    .insert(pid, info.to_bytes(), 0)
                    .map_err(map_err(pid))?;
            }
            return Ok(false);
        }

        let asid = self.allocate_asid(maps);
        let mut space = AddressSpace {
            pids: 1,
            ..Default::default()
        };
        let mut biases = Vec::with_capacity(entries.len());
        for e in &entries {
            let value = if e.is_anonymous() {
                // JIT code: the kernel records [jit] frames and follows the
                // frame pointer; there is no file to load.
                MappingValue {
                    exe_id: JIT_EXE_ID,
                    bias: 0,
                    start: e.start,
                    end: e.end,
                }
            } else {
                let Some(exe_id) = self.executable_for(maps, pid, e) else {
                    continue;
                };
                let exe = self.exes.get_mut(&exe_id).expect("just inserted");
                let Some(bias) = mapping_bias(&exe.segments, e.start, e.offset) else {
                    continue;
                };
                biases.push((exe_id, bias));
                if !space.exes.contains(&exe_id) {
                    exe.refs += 1;
                    exe.idle_since = None;
                    space.exes.push(exe_id);
                }
                MappingValue {
                    exe_id,
                    bias,
                    start: e.start,
                    end: e.end,
                }
            }
            .to_bytes();
            for (start, bits) in lpm::blocks(e.start, e.end) {
                let key = lpm::key(asid, start, bits);
                if let Err(err) = maps.mappings.insert(&trie_key(&key), value, 0) {
                    self.spaces.insert(asid, space);
                    self.release_space(maps, asid);
                    return Err(ScanError::Map(pid, format!("mappings: {err}")));
                }
                space.keys.push(key);
            }
        }
        self.spaces.insert(asid, space);
        self.note_loader(maps, pid, &biases);
        let info = ProcessInfo { asid, flags: 0 };
        if let Err(e) = maps.processes.insert(pid, info.to_bytes(), 0) {
            self.release_space(maps, asid);
            return Err(ScanError::Map(pid, format!("processes: {e}")));
        }
        self.fingerprints.insert(pid, fingerprint);
        if let Some(old) = self.pids.insert(pid, asid) {
            self.unref_space(maps, old);
        }
        // It may have exited while we scanned: its exit hook then found no
        // entry to delete and sent no event.
        if !self.alive(pid) {
            self.remove(maps, pid);
            return Err(ScanError::Gone(pid));
        }
        Ok(true)
    }

    /// Opens the file behind a mapping, identifies it and makes sure its
    /// table is loaded. `None` when the file cannot be opened or parsed.
    fn executable_for(&mut self, maps: &mut KernelMaps, pid: u32, e: &MapsEntry) -> Option<u64> {
        if e.pathname == VDSO {
            return self.vdso_executable(maps);
        }
        // map_files reaches the mapped file itself, also in another mount
        // namespace (containers) and after deletion; /proc/PID/root is the
        // fallback where map_files is not readable.
        let by_map = self
            .proc_root
            .join(format!("{pid}/map_files/{:x}-{:x}", e.start, e.end));
        let file = File::open(&by_map)
            .or_else(|_| {
                let rel = e.path();
                let rel = rel.strip_prefix("/").unwrap_or(&rel).to_path_buf();
                File::open(self.proc_root.join(format!("{pid}/root")).join(rel))
            })
            .ok()?;
        let meta = file.metadata().ok()?;
        let identity = (
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
        );
        let exe_id = match self.identities.get(&identity) {
            Some(&id) => id,
            None => {
                let mut f = &file;
                let file_id = FileId::from_reader(&mut f).ok()?;
                let id = file_id.hi();
                self.identities.insert(identity, id);
                self.files.entry(id).or_insert_with(|| {
                    Arc::new(FileInfo {
                        file_id,
                        path: e.path(),
                        file,
                    })
                });
                id
            }
        };
        if !self.exes.contains_key(&exe_id) {
            let info = self.files.get(&exe_id)?.clone();
            let exe = self.load_executable(maps, exe_id, info)?;
            self.exes.insert(exe_id, exe);
        }
        let key = FileKey {
            dev: kernel_dev(meta.dev()),
            ino: meta.ino(),
        };
        self.publish_file(maps, exe_id, key);
        Some(exe_id)
    }

    /// Lets the eBPF side find a loaded table by the file a mapping maps.
    fn publish_file(&mut self, maps: &mut KernelMaps, exe_id: u64, key: FileKey) {
        let Some(exe) = self.exes.get_mut(&exe_id) else {
            return;
        };
        if exe.rows.is_none() || exe.file_keys.contains(&key) {
            return;
        }
        let Some(value) = file_table(exe_id, exe) else {
            return;
        };
        match maps.file_tables.insert(key.to_bytes(), value.to_bytes(), 0) {
            Ok(()) => exe.file_keys.push(key),
            Err(e) => tracing::debug!(error = %e, "file_tables insert failed"),
        }
    }

    /// Tells the kernel which dynamic loader the main executable of `pid`
    /// runs and where its code sits, so loader PCs of its next processes
    /// resolve from AT_BASE without a lock (file_table). `space` holds the
    /// (executable, bias) of each mapping just scanned: the loader is the
    /// one whose bias is AT_BASE.
    fn note_loader(&mut self, maps: &mut KernelMaps, pid: u32, space: &[(u64, u64)]) {
        let Some(base) = loader_base(&self.proc_root, pid) else {
            return;
        };
        let Some(&(loader_id, _)) = space.iter().find(|&&(_, bias)| bias == base) else {
            return;
        };
        let Ok(meta) = std::fs::metadata(self.proc_root.join(format!("{pid}/exe"))) else {
            return;
        };
        let main_key = FileKey {
            dev: kernel_dev(meta.dev()),
            ino: meta.ino(),
        };
        let Some(main_id) = space.iter().map(|&(id, _)| id).find(|id| {
            self.exes
                .get(id)
                .is_some_and(|e| e.file_keys.contains(&main_key))
        }) else {
            return;
        };
        let Some((exec_start, exec_end)) = self
            .exes
            .get(&loader_id)
            .filter(|l| l.rows.is_some() && main_id != loader_id)
            .and_then(|l| exec_vaddr_range(&l.segments))
        else {
            return;
        };
        let loader = Loader {
            exe_id: loader_id,
            exec_start,
            exec_end,
        };
        let exe = self.exes.get_mut(&main_id).expect("found above");
        if exe.loader == Some(loader) {
            return;
        }
        exe.loader = Some(loader);
        let Some(value) = file_table(main_id, exe) else {
            return;
        };
        for key in &exe.file_keys {
            if let Err(e) = maps.file_tables.insert(key.to_bytes(), value.to_bytes(), 0) {
                tracing::debug!(error = %e, "file_tables update failed");
            }
        }
    }

    /// The vDSO: the same image in every process (it comes with the
    /// kernel), read once from our own address space into a memfd so it is
    /// identified, unwound and symbolized like any file.
    fn vdso_executable(&mut self, maps: &mut KernelMaps) -> Option<u64> {
        if let Some(id) = self.vdso {
            return self.exes.contains_key(&id).then_some(id).or_else(|| {
                let info = self.files.get(&id)?.clone();
                let exe = self.load_executable(maps, id, info)?;
                self.exes.insert(id, exe);
                Some(id)
            });
        }
        let image = read_own_vdso()?;
        // SAFETY: memfd_create with a valid C string and no flags.
        let fd = unsafe { libc::memfd_create(c"vdso".as_ptr(), 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a fresh descriptor we own.
        let mut file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        std::io::Write::write_all(&mut file, &image).ok()?;
        let file_id = FileId::from_bytes(&image);
        let id = file_id.hi();
        self.files.entry(id).or_insert_with(|| {
            Arc::new(FileInfo {
                file_id,
                path: PathBuf::from(VDSO_NAME),
                file,
            })
        });
        self.vdso = Some(id);
        let info = self.files.get(&id)?.clone();
        let exe = self.load_executable(maps, id, info)?;
        self.exes.insert(id, exe);
        Some(id)
    }

    fn load_executable(
        &mut self,
        maps: &mut KernelMaps,
        exe_id: u64,
        info: Arc<FileInfo>,
    ) -> Option<Executable> {
        // SAFETY: read-only private mapping of a file that is being executed;
        // executables are replaced, not rewritten in place.
        let data = unsafe { memmap2::Mmap::map(&info.file) }.ok()?;
        let segments = load_segments(&data).ok()?;
        let cached = self
            .table_cache
            .as_mut()
            .and_then(|c| c.get(info.file_id, data.len() as u64));
        let built = match cached {
            Some(rows) => Ok(rows),
            None => UnwindTable::from_elf(&data)
                .map_err(|e| e.to_string())
                .and_then(|t| rows::convert(&t).map_err(|e| e.to_string()))
                .inspect(|rows| {
                    if let (Some(c), false) = (self.table_cache.as_mut(), rows.is_empty()) {
                        c.put(info.file_id, data.len() as u64, rows);
                    }
                }),
        };
        let interpreter = match crate::python::recognise(&info.path, &data) {
            crate::python::Recognised::Python(i) => {
                self.stats.python_files += 1;
                Some(i)
            }
            crate::python::Recognised::Rejected(why) => {
                self.stats.python_files_rejected += 1;
                tracing::info!(path = %info.path.display(), %why, "Python frames stay native");
                None
            }
            crate::python::Recognised::NotPython => None,
        };
        let rows = match built {
            Ok(rows) if !rows.is_empty() => {
                self.install_rows(maps, exe_id, &rows, &info, interpreter.as_ref())
            }
            Ok(_) => None,
            Err(err) => {
                self.stats.table_errors += 1;
                tracing::debug!(path = %info.path.display(), %err, "no unwind table");
                None
            }
        };
        drop(data);
        if rows.is_some_and(|(_, n)| n > 100_000) {
            crate::loader::release_freed_memory();
        }
        Some(Executable {
            segments,
            rows,
            refs: 0,
            idle_since: None,
            file_keys: Vec::new(),
            loader: None,
        })
    }

    fn install_rows(
        &mut self,
        maps: &mut KernelMaps,
        exe_id: u64,
        rows: &[support::abi::UnwindRow],
        info: &FileInfo,
        interpreter: Option<&crate::python::Interpreter>,
    ) -> Option<(u32, u32)> {
        let len = rows.len() as u32;
        // Tables kept for reuse give way to one that is needed now.
        let start = self.alloc.alloc(len).or_else(|| {
            while self.evict_least_recently_used(maps) {
                if let Some(start) = self.alloc.alloc(len) {
                    return Some(start);
                }
            }
            None
        });
        let Some(start) = start else {
            self.stats.table_errors += 1;
            tracing::warn!(
                path = %info.path.display(),
                rows = len,
                free = self.alloc.available(),
                "unwind row array full: raise --max-unwind-rows"
            );
            return None;
        };
        // Rows first, then the table entry that makes them visible.
        if let Err(e) = maps.rows.write(start, rows) {
            self.alloc.release(start, len);
            self.stats.table_errors += 1;
            tracing::warn!(path = %info.path.display(), error = %e, "writing unwind rows failed");
            return None;
        }
        // The interpreter's description goes in before the table that
        // points the unwinder at it.
        let interpreter = interpreter.filter(|i| {
            let value = crate::python::python_file(i).to_bytes();
            match maps.python_files.insert(exe_id, value, 0) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(path = %info.path.display(), error = %e, "python_files insert failed");
                    false
                }
            }
        });
        let table = ExeTable {
            row_start: start,
            row_count: len,
            interpreter_start: interpreter.map_or(0, |i| i.loop_start as u32),
            interpreter_end: interpreter.map_or(0, |i| i.loop_end as u32),
        };
        if let Err(e) = maps.exe_tables.insert(exe_id, table.to_bytes(), 0) {
            self.alloc.release(start, len);
            self.stats.table_errors += 1;
            tracing::warn!(path = %info.path.display(), error = %e, "exe_tables insert failed");
            return None;
        }
        self.stats.tables_loaded += 1;
        self.stats.rows_loaded += len as u64;
        Some((start, len))
    }

    /// A known process forked: the eBPF side already points the child at the
    /// parent's address space.
    pub fn on_fork(&mut self, maps: &mut KernelMaps, child: u32, asid: u32) -> bool {
        let Some(space) = self.spaces.get_mut(&asid) else {
            // The parent rescanned meanwhile and the space is gone: the
            // child must be scanned on its own.
            let _ = maps.processes.remove(&child);
            return false;
        };
        space.pids += 1;
        if let Some(old) = self.pids.insert(child, asid) {
            self.unref_space(maps, old);
        }
        if let Some(fp) = self
            .pids
            .iter()
            .find(|(_, &a)| a == asid)
            .and_then(|(p, _)| self.fingerprints.get(p))
            .copied()
        {
            self.fingerprints.insert(child, fp);
        }
        true
    }

    /// The process exited (or exec'd, before its rescan): drop its state.
    pub fn remove(&mut self, maps: &mut KernelMaps, pid: u32) {
        self.fingerprints.remove(&pid);
        if self.meta.contains_key(&pid) {
            self.forgotten
                .push_back((std::time::Instant::now(), Forget::Meta(pid)));
        }
        if self.excluded.remove(&pid) {
            let _ = maps.processes.remove(&pid);
        }
        if let Some(asid) = self.pids.remove(&pid) {
            let _ = maps.processes.remove(&pid);
            self.unref_space(maps, asid);
        }
    }

    /// Whether `pid` still runs: its /proc entry exists and it is not a
    /// zombie (a zombie keeps /proc/PID until its parent reaps it, which an
    /// orphan's new parent may take long to do).
    fn alive(&self, pid: u32) -> bool {
        let Ok(stat) = std::fs::read_to_string(self.proc_root.join(format!("{pid}/stat"))) else {
            return false;
        };
        // The state follows the parenthesized comm, which may contain spaces.
        match stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
        {
            Some(state) => state != "Z" && state != "X",
            None => false,
        }
    }

    /// Drops processes that no longer run. Exit events can be lost when the
    /// events ring buffer is full, and a process that exits while it is
    /// being scanned is never reported (the eBPF exit hook only reports
    /// processes it knows).
    pub fn reap(&mut self, maps: &mut KernelMaps) -> usize {
        self.forget_old(maps);
        let dead: Vec<u32> = self
            .pids
            .keys()
            .chain(self.excluded.iter())
            .copied()
            .filter(|&pid| !self.alive(pid))
            .collect();
        for &pid in &dead {
            self.remove(maps, pid);
        }
        dead.len()
    }

    /// Drops the labels of processes and the open files of executables
    /// that have been gone for `FORGET_AFTER`: late traces still resolve,
    /// and a long-running agent does not keep every PID and every binary it
    /// ever saw.
    fn forget_old(&mut self, maps: &mut KernelMaps) {
        let Some(after) = self.forget_after else {
            self.forgotten.clear();
            return;
        };
        while let Some(&(when, what)) = self.forgotten.front() {
            if when.elapsed() < after {
                break;
            }
            self.forgotten.pop_front();
            match what {
                Forget::Meta(pid)
                    if !self.pids.contains_key(&pid) && !self.excluded.contains(&pid) =>
                {
                    self.meta.remove(&pid);
                }
                Forget::File(id)
                    if !self.exes.contains_key(&id) && self.files.remove(&id).is_some() =>
                {
                    self.identities.retain(|_, v| *v != id);
                    if self.vdso == Some(id) {
                        self.vdso = None;
                    }
                }
                Forget::Table(id) if self.exes.get(&id).is_some_and(|e| e.refs == 0) => {
                    // Still unwinding processes that have no address space
                    // (they resolve it through file_tables)? Look again later.
                    let used = self.exes[&id]
                        .idle_since
                        .is_some_and(|t| t.elapsed() < after);
                    if used {
                        self.forgotten
                            .push_back((std::time::Instant::now(), Forget::Table(id)));
                    } else {
                        self.unload(maps, id);
                    }
                }
                _ => {}
            }
        }
    }

    fn unref_space(&mut self, maps: &mut KernelMaps, asid: u32) {
        let Some(space) = self.spaces.get_mut(&asid) else {
            return;
        };
        space.pids = space.pids.saturating_sub(1);
        if space.pids == 0 {
            self.release_space(maps, asid);
        }
    }

    fn release_space(&mut self, maps: &mut KernelMaps, asid: u32) {
        let Some(space) = self.spaces.remove(&asid) else {
            return;
        };
        for key in &space.keys {
            let _ = maps.mappings.remove(&trie_key(key));
        }
        for exe_id in space.exes {
            let unused = match self.exes.get_mut(&exe_id) {
                Some(exe) => {
                    exe.refs = exe.refs.saturating_sub(1);
                    exe.refs == 0
                }
                None => false,
            };
            if unused {
                // Kept loaded: the next short-lived process of the same
                // binary (a compiler, a shell tool) reuses it instead of
                // rebuilding it. A continuous session also lets it go once
                // unused for a while.
                let now = std::time::Instant::now();
                if let Some(exe) = self.exes.get_mut(&exe_id) {
                    exe.idle_since = Some(now);
                }
                if self.forget_after.is_some() {
                    self.forgotten.push_back((now, Forget::Table(exe_id)));
                }
            }
        }
    }

    /// Where address space ids continue from: lets a test reach the
    /// wrap-around without 2^32 scans.
    #[doc(hidden)]
    pub fn set_next_asid(&mut self, asid: u32) {
        self.next_asid = asid.max(1);
    }

    /// A fresh address space id. The eBPF side caches lookups by id across
    /// samples, trusting that an id's mappings never change: when ids wrap
    /// around, that cache is dropped before an old id can come back, and ids
    /// still in use are skipped.
    fn allocate_asid(&mut self, maps: &mut KernelMaps) -> u32 {
        loop {
            let asid = self.next_asid;
            self.next_asid = self.next_asid.wrapping_add(1);
            if self.next_asid == 0 {
                self.next_asid = 1;
                maps.bump_generation();
            }
            if !self.spaces.contains_key(&asid) {
                return asid;
            }
        }
    }

    /// Removes an executable's table from the kernel and frees its rows.
    fn unload(&mut self, maps: &mut KernelMaps, exe_id: u64) {
        if let Some(exe) = self.exes.remove(&exe_id) {
            for key in &exe.file_keys {
                let _ = maps.file_tables.remove(&key.to_bytes());
            }
            if let Some((start, len)) = exe.rows {
                // Hide the table before its rows can be reused, and make the
                // CPUs forget any copy of it they cached.
                let _ = maps.exe_tables.remove(&exe_id);
                let _ = maps.python_files.remove(&exe_id);
                maps.bump_generation();
                self.alloc.release(start, len);
            }
            self.forgotten
                .push_back((std::time::Instant::now(), Forget::File(exe_id)));
        }
    }

    /// Unloads the idle table unused for the longest time; false when no
    /// table is idle. Counted in `tables_evicted`.
    fn evict_least_recently_used(&mut self, maps: &mut KernelMaps) -> bool {
        let oldest = self
            .exes
            .iter()
            .filter(|(_, e)| e.refs == 0)
            .min_by_key(|(_, e)| e.idle_since)
            .map(|(&id, _)| id);
        let Some(id) = oldest else {
            return false;
        };
        self.unload(maps, id);
        self.stats.tables_evicted += 1;
        true
    }

    /// Unloads every table no process uses; returns how many.
    pub fn unload_idle(&mut self, maps: &mut KernelMaps) -> usize {
        let idle: Vec<u64> = self
            .exes
            .iter()
            .filter(|(_, e)| e.refs == 0)
            .map(|(&id, _)| id)
            .collect();
        for &id in &idle {
            self.unload(maps, id);
        }
        idle.len()
    }

    /// Rows of every loaded table, used or idle.
    pub fn loaded_rows(&self) -> u64 {
        self.exes
            .values()
            .filter_map(|e| e.rows)
            .map(|(_, n)| n as u64)
            .sum()
    }

    /// Executables whose tables are kept loaded with no process using them.
    pub fn idle_tables(&self) -> usize {
        self.exes.values().filter(|e| e.refs == 0).count()
    }
}

/// The LPM key as aya wants it: prefix length, then the data bytes.
pub fn trie_key(k: &MappingKey) -> aya::maps::lpm_trie::Key<[u8; 12]> {
    let bytes = k.to_bytes();
    let mut data = [0u8; 12];
    data.copy_from_slice(&bytes[4..16]);
    aya::maps::lpm_trie::Key::new(k.prefixlen, data)
}

#[derive(Clone, Copy, Debug)]
enum Forget {
    Meta(u32),
    /// A table no process uses: unloaded if still unused when due.
    Table(u64),
    File(u64),
}

/// How /proc/PID/maps names the vDSO.
const VDSO: &str = "[vdso]";
/// The vDSO's soname, the name its frames show.
const VDSO_NAME: &str = "linux-vdso.so.1";

/// The bytes of this process's vDSO.
fn read_own_vdso() -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let e = procmaps::parse(&maps)
        .into_iter()
        .find(|e| e.pathname == VDSO)?;
    let mem = File::open("/proc/self/mem").ok()?;
    let mut buf = vec![0u8; (e.end - e.start) as usize];
    mem.read_exact_at(&mut buf, e.start).ok()?;
    Some(buf)
}

/// Every PID under /proc.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// PIDs whose mappings include no executable file (kernel threads) are
/// skipped by `scan` naturally; this set helps callers avoid rescans.
pub type PidSet = HashSet<u32>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_of_pie_and_lld_layouts() {
        // PIE linked by GNU ld: text at offset 0x1000, vaddr 0x1000.
        let segs = vec![
            Segment {
                offset: 0,
                vaddr: 0,
                filesz: 0x600,
                executable: false,
            },
            Segment {
                offset: 0x1000,
                vaddr: 0x1000,
                filesz: 0x200,
                executable: true,
            },
        ];
        let b = mapping_bias(&segs, 0x5555_5555_5000, 0x1000).unwrap();
        assert_eq!(0x5555_5555_5123 - b, 0x1123);
        // LLD: text at offset 0x134c0, vaddr 0x144c0 (differs by a page).
        let segs = vec![
            Segment {
                offset: 0,
                vaddr: 0,
                filesz: 0x134c0,
                executable: false,
            },
            Segment {
                offset: 0x134c0,
                vaddr: 0x144c0,
                filesz: 0x50000,
                executable: true,
            },
        ];
        let start = 0x5600_0001_4000; // maps the page holding offset 0x13000
        let b = mapping_bias(&segs, start, 0x13000).unwrap();
        // Process address of file offset 0x134c0 is start + 0x4c0.
        assert_eq!(start + 0x4c0 - b, 0x144c0);
        assert_eq!(mapping_bias(&segs, start, 0x900000), None);
    }

    #[test]
    fn a_second_executable_segment_with_its_own_offset_keeps_its_bias() {
        // rustup's libLLVM: its hot text in a 2 MiB-aligned second segment.
        let seg = |offset, vaddr, filesz, executable| Segment {
            offset,
            vaddr,
            filesz,
            executable,
        };
        let segs = vec![
            seg(0, 0, 0x449a9a4, false),
            seg(0x449a9a4, 0x449b9a4, 0x3ee331c, true),
            seg(0x837dcc0, 0x837fcc0, 0x1c34a8, false),
            seg(0x8600000, 0x8600000, 0x2157044, true),
        ];
        let layout = exec_layout(&segs).unwrap();
        assert_eq!(
            layout.offset_minus_vaddr,
            0x449a9a4u64.wrapping_sub(0x449b9a4)
        );
        assert_eq!(layout.second, Some((0x8600000, 0)));
        assert_eq!(layout.end, 0x8600000 + 0x2157044);
        // The kernel's formula (file_mapping in profiler.bpf.c) gives each
        // mapping the bias mapping_bias computes from the segments.
        let load = 0x7f00_0000_0000u64;
        for (vm_start, pgoff_bytes) in [
            (load + 0x449b000, 0x449a000u64),
            (load + 0x8600000, 0x8600000),
        ] {
            let delta = match layout.second {
                Some((off, d)) if pgoff_bytes >= off => d,
                _ => layout.offset_minus_vaddr,
            };
            let kernel = vm_start.wrapping_sub(pgoff_bytes).wrapping_add(delta);
            assert_eq!(Some(kernel), mapping_bias(&segs, vm_start, pgoff_bytes));
            assert_eq!(kernel, load);
        }
        // A third difference is refused.
        let mut three = segs.clone();
        three.push(seg(0xa800000, 0xa900000, 0x1000, true));
        assert_eq!(exec_layout(&three), None);
    }

    #[test]
    fn segments_of_libc() {
        let data = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let segs = load_segments(&data).unwrap();
        assert!(segs.iter().any(|s| s.executable));
        assert!(load_segments(b"not an elf").is_err());
    }
}
