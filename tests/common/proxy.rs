//! Proxies between the client and a real server on loopback.
//!
//! `start`/`start_rules`: a fault-injecting HTTP proxy. Every request gets a
//! connection of its own (the proxy adds `Connection: close`, an unsigned
//! header, so signatures still verify upstream), which lets each request be
//! matched against the rules; a matching rule with faults left answers in
//! the server's place, the rest pass through byte for byte. On top of the
//! rules, [`FaultProxy::set_rate`] faults a share of all requests at random
//! (seeded) with a mix of every fault, and [`FaultProxy::set_outage`] gives
//! every request one fault, as a server that is down or silent would.
//!
//! `start_tls`: terminates TLS with a certificate from a CA made for the
//! test, and passes plain HTTP to the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 503 with an S3 SlowDown body.
    SlowDown,
    /// 500 with an S3 InternalError body.
    InternalError,
    /// 501 with an S3 NotImplemented body.
    NotImplemented,
    /// 200 OK whose body is an InternalError document (as CopyObject and
    /// CompleteMultipartUpload may answer).
    ErrorIn200,
    /// The connection is reset once the request has arrived.
    Reset,
    /// The request reaches the server, which acts on it; its answer is
    /// thrown away and the client's connection reset.
    LoseAnswer,
    /// The request waits at the proxy until [`FaultProxy::release`], then
    /// passes through.
    Hold,
    /// The connection is reset as soon as the request head has arrived,
    /// while the client may still be sending the body.
    ResetEarly,
    /// The server's answer is passed on up to half its body, then the
    /// connection is closed cleanly: a body shorter than its length.
    Truncate,
    /// As `Truncate`, but the connection is reset after half the body.
    ResetMidAnswer,
    /// The request passes through after a delay of 0.1 to 1 s.
    Delay,
    /// Nothing ever comes back: the request is read and the connection
    /// kept open, silent.
    Silent,
    /// 200 OK with a document that is not the XML asked for: truncated
    /// mid-element, with bytes that are not UTF-8.
    Garbage,
    /// 200 OK with no length and a body that never ends.
    Endless,
    /// The request's body reaches the server with its middle byte changed
    /// (data, even in aws-chunked framing): what the body's digest is there
    /// to catch.
    CorruptBody,
}

/// What `set_rate` draws from.
const RANDOM_MIX: [Fault; 9] = [
    Fault::SlowDown,
    Fault::InternalError,
    Fault::Reset,
    Fault::ResetEarly,
    Fault::LoseAnswer,
    Fault::Truncate,
    Fault::ResetMidAnswer,
    Fault::Delay,
    Fault::ErrorIn200,
];

/// Faults for the requests whose head (lower-cased) holds every string of
/// `when`: at most `count` of them.
#[derive(Debug, Clone)]
pub struct Rule {
    pub when: Vec<&'static str>,
    pub fault: Fault,
    pub count: usize,
}

struct RuleState {
    rule: Rule,
    left: AtomicUsize,
}

/// What the proxy does beyond the rules, changeable while it runs.
struct Control {
    injected: AtomicUsize,
    /// Requests seen, faulted or not.
    seen: AtomicUsize,
    gate: tokio::sync::Semaphore,
    /// Percent of requests faulted at random.
    rate: AtomicUsize,
    rng: Mutex<fastrand::Rng>,
    outage: Mutex<Option<Fault>>,
    by_kind: Mutex<std::collections::BTreeMap<String, usize>>,
}

impl Control {
    fn count(&self, fault: Fault) {
        self.injected.fetch_add(1, Ordering::SeqCst);
        *self
            .by_kind
            .lock()
            .unwrap()
            .entry(format!("{fault:?}"))
            .or_default() += 1;
    }

    fn draw(&self, head: &str) -> Option<Fault> {
        if let Some(f) = *self.outage.lock().unwrap() {
            return Some(f);
        }
        let rate = self.rate.load(Ordering::SeqCst);
        let mut rng = self.rng.lock().unwrap();
        if rate == 0 || rng.usize(0..100) >= rate {
            return None;
        }
        // An error inside a 200 is only sent by the operations that may
        // send one; elsewhere a real server never does.
        let may_embed = head.contains("x-amz-copy-source")
            || (head.starts_with("post ") && head.contains("uploadid="));
        loop {
            let f = RANDOM_MIX[rng.usize(0..RANDOM_MIX.len())];
            if f != Fault::ErrorIn200 || may_embed {
                return Some(f);
            }
        }
    }
}

pub struct FaultProxy {
    pub endpoint: String,
    control: Arc<Control>,
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
        self.control.injected.load(Ordering::SeqCst)
    }

    /// Requests that reached the proxy so far.
    pub fn seen(&self) -> usize {
        self.control.seen.load(Ordering::SeqCst)
    }

    /// Faults injected so far, by kind.
    pub fn injected_by_kind(&self) -> std::collections::BTreeMap<String, usize> {
        self.control.by_kind.lock().unwrap().clone()
    }

    /// Lets `n` held requests go on.
    pub fn release(&self, n: usize) {
        self.control.gate.add_permits(n);
    }

    /// Faults `percent` of the requests not matched by a rule, each with a
    /// fault drawn from a mix of all kinds, from a generator seeded with
    /// `seed`. (Which request gets which fault still depends on the order
    /// requests arrive in.)
    pub fn set_rate(&self, percent: usize, seed: u64) {
        *self.control.rng.lock().unwrap() = fastrand::Rng::with_seed(seed);
        self.control.rate.store(percent, Ordering::SeqCst);
    }

    /// Every request not matched by a rule gets `fault`, until `None`.
    pub fn set_outage(&self, fault: Option<Fault>) {
        *self.control.outage.lock().unwrap() = fault;
    }
}

/// Faults the first `count` requests, whatever they are.
pub async fn start(upstream: SocketAddr, fault: Fault, count: usize) -> FaultProxy {
    start_rules(
        upstream,
        vec![Rule {
            when: vec![],
            fault,
            count,
        }],
    )
    .await
}

pub async fn start_rules(upstream: SocketAddr, rules: Vec<Rule>) -> FaultProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().unwrap();
    let rules: Arc<Vec<RuleState>> = Arc::new(
        rules
            .into_iter()
            .map(|rule| RuleState {
                left: AtomicUsize::new(rule.count),
                rule,
            })
            .collect(),
    );
    let control = Arc::new(Control {
        injected: AtomicUsize::new(0),
        seen: AtomicUsize::new(0),
        gate: tokio::sync::Semaphore::new(0),
        rate: AtomicUsize::new(0),
        rng: Mutex::new(fastrand::Rng::with_seed(0)),
        outage: Mutex::new(None),
        by_kind: Mutex::new(Default::default()),
    });
    let control2 = control.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let rules = rules.clone();
            let control = control2.clone();
            tokio::spawn(async move {
                let _ = serve(conn, upstream, &rules, &control).await;
            });
        }
    });
    FaultProxy {
        endpoint: format!("http://{addr}"),
        control,
        task,
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    rules: &[RuleState],
    control: &Control,
) -> std::io::Result<()> {
    let (head, rest) = read_head(&mut client).await?;
    control.seen.fetch_add(1, Ordering::SeqCst);
    let lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let fault = rules
        .iter()
        .find_map(|r| {
            let applies = r.rule.when.iter().all(|w| lower.contains(w))
                && r.left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            applies.then_some(r.rule.fault)
        })
        .or_else(|| control.draw(&lower));
    let is_head = lower.starts_with("head ");
    let head = with_connection_close(&head);
    let body_len = content_length(&head).unwrap_or(0);
    let unread = body_len.saturating_sub(rest.len());
    if let Some(f) = fault {
        control.count(f);
    }
    match fault {
        None => {}
        Some(Fault::Hold) => {
            control.gate.acquire().await.expect("gate open").forget();
        }
        Some(Fault::Delay) => {
            let ms = 100 + fastrand::u64(0..900);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Some(Fault::ResetEarly) => {
            client.set_zero_linger()?;
            return Ok(());
        }
        Some(Fault::Silent) => {
            copy_exact(&mut client, &mut tokio::io::sink(), unread).await?;
            // Held open and silent until the client gives up.
            let mut byte = [0u8; 1];
            let _ = client.read(&mut byte).await;
            return Ok(());
        }
        Some(
            f @ (Fault::SlowDown
            | Fault::InternalError
            | Fault::NotImplemented
            | Fault::ErrorIn200
            | Fault::Reset
            | Fault::Garbage
            | Fault::Endless),
        ) => return answer_in_place(client, f, unread).await,
        Some(Fault::LoseAnswer | Fault::Truncate | Fault::ResetMidAnswer | Fault::CorruptBody) => {}
    }
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(&head).await?;
    if fault == Some(Fault::CorruptBody) && body_len > 0 {
        let mut body = rest;
        let have = body.len();
        body.resize(body_len, 0);
        client.read_exact(&mut body[have..]).await?;
        body[body_len / 2] ^= 0x5a;
        server.write_all(&body).await?;
    } else {
        server.write_all(&rest).await?;
        copy_exact(&mut client, &mut server, unread).await?;
    }
    let (answer_head, answer_rest) = read_head(&mut server).await?;
    let answer_len = content_length(&answer_head).filter(|_| !is_head);
    match fault {
        Some(Fault::LoseAnswer) => {
            let mut answer = Vec::new();
            server.read_to_end(&mut answer).await?;
            client.set_zero_linger()?;
            Ok(())
        }
        Some(f @ (Fault::Truncate | Fault::ResetMidAnswer)) => {
            // An answer without a body to cut is lost whole instead.
            let cut = answer_len.unwrap_or(0) / 2;
            if cut > 0 {
                client
                    .write_all(&with_connection_close(&answer_head))
                    .await?;
                let mut answer = answer_rest;
                let have = answer.len();
                if have < cut {
                    answer.resize(cut, 0);
                    server.read_exact(&mut answer[have..]).await?;
                }
                client.write_all(&answer[..cut]).await?;
            }
            if f == Fault::Truncate && cut > 0 {
                client.shutdown().await
            } else {
                client.set_zero_linger()
            }
        }
        _ => {
            // The answer must say `Connection: close` too, or the client
            // would pool this connection and send later requests past the
            // rules.
            client
                .write_all(&with_connection_close(&answer_head))
                .await?;
            client.write_all(&answer_rest).await?;
            tokio::io::copy(&mut server, &mut client).await?;
            client.shutdown().await
        }
    }
}

/// Answers in the server's place, which never sees the request.
async fn answer_in_place(
    mut client: TcpStream,
    fault: Fault,
    unread: usize,
) -> std::io::Result<()> {
    // Take in the whole body first, so the client reads our answer rather
    // than a reset caused by unread bytes.
    copy_exact(&mut client, &mut tokio::io::sink(), unread).await?;
    match fault {
        Fault::Garbage => {
            let body: &[u8] =
                b"<?xml version=\"1.0\"?><ListBucketResult><Contents><Key>\xff\xfe</Ke<Size>-1</Contents";
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            client.write_all(head.as_bytes()).await?;
            client.write_all(body).await?;
            return client.shutdown().await;
        }
        Fault::Endless => {
            client
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nConnection: close\r\n\r\n<ListBucketResult>")
                .await?;
            let chunk = b"<Contents><Key>k</Key></Contents>".repeat(2000);
            // Until the client hangs up.
            loop {
                client.write_all(&chunk).await?;
            }
        }
        _ => {}
    }
    let (status, code) = match fault {
        Fault::SlowDown => ("503 Slow Down", "SlowDown"),
        Fault::InternalError => ("500 Internal Server Error", "InternalError"),
        Fault::NotImplemented => ("501 Not Implemented", "NotImplemented"),
        Fault::ErrorIn200 => ("200 OK", "InternalError"),
        _ => {
            client.set_zero_linger()?;
            return Ok(());
        }
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message><RequestId>proxy</RequestId></Error>"
    );
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(answer.as_bytes()).await?;
    client.shutdown().await
}

async fn copy_exact<R, W>(from: &mut R, to: &mut W, mut remaining: usize) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    while remaining > 0 {
        let want = remaining.min(buf.len());
        let n = from.read(&mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).await?;
        remaining -= n;
    }
    Ok(())
}

/// Reads up to the end of the request head; returns the head and whatever
/// body bytes came with it.
async fn read_head<S: AsyncRead + Unpin>(conn: &mut S) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
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

/// A request or response head with any Connection header replaced by
/// `Connection: close`.
fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len() + 20);
    for line in text.trim_end_matches("\r\n").split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
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

pub struct TlsProxy {
    pub endpoint: String,
    /// PEM of the CA that signed the proxy's certificate.
    pub ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An https front for `upstream`, at `https://localhost:PORT`, with a
/// certificate signed by a CA made for this proxy alone.
pub async fn start_tls(upstream: SocketAddr) -> TlsProxy {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bladefs test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return;
                };
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    TlsProxy {
        endpoint: format!("https://localhost:{port}"),
        ca_pem: ca.pem(),
        task,
    }
}
