//! Plain configuration structs, filled by the CLI (or by tests), each field
//! documented with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::s3::retry::RetryConfig;

/// How requests name the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Addressing {
    /// `http://endpoint/bucket/key`: works with any endpoint and IP addresses.
    #[default]
    PathStyle,
    /// `http://bucket.endpoint/key`: needs DNS (or a wildcard certificate)
    /// for every bucket name.
    VirtualHosted,
}

/// How the body of PUT object and upload part requests is covered by SigV4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadSigning {
    /// The body's SHA-256 is computed and signed (the default: end-to-end
    /// integrity on plain HTTP, which FlashBlade prefers).
    #[default]
    Sha256,
    /// `UNSIGNED-PAYLOAD`: saves hashing CPU; TLS guards the body, or over
    /// plain HTTP Content-MD5 (which costs more than the SHA-256).
    Unsigned,
    /// `UNSIGNED-PAYLOAD` with `x-amz-checksum-crc32c`, which the server
    /// checks: a twentieth of the SHA-256's CPU. Not in the FlashBlade
    /// contract; for servers that check it (Garage, Ceph RGW, AWS).
    Crc32c,
    /// `aws-chunked`: the body goes in chunks of this many bytes, each signed.
    Chunked { chunk_size: usize },
}

/// Which signature the client computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureVersion {
    #[default]
    V4,
    /// For old stores and gateways that only speak Signature Version 2.
    V2,
}

/// Which ListObjects API serves `list_objects`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListApi {
    /// V2, switching to V1 for good if the server answers V2 with NotImplemented.
    #[default]
    Auto,
    V2,
    V1,
}

/// Everything the S3 client needs besides credentials.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `http://host:port` or `https://host:port`. No default: a mount must
    /// name its store (the CLI reads AWS_ENDPOINT_URL).
    pub endpoint: String,
    /// Region in SigV4's credential scope. Default `us-east-1`.
    pub region: String,
    pub addressing: Addressing,
    pub signature: SignatureVersion,
    pub payload_signing: PayloadSigning,
    /// PEM file of extra CA certificates trusted for https endpoints, on top
    /// of the system's.
    pub ca_bundle: Option<PathBuf>,
    /// Time to establish a TCP (and TLS) connection. Default 10 s.
    pub connect_timeout: Duration,
    /// Longest silence while waiting for or reading a response. Default 30 s.
    pub read_timeout: Duration,
    pub retry: RetryConfig,
    /// Ask for `encoding-type=url` in listings so that keys holding
    /// characters XML 1.0 cannot carry survive. Turn off for servers that
    /// echo the parameter but send raw keys (s3s-fs). Default on.
    pub list_url_encoding: bool,
    pub list_api: ListApi,
    /// Idle connections kept per host for reuse. Default 64.
    pub max_idle_connections: usize,
    /// Host names connected to at fixed addresses instead of through DNS
    /// (like curl's `--resolve`): for virtual-hosted bucket names that DNS
    /// does not know, or to pin a data VIP. The URL's port is kept.
    pub resolve: Vec<(String, SocketAddr)>,
}

impl S3Config {
    pub fn new(endpoint: impl Into<String>) -> Self {
        S3Config {
            endpoint: endpoint.into(),
            region: "us-east-1".to_string(),
            addressing: Addressing::default(),
            signature: SignatureVersion::default(),
            payload_signing: PayloadSigning::default(),
            ca_bundle: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            retry: RetryConfig::default(),
            list_url_encoding: true,
            list_api: ListApi::default(),
            max_idle_connections: 64,
            resolve: Vec::new(),
        }
    }
}
