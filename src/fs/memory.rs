//! The one memory budget of a mount: every buffer of object data the
//! daemon holds (read-ahead parts, fills of a file's staging file from its
//! object, upload parts) takes permits for its bytes before it is allocated
//! and gives them back when it is freed. Waiting for permits is the
//! back-pressure: readers and writers slow down instead of growing memory.
//!
//! The budget is `--prefetch-memory-mib` + `--upload-memory-mib`, each use
//! held to its own share: readers who stop reading (their parts stay until
//! the file is closed or the window moves on) never leave writers without
//! memory, and writers never take what read-ahead needs. No single buffer
//! is larger than its share: parts are sized to fit.
//!
//! A quarter of the upload share is for the *tails* of files streamed from
//! memory (`fs/upload/file.rs`): the part each is filling. A tail lives as
//! long as its writer pleases, so tails are only ever taken with
//! [`Memory::try_take`] (a file that finds none free is staged on disk
//! instead), and nobody waits for tail memory: transfers, which end on
//! their own, can always be waited for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Parts fetched ahead of readers.
    ReadAhead,
    /// Fills of staging files and upload parts.
    Transfer,
    /// The parts files streamed from memory are filling.
    Tail,
}

/// The smallest upload budget that has tails: three quarters of it still
/// carry 8 MiB parts several at a time.
pub const TAILS_FROM: u64 = 32 << 20;

#[derive(Clone)]
pub struct Memory {
    read_ahead: Arc<Semaphore>,
    transfer: Arc<Semaphore>,
    tail: Arc<Semaphore>,
    read_ahead_bytes: u64,
    transfer_bytes: u64,
    tail_bytes: u64,
    /// The most ever held at once.
    peak: Arc<AtomicU64>,
}

/// Bytes held; given back when dropped.
pub struct Permit {
    _held: OwnedSemaphorePermit,
}

impl Memory {
    /// `upload_bytes` is shared by transfers and tails; a budget too small
    /// to spare tails a quarter (below [`TAILS_FROM`]) has none.
    pub fn new(read_ahead_bytes: u64, upload_bytes: u64) -> Self {
        let tail_bytes = if upload_bytes >= TAILS_FROM {
            upload_bytes / 4
        } else {
            0
        };
        let transfer_bytes = upload_bytes - tail_bytes;
        Memory {
            read_ahead: Arc::new(Semaphore::new(read_ahead_bytes as usize)),
            transfer: Arc::new(Semaphore::new(transfer_bytes as usize)),
            tail: Arc::new(Semaphore::new(tail_bytes as usize)),
            read_ahead_bytes,
            transfer_bytes,
            tail_bytes,
            peak: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes `use_` could take now without waiting.
    pub fn available(&self, use_: Use) -> u64 {
        self.share(use_).available_permits() as u64
    }

    /// The most bytes held at once so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }

    /// The largest buffer one use may hold.
    pub fn largest(&self, use_: Use) -> u64 {
        match use_ {
            Use::ReadAhead => self.read_ahead_bytes,
            Use::Transfer => self.transfer_bytes,
            Use::Tail => self.tail_bytes,
        }
    }

    fn share(&self, use_: Use) -> &Arc<Semaphore> {
        match use_ {
            Use::ReadAhead => &self.read_ahead,
            Use::Transfer => &self.transfer,
            Use::Tail => &self.tail,
        }
    }

    /// Bytes held now for `use_`.
    pub fn in_use_for(&self, use_: Use) -> u64 {
        self.largest(use_) - self.available(use_)
    }

    /// Bytes held now, all uses together.
    pub fn in_use(&self) -> u64 {
        self.read_ahead_bytes + self.transfer_bytes + self.tail_bytes
            - self.read_ahead.available_permits() as u64
            - self.transfer.available_permits() as u64
            - self.tail.available_permits() as u64
    }

    /// Takes `bytes` for `use_` if they are free now (and nobody queues).
    pub fn try_take(&self, use_: Use, bytes: u64) -> Option<Permit> {
        if bytes > self.largest(use_) {
            return None;
        }
        let held = self
            .share(use_)
            .clone()
            .try_acquire_many_owned(bytes as u32)
            .ok()?;
        self.peak.fetch_max(self.in_use(), Ordering::SeqCst);
        Some(Permit { _held: held })
    }

    /// Waits until `bytes` may be held for `use_`. Asking for more than
    /// [`Memory::largest`] is a bug of the caller (it would wait forever,
    /// or break the bound), so it is refused loudly.
    pub async fn take(&self, use_: Use, bytes: u64) -> Permit {
        debug_assert_ne!(use_, Use::Tail, "nobody waits for tail memory");
        assert!(
            bytes <= self.largest(use_),
            "a buffer of {bytes} bytes is larger than the memory budget allows ({use_:?})"
        );
        let held = self
            .share(use_)
            .clone()
            .acquire_many_owned(bytes as u32)
            .await
            .expect("the budget never closes");
        self.peak.fetch_max(self.in_use(), Ordering::SeqCst);
        Permit { _held: held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn read_ahead_cannot_take_what_transfers_need() {
        let m = Memory::new(10, 20);
        let _readers = m.take(Use::ReadAhead, 10).await;
        // Read-ahead is at its share; a further read-ahead waits...
        assert!(m.take(Use::ReadAhead, 1).now_or_never().is_none());
        // ...while transfers still have all of theirs.
        let _writer = m.take(Use::Transfer, 20).await;
        assert_eq!(m.in_use(), 30);
    }

    #[tokio::test]
    async fn transfers_are_held_to_their_share_too() {
        let m = Memory::new(10, 20);
        let _a = m.take(Use::Transfer, 20).await;
        assert!(m.take(Use::Transfer, 1).now_or_never().is_none());
        assert!(m.try_take(Use::Transfer, 1).is_none());
        let _b = m.take(Use::ReadAhead, 10).await;
        assert_eq!(m.in_use(), 30);
        assert_eq!(m.peak(), 30);
        assert!(m.try_take(Use::Tail, 1).is_none(), "too small for tails");
    }

    #[tokio::test]
    async fn tails_have_a_quarter_of_the_upload_share_and_never_wait() {
        let m = Memory::new(10, TAILS_FROM);
        let quarter = TAILS_FROM / 4;
        let tail = m.try_take(Use::Tail, quarter).expect("a quarter");
        assert!(m.try_take(Use::Tail, 1).is_none());
        // Transfers keep their whole share while tails are full.
        let _t = m.take(Use::Transfer, TAILS_FROM - quarter).await;
        assert_eq!(m.in_use(), TAILS_FROM);
        drop(tail);
        assert_eq!(m.in_use(), TAILS_FROM - quarter);
    }
}
