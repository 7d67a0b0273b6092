//! The S3 operations of [`ObjectClient`] over the request pipeline of
//! `http`: each builds its request, sends it through `execute`, and reads
//! the answer.

use std::ops::Range;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;

use super::client::*;
use super::config::ListApi;
use super::error::{S3Error, S3ErrorCode};
use super::http::*;
use super::stats::Op;
use super::{sign, xml};
use std::time::Instant;

fn range_header(range: &Range<u64>) -> String {
    format!("bytes={}-{}", range.start, range.end - 1)
}

fn check_range(op: Op, range: &Range<u64>) -> Result<(), S3Error> {
    if range.start >= range.end {
        return Err(S3Error::InvalidRequest {
            operation: op.name(),
            detail: format!("empty byte range {range:?}"),
        });
    }
    Ok(())
}

fn copy_source_header(source: &CopySource) -> String {
    let mut value = format!(
        "/{}/{}",
        sign::uri_encode(&source.bucket, false),
        sign::uri_encode(&source.key, true)
    );
    if let Some(v) = &source.version_id {
        value.push_str("?versionId=");
        value.push_str(&sign::uri_encode(v, false));
    }
    value
}

/// Parses `bytes START-END/TOTAL`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, total.parse().ok()?))
}

impl S3Client {
    /// Whether the server checks `x-amz-checksum-crc32c` (what
    /// [`PayloadSigning::Crc32c`](super::config::PayloadSigning) relies
    /// on): a one-byte PUT to `key` with a wrong checksum must be refused.
    /// If it is stored instead, it is deleted and the answer is `false`.
    pub async fn checks_crc32c(&self, bucket: &str, key: &str) -> S3Result<bool> {
        use base64::Engine;
        let body = Bytes::from_static(b"?");
        let wrong = (crc32c::crc32c(&body) ^ 1).to_be_bytes();
        let sent = self
            .execute(
                Request::new(Op::PutObject, Method::PUT, Some(bucket), Some(key))
                    .header(
                        "x-amz-checksum-crc32c",
                        base64::engine::general_purpose::STANDARD.encode(wrong),
                    )
                    .body(Body::Data(body)),
            )
            .await;
        match sent {
            Err(S3Error::Service(e))
                if matches!(e.code, S3ErrorCode::BadDigest | S3ErrorCode::InvalidDigest) =>
            {
                Ok(true)
            }
            Err(e) => Err(e),
            Ok(_) => {
                self.delete_object(bucket, key, None).await?;
                Ok(false)
            }
        }
    }

    /// A single PUT, with a Content-Type when given.
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: Option<&str>,
    ) -> S3Result<PutObjectOutput> {
        let resp = self
            .execute(
                Request::new(Op::PutObject, Method::PUT, Some(bucket), Some(key))
                    .header_opt("content-type", content_type)
                    .body(Body::Data(body)),
            )
            .await?;
        Ok(PutObjectOutput {
            etag: resp.header("etag"),
            version_id: resp.header("x-amz-version-id"),
        })
    }
}

#[async_trait]
impl ObjectClient for S3Client {
    async fn list_buckets(&self) -> S3Result<Vec<BucketInfo>> {
        let op = Op::ListBuckets;
        let resp = self
            .execute(Request::new(op, Method::GET, None, None))
            .await?;
        let doc: xml::ListAllMyBucketsResult = Self::parse(op, &resp.body)?;
        Ok(doc
            .buckets
            .bucket
            .into_iter()
            .map(|b| BucketInfo {
                name: b.name,
                creation_date: b.creation_date.as_deref().and_then(xml::parse_timestamp),
            })
            .collect())
    }

    async fn head_bucket(&self, bucket: &str) -> S3Result<()> {
        let op = Op::HeadBucket;
        match self
            .execute(Request::new(op, Method::HEAD, Some(bucket), None))
            .await
        {
            Ok(_) => Ok(()),
            // A HEAD 404 has no body to say which thing is missing.
            Err(S3Error::Service(mut e)) if e.status == 404 => {
                e.code = S3ErrorCode::NoSuchBucket;
                e.message = format!("bucket {bucket:?} does not exist");
                Err(S3Error::Service(e))
            }
            Err(e) => Err(e),
        }
    }

    async fn create_bucket(&self, bucket: &str) -> S3Result<()> {
        self.execute(Request::new(
            Op::CreateBucket,
            Method::PUT,
            Some(bucket),
            None,
        ))
        .await
        .map(drop)
    }

    async fn delete_bucket(&self, bucket: &str) -> S3Result<()> {
        self.execute(Request::new(
            Op::DeleteBucket,
            Method::DELETE,
            Some(bucket),
            None,
        ))
        .await
        .map(drop)
    }

    async fn get_bucket_location(&self, bucket: &str) -> S3Result<Option<String>> {
        let op = Op::GetBucketLocation;
        let resp = self
            .execute(Request::new(op, Method::GET, Some(bucket), None).query("location", ""))
            .await?;
        if resp.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let doc: xml::LocationConstraint = Self::parse(op, &resp.body)?;
        Ok(doc.value.filter(|v| !v.trim().is_empty()))
    }

    async fn get_bucket_versioning(&self, bucket: &str) -> S3Result<VersioningStatus> {
        let op = Op::GetBucketVersioning;
        let resp = self
            .execute(Request::new(op, Method::GET, Some(bucket), None).query("versioning", ""))
            .await?;
        let doc: xml::VersioningConfiguration = Self::parse(op, &resp.body)?;
        match doc.status.as_deref().map(str::trim) {
            None | Some("") => Ok(VersioningStatus::Unversioned),
            Some("Enabled") => Ok(VersioningStatus::Enabled),
            Some("Suspended") => Ok(VersioningStatus::Suspended),
            Some(other) => Err(S3Error::InvalidResponse {
                operation: op.name(),
                detail: format!("unknown versioning status {other:?}"),
            }),
        }
    }

    async fn put_bucket_versioning(&self, bucket: &str, enabled: bool) -> S3Result<()> {
        let status = if enabled { "Enabled" } else { "Suspended" };
        self.execute(
            Request::new(Op::PutBucketVersioning, Method::PUT, Some(bucket), None)
                .query("versioning", "")
                .body(Body::Xml(xml::versioning_body(status).into())),
        )
        .await
        .map(drop)
    }

    async fn list_objects_v2(
        &self,
        bucket: &str,
        params: &ListObjectsParams,
    ) -> S3Result<ListObjectsOutput> {
        let op = Op::ListObjectsV2;
        let resp = self
            .execute(
                Request::new(op, Method::GET, Some(bucket), None)
                    .query("list-type", "2")
                    .query("prefix", params.prefix.clone())
                    .query_opt("delimiter", params.delimiter.clone())
                    .query_opt("max-keys", params.max_keys.map(|m| m.to_string()))
                    .query_opt("continuation-token", params.continuation_token.clone())
                    .query_opt("start-after", params.start_after.clone())
                    .query_opt("encoding-type", self.list_encoding()),
            )
            .await?;
        let doc: xml::ListBucketResult = Self::parse(op, &resp.body)?;
        let encoded = self.listing_encoded(op, doc.encoding_type.as_deref(), doc.values());
        let (objects, common_prefixes) =
            Self::objects_from(op, encoded, doc.contents, doc.common_prefixes)?;
        let next_continuation_token = match (doc.is_truncated, doc.next_continuation_token) {
            (true, Some(token)) if !token.is_empty() => Some(token),
            (true, _) => {
                return Err(S3Error::InvalidResponse {
                    operation: op.name(),
                    detail: "truncated listing without NextContinuationToken".to_string(),
                });
            }
            (false, _) => None,
        };
        Ok(ListObjectsOutput {
            objects,
            common_prefixes,
            next_continuation_token,
        })
    }

    async fn list_objects_v1(
        &self,
        bucket: &str,
        params: &ListObjectsV1Params,
    ) -> S3Result<ListObjectsV1Output> {
        let op = Op::ListObjectsV1;
        let resp = self
            .execute(
                Request::new(op, Method::GET, Some(bucket), None)
                    .query("prefix", params.prefix.clone())
                    .query_opt("delimiter", params.delimiter.clone())
                    .query_opt("max-keys", params.max_keys.map(|m| m.to_string()))
                    .query_opt("marker", params.marker.clone())
                    .query_opt("encoding-type", self.list_encoding()),
            )
            .await?;
        let doc: xml::ListBucketResult = Self::parse(op, &resp.body)?;
        let encoded = self.listing_encoded(op, doc.encoding_type.as_deref(), doc.values());
        let next_marker = match doc.next_marker.filter(|m| !m.is_empty()) {
            Some(m) => Some(Self::decode(op, encoded, m)?),
            None => None,
        };
        let (objects, common_prefixes) =
            Self::objects_from(op, encoded, doc.contents, doc.common_prefixes)?;
        let next_marker = if doc.is_truncated {
            // Without a delimiter servers leave NextMarker out; the last key
            // (or prefix) returned is where the next page starts.
            let last = objects
                .last()
                .map(|o| o.key.clone())
                .into_iter()
                .chain(common_prefixes.last().cloned())
                .max();
            match next_marker.or(last) {
                Some(m) => Some(m),
                None => {
                    return Err(S3Error::InvalidResponse {
                        operation: op.name(),
                        detail: "truncated empty listing".to_string(),
                    });
                }
            }
        } else {
            None
        };
        Ok(ListObjectsV1Output {
            objects,
            common_prefixes,
            next_marker,
        })
    }

    async fn list_objects(
        &self,
        bucket: &str,
        params: &ListObjectsParams,
    ) -> S3Result<ListObjectsOutput> {
        match self.config.list_api {
            ListApi::V1 => self.list_v1_as_v2(bucket, params).await,
            ListApi::V2 => self.list_objects_v2(bucket, params).await,
            ListApi::Auto if self.list_v1_only.load(Ordering::Relaxed) => {
                self.list_v1_as_v2(bucket, params).await
            }
            ListApi::Auto => match self.list_objects_v2(bucket, params).await {
                Err(e) if e.kind() == super::error::ErrorKind::NotImplemented => {
                    tracing::info!("server lacks ListObjectsV2; using ListObjects (V1)");
                    self.list_v1_only.store(true, Ordering::Relaxed);
                    self.list_v1_as_v2(bucket, params).await
                }
                other => other,
            },
        }
    }

    async fn list_object_versions(
        &self,
        bucket: &str,
        params: &ListVersionsParams,
    ) -> S3Result<ListVersionsOutput> {
        let op = Op::ListObjectVersions;
        let resp = self
            .execute(
                Request::new(op, Method::GET, Some(bucket), None)
                    .query("versions", "")
                    .query("prefix", params.prefix.clone())
                    .query_opt("delimiter", params.delimiter.clone())
                    .query_opt("max-keys", params.max_keys.map(|m| m.to_string()))
                    .query_opt("key-marker", params.key_marker.clone())
                    .query_opt("version-id-marker", params.version_id_marker.clone())
                    .query_opt("encoding-type", self.list_encoding()),
            )
            .await?;
        let doc: xml::ListVersionsResult = Self::parse(op, &resp.body)?;
        let encoded = self.listing_encoded(op, doc.encoding_type.as_deref(), doc.values());
        let mut versions = Vec::with_capacity(doc.versions.len() + doc.delete_markers.len());
        for (entries, is_delete_marker) in [(doc.versions, false), (doc.delete_markers, true)] {
            for v in entries {
                versions.push(ObjectVersion {
                    key: Self::decode(op, encoded, v.key)?,
                    version_id: v.version_id,
                    is_latest: v.is_latest,
                    is_delete_marker,
                    size: v.size,
                    etag: v.etag.map(quoted_etag),
                    last_modified: v.last_modified.as_deref().and_then(xml::parse_timestamp),
                });
            }
        }
        // Versions and delete markers arrive interleaved; restore S3's order:
        // by key, the latest first, then newest to oldest.
        versions.sort_by(|a, b| {
            a.key
                .cmp(&b.key)
                .then(b.is_latest.cmp(&a.is_latest))
                .then(b.last_modified.cmp(&a.last_modified))
        });
        let common_prefixes = doc
            .common_prefixes
            .into_iter()
            .map(|p| Self::decode(op, encoded, p.prefix))
            .collect::<Result<Vec<_>, _>>()?;
        let (next_key_marker, next_version_id_marker) = if doc.is_truncated {
            let key = doc
                .next_key_marker
                .ok_or_else(|| S3Error::InvalidResponse {
                    operation: op.name(),
                    detail: "truncated listing without NextKeyMarker".to_string(),
                })?;
            (
                Some(Self::decode(op, encoded, key)?),
                Some(doc.next_version_id_marker.unwrap_or_default()),
            )
        } else {
            (None, None)
        };
        Ok(ListVersionsOutput {
            versions,
            common_prefixes,
            next_key_marker,
            next_version_id_marker,
        })
    }

    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<HeadObjectOutput> {
        let op = Op::HeadObject;
        let resp = self
            .execute(
                Request::new(op, Method::HEAD, Some(bucket), Some(key))
                    .query_opt("versionId", version_id),
            )
            .await?;
        let size = resp
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| S3Error::InvalidResponse {
                operation: op.name(),
                detail: "HEAD without Content-Length".to_string(),
            })?;
        Ok(HeadObjectOutput {
            size,
            etag: resp.header("etag"),
            last_modified: resp.last_modified(),
            version_id: resp.header("x-amz-version-id"),
            content_type: resp.header("content-type"),
        })
    }

    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        params: &GetObjectParams,
    ) -> S3Result<GetObjectOutput> {
        let op = Op::GetObject;
        if let Some(r) = &params.range {
            check_range(op, r)?;
        }
        let resp = self
            .execute(
                Request::new(op, Method::GET, Some(bucket), Some(key))
                    .query_opt("versionId", params.version_id.clone())
                    .header_opt("range", params.range.as_ref().map(range_header))
                    .header_opt("if-match", params.if_match.clone())
                    .header_opt("if-none-match", params.if_none_match.clone()),
            )
            .await?;
        let object_size = match resp.header("content-range") {
            Some(cr) => {
                let (start, end, total) =
                    parse_content_range(&cr).ok_or_else(|| S3Error::InvalidResponse {
                        operation: op.name(),
                        detail: format!("bad Content-Range {cr:?}"),
                    })?;
                if end + 1 - start != resp.body.len() as u64 {
                    return Err(S3Error::InvalidResponse {
                        operation: op.name(),
                        detail: format!(
                            "Content-Range {cr:?} but {} bytes received",
                            resp.body.len()
                        ),
                    });
                }
                total
            }
            None => resp.body.len() as u64,
        };
        Ok(GetObjectOutput {
            etag: resp.header("etag"),
            last_modified: resp.last_modified(),
            version_id: resp.header("x-amz-version-id"),
            object_size,
            body: resp.body,
        })
    }

    async fn put_object(&self, bucket: &str, key: &str, body: Bytes) -> S3Result<PutObjectOutput> {
        self.put(bucket, key, body, None).await
    }

    async fn put_object_typed(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> S3Result<PutObjectOutput> {
        self.put(bucket, key, body, Some(content_type)).await
    }

    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<DeleteObjectOutput> {
        let resp = self
            .execute(
                Request::new(Op::DeleteObject, Method::DELETE, Some(bucket), Some(key))
                    .query_opt("versionId", version_id),
            )
            .await?;
        Ok(DeleteObjectOutput {
            version_id: resp.header("x-amz-version-id"),
            delete_marker: resp.header("x-amz-delete-marker").as_deref() == Some("true"),
        })
    }

    async fn delete_objects(
        &self,
        bucket: &str,
        objects: &[ObjectIdentifier],
    ) -> S3Result<DeleteObjectsOutput> {
        let op = Op::DeleteObjects;
        if objects.is_empty() || objects.len() > limits::MAX_DELETE_OBJECTS {
            return Err(S3Error::InvalidRequest {
                operation: op.name(),
                detail: format!(
                    "{} keys given; one request takes 1 to {}",
                    objects.len(),
                    limits::MAX_DELETE_OBJECTS
                ),
            });
        }
        let pairs: Vec<(String, Option<String>)> = objects
            .iter()
            .map(|o| (o.key.clone(), o.version_id.clone()))
            .collect();
        let resp = self
            .execute(
                Request::new(op, Method::POST, Some(bucket), None)
                    .query("delete", "")
                    .body(Body::Xml(xml::delete_objects_body(&pairs, true).into())),
            )
            .await?;
        let doc: xml::DeleteResult = Self::parse(op, &resp.body)?;
        Ok(DeleteObjectsOutput {
            deleted: doc
                .deleted
                .into_iter()
                .map(|d| ObjectIdentifier {
                    key: d.key,
                    version_id: d.version_id,
                })
                .collect(),
            errors: doc
                .errors
                .into_iter()
                .map(|e| DeleteObjectError {
                    key: e.key,
                    version_id: e.version_id,
                    code: e.code.unwrap_or_default(),
                    message: e.message.unwrap_or_default(),
                })
                .collect(),
        })
    }

    async fn copy_object(
        &self,
        bucket: &str,
        key: &str,
        source: &CopySource,
    ) -> S3Result<CopyObjectOutput> {
        let op = Op::CopyObject;
        Self::check_key(op, &source.key)?;
        let resp = self
            .execute(
                Request::new(op, Method::PUT, Some(bucket), Some(key))
                    .header("x-amz-copy-source", copy_source_header(source))
                    .header_opt("x-amz-copy-source-if-match", source.if_match.clone())
                    .error_in_200(),
            )
            .await?;
        let doc: xml::CopyResult = Self::parse(op, &resp.body)?;
        Ok(CopyObjectOutput {
            etag: doc.etag.map(quoted_etag),
            last_modified: doc.last_modified.as_deref().and_then(xml::parse_timestamp),
            version_id: resp.header("x-amz-version-id"),
        })
    }

    async fn create_multipart_upload(&self, bucket: &str, key: &str) -> S3Result<String> {
        let op = Op::CreateMultipartUpload;
        let started = Instant::now();
        // Retried like an idempotent request: a write must not fail because
        // one answer was lost. An upload an earlier attempt created is
        // aborted below rather than left to accumulate.
        let (result, sent) = self
            .execute_counted(
                Request::new(op, Method::POST, Some(bucket), Some(key)).query("uploads", ""),
            )
            .await;
        let doc: xml::InitiateMultipartUploadResult = Self::parse(op, &result?.body)?;
        if sent > 1 {
            self.abort_lost_creates(bucket, key, &doc.upload_id, started.elapsed())
                .await;
        }
        Ok(doc.upload_id)
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
        let resp = self
            .execute(
                Request::new(op, Method::PUT, Some(bucket), Some(key))
                    .query("partNumber", part_number.to_string())
                    .query("uploadId", upload_id)
                    .body(Body::Data(body)),
            )
            .await?;
        resp.header("etag").ok_or_else(|| S3Error::InvalidResponse {
            operation: op.name(),
            detail: "UploadPart answer without ETag".to_string(),
        })
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
        Self::check_key(op, &source.key)?;
        if let Some(r) = &range {
            check_range(op, r)?;
        }
        let resp = self
            .execute(
                Request::new(op, Method::PUT, Some(bucket), Some(key))
                    .query("partNumber", part_number.to_string())
                    .query("uploadId", upload_id)
                    .header("x-amz-copy-source", copy_source_header(source))
                    .header_opt("x-amz-copy-source-range", range.as_ref().map(range_header))
                    .header_opt("x-amz-copy-source-if-match", source.if_match.clone())
                    .error_in_200(),
            )
            .await?;
        let doc: xml::CopyResult = Self::parse(op, &resp.body)?;
        doc.etag
            .map(quoted_etag)
            .ok_or_else(|| S3Error::InvalidResponse {
                operation: op.name(),
                detail: "CopyPartResult without ETag".to_string(),
            })
    }

    async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> S3Result<PutObjectOutput> {
        let op = Op::CompleteMultipartUpload;
        let list: Vec<(u32, String)> = parts
            .iter()
            .map(|p| (p.part_number, p.etag.clone()))
            .collect();
        let (result, sent) = self
            .execute_counted(
                Request::new(op, Method::POST, Some(bucket), Some(key))
                    .query("uploadId", upload_id)
                    .body(Body::Xml(xml::complete_multipart_body(&list).into()))
                    .error_in_200(),
            )
            .await;
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                // A resend can fail because an earlier attempt, whose answer
                // was lost, completed the upload (NoSuchUpload on AWS and
                // Garage, AccessDenied on s3s-fs). Our object then carries
                // the multipart ETag of our parts.
                if sent > 1
                    && let Some(done) = self.completed_earlier(bucket, key, parts).await
                {
                    tracing::debug!(key, "an earlier CompleteMultipartUpload had succeeded");
                    return Ok(done);
                }
                return Err(e);
            }
        };
        let doc: xml::CompleteMultipartUploadResult = Self::parse(op, &resp.body)?;
        // Ceph RGW (16.2) answers with an empty ETag element; the object's
        // ETag is then the multipart ETag of our parts (what a HEAD shows),
        // which the reads that follow need for If-Match.
        let etag = doc
            .etag
            .filter(|e| !e.trim_matches('"').is_empty())
            .or_else(|| super::recovery::multipart_etag(parts));
        Ok(PutObjectOutput {
            etag: etag.map(quoted_etag),
            version_id: resp.header("x-amz-version-id"),
        })
    }

    async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> S3Result<()> {
        self.execute(
            Request::new(
                Op::AbortMultipartUpload,
                Method::DELETE,
                Some(bucket),
                Some(key),
            )
            .query("uploadId", upload_id),
        )
        .await
        .map(drop)
    }

    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number_marker: Option<u32>,
    ) -> S3Result<ListPartsOutput> {
        let op = Op::ListParts;
        let resp = self
            .execute(
                Request::new(op, Method::GET, Some(bucket), Some(key))
                    .query("uploadId", upload_id)
                    .query_opt(
                        "part-number-marker",
                        part_number_marker.map(|m| m.to_string()),
                    ),
            )
            .await?;
        let doc: xml::ListPartsResult = Self::parse(op, &resp.body)?;
        let next = if doc.is_truncated {
            let marker = doc
                .next_part_number_marker
                .and_then(|m| m.trim().parse().ok())
                .or_else(|| doc.parts.last().map(|p| p.part_number));
            Some(marker.ok_or_else(|| S3Error::InvalidResponse {
                operation: op.name(),
                detail: "truncated part list without a marker".to_string(),
            })?)
        } else {
            None
        };
        let mut parts: Vec<PartInfo> = doc
            .parts
            .into_iter()
            .map(|p| PartInfo {
                part_number: p.part_number,
                etag: p.etag.map(quoted_etag),
                size: p.size,
            })
            .collect();
        // S3 sorts parts by number; some servers (s3s-fs) do not.
        parts.sort_by_key(|p| p.part_number);
        Ok(ListPartsOutput {
            parts,
            next_part_number_marker: next,
        })
    }

    async fn list_multipart_uploads(
        &self,
        bucket: &str,
        params: &ListUploadsParams,
    ) -> S3Result<ListUploadsOutput> {
        let op = Op::ListMultipartUploads;
        let resp = self
            .execute(
                Request::new(op, Method::GET, Some(bucket), None)
                    .query("uploads", "")
                    .query("prefix", params.prefix.clone())
                    .query_opt("key-marker", params.key_marker.clone())
                    .query_opt("upload-id-marker", params.upload_id_marker.clone()),
            )
            .await?;
        // Raw keys, not `encoding-type=url`: Ceph RGW encodes this listing's
        // keys when asked but does not say so (no EncodingType element), so
        // an encoded key could not be told from a raw one containing `%`,
        // and aborting "b%20two" would leave the upload of "b two" behind.
        let doc: xml::ListMultipartUploadsResult = Self::parse(op, &resp.body)?;
        let encoded = self.listing_encoded(op, doc.encoding_type.as_deref(), doc.values());
        let uploads = doc
            .uploads
            .into_iter()
            .map(|u| {
                Ok(UploadInfo {
                    key: Self::decode(op, encoded, u.key)?,
                    upload_id: u.upload_id,
                    initiated: u.initiated.as_deref().and_then(xml::parse_timestamp),
                })
            })
            .collect::<Result<Vec<_>, S3Error>>()?;
        let (next_key_marker, next_upload_id_marker) = if doc.is_truncated {
            let key = doc
                .next_key_marker
                .or_else(|| uploads.last().map(|u| u.key.clone()));
            let key = match key {
                Some(k) => Self::decode(op, encoded, k)?,
                None => {
                    return Err(S3Error::InvalidResponse {
                        operation: op.name(),
                        detail: "truncated upload list without a marker".to_string(),
                    });
                }
            };
            (
                Some(key),
                Some(doc.next_upload_id_marker.unwrap_or_default()),
            )
        } else {
            (None, None)
        };
        Ok(ListUploadsOutput {
            uploads,
            next_key_marker,
            next_upload_id_marker,
        })
    }
}

/// An ETag as S3 sends it in headers and most bodies, in double quotes.
/// Ceph RGW leaves the quotes out of CompleteMultipartUpload's answer, and
/// an unquoted ETag in If-Match never matches there: every read of a file
/// just written by multipart failed with 412.
pub(super) fn quoted_etag(etag: String) -> String {
    let etag = etag.trim().to_string();
    if etag.starts_with('"') || etag.starts_with("W/\"") {
        etag
    } else {
        format!("\"{etag}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("junk"), None);
    }

    #[test]
    fn etags_are_quoted_once() {
        assert_eq!(super::quoted_etag("abc-2".into()), "\"abc-2\"");
        assert_eq!(super::quoted_etag("\"abc\"".into()), "\"abc\"");
        assert_eq!(super::quoted_etag(" abc ".into()), "\"abc\"");
        assert_eq!(super::quoted_etag("W/\"w\"".into()), "W/\"w\"");
    }
}
