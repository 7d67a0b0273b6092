//! Command-line options shared by the commands: how to reach the store and
//! with which credentials. Every option also reads an environment variable,
//! so scripts and fstab helpers can set them once.

use std::path::PathBuf;

use clap::Args;

use crate::config::{Addressing, PayloadSigning, S3Config, SignatureVersion};
use crate::s3::credentials::{self, CredentialsError, CredentialsSource};
use crate::s3::{Credentials, S3Client, S3Error};

#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3 endpoint, e.g. http://flashblade-data-vip:80
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub endpoint: String,
    /// Region used in SigV4 signatures.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Profile of ~/.aws/credentials (or of --credentials-file).
    #[arg(long, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// Credentials file in the AWS format; refused unless mode 0600.
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Sign with AWS Signature Version 2 instead of 4.
    #[arg(long)]
    pub sigv2: bool,
    /// Address buckets as bucket.endpoint instead of endpoint/bucket.
    #[arg(long)]
    pub virtual_hosted: bool,
    /// Send object bodies as UNSIGNED-PAYLOAD (Content-MD5 still checked).
    #[arg(long, conflicts_with = "chunked_signing")]
    pub unsigned_payload: bool,
    /// Send object bodies as aws-chunked, each 64 KiB chunk signed.
    #[arg(long)]
    pub chunked_signing: bool,
    /// Do not ask for URL-encoded listings (for servers that claim to
    /// encode keys but do not; detected by itself in most cases).
    #[arg(long)]
    pub no_list_url_encoding: bool,
    /// Extra CA certificates (PEM) to trust for https endpoints.
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
}

/// The chunk size of `--chunked-signing`: AWS's examples and SDKs use 64 KiB.
const SIGNED_CHUNK_SIZE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Client(#[from] S3Error),
}

impl S3Args {
    pub fn config(&self) -> S3Config {
        let mut cfg = S3Config::new(&self.endpoint);
        cfg.region.clone_from(&self.region);
        if self.sigv2 {
            cfg.signature = SignatureVersion::V2;
        }
        if self.virtual_hosted {
            cfg.addressing = Addressing::VirtualHosted;
        }
        if self.unsigned_payload {
            cfg.payload_signing = PayloadSigning::Unsigned;
        }
        if self.chunked_signing {
            cfg.payload_signing = PayloadSigning::Chunked {
                chunk_size: SIGNED_CHUNK_SIZE,
            };
        }
        cfg.list_url_encoding = !self.no_list_url_encoding;
        cfg.ca_bundle.clone_from(&self.ca_bundle);
        cfg
    }

    pub fn credentials(&self) -> Result<Credentials, CredentialsError> {
        credentials::load(&CredentialsSource {
            file: self.credentials_file.clone(),
            profile: self.profile.clone(),
        })
    }

    pub fn client(&self) -> Result<S3Client, SetupError> {
        Ok(S3Client::new(self.config(), self.credentials()?)?)
    }
}
