//! aws-chunked framing of a SigV4 streaming body (each chunk signed by
//! `sign::ChunkSigner`), produced lazily.

use bytes::Bytes;

use super::sign;

/// The frames of an aws-chunked body: for each chunk its signed header, the
/// data (a zero-copy slice) and CRLF; then the signed empty final chunk.
/// Produced lazily, so a chunk is hashed only when the connection wants it.
pub(super) struct AwsChunks {
    data: Bytes,
    chunk_size: usize,
    signer: sign::ChunkSigner,
    pos: usize,
    pending: Vec<Bytes>,
    finished: bool,
}

impl AwsChunks {
    pub(super) fn new(data: Bytes, chunk_size: usize, signer: sign::ChunkSigner) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::Credentials;
    use crate::s3::sign::V4Scope;

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
}
