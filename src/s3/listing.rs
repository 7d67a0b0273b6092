//! Listings and their servers' quirks: `encoding-type=url` asked for,
//! noticed when a server echoes it but sends raw keys (and then no longer
//! asked), keys decoded; ListObjects V1 behind the V2 interface.

use std::sync::atomic::Ordering;

use super::client::*;
use super::error::S3Error;
use super::http::*;
use super::stats::Op;
use super::xml;

impl S3Client {
    pub(super) fn list_encoding(&self) -> Option<&'static str> {
        (self.config.list_url_encoding && !self.listings_raw.load(Ordering::Relaxed))
            .then_some("url")
    }

    /// Whether a listing's values are URL-encoded: we asked, the server says
    /// so, and the values look it. Some servers (s3s-fs) echo
    /// `encoding-type=url` but send raw keys; a raw space, non-ASCII or
    /// control byte, or a broken `%` escape gives them away, and from then on
    /// this client stops asking.
    pub(super) fn listing_encoded<'v>(
        &self,
        op: Op,
        encoding_type: Option<&str>,
        mut values: impl Iterator<Item = &'v str>,
    ) -> bool {
        if self.list_encoding().is_none() || encoding_type != Some("url") {
            return false;
        }
        if values.all(looks_url_encoded) {
            return true;
        }
        if !self.listings_raw.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                op = op.name(),
                "the server claims URL-encoded listings but sends raw keys; no longer asking for encoding-type=url"
            );
        }
        false
    }

    /// Decodes a listing value if the server says it url-encoded it.
    pub(super) fn decode(op: Op, encoded: bool, value: String) -> Result<String, S3Error> {
        if !encoded {
            return Ok(value);
        }
        xml::url_decode(&value).map_err(|detail| S3Error::InvalidResponse {
            operation: op.name(),
            detail,
        })
    }

    pub(super) fn objects_from(
        op: Op,
        encoded: bool,
        contents: Vec<xml::ObjectEntry>,
        prefixes: Vec<xml::PrefixEntry>,
    ) -> Result<(Vec<ObjectInfo>, Vec<String>), S3Error> {
        let objects = contents
            .into_iter()
            .map(|c| {
                Ok(ObjectInfo {
                    key: Self::decode(op, encoded, c.key)?,
                    size: c.size,
                    last_modified: c.last_modified.as_deref().and_then(xml::parse_timestamp),
                    etag: c.etag.map(super::ops::quoted_etag),
                })
            })
            .collect::<Result<Vec<_>, S3Error>>()?;
        let prefixes = prefixes
            .into_iter()
            .map(|p| Self::decode(op, encoded, p.prefix))
            .collect::<Result<Vec<_>, S3Error>>()?;
        Ok((objects, prefixes))
    }

    /// ListObjects V1 behind the V2 interface (markers as tokens).
    pub(super) async fn list_v1_as_v2(
        &self,
        bucket: &str,
        params: &ListObjectsParams,
    ) -> S3Result<ListObjectsOutput> {
        let out = self
            .list_objects_v1(
                bucket,
                &ListObjectsV1Params {
                    prefix: params.prefix.clone(),
                    delimiter: params.delimiter.clone(),
                    max_keys: params.max_keys,
                    marker: params
                        .continuation_token
                        .clone()
                        .or_else(|| params.start_after.clone()),
                },
            )
            .await?;
        Ok(ListObjectsOutput {
            objects: out.objects,
            common_prefixes: out.common_prefixes,
            next_continuation_token: out.next_marker,
        })
    }
}

/// What a URL encoder can produce: printable ASCII only, and `%` only as
/// the start of a two-digit hex escape.
pub(super) fn looks_url_encoded(value: &str) -> bool {
    let b = value.as_bytes();
    b.iter().enumerate().all(|(i, &c)| match c {
        b'%' => {
            b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        }
        0x21..=0x7e => true,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoded_look() {
        assert!(looks_url_encoded("a+b%20c%2Fd/e~f"));
        assert!(!looks_url_encoded("a b"));
        assert!(!looks_url_encoded("100%"));
        assert!(!looks_url_encoded("%4g"));
        assert!(!looks_url_encoded("é"));
        assert!(!looks_url_encoded("tab\there"));
    }
}
