//! The streaming writer: a new or emptied file written from start to end
//! sends each part in the background as soon as it is complete and more
//! data follows (part sizes in `Uploads::stream_part_len`), over one
//! [`Multipart`]; the commit sends the last part and completes it. Any
//! write behind what went up, a truncation into it, or an unlink gives the
//! stream up ([`Stream::abandon`]): its parts stop and the upload is
//! aborted, and the commit plans the object afresh.
//!
//! Parts come from the staging file, or straight from memory (the file's
//! *tail*, see `file.rs`): [`Stream::send`] takes such a part's bytes, and
//! once it is sent they are nowhere else. A stream holding such parts is
//! never given up: whoever needs its bytes completes it first.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::fs::error::{FsError, FsResult};
use crate::fs::memory::Permit;
use crate::fs::multipart::Multipart;
use crate::s3::CompletedPart;
use tokio::sync::OwnedSemaphorePermit;

pub(super) struct Stream {
    pub upload: Arc<Multipart>,
    parts: Vec<JoinHandle<FsResult<CompletedPart>>>,
    /// Where the parts sent so far end.
    pub uploaded_to: u64,
    /// A part failed for good (its error reaches the commit); writers stop
    /// sending more.
    failed: Arc<AtomicBool>,
}

impl Stream {
    pub fn new(upload: Arc<Multipart>) -> Stream {
        Stream {
            upload,
            parts: Vec::new(),
            uploaded_to: 0,
            failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a part has failed for good.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Sends `body`, the bytes `range` of the file, as the next part, in the
    /// background, holding `memory` and `slot` until it is sent.
    pub fn send(
        &mut self,
        range: Range<u64>,
        body: Bytes,
        memory: Permit,
        slot: OwnedSemaphorePermit,
    ) {
        debug_assert_eq!(range.start, self.uploaded_to);
        let number = self.next_number();
        let upload = self.upload.clone();
        let failed = self.failed.clone();
        self.parts.push(tokio::spawn(async move {
            let _held = (memory, slot);
            let sent = upload.upload(number, body).await;
            if sent.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            sent
        }));
        self.uploaded_to = range.end;
    }

    /// The number of the next part (1-based).
    pub fn next_number(&self) -> u32 {
        self.parts.len() as u32 + 1
    }

    /// Takes `task`, sending part `number` of `range`, if it is the next
    /// one; otherwise (another writer got there first) it is stopped.
    pub fn push(
        &mut self,
        number: u32,
        range: Range<u64>,
        task: JoinHandle<FsResult<CompletedPart>>,
    ) {
        if self.next_number() == number && self.uploaded_to == range.start {
            self.parts.push(task);
            self.uploaded_to = range.end;
        } else {
            task.abort();
        }
    }

    /// Gives the stream up: its parts stop, and the upload is aborted once
    /// the last of them lets go of it.
    pub fn abandon(self) {
        for p in &self.parts {
            p.abort();
        }
    }

    /// Completes the upload with `last` (the bytes after `uploaded_to`) as
    /// its last part, sent while earlier parts may still be in flight; the
    /// first part that fails for good ends it at once (the others stop,
    /// the upload is aborted). So a server that stops answering costs one
    /// request's retry deadline and timeout, not one per part in sequence.
    pub async fn finish(
        self,
        last: impl Future<Output = FsResult<(Bytes, Permit)>>,
    ) -> FsResult<Option<String>> {
        let upload = self.upload.clone();
        let stops: Vec<_> = self.parts.iter().map(|t| t.abort_handle()).collect();
        let number = self.next_number();
        let earlier = futures::future::try_join_all(
            self.parts
                .into_iter()
                .map(|t| async move { t.await.map_err(|_| FsError::Cancelled)? }),
        );
        let last = async {
            let (body, _memory) = last.await?;
            upload.upload(number, body).await
        };
        let result = async {
            let (mut parts, last) = futures::future::try_join(earlier, last).await?;
            parts.push(last);
            upload.complete(&parts).await
        }
        .await;
        if result.is_err() {
            for stop in stops {
                stop.abort();
            }
            upload.abort().await;
        }
        result
    }
}
