//! A fault-injecting TCP proxy between the client and a real server on
//! loopback. The first `count` connections get a fault instead of the
//! server; the rest pass through byte for byte (the signed Host header is
//! unchanged, so signatures still verify upstream).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 503 with an S3 SlowDown body.
    SlowDown,
    /// 500 with an S3 InternalError body.
    InternalError,
    /// The connection is reset once the request has arrived.
    Reset,
}

pub struct FaultProxy {
    pub endpoint: String,
    injected: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Faults injected so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }
}

pub async fn start(upstream: SocketAddr, fault: Fault, count: usize) -> FaultProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().unwrap();
    let left = Arc::new(AtomicUsize::new(count));
    let injected = Arc::new(AtomicUsize::new(0));
    let injected2 = injected.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let left = left.clone();
            let injected = injected2.clone();
            tokio::spawn(async move {
                let _ = serve(conn, upstream, fault, &left, &injected).await;
            });
        }
    });
    FaultProxy {
        endpoint: format!("http://{addr}"),
        injected,
        task,
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    left: &AtomicUsize,
    injected: &AtomicUsize,
) -> std::io::Result<()> {
    let (head, rest) = read_head(&mut client).await?;
    let take_fault = left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if !take_fault {
        let mut server = TcpStream::connect(upstream).await?;
        server.write_all(&head).await?;
        server.write_all(&rest).await?;
        tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        return Ok(());
    }
    injected.fetch_add(1, Ordering::SeqCst);
    // Take in the whole body first, so the client reads our answer rather
    // than a reset caused by unread bytes.
    let body_len = content_length(&head).unwrap_or(0);
    let mut remaining = body_len.saturating_sub(rest.len());
    let mut sink = vec![0u8; 64 * 1024];
    while remaining > 0 {
        let want = remaining.min(sink.len());
        let n = client.read(&mut sink[..want]).await?;
        if n == 0 {
            break;
        }
        remaining -= n;
    }
    let (status, code) = match fault {
        Fault::SlowDown => ("503 Slow Down", "SlowDown"),
        Fault::InternalError => ("500 Internal Server Error", "InternalError"),
        Fault::Reset => {
            client.set_zero_linger()?;
            drop(client);
            return Ok(());
        }
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message><RequestId>proxy</RequestId></Error>"
    );
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(answer.as_bytes()).await?;
    client.shutdown().await
}

/// Reads up to the end of the request head; returns the head and whatever
/// body bytes came with it.
async fn read_head(conn: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(pos + 4);
            return Ok((buf, rest));
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 || buf.len() > 256 * 1024 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}
