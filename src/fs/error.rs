//! The one errno boundary: every failure of the filesystem core is an
//! [`FsError`], and [`FsError::errno`] is the only place it becomes an errno
//! (an exhaustive match, so a new error cannot slip through unmapped).

use std::sync::Arc;

use crate::s3::{ErrorKind, S3Error};

#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("file name too long")]
    NameTooLong,
    #[error("name is not valid here: {0}")]
    InvalidName(String),
    #[error("read-only file system")]
    ReadOnly,
    #[error("operation not supported")]
    NotSupported,
    #[error("stale file handle: the object changed since it was opened")]
    Stale,
    #[error("unknown file handle")]
    BadHandle,
    #[error("the request was cancelled")]
    Cancelled,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("operation not permitted here")]
    NotPermitted,
    #[error("the staging space for writes is full")]
    NoSpace,
    /// Larger than the parts memory allows can carry (see `Uploads::max_file_size`).
    #[error("file too large for the upload memory (raise --upload-memory-mib)")]
    FileTooBig,
    /// Parts of the file went up straight from memory and their upload
    /// failed for good: those bytes are nowhere else, so the file can no
    /// longer be saved.
    #[error(
        "an upload of this file failed after its bytes left memory; it cannot be saved, write it again"
    )]
    WriteLost,
    /// Bytes a file sent from memory are needed again: the file must be
    /// saved first (`Names::saving` does, and tries again). Never reaches
    /// an application.
    #[error("internal: the file must be saved first")]
    SaveFirst,
    /// The local disk failed (staging files): what was being done, and why.
    #[error("local I/O error {what}: {source}")]
    LocalIo {
        what: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The write-back journal cannot be used as asked (another mount holds
    /// it, it belongs to another endpoint, entries it holds cannot be
    /// uploaded).
    #[error("{0}")]
    WriteBack(String),
    /// A change reached the store only in part (some keys of a batch).
    #[error("{0}")]
    Partial(String),
    /// The operation did not finish within its deadline.
    #[error("{what} did not finish within {seconds} s")]
    TimedOut { what: &'static str, seconds: u64 },
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error(transparent)]
    S3(#[from] S3Error),
}

pub type FsResult<T> = Result<T, FsError>;

/// A local I/O error, saying what was being done.
pub fn local_io(what: impl Into<String>, source: std::io::Error) -> FsError {
    FsError::LocalIo {
        what: what.into(),
        source: Arc::new(source),
    }
}

impl FsError {
    /// A failure of the store, the network, the local disk or bladefs
    /// itself, as opposed to an answer about names and modes (ENOENT,
    /// EEXIST, ENOTEMPTY, EROFS, ...) that applications meet every day:
    /// what an operator must hear about.
    pub fn is_failure(&self) -> bool {
        match self.errno() {
            libc::EIO | libc::ESTALE | libc::ENOSPC | libc::EFBIG | libc::EBADF | libc::ENOSYS => {
                true
            }
            libc::EACCES => matches!(self, FsError::S3(_)),
            _ => false,
        }
    }

    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::InvalidName(_) => libc::EINVAL,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotSupported => libc::ENOTSUP,
            FsError::Stale => libc::ESTALE,
            FsError::BadHandle => libc::EBADF,
            FsError::Cancelled => libc::EINTR,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NotPermitted => libc::EPERM,
            FsError::NoSpace => libc::ENOSPC,
            FsError::FileTooBig => libc::EFBIG,
            FsError::WriteLost | FsError::SaveFirst => libc::EIO,
            // A full local disk is ENOSPC, as on any filesystem.
            FsError::LocalIo { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                libc::ENOSPC
            }
            FsError::LocalIo { .. }
            | FsError::Partial(_)
            | FsError::TimedOut { .. }
            | FsError::WriteBack(_) => libc::EIO,
            FsError::Internal(_) => libc::EIO,
            FsError::S3(e) => match e.kind() {
                ErrorKind::NotFound | ErrorKind::NoSuchBucket => libc::ENOENT,
                ErrorKind::AccessDenied => libc::EACCES,
                // A conditional read whose object changed under it.
                ErrorKind::PreconditionFailed => libc::ESTALE,
                ErrorKind::Conflict => libc::ENOTEMPTY,
                ErrorKind::NotImplemented => libc::ENOSYS,
                // The store refused what the client sent (a missing
                // header, a bad digest): a fault here, not in the caller's
                // arguments, which EINVAL would blame.
                ErrorKind::InvalidRequest
                | ErrorKind::InvalidRange
                | ErrorKind::NotModified
                | ErrorKind::Throttled
                | ErrorKind::ServerError
                | ErrorKind::Transport
                | ErrorKind::Tls
                | ErrorKind::Timeout
                | ErrorKind::InvalidResponse => libc::EIO,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::S3ErrorCode;

    #[test]
    fn s3_errors_map_to_errno() {
        let e = |status, code| {
            FsError::S3(S3Error::service(
                "Op",
                status,
                S3ErrorCode::parse(code),
                "",
                None,
            ))
        };
        assert_eq!(e(404, "NoSuchKey").errno(), libc::ENOENT);
        assert_eq!(e(403, "AccessDenied").errno(), libc::EACCES);
        assert_eq!(e(412, "PreconditionFailed").errno(), libc::ESTALE);
        assert_eq!(e(503, "SlowDown").errno(), libc::EIO);
        assert_eq!(e(500, "InternalError").errno(), libc::EIO);
        assert_eq!(FsError::ReadOnly.errno(), libc::EROFS);
        // A request the store refused is the client's fault, not the caller's.
        assert_eq!(e(411, "MissingContentLength").errno(), libc::EIO);
        assert_eq!(e(400, "BadDigest").errno(), libc::EIO);
        let disk = local_io(
            "writing the staging file",
            std::io::Error::other("disk gone"),
        );
        assert_eq!(disk.errno(), libc::EIO);
        assert_eq!(
            disk.to_string(),
            "local I/O error writing the staging file: disk gone"
        );
        assert!(std::error::Error::source(&disk).is_some());
        let full = local_io(
            "writing the staging file",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(full.errno(), libc::ENOSPC);
    }
}
