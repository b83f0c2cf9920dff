//! Every way an address operation can fail, each saying what, where, and what to do.

use std::net::IpAddr;

use super::holder::Holder;
use super::plan::{Misfit, PoolKind};

/// An address operation failed. The pool state is unchanged whenever one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// A user-given address (e.g. `rr_ip`) does not parse.
    #[error("{field} {value:?} is not {expected}; give one such as {example}")]
    Unparsable {
        /// The field that carried the value, e.g. `rr_ip`.
        field: String,
        /// The text as given.
        value: String,
        /// What was expected, e.g. "an IPv4 address".
        expected: &'static str,
        /// A valid example.
        example: &'static str,
    },
    /// The address is not in the pool's space (or is of the other IP family).
    #[error("{field} {address} is outside the {pool} pool; choose an address in {range}")]
    OutOfPool {
        /// The field or operation the address came from.
        field: String,
        /// The pool asked for.
        pool: PoolKind,
        /// The address given.
        address: IpAddr,
        /// The addresses the pool hands out.
        range: String,
    },
    /// The address is in the pool's space but is one the plan never hands out.
    #[error(
        "{field} {address} is {reason} and is never handed out; choose another address in {range}"
    )]
    Excluded {
        /// The field or operation the address came from.
        field: String,
        /// The pool asked for.
        pool: PoolKind,
        /// The address given.
        address: IpAddr,
        /// Why it is excluded.
        reason: &'static str,
        /// The addresses the pool hands out.
        range: String,
    },
    /// The address lies inside a subnet of a worker pool but is not that subnet's base address.
    #[error(
        "{field} {address} is not the base address of a /{prefix_len} subnet of the {pool} pool; \
         give the subnet's first address (subnets are {range})"
    )]
    NotSubnetBase {
        /// The field or operation the address came from.
        field: String,
        /// The pool asked for.
        pool: PoolKind,
        /// The address given.
        address: IpAddr,
        /// The subnets' prefix length.
        prefix_len: u32,
        /// The subnets the pool hands out.
        range: String,
    },
    /// Someone else holds the address.
    #[error(
        "{address} in the {pool} pool is already held by {holder}; choose another address, \
         or release it from {holder} first"
    )]
    AlreadyHeld {
        /// The field or operation the address came from, e.g. `rr_ip` or `closest_ip`.
        field: String,
        /// The pool.
        pool: PoolKind,
        /// The contested address.
        address: IpAddr,
        /// Who holds it.
        holder: Holder,
    },
    /// One request gives the same address for two fields (e.g. `rr_ip` and `closest_ip`).
    #[error(
        "{second} {address} is also given as {first}; a service's round-robin and closest \
         addresses must differ, so choose another address or leave {second} out to get a free one"
    )]
    GivenTwice {
        /// The field checked first.
        first: String,
        /// The field that repeats it.
        second: String,
        /// The address.
        address: IpAddr,
    },
    /// The caller already holds a different address in this pool (one per holder and pool).
    #[error(
        "{holder} already holds {held} in the {pool} pool and may hold only one; \
         release {held} before reserving {requested}"
    )]
    HolderHoldsOther {
        /// The pool.
        pool: PoolKind,
        /// The caller.
        holder: Holder,
        /// What it holds.
        held: IpAddr,
        /// What it asked for.
        requested: IpAddr,
    },
    /// Every slot of the pool is held.
    #[error("the {pool} pool is exhausted: all {capacity} of {range} are held; {advice}")]
    Exhausted {
        /// The pool.
        pool: PoolKind,
        /// How many slots it has.
        capacity: u128,
        /// The addresses it hands out.
        range: String,
        /// What to do about it (for a worker's container pool: how to get a larger subnet).
        advice: String,
    },
    /// A stored state does not describe a valid pool.
    #[error(
        "stored state of the {pool} pool is invalid: {detail}; it was not written by oakestra-net \
         or was edited by hand, so restore it from a backup"
    )]
    CorruptState {
        /// The pool whose state is wrong.
        pool: PoolKind,
        /// What is wrong.
        detail: String,
    },
}

impl IpamError {
    pub(crate) fn from_misfit(
        pool: PoolKind,
        field: &str,
        address: IpAddr,
        misfit: Misfit,
    ) -> Self {
        let field = field.to_owned();
        let range = pool.range();
        match misfit {
            Misfit::Outside => Self::OutOfPool {
                field,
                pool,
                address,
                range,
            },
            Misfit::Excluded(reason) => Self::Excluded {
                field,
                pool,
                address,
                reason,
                range,
            },
            Misfit::NotSubnetBase => Self::NotSubnetBase {
                field,
                pool,
                address,
                prefix_len: pool.geometry().prefix_len(),
                range,
            },
        }
    }
}
