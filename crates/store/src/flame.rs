//! Flame graphs: stacks merged into a call tree by function name.
//!
//! The tree is built here, next to the queries, rather than in the browser:
//! the server holds the decoded stacks already, and a tree pruned to what is
//! visible is far smaller to send than the stacks it came from.

use libpf::{frame_flags, FileId, Frame, FrameKind, FrameType};
use profile::Executable;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// How the UI colors a frame: by where the code runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameClass {
    /// Kernel code.
    Kernel,
    /// Machine code in an ELF file (C, C++, Rust, Go, …).
    Native,
    /// Code run by an interpreter or JIT (Python, JVM, V8, Ruby, …).
    Interpreted,
    /// An unwinding error or abort marker: the stack is truncated here.
    Error,
}

impl FrameClass {
    /// Every class, in display order.
    pub const ALL: [FrameClass; 4] = [
        FrameClass::Kernel,
        FrameClass::Native,
        FrameClass::Interpreted,
        FrameClass::Error,
    ];

    /// The class of a frame type. Unknown (non-error) kinds count as native:
    /// they come from the native unwinder.
    pub fn of_type(t: FrameType) -> FrameClass {
        if t.is_error() {
            return FrameClass::Error;
        }
        match t.kind() {
            None => FrameClass::Error,
            Some(FrameKind::Kernel) => FrameClass::Kernel,
            Some(FrameKind::Native | FrameKind::Go | FrameKind::Unknown) => FrameClass::Native,
            Some(_) => FrameClass::Interpreted,
        }
    }

    /// The class of a frame: its type's, or error when the eBPF header
    /// flagged it as an error frame.
    pub fn of(f: &Frame) -> FrameClass {
        if f.has_flags(frame_flags::ERROR) {
            FrameClass::Error
        } else {
            FrameClass::of_type(f.frame_type)
        }
    }

    /// Lower-case name, as used in the API and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameClass::Kernel => "kernel",
            FrameClass::Native => "native",
            FrameClass::Interpreted => "interpreted",
            FrameClass::Error => "error",
        }
    }

    /// Parses [`FrameClass::as_str`].
    pub fn parse(s: &str) -> Option<FrameClass> {
        FrameClass::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The name a frame is shown and merged under: its function name when
/// symbolized, else a placeholder that still tells frames apart
/// (`libc.so.6+0x1234`, `[kernel] 0xffff…`, `[unwind error native 3]`).
pub fn frame_name(f: &Frame, executables: &BTreeMap<FileId, Executable>) -> Arc<str> {
    if let Some(name) = &f.function_name {
        return name.clone();
    }
    let addr = f.address_or_line.get();
    if FrameClass::of(f) == FrameClass::Error {
        if f.frame_type.is_abort() {
            return format!("[unwind aborted {addr}]").into();
        }
        return format!("[unwind error {} {addr}]", f.frame_type).into();
    }
    if let Some(e) = f.file_id.and_then(|id| executables.get(&id)) {
        return format!("{}+{addr:#x}", e.base_name()).into();
    }
    match f.frame_type.kind() {
        Some(FrameKind::Native) | None => format!("{addr:#x}").into(),
        Some(_) => format!("[{}] {addr:#x}", f.frame_type).into(),
    }
}

/// One node of a [`FlameGraph`]: a function called along one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlameNode {
    pub name: Arc<str>,
    pub class: FrameClass,
    /// Samples in this node and below.
    pub total: u64,
    /// Samples with this node as the leaf.
    pub self_count: u64,
    /// For diff graphs: the same counts in the baseline range (0 otherwise).
    pub base_total: u64,
    pub base_self: u64,
    /// Indexes into [`FlameGraph::nodes`], sorted by name.
    pub children: Vec<u32>,
}

/// A call tree, root first: node 0 is the synthetic root `all`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlameGraph {
    pub nodes: Vec<FlameNode>,
    index: HashMap<(u32, Arc<str>, FrameClass), u32>,
}

impl Default for FlameGraph {
    fn default() -> Self {
        Self::new()
    }
}

impl FlameGraph {
    /// An empty graph (just the root).
    pub fn new() -> Self {
        FlameGraph {
            nodes: vec![FlameNode {
                name: "all".into(),
                class: FrameClass::Native,
                total: 0,
                self_count: 0,
                base_total: 0,
                base_self: 0,
                children: Vec::new(),
            }],
            index: HashMap::new(),
        }
    }

    /// The root node.
    pub fn root(&self) -> &FlameNode {
        &self.nodes[0]
    }

    /// Adds one path, root first, with its count and its baseline count
    /// (0 outside diffs).
    pub fn add_path(
        &mut self,
        path: impl IntoIterator<Item = (Arc<str>, FrameClass)>,
        count: u64,
        base: u64,
    ) {
        let mut cur = 0u32;
        self.bump(cur, count, base);
        for (name, class) in path {
            let key = (cur, name, class);
            let next = match self.index.get(&key) {
                Some(&n) => n,
                None => {
                    let n = self.nodes.len() as u32;
                    self.nodes.push(FlameNode {
                        name: key.1.clone(),
                        class,
                        total: 0,
                        self_count: 0,
                        base_total: 0,
                        base_self: 0,
                        children: Vec::new(),
                    });
                    self.nodes[cur as usize].children.push(n);
                    self.index.insert(key, n);
                    n
                }
            };
            cur = next;
            self.bump(cur, count, base);
        }
        let leaf = &mut self.nodes[cur as usize];
        leaf.self_count += count;
        leaf.base_self += base;
    }

    /// Adds a stack (leaf first, as in [`profile::Sample`]).
    pub fn add_stack(
        &mut self,
        frames: &[Frame],
        executables: &BTreeMap<FileId, Executable>,
        count: u64,
        base: u64,
    ) {
        let path: Vec<(Arc<str>, FrameClass)> = frames
            .iter()
            .rev()
            .map(|f| (frame_name(f, executables), FrameClass::of(f)))
            .collect();
        self.add_path(path, count, base);
    }

    fn bump(&mut self, n: u32, count: u64, base: u64) {
        let node = &mut self.nodes[n as usize];
        node.total += count;
        node.base_total += base;
    }

    /// Sorts every node's children by name (then class), the classic flame
    /// graph order, so that the same data always draws the same picture.
    pub fn sort(&mut self) {
        let names: Vec<(Arc<str>, FrameClass)> = self
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.class))
            .collect();
        for node in &mut self.nodes {
            node.children
                .sort_by(|&a, &b| names[a as usize].cmp(&names[b as usize]));
        }
    }

    /// Samples in the graph.
    pub fn total(&self) -> u64 {
        self.root().total
    }

    /// Baseline samples (diff graphs).
    pub fn base_total(&self) -> u64 {
        self.root().base_total
    }

    /// Indexes of every node named `name`.
    pub fn find(&self, name: &str) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|&i| &*self.nodes[i as usize].name == name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, t: FrameType) -> Frame {
        Frame::new(t, None, 1u64).with_function(name)
    }

    #[test]
    fn merges_paths_by_name_and_counts_self_and_total() {
        let mut g = FlameGraph::new();
        let none = BTreeMap::new();
        let k = FrameType::KERNEL;
        let n = FrameType::NATIVE;
        // leaf first
        g.add_stack(&[f("b", n), f("a", n), f("main", n)], &none, 3, 0);
        g.add_stack(&[f("sys_read", k), f("a", n), f("main", n)], &none, 2, 1);
        g.add_stack(&[f("main", n)], &none, 1, 0);
        g.sort();
        assert_eq!(g.total(), 6);
        assert_eq!(g.base_total(), 1);
        let main = &g.nodes[g.root().children[0] as usize];
        assert_eq!((&*main.name, main.total, main.self_count), ("main", 6, 1));
        let a = &g.nodes[main.children[0] as usize];
        assert_eq!((a.total, a.self_count), (5, 0));
        let names: Vec<&str> = a
            .children
            .iter()
            .map(|&c| &*g.nodes[c as usize].name)
            .collect();
        assert_eq!(names, ["b", "sys_read"]);
        let sys = &g.nodes[g.find("sys_read")[0] as usize];
        assert_eq!(sys.class, FrameClass::Kernel);
        assert_eq!((sys.total, sys.base_total, sys.base_self), (2, 1, 1));
    }

    #[test]
    fn classes_and_fallback_names() {
        use libpf::FrameKind as K;
        assert_eq!(FrameClass::of_type(FrameType::KERNEL), FrameClass::Kernel);
        assert_eq!(FrameClass::of_type(FrameType::NATIVE), FrameClass::Native);
        assert_eq!(
            FrameClass::of_type(K::Python.into()),
            FrameClass::Interpreted
        );
        assert_eq!(
            FrameClass::of_type(K::Hotspot.into()),
            FrameClass::Interpreted
        );
        assert_eq!(FrameClass::of_type(FrameType::ABORT), FrameClass::Error);
        assert_eq!(
            FrameClass::of_type(FrameType::NATIVE.with_error()),
            FrameClass::Error
        );
        assert_eq!(
            FrameClass::of_type(FrameType::from_u8(0x0e)),
            FrameClass::Error
        );
        assert_eq!(
            FrameClass::parse("interpreted"),
            Some(FrameClass::Interpreted)
        );
        assert_eq!(FrameClass::parse("bogus"), None);

        let mut exes = BTreeMap::new();
        let id = FileId::new(1, 1);
        exes.insert(
            id,
            Executable {
                file_id: id,
                path: "/usr/lib/libc.so.6".into(),
                gnu_build_id: None,
                vaddr_start: 0,
                vaddr_end: 0,
            },
        );
        let native = Frame::new(FrameType::NATIVE, Some(id), 0x1234u64);
        assert_eq!(&*frame_name(&native, &exes), "libc.so.6+0x1234");
        let unknown_file = Frame::new(FrameType::NATIVE, Some(FileId::new(2, 2)), 0x10u64);
        assert_eq!(&*frame_name(&unknown_file, &exes), "0x10");
        let kernel = Frame::new(FrameType::KERNEL, None, 0xffffu64);
        assert_eq!(&*frame_name(&kernel, &exes), "[kernel] 0xffff");
        let err = Frame::new(FrameType::NATIVE.with_error(), None, 3u64);
        assert_eq!(&*frame_name(&err, &exes), "[unwind error native 3]");
        let flagged = Frame::new(FrameType::NATIVE, None, 4u64).with_flags(frame_flags::ERROR);
        assert_eq!(FrameClass::of(&flagged), FrameClass::Error);
    }
}
