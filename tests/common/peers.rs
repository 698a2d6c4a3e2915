//! Real peers for the adapter tests: a small HTTP/1.1 server on 127.0.0.1 whose answers the
//! test scripts, and Debian's aiosmtpd started as an SMTP server writing a Maildir.

#![allow(dead_code)] // each test binary uses its part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request as the server received it.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON request body")
    }
}

/// What the server answers.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// Wait this long before answering.
    pub(crate) delay: Duration,
    /// Send the body chunked, without a Content-Length.
    pub(crate) chunked: bool,
}

impl Reply {
    pub(crate) fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            chunked: false,
        }
    }

    pub(crate) fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Reply::new(200, body).header("content-type", content_type)
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub(crate) fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// An HTTP/1.1 server on 127.0.0.1 (one request per connection).
pub(crate) struct HttpServer {
    pub(crate) addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpServer {
    /// Starts a server answering every request with `handler`.
    pub(crate) async fn start(
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> HttpServer {
        Self::start_on(0, handler).await
    }

    /// Starts a server on `port` of 127.0.0.1 (0: any free port).
    pub(crate) async fn start_on(
        port: u16,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> HttpServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let (handler, seen) = (handler.clone(), seen.clone());
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else { return };
                    seen.lock().unwrap().push(request.clone());
                    let reply = handler(&request);
                    tokio::time::sleep(reply.delay).await;
                    let _ = write_reply(&mut socket, &reply).await;
                });
            }
        });
        HttpServer { addr, requests, task }
    }

    /// A port nothing listens on now (bound, then let go): a receiver that is down.
    pub(crate) fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub(crate) fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request { method, path, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

async fn write_reply(socket: &mut tokio::net::TcpStream, reply: &Reply) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} X\r\nconnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if reply.chunked {
        head.push_str("transfer-encoding: chunked\r\n\r\n");
        socket.write_all(head.as_bytes()).await?;
        for part in reply.body.chunks(16 * 1024) {
            socket.write_all(format!("{:x}\r\n", part.len()).as_bytes()).await?;
            socket.write_all(part).await?;
            socket.write_all(b"\r\n").await?;
        }
        socket.write_all(b"0\r\n\r\n").await?;
    } else {
        head.push_str(&format!("content-length: {}\r\n\r\n", reply.body.len()));
        socket.write_all(head.as_bytes()).await?;
        socket.write_all(&reply.body).await?;
    }
    socket.flush().await
}

/// Whether a missing peer must fail the test (CI sets `STEADFAST_REQUIRE_PEERS=1`) rather than
/// skip it.
pub(crate) fn peers_required() -> bool {
    std::env::var("STEADFAST_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Skips (returns `None`, saying why) or, when peers are required, panics.
pub(crate) fn missing_peer<T>(what: &str) -> Option<T> {
    if peers_required() {
        panic!("{what} is required (STEADFAST_REQUIRE_PEERS=1) but not available");
    }
    eprintln!("SKIPPED: {what} is not available; install it (see .ci/run) to run this test");
    None
}

/// A peer's process, killed and reaped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// Takes `child` once it listens on 127.0.0.1:`port` (5 s at most; then it is killed).
    fn listening(child: Child, port: u16, what: &str) -> Process {
        let process = Process(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return process;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("{what} did not listen on 127.0.0.1:{port} within 5 s");
    }
}

/// aiosmtpd, writing every message it receives into a Maildir.
pub(crate) struct Smtp {
    pub(crate) port: u16,
    pub(crate) maildir: PathBuf,
    _process: Process,
}

impl Smtp {
    /// Starts aiosmtpd on a free port of 127.0.0.1, or `None` if it is not installed (and
    /// peers are not required).
    pub(crate) fn start(dir: &Path) -> Option<Smtp> {
        Smtp::launch(dir, false)
    }

    /// aiosmtpd offering STARTTLS with a self-signed certificate for `localhost`, written to
    /// `dir/cert.pem` (the CA to trust).
    pub(crate) fn start_tls(dir: &Path) -> Option<Smtp> {
        Smtp::launch(dir, true)
    }

    fn launch(dir: &Path, tls: bool) -> Option<Smtp> {
        let python = ["/usr/bin/python3", "python3"].into_iter().find(|p| {
            Command::new(p)
                .args(["-c", "import aiosmtpd"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        let Some(python) = python else {
            return missing_peer("aiosmtpd (Debian's python3-aiosmtpd)");
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let maildir = dir.join("maildir");
        let mut command = Command::new(python);
        command.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")]);
        if tls {
            let (cert, key) = test_certificates(dir)?;
            command.arg("--tlscert").arg(&cert).arg("--tlskey").arg(&key);
        }
        let child = command
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        Some(Smtp { port, maildir, _process: Process::listening(child, port, "aiosmtpd") })
    }

    /// Every message delivered so far, as text.
    pub(crate) fn messages(&self) -> Vec<String> {
        let mut messages = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) else { continue };
            for entry in entries {
                messages.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
            }
        }
        messages
    }
}

/// A test CA (`dir/cert.pem`, the certificate to trust) and a server certificate for
/// `localhost` signed by it; returns the server's certificate and key files, or `None` (having
/// said why) if openssl is missing and peers are not required.
pub(crate) fn test_certificates(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let script = format!(
        "set -e; cd '{}'
        openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=steadfast-test-ca \
            -keyout ca.key -out cert.pem
        openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr
        printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' > ext.cnf
        openssl x509 -req -in server.csr -CA cert.pem -CAkey ca.key -CAcreateserial \
            -days 1 -extfile ext.cnf -out server.pem",
        dir.display()
    );
    let made = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        return missing_peer("openssl (to make test certificates)");
    }
    Some((dir.join("server.pem"), dir.join("server.key")))
}

/// Python's HTTP server behind TLS (a certificate for `localhost` from [`test_certificates`]),
/// serving the files of a folder on 127.0.0.1.
pub(crate) struct HttpsServer {
    pub(crate) port: u16,
    _process: Process,
}

impl HttpsServer {
    pub(crate) fn start(dir: &Path, root: &Path) -> Option<HttpsServer> {
        let (cert, key) = test_certificates(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let script = "import functools, http.server, ssl, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
server = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[3], sys.argv[4])
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()";
        let child = Command::new("python3")
            .args(["-c", script, &port.to_string()])
            .arg(root)
            .arg(&cert)
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return missing_peer("python3 (for a local HTTPS server)") };
        Some(HttpsServer { port, _process: Process::listening(child, port, "the HTTPS server") })
    }
}

/// The value of header `name` in a message's header block (unfolded).
pub(crate) fn header(message: &str, name: &str) -> Option<String> {
    let message = message.replace("\r\n", "\n");
    let head = message.split("\n\n").next().unwrap_or("").replace("\n ", " ").replace("\n\t", " ");
    head.lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)))
        .map(|(_, v)| v.trim().to_owned())
}

/// The names of every header in a message's header block.
pub(crate) fn header_names(message: &str) -> Vec<String> {
    let message = message.replace("\r\n", "\n");
    let head = message.split("\n\n").next().unwrap_or("");
    head.lines()
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_owned()))
        .collect()
}
