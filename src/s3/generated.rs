//! `GeneratedTree`: a read-only bucket of `dirs × files` empty objects
//! (`dNNNN/fNNNNN`) made up on the fly, behind the [`ObjectClient`]
//! trait: for driving the core over a million objects without holding a
//! million of anything. Listings paginate (1000 at most, continuation
//! tokens) with or without the `/` delimiter, HEAD and GET answer for the
//! generated keys only, and every write is refused. Requests are counted.

use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::client::*;
use super::error::{S3Error, S3ErrorCode};
use super::stats::{ClientStats, Op};

/// The ETag of every generated object: the MD5 of nothing.
pub const ETAG: &str = "\"d41d8cd98f00b204e9800998ecf8427e\"";

pub struct GeneratedTree {
    bucket: String,
    dirs: u32,
    files: u32,
    at: SystemTime,
    stats: ClientStats,
}

fn err(op: Op, status: u16, code: S3ErrorCode) -> S3Error {
    S3Error::service(op.name(), status, code, "(generated store)", None)
}

fn dir_key(d: u32) -> String {
    format!("d{d:04}/")
}

fn file_key(d: u32, f: u32) -> String {
    format!("d{d:04}/f{f:05}")
}

/// `dNNNN/` as its number.
fn parse_dir(s: &str) -> Option<u32> {
    let n = s.strip_prefix('d')?.strip_suffix('/')?;
    (n.len() == 4).then(|| n.parse().ok())?
}

/// `dNNNN/fNNNNN` as its numbers.
fn parse_file(s: &str) -> Option<(u32, u32)> {
    let (d, f) = s.split_at_checked(6)?;
    let f = f.strip_prefix('f')?;
    (f.len() == 5).then_some(())?;
    Some((parse_dir(d)?, f.parse().ok()?))
}

impl GeneratedTree {
    /// Bucket `bucket` of `dirs` directories (at most 10 000) of `files`
    /// files each (at most 100 000).
    pub fn new(bucket: &str, dirs: u32, files: u32) -> Self {
        assert!(dirs <= 10_000 && files <= 100_000);
        GeneratedTree {
            bucket: bucket.to_string(),
            dirs,
            files,
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            stats: ClientStats::default(),
        }
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    fn check(&self, op: Op, bucket: &str) -> S3Result<()> {
        self.stats.request(op, 0);
        if bucket == self.bucket {
            Ok(())
        } else {
            Err(err(op, 404, S3ErrorCode::NoSuchBucket))
        }
    }

    fn exists(&self, key: &str) -> bool {
        parse_file(key).is_some_and(|(d, f)| d < self.dirs && f < self.files)
    }

    fn object(&self, d: u32, f: u32) -> ObjectInfo {
        ObjectInfo {
            key: file_key(d, f),
            size: 0,
            last_modified: Some(self.at),
            etag: Some(ETAG.to_string()),
        }
    }

    fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        max_keys: Option<u32>,
        after: Option<&str>,
    ) -> ListObjectsOutput {
        let max = max_keys.unwrap_or(1000).clamp(1, 1000) as u64;
        let total = u64::from(self.dirs) * u64::from(self.files);
        let files = u64::from(self.files);
        let mut out = ListObjectsOutput::default();
        let by_dir = delimiter == Some("/") && prefix.is_empty();
        // The generated keys a listing covers, as indexes: every key
        // `dirs × files` in order, one directory's, or none.
        let (lo, hi) = if by_dir {
            (0, u64::from(self.dirs))
        } else if prefix.is_empty() {
            (0, total)
        } else if let Some(d) = parse_dir(prefix).filter(|d| *d < self.dirs) {
            (u64::from(d) * files, (u64::from(d) + 1) * files)
        } else {
            (0, 0)
        };
        let next = |after: &str| -> u64 {
            if by_dir {
                parse_dir(after).map_or(0, |d| u64::from(d) + 1)
            } else {
                parse_file(after).map_or(0, |(d, f)| u64::from(d) * files + u64::from(f) + 1)
            }
        };
        let start = after.map_or(lo, |a| next(a).max(lo));
        let end = hi.min(start.saturating_add(max));
        for i in start..end {
            if by_dir {
                out.common_prefixes.push(dir_key(i as u32));
            } else {
                out.objects
                    .push(self.object((i / files) as u32, (i % files) as u32));
            }
        }
        if end < hi {
            out.next_continuation_token = Some(if by_dir {
                dir_key(end as u32 - 1)
            } else {
                file_key(((end - 1) / files) as u32, ((end - 1) % files) as u32)
            });
        }
        out
    }
}

fn read_only(op: Op) -> S3Error {
    err(op, 403, S3ErrorCode::AccessDenied)
}

#[async_trait]
impl ObjectClient for GeneratedTree {
    async fn list_buckets(&self) -> S3Result<Vec<BucketInfo>> {
        self.stats.request(Op::ListBuckets, 0);
        Ok(vec![BucketInfo {
            name: self.bucket.clone(),
            creation_date: Some(self.at),
        }])
    }
    async fn head_bucket(&self, bucket: &str) -> S3Result<()> {
        self.check(Op::HeadBucket, bucket)
    }
    async fn create_bucket(&self, _bucket: &str) -> S3Result<()> {
        Err(read_only(Op::CreateBucket))
    }
    async fn delete_bucket(&self, _bucket: &str) -> S3Result<()> {
        Err(read_only(Op::DeleteBucket))
    }
    async fn get_bucket_location(&self, bucket: &str) -> S3Result<Option<String>> {
        self.check(Op::GetBucketLocation, bucket)?;
        Ok(None)
    }
    async fn get_bucket_versioning(&self, bucket: &str) -> S3Result<VersioningStatus> {
        self.check(Op::GetBucketVersioning, bucket)?;
        Ok(VersioningStatus::Unversioned)
    }
    async fn put_bucket_versioning(&self, _bucket: &str, _enabled: bool) -> S3Result<()> {
        Err(read_only(Op::PutBucketVersioning))
    }
    async fn list_objects_v2(
        &self,
        bucket: &str,
        params: &ListObjectsParams,
    ) -> S3Result<ListObjectsOutput> {
        self.check(Op::ListObjectsV2, bucket)?;
        let after = params
            .continuation_token
            .as_deref()
            .or(params.start_after.as_deref());
        Ok(self.list(
            &params.prefix,
            params.delimiter.as_deref(),
            params.max_keys,
            after,
        ))
    }
    async fn list_objects_v1(
        &self,
        bucket: &str,
        params: &ListObjectsV1Params,
    ) -> S3Result<ListObjectsV1Output> {
        self.check(Op::ListObjectsV1, bucket)?;
        let out = self.list(
            &params.prefix,
            params.delimiter.as_deref(),
            params.max_keys,
            params.marker.as_deref(),
        );
        Ok(ListObjectsV1Output {
            objects: out.objects,
            common_prefixes: out.common_prefixes,
            next_marker: out.next_continuation_token,
        })
    }
    async fn list_object_versions(
        &self,
        bucket: &str,
        _params: &ListVersionsParams,
    ) -> S3Result<ListVersionsOutput> {
        self.check(Op::ListObjectVersions, bucket)?;
        Ok(ListVersionsOutput::default())
    }
    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        _version_id: Option<&str>,
    ) -> S3Result<HeadObjectOutput> {
        self.check(Op::HeadObject, bucket)?;
        if !self.exists(key) {
            return Err(err(Op::HeadObject, 404, S3ErrorCode::NotFound));
        }
        Ok(HeadObjectOutput {
            size: 0,
            etag: Some(ETAG.to_string()),
            last_modified: Some(self.at),
            version_id: None,
            content_type: None,
        })
    }
    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        params: &GetObjectParams,
    ) -> S3Result<GetObjectOutput> {
        let op = Op::GetObject;
        self.check(op, bucket)?;
        if !self.exists(key) {
            return Err(err(op, 404, S3ErrorCode::NoSuchKey));
        }
        if params.if_match.as_deref().is_some_and(|e| e != ETAG) {
            return Err(err(op, 412, S3ErrorCode::PreconditionFailed));
        }
        Ok(GetObjectOutput {
            body: Bytes::new(),
            etag: Some(ETAG.to_string()),
            object_size: 0,
            last_modified: Some(self.at),
            version_id: None,
        })
    }
    async fn put_object(&self, _b: &str, _k: &str, _body: Bytes) -> S3Result<PutObjectOutput> {
        Err(read_only(Op::PutObject))
    }
    async fn delete_object(
        &self,
        _b: &str,
        _k: &str,
        _v: Option<&str>,
    ) -> S3Result<DeleteObjectOutput> {
        Err(read_only(Op::DeleteObject))
    }
    async fn delete_objects(
        &self,
        _b: &str,
        _objects: &[ObjectIdentifier],
    ) -> S3Result<DeleteObjectsOutput> {
        Err(read_only(Op::DeleteObjects))
    }
    async fn copy_object(
        &self,
        _b: &str,
        _k: &str,
        _source: &CopySource,
    ) -> S3Result<CopyObjectOutput> {
        Err(read_only(Op::CopyObject))
    }
    async fn create_multipart_upload(&self, _b: &str, _k: &str) -> S3Result<String> {
        Err(read_only(Op::CreateMultipartUpload))
    }
    async fn upload_part(
        &self,
        _b: &str,
        _k: &str,
        _id: &str,
        _n: u32,
        _body: Bytes,
    ) -> S3Result<String> {
        Err(read_only(Op::UploadPart))
    }
    async fn upload_part_copy(
        &self,
        _b: &str,
        _k: &str,
        _id: &str,
        _n: u32,
        _source: &CopySource,
        _range: Option<Range<u64>>,
    ) -> S3Result<String> {
        Err(read_only(Op::UploadPartCopy))
    }
    async fn complete_multipart_upload(
        &self,
        _b: &str,
        _k: &str,
        _id: &str,
        _parts: &[CompletedPart],
    ) -> S3Result<PutObjectOutput> {
        Err(read_only(Op::CompleteMultipartUpload))
    }
    async fn abort_multipart_upload(&self, _b: &str, _k: &str, _id: &str) -> S3Result<()> {
        Err(read_only(Op::AbortMultipartUpload))
    }
    async fn list_parts(
        &self,
        _b: &str,
        _k: &str,
        _id: &str,
        _marker: Option<u32>,
    ) -> S3Result<ListPartsOutput> {
        Err(read_only(Op::ListParts))
    }
    async fn list_multipart_uploads(
        &self,
        bucket: &str,
        _params: &ListUploadsParams,
    ) -> S3Result<ListUploadsOutput> {
        self.check(Op::ListMultipartUploads, bucket)?;
        Ok(ListUploadsOutput::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        assert_eq!(parse_dir("d0042/"), Some(42));
        assert_eq!(parse_dir("d42/"), None);
        assert_eq!(parse_file("d0042/f00007"), Some((42, 7)));
        assert_eq!(parse_file("d0042/f7"), None);
        assert_eq!(parse_file("d0042/"), None);
    }

    #[test]
    fn listings_paginate_in_key_order() {
        let t = GeneratedTree::new("b", 3, 1500);
        let top = t.list("", Some("/"), None, None);
        assert_eq!(top.common_prefixes, ["d0000/", "d0001/", "d0002/"]);
        assert!(top.next_continuation_token.is_none());
        let p1 = t.list("d0001/", Some("/"), None, None);
        assert_eq!(p1.objects.len(), 1000);
        assert_eq!(p1.objects[0].key, "d0001/f00000");
        let token = p1.next_continuation_token.expect("more");
        let p2 = t.list("d0001/", Some("/"), None, Some(&token));
        assert_eq!(p2.objects.len(), 500);
        assert_eq!(p2.objects[0].key, "d0001/f01000");
        assert!(p2.next_continuation_token.is_none());
        assert!(t.list("d0003/", Some("/"), None, None).objects.is_empty());
        assert!(
            t.list("d0001/f00001/", Some("/"), None, None)
                .objects
                .is_empty()
        );
        let all = t.list("", None, Some(2), Some("d0000/f01499"));
        let keys: Vec<_> = all.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["d0001/f00000", "d0001/f00001"]);
        let paged = t.list("", Some("/"), Some(2), None);
        assert_eq!(paged.next_continuation_token.as_deref(), Some("d0001/"));
        let rest = t.list("", Some("/"), Some(2), Some("d0001/"));
        assert_eq!(rest.common_prefixes, ["d0002/"]);
    }
}
