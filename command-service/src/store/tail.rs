//! The newest log blocks, kept in memory as `Store::apply` writes them to
//! sled, so that reading the live tail (`SubscribeEvents` after each group)
//! costs no sled range scan.
//!
//! At a few hundred commands per second every group is a block of one event,
//! and each subscriber read of it was two sled range scans (the block at or
//! before `from`, then the blocks from there) plus a parse of the block's
//! frames: about a tenth of command-service's instructions per command. The
//! blocks here are the same bytes sled got, parsed once, and a block is
//! never changed once written, so a read served from here returns exactly
//! what sled would.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::Bytes;

/// The tail keeps at most this many blocks…
const MAX_BLOCKS: usize = 256;
/// …and at most about this many bytes of them.
const MAX_BYTES: usize = 1 << 20;

/// One log block: its first position, its bytes and each event's frame in them.
pub(super) struct Block {
    pub first: u64,
    pub bytes: Bytes,
    pub frames: Vec<Range<usize>>,
}

impl Block {
    /// The position after its last event.
    fn end(&self) -> u64 {
        self.first + self.frames.len() as u64
    }
}

/// Consecutive blocks, the newest last.
#[derive(Default)]
pub(super) struct Tail {
    blocks: VecDeque<Block>,
    bytes: usize,
}

impl Tail {
    /// Adds the block written after the newest one. A block that does not
    /// follow it (never expected: the log is applied in order) starts the
    /// tail again, so the tail never has a gap.
    pub fn push(&mut self, block: Block) {
        if self
            .blocks
            .back()
            .is_some_and(|last| last.end() != block.first)
        {
            self.blocks.clear();
            self.bytes = 0;
        }
        self.bytes += block.bytes.len();
        self.blocks.push_back(block);
        while self.blocks.len() > MAX_BLOCKS || (self.bytes > MAX_BYTES && self.blocks.len() > 1) {
            if let Some(old) = self.blocks.pop_front() {
                self.bytes -= old.bytes.len();
            }
        }
    }

    /// The blocks from the one holding `from` on, or `None` when the tail
    /// does not hold `from` (older, or not written yet).
    pub fn from(&self, from: u64) -> Option<impl Iterator<Item = &Block>> {
        let first = self.blocks.front()?.first;
        let end = self.blocks.back()?.end();
        if from < first || from >= end {
            return None;
        }
        let start = self.blocks.partition_point(|block| block.end() <= from);
        Some(self.blocks.range(start..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(first: u64, events: usize) -> Block {
        Block {
            first,
            bytes: Bytes::from(vec![0u8; events * 10]),
            frames: (0..events).map(|i| i * 10..i * 10 + 10).collect(),
        }
    }

    fn firsts(tail: &Tail, from: u64) -> Option<Vec<u64>> {
        tail.from(from)
            .map(|blocks| blocks.map(|b| b.first).collect())
    }

    #[test]
    fn reads_start_at_the_block_holding_the_position() {
        let mut tail = Tail::default();
        assert_eq!(firsts(&tail, 1), None);
        tail.push(block(1, 3));
        tail.push(block(4, 1));
        tail.push(block(5, 2));
        assert_eq!(firsts(&tail, 1), Some(vec![1, 4, 5]));
        assert_eq!(firsts(&tail, 3), Some(vec![1, 4, 5]));
        assert_eq!(firsts(&tail, 4), Some(vec![4, 5]));
        assert_eq!(firsts(&tail, 6), Some(vec![5]));
        assert_eq!(firsts(&tail, 7), None, "not written yet");
    }

    #[test]
    fn old_blocks_leave_and_a_gap_starts_the_tail_again() {
        let mut tail = Tail::default();
        for i in 0..MAX_BLOCKS as u64 + 10 {
            tail.push(block(i + 1, 1));
        }
        assert_eq!(tail.blocks.len(), MAX_BLOCKS);
        assert_eq!(firsts(&tail, 10), None, "dropped: read from sled");
        assert_eq!(firsts(&tail, 11).map(|f| f.len()), Some(MAX_BLOCKS));
        tail.push(block(1000, 2));
        assert_eq!(firsts(&tail, 1000), Some(vec![1000]));
        assert_eq!(firsts(&tail, 20), None);
    }
}
