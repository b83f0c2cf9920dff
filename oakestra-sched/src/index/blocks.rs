//! An ordered list in blocks, each knowing the largest free CPU, memory and GPUs of its
//! entries, so that a walk in order skips whole blocks of candidates too small for a request.

use super::Entry;

/// Entries per block before it splits in two (4 in tests, so that the property tests' small
/// fleets span many blocks).
const MAX_BLOCK: usize = if cfg!(test) { 4 } else { 64 };

/// One entry with the free capacity a walk filters on without touching the candidate.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) entry: Entry,
    pub(super) free_vcpus: f64,
    pub(super) free_memory_mb: u64,
    pub(super) free_gpus: u32,
}

#[derive(Debug, Default)]
struct Block {
    items: Vec<Item>,
    max_vcpus: f64,
    max_memory_mb: u64,
    max_gpus: u32,
}

impl Block {
    fn refresh(&mut self) {
        self.max_vcpus = self
            .items
            .iter()
            .map(|i| i.free_vcpus)
            .fold(f64::NEG_INFINITY, f64::max);
        self.max_memory_mb = self
            .items
            .iter()
            .map(|i| i.free_memory_mb)
            .max()
            .unwrap_or(0);
        self.max_gpus = self.items.iter().map(|i| i.free_gpus).max().unwrap_or(0);
    }

    fn may_hold(&self, vcpus: f64, memory_mb: u64, gpus: u32) -> bool {
        self.max_vcpus >= vcpus && self.max_memory_mb >= memory_mb && self.max_gpus >= gpus
    }
}

/// Items ordered by their entry.
#[derive(Debug, Default)]
pub(super) struct Blocks {
    blocks: Vec<Block>,
}

impl Blocks {
    pub(super) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The block an entry belongs in: the last whose first entry is not after it.
    fn block_of(&self, entry: &Entry) -> usize {
        self.blocks
            .partition_point(|b| b.items[0].entry <= *entry)
            .saturating_sub(1)
    }

    pub(super) fn insert(&mut self, item: Item) {
        if self.blocks.is_empty() {
            let mut block = Block {
                items: vec![item],
                ..Block::default()
            };
            block.refresh();
            self.blocks.push(block);
            return;
        }
        let b = self.block_of(&item.entry);
        let block = &mut self.blocks[b];
        // The maxima only grow on insert: no pass over the block.
        block.max_vcpus = block.max_vcpus.max(item.free_vcpus);
        block.max_memory_mb = block.max_memory_mb.max(item.free_memory_mb);
        block.max_gpus = block.max_gpus.max(item.free_gpus);
        let at = block.items.partition_point(|i| i.entry < item.entry);
        block.items.insert(at, item);
        if block.items.len() > MAX_BLOCK {
            let mut tail = Block {
                items: block.items.split_off(MAX_BLOCK / 2),
                ..Block::default()
            };
            block.refresh();
            tail.refresh();
            self.blocks.insert(b + 1, tail);
        }
    }

    pub(super) fn remove(&mut self, entry: &Entry) {
        if self.blocks.is_empty() {
            return;
        }
        let b = self.block_of(entry);
        let block = &mut self.blocks[b];
        if let Ok(at) = block.items.binary_search_by(|i| i.entry.cmp(entry)) {
            block.items.remove(at);
            if block.items.is_empty() {
                self.blocks.remove(b);
            } else {
                block.refresh();
            }
        }
    }

    /// The items from the first whose entry is at least `from`, in order, skipping blocks
    /// none of whose items has `vcpus`, `memory_mb` and `gpus` free.
    pub(super) fn walk<'a>(
        &'a self,
        from: &'a Entry,
        vcpus: f64,
        memory_mb: u64,
        gpus: u32,
    ) -> impl Iterator<Item = &'a Item> + 'a {
        let first = if self.blocks.is_empty() {
            0
        } else {
            self.block_of(from)
        };
        self.blocks[first..]
            .iter()
            .filter(move |b| b.may_hold(vcpus, memory_mb, gpus))
            .flat_map(move |b| {
                let start = b.items.partition_point(|i| i.entry < *from);
                b.items[start..].iter()
            })
    }
}
