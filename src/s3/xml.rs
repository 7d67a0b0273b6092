//! The XML documents of the S3 API: response bodies parsed with serde
//! (`quick_xml::de`) into plain structs, and the few request bodies built
//! with escaping. Parsing never panics: malformed input is an error.

use std::time::SystemTime;

use quick_xml::escape::escape;
use serde::Deserialize;

/// Parses an XML document into `T`, naming the operation in the error.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("response is not UTF-8: {e}"))?;
    quick_xml::de::from_str(text).map_err(|e| format!("malformed XML: {e}"))
}

/// The root element's name, to tell an `<Error>` document inside a 200
/// response (CopyObject, UploadPartCopy, CompleteMultipartUpload) from a result.
pub fn root_element(body: &[u8]) -> Option<String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(quick_xml::events::Event::Start(e)) | Ok(quick_xml::events::Event::Empty(e)) => {
                return Some(e.local_name().into_inner().to_string());
            }
            Ok(quick_xml::events::Event::Eof) | Err(_) => return None,
            _ => buf.clear(),
        }
    }
}

/// Every response parser on one body, with the decoding the client applies
/// to what they return. For the fuzzer (`fuzz/`) and the corpus test: it
/// must return, whatever the bytes, and never panic.
#[doc(hidden)]
pub fn parse_every_answer(body: &[u8]) {
    let _ = root_element(body);
    if let Ok(doc) = parse::<ErrorDoc>(body) {
        let _ = super::S3ErrorCode::parse(doc.code.as_deref().unwrap_or_default());
    }
    if let Ok(doc) = parse::<ListAllMyBucketsResult>(body) {
        for b in &doc.buckets.bucket {
            let _ = b.creation_date.as_deref().map(parse_timestamp);
        }
    }
    let _ = parse::<LocationConstraint>(body);
    let _ = parse::<VersioningConfiguration>(body);
    if let Ok(doc) = parse::<ListBucketResult>(body) {
        for o in &doc.contents {
            let _ = url_decode(&o.key);
            let _ = o.last_modified.as_deref().map(parse_timestamp);
        }
        for p in &doc.common_prefixes {
            let _ = url_decode(&p.prefix);
        }
    }
    if let Ok(doc) = parse::<ListVersionsResult>(body) {
        for v in doc.versions.iter().chain(&doc.delete_markers) {
            let _ = url_decode(&v.key);
        }
    }
    let _ = parse::<InitiateMultipartUploadResult>(body);
    let _ = parse::<CompleteMultipartUploadResult>(body);
    let _ = parse::<CopyResult>(body);
    let _ = parse::<ListPartsResult>(body);
    if let Ok(doc) = parse::<ListMultipartUploadsResult>(body) {
        for u in &doc.uploads {
            let _ = url_decode(&u.key);
            let _ = u.initiated.as_deref().map(parse_timestamp);
        }
    }
    let _ = parse::<DeleteResult>(body);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = url_decode(text);
        let _ = parse_timestamp(text);
    }
}

pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

#[derive(Debug, Deserialize)]
pub struct ErrorDoc {
    #[serde(rename = "Code")]
    pub code: Option<String>,
    #[serde(rename = "Message")]
    pub message: Option<String>,
    #[serde(rename = "RequestId")]
    pub request_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ListAllMyBucketsResult {
    #[serde(rename = "Buckets", default)]
    pub buckets: Buckets,
}

#[derive(Debug, Deserialize, Default)]
pub struct Buckets {
    #[serde(rename = "Bucket", default)]
    pub bucket: Vec<BucketEntry>,
}

#[derive(Debug, Deserialize)]
pub struct BucketEntry {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "CreationDate")]
    pub creation_date: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LocationConstraint {
    #[serde(rename = "$text", default)]
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct VersioningConfiguration {
    #[serde(rename = "Status")]
    pub status: Option<String>,
}

/// ListObjects V1 and V2 share one result shape; each version fills its own
/// marker fields.
#[derive(Debug, Deserialize)]
pub struct ListBucketResult {
    #[serde(rename = "IsTruncated", default)]
    pub is_truncated: bool,
    #[serde(rename = "Contents", default)]
    pub contents: Vec<ObjectEntry>,
    #[serde(rename = "CommonPrefixes", default)]
    pub common_prefixes: Vec<PrefixEntry>,
    #[serde(rename = "NextContinuationToken")]
    pub next_continuation_token: Option<String>,
    #[serde(rename = "NextMarker")]
    pub next_marker: Option<String>,
    #[serde(rename = "EncodingType")]
    pub encoding_type: Option<String>,
}

impl ListBucketResult {
    /// Every value that `encoding-type=url` would have encoded.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.contents
            .iter()
            .map(|c| c.key.as_str())
            .chain(self.common_prefixes.iter().map(|p| p.prefix.as_str()))
            .chain(self.next_marker.as_deref())
    }
}

#[derive(Debug, Deserialize)]
pub struct ObjectEntry {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "LastModified")]
    pub last_modified: Option<String>,
    #[serde(rename = "ETag")]
    pub etag: Option<String>,
    #[serde(rename = "Size", default)]
    pub size: u64,
}

#[derive(Debug, Deserialize)]
pub struct PrefixEntry {
    #[serde(rename = "Prefix")]
    pub prefix: String,
}

#[derive(Debug, Deserialize)]
pub struct ListVersionsResult {
    #[serde(rename = "IsTruncated", default)]
    pub is_truncated: bool,
    #[serde(rename = "NextKeyMarker")]
    pub next_key_marker: Option<String>,
    #[serde(rename = "NextVersionIdMarker")]
    pub next_version_id_marker: Option<String>,
    #[serde(rename = "EncodingType")]
    pub encoding_type: Option<String>,
    #[serde(rename = "Version", default)]
    pub versions: Vec<VersionEntry>,
    #[serde(rename = "DeleteMarker", default)]
    pub delete_markers: Vec<VersionEntry>,
    #[serde(rename = "CommonPrefixes", default)]
    pub common_prefixes: Vec<PrefixEntry>,
}

impl ListVersionsResult {
    /// Every value that `encoding-type=url` would have encoded.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.versions
            .iter()
            .chain(&self.delete_markers)
            .map(|v| v.key.as_str())
            .chain(self.common_prefixes.iter().map(|p| p.prefix.as_str()))
            .chain(self.next_key_marker.as_deref())
    }
}

#[derive(Debug, Deserialize)]
pub struct VersionEntry {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "VersionId")]
    pub version_id: Option<String>,
    #[serde(rename = "IsLatest", default)]
    pub is_latest: bool,
    #[serde(rename = "LastModified")]
    pub last_modified: Option<String>,
    #[serde(rename = "ETag")]
    pub etag: Option<String>,
    #[serde(rename = "Size", default)]
    pub size: u64,
}

#[derive(Debug, Deserialize)]
pub struct InitiateMultipartUploadResult {
    #[serde(rename = "UploadId")]
    pub upload_id: String,
}

#[derive(Debug, Deserialize)]
pub struct CompleteMultipartUploadResult {
    #[serde(rename = "ETag")]
    pub etag: Option<String>,
}

/// CopyObjectResult and CopyPartResult.
#[derive(Debug, Deserialize)]
pub struct CopyResult {
    #[serde(rename = "ETag")]
    pub etag: Option<String>,
    #[serde(rename = "LastModified")]
    pub last_modified: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ListPartsResult {
    #[serde(rename = "IsTruncated", default)]
    pub is_truncated: bool,
    #[serde(rename = "NextPartNumberMarker")]
    pub next_part_number_marker: Option<String>,
    #[serde(rename = "Part", default)]
    pub parts: Vec<PartEntry>,
}

#[derive(Debug, Deserialize)]
pub struct PartEntry {
    #[serde(rename = "PartNumber")]
    pub part_number: u32,
    #[serde(rename = "ETag")]
    pub etag: Option<String>,
    #[serde(rename = "Size", default)]
    pub size: u64,
}

#[derive(Debug, Deserialize)]
pub struct ListMultipartUploadsResult {
    #[serde(rename = "IsTruncated", default)]
    pub is_truncated: bool,
    #[serde(rename = "NextKeyMarker")]
    pub next_key_marker: Option<String>,
    #[serde(rename = "NextUploadIdMarker")]
    pub next_upload_id_marker: Option<String>,
    #[serde(rename = "EncodingType")]
    pub encoding_type: Option<String>,
    #[serde(rename = "Upload", default)]
    pub uploads: Vec<UploadEntry>,
}

impl ListMultipartUploadsResult {
    /// Every value that `encoding-type=url` would have encoded.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.uploads
            .iter()
            .map(|u| u.key.as_str())
            .chain(self.next_key_marker.as_deref())
    }
}

#[derive(Debug, Deserialize)]
pub struct UploadEntry {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "UploadId")]
    pub upload_id: String,
    #[serde(rename = "Initiated")]
    pub initiated: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct DeleteResult {
    #[serde(rename = "Deleted", default)]
    pub deleted: Vec<DeletedEntry>,
    #[serde(rename = "Error", default)]
    pub errors: Vec<DeleteErrorEntry>,
}

#[derive(Debug, Deserialize)]
pub struct DeletedEntry {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "VersionId")]
    pub version_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct DeleteErrorEntry {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "VersionId")]
    pub version_id: Option<String>,
    #[serde(rename = "Code")]
    pub code: Option<String>,
    #[serde(rename = "Message")]
    pub message: Option<String>,
}

const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

pub fn complete_multipart_body(parts: &[(u32, String)]) -> String {
    let mut out = format!("<CompleteMultipartUpload xmlns=\"{S3_NS}\">");
    for (number, etag) in parts {
        out.push_str(&format!(
            "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
            escape(etag.as_str())
        ));
    }
    out.push_str("</CompleteMultipartUpload>");
    out
}

pub fn delete_objects_body(objects: &[(String, Option<String>)], quiet: bool) -> String {
    let mut out = format!("<Delete xmlns=\"{S3_NS}\"><Quiet>{quiet}</Quiet>");
    for (key, version) in objects {
        out.push_str("<Object><Key>");
        out.push_str(&escape(key.as_str()));
        out.push_str("</Key>");
        if let Some(v) = version {
            out.push_str("<VersionId>");
            out.push_str(&escape(v.as_str()));
            out.push_str("</VersionId>");
        }
        out.push_str("</Object>");
    }
    out.push_str("</Delete>");
    out
}

pub fn versioning_body(status: &str) -> String {
    format!(
        "<VersioningConfiguration xmlns=\"{S3_NS}\"><Status>{}</Status></VersioningConfiguration>",
        escape(status)
    )
}

/// Decodes a value of a listing sent with `encoding-type=url`:
/// `%XX` escapes, and `+` for a space (as AWS encodes it).
pub fn url_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("decoded key is not UTF-8: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_v2_result() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix></Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>
  <Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>
  <Contents><Key>a&amp;b</Key><LastModified>2009-10-12T17:50:30.000Z</LastModified>
    <ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag><Size>434234</Size>
    <StorageClass>STANDARD</StorageClass></Contents>
  <CommonPrefixes><Prefix>dir/</Prefix></CommonPrefixes>
  <Contents><Key>z</Key><Size>0</Size></Contents>
  <CommonPrefixes><Prefix>dir2/</Prefix></CommonPrefixes>
  <NextContinuationToken>tok</NextContinuationToken>
</ListBucketResult>"#;
        let r: ListBucketResult = parse(doc.as_bytes()).unwrap();
        assert!(r.is_truncated);
        assert_eq!(r.contents.len(), 2);
        assert_eq!(r.contents[0].key, "a&b");
        assert_eq!(r.contents[0].size, 434234);
        assert_eq!(
            r.contents[0].etag.as_deref(),
            Some("\"fba9dede5f27731c9771645a39863328\"")
        );
        assert!(parse_timestamp(r.contents[0].last_modified.as_deref().unwrap()).is_some());
        assert_eq!(r.common_prefixes.len(), 2);
        assert_eq!(r.next_continuation_token.as_deref(), Some("tok"));
    }

    #[test]
    fn versions_result_interleaved() {
        let doc = r#"<ListVersionsResult><Name>b</Name><IsTruncated>false</IsTruncated>
<Version><Key>a</Key><VersionId>2</VersionId><IsLatest>false</IsLatest><Size>1</Size></Version>
<DeleteMarker><Key>a</Key><VersionId>3</VersionId><IsLatest>true</IsLatest></DeleteMarker>
<Version><Key>b</Key><VersionId>1</VersionId><IsLatest>true</IsLatest><Size>5</Size></Version>
</ListVersionsResult>"#;
        let r: ListVersionsResult = parse(doc.as_bytes()).unwrap();
        assert_eq!(r.versions.len(), 2);
        assert_eq!(r.delete_markers.len(), 1);
        assert!(r.delete_markers[0].is_latest);
    }

    #[test]
    fn location_and_errors() {
        let l: LocationConstraint = parse(
            br#"<?xml version="1.0"?><LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/">on-prem</LocationConstraint>"#,
        )
        .unwrap();
        assert_eq!(l.value.as_deref(), Some("on-prem"));
        let empty: LocationConstraint = parse(b"<LocationConstraint/>").unwrap();
        assert!(empty.value.unwrap_or_default().is_empty());
        let e: ErrorDoc = parse(
            b"<Error><Code>NoSuchKey</Code><Message>nope</Message><RequestId>r</RequestId></Error>",
        )
        .unwrap();
        assert_eq!(e.code.as_deref(), Some("NoSuchKey"));
        assert_eq!(
            root_element(b"<?xml version=\"1.0\"?>\n<Error/>").as_deref(),
            Some("Error")
        );
        assert_eq!(
            root_element(b"<CopyObjectResult><ETag>x</ETag></CopyObjectResult>").as_deref(),
            Some("CopyObjectResult")
        );
    }

    #[test]
    fn malformed_is_an_error_not_a_panic() {
        for doc in [
            &b"<ListBucketResult><Contents><Key>x</Contents>"[..],
            b"\xff\xfe",
            b"",
            b"<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>",
        ] {
            assert!(parse::<ListBucketResult>(doc).is_err(), "{doc:?}");
        }
    }

    #[test]
    fn delete_result_with_per_key_errors() {
        let doc = br#"<DeleteResult><Deleted><Key>a</Key></Deleted>
<Error><Key>b</Key><Code>AccessDenied</Code><Message>no</Message></Error>
<Deleted><Key>c</Key><VersionId>v1</VersionId></Deleted></DeleteResult>"#;
        let r: DeleteResult = parse(doc).unwrap();
        assert_eq!(r.deleted.len(), 2);
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].key, "b");
        assert_eq!(r.errors[0].code.as_deref(), Some("AccessDenied"));
    }

    #[test]
    fn request_bodies_escape() {
        let body = delete_objects_body(&[("a<&>b".into(), Some("v".into()))], true);
        assert!(body.contains("<Key>a&lt;&amp;&gt;b</Key><VersionId>v</VersionId>"));
        let body = complete_multipart_body(&[(1, "\"e1\"".into())]);
        assert!(body.contains("<PartNumber>1</PartNumber><ETag>&quot;e1&quot;</ETag>"));
    }

    #[test]
    fn url_decoding() {
        assert_eq!(url_decode("a+b%2Bc%25d%C3%A9").unwrap(), "a b+c%dé");
        assert!(url_decode("bad%4").is_err());
        assert!(url_decode("%FF").is_err());
    }
}
