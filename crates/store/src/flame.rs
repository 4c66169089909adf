//! Flame graphs: stacks merged into a call tree by function name.
//!
//! The tree is built here, next to the queries, rather than in the browser:
//! the server holds the decoded stacks already, and a tree pruned to what is
//! visible is far smaller to send than the stacks it came from.

use libpf::{FileId, Frame};
use profile::{Executable, Profile};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// How the UI colors a frame: kernel, native, interpreted or error. The
/// profile model's classification, so that the UI, pprof pseudo-mappings,
/// the SVG flame graph and `top` never disagree.
pub use profile::FrameClass;

/// Every class, in display order.
pub const CLASSES: [FrameClass; 4] = [
    FrameClass::Kernel,
    FrameClass::Native,
    FrameClass::Interpreted,
    FrameClass::Error,
];

/// Lower-case name of a class, as used in the API and filters.
pub fn class_name(c: FrameClass) -> &'static str {
    match c {
        FrameClass::Kernel => "kernel",
        FrameClass::Native => "native",
        FrameClass::Interpreted => "interpreted",
        FrameClass::Error => "error",
    }
}

/// Parses [`class_name`].
pub fn parse_class(s: &str) -> Option<FrameClass> {
    CLASSES.into_iter().find(|&c| class_name(c) == s)
}

/// The name a frame is shown and merged under: the profile model's
/// [`Profile::frame_name`] (function name when symbolized, else
/// `libc.so.6+0x1234`, `[kernel]+0xffff…`, `<unwinding aborted due to error
/// …>`), so that a name searched in the UI is the one the downloaded pprof
/// shows. `names` supplies the executables; its samples are not read.
pub fn frame_name(f: &Frame, names: &Profile) -> Arc<str> {
    match names.frame_name(f) {
        // The symbol itself: share its Arc instead of copying the string.
        Cow::Borrowed(s) => match &f.function_name {
            Some(n) if **n == *s => n.clone(),
            _ => s.into(),
        },
        Cow::Owned(s) => s.into(),
    }
}

/// A naming context for [`frame_name`]: a profile holding only executables.
pub fn names(executables: BTreeMap<FileId, Executable>) -> Profile {
    Profile {
        executables,
        ..Profile::default()
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

    /// Adds a stack (leaf first, as in [`profile::Sample`]); `names` is
    /// the naming context of [`frame_name`].
    pub fn add_stack(&mut self, frames: &[Frame], names: &Profile, count: u64, base: u64) {
        let path: Vec<(Arc<str>, FrameClass)> = frames
            .iter()
            .rev()
            .map(|f| (frame_name(f, names), FrameClass::of(f)))
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
    use libpf::{frame_flags, FrameKind, FrameType};

    fn f(name: &str, t: FrameType) -> Frame {
        Frame::new(t, None, 1u64).with_function(name)
    }

    #[test]
    fn merges_paths_by_name_and_counts_self_and_total() {
        let mut g = FlameGraph::new();
        let none = Profile::default();
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
    fn classes_and_fallback_names_follow_the_profile_model() {
        let class = |t: FrameType| FrameClass::of(&Frame::new(t, None, 0u64));
        assert_eq!(class(FrameType::KERNEL), FrameClass::Kernel);
        assert_eq!(class(FrameType::NATIVE), FrameClass::Native);
        assert_eq!(class(FrameKind::Python.into()), FrameClass::Interpreted);
        assert_eq!(class(FrameType::ABORT), FrameClass::Error);
        assert_eq!(class(FrameType::NATIVE.with_error()), FrameClass::Error);
        for c in CLASSES {
            assert_eq!(parse_class(class_name(c)), Some(c));
        }
        assert_eq!(parse_class("bogus"), None);

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
        let ctx = names(exes);
        let native = Frame::new(FrameType::NATIVE, Some(id), 0x1234u64);
        assert_eq!(&*frame_name(&native, &ctx), "libc.so.6+0x1234");
        let kernel = Frame::new(FrameType::KERNEL, None, 0xffffu64);
        assert_eq!(&*frame_name(&kernel, &ctx), "[kernel]+0xffff");
        let err = Frame::new(FrameType::NATIVE.with_error(), None, 3u64);
        let want = profile::error_frame_name(3);
        assert_eq!(&*frame_name(&err, &ctx), want);
        let named = Frame::new(FrameType::NATIVE, None, 1u64).with_function("main");
        assert_eq!(&*frame_name(&named, &ctx), "main");
        let flagged = Frame::new(FrameType::NATIVE, None, 4u64).with_flags(frame_flags::ERROR);
        assert_eq!(FrameClass::of(&flagged), FrameClass::Error);
        // Every frame of a demo profile names like the model names it.
        let demo = crate::testdata::demo_profile("h", 0, 1);
        let ctx = names(demo.executables.clone());
        for s in &demo.samples {
            for f in s.frames.iter() {
                assert_eq!(&*frame_name(f, &ctx), &*demo.frame_name(f));
            }
        }
    }
}
