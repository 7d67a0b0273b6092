//! The TCP connections under the HTTP client: resolving (with the
//! `--resolve`-style overrides of [`S3Config::resolve`]), connecting within
//! the connect timeout, and a stream that acknowledges what it receives at
//! once.
//!
//! Why acknowledge at once: on a kept-alive connection the kernel takes a
//! request-answer exchange for an interactive one and delays its ACKs (by
//! up to 40 ms). A server that writes an answer's headers and its body
//! separately without `TCP_NODELAY` (Garage does; Ceph RGW's beast does
//! unless told `tcp_nodelay=1`) then holds the body back under Nagle's
//! algorithm until the headers are acknowledged: every small GET took
//! ~44 ms instead of ~1 ms. Setting `TCP_QUICKACK` after each read sends
//! the pending ACK now (the flag does not stay set, hence every read).
//!
//! [`S3Config::resolve`]: super::config::S3Config::resolve

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Connects plain TCP streams; TLS is layered on top by hyper-rustls.
#[derive(Clone)]
pub(super) struct TcpConnector {
    resolve: Arc<Vec<(String, SocketAddr)>>,
    connect_timeout: Duration,
}

impl TcpConnector {
    pub(super) fn new(resolve: Vec<(String, SocketAddr)>, connect_timeout: Duration) -> Self {
        TcpConnector {
            resolve: Arc::new(resolve),
            connect_timeout,
        }
    }

    async fn connect(self, uri: Uri) -> io::Result<Stream> {
        let host = uri
            .host()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in the URL"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let connecting = async {
            // As curl's --resolve: the address is overridden, the port of
            // the URL kept.
            let addrs: Vec<SocketAddr> = match self.resolve.iter().find(|(n, _)| n == host) {
                Some((_, addr)) => vec![SocketAddr::new(addr.ip(), port)],
                None => tokio::net::lookup_host((host, port)).await?.collect(),
            };
            // Each address gets its share of the timeout, so one that does
            // not answer (an unreachable IPv6 route) leaves time for the next.
            let each = self.connect_timeout / addrs.len().max(1) as u32;
            let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
            for addr in addrs {
                match tokio::time::timeout(each, TcpStream::connect(addr)).await {
                    Ok(Ok(tcp)) => return Ok(tcp),
                    Ok(Err(e)) => last = e,
                    Err(_) => {
                        last = io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("{addr} did not answer within {each:?}"),
                        )
                    }
                }
            }
            Err(last)
        };
        let tcp = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {:?}", self.connect_timeout),
                )
            })??;
        tcp.set_nodelay(true)?;
        Ok(Stream {
            fd: tcp.as_raw_fd(),
            io: TokioIo::new(tcp),
        })
    }
}

impl tower_service::Service<Uri> for TcpConnector {
    type Response = Stream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// A connection's TCP stream, acknowledging every read at once.
pub(super) struct Stream {
    io: TokioIo<TcpStream>,
    /// The socket of `io`, for setsockopt.
    fd: RawFd,
}

fn quick_ack(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is the open socket of the stream that owns it, and the
    // option's value is a c_int as TCP_QUICKACK takes. Failure only means
    // the ACK keeps its usual timing.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if read.is_ready() {
            quick_ack(self.fd);
        }
        read
    }
}

impl Write for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}
