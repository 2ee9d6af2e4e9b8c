//! A webhook receiver on 127.0.0.1 for the notification tests: records
//! every request (path, headers, body) and answers each path with the
//! status it is set to (200 by default).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    status: BTreeMap<String, u16>,
}

/// The receiver; it stops with the test process.
#[derive(Clone)]
pub struct Receiver {
    port: u16,
    shared: Arc<Mutex<Shared>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook receiver");
        let port = listener.local_addr().expect("its address").port();
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let inner = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let inner = inner.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let mut headers = BTreeMap::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                        }
                    }
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    let _ = reader.read_exact(&mut body);
                    let status = {
                        let mut s = inner.lock().unwrap_or_else(|e| e.into_inner());
                        s.received.push(Received {
                            path: path.clone(),
                            headers,
                            body,
                        });
                        s.status.get(&path).copied().unwrap_or(200)
                    };
                    let mut out = &stream;
                    let _ = write!(
                        out,
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                });
            }
        });
        Receiver { port, shared }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer requests to `path` with `status` from now on.
    pub fn answer(&self, path: &str, status: u16) {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.status.insert(path.to_string(), status);
    }

    /// Every request so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .received
            .clone()
    }

    /// The requests to `path` so far.
    pub fn to(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Received {
    /// Whether it carries a valid `x-engine-signature` of its body under
    /// `secret`: `sha256=HEX`, the HMAC-SHA256 of `TIMESTAMP.BODY`
    /// (computed here independently of the engine).
    pub fn signed_with(&self, secret: &str) -> bool {
        use hmac::{Hmac, Mac};
        let (Some(ts), Some(sig)) = (
            self.headers.get("x-engine-timestamp"),
            self.headers.get("x-engine-signature"),
        ) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        sig == &format!("sha256={want}")
    }
}
