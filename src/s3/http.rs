//! `S3Client`: the [`ObjectClient`] over HTTP(S) with hyper. Every
//! operation goes through [`S3Client::execute`], the one place that builds
//! the URL, signs, retries, counts and turns error answers into [`S3Error`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::Method;
use http::header::HeaderMap;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use md5::{Digest, Md5};

use super::chunked::AwsChunks;
use super::config::{Addressing, PayloadSigning, S3Config, SignatureVersion};
use super::connect::TcpConnector;
use super::error::{CONNECT_FAILED, S3Error, S3ErrorCode, code_for_status};
use super::sign::{self, Credentials, SignableRequest, V4Scope};
use super::stats::{ClientStats, Op};
use super::xml;

/// The body of a request.
#[derive(Clone)]
pub(super) enum Body {
    Empty,
    /// A small XML document: always hashed for SigV4.
    Xml(Bytes),
    /// Object data (PUT, upload part): signed as `payload_signing` says.
    Data(Bytes),
}

impl Body {
    pub(super) fn bytes(&self) -> Option<&Bytes> {
        match self {
            Body::Empty => None,
            Body::Xml(b) | Body::Data(b) => Some(b),
        }
    }
}

pub(super) struct Request<'a> {
    pub(super) op: Op,
    pub(super) method: Method,
    pub(super) bucket: Option<&'a str>,
    pub(super) key: Option<&'a str>,
    pub(super) query: Vec<(String, String)>,
    /// Lower-case names.
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Body,
    /// The operation may answer `200 OK` with an `<Error>` body.
    error_in_200: bool,
}

impl<'a> Request<'a> {
    pub(super) fn new(
        op: Op,
        method: Method,
        bucket: Option<&'a str>,
        key: Option<&'a str>,
    ) -> Self {
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
    pub(super) fn error_in_200(mut self) -> Self {
        self.error_in_200 = true;
        self
    }

    pub(super) fn query(mut self, name: &str, value: impl Into<String>) -> Self {
        self.query.push((name.to_string(), value.into()));
        self
    }

    pub(super) fn query_opt(self, name: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.query(name, v),
            None => self,
        }
    }

    pub(super) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub(super) fn header_opt(self, name: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.header(name, v),
            None => self,
        }
    }

    pub(super) fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }
}

pub(super) struct Response {
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Response {
    pub(super) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    pub(super) fn last_modified(&self) -> Option<SystemTime> {
        self.header("last-modified")
            .and_then(|v| httpdate::parse_http_date(&v).ok())
    }
}

#[derive(Debug)]
pub(super) struct Endpoint {
    pub(super) scheme: String,
    /// `host` or `host:port` (port omitted when it is the scheme's default).
    pub(super) authority: String,
}

/// The S3 client over HTTP. Cheap to share: clone the `Arc` it lives in.
/// Largest XML answer accepted: a listing page of 1000 keys of 1024 bytes,
/// escaped, is a few MiB; anything near this is a broken or hostile server.
pub const MAX_DOCUMENT: usize = 64 << 20;

/// Largest GET body allocated whole up front from its Content-Length
/// (parts are at most a few times 8 MiB; a larger answer grows as it comes).
const MAX_PREALLOCATED: u64 = 256 << 20;

type RequestBody = BoxBody<Bytes, std::io::Error>;

/// What a request can fail with below HTTP: the client's error (`connect`:
/// while connecting), or one of our timeouts.
enum Transport {
    Hyper {
        err: Box<dyn std::error::Error + Send + Sync>,
        connect: bool,
    },
    Timeout,
}

pub struct S3Client {
    pub(super) http: HyperClient<HttpsConnector<TcpConnector>, RequestBody>,
    pub(super) config: S3Config,
    pub(super) creds: Credentials,
    pub(super) endpoint: Endpoint,
    pub(super) stats: Arc<ClientStats>,
    /// Set once the server has answered ListObjectsV2 with NotImplemented.
    pub(super) list_v1_only: AtomicBool,
    /// Set once a listing claimed `encoding-type=url` but held raw keys.
    pub(super) listings_raw: AtomicBool,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Client")
            .field("endpoint", &self.endpoint)
            .field("creds", &self.creds)
            .finish_non_exhaustive()
    }
}

pub(super) const CONFIGURE: &str = "configure";

/// How long an unused connection stays in the pool.
const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(90);

const USER_AGENT: &str = concat!("bladefs/", env!("CARGO_PKG_VERSION"));

/// TLS trusting the system's roots, the Mozilla roots built in, and the
/// certificates of `ca_bundle` (PEM), if given.
fn tls_config(ca_bundle: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Unreadable system certificates are skipped, as other clients do.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read CA bundle {}: {e}", path.display()))?;
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("CA bundle {} is not PEM: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
            found += 1;
        }
        if found == 0 {
            return Err(format!("CA bundle {} holds no certificate", path.display()));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl S3Client {
    pub fn new(config: S3Config, creds: Credentials) -> Result<Self, S3Error> {
        let bad = |detail: String| S3Error::InvalidRequest {
            operation: CONFIGURE,
            detail,
        };
        let url = url::Url::parse(&config.endpoint)
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

        let tls = tls_config(config.ca_bundle.as_deref()).map_err(bad)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(TcpConnector::new(
                config.resolve.clone(),
                config.connect_timeout,
            ));
        // HTTP/1.1 only: many parallel connections outrun multiplexing one
        // HTTP/2 connection for bulk object transfer. hyper follows no
        // redirects (S3 redirects name another endpoint: an error to
        // report, and following one could send signed headers elsewhere)
        // and uses no proxy (an http_proxy meant for the internet must not
        // capture the store).
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_connections)
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(https);
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
    pub(super) fn locate(&self, bucket: Option<&str>, key: Option<&str>) -> (String, String) {
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
    pub(super) fn check_key(op: Op, key: &str) -> Result<(), S3Error> {
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

    pub(super) async fn execute(&self, req: Request<'_>) -> Result<Response, S3Error> {
        self.execute_counted(req).await.0
    }

    /// `execute`, also telling how many times the request was sent.
    pub(super) async fn execute_counted(
        &self,
        req: Request<'_>,
    ) -> (Result<Response, S3Error>, u32) {
        if let Some(key) = req.key
            && let Err(e) = Self::check_key(req.op, key)
        {
            return (Err(e), 0);
        }
        // Digests are computed once, not per attempt.
        let md5_needed = md5_needed(
            &req.body,
            self.config.signature,
            self.config.payload_signing,
            self.endpoint.scheme == "https",
        );
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let digest = match (&req.body, self.config.payload_signing) {
            (Body::Data(b), PayloadSigning::Crc32c)
                if self.config.signature == SignatureVersion::V4
                    && !req
                        .headers
                        .iter()
                        .any(|(n, _)| n == "x-amz-checksum-crc32c") =>
            {
                Some((
                    "x-amz-checksum-crc32c",
                    b64(&crc32c::crc32c(b).to_be_bytes()),
                ))
            }
            _ => req
                .body
                .bytes()
                .filter(|_| md5_needed)
                .map(|b| ("content-md5", b64(&Md5::digest(b.as_ref())))),
        };
        let payload_hash = match (&req.body, self.config.payload_signing) {
            (Body::Empty, _) => sign::EMPTY_SHA256.to_string(),
            (Body::Xml(b), _) | (Body::Data(b), PayloadSigning::Sha256) => sign::sha256_hex(b),
            (Body::Data(_), PayloadSigning::Unsigned | PayloadSigning::Crc32c) => {
                sign::UNSIGNED_PAYLOAD.to_string()
            }
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
                || self.attempt(&req, digest.as_ref(), &payload_hash),
            )
            .await;
        if let Err(err) = &result {
            self.stats.failure(op);
            tracing::debug!(op = op.name(), error = %err, "request failed");
        }
        (result, sent)
    }

    pub(super) async fn attempt(
        &self,
        req: &Request<'_>,
        digest: Option<&(&'static str, String)>,
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
        if let Some((name, value)) = digest {
            headers.push((name.to_string(), value.clone()));
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

        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(&url)
            .header(http::header::USER_AGENT, USER_AGENT);
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let (body, sent): (RequestBody, u64) = match (&req.body, chunked, chunk_signer) {
            (_, Some((data, chunk_size)), Some(signer)) => {
                let len = sign::chunked_encoded_len(data.len() as u64, chunk_size as u64);
                let frames = AwsChunks::new(data, chunk_size, signer)
                    .map(|c| Ok::<_, std::io::Error>(hyper::body::Frame::data(c)));
                (StreamBody::new(futures::stream::iter(frames)).boxed(), len)
            }
            (body, _, _) => {
                let bytes = body.bytes().cloned().unwrap_or_default();
                let len = bytes.len() as u64;
                // hyper sends no length for an empty body, and stores that
                // hold to the contract refuse a PUT or POST without one
                // (411 MissingContentLength): every body states its length.
                if len == 0 && matches!(req.method, Method::PUT | Method::POST) {
                    builder = builder.header(http::header::CONTENT_LENGTH, "0");
                }
                (
                    Full::new(bytes).map_err(|never| match never {}).boxed(),
                    len,
                )
            }
        };
        let request = builder.body(body).map_err(|e| S3Error::InvalidRequest {
            operation: op.name(),
            detail: format!("cannot form the request: {e}"),
        })?;

        let started = Instant::now();
        self.stats.request(op, sent);
        let response = match tokio::time::timeout(
            self.config.read_timeout,
            self.http.request(request),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let connect = e.is_connect();
                let err = e.into();
                return Err(self.transport_error(op, Transport::Hyper { err, connect }));
            }
            Err(_) => return Err(self.transport_error(op, Transport::Timeout)),
        };
        let status = response.status().as_u16();
        let resp_headers = response.headers().clone();
        let body = self.read_answer(op, response).await?;
        self.stats.received(op, body.len() as u64);
        self.stats.answered(op, started.elapsed());
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
    pub(super) async fn read_answer(
        &self,
        op: Op,
        response: http::Response<hyper::body::Incoming>,
    ) -> Result<Bytes, S3Error> {
        let mut incoming = response.into_body();
        // What the body holds, not the Content-Length header: the answer to
        // a HEAD states the object's length and has no body.
        let length = hyper::body::Body::size_hint(&incoming).exact();
        if op == Op::GetObject {
            let Some(len) = length
                .filter(|n| (super::buffers::HUGE_PAGE as u64..=MAX_PREALLOCATED).contains(n))
            else {
                let mut chunks = Vec::new();
                while let Some(chunk) = self.next_chunk(op, &mut incoming).await? {
                    chunks.push(chunk);
                }
                // A small answer is usually one chunk: taken as it is.
                return Ok(match chunks.len() {
                    1 => chunks.pop().expect("one chunk"),
                    _ => Bytes::from(chunks.concat()),
                });
            };
            let mut body = super::buffers::take(len as usize);
            while let Some(chunk) = self.next_chunk(op, &mut incoming).await? {
                body.extend_from_slice(&chunk);
            }
            return Ok(super::buffers::freeze(body));
        }
        let too_large = || S3Error::InvalidResponse {
            operation: op.name(),
            detail: format!("answer larger than {MAX_DOCUMENT} bytes"),
        };
        if length.is_some_and(|n| n > MAX_DOCUMENT as u64) {
            return Err(too_large());
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = self.next_chunk(op, &mut incoming).await? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// The next bytes of an answer's body (trailers skipped), each waited
    /// for at most the read timeout.
    async fn next_chunk(
        &self,
        op: Op,
        body: &mut hyper::body::Incoming,
    ) -> Result<Option<Bytes>, S3Error> {
        loop {
            let frame = match tokio::time::timeout(self.config.read_timeout, body.frame()).await {
                Err(_) => return Err(self.transport_error(op, Transport::Timeout)),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    let err = e.into();
                    return Err(self.transport_error(
                        op,
                        Transport::Hyper {
                            err,
                            connect: false,
                        },
                    ));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
        }
    }

    fn transport_error(&self, op: Op, err: Transport) -> S3Error {
        let (err, connect) = match err {
            Transport::Timeout => {
                return S3Error::Timeout {
                    operation: op.name(),
                    seconds: self.config.read_timeout.as_secs(),
                };
            }
            Transport::Hyper { err, connect } => (err, connect),
        };
        let mut detail = String::new();
        let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
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
        let detail = if connect {
            format!("{CONNECT_FAILED} to {}: {detail}", self.endpoint.authority)
        } else {
            detail
        };
        // Our timeouts are Transport::Timeout; one in here is the connector's
        // (it could not connect in time): a failed connection, with why.
        S3Error::Transport {
            operation: op.name(),
            detail,
        }
    }

    pub(super) fn parse<T: for<'de> serde::Deserialize<'de>>(
        op: Op,
        body: &[u8],
    ) -> Result<T, S3Error> {
        xml::parse(body).map_err(|detail| S3Error::InvalidResponse {
            operation: op.name(),
            detail,
        })
    }
}

pub(super) fn error_from_response(
    op: Op,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> S3Error {
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

/// Whether a body carries `Content-MD5`. Under SigV4 the server recomputes
/// the signed SHA-256 of the body (or of each aws-chunked chunk), which
/// guards it; MD5 (600 MB/s here, a third of SHA-256 with SHA-NI) is added
/// only where nothing else guards the body: SigV2, and UNSIGNED-PAYLOAD
/// over plain HTTP (over TLS, every record's MAC does); and XML bodies
/// always (DeleteObjects requires it).
fn md5_needed(body: &Body, sig: SignatureVersion, payload: PayloadSigning, tls: bool) -> bool {
    match (body, sig) {
        (Body::Empty, _) => false,
        (Body::Xml(_), _) | (Body::Data(_), SignatureVersion::V2) => true,
        (Body::Data(_), SignatureVersion::V4) => payload == PayloadSigning::Unsigned && !tls,
        // SigV2 does not sign the checksum header: MD5, as above.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::ObjectClient;

    #[test]
    fn content_md5_only_where_nothing_else_guards_the_body() {
        use PayloadSigning::*;
        use SignatureVersion::*;
        let data = Body::Data(Bytes::from_static(b"x"));
        let chunked = Chunked { chunk_size: 1 };
        for tls in [false, true] {
            assert!(md5_needed(&data, V2, Sha256, tls), "SigV2 signs no body");
            assert!(!md5_needed(&data, V4, Sha256, tls), "signed SHA-256");
            assert!(!md5_needed(&data, V4, chunked, tls), "signed chunks");
            assert!(md5_needed(&Body::Xml(Bytes::new()), V4, Sha256, tls));
            assert!(!md5_needed(&Body::Empty, V2, Unsigned, tls));
        }
        assert!(md5_needed(&data, V4, Unsigned, false), "plain HTTP");
        assert!(!md5_needed(&data, V4, Unsigned, true), "TLS guards it");
    }

    /// Answers one request with `200 OK` and returns its head, as sent.
    fn one_request_server() -> (String, std::thread::JoinHandle<String>) {
        answering_once(b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n")
    }

    /// Answers one request with `answer` and returns its head, as sent.
    fn answering_once(answer: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
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
            conn.write_all(answer).expect("answer");
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

    /// A server that answers every request on one kept-alive connection
    /// with its headers and then its body, as two writes and with Nagle's
    /// algorithm on (Garage does this): the body waits until the headers
    /// are acknowledged. Returns the endpoint and the number of connections
    /// it accepted.
    fn nagle_server(answers: usize) -> (String, std::thread::JoinHandle<usize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            for _ in 0..answers {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    assert_eq!(conn.read(&mut byte).expect("read"), 1, "request cut");
                    head.push(byte[0]);
                }
                conn.write_all(b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 4096\r\n\r\n")
                    .expect("headers");
                conn.write_all(&[7u8; 4096]).expect("body");
            }
            // Any further connection would show the client did not keep
            // this one alive (then the test measured nothing).
            listener.set_nonblocking(true).expect("nonblocking");
            1 + listener.incoming().take_while(Result::is_ok).count()
        });
        (endpoint, server)
    }

    /// Without an immediate ACK of the headers, each of these answers
    /// waits for the client's delayed ACK, 40 ms at least on Linux: 20 of
    /// them would take 0.8 s or more. With it, a few ms in all. The bound
    /// leaves a wide margin on a loaded machine and still fails if any
    /// large part of the answers waits.
    #[tokio::test]
    async fn a_server_holding_the_body_back_for_an_ack_does_not_stall_reads() {
        const ANSWERS: usize = 20;
        let (endpoint, server) = nagle_server(ANSWERS);
        let client = S3Client::new(S3Config::new(endpoint), Credentials::new("AK", "SK")).unwrap();
        let started = Instant::now();
        for _ in 0..ANSWERS {
            let out = client
                .get_object("b", "k", &crate::s3::GetObjectParams::default())
                .await
                .expect("answered");
            assert_eq!(out.body.len(), 4096);
        }
        let took = started.elapsed();
        drop(client);
        assert_eq!(
            server.join().expect("server"),
            1,
            "one kept-alive connection"
        );
        assert!(
            took < std::time::Duration::from_millis(40 * ANSWERS as u64 / 2),
            "{ANSWERS} answers took {took:?}: delayed ACKs"
        );
    }

    /// A HEAD's answer states the object's length, larger than any document
    /// read whole, and has no body.
    #[tokio::test]
    async fn the_head_of_a_large_object_is_read() {
        let (endpoint, server) = answering_once(
            b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 107374182400\r\n\r\n",
        );
        let client = S3Client::new(S3Config::new(endpoint), Credentials::new("AK", "SK")).unwrap();
        let head = client
            .head_object("b", "big", None)
            .await
            .expect("answered");
        assert_eq!(head.size, 100 << 30);
        assert!(server.join().expect("server").starts_with("head /b/big "));
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
