//! The `ObjectClient` trait: every S3 operation bladefs uses, with typed
//! parameters and results. The HTTP implementation lives in `http.rs`; the
//! filesystem core only sees this trait, so tests can put a mock or a
//! fault-injecting wrapper in its place.

use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::error::S3Error;

pub type S3Result<T> = Result<T, S3Error>;

/// S3's limits that callers must respect.
pub mod limits {
    /// Keys a single DeleteObjects request may name.
    pub const MAX_DELETE_OBJECTS: usize = 1000;
    /// Longest key, in UTF-8 bytes.
    pub const MAX_KEY_LEN: usize = 1024;
    /// Parts in one multipart upload.
    pub const MAX_PARTS: u32 = 10_000;
    /// Smallest part but the last.
    pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
    /// Largest part, and largest object a single PUT or PUT Copy may write.
    pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    pub name: String,
    pub creation_date: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
    /// As the server sent it, quotes included.
    pub etag: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListObjectsParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// At most 1000 are returned whatever is asked.
    pub max_keys: Option<u32>,
    pub continuation_token: Option<String>,
    pub start_after: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListObjectsOutput {
    pub objects: Vec<ObjectInfo>,
    /// With a delimiter: the "directories" (full prefixes, delimiter included).
    pub common_prefixes: Vec<String>,
    /// Present when the listing continues: pass it back for the next page.
    pub next_continuation_token: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListObjectsV1Params {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub max_keys: Option<u32>,
    pub marker: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListObjectsV1Output {
    pub objects: Vec<ObjectInfo>,
    pub common_prefixes: Vec<String>,
    /// Present when the listing continues. Servers omit NextMarker without a
    /// delimiter; the client fills it in from the last key then.
    pub next_marker: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadObjectOutput {
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
    pub version_id: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct GetObjectParams {
    /// Bytes `start..end` of the object; `None` for all of it. Callers bound
    /// the range: the body is returned whole.
    pub range: Option<Range<u64>>,
    /// Fail with PreconditionFailed unless the object still has this ETag.
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub version_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct GetObjectOutput {
    pub body: Bytes,
    pub etag: Option<String>,
    /// Size of the whole object (from Content-Range for a ranged GET).
    pub object_size: u64,
    pub last_modified: Option<SystemTime>,
    pub version_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutObjectOutput {
    pub etag: Option<String>,
    pub version_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteObjectOutput {
    pub version_id: Option<String>,
    pub delete_marker: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentifier {
    pub key: String,
    pub version_id: Option<String>,
}

impl ObjectIdentifier {
    pub fn key(key: impl Into<String>) -> Self {
        ObjectIdentifier {
            key: key.into(),
            version_id: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteObjectError {
    pub key: String,
    pub version_id: Option<String>,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteObjectsOutput {
    /// Filled only when not quiet; the client always asks for quiet mode,
    /// so this is empty unless the server ignores Quiet.
    pub deleted: Vec<ObjectIdentifier>,
    /// Keys that were not deleted, each with the server's reason.
    pub errors: Vec<DeleteObjectError>,
}

/// The source of PUT Object Copy and UploadPartCopy.
#[derive(Debug, Clone)]
pub struct CopySource {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    /// Copy only if the source still has this ETag (x-amz-copy-source-if-match).
    pub if_match: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyObjectOutput {
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
    pub version_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub part_number: u32,
    pub etag: Option<String>,
    pub size: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ListPartsOutput {
    pub parts: Vec<PartInfo>,
    pub next_part_number_marker: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct ListUploadsParams {
    pub prefix: String,
    pub key_marker: Option<String>,
    pub upload_id_marker: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<SystemTime>,
}

#[derive(Debug, Clone, Default)]
pub struct ListUploadsOutput {
    pub uploads: Vec<UploadInfo>,
    /// Both present when the listing continues.
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersioningStatus {
    /// Versioning was never enabled on the bucket.
    Unversioned,
    Enabled,
    Suspended,
}

#[derive(Debug, Clone, Default)]
pub struct ListVersionsParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub max_keys: Option<u32>,
    pub key_marker: Option<String>,
    pub version_id_marker: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub key: String,
    pub version_id: Option<String>,
    pub is_latest: bool,
    pub is_delete_marker: bool,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
}

#[derive(Debug, Clone, Default)]
pub struct ListVersionsOutput {
    /// Versions and delete markers, by key, newest first within a key.
    pub versions: Vec<ObjectVersion>,
    pub common_prefixes: Vec<String>,
    /// Both present (the version marker possibly empty) when the listing continues.
    pub next_key_marker: Option<String>,
    pub next_version_id_marker: Option<String>,
}

/// Every S3 operation bladefs uses. Buckets are named per call, so one
/// client serves a mount of every bucket.
#[async_trait]
pub trait ObjectClient: Send + Sync + 'static {
    async fn list_buckets(&self) -> S3Result<Vec<BucketInfo>>;
    async fn head_bucket(&self, bucket: &str) -> S3Result<()>;
    async fn create_bucket(&self, bucket: &str) -> S3Result<()>;
    async fn delete_bucket(&self, bucket: &str) -> S3Result<()>;
    /// The bucket's region; `None` when the server sends an empty constraint.
    async fn get_bucket_location(&self, bucket: &str) -> S3Result<Option<String>>;
    async fn get_bucket_versioning(&self, bucket: &str) -> S3Result<VersioningStatus>;
    async fn put_bucket_versioning(&self, bucket: &str, enabled: bool) -> S3Result<()>;

    async fn list_objects_v2(
        &self,
        bucket: &str,
        params: &ListObjectsParams,
    ) -> S3Result<ListObjectsOutput>;
    async fn list_objects_v1(
        &self,
        bucket: &str,
        params: &ListObjectsV1Params,
    ) -> S3Result<ListObjectsV1Output>;
    async fn list_object_versions(
        &self,
        bucket: &str,
        params: &ListVersionsParams,
    ) -> S3Result<ListVersionsOutput>;

    /// One page of a listing through whichever API version the server
    /// supports (V2 by default; V1 when configured, or once the server has
    /// answered V2 with NotImplemented). The continuation token is opaque.
    async fn list_objects(
        &self,
        bucket: &str,
        params: &ListObjectsParams,
    ) -> S3Result<ListObjectsOutput> {
        self.list_objects_v2(bucket, params).await
    }

    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<HeadObjectOutput>;
    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        params: &GetObjectParams,
    ) -> S3Result<GetObjectOutput>;
    /// A single PUT, its body guarded by a digest (see `S3Client`).
    async fn put_object(&self, bucket: &str, key: &str, body: Bytes) -> S3Result<PutObjectOutput>;
    /// [`ObjectClient::put_object`] with a Content-Type (directory markers
    /// are `application/x-directory`, as s3fs and other tools expect).
    /// Stores that keep no types (the in-memory one) may ignore it.
    async fn put_object_typed(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        _content_type: &str,
    ) -> S3Result<PutObjectOutput> {
        self.put_object(bucket, key, body).await
    }
    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<DeleteObjectOutput>;
    /// At most [`limits::MAX_DELETE_OBJECTS`] keys; more is refused before sending.
    async fn delete_objects(
        &self,
        bucket: &str,
        objects: &[ObjectIdentifier],
    ) -> S3Result<DeleteObjectsOutput>;
    async fn copy_object(
        &self,
        bucket: &str,
        key: &str,
        source: &CopySource,
    ) -> S3Result<CopyObjectOutput>;

    /// Returns the upload id.
    async fn create_multipart_upload(&self, bucket: &str, key: &str) -> S3Result<String>;
    /// Returns the part's ETag. The body is guarded as for `put_object`.
    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> S3Result<String>;
    /// Returns the part's ETag. `range` is `start..end` of the source.
    async fn upload_part_copy(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source: &CopySource,
        range: Option<Range<u64>>,
    ) -> S3Result<String>;
    async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> S3Result<PutObjectOutput>;
    async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> S3Result<()>;
    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number_marker: Option<u32>,
    ) -> S3Result<ListPartsOutput>;
    async fn list_multipart_uploads(
        &self,
        bucket: &str,
        params: &ListUploadsParams,
    ) -> S3Result<ListUploadsOutput>;
}
