//! Large buffers of object data (GET bodies, allocated whole from the
//! Content-Length; upload parts read from staging files; the data of large
//! FUSE writes), backed by huge pages, and reused.
//!
//! Profiling a 1 GiB sequential read through the mount (perf, Garage) found
//! a fifth of the daemon's time in page faults filling fresh 8 MiB part
//! buffers 4 KiB at a time, and after huge pages, a tenth in the kernel
//! zeroing them: large blocks are mapped on their own and unmapped when
//! freed (main.rs), so every part started from new memory. Buffers freed
//! by their last `Bytes` now return to a small pool (at most [`POOL_BYTES`],
//! outside the mount's memory budget) and the next GET of a similar size
//! takes one from it.

use std::sync::Mutex;

use bytes::Bytes;

/// Transparent huge pages are this large on x86-64 and arm64 (4 KiB base).
pub const HUGE_PAGE: usize = 2 << 20;

/// Most bytes of free buffers kept for reuse.
pub const POOL_BYTES: usize = 32 << 20;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer with room for `len` bytes: from the pool when one there
/// fits (an eighth larger at most: parts hold memory the budget counts
/// by their length), else new.
pub fn take(len: usize) -> Vec<u8> {
    {
        let mut pool = POOL.lock().expect("buffer pool lock");
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, b)| (len..=len + len / 8).contains(&b.capacity()))
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = best {
            let mut buf = pool.swap_remove(i);
            buf.clear();
            return buf;
        }
    }
    let buf = Vec::<u8>::with_capacity(len);
    let start = (buf.as_ptr() as usize).next_multiple_of(HUGE_PAGE);
    let end = (buf.as_ptr() as usize + len) / HUGE_PAGE * HUGE_PAGE;
    if end > start {
        // SAFETY: the range lies inside the allocation just made; the
        // advice changes how its pages are backed, not its contents or
        // validity. Failure (no THP) leaves ordinary pages.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
    buf
}

/// Smaller copies come from malloc, which reuses its memory for them
/// (main.rs maps blocks from 256 KiB on afresh), and would crowd the pool.
pub const POOLED_COPY_MIN: usize = 256 << 10;

/// A copy of `data`: a `dd bs=1M` into the mount copied each 1 MiB write
/// into new memory, and a profile had 14 % of the daemon's time in the
/// page faults filling it.
pub fn copy(data: &[u8]) -> Bytes {
    if data.len() < POOLED_COPY_MIN {
        return Bytes::copy_from_slice(data);
    }
    let mut buf = take(data.len());
    buf.extend_from_slice(data);
    freeze(buf)
}

/// `buf`'s bytes; the buffer goes back to the pool when the last `Bytes`
/// (slices included) is dropped.
pub fn freeze(buf: Vec<u8>) -> Bytes {
    Bytes::from_owner(Pooled(buf))
}

struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        let mut pool = POOL.lock().expect("buffer pool lock");
        let held: usize = pool.iter().map(Vec::capacity).sum();
        if held + buf.capacity() <= POOL_BYTES {
            pool.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_buffer_is_reused_for_a_similar_size() {
        let len = 3 * HUGE_PAGE + 5;
        let mut a = take(len);
        a.extend_from_slice(&vec![7u8; len]);
        let ptr = a.as_ptr();
        let bytes = freeze(a);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        // Other tests share the pool: look for this buffer among a few.
        let again: Vec<Vec<u8>> = (0..4).map(|_| take(len - 100)).collect();
        assert!(again.iter().any(|b| b.as_ptr() == ptr && b.is_empty()));
    }

    #[test]
    fn a_large_write_is_copied_into_a_reused_buffer() {
        let data: Vec<u8> = (0..POOLED_COPY_MIN * 4 + 3).map(|i| i as u8).collect();
        let first = copy(&data);
        assert_eq!(&first[..], &data[..]);
        let ptr = first.as_ptr();
        drop(first);
        // Other tests share the pool: look for this buffer among a few.
        let again: Vec<Bytes> = (0..4).map(|_| copy(&data)).collect();
        assert!(again.iter().all(|b| b[..] == data[..]));
        assert!(again.iter().any(|b| b.as_ptr() == ptr));
        assert_eq!(&copy(b"small")[..], b"small");
    }
}
