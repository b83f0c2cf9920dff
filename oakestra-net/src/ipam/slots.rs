//! The slot allocator behind every pool: slots `0..capacity`, each free or held by one holder.
//!
//! Allocation is *next-fit*: it hands out the first free slot at or after a cursor and moves the
//! cursor past it, wrapping at the end. A released slot is therefore reused only after the cursor
//! has gone round the pool once, which keeps a just-released address (still cached by workers
//! that routed to it) away from a new holder for as long as the pool allows.
//!
//! Free slots are kept as maximal runs in a `BTreeMap` keyed by the run's end, the exact
//! complement of the held slots, so allocate, reserve and release are O(log n) and the runs can
//! always be rebuilt from the held slots alone: only `held` and `cursor` are persisted. Keying by
//! the end lets the common next-fit step (take the first slot of a run) and the common merge on
//! release change a run's start in place instead of removing and re-inserting it.

use std::collections::BTreeMap;

use super::holder::Holder;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slots {
    capacity: u128,
    /// Where the next allocation starts looking; always `< capacity`.
    cursor: u128,
    held: BTreeMap<u128, Holder>,
    /// Reverse of `held` (one slot per holder), rebuilt on load.
    by_holder: BTreeMap<Holder, u128>,
    /// Free runs `end (exclusive) → start`, maximal and disjoint, rebuilt on load.
    free: BTreeMap<u128, u128>,
}

/// Why persisted slots cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoadError {
    CursorOutOfRange,
    SlotHeldTwice(u128),
    HolderHoldsTwo(Holder, u128, u128),
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
            by_holder: BTreeMap::new(),
            free,
        }
    }

    /// Rebuilds the indexes from persisted `(slot, holder)` pairs. Slots must be `< capacity`.
    pub(crate) fn load(
        capacity: u128,
        cursor: u128,
        pairs: impl IntoIterator<Item = (u128, Holder)>,
    ) -> Result<Self, LoadError> {
        if cursor >= capacity.max(1) {
            return Err(LoadError::CursorOutOfRange);
        }
        // Bulk-build the maps from sorted vectors (a stored state is already in slot order).
        let mut pairs: Vec<(u128, Holder)> = pairs.into_iter().collect();
        pairs.sort_by_key(|&(slot, _)| slot);
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(LoadError::SlotHeldTwice(w[0].0));
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
        for &(slot, _) in &pairs {
            debug_assert!(slot < capacity);
            if slot > start {
                free.insert(slot, start);
            }
            start = slot + 1;
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
            by_holder,
            free,
        })
    }

    pub(crate) fn capacity(&self) -> u128 {
        self.capacity
    }

    pub(crate) fn cursor(&self) -> u128 {
        self.cursor
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    pub(crate) fn holder(&self, slot: u128) -> Option<&Holder> {
        self.held.get(&slot)
    }

    pub(crate) fn slot_of(&self, holder: &Holder) -> Option<u128> {
        self.by_holder.get(holder).copied()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u128, &Holder)> {
        self.held.iter().map(|(&slot, holder)| (slot, holder))
    }

    /// The slot the next allocation will take, if any is free.
    pub(crate) fn next_free(&self) -> Option<u128> {
        // The first run that ends after the cursor either contains it or is the next one.
        match self.free.range(self.cursor + 1..).next() {
            Some((_, &start)) => Some(start.max(self.cursor)),
            None => self.free.first_key_value().map(|(_, &start)| start),
        }
    }

    /// Takes the next free slot for `holder`, which must hold nothing yet.
    pub(crate) fn allocate(&mut self, holder: Holder) -> Option<u128> {
        let slot = self.next_free()?;
        self.take(slot, holder);
        self.cursor = if slot + 1 == self.capacity {
            0
        } else {
            slot + 1
        };
        Some(slot)
    }

    /// Gives the free slot `slot` to `holder`, which must hold nothing yet. The cursor stays.
    pub(crate) fn take(&mut self, slot: u128, holder: Holder) {
        debug_assert!(!self.by_holder.contains_key(&holder));
        let Some((&end, start)) = self.free.range_mut(slot + 1..).next() else {
            debug_assert!(false, "take of slot {slot} beyond every free run");
            return;
        };
        let run_start = *start;
        if run_start > slot {
            debug_assert!(false, "take of slot {slot}, which is held");
            return;
        }
        if slot + 1 == end {
            self.free.remove(&end);
        } else {
            *start = slot + 1;
        }
        if run_start < slot {
            self.free.insert(slot, run_start);
        }
        self.by_holder.insert(holder.clone(), slot);
        self.held.insert(slot, holder);
    }

    /// Frees `slot`, returning who held it.
    pub(crate) fn release(&mut self, slot: u128) -> Option<Holder> {
        let holder = self.held.remove(&slot)?;
        self.by_holder.remove(&holder);
        // Merge with the run ending at `slot` and the run starting at `slot + 1`, if any.
        let start = self.free.remove(&slot).unwrap_or(slot);
        match self.free.range_mut(slot + 2..).next() {
            Some((_, right_start)) if *right_start == slot + 1 => *right_start = start,
            _ => {
                self.free.insert(slot + 1, start);
            }
        }
        Some(holder)
    }

    /// Checks that the free runs are the exact complement of the held slots (tests only).
    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        let rebuilt = Self::load(self.capacity, self.cursor, self.held.clone()).unwrap();
        assert_eq!(self.free, rebuilt.free);
        assert_eq!(self.by_holder, rebuilt.by_holder);
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
            Slots::load(4, 4, []).unwrap_err(),
            LoadError::CursorOutOfRange
        );
        assert_eq!(
            Slots::load(4, 0, [(1, h(1)), (1, h(2))]).unwrap_err(),
            LoadError::SlotHeldTwice(1)
        );
        assert_eq!(
            Slots::load(4, 0, [(1, h(1)), (2, h(1))]).unwrap_err(),
            LoadError::HolderHoldsTwo(h(1), 1, 2)
        );
    }
}
