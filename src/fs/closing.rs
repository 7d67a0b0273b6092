//! What a close does with a file written here: commit it at once, or with
//! write-back (`fs/writeback`) journal it and upload it in the background.
//! The background upload of a queued file is [`upload_queued`]: the file's
//! ordinary commit, one task per queued file, tried again after failures
//! until it succeeds or the name goes.

use std::sync::Arc;

use super::error::FsResult;
use super::inode::Ino;
use super::names::Names;
use super::upload::DirtyFile;
use super::writeback::{Queuing, WriteBack};

/// close(2) of a file written through a handle (flush, or the release of
/// a file only emptied): its content is in the bucket, or journaled, when
/// this returns.
pub(super) async fn close(names: &Arc<Names>, ino: Ino, file: &Arc<DirtyFile>) -> FsResult<()> {
    let Some(wb) = names.files.write_back().cloned() else {
        return names.commit(ino, file).await;
    };
    if !file.is_dirty() {
        return names.commit(ino, file).await;
    }
    let mut queued = wb.queue(ino, file, names.open()).await;
    // An edit of a small object: fetching the rest of it costs less than
    // waiting for the upload.
    if matches!(queued, Ok(Queuing::CommitNow))
        && file.size() <= names.files.uploads().cfg.part_size
        && !file.is_unlinked()
    {
        names.saving(ino, file, || file.keep_all()).await?;
        queued = wb.queue(ino, file, names.open()).await;
    }
    match queued {
        Ok(Queuing::Started) => {
            tokio::spawn(upload_queued(names.clone(), wb, ino));
            Ok(())
        }
        Ok(Queuing::Added) => Ok(()),
        Ok(Queuing::CommitNow) => names.commit(ino, file).await,
        // The journal's disk is full: the bucket is the safe place.
        Err(e) if e.errno() == libc::ENOSPC => {
            tracing::warn!(key = %file.location().key, error = %e, "write-back journal full; uploading at close");
            names.commit(ino, file).await
        }
        Err(e) => Err(e),
    }
}

/// Uploads queued file `ino` until nothing journaled of it is left.
async fn upload_queued(names: Arc<Names>, wb: Arc<WriteBack>, ino: Ino) {
    wb.settle().await;
    let mut failures = 0;
    loop {
        let Some(file) = wb.file(ino) else {
            return;
        };
        let result = {
            let _slot = wb.slots.acquire().await;
            names.commit(ino, &file).await
        };
        if let Err(e) = &result {
            failures += 1;
            tracing::warn!(key = %file.location().key, error = %e, failures, "write-back: upload failed; the file stays journaled and is tried again");
        }
        if wb.uploaded(ino, &result, names.open()) {
            return;
        }
        if result.is_err() {
            wb.pause_after_failure(ino, failures).await;
        } else {
            failures = 0;
        }
    }
}
