//! The slot allocator behind every pool: slots `0..capacity`, each free or held by one holder.
//!
//! Allocation is *next-fit*: it hands out the first free slot at or after a cursor and moves the
//! cursor past it, wrapping at the end. A released slot is therefore reused only after the cursor
//! has gone round the pool once, which keeps a just-released address (still cached by workers
//! that routed to it) away from a new holder for as long as the pool allows.
//!
//! Free slots are kept as maximal runs in a `BTreeMap` keyed by the run's end, the exact
//! complement of the held slots, so allocate, reserve and release are O(log n) and the runs can
//! always be rebuilt from the held slots alone: only `held` and `cursor` are persisted.
//!
//! A holder may hold a *span*: `count` consecutive slots aligned to `align` (a worker subnet
//! larger than the plan's /26 is the aligned run of /26 slots that makes it up). The span is
//! keyed by its first slot; spans longer than one slot are listed in `spans` (persisted too). Keying by
//! the end lets the common next-fit step (take the first slot of a run) and the common merge on
//! release change a run's start in place instead of removing and re-inserting it.

use std::collections::BTreeMap;

use super::holder::Holder;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slots {
    capacity: u128,
    /// Where the next allocation starts looking; always `< capacity`.
    cursor: u128,
    /// First slot of each held span → its holder.
    held: BTreeMap<u128, Holder>,
    /// First slot → number of slots, for the spans longer than one slot.
    spans: BTreeMap<u128, u128>,
    /// Reverse of `held` (one span per holder), rebuilt on load.
    by_holder: BTreeMap<Holder, u128>,
    /// Free runs `end (exclusive) → start`, maximal and disjoint, rebuilt on load.
    free: BTreeMap<u128, u128>,
    /// How many slots are held (the spans' lengths added up).
    used: u128,
}

/// Why persisted slots cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoadError {
    CursorOutOfRange,
    SlotHeldTwice(u128),
    HolderHoldsTwo(Holder, u128, u128),
    BadSpan(u128),
}

impl Slots {
    pub(crate) fn new(capacity: u128) -> Self {
        let free = if capacity > 0 {
            BTreeMap::from([(capacity, 0)])
        } else {
            BTreeMap::new()
        };
        Self {
            capacity,
            cursor: 0,
            held: BTreeMap::new(),
            spans: BTreeMap::new(),
            by_holder: BTreeMap::new(),
            free,
            used: 0,
        }
    }

    /// Rebuilds the indexes from persisted `(first slot, holder)` pairs and the lengths of the
    /// spans longer than one slot. Spans must lie below `capacity`.
    pub(crate) fn load(
        capacity: u128,
        cursor: u128,
        pairs: impl IntoIterator<Item = (u128, Holder)>,
        spans: impl IntoIterator<Item = (u128, u128)>,
    ) -> Result<Self, LoadError> {
        if cursor >= capacity.max(1) {
            return Err(LoadError::CursorOutOfRange);
        }
        let spans: BTreeMap<u128, u128> = spans.into_iter().filter(|&(_, n)| n != 1).collect();
        let span = |slot: u128| spans.get(&slot).copied().unwrap_or(1);
        // Bulk-build the maps from sorted vectors (a stored state is already in slot order).
        let mut pairs: Vec<(u128, Holder)> = pairs.into_iter().collect();
        pairs.sort_by_key(|&(slot, _)| slot);
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 + span(w[0].0) > w[1].0) {
            return Err(LoadError::SlotHeldTwice(w[1].0));
        }
        if let Some(&first) = spans
            .keys()
            .find(|first| pairs.binary_search_by_key(*first, |(s, _)| *s).is_err())
        {
            // A span without a holder.
            return Err(LoadError::BadSpan(first));
        }
        let mut by_holder: Vec<(Holder, u128)> = pairs
            .iter()
            .map(|(slot, holder)| (holder.clone(), *slot))
            .collect();
        by_holder.sort_unstable();
        if let Some(w) = by_holder.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(LoadError::HolderHoldsTwo(w[0].0.clone(), w[0].1, w[1].1));
        }
        let mut free = BTreeMap::new();
        let mut start = 0;
        let mut used = 0;
        for &(slot, _) in &pairs {
            let n = span(slot);
            if n == 0 || slot + n > capacity {
                return Err(LoadError::BadSpan(slot));
            }
            if slot > start {
                free.insert(slot, start);
            }
            start = slot + n;
            used += n;
        }
        if start < capacity {
            free.insert(capacity, start);
        }
        let held = pairs.into_iter().collect();
        let by_holder = by_holder.into_iter().collect();
        Ok(Self {
            capacity,
            cursor,
            held,
            spans,
            by_holder,
            free,
            used,
        })
    }

    pub(crate) fn capacity(&self) -> u128 {
        self.capacity
    }

    pub(crate) fn cursor(&self) -> u128 {
        self.cursor
    }

    /// How many holders hold a span.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// How many slots are free.
    pub(crate) fn free_slots(&self) -> u128 {
        self.capacity - self.used
    }

    /// How many slots the span starting at `first` has (1 unless it is a longer span).
    pub(crate) fn span(&self, first: u128) -> u128 {
        self.spans.get(&first).copied().unwrap_or(1)
    }

    /// The spans longer than one slot: `(first slot, count)`.
    pub(crate) fn long_spans(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.spans.iter().map(|(&first, &n)| (first, n))
    }

    /// Who holds `slot` (the first slot of a span or any slot inside it).
    pub(crate) fn holder(&self, slot: u128) -> Option<&Holder> {
        let (&first, holder) = self.held.range(..=slot).next_back()?;
        (slot < first + self.span(first)).then_some(holder)
    }

    /// The first slot of what `holder` holds.
    pub(crate) fn slot_of(&self, holder: &Holder) -> Option<u128> {
        self.by_holder.get(holder).copied()
    }

    /// Every held span's first slot with its holder, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u128, &Holder)> {
        self.held.iter().map(|(&slot, holder)| (slot, holder))
    }

    /// The slot the next allocation will take, if any is free.
    pub(crate) fn next_free(&self) -> Option<u128> {
        self.next_free_span(1, 1)
    }

    /// The first slot of the next free span of `count` slots aligned to `align` (a power of
    /// two), next-fit from the cursor. O(free runs) in the worst case, O(log n) for one slot.
    pub(crate) fn next_free_span(&self, count: u128, align: u128) -> Option<u128> {
        let fit = |start: u128, end: u128, from: u128| {
            let first = start.max(from).div_ceil(align) * align;
            (first + count <= end).then_some(first)
        };
        // The runs that end after the cursor, from the one that contains it or comes next…
        for (&end, &start) in self.free.range(self.cursor + 1..) {
            if let Some(first) = fit(start, end, self.cursor) {
                return Some(first);
            }
        }
        // …then, wrapping, the runs from slot 0 up to (and including) that one.
        for (&end, &start) in &self.free {
            if let Some(first) = fit(start, end, 0) {
                return Some(first);
            }
            if end > self.cursor {
                break;
            }
        }
        None
    }

    /// Takes the next free slot for `holder`, which must hold nothing yet.
    pub(crate) fn allocate(&mut self, holder: Holder) -> Option<u128> {
        self.allocate_span(holder, 1, 1)
    }

    /// Takes the next free span of `count` slots aligned to `align` for `holder`, which must
    /// hold nothing yet; returns its first slot.
    pub(crate) fn allocate_span(
        &mut self,
        holder: Holder,
        count: u128,
        align: u128,
    ) -> Option<u128> {
        let slot = self.next_free_span(count, align)?;
        self.take_span(slot, count, holder);
        self.cursor = if slot + count == self.capacity {
            0
        } else {
            slot + count
        };
        Some(slot)
    }

    /// Gives the free slot `slot` to `holder`, which must hold nothing yet. The cursor stays.
    pub(crate) fn take(&mut self, slot: u128, holder: Holder) {
        self.take_span(slot, 1, holder);
    }

    /// Gives the free slots `slot..slot + count` to `holder`, which must hold nothing yet.
    fn take_span(&mut self, slot: u128, count: u128, holder: Holder) {
        debug_assert!(!self.by_holder.contains_key(&holder));
        let Some((&end, start)) = self.free.range_mut(slot + 1..).next() else {
            debug_assert!(false, "take of slot {slot} beyond every free run");
            return;
        };
        let run_start = *start;
        if run_start > slot || slot + count > end {
            debug_assert!(
                false,
                "take of slots {slot}+{count}, some of which are held"
            );
            return;
        }
        if slot + count == end {
            self.free.remove(&end);
        } else {
            *start = slot + count;
        }
        if run_start < slot {
            self.free.insert(slot, run_start);
        }
        if count > 1 {
            self.spans.insert(slot, count);
        }
        self.used += count;
        self.by_holder.insert(holder.clone(), slot);
        self.held.insert(slot, holder);
    }

    /// Frees the span starting at `slot`, returning who held it.
    pub(crate) fn release(&mut self, slot: u128) -> Option<Holder> {
        let holder = self.held.remove(&slot)?;
        self.by_holder.remove(&holder);
        let count = self.spans.remove(&slot).unwrap_or(1);
        self.used -= count;
        let after = slot + count;
        // Merge with the run ending at `slot` and the run starting at `after`, if any.
        let start = self.free.remove(&slot).unwrap_or(slot);
        match self.free.range_mut(after + 1..).next() {
            Some((_, right_start)) if *right_start == after => *right_start = start,
            _ => {
                self.free.insert(after, start);
            }
        }
        Some(holder)
    }

    /// Checks that the free runs are the exact complement of the held slots (tests only).
    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        let rebuilt = Self::load(
            self.capacity,
            self.cursor,
            self.held.clone(),
            self.spans.clone(),
        )
        .unwrap();
        assert_eq!(self.free, rebuilt.free);
        assert_eq!(self.by_holder, rebuilt.by_holder);
        assert_eq!(self.used, rebuilt.used);
        assert!(self.cursor < self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u32) -> Holder {
        Holder::instance("s", n)
    }

    #[test]
    fn next_fit_wraps_and_reuses_released_slots_after_a_round() {
        let mut slots = Slots::new(4);
        assert_eq!(slots.allocate(h(0)), Some(0));
        assert_eq!(slots.allocate(h(1)), Some(1));
        assert_eq!(slots.release(0), Some(h(0)));
        // Not reused at once: the cursor goes on to 2 and 3 first.
        assert_eq!(slots.allocate(h(2)), Some(2));
        assert_eq!(slots.allocate(h(3)), Some(3));
        assert_eq!(slots.allocate(h(4)), Some(0));
        assert_eq!(slots.allocate(h(5)), None);
        slots.assert_consistent();
        assert_eq!(slots.release(2), Some(h(2)));
        assert_eq!(slots.release(2), None);
        assert_eq!(slots.allocate(h(6)), Some(2));
        slots.assert_consistent();
    }

    #[test]
    fn take_splits_runs_and_release_merges_them() {
        let mut slots = Slots::new(10);
        // Runs are `end → start`.
        slots.take(5, h(5));
        assert_eq!(slots.free, BTreeMap::from([(5, 0), (10, 6)]));
        slots.take(0, h(0));
        slots.take(9, h(9));
        assert_eq!(slots.free, BTreeMap::from([(5, 1), (9, 6)]));
        slots.take(6, h(6));
        assert_eq!(slots.free, BTreeMap::from([(5, 1), (9, 7)]));
        slots.take(8, h(8));
        slots.take(7, h(7));
        assert_eq!(slots.free, BTreeMap::from([(5, 1)]));
        for slot in [5, 7, 8, 6] {
            slots.release(slot);
        }
        assert_eq!(slots.free, BTreeMap::from([(9, 1)]));
        slots.release(0);
        slots.release(9);
        assert_eq!(slots.free, BTreeMap::from([(10, 0)]));
        slots.assert_consistent();
    }

    #[test]
    fn load_rejects_inconsistent_state() {
        assert_eq!(
            Slots::load(4, 4, [], []).unwrap_err(),
            LoadError::CursorOutOfRange
        );
        assert_eq!(
            Slots::load(4, 0, [(1, h(1)), (1, h(2))], []).unwrap_err(),
            LoadError::SlotHeldTwice(1)
        );
        assert_eq!(
            Slots::load(4, 0, [(1, h(1)), (2, h(1))], []).unwrap_err(),
            LoadError::HolderHoldsTwo(h(1), 1, 2)
        );
    }

    #[test]
    fn spans_are_aligned_next_fit_and_released_whole() {
        let mut slots = Slots::new(16);
        assert_eq!(slots.allocate(h(0)), Some(0));
        // A span of 4 aligned to 4 skips 1..4 and takes 4..8; the cursor moves past it.
        assert_eq!(slots.allocate_span(h(1), 4, 4), Some(4));
        assert_eq!(slots.cursor(), 8);
        assert_eq!(slots.holder(6), Some(&h(1)));
        assert_eq!(slots.holder(8), None);
        assert_eq!(slots.allocate(h(2)), Some(8));
        assert_eq!(slots.allocate_span(h(3), 4, 4), Some(12));
        // Wraps: only 1..4 is free, no aligned run of 4 is left, one slot still fits.
        assert_eq!(slots.next_free_span(4, 4), None);
        assert_eq!(slots.next_free_span(2, 2), Some(2));
        assert_eq!(slots.free_slots(), 16 - 1 - 4 - 1 - 4);
        slots.assert_consistent();
        // Releasing a span frees all of its slots and merges with its neighbours.
        assert_eq!(slots.release(5), None, "not the first slot of a span");
        assert_eq!(slots.release(4), Some(h(1)));
        assert_eq!(slots.free, BTreeMap::from([(8, 1), (12, 9)]));
        assert_eq!(slots.free_slots(), 16 - 1 - 1 - 4);
        slots.assert_consistent();
        assert_eq!(slots.allocate_span(h(4), 4, 4), Some(4));
        slots.assert_consistent();
    }

    #[test]
    fn load_checks_spans() {
        // A span of 4 at 0 overlaps a slot held at 2.
        assert_eq!(
            Slots::load(8, 0, [(0, h(0)), (2, h(2))], [(0, 4)]).unwrap_err(),
            LoadError::SlotHeldTwice(2)
        );
        assert_eq!(
            Slots::load(8, 0, [(4, h(0))], [(4, 8)]).unwrap_err(),
            LoadError::BadSpan(4)
        );
        let slots = Slots::load(8, 0, [(0, h(0)), (4, h(4))], [(0, 4)]).unwrap();
        assert_eq!(slots.free, BTreeMap::from([(8, 5)]));
        assert_eq!(slots.holder(3), Some(&h(0)));
    }
}
