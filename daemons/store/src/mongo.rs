//! The MongoDB backend (`mongodb://host:port/db`), for production deployments that already
//! run MongoDB. One MongoDB collection per [`Collection`]; documents are the records' serde
//! JSON converted to BSON as extended JSON, so `{"$oid": …}` ids become real ObjectIds, plus a
//! `_rev` revision counter.
//!
//! MongoDB without a replica set has no multi-document transactions, so this backend is
//! [`Atomicity::PerDocument`]: each write is a single-document compare-and-set (filter on
//! `_id` + `_rev`, or an insert that fails on a duplicate `_id`), a batch is applied in order,
//! and if a write fails the batch's earlier writes are rolled back best-effort (inserts
//! deleted, replaced and deleted documents restored from the `before` image, each again by
//! compare-and-set). A crash part-way through a batch is handled by the write order of the
//! typed API and by [`repair`](crate::Store) (see [`crate::typed`]). Writes use write concern
//! `j: true`, so an acknowledged write is in the server's journal.

use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, DatabaseOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Database, IndexModel};
use serde_json::Value;

use crate::document::{Atomicity, Collection, Doc, Expect, Op, Write};
use crate::error::StoreError;
use crate::store::Store;

/// Database used when the URL names none.
pub const DEFAULT_DATABASE: &str = "oakestra";

const REV: &str = "_rev";

/// A [`Store`] in a MongoDB database.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    ipam_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The URL without credentials, for messages.
    location: String,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("location", &self.location)
            .finish()
    }
}

/// The URL with any `user:password@` removed.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl MongoStore {
    /// Connects to `url` (`mongodb://host:port/db`; database [`DEFAULT_DATABASE`] if the URL
    /// names none), checks that the server answers, and creates the lookup indexes.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let location = redact(url);
        let open_err = |reason: String, hint: &str| StoreError::Open {
            location: location.clone(),
            reason,
            hint: hint.to_owned(),
        };
        let mut options = ClientOptions::parse(url).await.map_err(|e| {
            open_err(
                e.to_string(),
                "use a MongoDB connection string such as mongodb://127.0.0.1:27017/oakestra",
            )
        })?;
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(Duration::from_secs(10));
        }
        if options.app_name.is_none() {
            options.app_name = Some("oakestra-rs".into());
        }
        let name = options
            .default_database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
        let client = Client::with_options(options)
            .map_err(|e| open_err(e.to_string(), "check the connection string options"))?;
        let db = client.database_with_options(
            &name,
            DatabaseOptions::builder()
                .write_concern(WriteConcern::builder().journal(true).build())
                .build(),
        );
        db.run_command(doc! {"ping": 1}).await.map_err(|e| {
            open_err(
                e.to_string(),
                "check that MongoDB is running and reachable at that address (and the credentials, if any)",
            )
        })?;
        let store = Self {
            db,
            location,
            ipam_lock: Default::default(),
        };
        // Indexes only speed up lookups; a server that refuses them still works correctly.
        for (collection, field) in [
            (Collection::Services, "applicationID"),
            (Collection::Applications, "userId"),
            (Collection::JoinTokens, "hash"),
        ] {
            let index = IndexModel::builder()
                .keys(doc! {field: 1})
                .options(IndexOptions::builder().build())
                .build();
            let _ = store.coll(collection).create_index(index).await;
        }
        Ok(store)
    }

    fn coll(&self, collection: Collection) -> mongodb::Collection<Document> {
        self.db.collection(collection.name())
    }

    fn backend(&self, what: &str, e: mongodb::error::Error) -> StoreError {
        StoreError::Backend(format!(
            "MongoDB {}: {what} failed: {e}; check that the server is running and reachable",
            self.location
        ))
    }

    fn find_filter(&self, collection: Collection, id: &str) -> Document {
        doc! {"_id": bson_id(collection, id)}
    }

    async fn find_docs(
        &self,
        collection: Collection,
        filter: Document,
    ) -> Result<Vec<Doc>, StoreError> {
        let mut cursor = self
            .coll(collection)
            .find(filter)
            .sort(doc! {"_id": 1})
            .await
            .map_err(|e| self.backend("find", e))?;
        let mut out = Vec::new();
        while cursor
            .advance()
            .await
            .map_err(|e| self.backend("find", e))?
        {
            let raw: Document = cursor
                .deserialize_current()
                .map_err(|e| self.backend("find", e))?;
            let id = id_string(raw.get("_id"));
            out.push(to_doc(collection, &id, raw)?);
        }
        Ok(out)
    }

    async fn current_rev(
        &self,
        collection: Collection,
        id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let found = self
            .coll(collection)
            .find_one(self.find_filter(collection, id))
            .await
            .map_err(|e| self.backend("read", e))?;
        Ok(found.map(|d| rev_of(&d)))
    }

    /// Applies one write by compare-and-set; returns how to undo it, if it can be undone.
    async fn apply(&self, w: &Write) -> Result<Option<Undo>, StoreError> {
        let c = self.coll(w.collection);
        let kind = w.collection.kind();
        let stale = || StoreError::Stale {
            kind,
            id: w.id.clone(),
        };
        let id = bson_id(w.collection, &w.id);
        match (&w.op, w.expect) {
            (Op::Put(body), Expect::Absent) => {
                let d = to_bson_doc(w.collection, &w.id, body, 1)?;
                match c.insert_one(d).await {
                    Ok(_) => Ok(Some(Undo::DeleteIfRev(1))),
                    Err(e) if is_duplicate(&e) => Err(StoreError::Conflict {
                        kind,
                        what: format!("{kind} {:?} already exists", w.id),
                    }),
                    Err(e) => Err(self.backend("insert", e)),
                }
            }
            (Op::Put(body), Expect::Rev(rev)) => {
                let d = to_bson_doc(w.collection, &w.id, body, rev + 1)?;
                let res = c
                    .replace_one(doc! {"_id": id, REV: rev_bson(rev)}, d)
                    .await
                    .map_err(|e| self.backend("replace", e))?;
                if res.matched_count == 0 {
                    return Err(stale());
                }
                Ok(w.before.clone().map(|b| Undo::Restore {
                    rev: rev + 1,
                    body: b,
                }))
            }
            (Op::Put(body), Expect::Any) => {
                // An upsert with a fresh revision: compare-and-set on whatever is there now.
                for _ in 0..crate::MAX_ATTEMPTS {
                    match self.current_rev(w.collection, &w.id).await? {
                        None => {
                            let d = to_bson_doc(w.collection, &w.id, body, 1)?;
                            match c.insert_one(d).await {
                                Ok(_) => return Ok(None),
                                Err(e) if is_duplicate(&e) => continue,
                                Err(e) => return Err(self.backend("insert", e)),
                            }
                        }
                        Some(rev) => {
                            let d = to_bson_doc(w.collection, &w.id, body, rev + 1)?;
                            let res = c
                                .replace_one(doc! {"_id": id.clone(), REV: rev_bson(rev)}, d)
                                .await
                                .map_err(|e| self.backend("replace", e))?;
                            if res.matched_count == 1 {
                                return Ok(None);
                            }
                        }
                    }
                }
                Err(stale())
            }
            (Op::Delete, Expect::Rev(rev)) => {
                let res = c
                    .delete_one(doc! {"_id": id, REV: rev_bson(rev)})
                    .await
                    .map_err(|e| self.backend("delete", e))?;
                if res.deleted_count == 0 {
                    return Err(stale());
                }
                Ok(w.before.clone().map(|b| Undo::Reinsert { body: b }))
            }
            (Op::Delete, Expect::Any) => {
                c.delete_one(doc! {"_id": id})
                    .await
                    .map_err(|e| self.backend("delete", e))?;
                Ok(None)
            }
            (Op::Delete | Op::Check, Expect::Absent) => {
                if self.current_rev(w.collection, &w.id).await?.is_some() {
                    return Err(StoreError::Conflict {
                        kind,
                        what: format!("{kind} {:?} already exists", w.id),
                    });
                }
                Ok(None)
            }
            (Op::Check, Expect::Rev(rev)) => {
                if self.current_rev(w.collection, &w.id).await? != Some(rev) {
                    return Err(stale());
                }
                Ok(None)
            }
            (Op::Check, Expect::Any) => Ok(None),
        }
    }

    /// Best-effort undo of one applied write, by compare-and-set so that a document someone
    /// else changed in the meantime is left alone.
    async fn undo(&self, w: &Write, undo: Undo) {
        let c = self.coll(w.collection);
        let id = bson_id(w.collection, &w.id);
        // Failures are ignored: the batch already failed, and what is left is covered by the
        // typed API's write order and `repair`.
        match undo {
            Undo::DeleteIfRev(rev) => {
                let _ = c.delete_one(doc! {"_id": id, REV: rev_bson(rev)}).await;
            }
            Undo::Restore { rev, body } => {
                if let Ok(d) = to_bson_doc(w.collection, &w.id, &body, rev + 1) {
                    let _ = c.replace_one(doc! {"_id": id, REV: rev_bson(rev)}, d).await;
                }
            }
            Undo::Reinsert { body } => {
                if let Ok(d) = to_bson_doc(w.collection, &w.id, &body, 1) {
                    let _ = c.insert_one(d).await;
                }
            }
        }
    }
}

/// How to take back one applied write.
enum Undo {
    /// Delete the inserted document if it still has this revision.
    DeleteIfRev(u64),
    /// Put `body` back if the document still has revision `rev`.
    Restore { rev: u64, body: Value },
    /// Insert `body` again (if nobody created the id meanwhile).
    Reinsert { body: Value },
}

fn rev_bson(rev: u64) -> Bson {
    Bson::Int64(rev as i64)
}

fn rev_of(d: &Document) -> u64 {
    match d.get(REV) {
        Some(Bson::Int64(r)) => *r as u64,
        Some(Bson::Int32(r)) => *r as u64,
        Some(Bson::Double(r)) => *r as u64,
        _ => 0,
    }
}

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(we)) => we.code == 11000,
        ErrorKind::InsertMany(ie) => ie
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|we| we.code == 11000)),
        ErrorKind::Command(ce) => ce.code == 11000,
        _ => false,
    }
}

/// Object-id collections keep `_id` as a BSON ObjectId (Oakestra's shape); others as strings.
fn bson_id(collection: Collection, id: &str) -> Bson {
    if collection.has_object_ids()
        && let Ok(oid) = bson::oid::ObjectId::parse_str(id)
    {
        return Bson::ObjectId(oid);
    }
    Bson::String(id.to_owned())
}

fn id_string(id: Option<&Bson>) -> String {
    match id {
        Some(Bson::ObjectId(oid)) => oid.to_hex(),
        Some(Bson::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn to_bson_doc(
    collection: Collection,
    id: &str,
    body: &Value,
    rev: u64,
) -> Result<Document, StoreError> {
    let invalid = |what: String| StoreError::Invalid {
        kind: collection.kind(),
        what,
    };
    let bson = Bson::try_from(body.clone())
        .map_err(|e| invalid(format!("{id:?} cannot be converted to BSON: {e}")))?;
    let Bson::Document(mut d) = bson else {
        return Err(invalid(format!("{id:?} is not a JSON object")));
    };
    d.insert("_id", bson_id(collection, id));
    d.insert(REV, rev_bson(rev));
    Ok(d)
}

fn to_doc(collection: Collection, id: &str, mut raw: Document) -> Result<Doc, StoreError> {
    let rev = rev_of(&raw);
    raw.remove(REV);
    if raw.values().any(contains_decimal128) {
        return Err(StoreError::Corrupt {
            kind: collection.kind(),
            id: id.to_owned(),
            reason: "contains a Decimal128 value, which this store never writes".into(),
        });
    }
    Ok(Doc {
        id: id.to_owned(),
        rev,
        body: Bson::Document(raw).into_relaxed_extjson(),
    })
}

/// `into_relaxed_extjson` panics on Decimal128, which only a hand edit can bring in.
fn contains_decimal128(b: &Bson) -> bool {
    match b {
        Bson::Decimal128(_) => true,
        Bson::Array(a) => a.iter().any(contains_decimal128),
        Bson::Document(d) => d.values().any(contains_decimal128),
        _ => false,
    }
}

#[async_trait]
impl Store for MongoStore {
    fn describe(&self) -> String {
        format!("MongoDB {}", self.location)
    }

    fn atomicity(&self) -> Atomicity {
        Atomicity::PerDocument
    }

    fn ipam_lock(&self) -> Option<&tokio::sync::Mutex<()>> {
        Some(&self.ipam_lock)
    }

    async fn get(&self, collection: Collection, id: &str) -> Result<Option<Doc>, StoreError> {
        let found = self
            .coll(collection)
            .find_one(self.find_filter(collection, id))
            .await
            .map_err(|e| self.backend("read", e))?;
        found.map(|d| to_doc(collection, id, d)).transpose()
    }

    async fn list(&self, collection: Collection) -> Result<Vec<Doc>, StoreError> {
        self.find_docs(collection, Document::new()).await
    }

    async fn find_eq(
        &self,
        collection: Collection,
        field: &str,
        value: &Value,
    ) -> Result<Vec<Doc>, StoreError> {
        let v = Bson::try_from(value.clone()).map_err(|e| StoreError::Invalid {
            kind: collection.kind(),
            what: format!("lookup value for {field:?} cannot be converted to BSON: {e}"),
        })?;
        let mut docs = self.find_docs(collection, doc! {field: v}).await?;
        // The server's equality on arrays/documents is looser than JSON equality; keep exact.
        docs.retain(|d| d.body.get(field) == Some(value));
        Ok(docs)
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut applied: Vec<(usize, Undo)> = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            match self.apply(w).await {
                Ok(Some(undo)) => applied.push((i, undo)),
                Ok(None) => {}
                Err(e) => {
                    while let Some((j, undo)) = applied.pop() {
                        self.undo(&writes[j], undo).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_not_shown() {
        assert_eq!(
            redact("mongodb://u:secret@db:27017/oak"),
            "mongodb://***@db:27017/oak"
        );
        assert_eq!(redact("mongodb://db:27017"), "mongodb://db:27017");
    }

    #[test]
    fn object_ids_stay_object_ids() {
        let id = "65f1a2b3c4d5e6f708192a3b";
        let body = serde_json::json!({"_id": {"$oid": id}, "n": 1, "f": 2.5});
        let d = to_bson_doc(Collection::Applications, id, &body, 3).unwrap();
        assert!(matches!(d.get("_id"), Some(Bson::ObjectId(_))));
        let back = to_doc(Collection::Applications, id, d).unwrap();
        assert_eq!(back.rev, 3);
        assert_eq!(back.body, body);
        let s = to_bson_doc(Collection::Clusters, id, &serde_json::json!({"_id": id}), 1).unwrap();
        assert_eq!(s.get("_id"), Some(&Bson::String(id.into())));
    }
}
