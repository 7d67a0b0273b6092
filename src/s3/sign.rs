//! Request signing: AWS Signature Version 4 (header auth, with a SHA-256,
//! `UNSIGNED-PAYLOAD` or `aws-chunked` streaming payload) and Signature
//! Version 2, as pure functions of the request, the credentials and a clock
//! value the caller passes in. Nothing here does I/O, so every path is unit
//! tested against AWS's published example signatures.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;

type HmacSha256 = Hmac<Sha256>;
type HmacSha1 = Hmac<sha1::Sha1>;

/// Payload hash for requests whose body is not hashed (allowed for S3 over
/// any transport; the body is still protected by Content-MD5 where we send it).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Payload hash announcing an `aws-chunked` body whose chunks are each signed.
pub const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// Hex SHA-256 of the empty string: the payload hash of every body-less request.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A secret that never shows itself in `Debug` output, logs or errors, and
/// compares in constant time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for the signer and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        // Length is not secret-dependent in a useful way; the bytes are
        // folded without an early exit so timing does not reveal a prefix.
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for Secret {}

/// An access key pair, with an optional session token (STS).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: Secret::new(secret_access_key),
            session_token: None,
        }
    }

    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(Secret::new(token));
        self
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// S3's flavour of percent-encoding (RFC 3986 unreserved characters kept,
/// everything else `%XX` in upper-case hex, UTF-8 bytes). `/` is kept in
/// object key paths and encoded everywhere else.
pub fn uri_encode(input: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len() * 3);
    for &b in input.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => {
                out.push('%');
                out.push(char::from(HEX_UPPER[(b >> 4) as usize]));
                out.push(char::from(HEX_UPPER[(b & 0xf) as usize]));
            }
        }
    }
    out
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The parts of an HTTP request that a signature covers.
#[derive(Debug, Clone)]
pub struct SignableRequest<'a> {
    pub method: &'a str,
    /// `host` or `host:port`, exactly as the Host header will be sent.
    pub host: &'a str,
    /// The request path, already URI-encoded (as it goes on the wire).
    pub path: &'a str,
    /// Query parameters, not encoded. A subresource such as `uploads` has "".
    pub query: &'a [(String, String)],
    /// Headers to sign besides `host` and the `x-amz-*` ones the signer adds,
    /// with lower-case names.
    pub headers: &'a [(String, String)],
}

/// What SigV4 needs besides the request.
#[derive(Debug, Clone, Copy)]
pub struct V4Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
    pub time: OffsetDateTime,
}

impl V4Scope<'_> {
    fn amz_date(&self) -> String {
        self.time
            .format(format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .expect("formatting a UTC date cannot fail")
    }

    fn short_date(&self) -> String {
        self.time
            .format(format_description!("[year][month][day]"))
            .expect("formatting a UTC date cannot fail")
    }

    fn credential_scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.short_date(),
            self.region,
            self.service
        )
    }
}

/// The result of signing: headers to add to the request, and for a streaming
/// body the signer that signs its chunks.
#[derive(Debug)]
pub struct SignedHeaders {
    pub headers: Vec<(String, String)>,
    /// The request signature (the "seed" signature of an aws-chunked body).
    pub signature: String,
}

/// Builds the canonical query string: every name and value encoded, sorted
/// by name then value.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

fn trim_header_value(v: &str) -> String {
    // SigV4 collapses runs of spaces inside a value to one and trims the ends.
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn signing_key(secret: &Secret, scope: &V4Scope<'_>) -> Vec<u8> {
    let k_secret = format!("AWS4{}", secret.expose());
    let k_date = hmac_sha256(k_secret.as_bytes(), scope.short_date().as_bytes());
    let k_region = hmac_sha256(&k_date, scope.region.as_bytes());
    let k_service = hmac_sha256(&k_region, scope.service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// Signs a request with SigV4 header authentication. `payload_hash` is the
/// hex SHA-256 of the body, [`UNSIGNED_PAYLOAD`] or [`STREAMING_PAYLOAD`].
/// Returns the headers to add: `x-amz-date`, `x-amz-content-sha256`,
/// `x-amz-security-token` (with a session token) and `authorization`.
pub fn sign_v4(
    req: &SignableRequest<'_>,
    creds: &Credentials,
    scope: &V4Scope<'_>,
    payload_hash: &str,
) -> SignedHeaders {
    let amz_date = scope.amz_date();
    let mut added = vec![
        ("x-amz-date".to_string(), amz_date.clone()),
        ("x-amz-content-sha256".to_string(), payload_hash.to_string()),
    ];
    if let Some(token) = &creds.session_token {
        added.push((
            "x-amz-security-token".to_string(),
            token.expose().to_string(),
        ));
    }

    let mut to_sign: Vec<(String, String)> = Vec::with_capacity(req.headers.len() + 4);
    to_sign.push(("host".to_string(), req.host.to_string()));
    for (k, v) in req.headers.iter().chain(added.iter()) {
        to_sign.push((k.to_ascii_lowercase(), trim_header_value(v)));
    }
    to_sign.sort();

    let mut canonical_headers = String::new();
    for (k, v) in &to_sign {
        canonical_headers.push_str(k);
        canonical_headers.push(':');
        canonical_headers.push_str(v);
        canonical_headers.push('\n');
    }
    let signed_headers = to_sign
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");

    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.path,
        canonical_query(req.query),
        canonical_headers,
        signed_headers,
        payload_hash
    );
    let scope_str = scope.credential_scope();
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{}\n{}",
        amz_date,
        scope_str,
        sha256_hex(canonical_request.as_bytes())
    );
    let signature = hex::encode(hmac_sha256(
        &signing_key(&creds.secret_access_key, scope),
        string_to_sign.as_bytes(),
    ));
    added.push((
        "authorization".to_string(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{},SignedHeaders={},Signature={}",
            creds.access_key_id, scope_str, signed_headers, signature
        ),
    ));
    SignedHeaders {
        headers: added,
        signature,
    }
}

/// Signs the chunks of an `aws-chunked` body one after another, each chunk's
/// signature chaining on the previous one (starting from the request's seed
/// signature), and frames them for the wire.
pub struct ChunkSigner {
    key: Vec<u8>,
    amz_date: String,
    scope: String,
    previous: String,
}

impl fmt::Debug for ChunkSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkSigner")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl ChunkSigner {
    pub fn new(creds: &Credentials, scope: &V4Scope<'_>, seed_signature: &str) -> Self {
        ChunkSigner {
            key: signing_key(&creds.secret_access_key, scope),
            amz_date: scope.amz_date(),
            scope: scope.credential_scope(),
            previous: seed_signature.to_string(),
        }
    }

    /// Signs `data` as the next chunk (an empty slice is the final chunk).
    pub fn sign_chunk(&mut self, data: &[u8]) -> String {
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            self.previous,
            EMPTY_SHA256,
            sha256_hex(data)
        );
        let sig = hex::encode(hmac_sha256(&self.key, string_to_sign.as_bytes()));
        self.previous.clone_from(&sig);
        sig
    }

    /// Signs `data` as the next chunk and returns the line that precedes it
    /// on the wire: `hex-size;chunk-signature=SIG\r\n`.
    pub fn chunk_header(&mut self, data: &[u8]) -> String {
        let sig = self.sign_chunk(data);
        format!("{:x};chunk-signature={}\r\n", data.len(), sig)
    }

    /// The chunk framed for the wire: its header, the data, `\r\n`.
    pub fn frame_chunk(&mut self, data: &[u8]) -> Vec<u8> {
        let header = self.chunk_header(data);
        let mut out = Vec::with_capacity(data.len() + CHUNK_OVERHEAD_MAX);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Upper bound of the framing bytes around one chunk (hex length of a u64,
/// `;chunk-signature=`, 64 hex digits, two CRLFs).
const CHUNK_OVERHEAD_MAX: usize = 16 + 17 + 64 + 4;

/// The encoded length of a body of `len` bytes sent as aws-chunked with
/// chunks of `chunk_size` bytes (plus the final empty chunk): the
/// Content-Length the request must carry.
pub fn chunked_encoded_len(len: u64, chunk_size: u64) -> u64 {
    fn framed(n: u64) -> u64 {
        let hex_digits = if n == 0 {
            1
        } else {
            (64 - n.leading_zeros() as u64).div_ceil(4)
        };
        hex_digits + ";chunk-signature=".len() as u64 + 64 + 2 + n + 2
    }
    let full = len / chunk_size;
    let rest = len % chunk_size;
    full * framed(chunk_size) + if rest > 0 { framed(rest) } else { 0 } + framed(0)
}

/// SigV2 sub-resources: the query parameters that belong to the
/// canonicalized resource (everything else, such as `prefix`, does not).
const V2_SUBRESOURCES: &[&str] = &[
    "acl",
    "delete",
    "lifecycle",
    "location",
    "logging",
    "notification",
    "partNumber",
    "policy",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// Signs a request with Signature Version 2. `resource` is the bucket-rooted
/// encoded path (`/bucket/key`), whatever the addressing style. `date` is the
/// value of the `Date` header the caller sends. Returns the headers to add
/// (`authorization`, and `x-amz-security-token` with a session token).
pub fn sign_v2(
    req: &SignableRequest<'_>,
    resource: &str,
    creds: &Credentials,
    date: &str,
) -> Vec<(String, String)> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let mut added = Vec::new();
    let mut amz: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-amz-"))
        .map(|(k, v)| (k.to_ascii_lowercase(), trim_header_value(v)))
        .collect();
    if let Some(token) = &creds.session_token {
        added.push((
            "x-amz-security-token".to_string(),
            token.expose().to_string(),
        ));
        amz.push((
            "x-amz-security-token".to_string(),
            token.expose().to_string(),
        ));
    }
    amz.sort();
    let mut canonical_amz = String::new();
    for (k, v) in &amz {
        canonical_amz.push_str(k);
        canonical_amz.push(':');
        canonical_amz.push_str(v);
        canonical_amz.push('\n');
    }

    let mut sub: Vec<&(String, String)> = req
        .query
        .iter()
        .filter(|(k, _)| V2_SUBRESOURCES.contains(&k.as_str()))
        .collect();
    sub.sort();
    let mut canonical_resource = resource.to_string();
    for (i, (k, v)) in sub.iter().enumerate() {
        canonical_resource.push(if i == 0 { '?' } else { '&' });
        canonical_resource.push_str(k);
        if !v.is_empty() {
            canonical_resource.push('=');
            canonical_resource.push_str(v);
        }
    }

    let string_to_sign = format!(
        "{}\n{}\n{}\n{}\n{}{}",
        req.method,
        header("content-md5"),
        header("content-type"),
        date,
        canonical_amz,
        canonical_resource
    );
    let mut mac =
        HmacSha1::new_from_slice(creds.secret_access_key.expose().as_bytes()).expect("any key");
    mac.update(string_to_sign.as_bytes());
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    added.push((
        "authorization".to_string(),
        format!("AWS {}:{}", creds.access_key_id, sig),
    ));
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    // The example credentials and values of AWS's "Signature Calculations for
    // the Authorization Header" page (sig-v4-header-based-auth.html).
    fn example_creds() -> Credentials {
        Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
    }

    fn example_scope() -> V4Scope<'static> {
        V4Scope {
            region: "us-east-1",
            service: "s3",
            time: datetime!(2013-05-24 00:00:00 UTC),
        }
    }

    fn signature_of(headers: &[(String, String)]) -> String {
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        auth.rsplit("Signature=").next().unwrap().to_string()
    }

    #[test]
    fn aws_example_get_object() {
        let headers = vec![("range".to_string(), "bytes=0-9".to_string())];
        let req = SignableRequest {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: &[],
            headers: &headers,
        };
        let signed = sign_v4(&req, &example_creds(), &example_scope(), EMPTY_SHA256);
        assert_eq!(
            signature_of(&signed.headers),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        let auth = &signed.headers.last().unwrap().1;
        assert!(auth.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"));
    }

    #[test]
    fn aws_example_put_object() {
        let body = b"Welcome to Amazon S3.";
        let headers = vec![
            (
                "date".to_string(),
                "Fri, 24 May 2013 00:00:00 GMT".to_string(),
            ),
            (
                "x-amz-storage-class".to_string(),
                "REDUCED_REDUNDANCY".to_string(),
            ),
        ];
        let req = SignableRequest {
            method: "PUT",
            host: "examplebucket.s3.amazonaws.com",
            path: &uri_encode("/test$file.text", true),
            query: &[],
            headers: &headers,
        };
        let hash = sha256_hex(body);
        assert_eq!(
            hash,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let signed = sign_v4(&req, &example_creds(), &example_scope(), &hash);
        assert_eq!(
            signature_of(&signed.headers),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn aws_example_get_bucket_lifecycle() {
        let query = vec![("lifecycle".to_string(), String::new())];
        let req = SignableRequest {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/",
            query: &query,
            headers: &[],
        };
        let signed = sign_v4(&req, &example_creds(), &example_scope(), EMPTY_SHA256);
        assert_eq!(
            signature_of(&signed.headers),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
    }

    #[test]
    fn aws_example_list_objects() {
        let query = vec![
            ("max-keys".to_string(), "2".to_string()),
            ("prefix".to_string(), "J".to_string()),
        ];
        let req = SignableRequest {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/",
            query: &query,
            headers: &[],
        };
        let signed = sign_v4(&req, &example_creds(), &example_scope(), EMPTY_SHA256);
        assert_eq!(
            signature_of(&signed.headers),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    // AWS's "Signature Calculations for the Authorization Header: Transferring
    // Payload in Multiple Chunks" example: 66560 bytes of 'a' in 64 KiB chunks.
    #[test]
    fn aws_example_chunked_upload() {
        let headers = vec![
            ("content-encoding".to_string(), "aws-chunked".to_string()),
            ("content-length".to_string(), "66824".to_string()),
            (
                "x-amz-decoded-content-length".to_string(),
                "66560".to_string(),
            ),
            (
                "x-amz-storage-class".to_string(),
                "REDUCED_REDUNDANCY".to_string(),
            ),
        ];
        let req = SignableRequest {
            method: "PUT",
            host: "s3.amazonaws.com",
            path: "/examplebucket/chunkObject.txt",
            query: &[],
            headers: &headers,
        };
        let creds = example_creds();
        let scope = example_scope();
        let signed = sign_v4(&req, &creds, &scope, STREAMING_PAYLOAD);
        assert_eq!(
            signed.signature,
            "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
        );
        let body = vec![b'a'; 66560];
        let mut chunks = ChunkSigner::new(&creds, &scope, &signed.signature);
        assert_eq!(
            chunks.sign_chunk(&body[..65536]),
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
        );
        assert_eq!(
            chunks.sign_chunk(&body[65536..]),
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
        );
        assert_eq!(
            chunks.sign_chunk(&[]),
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
        );
        assert_eq!(chunked_encoded_len(66560, 65536), 66824);
    }

    #[test]
    fn chunk_framing_matches_encoded_len() {
        let creds = example_creds();
        let scope = example_scope();
        for (len, chunk) in [(0u64, 8u64), (1, 8), (8, 8), (17, 8), (1 << 20, 65536)] {
            let mut signer = ChunkSigner::new(&creds, &scope, "seed");
            let data = vec![7u8; len as usize];
            let mut total = 0u64;
            for c in data.chunks(chunk as usize) {
                total += signer.frame_chunk(c).len() as u64;
            }
            total += signer.frame_chunk(&[]).len() as u64;
            assert_eq!(total, chunked_encoded_len(len, chunk), "len {len}");
        }
    }

    // AWS's SigV2 example (RESTAuthentication.html): GET of an object.
    #[test]
    fn aws_example_sigv2_get() {
        let req = SignableRequest {
            method: "GET",
            host: "johnsmith.s3.amazonaws.com",
            path: "/photos/puppy.jpg",
            query: &[],
            headers: &[],
        };
        let headers = sign_v2(
            &req,
            "/johnsmith/photos/puppy.jpg",
            &example_creds(),
            "Tue, 27 Mar 2007 19:36:42 +0000",
        );
        assert_eq!(
            headers.last().unwrap().1,
            "AWS AKIAIOSFODNN7EXAMPLE:bWq2s1WEIj+Ydj0vQ697zp+IXMU="
        );
    }

    #[test]
    fn sigv2_subresources_are_signed_and_list_params_are_not() {
        let creds = example_creds();
        let date = "Tue, 27 Mar 2007 19:36:42 +0000";
        let sign = |query: Vec<(String, String)>| {
            let req = SignableRequest {
                method: "GET",
                host: "h",
                path: "/b/k",
                query: &query,
                headers: &[],
            };
            sign_v2(&req, "/b/k", &creds, date)
                .last()
                .unwrap()
                .1
                .clone()
        };
        let bare = sign(vec![]);
        assert_eq!(bare, sign(vec![("prefix".into(), "x".into())]));
        assert_ne!(bare, sign(vec![("uploadId".into(), "1".into())]));
    }

    #[test]
    fn uri_encoding_of_odd_characters() {
        assert_eq!(
            uri_encode("a b+c%d?e#f~g=h&i", false),
            "a%20b%2Bc%25d%3Fe%23f~g%3Dh%26i"
        );
        assert_eq!(uri_encode("dir/é", true), "dir/%C3%A9");
        assert_eq!(uri_encode("dir/x", false), "dir%2Fx");
    }

    #[test]
    fn canonical_query_sorts_and_encodes() {
        let q = vec![
            ("prefix".to_string(), "a b".to_string()),
            ("list-type".to_string(), "2".to_string()),
            ("uploads".to_string(), String::new()),
        ];
        assert_eq!(canonical_query(&q), "list-type=2&prefix=a%20b&uploads=");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let creds = example_creds().with_session_token("TOKENVALUE");
        let shown = format!("{creds:?} {:?}", creds.secret_access_key);
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(!shown.contains("TOKENVALUE"), "{shown}");
        assert!(shown.contains("AKIAIOSFODNN7EXAMPLE"));
        let signer = ChunkSigner::new(&creds, &example_scope(), "seed");
        assert!(!format!("{signer:?}").contains("wJalr"));
    }

    #[test]
    fn secret_comparison() {
        assert_eq!(Secret::new("abc"), Secret::new("abc"));
        assert_ne!(Secret::new("abc"), Secret::new("abd"));
        assert_ne!(Secret::new("abc"), Secret::new("abcd"));
    }

    #[test]
    fn session_token_is_signed() {
        let creds = example_creds().with_session_token("tok");
        let req = SignableRequest {
            method: "GET",
            host: "h",
            path: "/",
            query: &[],
            headers: &[],
        };
        let signed = sign_v4(&req, &creds, &example_scope(), EMPTY_SHA256);
        assert!(
            signed
                .headers
                .iter()
                .any(|(k, v)| k == "x-amz-security-token" && v == "tok")
        );
        assert!(
            signed
                .headers
                .last()
                .unwrap()
                .1
                .contains("x-amz-security-token")
        );
    }
}
