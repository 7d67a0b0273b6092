//! Memory mode (see `file.rs`): the tail a file written in order fills,
//! how a write fits it, the writes that go there (at once on the FUSE
//! loop when they can: [`DirtyFile::write_now`]), and the spill to the
//! staging file when one does not fit.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::super::stream::Stream;
use super::{DirtyFile, State};
use crate::fs::error::{FsError, FsResult};
use crate::fs::memory::{Permit, Use};
use crate::s3::{buffers, limits};

/// Memory mode's buffer: the file's bytes from `start` (where the parts
/// sent end) to its end, filling the part of `cap` bytes it will become.
pub(super) struct Tail {
    pub start: u64,
    pub buf: Vec<u8>,
    pub cap: u64,
    pub memory: Permit,
}

impl Tail {
    /// Writes `data` at `offset` (inside or at the end of the buffer).
    pub fn put(&mut self, offset: u64, data: &[u8]) {
        let at = (offset - self.start) as usize;
        let over = data.len().min(self.buf.len() - at);
        self.buf[at..at + over].copy_from_slice(&data[..over]);
        self.buf.extend_from_slice(&data[over..]);
    }

    pub fn range(&self) -> Range<u64> {
        self.start..self.start + self.buf.len() as u64
    }
}

/// How a write fits memory mode (see [`DirtyFile::write_in_memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// The first write of an empty file: a tail of `cap` bytes is needed.
    Start { cap: u64 },
    /// Inside the tail's part.
    InPlace,
    /// Past the part ending at `part_end` (of `cap` bytes): that part goes
    /// up, and a new tail of `next_cap` bytes takes the rest.
    Cross {
        part_end: u64,
        cap: u64,
        next_cap: u64,
        has_stream: bool,
    },
}

impl DirtyFile {
    /// Memory mode's write (see the module notes); `Ok(false)` when the
    /// write does not fit it. What a write needs (tail memory, memory and a
    /// slot for the part it completes, the upload) is taken before the
    /// lock; if the file changed meanwhile, it is sized up again.
    pub(super) async fn write_in_memory(
        self: &Arc<Self>,
        offset: u64,
        data: &[u8],
    ) -> FsResult<bool> {
        let len = data.len() as u64;
        loop {
            let Some(fit) = self.fit(&self.state.lock().expect("dirty lock"), offset, len)? else {
                return Ok(false);
            };
            let mut tail_memory = None;
            let mut part = None;
            match fit {
                Fit::InPlace => {}
                Fit::Start { cap } => match self.up.memory.try_take(Use::Tail, cap) {
                    Some(m) => tail_memory = Some(m),
                    None => return Ok(false),
                },
                Fit::Cross {
                    cap,
                    next_cap,
                    has_stream,
                    ..
                } => {
                    // The part leaves the tail's share for the transfers'
                    // (which end on their own, so waiting is safe); the new
                    // tail keeps the tail memory, or needs more now (parts
                    // grow every thousand), or the file is staged.
                    if next_cap != cap {
                        let Some(m) = self.up.memory.try_take(Use::Tail, next_cap) else {
                            return Ok(false);
                        };
                        tail_memory = Some(m);
                    }
                    let memory = self.up.memory.take(Use::Transfer, cap).await;
                    let slot = self.part_slot().await;
                    let upload = if has_stream {
                        None
                    } else {
                        Some(self.new_upload().await?)
                    };
                    part = Some((memory, slot, upload));
                }
            }
            let mut st = self.state.lock().expect("dirty lock");
            if self.fit(&st, offset, len)? != Some(fit) {
                continue;
            }
            let end = offset + len;
            match fit {
                Fit::Start { cap } => {
                    st.tail = Some(Tail {
                        start: 0,
                        buf: buffers::take(cap as usize),
                        cap,
                        memory: tail_memory.expect("taken for Start"),
                    });
                    continue;
                }
                Fit::InPlace => {
                    self.put_in_place(&mut st, offset, data);
                    return Ok(true);
                }
                Fit::Cross {
                    part_end, next_cap, ..
                } => {
                    let (memory, slot, upload) = part.expect("taken for Cross");
                    let split = (part_end - offset) as usize;
                    let mut full = st.tail.take().expect("fits");
                    full.put(offset, &data[..split]);
                    let range = full.range();
                    let mut next = Tail {
                        start: part_end,
                        buf: buffers::take(next_cap as usize),
                        cap: next_cap,
                        memory: tail_memory.unwrap_or(full.memory),
                    };
                    next.put(part_end, &data[split..]);
                    st.tail = Some(next);
                    let stream = st.stream.get_or_insert_with(|| {
                        Stream::new(upload.expect("created for a first part"))
                    });
                    stream.send(range, buffers::freeze(full.buf), memory, slot);
                    st.gone_to = part_end;
                }
            }
            st.held.size = st.held.size.max(end);
            st.generation += 1;
            self.publish(&st);
            return Ok(true);
        }
    }

    /// Memory mode's write when it falls inside the tail's part, done at
    /// once on the caller's thread (the FUSE loop: it copies from the
    /// kernel's buffer, with no buffer of its own); `None` when it does not
    /// fit, or the file's lock is held (perhaps across disk I/O, which the
    /// loop must not wait for).
    pub fn write_now(&self, offset: u64, data: &[u8]) -> Option<FsResult<u32>> {
        let mut st = self.state.try_lock().ok()?;
        let len = data.len() as u64;
        match self.fit(&st, offset, len) {
            Ok(Some(Fit::InPlace)) => {}
            Ok(_) => return None,
            Err(e) => return Some(Err(e)),
        }
        self.put_in_place(&mut st, offset, data);
        Some(Ok(len as u32))
    }

    /// A write that fits the tail's part ([`Fit::InPlace`]).
    fn put_in_place(&self, st: &mut State, offset: u64, data: &[u8]) {
        st.tail.as_mut().expect("fits").put(offset, data);
        st.held.size = st.held.size.max(offset + data.len() as u64);
        st.generation += 1;
        self.publish(st);
    }

    /// How a write of `len` bytes at `offset` fits memory mode, if it does.
    fn fit(&self, st: &State, offset: u64, len: u64) -> FsResult<Option<Fit>> {
        if st.lost || st.stream.as_ref().is_some_and(|s| s.failed()) && st.gone_to > 0 {
            return Err(FsError::WriteLost);
        }
        let end = offset + len;
        if len == 0
            || !self.up.cfg.from_memory
            || st.base.is_some()
            || self.unlinked.load(Ordering::SeqCst)
            || end > self.up.max_file_size()
        {
            return Ok(None);
        }
        let Some(tail) = &st.tail else {
            let empty = st.held.size == 0 && st.stream.is_none() && st.gone_to == 0;
            return Ok((empty && offset == 0).then(|| Fit::Start {
                cap: self.up.stream_part_len(1),
            }));
        };
        // In order: inside the tail or at its end, no hole.
        if offset < tail.start || offset > st.held.size {
            return Ok(None);
        }
        let part_end = tail.start + tail.cap;
        if end <= part_end {
            return Ok(Some(Fit::InPlace));
        }
        // The part that goes up, and the one the tail becomes, with room
        // for the rest of the write; the last part number is the commit's.
        let n = st.stream.as_ref().map_or(1, |s| s.next_number());
        if n + 1 > limits::MAX_PARTS {
            return Ok(None);
        }
        let next_cap = self.up.stream_part_len(n + 1);
        Ok((end - part_end <= next_cap).then_some(Fit::Cross {
            part_end,
            cap: tail.cap,
            next_cap,
            has_stream: st.stream.is_some(),
        }))
    }

    /// Leaves memory mode: the tail goes to the staging file, and the file
    /// goes on as a staged one (its stream, if any, from there). Blocking
    /// (local disk), under the file's lock.
    pub(super) fn spill(&self, st: &mut State) -> FsResult<()> {
        let Some(tail) = &st.tail else {
            return Ok(());
        };
        let range = tail.range();
        // What is staged: the bytes sent are not (later changes charge the
        // whole size again, once the object holds them).
        st.held.charge(&self.up, st.held.size - st.gone_to)?;
        self.staging.set_len(st.held.size)?;
        self.staging.write_at(&tail.buf, range.start)?;
        st.held.dirty.insert(range.clone());
        st.held.present.insert(range);
        st.tail = None;
        Ok(())
    }
}
