//! Recovery after answers lost in transit, for the two requests that are
//! not idempotent: a resent CompleteMultipartUpload recognises its own
//! object by the multipart ETag of its parts; a resent
//! CreateMultipartUpload aborts the uploads a lost answer created.

use std::time::Duration;

use md5::{Digest, Md5};

use super::client::*;
use super::http::*;

impl S3Client {
    /// After a retried CompleteMultipartUpload answers NoSuchUpload, the
    /// first attempt may have completed the upload and lost its answer. The
    /// object is ours if its ETag is the multipart ETag of our parts.
    pub(super) async fn completed_earlier(
        &self,
        bucket: &str,
        key: &str,
        parts: &[CompletedPart],
    ) -> Option<PutObjectOutput> {
        let expected = multipart_etag(parts)?;
        let head = self.head_object(bucket, key, None).await.ok()?;
        let etag = head.etag?;
        (etag.trim_matches('"') == expected).then_some(PutObjectOutput {
            etag: Some(etag),
            version_id: head.version_id,
        })
    }

    /// After a retried CreateMultipartUpload: aborts the uploads of `key`
    /// that earlier attempts may have created, those initiated (by the
    /// server's clock) within `window` before ours. Best effort; another
    /// writer of the same key starting in that instant is the only other
    /// candidate, and concurrent writers of one key race anyway.
    pub(super) async fn abort_lost_creates(
        &self,
        bucket: &str,
        key: &str,
        ours: &str,
        window: Duration,
    ) {
        let params = ListUploadsParams {
            prefix: key.to_string(),
            ..Default::default()
        };
        let Ok(listed) = self.list_multipart_uploads(bucket, &params).await else {
            return;
        };
        let same_key: Vec<_> = listed.uploads.iter().filter(|u| u.key == key).collect();
        let Some(our_time) = same_key
            .iter()
            .find(|u| u.upload_id == ours)
            .and_then(|u| u.initiated)
        else {
            return;
        };
        let window = window + Duration::from_secs(1);
        for u in same_key {
            let Some(t) = u.initiated else { continue };
            let recent = our_time.duration_since(t).is_ok_and(|age| age <= window);
            if u.upload_id != ours && recent {
                tracing::debug!(key, upload_id = %u.upload_id, "aborting an upload a lost answer created");
                let _ = self.abort_multipart_upload(bucket, key, &u.upload_id).await;
            }
        }
    }
}

/// The ETag S3 gives a completed multipart upload: the MD5 of the parts'
/// binary MD5s, a dash, the part count. `None` if a part ETag is not an MD5.
pub fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    let mut md5 = Md5::new();
    for part in parts {
        let raw = hex::decode(part.etag.trim_matches('"')).ok()?;
        if raw.len() != 16 {
            return None;
        }
        md5.update(&raw);
    }
    Some(format!("{}-{}", hex::encode(md5.finalize()), parts.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etag_of_parts() {
        // Two parts whose MD5s are known: md5("a") and md5("b").
        let a = hex::encode(Md5::digest(b"a"));
        let b = hex::encode(Md5::digest(b"b"));
        let parts = vec![
            CompletedPart {
                part_number: 1,
                etag: format!("\"{a}\""),
            },
            CompletedPart {
                part_number: 2,
                etag: b.clone(),
            },
        ];
        let mut md5 = Md5::new();
        md5.update(Md5::digest(b"a"));
        md5.update(Md5::digest(b"b"));
        assert_eq!(
            multipart_etag(&parts).unwrap(),
            format!("{}-2", hex::encode(md5.finalize()))
        );
        let odd = vec![CompletedPart {
            part_number: 1,
            etag: "not-md5".into(),
        }];
        assert!(multipart_etag(&odd).is_none());
    }
}
