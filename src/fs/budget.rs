//! The metadata budget: one limit, in bytes, on everything a mount
//! remembers about names — the inodes the kernel references, the cache of
//! names and attributes, complete listings, the listings kept for walks
//! and the directories' metadata tables (`--metadata-cache-mib`).
//!
//! Rules:
//! - Each owner charges what it holds here when it takes it and releases
//!   the same amount when it lets go; what it charges is its real size as
//!   the allocator sees it ([`alloc`]), hash tables by their capacity.
//! - The counter never refuses: an owner that went over makes room by
//!   evicting its least recently used entries; the inodes the kernel holds
//!   are given back by asking the kernel to forget them (`Names::reclaim`).
//! - Nothing here locks: the counter is read and written atomically, so
//!   any owner may charge under its own lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// Default limit: 64 MiB.
pub const DEFAULT_BYTES: u64 = 64 << 20;

#[derive(Debug)]
pub struct MetaBudget {
    limit: u64,
    charged: AtomicU64,
    peak: AtomicU64,
    /// Charges asked back from the kernel (inodes it was asked to forget)
    /// and not yet given back: a reclaim counts them as freed already.
    asked: AtomicU64,
}

impl MetaBudget {
    pub fn new(limit: u64) -> Self {
        MetaBudget {
            limit,
            charged: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            asked: AtomicU64::new(0),
        }
    }

    pub fn charge(&self, bytes: u64) {
        let now = self.charged.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    pub fn release(&self, bytes: u64) {
        let _ = self
            .charged
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(bytes))
            });
    }

    /// Moves a charge from `old` bytes to `new`.
    pub fn recharge(&self, old: u64, new: u64) {
        if new >= old {
            self.charge(new - old);
        } else {
            self.release(old - new);
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn charged(&self) -> u64 {
        self.charged.load(Ordering::Relaxed)
    }

    /// The most ever charged at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// How far over the limit the charges are (0 within it).
    pub fn excess(&self) -> u64 {
        self.charged().saturating_sub(self.limit)
    }

    /// `fraction` of the limit, in bytes.
    pub fn mark(&self, fraction: f64) -> u64 {
        (self.limit as f64 * fraction) as u64
    }

    /// Bytes above `fraction` of the limit.
    pub fn above(&self, fraction: f64) -> u64 {
        self.charged().saturating_sub(self.mark(fraction))
    }

    /// `bytes` of charges were asked back (the kernel asked to forget).
    pub fn ask(&self, bytes: u64) {
        self.asked.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `bytes` asked back came back, or will not (looked up again).
    pub fn answered(&self, bytes: u64) {
        let _ = self
            .asked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                Some(a.saturating_sub(bytes))
            });
    }

    /// What is charged and not asked back.
    pub fn unasked(&self) -> u64 {
        self.charged()
            .saturating_sub(self.asked.load(Ordering::Relaxed))
    }
}

/// Returns freed heap pages to the system, in the background, one call at
/// a time: glibc keeps freed small blocks (a million inodes' worth after
/// the kernel forgets a walk) resident until asked. Called when a table
/// shrank, which happens a few times per halving, not per entry.
pub fn give_back_memory() {
    use std::sync::atomic::AtomicBool;
    static RUNNING: AtomicBool = AtomicBool::new(false);
    if RUNNING.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("trim".to_string())
        .spawn(|| {
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only returns free pages to the system.
            unsafe {
                libc::malloc_trim(0);
            }
            RUNNING.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        RUNNING.store(false, Ordering::Release);
    }
}

/// What a heap block asked for `len` bytes occupies (glibc: 8 bytes of
/// header, 16-byte granules, 32 bytes at least); nothing for nothing.
pub fn alloc(len: usize) -> u64 {
    if len == 0 {
        0
    } else {
        ((len + 8 + 15) & !15).max(32) as u64
    }
}

/// What a hash table of `capacity` slots of `slot` bytes occupies (one
/// control byte per slot, and the table's own block).
pub fn table(capacity: usize, slot: usize) -> u64 {
    if capacity == 0 {
        0
    } else {
        alloc(capacity * (slot + 1) + 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_and_the_peak_stays() {
        let b = MetaBudget::new(100);
        b.charge(80);
        b.charge(40);
        assert_eq!(b.excess(), 20);
        b.release(100);
        assert_eq!(b.charged(), 20);
        assert_eq!(b.peak(), 120);
        b.recharge(20, 10);
        assert_eq!(b.charged(), 10);
        b.release(1000);
        assert_eq!(b.charged(), 0, "never below zero");
        assert_eq!(b.above(0.5), 0);
        b.charge(60);
        b.ask(50);
        assert_eq!(b.unasked(), 10);
        b.answered(80);
        assert_eq!(b.unasked(), 60, "never below zero");
        assert_eq!(b.mark(0.25), 25);
    }

    #[test]
    fn blocks_are_sized_as_the_allocator_sizes_them() {
        assert_eq!(alloc(0), 0);
        assert_eq!(alloc(1), 32);
        assert_eq!(alloc(24), 32);
        assert_eq!(alloc(25), 48);
        assert_eq!(alloc(100), 112);
        assert_eq!(table(0, 8), 0);
        assert!(table(1024, 16) >= 1024 * 17);
    }
}
