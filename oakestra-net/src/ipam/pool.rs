//! One address pool: typed addresses over the slot allocator, and its persisted form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use super::error::IpamError;
use super::holder::Holder;
use super::plan::{Geometry, PoolKind};
use super::slots::{LoadError, Slots};

/// A pool of addresses (or worker subnets, named by their base address) of one [`PoolKind`].
///
/// Invariants: no address is held twice; a holder holds at most one address of the pool; an
/// address is handed out again only after it was released. Every failing call leaves the pool
/// unchanged.
///
/// Persisted form (JSON shown), compact because only held addresses are stored:
/// `{"kind":"service_ipv4","next":"10.30.0.3","held":[["10.30.0.1","service:a.b.c.d"],…]}`.
/// Held entries are `[address, holder]` pairs rather than a map so that stores whose keys may not
/// contain `.` or `:` (MongoDB) can keep the value as is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "PoolState")]
pub struct Pool {
    kind: PoolKind,
    geometry: Geometry,
    slots: Slots,
}

impl Pool {
    /// An empty pool.
    pub fn new(kind: PoolKind) -> Self {
        let geometry = kind.geometry();
        Self {
            kind,
            geometry,
            slots: Slots::new(geometry.capacity()),
        }
    }

    /// Which pool this is.
    pub fn kind(&self) -> PoolKind {
        self.kind
    }

    /// How many addresses (or subnets) the pool can hand out in total.
    pub fn capacity(&self) -> u128 {
        self.slots.capacity()
    }

    /// How many are held now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.slots.len() == 0
    }

    /// The address the next [`Pool::allocate`] for a new holder will return, if any is free.
    pub fn next_available(&self) -> Option<IpAddr> {
        self.slots
            .next_free()
            .map(|slot| self.geometry.slot_address(slot))
    }

    /// Hands out an address to `holder`. Idempotent: a holder that already holds an address of
    /// this pool gets that address back (so a re-registering worker keeps its subnet).
    pub fn allocate(&mut self, holder: Holder) -> Result<IpAddr, IpamError> {
        if let Some(slot) = self.slots.slot_of(&holder) {
            return Ok(self.geometry.slot_address(slot));
        }
        match self.slots.allocate(holder) {
            Some(slot) => Ok(self.geometry.slot_address(slot)),
            None => Err(self.exhausted()),
        }
    }

    /// Hands out `count` consecutive slots aligned to `count` (a power of two) to `holder`,
    /// returning the first one's address: a worker subnet larger than the plan's slot. Idempotent
    /// like [`Pool::allocate`]: a holder that already holds a span gets it back, whatever its
    /// length (a worker keeps the subnet it got).
    pub fn allocate_span(&mut self, holder: Holder, count: u128) -> Result<IpAddr, IpamError> {
        if let Some(slot) = self.slots.slot_of(&holder) {
            return Ok(self.geometry.slot_address(slot));
        }
        match self.slots.allocate_span(holder, count, count) {
            Some(slot) => Ok(self.geometry.slot_address(slot)),
            None => Err(self.exhausted()),
        }
    }

    /// Whether [`Pool::allocate_span`] for `holder` would succeed, without changing anything.
    pub fn check_allocate_span(&self, holder: &Holder, count: u128) -> Result<(), IpamError> {
        if self.slots.slot_of(holder).is_some() || self.slots.next_free_span(count, count).is_some()
        {
            Ok(())
        } else {
            Err(self.exhausted())
        }
    }

    /// What `holder` holds: the first address and how many slots (1 unless it got a span).
    pub fn span_of(&self, holder: &Holder) -> Option<(IpAddr, u128)> {
        let slot = self.slots.slot_of(holder)?;
        Some((self.geometry.slot_address(slot), self.slots.span(slot)))
    }

    /// Whether [`Pool::allocate`] for `holder` would succeed, without changing anything.
    pub fn check_allocate(&self, holder: &Holder) -> Result<(), IpamError> {
        if self.slots.slot_of(holder).is_some() || self.slots.next_free().is_some() {
            Ok(())
        } else {
            Err(self.exhausted())
        }
    }

    /// Gives the specific `address` to `holder`. Idempotent when `holder` already holds it.
    pub fn reserve(&mut self, holder: Holder, address: IpAddr) -> Result<(), IpamError> {
        if let Some(slot) = self.check_reserve(&holder, address, "address")? {
            self.slots.take(slot, holder);
        }
        Ok(())
    }

    /// Parses `text` (a user-given value of `field`, e.g. `rr_ip`) and reserves it for `holder`.
    pub fn reserve_text(
        &mut self,
        holder: Holder,
        field: &str,
        text: &str,
    ) -> Result<IpAddr, IpamError> {
        let address = self.parse(field, text)?;
        if let Some(slot) = self.check_reserve(&holder, address, field)? {
            self.slots.take(slot, holder);
        }
        Ok(address)
    }

    /// Parses a user-given address of this pool's family, naming `field` in the error.
    pub fn parse(&self, field: &str, text: &str) -> Result<IpAddr, IpamError> {
        let parsed = if self.geometry.address(0).is_ipv4() {
            text.parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| ("an IPv4 address", "10.30.0.5"))
        } else {
            text.parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| ("an IPv6 address", "fdff:2000::5"))
        };
        parsed.map_err(|(expected, example)| IpamError::Unparsable {
            field: field.to_owned(),
            value: text.to_owned(),
            expected,
            example,
        })
    }

    /// Checks a reservation without changing anything: `Ok(Some(slot))` if `slot` must be taken,
    /// `Ok(None)` if `holder` already holds `address`.
    pub(crate) fn check_reserve(
        &self,
        holder: &Holder,
        address: IpAddr,
        field: &str,
    ) -> Result<Option<u128>, IpamError> {
        let slot = self
            .kind
            .slot_of(address)
            .map_err(|misfit| IpamError::from_misfit(self.kind, field, address, misfit))?;
        if let Some(current) = self.slots.holder(slot) {
            return if current == holder {
                Ok(None)
            } else {
                Err(IpamError::AlreadyHeld {
                    field: field.to_owned(),
                    pool: self.kind,
                    address,
                    holder: current.clone(),
                })
            };
        }
        if let Some(held) = self.slots.slot_of(holder) {
            return Err(IpamError::HolderHoldsOther {
                pool: self.kind,
                holder: holder.clone(),
                held: self.geometry.slot_address(held),
                requested: address,
            });
        }
        Ok(Some(slot))
    }

    /// Frees `address` (for subnet pools: the subnet's base address) and returns who held it.
    pub fn release(&mut self, address: IpAddr) -> Option<Holder> {
        let slot = self.kind.slot_of(address).ok()?;
        self.slots.release(slot)
    }

    /// Frees whatever `holder` holds in this pool and returns that address.
    pub fn release_holder(&mut self, holder: &Holder) -> Option<IpAddr> {
        let slot = self.slots.slot_of(holder)?;
        self.slots.release(slot);
        Some(self.geometry.slot_address(slot))
    }

    /// Who holds `address`. For subnet pools any address inside a held subnet names its worker.
    pub fn holder_of(&self, address: IpAddr) -> Option<&Holder> {
        self.slots.holder(self.kind.slot_containing(address)?)
    }

    /// What `holder` holds in this pool.
    pub fn address_of(&self, holder: &Holder) -> Option<IpAddr> {
        self.slots
            .slot_of(holder)
            .map(|slot| self.geometry.slot_address(slot))
    }

    /// Every held address with its holder, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &Holder)> {
        self.slots
            .iter()
            .map(|(slot, holder)| (self.geometry.slot_address(slot), holder))
    }

    /// Whether `n` more holders could take a slot, without changing anything.
    pub(crate) fn check_room(&self, n: usize) -> Result<(), IpamError> {
        if self.slots.free_slots() >= n as u128 {
            Ok(())
        } else {
            Err(self.exhausted())
        }
    }

    fn exhausted(&self) -> IpamError {
        IpamError::Exhausted {
            pool: self.kind,
            capacity: self.capacity(),
            range: self.kind.range(),
            advice: match self.kind {
                PoolKind::ContainerIpv4 { subnet } => format!(
                    "a worker with a /{} holds at most {} instances: undeploy instances, or set \
                     --worker-subnet-prefix on the root (e.g. 24 → 253, 23 → 509 instances per \
                     worker) for workers that register after the change",
                    subnet.prefix_len(),
                    subnet.instance_capacity()
                ),
                _ => "release addresses that are no longer used (undeployed instances, removed \
                      services or workers) and retry"
                    .to_owned(),
            },
        }
    }

    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        self.slots.assert_consistent();
    }
}

impl Serialize for Pool {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Held<'a>(&'a Pool);
        impl Serialize for Held<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter())
            }
        }
        struct Spans<'a>(&'a Pool);
        impl Serialize for Spans<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let pool = self.0;
                serializer.collect_seq(
                    pool.slots
                        .long_spans()
                        .map(|(first, n)| (pool.geometry.slot_address(first), n)),
                )
            }
        }
        let spans = self.slots.long_spans().next().is_some();
        let mut state = serializer.serialize_struct("Pool", 3 + usize::from(spans))?;
        state.serialize_field("kind", &self.kind)?;
        state.serialize_field("next", &self.geometry.slot_address(self.slots.cursor()))?;
        state.serialize_field("held", &Held(self))?;
        if spans {
            // Only when a holder holds more than one slot, so a state without larger worker
            // subnets keeps its earlier form.
            state.serialize_field("spans", &Spans(self))?;
        }
        state.end()
    }
}

/// The persisted form of a [`Pool`]; loading it rebuilds and checks every index.
#[derive(Deserialize)]
struct PoolState {
    kind: PoolKind,
    next: IpAddr,
    held: Vec<(IpAddr, Holder)>,
    /// `[first address, slots]` of each holder that holds more than one slot.
    #[serde(default)]
    spans: Vec<(IpAddr, u128)>,
}

impl TryFrom<PoolState> for Pool {
    type Error = IpamError;

    fn try_from(state: PoolState) -> Result<Self, Self::Error> {
        let kind = state.kind;
        let corrupt = |detail: String| IpamError::CorruptState { pool: kind, detail };
        let slot = |address: IpAddr, what: &str| {
            kind.slot_of(address).map_err(|_| {
                corrupt(format!(
                    "{what} {address} is not an address the pool hands out"
                ))
            })
        };
        let cursor = slot(state.next, "next")?;
        let mut pairs = Vec::with_capacity(state.held.len());
        for (address, holder) in state.held {
            pairs.push((slot(address, "held address")?, holder));
        }
        let mut spans = Vec::with_capacity(state.spans.len());
        for (address, n) in state.spans {
            let first = slot(address, "span")?;
            if !n.is_power_of_two() || first % n != 0 {
                return Err(corrupt(format!(
                    "the span of {n} slots at {address} is not aligned to its size"
                )));
            }
            spans.push((first, n));
        }
        let geometry = kind.geometry();
        let slots =
            Slots::load(geometry.capacity(), cursor, pairs, spans).map_err(|e| match e {
                LoadError::CursorOutOfRange => {
                    corrupt(format!("next {} is out of range", state.next))
                }
                LoadError::SlotHeldTwice(s) => {
                    corrupt(format!("{} is listed twice", geometry.slot_address(s)))
                }
                LoadError::HolderHoldsTwo(holder, a, b) => corrupt(format!(
                    "{holder} holds both {} and {}",
                    geometry.slot_address(a),
                    geometry.slot_address(b)
                )),
                LoadError::BadSpan(s) => corrupt(format!(
                    "the span at {} is not held or reaches beyond the pool",
                    geometry.slot_address(s)
                )),
            })?;
        Ok(Self {
            kind,
            geometry,
            slots,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn persisted_form_is_compact_and_readable() {
        let mut pool = Pool::new(PoolKind::ServiceIpv4);
        pool.allocate(Holder::service("a.b.c.d")).unwrap();
        pool.reserve(Holder::instance("a.b.c.d", 0), ip("10.30.7.7"))
            .unwrap();
        let json = serde_json::to_string(&pool).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"service_ipv4","next":"10.30.0.2","held":[["10.30.0.1","service:a.b.c.d"],["10.30.7.7","instance:a.b.c.d#0"]]}"#
        );
        assert_eq!(serde_json::from_str::<Pool>(&json).unwrap(), pool);
    }

    #[test]
    fn loading_rejects_states_that_could_double_allocate() {
        let cases = [
            r#"{"kind":"service_ipv4","next":"10.30.0.1","held":[["10.30.0.1","service:a"],["10.30.0.1","service:b"]]}"#,
            r#"{"kind":"service_ipv4","next":"10.30.0.1","held":[["10.30.0.1","service:a"],["10.30.0.2","service:a"]]}"#,
            r#"{"kind":"service_ipv4","next":"10.30.0.0","held":[]}"#,
            r#"{"kind":"service_ipv4","next":"10.30.0.1","held":[["10.31.0.1","service:a"]]}"#,
            r#"{"kind":"worker_subnet_ipv4","next":"10.18.0.1","held":[]}"#,
            r#"{"kind":"service_ipv4","next":"10.30.0.1","held":[["10.30.0.2","pod:a"]]}"#,
        ];
        for json in cases {
            let err = serde_json::from_str::<Pool>(json).unwrap_err().to_string();
            assert!(!err.is_empty(), "{json}");
        }
        let err = serde_json::from_str::<Pool>(cases[0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.30.0.1 is listed twice"), "{err}");
    }
}
