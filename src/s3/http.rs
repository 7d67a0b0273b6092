//! `S3Client`: the [`ObjectClient`] over HTTP(S) with reqwest. Every
//! operation goes through [`S3Client::execute`], the one place that builds
//! the URL, signs, retries, counts and turns error answers into [`S3Error`].

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use reqwest::Method;
use reqwest::header::HeaderMap;

use super::client::*;
use super::error::{CONNECT_FAILED, S3Error, S3ErrorCode, code_for_status};
use super::sign::{self, Credentials, SignableRequest, V4Scope};
use super::stats::{ClientStats, Op};
use super::xml;
use crate::config::{Addressing, ListApi, PayloadSigning, S3Config, SignatureVersion};

/// The body of a request.
#[derive(Clone)]
enum Body {
    Empty,
    /// A small XML document: always hashed for SigV4.
    Xml(Bytes),
    /// Object data (PUT, upload part): signed as `payload_signing` says.
    Data(Bytes),
}

impl Body {
    fn bytes(&self) -> Option<&Bytes> {
        match self {
            Body::Empty => None,
            Body::Xml(b) | Body::Data(b) => Some(b),
        }
    }
}

struct Request<'a> {
    op: Op,
    method: Method,
    bucket: Option<&'a str>,
    key: Option<&'a str>,
    query: Vec<(String, String)>,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Body,
    /// The operation may answer `200 OK` with an `<Error>` body.
    error_in_200: bool,
}

impl<'a> Request<'a> {
    fn new(op: Op, method: Method, bucket: Option<&'a str>, key: Option<&'a str>) -> Self {
        Request {
            op,
            method,
            bucket,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body: Body::Empty,
            error_in_200: false,
        }
    }

    /// CopyObject, UploadPartCopy and CompleteMultipartUpload can fail after
    /// the server has sent `200 OK`: the error is then the body, and it is
    /// judged (and retried) like any other error answer.
    fn error_in_200(mut self) -> Self {
        self.error_in_200 = true;
        self
    }

    fn query(mut self, name: &str, value: impl Into<String>) -> Self {
        self.query.push((name.to_string(), value.into()));
        self
    }

    fn query_opt(self, name: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.query(name, v),
            None => self,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn header_opt(self, name: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.header(name, v),
            None => self,
        }
    }

    fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }
}

struct Response {
    headers: HeaderMap,
    body: Bytes,
}

impl Response {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    fn last_modified(&self) -> Option<SystemTime> {
        self.header("last-modified")
            .and_then(|v| httpdate::parse_http_date(&v).ok())
    }
}

#[derive(Debug)]
struct Endpoint {
    scheme: String,
    /// `host` or `host:port` (port omitted when it is the scheme's default).
    authority: String,
}

/// The S3 client over HTTP. Cheap to share: clone the `Arc` it lives in.
/// Largest XML answer accepted: a listing page of 1000 keys of 1024 bytes,
/// escaped, is a few MiB; anything near this is a broken or hostile server.
pub const MAX_DOCUMENT: usize = 64 << 20;

pub struct S3Client {
    http: reqwest::Client,
    config: S3Config,
    creds: Credentials,
    endpoint: Endpoint,
    stats: Arc<ClientStats>,
    /// Set once the server has answered ListObjectsV2 with NotImplemented.
    list_v1_only: AtomicBool,
    /// Set once a listing claimed `encoding-type=url` but held raw keys.
    listings_raw: AtomicBool,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Client")
            .field("endpoint", &self.endpoint)
            .field("creds", &self.creds)
            .finish_non_exhaustive()
    }
}

const CONFIGURE: &str = "configure";

impl S3Client {
    pub fn new(config: S3Config, creds: Credentials) -> Result<Self, S3Error> {
        let bad = |detail: String| S3Error::InvalidRequest {
            operation: CONFIGURE,
            detail,
        };
        let url = reqwest::Url::parse(&config.endpoint)
            .map_err(|e| bad(format!("endpoint {:?} is not a URL: {e}", config.endpoint)))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(bad(format!(
                "endpoint {:?} must start with http:// or https://",
                config.endpoint
            )));
        }
        if url.path() != "/" || url.query().is_some() {
            return Err(bad(format!(
                "endpoint {:?} must not have a path or query",
                config.endpoint
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| bad(format!("endpoint {:?} has no host", config.endpoint)))?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };

        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .pool_max_idle_per_host(config.max_idle_connections)
            .tcp_nodelay(true)
            // Many parallel HTTP/1.1 connections outrun multiplexing one
            // HTTP/2 connection for bulk object transfer.
            .http1_only()
            // S3 redirects name another endpoint: an error to report, and
            // following one could send signed headers elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            // The store is named explicitly; an http_proxy meant for the
            // internet must not capture it.
            .no_proxy()
            .user_agent(concat!("bladefs/", env!("CARGO_PKG_VERSION")));
        for (name, addr) in &config.resolve {
            builder = builder.resolve(name, *addr);
        }
        if let Some(path) = &config.ca_bundle {
            let pem = std::fs::read(path)
                .map_err(|e| bad(format!("cannot read CA bundle {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("CA bundle {} is not PEM: {e}", path.display())))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| bad(format!("cannot set up HTTP client: {e}")))?;
        Ok(S3Client {
            http,
            endpoint: Endpoint {
                scheme: url.scheme().to_string(),
                authority,
            },
            config,
            creds,
            stats: Arc::new(ClientStats::default()),
            list_v1_only: AtomicBool::new(false),
            listings_raw: AtomicBool::new(false),
        })
    }

    pub fn stats(&self) -> &Arc<ClientStats> {
        &self.stats
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The Host and the encoded path of a request, by addressing style.
    fn locate(&self, bucket: Option<&str>, key: Option<&str>) -> (String, String) {
        let key_path = key.map(|k| sign::uri_encode(k, true)).unwrap_or_default();
        match (bucket, self.config.addressing) {
            (None, _) => (self.endpoint.authority.clone(), "/".to_string()),
            (Some(b), Addressing::PathStyle) => {
                let path = if key.is_some() {
                    format!("/{}/{}", sign::uri_encode(b, false), key_path)
                } else {
                    format!("/{}", sign::uri_encode(b, false))
                };
                (self.endpoint.authority.clone(), path)
            }
            (Some(b), Addressing::VirtualHosted) => (
                format!("{b}.{}", self.endpoint.authority),
                format!("/{key_path}"),
            ),
        }
    }

    /// Refuses keys that cannot be sent as written: HTTP clients (and the
    /// URL standard) collapse `.` and `..` path segments, so such a key
    /// would silently address another object.
    fn check_key(op: Op, key: &str) -> Result<(), S3Error> {
        let detail = if key.is_empty() {
            "the key is empty"
        } else if key.split('/').any(|seg| seg == "." || seg == "..") {
            "the key has a '.' or '..' path segment, which HTTP normalises away; it cannot be addressed safely"
        } else {
            return Ok(());
        };
        Err(S3Error::InvalidRequest {
            operation: op.name(),
            detail: format!("{detail}: {key:?}"),
        })
    }

    async fn execute(&self, req: Request<'_>) -> Result<Response, S3Error> {
        self.execute_counted(req).await.0
    }

    /// `execute`, also telling how many times the request was sent.
    async fn execute_counted(&self, req: Request<'_>) -> (Result<Response, S3Error>, u32) {
        if let Some(key) = req.key
            && let Err(e) = Self::check_key(req.op, key)
        {
            return (Err(e), 0);
        }
        // Digests are computed once, not per attempt. Under SigV4 the server
        // recomputes the signed SHA-256 of the body (or of each aws-chunked
        // chunk), which guards it; MD5, the costliest hash we would run,
        // is added only where nothing else guards the body (SigV2,
        // UNSIGNED-PAYLOAD) and for XML bodies (DeleteObjects requires it).
        let md5_needed = match (&req.body, self.config.signature) {
            (Body::Empty, _) => false,
            (Body::Xml(_), _) | (Body::Data(_), SignatureVersion::V2) => true,
            (Body::Data(_), SignatureVersion::V4) => {
                self.config.payload_signing == PayloadSigning::Unsigned
            }
        };
        let content_md5 = req
            .body
            .bytes()
            .filter(|_| md5_needed)
            .map(|b| base64::engine::general_purpose::STANDARD.encode(Md5::digest(b.as_ref())));
        let payload_hash = match (&req.body, self.config.payload_signing) {
            (Body::Empty, _) => sign::EMPTY_SHA256.to_string(),
            (Body::Xml(b), _) | (Body::Data(b), PayloadSigning::Sha256) => sign::sha256_hex(b),
            (Body::Data(_), PayloadSigning::Unsigned) => sign::UNSIGNED_PAYLOAD.to_string(),
            (Body::Data(_), PayloadSigning::Chunked { .. }) => sign::STREAMING_PAYLOAD.to_string(),
        };
        let op = req.op;
        let mut sent = 1;
        let result = self
            .config
            .retry
            .run(
                |err, attempt| {
                    sent += 1;
                    self.stats.retry(op);
                    tracing::debug!(op = op.name(), attempt, error = %err, "retrying");
                },
                || self.attempt(&req, content_md5.as_deref(), &payload_hash),
            )
            .await;
        if let Err(err) = &result {
            self.stats.failure(op);
            tracing::debug!(op = op.name(), error = %err, "request failed");
        }
        (result, sent)
    }

    async fn attempt(
        &self,
        req: &Request<'_>,
        content_md5: Option<&str>,
        payload_hash: &str,
    ) -> Result<Response, S3Error> {
        let op = req.op;
        let (host, path) = self.locate(req.bucket, req.key);
        let query = sign::canonical_query(&req.query);
        let url = if query.is_empty() {
            format!("{}://{host}{path}", self.endpoint.scheme)
        } else {
            format!("{}://{host}{path}?{query}", self.endpoint.scheme)
        };

        let mut headers = req.headers.clone();
        if let Some(md5) = content_md5 {
            headers.push(("content-md5".to_string(), md5.to_string()));
        }
        let chunked = match (
            &req.body,
            self.config.payload_signing,
            self.config.signature,
        ) {
            (Body::Data(data), PayloadSigning::Chunked { chunk_size }, SignatureVersion::V4) => {
                let chunk_size = chunk_size.max(1);
                headers.push(("content-encoding".to_string(), "aws-chunked".to_string()));
                headers.push((
                    "x-amz-decoded-content-length".to_string(),
                    data.len().to_string(),
                ));
                headers.push((
                    "content-length".to_string(),
                    sign::chunked_encoded_len(data.len() as u64, chunk_size as u64).to_string(),
                ));
                Some((data.clone(), chunk_size))
            }
            _ => None,
        };

        let signable = SignableRequest {
            method: req.method.as_str(),
            host: &host,
            path: &path,
            query: &req.query,
            headers: &headers,
        };
        let mut chunk_signer = None;
        match self.config.signature {
            SignatureVersion::V4 => {
                let scope = V4Scope {
                    region: &self.config.region,
                    service: "s3",
                    time: time::OffsetDateTime::now_utc(),
                };
                let signed = sign::sign_v4(&signable, &self.creds, &scope, payload_hash);
                if chunked.is_some() {
                    chunk_signer = Some(sign::ChunkSigner::new(
                        &self.creds,
                        &scope,
                        &signed.signature,
                    ));
                }
                headers.extend(signed.headers);
            }
            SignatureVersion::V2 => {
                let date = httpdate::fmt_http_date(SystemTime::now());
                let resource = match (req.bucket, self.config.addressing) {
                    (Some(b), Addressing::VirtualHosted) => format!("/{b}{path}"),
                    _ => path.clone(),
                };
                let added = sign::sign_v2(&signable, &resource, &self.creds, &date);
                headers.push(("date".to_string(), date));
                headers.extend(added);
            }
        }

        let mut builder = self.http.request(req.method.clone(), &url);
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let sent = match (&req.body, chunked, chunk_signer) {
            (_, Some((data, chunk_size)), Some(signer)) => {
                let len = sign::chunked_encoded_len(data.len() as u64, chunk_size as u64);
                builder = builder.body(reqwest::Body::wrap_stream(futures::stream::iter(
                    AwsChunks::new(data, chunk_size, signer).map(Ok::<_, std::io::Error>),
                )));
                len
            }
            (body, _, _) => {
                let bytes = body.bytes().cloned().unwrap_or_default();
                let len = bytes.len() as u64;
                // hyper sends no length for an empty body, and stores that
                // hold to the contract refuse a PUT or POST without one
                // (411 MissingContentLength): every body states its length.
                if len == 0 && matches!(req.method, Method::PUT | Method::POST) {
                    builder = builder.header(reqwest::header::CONTENT_LENGTH, "0");
                }
                builder = builder.body(bytes);
                len
            }
        };

        let started = Instant::now();
        self.stats.request(op, sent);
        let response = builder
            .send()
            .await
            .map_err(|e| self.transport_error(op, e))?;
        let status = response.status().as_u16();
        let resp_headers = response.headers().clone();
        let body = self.read_answer(op, response).await?;
        self.stats.received(op, body.len() as u64);
        tracing::debug!(
            op = op.name(),
            method = %req.method,
            bucket = req.bucket.unwrap_or(""),
            key = req.key.unwrap_or(""),
            status,
            bytes = body.len(),
            ms = started.elapsed().as_millis() as u64,
            "s3 request"
        );
        if !(200..300).contains(&status)
            || (req.error_in_200 && xml::root_element(&body).as_deref() == Some("Error"))
        {
            return Err(error_from_response(op, status, &resp_headers, &body));
        }
        Ok(Response {
            headers: resp_headers,
            body,
        })
    }

    /// The whole answer body. Object data is bounded by the range asked
    /// for; any other answer is an XML document, and one larger than
    /// [`MAX_DOCUMENT`] is refused before it is all in memory, whatever the
    /// server says its length is.
    async fn read_answer(&self, op: Op, mut response: reqwest::Response) -> Result<Bytes, S3Error> {
        if op == Op::GetObject {
            return response
                .bytes()
                .await
                .map_err(|e| self.transport_error(op, e));
        }
        let too_large = || S3Error::InvalidResponse {
            operation: op.name(),
            detail: format!("answer larger than {MAX_DOCUMENT} bytes"),
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT as u64)
        {
            return Err(too_large());
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(op, e))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    fn transport_error(&self, op: Op, err: reqwest::Error) -> S3Error {
        if err.is_timeout() {
            return S3Error::Timeout {
                operation: op.name(),
                seconds: self.config.read_timeout.as_secs(),
            };
        }
        let mut detail = String::new();
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&err);
        while let Some(s) = source {
            if !detail.is_empty() {
                detail.push_str(": ");
            }
            detail.push_str(&s.to_string());
            source = s.source();
        }
        if detail.is_empty() {
            detail = err.to_string();
        }
        if detail.contains("certificate") {
            return S3Error::Tls {
                operation: op.name(),
                detail,
            };
        }
        let detail = if err.is_connect() {
            format!("{CONNECT_FAILED} to {}: {detail}", self.endpoint.authority)
        } else {
            detail
        };
        S3Error::Transport {
            operation: op.name(),
            detail,
        }
    }

    fn parse<T: for<'de> serde::Deserialize<'de>>(op: Op, body: &[u8]) -> Result<T, S3Error> {
        xml::parse(body).map_err(|detail| S3Error::InvalidResponse {
            operation: op.name(),
            detail,
        })
    }

    fn list_encoding(&self) -> Option<&'static str> {
        (self.config.list_url_encoding && !self.listings_raw.load(Ordering::Relaxed))
            .then_some("url")
    }

    /// Whether a listing's values are URL-encoded: we asked, the server says
    /// so, and the values look it. Some servers (s3s-fs) echo
    /// `encoding-type=url` but send raw keys; a raw space, non-ASCII or
    /// control byte, or a broken `%` escape gives them away, and from then on
    /// this client stops asking.
    fn listing_encoded<'v>(
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
    fn decode(op: Op, encoded: bool, value: String) -> Result<String, S3Error> {
        if !encoded {
            return Ok(value);
        }
        xml::url_decode(&value).map_err(|detail| S3Error::InvalidResponse {
            operation: op.name(),
            detail,
        })
    }

    fn objects_from(
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
                    etag: c.etag,
                })
            })
            .collect::<Result<Vec<_>, S3Error>>()?;
        let prefixes = prefixes
            .into_iter()
            .map(|p| Self::decode(op, encoded, p.prefix))
            .collect::<Result<Vec<_>, S3Error>>()?;
        Ok((objects, prefixes))
    }

    /// After a retried CompleteMultipartUpload answers NoSuchUpload, the
    /// first attempt may have completed the upload and lost its answer. The
    /// object is ours if its ETag is the multipart ETag of our parts.
    async fn completed_earlier(
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
    async fn abort_lost_creates(&self, bucket: &str, key: &str, ours: &str, window: Duration) {
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

    async fn list_v1_as_v2(
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
fn looks_url_encoded(value: &str) -> bool {
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

fn error_from_response(op: Op, status: u16, headers: &HeaderMap, body: &[u8]) -> S3Error {
    let header_request_id = headers
        .get("x-amz-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match xml::parse::<xml::ErrorDoc>(body) {
        Ok(doc) if doc.code.is_some() => S3Error::service(
            op.name(),
            status,
            S3ErrorCode::parse(doc.code.as_deref().unwrap_or_default()),
            doc.message.unwrap_or_default(),
            doc.request_id.or(header_request_id),
        ),
        // HEAD answers carry no body; proxies answer with HTML or nothing.
        _ => S3Error::service(
            op.name(),
            status,
            code_for_status(status),
            String::from_utf8_lossy(&body[..body.len().min(200)]).trim(),
            header_request_id,
        ),
    }
}

/// The frames of an aws-chunked body: for each chunk its signed header, the
/// data (a zero-copy slice) and CRLF; then the signed empty final chunk.
/// Produced lazily, so a chunk is hashed only when the connection wants it.
struct AwsChunks {
    data: Bytes,
    chunk_size: usize,
    signer: sign::ChunkSigner,
    pos: usize,
    pending: Vec<Bytes>,
    finished: bool,
}

impl AwsChunks {
    fn new(data: Bytes, chunk_size: usize, signer: sign::ChunkSigner) -> Self {
        AwsChunks {
            data,
            chunk_size,
            signer,
            pos: 0,
            pending: Vec::new(),
            finished: false,
        }
    }
}

impl Iterator for AwsChunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if let Some(next) = self.pending.pop() {
            return Some(next);
        }
        if self.finished {
            return None;
        }
        let end = (self.pos + self.chunk_size).min(self.data.len());
        let chunk = self.data.slice(self.pos..end);
        self.pos = end;
        if chunk.is_empty() {
            self.finished = true;
        }
        let header = self.signer.chunk_header(&chunk);
        // Popped from the back: CRLF last, data in the middle.
        self.pending.push(Bytes::from_static(b"\r\n"));
        if !chunk.is_empty() {
            self.pending.push(chunk);
        }
        Some(Bytes::from(header))
    }
}

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
                    etag: v.etag,
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
        let resp = self
            .execute(
                Request::new(Op::PutObject, Method::PUT, Some(bucket), Some(key))
                    .body(Body::Data(body)),
            )
            .await?;
        Ok(PutObjectOutput {
            etag: resp.header("etag"),
            version_id: resp.header("x-amz-version-id"),
        })
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
            etag: doc.etag,
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
        doc.etag.ok_or_else(|| S3Error::InvalidResponse {
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
        Ok(PutObjectOutput {
            etag: doc.etag,
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
                etag: p.etag,
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
                    .query_opt("upload-id-marker", params.upload_id_marker.clone())
                    .query_opt("encoding-type", self.list_encoding()),
            )
            .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers one request with `200 OK` and returns its head, as sent.
    fn one_request_server() -> (String, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).expect("read") == 1 {
                head.push(byte[0]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n")
                .expect("answer");
            String::from_utf8_lossy(&head).to_lowercase()
        });
        (endpoint, server)
    }

    #[tokio::test]
    async fn an_empty_put_states_its_length() {
        for signature in [SignatureVersion::V4, SignatureVersion::V2] {
            let (endpoint, server) = one_request_server();
            let mut config = S3Config::new(endpoint);
            config.signature = signature;
            let client = S3Client::new(config, Credentials::new("AK", "SK")).unwrap();
            client
                .put_object("b", "dir/", Bytes::new())
                .await
                .expect("the empty PUT is answered");
            let head = server.join().expect("server");
            assert!(
                head.lines().any(|l| l.trim() == "content-length: 0"),
                "{signature:?}: {head}"
            );
        }
    }

    #[test]
    fn url_encoded_look() {
        assert!(looks_url_encoded("a+b%20c%2Fd/e~f"));
        assert!(!looks_url_encoded("a b"));
        assert!(!looks_url_encoded("100%"));
        assert!(!looks_url_encoded("%4g"));
        assert!(!looks_url_encoded("é"));
        assert!(!looks_url_encoded("tab\there"));
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("junk"), None);
    }

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

    #[test]
    fn dot_segments_are_refused() {
        for key in ["", ".", "..", "a/./b", "../x", "a/.."] {
            assert!(S3Client::check_key(Op::GetObject, key).is_err(), "{key:?}");
        }
        for key in ["a//b", ".x", "a/..b", "...", "a/b/"] {
            assert!(S3Client::check_key(Op::GetObject, key).is_ok(), "{key:?}");
        }
    }

    #[test]
    fn addressing_styles() {
        let creds = Credentials::new("a", "b");
        let mut cfg = S3Config::new("http://127.0.0.1:9000");
        let c = S3Client::new(cfg.clone(), creds.clone()).unwrap();
        assert_eq!(
            c.locate(Some("bk"), Some("a b/c")),
            ("127.0.0.1:9000".into(), "/bk/a%20b/c".into())
        );
        assert_eq!(
            c.locate(Some("bk"), None),
            ("127.0.0.1:9000".into(), "/bk".into())
        );
        assert_eq!(c.locate(None, None), ("127.0.0.1:9000".into(), "/".into()));
        cfg.addressing = Addressing::VirtualHosted;
        cfg.endpoint = "https://s3.example.com".into();
        let c = S3Client::new(cfg, creds.clone()).unwrap();
        assert_eq!(
            c.locate(Some("bk"), Some("k")),
            ("bk.s3.example.com".into(), "/k".into())
        );
        assert!(S3Client::new(S3Config::new("ftp://x"), creds.clone()).is_err());
        assert!(S3Client::new(S3Config::new("http://x/path"), creds).is_err());
    }

    #[test]
    fn aws_chunks_frame_the_whole_body() {
        let creds = Credentials::new("a", "b");
        let scope = V4Scope {
            region: "us-east-1",
            service: "s3",
            time: time::OffsetDateTime::UNIX_EPOCH,
        };
        let data = Bytes::from(vec![1u8; 100]);
        let frames: Vec<Bytes> =
            AwsChunks::new(data, 30, sign::ChunkSigner::new(&creds, &scope, "seed")).collect();
        let total: usize = frames.iter().map(Bytes::len).sum();
        assert_eq!(total as u64, sign::chunked_encoded_len(100, 30));
        let text = String::from_utf8_lossy(&frames.concat()).into_owned();
        assert!(text.starts_with("1e;chunk-signature="));
        assert!(text.ends_with("\r\n\r\n"));
        assert!(text.contains("\r\n0;chunk-signature="));
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = S3Client::new(
            S3Config::new("http://127.0.0.1:1"),
            Credentials::new("AKID", "SUPERSECRET").with_session_token("TOKEN"),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("AKID"));
        assert!(
            !shown.contains("SUPERSECRET") && !shown.contains("TOKEN"),
            "{shown}"
        );
    }
}
