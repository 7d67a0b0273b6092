//! bladefs: mount buckets of an S3-compatible object store (first of all the
//! Pure Storage FlashBlade) as directories on Linux.

pub mod cli;
pub mod daemon;
pub mod fs;
pub mod fuse;
pub mod kernel_mount;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod mount;
pub mod notify;
pub mod proc_fds;
pub mod s3;
