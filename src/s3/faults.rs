//! `FaultClient`: wraps any [`ObjectClient`] and injects faults by rule:
//! fail the k-th call of an operation with a chosen error, delay it, let it
//! act and then lose its answer, or hold it at a [`Gate`] until the test
//! lets it go (to put another operation in the middle of it). Below the
//! TCP fault proxy of the integration tests, for the core's unit and model
//! tests.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Semaphore, watch};

use super::client::*;
use super::error::S3Error;
use super::stats::Op;

/// Holds calls until opened; tells the test when one has arrived.
pub struct Gate {
    /// One permit per call held (a Notify keeps one wake-up only, so a test
    /// waiting for two calls that both came first would wait forever).
    arrived: Semaphore,
    open: watch::Sender<bool>,
}

impl Gate {
    pub fn new() -> Arc<Self> {
        Arc::new(Gate {
            arrived: Semaphore::new(0),
            open: watch::channel(false).0,
        })
    }

    /// Waits until a call is held at this gate, one call per wait.
    pub async fn arrived(&self) {
        self.arrived
            .acquire()
            .await
            .expect("the gate's semaphore is never closed")
            .forget();
    }

    /// Lets every held call (and every later one) through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    async fn pass(&self) {
        self.arrived.add_permits(1);
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

#[derive(Clone)]
pub enum Fault {
    /// The call fails with this error without reaching the store.
    Fail(S3Error),
    /// The call reaches the store after this long.
    Delay(Duration),
    /// The call acts on the store, then its answer is lost.
    LoseAnswer,
    /// The call waits at the gate before it reaches the store.
    Hold(Arc<Gate>),
    /// The store answers at once; the answer waits at the gate (a reply
    /// slow on its way back, overtaken by later calls).
    HoldAnswer(Arc<Gate>),
}

struct Rule {
    op: Op,
    /// Which call of `op` (1-based, counted from when the rule was added);
    /// `None`: every call.
    nth: Option<u32>,
    seen: u32,
    fault: Fault,
}

pub struct FaultClient {
    inner: Arc<dyn ObjectClient>,
    rules: Mutex<Vec<Rule>>,
    injected: Mutex<HashMap<Op, u32>>,
}

/// The error a lost answer reads as.
pub fn lost_answer(op: Op) -> S3Error {
    S3Error::Transport {
        operation: op.name(),
        detail: "connection reset (injected)".to_string(),
    }
}

impl FaultClient {
    pub fn new(inner: Arc<dyn ObjectClient>) -> Self {
        FaultClient {
            inner,
            rules: Mutex::new(Vec::new()),
            injected: Mutex::new(HashMap::new()),
        }
    }

    /// Injects `fault` into the `nth` next call of `op` (1 = the next one).
    pub fn on_call(&self, op: Op, nth: u32, fault: Fault) {
        self.rules.lock().expect("rules lock").push(Rule {
            op,
            nth: Some(nth),
            seen: 0,
            fault,
        });
    }

    /// Injects `fault` into every call of `op` until [`FaultClient::clear`].
    pub fn always(&self, op: Op, fault: Fault) {
        self.rules.lock().expect("rules lock").push(Rule {
            op,
            nth: None,
            seen: 0,
            fault,
        });
    }

    pub fn clear(&self) {
        self.rules.lock().expect("rules lock").clear();
    }

    /// Faults injected so far into calls of `op`.
    pub fn injected(&self, op: Op) -> u32 {
        self.injected
            .lock()
            .expect("count lock")
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    fn fault_for(&self, op: Op) -> Option<Fault> {
        let mut rules = self.rules.lock().expect("rules lock");
        let mut hit = None;
        let mut spent = None;
        for (i, r) in rules.iter_mut().enumerate().filter(|(_, r)| r.op == op) {
            r.seen += 1;
            if hit.is_none() && r.nth.is_none_or(|n| n == r.seen) {
                hit = Some(r.fault.clone());
                if r.nth.is_some() {
                    spent = Some(i);
                }
            }
        }
        if let Some(i) = spent {
            rules.remove(i);
        }
        if hit.is_some() {
            *self
                .injected
                .lock()
                .expect("count lock")
                .entry(op)
                .or_default() += 1;
        }
        hit
    }

    async fn run<T>(&self, op: Op, call: impl Future<Output = S3Result<T>>) -> S3Result<T> {
        match self.fault_for(op) {
            None => call.await,
            Some(Fault::Fail(e)) => Err(e),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                call.await
            }
            Some(Fault::Hold(gate)) => {
                gate.pass().await;
                call.await
            }
            Some(Fault::HoldAnswer(gate)) => {
                let answer = call.await;
                gate.pass().await;
                answer
            }
            Some(Fault::LoseAnswer) => {
                let _ = call.await;
                Err(lost_answer(op))
            }
        }
    }
}

#[async_trait]
impl ObjectClient for FaultClient {
    async fn list_buckets(&self) -> S3Result<Vec<BucketInfo>> {
        self.run(Op::ListBuckets, self.inner.list_buckets()).await
    }
    async fn head_bucket(&self, bucket: &str) -> S3Result<()> {
        self.run(Op::HeadBucket, self.inner.head_bucket(bucket))
            .await
    }
    async fn create_bucket(&self, bucket: &str) -> S3Result<()> {
        self.run(Op::CreateBucket, self.inner.create_bucket(bucket))
            .await
    }
    async fn delete_bucket(&self, bucket: &str) -> S3Result<()> {
        self.run(Op::DeleteBucket, self.inner.delete_bucket(bucket))
            .await
    }
    async fn get_bucket_location(&self, bucket: &str) -> S3Result<Option<String>> {
        self.run(
            Op::GetBucketLocation,
            self.inner.get_bucket_location(bucket),
        )
        .await
    }
    async fn get_bucket_versioning(&self, bucket: &str) -> S3Result<VersioningStatus> {
        self.run(
            Op::GetBucketVersioning,
            self.inner.get_bucket_versioning(bucket),
        )
        .await
    }
    async fn put_bucket_versioning(&self, bucket: &str, enabled: bool) -> S3Result<()> {
        self.run(
            Op::PutBucketVersioning,
            self.inner.put_bucket_versioning(bucket, enabled),
        )
        .await
    }
    async fn list_objects_v2(
        &self,
        bucket: &str,
        params: &ListObjectsParams,
    ) -> S3Result<ListObjectsOutput> {
        self.run(
            Op::ListObjectsV2,
            self.inner.list_objects_v2(bucket, params),
        )
        .await
    }
    async fn list_objects_v1(
        &self,
        bucket: &str,
        params: &ListObjectsV1Params,
    ) -> S3Result<ListObjectsV1Output> {
        self.run(
            Op::ListObjectsV1,
            self.inner.list_objects_v1(bucket, params),
        )
        .await
    }
    async fn list_objects(
        &self,
        bucket: &str,
        params: &ListObjectsParams,
    ) -> S3Result<ListObjectsOutput> {
        self.run(Op::ListObjectsV2, self.inner.list_objects(bucket, params))
            .await
    }
    async fn list_object_versions(
        &self,
        bucket: &str,
        params: &ListVersionsParams,
    ) -> S3Result<ListVersionsOutput> {
        self.run(
            Op::ListObjectVersions,
            self.inner.list_object_versions(bucket, params),
        )
        .await
    }
    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<HeadObjectOutput> {
        self.run(
            Op::HeadObject,
            self.inner.head_object(bucket, key, version_id),
        )
        .await
    }
    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        params: &GetObjectParams,
    ) -> S3Result<GetObjectOutput> {
        self.run(Op::GetObject, self.inner.get_object(bucket, key, params))
            .await
    }
    async fn put_object(&self, bucket: &str, key: &str, body: Bytes) -> S3Result<PutObjectOutput> {
        self.run(Op::PutObject, self.inner.put_object(bucket, key, body))
            .await
    }
    async fn put_object_typed(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> S3Result<PutObjectOutput> {
        self.run(
            Op::PutObject,
            self.inner.put_object_typed(bucket, key, body, content_type),
        )
        .await
    }
    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<DeleteObjectOutput> {
        self.run(
            Op::DeleteObject,
            self.inner.delete_object(bucket, key, version_id),
        )
        .await
    }
    async fn delete_objects(
        &self,
        bucket: &str,
        objects: &[ObjectIdentifier],
    ) -> S3Result<DeleteObjectsOutput> {
        self.run(
            Op::DeleteObjects,
            self.inner.delete_objects(bucket, objects),
        )
        .await
    }
    async fn copy_object(
        &self,
        bucket: &str,
        key: &str,
        source: &CopySource,
    ) -> S3Result<CopyObjectOutput> {
        self.run(Op::CopyObject, self.inner.copy_object(bucket, key, source))
            .await
    }
    async fn create_multipart_upload(&self, bucket: &str, key: &str) -> S3Result<String> {
        self.run(
            Op::CreateMultipartUpload,
            self.inner.create_multipart_upload(bucket, key),
        )
        .await
    }
    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> S3Result<String> {
        self.run(
            Op::UploadPart,
            self.inner
                .upload_part(bucket, key, upload_id, part_number, body),
        )
        .await
    }
    async fn upload_part_copy(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source: &CopySource,
        range: Option<Range<u64>>,
    ) -> S3Result<String> {
        self.run(
            Op::UploadPartCopy,
            self.inner
                .upload_part_copy(bucket, key, upload_id, part_number, source, range),
        )
        .await
    }
    async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> S3Result<PutObjectOutput> {
        self.run(
            Op::CompleteMultipartUpload,
            self.inner
                .complete_multipart_upload(bucket, key, upload_id, parts),
        )
        .await
    }
    async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> S3Result<()> {
        self.run(
            Op::AbortMultipartUpload,
            self.inner.abort_multipart_upload(bucket, key, upload_id),
        )
        .await
    }
    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number_marker: Option<u32>,
    ) -> S3Result<ListPartsOutput> {
        self.run(
            Op::ListParts,
            self.inner
                .list_parts(bucket, key, upload_id, part_number_marker),
        )
        .await
    }
    async fn list_multipart_uploads(
        &self,
        bucket: &str,
        params: &ListUploadsParams,
    ) -> S3Result<ListUploadsOutput> {
        self.run(
            Op::ListMultipartUploads,
            self.inner.list_multipart_uploads(bucket, params),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::mem::MemoryClient;

    #[tokio::test]
    async fn the_kth_call_fails_and_a_lost_answer_still_acts() {
        let mem = Arc::new(MemoryClient::with_bucket("b"));
        let c = FaultClient::new(mem.clone());
        c.on_call(Op::PutObject, 2, Fault::LoseAnswer);
        c.put_object("b", "one", Bytes::from_static(b"1"))
            .await
            .unwrap();
        let lost = c.put_object("b", "two", Bytes::from_static(b"2")).await;
        assert!(lost.unwrap_err().is_transient());
        assert!(mem.objects("b").contains_key("two"), "it acted");
        c.put_object("b", "three", Bytes::from_static(b"3"))
            .await
            .unwrap();
        assert_eq!(c.injected(Op::PutObject), 1);
    }

    #[tokio::test]
    async fn a_held_call_waits_for_the_gate() {
        let mem = Arc::new(MemoryClient::with_bucket("b"));
        mem.put("b", "k", "old");
        let c = Arc::new(FaultClient::new(mem.clone()));
        let gate = Gate::new();
        c.on_call(Op::GetObject, 1, Fault::Hold(gate.clone()));
        let reader = {
            let c = c.clone();
            tokio::spawn(async move { c.get_object("b", "k", &Default::default()).await })
        };
        gate.arrived().await;
        mem.put("b", "k", "new");
        gate.open();
        let body = reader.await.unwrap().unwrap().body;
        assert_eq!(&body[..], b"new", "the held call ran after the gate opened");
    }
}
