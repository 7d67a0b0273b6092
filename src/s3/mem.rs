//! `MemoryClient`: an in-memory object store behind the [`ObjectClient`]
//! trait, for driving the filesystem core without a server. It is strict
//! where real stores are strict and the core relies on it: ETags change
//! with content, `If-Match` on reads and copies fails with 412, ranges past
//! the end are 416, multipart parts but the last must be 5 MiB, completes
//! check part ETags, listings paginate with continuation tokens. Versioning
//! can be turned on: writes and deletes then keep versions and delete
//! markers (`null` ones while Suspended), readable by id and listed by
//! ListObjectVersions. It is not a substitute for the real servers the
//! integration tests start.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};

use super::client::*;
use super::error::{ErrorKind, S3Error, S3ErrorCode};
use super::stats::{ClientStats, Op};

#[derive(Debug, Clone)]
struct Object {
    data: Bytes,
    etag: String,
    last_modified: SystemTime,
}

#[derive(Debug, Default)]
struct Upload {
    key: String,
    initiated: Option<SystemTime>,
    parts: BTreeMap<u32, (Bytes, String)>,
}

/// One version of a key; `None` is a delete marker.
#[derive(Debug, Clone)]
struct Version {
    id: String,
    object: Option<Object>,
    at: SystemTime,
}

#[derive(Debug, Default)]
struct Bucket {
    /// The current object of each key.
    objects: BTreeMap<String, Object>,
    uploads: HashMap<String, Upload>,
    created: Option<SystemTime>,
    /// `None` until versioning is first turned on; then `Some(enabled)`.
    versioning: Option<bool>,
    /// Every version of each key, oldest first (kept once versioning was
    /// ever on).
    versions: BTreeMap<String, Vec<Version>>,
    next_version: u64,
}

impl Bucket {
    /// The id a write made now gets: a fresh one while versioning is
    /// Enabled, `null` while Suspended (replacing the key's `null` version).
    fn version_for(&mut self, key: &str) -> Option<String> {
        match self.versioning? {
            true => {
                self.next_version += 1;
                Some(format!("v{:06}", self.next_version))
            }
            false => {
                if let Some(vs) = self.versions.get_mut(key) {
                    vs.retain(|v| v.id != "null");
                }
                Some("null".to_string())
            }
        }
    }

    /// Makes `object` the current content of `key`; returns its version id.
    fn write(&mut self, key: &str, object: Object) -> Option<String> {
        let id = self.version_for(key);
        if let Some(id) = &id {
            self.versions
                .entry(key.to_string())
                .or_default()
                .push(Version {
                    id: id.clone(),
                    object: Some(object.clone()),
                    at: object.last_modified,
                });
        }
        self.objects.insert(key.to_string(), object);
        id
    }

    /// Deletes `key` (a delete marker when versioned); returns the
    /// marker's id.
    fn delete(&mut self, key: &str) -> Option<String> {
        self.objects.remove(key);
        let id = self.version_for(key)?;
        self.versions
            .entry(key.to_string())
            .or_default()
            .push(Version {
                id: id.clone(),
                object: None,
                at: now(),
            });
        Some(id)
    }

    /// Removes one version of `key`; the newest left becomes current.
    fn delete_version(&mut self, key: &str, id: &str) {
        let Some(vs) = self.versions.get_mut(key) else {
            return;
        };
        vs.retain(|v| v.id != id);
        match vs.last().and_then(|v| v.object.clone()) {
            Some(o) => {
                self.objects.insert(key.to_string(), o);
            }
            None => {
                self.objects.remove(key);
            }
        }
    }

    /// The object of `key` at version `id` (a delete marker is 405, as S3
    /// answers), or the current one.
    fn object(&self, op: Op, key: &str, id: Option<&str>) -> S3Result<(Object, Option<String>)> {
        let Some(id) = id else {
            let o = self
                .objects
                .get(key)
                .ok_or_else(|| err(op, 404, S3ErrorCode::NoSuchKey))?;
            let current = self
                .versions
                .get(key)
                .and_then(|vs| vs.last())
                .map(|v| v.id.clone());
            return Ok((o.clone(), current));
        };
        let v = self
            .versions
            .get(key)
            .and_then(|vs| vs.iter().find(|v| v.id == id))
            .ok_or_else(|| err(op, 404, S3ErrorCode::NoSuchVersion))?;
        let o = v
            .object
            .clone()
            .ok_or_else(|| err(op, 405, S3ErrorCode::MethodNotAllowed))?;
        Ok((o, Some(id.to_string())))
    }
}

/// An in-memory S3 store. Every call is counted in [`MemoryClient::stats`]
/// like the HTTP client counts its requests.
#[derive(Default)]
pub struct MemoryClient {
    buckets: Mutex<BTreeMap<String, Bucket>>,
    next_id: AtomicU64,
    stats: ClientStats,
    /// GetObject calls per key, for tests that count a file's reads apart
    /// from the directories' metadata objects.
    gets: Mutex<BTreeMap<String, u64>>,
}

/// The time of a write, in whole milliseconds as stores report
/// LastModified (a version is current at any time named to the millisecond
/// after it).
fn now() -> SystemTime {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970");
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(since.as_millis() as u64)
}

fn err(op: Op, status: u16, code: S3ErrorCode) -> S3Error {
    S3Error::service(op.name(), status, code, "(memory store)", None)
}

/// Servers refuse to write or delete a key longer than S3 allows (Ceph RGW:
/// InvalidObjectName, AWS: KeyTooLongError), so the memory store does too.
fn key_fits(op: Op, key: &str) -> S3Result<()> {
    if key.len() > limits::MAX_KEY_LEN {
        return Err(err(op, 400, S3ErrorCode::KeyTooLong));
    }
    Ok(())
}

fn quoted_md5(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    format!("\"{}\"", hex::encode(h.finalize()))
}

impl MemoryClient {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding one empty bucket.
    pub fn with_bucket(bucket: &str) -> Self {
        let c = Self::new();
        c.buckets
            .lock()
            .expect("store lock")
            .insert(bucket.to_string(), Bucket::default());
        c
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// GetObject calls so far for keys under `prefix` (answered or not).
    pub fn gets_under(&self, prefix: &str) -> u64 {
        let gets = self.gets.lock().expect("gets lock");
        gets.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every object of `bucket`, key to content (for comparing with a model).
    pub fn objects(&self, bucket: &str) -> BTreeMap<String, Bytes> {
        let buckets = self.buckets.lock().expect("store lock");
        buckets.get(bucket).map_or_else(BTreeMap::new, |b| {
            b.objects
                .iter()
                .map(|(k, o)| (k.clone(), o.data.clone()))
                .collect()
        })
    }

    /// Multipart uploads not completed nor aborted.
    pub fn open_uploads(&self, bucket: &str) -> usize {
        let buckets = self.buckets.lock().expect("store lock");
        buckets.get(bucket).map_or(0, |b| b.uploads.len())
    }

    /// Writes an object as another client would.
    pub fn put(&self, bucket: &str, key: &str, data: impl Into<Bytes>) {
        let data = data.into();
        let mut buckets = self.buckets.lock().expect("store lock");
        let b = buckets.entry(bucket.to_string()).or_default();
        b.write(
            key,
            Object {
                etag: quoted_md5(&[&data]),
                data,
                last_modified: now(),
            },
        );
    }

    /// Deletes a key as another client would (a delete marker when
    /// versioned).
    pub fn delete(&self, bucket: &str, key: &str) {
        let mut buckets = self.buckets.lock().expect("store lock");
        if let Some(b) = buckets.get_mut(bucket) {
            b.delete(key);
        }
    }

    /// Counts a request of `op` sending `sent` bytes, and runs `f` on the bucket.
    fn with_bucket_mut<T>(
        &self,
        op: Op,
        sent: u64,
        bucket: &str,
        f: impl FnOnce(&mut Bucket) -> S3Result<T>,
    ) -> S3Result<T> {
        self.stats.request(op, sent);
        let mut buckets = self.buckets.lock().expect("store lock");
        let b = buckets
            .get_mut(bucket)
            .ok_or_else(|| err(op, 404, S3ErrorCode::NoSuchBucket))?;
        f(b)
    }

    fn new_id(&self) -> String {
        format!("upload-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn list(
        &self,
        op: Op,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        max_keys: Option<u32>,
        after: Option<&str>,
    ) -> S3Result<(Vec<ObjectInfo>, Vec<String>, Option<String>)> {
        self.with_bucket_mut(op, 0, bucket, |b| {
            let max = max_keys.unwrap_or(1000).clamp(1, 1000) as usize;
            let mut objects = Vec::new();
            let mut prefixes: Vec<String> = Vec::new();
            let mut last = None;
            let start = after.unwrap_or("");
            for (key, o) in b
                .objects
                .range::<str, _>((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
            {
                if !key.starts_with(prefix) {
                    if key.as_str() > prefix {
                        break;
                    }
                    continue;
                }
                if let Some(d) = delimiter
                    && let Some(i) = key[prefix.len()..].find(d)
                {
                    let cp = &key[..prefix.len() + i + d.len()];
                    if prefixes.last().map(String::as_str) == Some(cp)
                        || after.is_some_and(|a| a.starts_with(cp))
                    {
                        continue;
                    }
                    if objects.len() + prefixes.len() == max {
                        return Ok((objects, prefixes, last));
                    }
                    prefixes.push(cp.to_string());
                    // The token skips every key under this prefix.
                    last = Some(format!("{cp}\u{10FFFF}"));
                    continue;
                }
                if objects.len() + prefixes.len() == max {
                    return Ok((objects, prefixes, last));
                }
                objects.push(ObjectInfo {
                    key: key.clone(),
                    size: o.data.len() as u64,
                    last_modified: Some(o.last_modified),
                    etag: Some(o.etag.clone()),
                });
                last = Some(key.clone());
            }
            Ok((objects, prefixes, None))
        })
    }

    /// Keeps `body` as part `part_number` of an upload of `key`.
    #[allow(clippy::too_many_arguments)]
    fn store_part(
        &self,
        op: Op,
        sent: u64,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> S3Result<String> {
        self.with_bucket_mut(op, sent, bucket, |b| {
            let u = b
                .uploads
                .get_mut(upload_id)
                .filter(|u| u.key == key)
                .ok_or_else(|| err(op, 404, S3ErrorCode::NoSuchUpload))?;
            let etag = quoted_md5(&[&body]);
            u.parts.insert(part_number, (body, etag.clone()));
            Ok(etag)
        })
    }

    fn source(&self, op: Op, source: &CopySource) -> S3Result<Object> {
        let buckets = self.buckets.lock().expect("store lock");
        let b = buckets
            .get(&source.bucket)
            .ok_or_else(|| err(op, 404, S3ErrorCode::NoSuchBucket))?;
        let (o, _) = b.object(op, &source.key, source.version_id.as_deref())?;
        if source.if_match.as_ref().is_some_and(|e| *e != o.etag) {
            return Err(err(op, 412, S3ErrorCode::PreconditionFailed));
        }
        Ok(o)
    }
}

/// One page of ListObjectVersions: keys in order, each key's versions
/// newest first, keys under a delimiter folded into one prefix.
fn list_versions(b: &Bucket, params: &ListVersionsParams) -> ListVersionsOutput {
    let max = params.max_keys.unwrap_or(1000).clamp(1, 1000) as usize;
    let prefix = params.prefix.as_str();
    let key_marker = params.key_marker.as_deref().unwrap_or("");
    let version_marker = params
        .version_id_marker
        .as_deref()
        .filter(|v| !v.is_empty());
    let mut out = ListVersionsOutput::default();
    let mut count = 0;
    // The last entry returned: where the next page starts.
    let mut last: Option<(String, Option<String>)> = None;
    let full = |out: &mut ListVersionsOutput, last: Option<(String, Option<String>)>| {
        let (key, version) = last.expect("max is at least 1");
        out.next_key_marker = Some(key);
        out.next_version_id_marker = version;
    };
    let from = (
        std::ops::Bound::Included(key_marker),
        std::ops::Bound::Unbounded,
    );
    for (key, vs) in b.versions.range::<str, _>(from) {
        if !key.starts_with(prefix) {
            if key.as_str() > prefix {
                break;
            }
            continue;
        }
        if key == key_marker && version_marker.is_none() {
            continue;
        }
        if let Some(d) = params.delimiter.as_deref()
            && let Some(i) = key[prefix.len()..].find(d)
        {
            let cp = &key[..prefix.len() + i + d.len()];
            if out.common_prefixes.last().map(String::as_str) == Some(cp)
                || key_marker.starts_with(cp)
            {
                continue;
            }
            if count == max {
                full(&mut out, last);
                return out;
            }
            out.common_prefixes.push(cp.to_string());
            last = Some((cp.to_string(), None));
            count += 1;
            continue;
        }
        let mut newest_first: Vec<&Version> = vs.iter().rev().collect();
        if key == key_marker
            && let Some(m) = version_marker
        {
            let after = newest_first
                .iter()
                .position(|v| v.id == m)
                .map_or(0, |i| i + 1);
            newest_first.drain(..after);
        }
        let latest = vs.last().map(|v| v.id.as_str());
        for v in newest_first {
            if count == max {
                full(&mut out, last);
                return out;
            }
            last = Some((key.clone(), Some(v.id.clone())));
            out.versions.push(ObjectVersion {
                key: key.clone(),
                version_id: Some(v.id.clone()),
                is_latest: Some(v.id.as_str()) == latest,
                is_delete_marker: v.object.is_none(),
                size: v.object.as_ref().map_or(0, |o| o.data.len() as u64),
                etag: v.object.as_ref().map(|o| o.etag.clone()),
                last_modified: Some(v.at),
            });
            count += 1;
        }
    }
    out
}

fn slice(op: Op, data: &Bytes, range: Option<&Range<u64>>) -> S3Result<Bytes> {
    let Some(r) = range else {
        return Ok(data.clone());
    };
    let len = data.len() as u64;
    if r.start >= len || r.end <= r.start {
        return Err(err(op, 416, S3ErrorCode::InvalidRange));
    }
    Ok(data.slice(r.start as usize..r.end.min(len) as usize))
}

#[async_trait]
impl ObjectClient for MemoryClient {
    async fn list_buckets(&self) -> S3Result<Vec<BucketInfo>> {
        self.stats.request(Op::ListBuckets, 0);
        let buckets = self.buckets.lock().expect("store lock");
        Ok(buckets
            .iter()
            .map(|(name, b)| BucketInfo {
                name: name.clone(),
                creation_date: b.created,
            })
            .collect())
    }

    async fn head_bucket(&self, bucket: &str) -> S3Result<()> {
        self.with_bucket_mut(Op::HeadBucket, 0, bucket, |_| Ok(()))
    }

    async fn create_bucket(&self, bucket: &str) -> S3Result<()> {
        self.stats.request(Op::CreateBucket, 0);
        let mut buckets = self.buckets.lock().expect("store lock");
        if buckets.contains_key(bucket) {
            return Err(err(
                Op::CreateBucket,
                409,
                S3ErrorCode::BucketAlreadyOwnedByYou,
            ));
        }
        buckets.insert(
            bucket.to_string(),
            Bucket {
                created: Some(SystemTime::now()),
                ..Default::default()
            },
        );
        Ok(())
    }

    async fn delete_bucket(&self, bucket: &str) -> S3Result<()> {
        self.stats.request(Op::DeleteBucket, 0);
        let mut buckets = self.buckets.lock().expect("store lock");
        match buckets.get(bucket) {
            None => Err(err(Op::DeleteBucket, 404, S3ErrorCode::NoSuchBucket)),
            Some(b) if !b.objects.is_empty() => {
                Err(err(Op::DeleteBucket, 409, S3ErrorCode::BucketNotEmpty))
            }
            Some(_) => {
                buckets.remove(bucket);
                Ok(())
            }
        }
    }

    async fn get_bucket_location(&self, bucket: &str) -> S3Result<Option<String>> {
        self.with_bucket_mut(Op::GetBucketLocation, 0, bucket, |_| Ok(None))
    }

    async fn get_bucket_versioning(&self, bucket: &str) -> S3Result<VersioningStatus> {
        self.with_bucket_mut(Op::GetBucketVersioning, 0, bucket, |b| {
            Ok(match b.versioning {
                None => VersioningStatus::Unversioned,
                Some(true) => VersioningStatus::Enabled,
                Some(false) => VersioningStatus::Suspended,
            })
        })
    }

    async fn put_bucket_versioning(&self, bucket: &str, enabled: bool) -> S3Result<()> {
        self.with_bucket_mut(Op::PutBucketVersioning, 0, bucket, |b| {
            if b.versioning.is_none() {
                // Objects from before are each one version, `null`.
                for (key, o) in &b.objects {
                    b.versions.entry(key.clone()).or_default().push(Version {
                        id: "null".to_string(),
                        object: Some(o.clone()),
                        at: o.last_modified,
                    });
                }
            }
            b.versioning = Some(enabled);
            Ok(())
        })
    }

    async fn list_objects_v2(
        &self,
        bucket: &str,
        params: &ListObjectsParams,
    ) -> S3Result<ListObjectsOutput> {
        let after = params
            .continuation_token
            .as_deref()
            .or(params.start_after.as_deref());
        let (objects, common_prefixes, next) = self.list(
            Op::ListObjectsV2,
            bucket,
            &params.prefix,
            params.delimiter.as_deref(),
            params.max_keys,
            after,
        )?;
        Ok(ListObjectsOutput {
            objects,
            common_prefixes,
            next_continuation_token: next,
        })
    }

    async fn list_objects_v1(
        &self,
        bucket: &str,
        params: &ListObjectsV1Params,
    ) -> S3Result<ListObjectsV1Output> {
        let (objects, common_prefixes, next) = self.list(
            Op::ListObjectsV1,
            bucket,
            &params.prefix,
            params.delimiter.as_deref(),
            params.max_keys,
            params.marker.as_deref(),
        )?;
        Ok(ListObjectsV1Output {
            objects,
            common_prefixes,
            next_marker: next,
        })
    }

    async fn list_object_versions(
        &self,
        bucket: &str,
        params: &ListVersionsParams,
    ) -> S3Result<ListVersionsOutput> {
        self.with_bucket_mut(Op::ListObjectVersions, 0, bucket, |b| {
            Ok(list_versions(b, params))
        })
    }

    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<HeadObjectOutput> {
        self.with_bucket_mut(Op::HeadObject, 0, bucket, |b| {
            let (o, version_id) = b.object(Op::HeadObject, key, version_id).map_err(|e| {
                // A HEAD has no body: a missing key is a bare 404.
                if e.kind() == ErrorKind::NotFound {
                    err(Op::HeadObject, 404, S3ErrorCode::NotFound)
                } else {
                    e
                }
            })?;
            Ok(HeadObjectOutput {
                size: o.data.len() as u64,
                etag: Some(o.etag.clone()),
                last_modified: Some(o.last_modified),
                version_id,
                content_type: None,
            })
        })
    }

    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        params: &GetObjectParams,
    ) -> S3Result<GetObjectOutput> {
        let op = Op::GetObject;
        *(self.gets.lock().expect("gets lock"))
            .entry(key.to_string())
            .or_default() += 1;
        let out = self.with_bucket_mut(op, 0, bucket, |b| {
            let (o, version_id) = b.object(op, key, params.version_id.as_deref())?;
            if params.if_match.as_ref().is_some_and(|e| *e != o.etag) {
                return Err(err(op, 412, S3ErrorCode::PreconditionFailed));
            }
            if params.if_none_match.as_ref() == Some(&o.etag) {
                return Err(err(op, 304, S3ErrorCode::NotModified));
            }
            Ok(GetObjectOutput {
                body: slice(op, &o.data, params.range.as_ref())?,
                etag: Some(o.etag.clone()),
                object_size: o.data.len() as u64,
                last_modified: Some(o.last_modified),
                version_id,
            })
        })?;
        self.stats.received(op, out.body.len() as u64);
        Ok(out)
    }

    async fn put_object(&self, bucket: &str, key: &str, body: Bytes) -> S3Result<PutObjectOutput> {
        key_fits(Op::PutObject, key)?;
        let etag = quoted_md5(&[&body]);
        self.with_bucket_mut(Op::PutObject, body.len() as u64, bucket, |b| {
            let version_id = b.write(
                key,
                Object {
                    data: body,
                    etag: etag.clone(),
                    last_modified: now(),
                },
            );
            Ok(PutObjectOutput {
                etag: Some(etag),
                version_id,
            })
        })
    }

    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<DeleteObjectOutput> {
        key_fits(Op::DeleteObject, key)?;
        self.with_bucket_mut(Op::DeleteObject, 0, bucket, |b| {
            if let Some(id) = version_id {
                b.delete_version(key, id);
                return Ok(DeleteObjectOutput {
                    version_id: Some(id.to_string()),
                    delete_marker: false,
                });
            }
            let marker = b.delete(key);
            Ok(DeleteObjectOutput {
                delete_marker: marker.is_some(),
                version_id: marker,
            })
        })
    }

    async fn delete_objects(
        &self,
        bucket: &str,
        objects: &[ObjectIdentifier],
    ) -> S3Result<DeleteObjectsOutput> {
        if objects.len() > limits::MAX_DELETE_OBJECTS {
            return Err(S3Error::InvalidRequest {
                operation: "DeleteObjects",
                detail: "too many keys".to_string(),
            });
        }
        self.with_bucket_mut(Op::DeleteObjects, 0, bucket, |b| {
            for o in objects {
                match &o.version_id {
                    Some(id) => b.delete_version(&o.key, id),
                    None => {
                        b.delete(&o.key);
                    }
                }
            }
            Ok(DeleteObjectsOutput::default())
        })
    }

    async fn copy_object(
        &self,
        bucket: &str,
        key: &str,
        source: &CopySource,
    ) -> S3Result<CopyObjectOutput> {
        let op = Op::CopyObject;
        key_fits(op, key)?;
        let src = self.source(op, source)?;
        if src.data.len() as u64 > limits::MAX_PART_SIZE {
            return Err(err(op, 400, S3ErrorCode::InvalidRequest));
        }
        let now = now();
        self.with_bucket_mut(op, 0, bucket, |b| {
            // A copy of a multipart object is a plain object: its ETag is
            // the MD5 of its content.
            let etag = quoted_md5(&[&src.data]);
            let version_id = b.write(
                key,
                Object {
                    data: src.data,
                    etag: etag.clone(),
                    last_modified: now,
                },
            );
            Ok(CopyObjectOutput {
                etag: Some(etag),
                last_modified: Some(now),
                version_id,
            })
        })
    }

    async fn create_multipart_upload(&self, bucket: &str, key: &str) -> S3Result<String> {
        key_fits(Op::CreateMultipartUpload, key)?;
        let id = self.new_id();
        self.with_bucket_mut(Op::CreateMultipartUpload, 0, bucket, |b| {
            b.uploads.insert(
                id.clone(),
                Upload {
                    key: key.to_string(),
                    initiated: Some(SystemTime::now()),
                    parts: BTreeMap::new(),
                },
            );
            Ok(id)
        })
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> S3Result<String> {
        let op = Op::UploadPart;
        if !(1..=limits::MAX_PARTS).contains(&part_number) {
            return Err(err(op, 400, S3ErrorCode::InvalidArgument));
        }
        let sent = body.len() as u64;
        self.store_part(op, sent, bucket, key, upload_id, part_number, body)
    }

    async fn upload_part_copy(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source: &CopySource,
        range: Option<Range<u64>>,
    ) -> S3Result<String> {
        let op = Op::UploadPartCopy;
        let src = self.source(op, source)?;
        let body = slice(op, &src.data, range.as_ref())?;
        if range.is_some_and(|r| r.end > src.data.len() as u64) {
            return Err(err(op, 416, S3ErrorCode::InvalidRange));
        }
        self.store_part(op, 0, bucket, key, upload_id, part_number, body)
    }

    async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> S3Result<PutObjectOutput> {
        let op = Op::CompleteMultipartUpload;
        self.with_bucket_mut(op, 0, bucket, |b| {
            let u = b
                .uploads
                .get(upload_id)
                .filter(|u| u.key == key)
                .ok_or_else(|| err(op, 404, S3ErrorCode::NoSuchUpload))?;
            if parts.is_empty()
                || parts
                    .windows(2)
                    .any(|w| w[0].part_number >= w[1].part_number)
            {
                return Err(err(op, 400, S3ErrorCode::InvalidPartOrder));
            }
            let mut data = BytesMut::new();
            let mut digests = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                let (body, etag) = u
                    .parts
                    .get(&p.part_number)
                    .filter(|(_, e)| *e == p.etag)
                    .ok_or_else(|| err(op, 400, S3ErrorCode::InvalidPart))?;
                if i + 1 < parts.len() && (body.len() as u64) < limits::MIN_PART_SIZE {
                    return Err(err(op, 400, S3ErrorCode::EntityTooSmall));
                }
                data.extend_from_slice(body);
                digests.push(hex::decode(etag.trim_matches('"')).expect("our own etags"));
            }
            let refs: Vec<&[u8]> = digests.iter().map(Vec::as_slice).collect();
            let md5 = quoted_md5(&refs);
            let etag = format!("{}-{}\"", &md5[..md5.len() - 1], parts.len());
            b.uploads.remove(upload_id);
            let version_id = b.write(
                key,
                Object {
                    data: data.freeze(),
                    etag: etag.clone(),
                    last_modified: now(),
                },
            );
            Ok(PutObjectOutput {
                etag: Some(etag),
                version_id,
            })
        })
    }

    async fn abort_multipart_upload(
        &self,
        bucket: &str,
        _key: &str,
        upload_id: &str,
    ) -> S3Result<()> {
        let op = Op::AbortMultipartUpload;
        self.with_bucket_mut(op, 0, bucket, |b| {
            b.uploads
                .remove(upload_id)
                .map(drop)
                .ok_or_else(|| err(op, 404, S3ErrorCode::NoSuchUpload))
        })
    }

    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number_marker: Option<u32>,
    ) -> S3Result<ListPartsOutput> {
        let op = Op::ListParts;
        self.with_bucket_mut(op, 0, bucket, |b| {
            let u = b
                .uploads
                .get(upload_id)
                .filter(|u| u.key == key)
                .ok_or_else(|| err(op, 404, S3ErrorCode::NoSuchUpload))?;
            let from = part_number_marker.unwrap_or(0);
            Ok(ListPartsOutput {
                parts: u
                    .parts
                    .range(from + 1..)
                    .map(|(n, (body, etag))| PartInfo {
                        part_number: *n,
                        etag: Some(etag.clone()),
                        size: body.len() as u64,
                    })
                    .collect(),
                next_part_number_marker: None,
            })
        })
    }

    async fn list_multipart_uploads(
        &self,
        bucket: &str,
        params: &ListUploadsParams,
    ) -> S3Result<ListUploadsOutput> {
        self.with_bucket_mut(Op::ListMultipartUploads, 0, bucket, |b| {
            let mut uploads: Vec<UploadInfo> = b
                .uploads
                .iter()
                .filter(|(_, u)| u.key.starts_with(&params.prefix))
                .map(|(id, u)| UploadInfo {
                    key: u.key.clone(),
                    upload_id: id.clone(),
                    initiated: u.initiated,
                })
                .collect();
            uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
            Ok(ListUploadsOutput {
                uploads,
                next_key_marker: None,
                next_upload_id_marker: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[tokio::test]
    async fn listings_paginate_and_group() {
        let c = MemoryClient::with_bucket("b");
        for k in ["a/1", "a/2", "b", "c/x/y", "c/z", "d"] {
            c.put("b", k, "x");
        }
        let mut seen = Vec::new();
        let mut params = ListObjectsParams {
            delimiter: Some("/".into()),
            max_keys: Some(2),
            ..Default::default()
        };
        loop {
            let page = c.list_objects_v2("b", &params).await.unwrap();
            seen.extend(page.common_prefixes);
            seen.extend(page.objects.into_iter().map(|o| o.key));
            match page.next_continuation_token {
                Some(t) => params.continuation_token = Some(t),
                None => break,
            }
        }
        seen.sort();
        assert_eq!(seen, ["a/", "b", "c/", "d"]);
        let under_c = c
            .list_objects_v2(
                "b",
                &ListObjectsParams {
                    prefix: "c/".into(),
                    delimiter: Some("/".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(under_c.common_prefixes, ["c/x/"]);
        assert_eq!(under_c.objects.len(), 1);
    }

    #[tokio::test]
    async fn versions_markers_and_their_listing() {
        let c = MemoryClient::with_bucket("b");
        c.put("b", "old", "before versioning");
        c.put_bucket_versioning("b", true).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..3 {
            let out = c
                .put_object("b", "k", Bytes::from(format!("v{i}")))
                .await
                .unwrap();
            ids.push(out.version_id.expect("a version id"));
        }
        c.put("b", "k/under", "x");
        let del = c.delete_object("b", "k", None).await.unwrap();
        assert!(del.delete_marker);
        let gone = c.get_object("b", "k", &GetObjectParams::default()).await;
        assert_eq!(gone.unwrap_err().kind(), ErrorKind::NotFound);
        let v1 = GetObjectParams {
            version_id: Some(ids[1].clone()),
            ..Default::default()
        };
        assert_eq!(&c.get_object("b", "k", &v1).await.unwrap().body[..], b"v1");
        let marker = GetObjectParams {
            version_id: del.version_id.clone(),
            ..Default::default()
        };
        assert!(c.get_object("b", "k", &marker).await.is_err());

        let all = c
            .list_object_versions(
                "b",
                &ListVersionsParams {
                    delimiter: Some("/".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(all.common_prefixes, ["k/"]);
        let k: Vec<(&str, bool, bool)> = all
            .versions
            .iter()
            .filter(|v| v.key == "k")
            .map(|v| {
                (
                    v.version_id.as_deref().unwrap(),
                    v.is_latest,
                    v.is_delete_marker,
                )
            })
            .collect();
        let marker_id = del.version_id.as_deref().unwrap();
        assert_eq!(
            k,
            [
                (marker_id, true, true),
                (ids[2].as_str(), false, false),
                (ids[1].as_str(), false, false),
                (ids[0].as_str(), false, false)
            ],
            "newest first"
        );
        let old: Vec<_> = all.versions.iter().filter(|v| v.key == "old").collect();
        assert_eq!(old[0].version_id.as_deref(), Some("null"), "from before");
        // Pages of one entry, resumed from the markers, give the same.
        let mut params = ListVersionsParams {
            delimiter: Some("/".into()),
            max_keys: Some(1),
            ..Default::default()
        };
        let (mut versions, mut prefixes) = (Vec::new(), Vec::new());
        loop {
            let page = c.list_object_versions("b", &params).await.unwrap();
            versions.extend(page.versions);
            prefixes.extend(page.common_prefixes);
            match page.next_key_marker {
                Some(k) => {
                    params.key_marker = Some(k);
                    params.version_id_marker = page.next_version_id_marker;
                }
                None => break,
            }
        }
        assert_eq!(versions, all.versions);
        assert_eq!(prefixes, all.common_prefixes);

        // Suspended: writes replace the `null` version; removing the
        // newest version makes the one before current again.
        c.put_bucket_versioning("b", false).await.unwrap();
        c.put("b", "s", "one");
        c.put("b", "s", "two");
        let s_versions = c
            .list_object_versions(
                "b",
                &ListVersionsParams {
                    prefix: "s".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(s_versions.versions.len(), 1);
        c.delete_object("b", "k", Some(marker_id)).await.unwrap();
        let back = c
            .get_object("b", "k", &GetObjectParams::default())
            .await
            .unwrap();
        assert_eq!(&back.body[..], b"v2");
        assert_eq!(back.version_id.as_deref(), Some(ids[2].as_str()));
    }

    #[tokio::test]
    async fn conditional_and_ranged_reads() {
        let c = MemoryClient::with_bucket("b");
        c.put("b", "k", "hello");
        let h = c.head_object("b", "k", None).await.unwrap();
        let get = |range, if_match| GetObjectParams {
            range,
            if_match,
            ..Default::default()
        };
        let out = c
            .get_object("b", "k", &get(Some(1..3), h.etag.clone()))
            .await
            .unwrap();
        assert_eq!(&out.body[..], b"el");
        let tail = c.get_object("b", "k", &get(Some(3..99), None)).await;
        assert_eq!(&tail.unwrap().body[..], b"lo");
        let past = c.get_object("b", "k", &get(Some(5..9), None)).await;
        assert_eq!(past.unwrap_err().kind(), crate::s3::ErrorKind::InvalidRange);
        c.put("b", "k", "other");
        let stale = c.get_object("b", "k", &get(None, h.etag)).await;
        assert_eq!(
            stale.unwrap_err().kind(),
            crate::s3::ErrorKind::PreconditionFailed
        );
    }

    #[tokio::test]
    async fn multipart_checks_part_sizes_and_etags() {
        let c = MemoryClient::with_bucket("b");
        let id = c.create_multipart_upload("b", "k").await.unwrap();
        let small = c
            .upload_part("b", "k", &id, 1, Bytes::from(vec![1u8; 10]))
            .await
            .unwrap();
        let last = c
            .upload_part("b", "k", &id, 2, Bytes::from(vec![2u8; 10]))
            .await
            .unwrap();
        let parts = [
            CompletedPart {
                part_number: 1,
                etag: small,
            },
            CompletedPart {
                part_number: 2,
                etag: last.clone(),
            },
        ];
        let e = c.complete_multipart_upload("b", "k", &id, &parts).await;
        assert_eq!(e.unwrap_err().code(), Some(&S3ErrorCode::EntityTooSmall));
        let big = c
            .upload_part("b", "k", &id, 1, Bytes::from(vec![1u8; 5 * MIB]))
            .await
            .unwrap();
        let parts = [
            CompletedPart {
                part_number: 1,
                etag: big,
            },
            CompletedPart {
                part_number: 2,
                etag: last,
            },
        ];
        let out = c
            .complete_multipart_upload("b", "k", &id, &parts)
            .await
            .unwrap();
        assert!(out.etag.unwrap().ends_with("-2\""));
        assert_eq!(c.objects("b")["k"].len(), 5 * MIB + 10);
        assert_eq!(c.open_uploads("b"), 0);
    }
}
