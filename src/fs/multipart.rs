//! The one multipart driver: create, upload or copy parts, complete, and a
//! single abort path. Streaming uploads, planned edits and copies of large
//! objects (rename) all go through [`Multipart`].
//!
//! An upload that is neither completed nor aborted when its `Multipart` is
//! dropped (an error, a cancelled task, an abandoned stream) is aborted in
//! the background, so none is left behind by a path that forgot to; the
//! error paths of `commit` abort before they return, so the caller's error
//! comes after the abort. Every upload counts in [`OpenUploads`] from its
//! creation until it is completed or its abort has ended, so unmount (and
//! tests) can wait until none is left open.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use futures::{Future, StreamExt, TryStreamExt};

use super::error::FsResult;
use crate::s3::{CompletedPart, CopySource, ObjectClient};

/// The multipart uploads of a mount still open: created, and neither
/// completed nor done aborting.
#[derive(Clone, Default)]
pub struct OpenUploads {
    inner: Arc<(AtomicUsize, tokio::sync::Notify)>,
}

impl OpenUploads {
    fn opened(&self) {
        self.inner.0.fetch_add(1, Ordering::SeqCst);
    }

    fn closed(&self) {
        self.inner.0.fetch_sub(1, Ordering::SeqCst);
        self.inner.1.notify_waiters();
    }

    pub fn open_count(&self) -> usize {
        self.inner.0.load(Ordering::SeqCst)
    }

    /// Waits until every upload is completed or aborted (those of open
    /// files included: callers close them first).
    pub async fn none_open(&self) {
        loop {
            let notified = self.inner.1.notified();
            if self.open_count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub struct Multipart {
    client: Arc<dyn ObjectClient>,
    uploads: OpenUploads,
    /// Where the abort of a dropped upload runs: a drop can happen on a
    /// thread outside the runtime (the kernel's request loop).
    rt: tokio::runtime::Handle,
    bucket: Arc<str>,
    key: String,
    upload_id: String,
    /// Completed or aborted: nothing is left to clean up.
    finished: AtomicBool,
}

/// What a part is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartSource {
    /// Bytes of the source object, copied by the server.
    Copy(Range<u64>),
    /// Bytes sent by us (produced when the part is sent).
    Upload(Range<u64>),
}

impl PartSource {
    pub fn range(&self) -> &Range<u64> {
        match self {
            PartSource::Copy(r) | PartSource::Upload(r) => r,
        }
    }

    pub fn len(&self) -> u64 {
        let r = self.range();
        r.end - r.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same kind of part over `range`.
    pub fn with_range(&self, range: Range<u64>) -> PartSource {
        match self {
            PartSource::Copy(_) => PartSource::Copy(range),
            PartSource::Upload(_) => PartSource::Upload(range),
        }
    }
}

impl Multipart {
    pub async fn create(
        client: Arc<dyn ObjectClient>,
        uploads: &OpenUploads,
        bucket: Arc<str>,
        key: String,
    ) -> FsResult<Arc<Self>> {
        let upload_id = client.create_multipart_upload(&bucket, &key).await?;
        uploads.opened();
        Ok(Arc::new(Multipart {
            client,
            uploads: uploads.clone(),
            rt: tokio::runtime::Handle::current(),
            bucket,
            key,
            upload_id,
            finished: AtomicBool::new(false),
        }))
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub async fn upload(&self, number: u32, body: Bytes) -> FsResult<CompletedPart> {
        let etag = self
            .client
            .upload_part(&self.bucket, &self.key, &self.upload_id, number, body)
            .await?;
        Ok(CompletedPart {
            part_number: number,
            etag,
        })
    }

    pub async fn copy(
        &self,
        number: u32,
        source: &CopySource,
        range: Range<u64>,
    ) -> FsResult<CompletedPart> {
        let etag = self
            .client
            .upload_part_copy(
                &self.bucket,
                &self.key,
                &self.upload_id,
                number,
                source,
                Some(range),
            )
            .await?;
        Ok(CompletedPart {
            part_number: number,
            etag,
        })
    }

    /// Sends `pieces` as parts 1.., `parallel` at a time, then completes;
    /// on any failure aborts before returning the error. `upload` produces
    /// the body of an uploaded piece (and holds its memory while it lives).
    pub async fn run<B, F, Fut>(
        self: Arc<Self>,
        pieces: Vec<PartSource>,
        source: Option<&CopySource>,
        parallel: usize,
        upload: F,
    ) -> FsResult<Option<String>>
    where
        F: Fn(Range<u64>) -> Fut,
        Fut: Future<Output = FsResult<(Bytes, B)>>,
    {
        let result = async {
            let parts = futures::stream::iter(pieces.into_iter().enumerate())
                .map(|(i, piece)| {
                    let number = i as u32 + 1;
                    let upload = &upload;
                    let this = &self;
                    async move {
                        match piece {
                            PartSource::Copy(r) => {
                                let source = source.expect("copied pieces come with a source");
                                this.copy(number, source, r).await
                            }
                            PartSource::Upload(r) => {
                                let (body, _held) = upload(r).await?;
                                this.upload(number, body).await
                            }
                        }
                    }
                })
                .buffered(parallel.max(1))
                .try_collect::<Vec<_>>()
                .await?;
            self.complete(&parts).await
        }
        .await;
        if result.is_err() {
            self.abort().await;
        }
        result
    }

    /// Completes the upload with `parts`; returns the object's ETag.
    pub async fn complete(&self, parts: &[CompletedPart]) -> FsResult<Option<String>> {
        let out = self
            .client
            .complete_multipart_upload(&self.bucket, &self.key, &self.upload_id, parts)
            .await?;
        if !self.finished.swap(true, Ordering::SeqCst) {
            self.uploads.closed();
        }
        Ok(out.etag)
    }

    /// Aborts, waiting for it at most [`ABORT_WAIT`]: a server that does
    /// not answer gets the abort (with its retries) in the background, and
    /// the error that caused it reaches the application in bounded time.
    /// A failure is logged (the next mount cleans up).
    pub async fn abort(&self) {
        if self.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = tokio::time::timeout(ABORT_WAIT, self.spawn_abort()).await;
    }

    /// Aborts in a task of its own; the upload stops counting as open when
    /// the abort has ended, whatever its outcome.
    fn spawn_abort(&self) -> tokio::task::JoinHandle<()> {
        let client = self.client.clone();
        let uploads = self.uploads.clone();
        let (bucket, key, id) = (
            self.bucket.clone(),
            self.key.clone(),
            self.upload_id.clone(),
        );
        self.rt.spawn(async move {
            if let Err(e) = client.abort_multipart_upload(&bucket, &key, &id).await {
                tracing::warn!(key = %key, error = %e, "could not abort a multipart upload; the next mount cleans it up");
            }
            uploads.closed();
        })
    }
}

/// How long a failing commit waits for its abort before it returns.
pub const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Drop for Multipart {
    fn drop(&mut self) {
        if !self.finished.swap(true, Ordering::SeqCst) {
            self.spawn_abort();
        }
    }
}
