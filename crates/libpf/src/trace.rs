//! `Trace`: one sampled stack trace with the context it was taken in.
//!
//! This is what the agent hands to every output (pprof, OTLP,
//! Elasticsearch). It holds the frames leaf first, as unwound, and the
//! [`TraceHash`] computed from them. The frames and hash are private so they
//! cannot disagree; the sampling context is public plain data.

use std::sync::Arc;

use crate::frame_type_rle;
use crate::{Frame, FrameId, TraceHash};

/// A sampled stack trace.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Trace {
    frames: Vec<Frame>,
    hash: TraceHash,
    /// Process id (thread group id, as user space sees it).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name (`comm`, at most 15 bytes in the kernel).
    pub comm: Arc<str>,
    /// When the sample was taken: `CLOCK_MONOTONIC` nanoseconds, as from
    /// `bpf_ktime_get_ns` (outputs convert to wall-clock time).
    pub ktime_ns: u64,
    /// CPU the sample was taken on, when known.
    pub cpu: Option<u32>,
}

impl Trace {
    /// Builds a trace from frames given leaf first; computes its hash.
    pub fn new(
        frames: Vec<Frame>,
        pid: u32,
        tid: u32,
        comm: impl Into<Arc<str>>,
        ktime_ns: u64,
    ) -> Self {
        let hash = TraceHash::from_frames(&frames);
        Self {
            frames,
            hash,
            pid,
            tid,
            comm: comm.into(),
            ktime_ns,
            cpu: None,
        }
    }

    /// The frames, leaf first (inlined expansions included).
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// The trace's identity (Elasticsearch stacktrace id via
    /// [`TraceHash::to_base64`]).
    pub fn hash(&self) -> TraceHash {
        self.hash
    }

    /// Gives the frames back, leaf first.
    pub fn into_frames(self) -> Vec<Frame> {
        self.frames
    }

    /// Replaces the frames with symbolized ones (for example with inlined
    /// expansions added) and returns the previous ones. The hash is
    /// recomputed; it only changes if the unwound frames changed.
    pub fn replace_frames(&mut self, frames: Vec<Frame>) -> Vec<Frame> {
        self.hash = TraceHash::from_frames(&frames);
        std::mem::replace(&mut self.frames, frames)
    }

    /// The unwound frames (inlined expansions skipped), root first: the
    /// order of Elasticsearch's `frame.ids` and `frame.types`.
    pub fn unwound_frames_root_first(&self) -> impl Iterator<Item = &Frame> + '_ {
        self.frames.iter().rev().filter(|f| !f.inlined)
    }

    /// Elasticsearch `frame.ids`, root first.
    pub fn frame_ids_root_first(&self) -> Vec<FrameId> {
        self.unwound_frames_root_first()
            .map(Frame::frame_id)
            .collect()
    }

    /// Elasticsearch `frame.types`: run-length encoded, root first.
    pub fn frame_types_rle(&self) -> String {
        frame_type_rle::encode_frame_types(self.unwound_frames_root_first().map(|f| f.frame_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AddressOrLineno, FileId, FrameKind, FrameType};

    fn native(i: u64) -> Frame {
        Frame::new(
            FrameType::from_kind(FrameKind::Native),
            Some(FileId::new(i, i)),
            i,
        )
    }

    #[test]
    fn hash_matches_vector_and_ignores_inlined() {
        let t = Trace::new((0..3).map(native).collect(), 1, 2, "comm", 0);
        assert_eq!(
            t.hash(),
            TraceHash::new(0x21c6fe4c62868856, 0xcf510596eab68dc8)
        );

        // Expand frame 1 into an inlined call plus the real frame.
        let mut t2 = t.clone();
        let mut frames = t2.frames().to_vec();
        frames.insert(1, native(1).with_function("inlined_fn").with_inlined(true));
        t2.replace_frames(frames);
        assert_eq!(t2.frames().len(), 4);
        assert_eq!(t2.hash(), t.hash());
        assert_eq!(t2.frame_ids_root_first(), t.frame_ids_root_first());
    }

    #[test]
    fn root_first_views() {
        let mut frames: Vec<Frame> = (0..3).map(native).collect();
        frames.insert(
            0,
            Frame::new(FrameType::from_kind(FrameKind::Kernel), None, 9u64),
        );
        let t = Trace::new(frames, 1, 1, "x", 0);
        let ids = t.frame_ids_root_first();
        assert_eq!(ids[0], FrameId::new(FileId::new(2, 2), AddressOrLineno(2)));
        assert_eq!(ids[3].file_id, FileId::default());
        // Root first: three native (3) then one kernel (4): 03 03 01 04.
        assert_eq!(t.frame_types_rle(), "AwMBBA");
    }
}
