//! S3 errors: the typed error every client operation returns, and the one
//! place where an HTTP status and an S3 error code are given a meaning
//! ([`ErrorKind`]) and a retry verdict.

use std::fmt;

/// What an error means to the caller, whatever server said it and how.
/// The filesystem maps these (and only these) to errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The key, version or upload does not exist (404 NoSuchKey, NoSuchVersion,
    /// NoSuchUpload, a HEAD 404).
    NotFound,
    /// The bucket does not exist.
    NoSuchBucket,
    /// Credentials refused: bad signature, unknown key, expired token, denied.
    AccessDenied,
    /// A conditional request's precondition did not hold (412).
    PreconditionFailed,
    /// A GET with a Range beyond the object (416).
    InvalidRange,
    /// A GET with If-None-Match found the ETag unchanged (304).
    NotModified,
    /// Bucket not empty, bucket already exists, conflicting operation (409).
    Conflict,
    /// The server asked us to slow down (503 SlowDown / ServiceUnavailable).
    Throttled,
    /// The server failed (500, 502, 504, other 5xx).
    ServerError,
    /// The server does not implement this operation (501, or 405/400 with
    /// NotImplemented).
    NotImplemented,
    /// The request was refused as invalid (other 4xx: bad digest, bad name,
    /// key too long, entity too small...).
    InvalidRequest,
    /// The network failed: refused, reset, DNS.
    Transport,
    /// The server's TLS certificate was not trusted (see `--ca-bundle`).
    Tls,
    /// No answer in time.
    Timeout,
    /// The server answered something we could not understand.
    InvalidResponse,
}

/// S3 error codes of the FlashBlade contract that bladefs acts upon; any
/// other code is kept verbatim in `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3ErrorCode {
    AccessDenied,
    BadDigest,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    EntityTooLarge,
    EntityTooSmall,
    InternalError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidBucketName,
    InvalidBucketState,
    InvalidDigest,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    InvalidToken,
    KeyTooLong,
    MalformedXml,
    MethodNotAllowed,
    MissingContentLength,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    NotImplemented,
    OperationAborted,
    PreconditionFailed,
    RequestTimeTooSkewed,
    RequestTimeout,
    ServiceUnavailable,
    SignatureDoesNotMatch,
    SlowDown,
    /// Synthesised for body-less responses (HEAD) where only the status is known.
    NotFound,
    /// Synthesised for 304 answers to If-None-Match, which have no body.
    NotModified,
    Other(String),
}

impl S3ErrorCode {
    pub fn parse(code: &str) -> Self {
        use S3ErrorCode::*;
        match code {
            "AccessDenied" => AccessDenied,
            "BadDigest" => BadDigest,
            "BucketAlreadyExists" => BucketAlreadyExists,
            "BucketAlreadyOwnedByYou" => BucketAlreadyOwnedByYou,
            "BucketNotEmpty" => BucketNotEmpty,
            "EntityTooLarge" => EntityTooLarge,
            "EntityTooSmall" => EntityTooSmall,
            "InternalError" => InternalError,
            "InvalidAccessKeyId" => InvalidAccessKeyId,
            "InvalidArgument" => InvalidArgument,
            "InvalidBucketName" => InvalidBucketName,
            "InvalidBucketState" => InvalidBucketState,
            "InvalidDigest" => InvalidDigest,
            "InvalidPart" => InvalidPart,
            "InvalidPartOrder" => InvalidPartOrder,
            "InvalidRange" => InvalidRange,
            "InvalidRequest" => InvalidRequest,
            "InvalidToken" => InvalidToken,
            "KeyTooLong" => KeyTooLong,
            "MalformedXML" => MalformedXml,
            "MethodNotAllowed" => MethodNotAllowed,
            "MissingContentLength" => MissingContentLength,
            "NoSuchBucket" => NoSuchBucket,
            "NoSuchKey" => NoSuchKey,
            "NoSuchUpload" => NoSuchUpload,
            "NoSuchVersion" => NoSuchVersion,
            "NotImplemented" => NotImplemented,
            "OperationAborted" => OperationAborted,
            "PreconditionFailed" => PreconditionFailed,
            "RequestTimeTooSkewed" => RequestTimeTooSkewed,
            "RequestTimeout" => RequestTimeout,
            "ServiceUnavailable" => ServiceUnavailable,
            "SignatureDoesNotMatch" => SignatureDoesNotMatch,
            "SlowDown" => SlowDown,
            "NotFound" => NotFound,
            "NotModified" => NotModified,
            other => Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        use S3ErrorCode::*;
        match self {
            AccessDenied => "AccessDenied",
            BadDigest => "BadDigest",
            BucketAlreadyExists => "BucketAlreadyExists",
            BucketAlreadyOwnedByYou => "BucketAlreadyOwnedByYou",
            BucketNotEmpty => "BucketNotEmpty",
            EntityTooLarge => "EntityTooLarge",
            EntityTooSmall => "EntityTooSmall",
            InternalError => "InternalError",
            InvalidAccessKeyId => "InvalidAccessKeyId",
            InvalidArgument => "InvalidArgument",
            InvalidBucketName => "InvalidBucketName",
            InvalidBucketState => "InvalidBucketState",
            InvalidDigest => "InvalidDigest",
            InvalidPart => "InvalidPart",
            InvalidPartOrder => "InvalidPartOrder",
            InvalidRange => "InvalidRange",
            InvalidRequest => "InvalidRequest",
            InvalidToken => "InvalidToken",
            KeyTooLong => "KeyTooLong",
            MalformedXml => "MalformedXML",
            MethodNotAllowed => "MethodNotAllowed",
            MissingContentLength => "MissingContentLength",
            NoSuchBucket => "NoSuchBucket",
            NoSuchKey => "NoSuchKey",
            NoSuchUpload => "NoSuchUpload",
            NoSuchVersion => "NoSuchVersion",
            NotImplemented => "NotImplemented",
            OperationAborted => "OperationAborted",
            PreconditionFailed => "PreconditionFailed",
            RequestTimeTooSkewed => "RequestTimeTooSkewed",
            RequestTimeout => "RequestTimeout",
            ServiceUnavailable => "ServiceUnavailable",
            SignatureDoesNotMatch => "SignatureDoesNotMatch",
            SlowDown => "SlowDown",
            NotFound => "NotFound",
            NotModified => "NotModified",
            Other(s) => s,
        }
    }
}

impl fmt::Display for S3ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub status: u16,
    pub code: S3ErrorCode,
    pub message: String,
    pub request_id: Option<String>,
    /// The operation that failed, e.g. "GetObject".
    pub operation: &'static str,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (HTTP {}): {}",
            self.operation, self.code, self.status, self.message
        )?;
        if let Some(id) = &self.request_id {
            write!(f, " [request id {id}]")?;
        }
        Ok(())
    }
}

/// The error of every [`ObjectClient`](super::ObjectClient) operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum S3Error {
    #[error("{0}")]
    Service(Box<ServiceError>),
    #[error("{operation}: cannot reach the S3 endpoint: {detail}")]
    Transport {
        operation: &'static str,
        detail: String,
    },
    #[error(
        "{operation}: TLS certificate not trusted (use --ca-bundle for a private CA): {detail}"
    )]
    Tls {
        operation: &'static str,
        detail: String,
    },
    #[error("{operation}: no answer from the S3 endpoint within {seconds} s")]
    Timeout {
        operation: &'static str,
        seconds: u64,
    },
    #[error("{operation}: unexpected answer from the server: {detail}")]
    InvalidResponse {
        operation: &'static str,
        detail: String,
    },
    /// Refused before sending: the request could not be expressed correctly.
    #[error("{operation}: {detail}")]
    InvalidRequest {
        operation: &'static str,
        detail: String,
    },
}

impl S3Error {
    pub fn service(
        operation: &'static str,
        status: u16,
        code: S3ErrorCode,
        message: impl Into<String>,
        request_id: Option<String>,
    ) -> Self {
        S3Error::Service(Box::new(ServiceError {
            status,
            code,
            message: message.into(),
            request_id,
            operation,
        }))
    }

    /// The S3 error code, for service errors.
    pub fn code(&self) -> Option<&S3ErrorCode> {
        match self {
            S3Error::Service(e) => Some(&e.code),
            _ => None,
        }
    }

    /// What the error means: the single mapping from HTTP status and S3 code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            S3Error::Service(e) => kind_of(e.status, &e.code),
            S3Error::Transport { .. } => ErrorKind::Transport,
            S3Error::Tls { .. } => ErrorKind::Tls,
            S3Error::Timeout { .. } => ErrorKind::Timeout,
            S3Error::InvalidResponse { .. } => ErrorKind::InvalidResponse,
            S3Error::InvalidRequest { .. } => ErrorKind::InvalidRequest,
        }
    }

    /// Whether the same request may succeed if sent again: the server was
    /// busy or failed, or the network did.
    pub fn is_transient(&self) -> bool {
        match self {
            S3Error::Service(e) => {
                matches!(
                    e.code,
                    S3ErrorCode::RequestTimeout | S3ErrorCode::OperationAborted
                ) || matches!(
                    kind_of(e.status, &e.code),
                    ErrorKind::Throttled | ErrorKind::ServerError
                )
            }
            S3Error::Transport { .. } | S3Error::Timeout { .. } => true,
            // A body cut short or garbled in transit reads as malformed.
            S3Error::InvalidResponse { .. } => true,
            S3Error::InvalidRequest { .. } | S3Error::Tls { .. } => false,
        }
    }
}

/// Prefix of the detail of transport errors raised before a connection was
/// made, so that a message tells a refused connection from a broken one.
pub(crate) const CONNECT_FAILED: &str = "connection failed";

fn kind_of(status: u16, code: &S3ErrorCode) -> ErrorKind {
    use S3ErrorCode as C;
    match code {
        C::NoSuchKey | C::NoSuchVersion | C::NoSuchUpload | C::NotFound => ErrorKind::NotFound,
        C::NoSuchBucket => ErrorKind::NoSuchBucket,
        C::AccessDenied
        | C::InvalidAccessKeyId
        | C::SignatureDoesNotMatch
        | C::InvalidToken
        | C::RequestTimeTooSkewed => ErrorKind::AccessDenied,
        C::PreconditionFailed => ErrorKind::PreconditionFailed,
        C::NotModified => ErrorKind::NotModified,
        C::InvalidRange => ErrorKind::InvalidRange,
        C::BucketNotEmpty
        | C::BucketAlreadyExists
        | C::BucketAlreadyOwnedByYou
        | C::InvalidBucketState
        | C::OperationAborted => ErrorKind::Conflict,
        C::SlowDown | C::ServiceUnavailable => ErrorKind::Throttled,
        C::InternalError => ErrorKind::ServerError,
        C::NotImplemented => ErrorKind::NotImplemented,
        C::BadDigest
        | C::EntityTooLarge
        | C::EntityTooSmall
        | C::InvalidArgument
        | C::InvalidBucketName
        | C::InvalidDigest
        | C::InvalidPart
        | C::InvalidPartOrder
        | C::InvalidRequest
        | C::KeyTooLong
        | C::MalformedXml
        | C::MethodNotAllowed
        | C::MissingContentLength
        | C::RequestTimeout => ErrorKind::InvalidRequest,
        C::Other(_) => kind_of_status(status),
    }
}

fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        304 => ErrorKind::NotModified,
        401 | 403 => ErrorKind::AccessDenied,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        412 => ErrorKind::PreconditionFailed,
        416 => ErrorKind::InvalidRange,
        501 => ErrorKind::NotImplemented,
        503 => ErrorKind::Throttled,
        500..=599 => ErrorKind::ServerError,
        _ => ErrorKind::InvalidRequest,
    }
}

/// The code a body-less error response (HEAD, or a proxy's empty 5xx)
/// stands for.
pub(crate) fn code_for_status(status: u16) -> S3ErrorCode {
    match status {
        304 => S3ErrorCode::NotModified,
        403 => S3ErrorCode::AccessDenied,
        404 => S3ErrorCode::NotFound,
        412 => S3ErrorCode::PreconditionFailed,
        416 => S3ErrorCode::InvalidRange,
        500 => S3ErrorCode::InternalError,
        501 => S3ErrorCode::NotImplemented,
        503 => S3ErrorCode::ServiceUnavailable,
        other => S3ErrorCode::Other(format!("HTTP{other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(status: u16, code: &str) -> S3Error {
        S3Error::service("Op", status, S3ErrorCode::parse(code), "m", None)
    }

    #[test]
    fn codes_round_trip() {
        for code in ["NoSuchKey", "MalformedXML", "SlowDown", "Weird"] {
            assert_eq!(S3ErrorCode::parse(code).as_str(), code);
        }
    }

    #[test]
    fn meanings() {
        assert_eq!(svc(404, "NoSuchKey").kind(), ErrorKind::NotFound);
        assert_eq!(svc(404, "NoSuchBucket").kind(), ErrorKind::NoSuchBucket);
        assert_eq!(
            svc(403, "SignatureDoesNotMatch").kind(),
            ErrorKind::AccessDenied
        );
        assert_eq!(
            svc(412, "PreconditionFailed").kind(),
            ErrorKind::PreconditionFailed
        );
        assert_eq!(svc(416, "InvalidRange").kind(), ErrorKind::InvalidRange);
        assert_eq!(svc(409, "BucketNotEmpty").kind(), ErrorKind::Conflict);
        assert_eq!(svc(503, "SlowDown").kind(), ErrorKind::Throttled);
        assert_eq!(svc(502, "BadGateway").kind(), ErrorKind::ServerError);
        assert_eq!(svc(404, "Unknown").kind(), ErrorKind::NotFound);
    }

    #[test]
    fn transient_and_safe_to_resend() {
        assert!(svc(500, "InternalError").is_transient());
        assert!(svc(503, "SlowDown").is_transient());
        assert!(svc(400, "RequestTimeout").is_transient());
        assert!(!svc(404, "NoSuchKey").is_transient());
        assert!(!svc(400, "BadDigest").is_transient());
    }

    #[test]
    fn display_is_one_clear_line() {
        let e = S3Error::service(
            "GetObject",
            404,
            S3ErrorCode::NoSuchKey,
            "The specified key does not exist.",
            Some("R1".into()),
        );
        assert_eq!(
            e.to_string(),
            "GetObject: NoSuchKey (HTTP 404): The specified key does not exist. [request id R1]"
        );
    }
}
