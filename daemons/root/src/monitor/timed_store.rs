//! The root's store, timed: every primitive call (`get`, `list`, `find_eq`, `commit`) is
//! observed in `oakestra_root_store_operation_duration_seconds{operation}`, so a slow disk or
//! MongoDB shows on the dashboards before it shows in the API latency.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use async_trait::async_trait;
use oakestra_store::{Atomicity, Collection, Doc, Store, StoreError, Write};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde_json::Value;

/// One label `operation`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    /// `get`, `list`, `find_eq` or `commit`.
    pub operation: &'static str,
}

type Seconds = Family<OperationLabel, Histogram, fn() -> Histogram>;

fn buckets() -> Histogram {
    // 10 µs … ~2.6 s.
    Histogram::new(exponential_buckets(0.00001, 2.0, 19))
}

/// The latency of the store primitives of every root in this process (one in a daemon; the
/// tests that start several share it).
pub static STORE_SECONDS: LazyLock<Seconds> =
    LazyLock::new(|| Family::new_with_constructor(buckets as fn() -> Histogram));

/// The operations, created at zero so the series exist before the first call.
const OPERATIONS: [&str; 4] = ["get", "list", "find_eq", "commit"];

/// Registers the histogram into the root's registry.
pub fn register(registry: &mut prometheus_client::registry::Registry) {
    for operation in OPERATIONS {
        let _ = STORE_SECONDS.get_or_create(&OperationLabel { operation });
    }
    registry.register(
        "store_operation_duration_seconds",
        "Latency of the root's store primitives by operation (get, list, find_eq, commit)",
        STORE_SECONDS.clone(),
    );
}

/// `inner`, with each primitive call timed.
pub fn timed(inner: Arc<dyn Store>) -> Arc<dyn Store> {
    Arc::new(TimedStore { inner })
}

/// A store that times its inner store's calls.
#[derive(Debug)]
struct TimedStore {
    inner: Arc<dyn Store>,
}

fn observe(operation: &'static str, since: Instant) {
    STORE_SECONDS
        .get_or_create(&OperationLabel { operation })
        .observe(since.elapsed().as_secs_f64());
}

#[async_trait]
impl Store for TimedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn atomicity(&self) -> Atomicity {
        self.inner.atomicity()
    }

    async fn get(&self, collection: Collection, id: &str) -> Result<Option<Doc>, StoreError> {
        let t = Instant::now();
        let out = self.inner.get(collection, id).await;
        observe("get", t);
        out
    }

    async fn list(&self, collection: Collection) -> Result<Vec<Doc>, StoreError> {
        let t = Instant::now();
        let out = self.inner.list(collection).await;
        observe("list", t);
        out
    }

    async fn find_eq(
        &self,
        collection: Collection,
        field: &str,
        value: &Value,
    ) -> Result<Vec<Doc>, StoreError> {
        let t = Instant::now();
        let out = self.inner.find_eq(collection, field, value).await;
        observe("find_eq", t);
        out
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let t = Instant::now();
        let out = self.inner.commit(writes).await;
        observe("commit", t);
        out
    }

    fn ipam_lock(&self) -> Option<&tokio::sync::Mutex<()>> {
        self.inner.ipam_lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(operation: &'static str) -> u64 {
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("s", "s", STORE_SECONDS.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let prefix = format!("s_count{{operation=\"{operation}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.parse().unwrap())
    }

    #[tokio::test]
    async fn each_primitive_call_is_observed_and_results_pass_through() {
        let store = timed(Arc::new(oakestra_store::MemoryStore::new()));
        let (gets, commits) = (count("get"), count("commit"));
        store
            .commit(vec![Write::upsert(
                Collection::Meta,
                "k",
                serde_json::json!({"v": 1}),
            )])
            .await
            .unwrap();
        let doc = store.get(Collection::Meta, "k").await.unwrap().unwrap();
        assert_eq!(doc.body["v"], 1);
        // Other tests may use the shared histogram at the same time: at least ours.
        assert!(count("get") > gets);
        assert!(count("commit") > commits);
    }
}
