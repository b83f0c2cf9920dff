//! The `Store` trait shared by the root and cluster orchestrators, with an in-memory fake
//! ([`MemoryStore`]) and the redb (default) and MongoDB backends (DESIGN.md §7).
//!
//! * [`Store`] — a handful of primitives over collections of JSON documents with revision
//!   counters and revision-checked write batches ([`document`]).
//! * The typed API (`impl dyn Store`, in [`typed`]) — users, organizations, applications with
//!   their services and instances, clusters, IPAM state, signing keys, join tokens — with the
//!   atomic operations the daemons need: create an application with its services all or
//!   nothing, read-modify-write of a service (next instance number + instance + addresses in
//!   one step), of the IPAM state, and of both together, get-or-insert of the signing key.
//! * [`records`] — the records that `oakestra-core` does not define.
//!
//! ```
//! # async fn demo() -> Result<(), oakestra_store::StoreError> {
//! use oakestra_store::{MemoryStore, Store};
//! let store: std::sync::Arc<dyn Store> = MemoryStore::shared();
//! let n: u32 = store
//!     .update_ipam(|counter: &mut u32| {
//!         *counter += 1;
//!         Ok::<_, oakestra_store::StoreError>(*counter)
//!     })
//!     .await?;
//! assert_eq!(n, 1);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

/// The backend conformance suite (test code): only with the `testing` feature, which this
/// crate's own tests turn on through their dev-dependency on it.
#[cfg(feature = "testing")]
pub mod conformance;
pub mod document;
mod error;
mod memory;
#[cfg(feature = "mongodb")]
mod mongo;
mod open;
pub mod records;
mod redb_store;
mod store;
pub mod typed;

pub use document::{Atomicity, Collection, Doc, Expect, Op, Write};
pub use error::StoreError;
pub use memory::MemoryStore;
#[cfg(feature = "mongodb")]
pub use mongo::{DEFAULT_DATABASE, MongoStore};
pub use open::{open, redb_file};
pub use records::{
    ClusterRecord, JoinTokenRecord, Member, OrganizationRecord, SigningKey, UserRecord,
    new_object_id,
};
pub use redb_store::{REDB_FILE_NAME, RedbStore, owner_only};
pub use store::Store;
pub use typed::{MAX_ATTEMPTS, Record, RepairReport};
