//! The commit plan: which parts of a file's new object are copied from
//! its base object on the server and which are uploaded, within S3's part
//! rules ([`plan`], a pure function tested by its shapes), and its upload
//! ([`upload_planned`]).

use std::future::Future;
use std::ops::Range;

use bytes::Bytes;

use super::Uploads;
use crate::fs::error::FsResult;
use crate::fs::inode::Location;
use crate::fs::memory::Permit;
use crate::fs::multipart::{Multipart, PartSource};
use crate::fs::ranges::RangeSet;
use crate::s3::{CopySource, limits};

/// What a planned commit starts from.
pub(super) struct Planned<'a> {
    pub loc: &'a Location,
    pub size: u64,
    /// The base object's ETag (guarding its copied parts) and how many of
    /// its bytes are still the file's.
    pub base_etag: Option<String>,
    pub base_len: u64,
    /// What was written here since the base.
    pub dirty: &'a RangeSet,
}

/// Uploads a file's content as planned: one PUT when it fits in one part,
/// else one multipart upload whose unchanged ranges are copied from the
/// base on the server (If-Match on its ETag) and the rest sent, `bytes`
/// producing each sent part. Returns the new object's ETag once it is
/// complete; a failure aborts the upload (`Multipart::run`).
pub(super) async fn upload_planned<F, Fut>(
    up: &Uploads,
    p: Planned<'_>,
    bytes: F,
) -> FsResult<Option<String>>
where
    F: Fn(Range<u64>) -> Fut,
    Fut: Future<Output = FsResult<(Bytes, Permit)>>,
{
    let loc = p.loc;
    let part_len = up.planned_part_len(p.size);
    if p.size <= part_len {
        let (body, _memory) = bytes(0..p.size).await?;
        return Ok(up
            .client
            .put_object(&loc.bucket, &loc.key, body)
            .await?
            .etag);
    }
    let pieces = plan(p.size, p.base_len, p.dirty, part_len);
    let source = CopySource {
        bucket: loc.bucket.to_string(),
        key: loc.key.clone(),
        version_id: None,
        if_match: p.base_etag,
    };
    let upload = Multipart::create(
        up.client.clone(),
        &up.open,
        loc.bucket.clone(),
        loc.key.clone(),
    )
    .await?;
    upload
        .run(pieces, Some(&source), up.cfg.parts_in_flight, bytes)
        .await
}

/// Splits `0..size` into parts: unchanged bytes of the base (below
/// `base_len`, outside `dirty`) are copied, the rest uploaded; no part but
/// the last is under 5 MiB, none over 5 GiB, uploads at most `part_len`.
pub fn plan(size: u64, base_len: u64, dirty: &RangeSet, part_len: u64) -> Vec<PartSource> {
    let mut runs: Vec<PartSource> = Vec::new();
    let copyable_end = base_len.min(size);
    let mut pos = 0;
    for gap in dirty.gaps(0..copyable_end) {
        if gap.start > pos {
            runs.push(PartSource::Upload(pos..gap.start));
        }
        runs.push(PartSource::Copy(gap.clone()));
        pos = gap.end;
    }
    if pos < size {
        runs.push(PartSource::Upload(pos..size));
    }
    let mut parts: Vec<PartSource> = Vec::new();
    for run in runs {
        let (r, max) = match &run {
            PartSource::Copy(r) => (r.clone(), limits::MAX_PART_SIZE),
            PartSource::Upload(r) => (r.clone(), part_len),
        };
        let mut start = r.start;
        while start < r.end {
            let end = r.end.min(start + max);
            parts.push(run.with_range(start..end));
            start = end;
        }
    }
    // Grow every small part but the last into an upload of at least 5 MiB,
    // taking bytes from the parts after it.
    let mut i = 0;
    while i + 1 < parts.len() {
        if parts[i].len() >= limits::MIN_PART_SIZE {
            i += 1;
            continue;
        }
        let start = parts[i].range().start;
        let want_end = start + part_len.max(limits::MIN_PART_SIZE);
        let mut end = parts[i].range().end;
        let mut j = i + 1;
        while j < parts.len() && end < want_end {
            let r = parts[j].range().clone();
            if r.end <= want_end {
                end = r.end;
                j += 1;
            } else {
                end = want_end;
                parts[j] = parts[j].with_range(want_end..r.end);
                break;
            }
        }
        parts.splice(i..j, [PartSource::Upload(start..end)]);
        i += 1;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn check(parts: &[PartSource], size: u64) {
        let mut pos = 0;
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.range().start, pos, "{parts:?}");
            pos = p.range().end;
            assert!(!p.is_empty());
            assert!(p.len() <= limits::MAX_PART_SIZE);
            if i + 1 < parts.len() {
                assert!(
                    p.len() >= limits::MIN_PART_SIZE,
                    "part {i} small: {parts:?}"
                );
            }
        }
        assert_eq!(pos, size);
    }

    #[test]
    fn append_to_a_large_object_copies_it_and_uploads_the_tail() {
        let mut dirty = RangeSet::new();
        dirty.insert(1024 * MIB..1025 * MIB);
        let parts = plan(1025 * MIB, 1024 * MIB, &dirty, 8 * MIB);
        assert_eq!(
            parts,
            [
                PartSource::Copy(0..1024 * MIB),
                PartSource::Upload(1024 * MIB..1025 * MIB)
            ]
        );
    }

    #[test]
    fn a_small_edit_in_the_middle_is_grown_to_a_part() {
        let mut dirty = RangeSet::new();
        dirty.insert(100 * MIB..100 * MIB + 10);
        let parts = plan(200 * MIB, 200 * MIB, &dirty, 8 * MIB);
        check(&parts, 200 * MIB);
        let uploaded: u64 = parts
            .iter()
            .filter(|p| matches!(p, PartSource::Upload(_)))
            .map(PartSource::len)
            .sum();
        assert!(uploaded <= 8 * MIB, "{parts:?}");
    }

    #[test]
    fn plans_are_valid_for_many_shapes() {
        let mut state = 1u64;
        for _ in 0..500 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let size = 1 + (state >> 20) % (300 * MIB);
            let base_len = (state >> 7) % (size + 1);
            let mut dirty = RangeSet::new();
            for k in 0..(state % 5) {
                let s = (state >> (k * 3)) % size;
                dirty.insert(s..(s + (state >> 40) % (20 * MIB)).min(size));
            }
            check(&plan(size, base_len, &dirty, 8 * MIB), size);
        }
    }
}
