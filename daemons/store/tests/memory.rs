//! The conformance suite against the in-memory fake.

use oakestra_store::{MemoryStore, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance::run_all(MemoryStore::shared()).await;
}
