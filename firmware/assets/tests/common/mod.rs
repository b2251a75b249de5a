//! What the asset tests share (the CLI's LAN tests include it too).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use trellis_assets::Index;

/// `len` bytes that neither compress nor repeat: every block differs.
#[must_use]
#[allow(dead_code)] // the CLI's tests use only `noise_from`
pub fn noise(len: usize) -> Vec<u8> {
    noise_from(len, 0x9E37_79B9_7F4A_7C15)
}

/// The same from another `seed` (not 0): the same bytes for the same seed.
#[must_use]
pub fn noise_from(len: usize, seed: u64) -> Vec<u8> {
    let mut x: u64 = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The path of the next request on a connection (its headers skipped);
/// `None` when the client closed it.
fn request_path(reader: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    Some(line.split_whitespace().nth(1).unwrap_or("").to_owned())
}

/// A hostile origin: serves the real index, and block `bad` with one bit
/// flipped for the first `lies` requests of it.
#[allow(dead_code)] // the CLI's tests do not use it
pub fn hostile(bytes: Vec<u8>, bad: u32, lies: u32) -> (SocketAddr, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU32::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        let index = Index::of(&bytes);
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            while let Some(path) = request_path(&mut reader) {
                let body = if path.ends_with("/index") {
                    index.encode()
                } else {
                    let n: u32 = path.rsplit('/').next().unwrap().parse().unwrap();
                    let (start, len) = index.span(n).unwrap();
                    let mut block = bytes[start as usize..start as usize + len].to_vec();
                    if n == bad && counter.fetch_add(1, Ordering::SeqCst) < lies {
                        block[len / 2] ^= 0x10;
                    }
                    let mut body = n.to_le_bytes().to_vec();
                    body.extend_from_slice(&(len as u32).to_le_bytes());
                    body.extend_from_slice(&block);
                    body
                };
                write!(writer, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
                writer.write_all(&body).unwrap();
            }
        }
    });
    (addr, served)
}

/// A peer that says it holds every block of an asset of `blocks` blocks
/// (`/have` answered at once, in full) and answers every other request
/// with `answer(path, connection)`, which says whether to go on with the
/// connection.
#[allow(dead_code)] // the CLI's tests do not use it
fn claiming_all(
    blocks: u32,
    answer: impl Fn(&str, &mut std::net::TcpStream) -> bool + Send + Sync + Clone + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                while let Some(path) = request_path(&mut reader) {
                    let go_on = if path.ends_with("/have") {
                        let body = "ff".repeat(blocks.div_ceil(8) as usize);
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        writer.write_all(head.as_bytes()).is_ok()
                    } else {
                        answer(&path, &mut writer)
                    };
                    if !go_on {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A hostile peer that says it holds every block of an asset of `blocks`
/// blocks but trickles its index and blocks: a head that promises 60,000
/// bytes (no more than a block), then a byte every 20 ms, for at most 10 s
/// a request. Counts the index and block requests.
#[allow(dead_code)] // the CLI's tests do not use it
pub fn trickling(blocks: u32) -> (SocketAddr, Arc<AtomicU32>) {
    let asked = Arc::new(AtomicU32::new(0));
    let counter = asked.clone();
    let addr = claiming_all(blocks, move |_, writer| {
        counter.fetch_add(1, Ordering::SeqCst);
        if writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 60000\r\n\r\n").is_err() {
            return false;
        }
        for _ in 0..500 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            if writer.write_all(b"x").is_err() {
                return false;
            }
        }
        false
    });
    (addr, asked)
}

/// A peer that says it holds all `blocks` and answers each request for one,
/// after `delay`, with `503` instead: well inside a peer's deadline, every
/// time. Counts the block requests.
#[allow(dead_code)] // the CLI's tests do not use it
pub fn withholding(blocks: u32, delay: std::time::Duration) -> (SocketAddr, Arc<AtomicU32>) {
    answering_late(blocks, delay, b"HTTP/1.1 503 Error\r\nContent-Length: 4\r\n\r\nbusy")
}

/// A peer that says it holds all `blocks` and answers each request for one,
/// after `delay`, with `answer`; other requests with 404 at once. Counts the
/// block requests.
#[allow(dead_code)] // the CLI's tests do not use it
pub fn answering_late(blocks: u32, delay: std::time::Duration, answer: &'static [u8]) -> (SocketAddr, Arc<AtomicU32>) {
    let asked = Arc::new(AtomicU32::new(0));
    let counter = asked.clone();
    let addr = claiming_all(blocks, move |path, writer| {
        let answer: &[u8] = if path.contains("/blocks/") {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(delay);
            answer
        } else {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"
        };
        writer.write_all(answer).is_ok()
    });
    (addr, asked)
}

/// A peer that says it holds all `blocks` (and has no index to give) and
/// answers each request for one with a head promising 64 MiB, then as many
/// bytes as it can send until the reader hangs up. Counts the block
/// requests and the bytes it got out.
#[allow(dead_code)] // the CLI's tests do not use it
pub fn flooding(blocks: u32) -> (SocketAddr, Arc<AtomicU32>, Arc<std::sync::atomic::AtomicU64>) {
    let (asked, sent) = (Arc::new(AtomicU32::new(0)), Arc::new(std::sync::atomic::AtomicU64::new(0)));
    let (requests, counter) = (asked.clone(), sent.clone());
    let addr = claiming_all(blocks, move |path, writer| {
        if !path.contains("/blocks/") {
            return writer.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno").is_ok();
        }
        requests.fetch_add(1, Ordering::SeqCst);
        if writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n").is_err() {
            return false;
        }
        let chunk = vec![0_u8; 64 * 1024];
        for _ in 0..1024 {
            if writer.write_all(&chunk).is_err() {
                return false;
            }
            counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
        true
    });
    (addr, asked, sent)
}

/// A slow uplink in front of `to`: each request's answer is held back
/// `delay` before it is passed on (one connection at a time, as the asset
/// client keeps one).
#[allow(dead_code)] // the CLI's tests do not use it
pub fn delaying(to: SocketAddr, delay: std::time::Duration) -> SocketAddr {
    relay(to, delay, |_| {})
}

/// A slow uplink the other way: each request is held back `delay` before
/// it reaches `to`.
#[allow(dead_code)] // the CLI's tests do not use it
pub fn delaying_requests(to: SocketAddr, delay: std::time::Duration) -> SocketAddr {
    relay(to, std::time::Duration::ZERO, move |_| std::thread::sleep(delay))
}

/// A relay in front of `to` that counts the requests whose path ends with
/// `suffix`.
#[allow(dead_code)] // the CLI's tests do not use it
pub fn counting(to: SocketAddr, suffix: &'static str) -> (SocketAddr, Arc<AtomicU32>) {
    let count = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&count);
    let addr = relay(to, std::time::Duration::ZERO, move |line| {
        if line.split_whitespace().nth(1).is_some_and(|path| path.ends_with(suffix)) {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, count)
}

/// Pass requests to `to` and answers back, one at a time per connection,
/// each answer held back `delay`; `seen` is told each request's first line.
fn relay(
    to: SocketAddr,
    delay: std::time::Duration,
    seen: impl Fn(&str) + Send + Sync + Clone + 'static,
) -> SocketAddr {
    use std::io::Read;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let Ok(server) = std::net::TcpStream::connect(to) else { return };
                let mut from_client = BufReader::new(client.try_clone().unwrap());
                let mut to_client = client;
                let mut from_server = BufReader::new(server.try_clone().unwrap());
                let mut to_server = server;
                // One request (a line, headers, no body) and its answer at a time.
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if from_client.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    seen(head.lines().next().unwrap_or(""));
                    if to_server.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let mut answer = String::new();
                    let mut len = 0;
                    loop {
                        let mut line = String::new();
                        if from_server.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        answer.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; len];
                    if from_server.read_exact(&mut body).is_err() {
                        return;
                    }
                    std::thread::sleep(delay);
                    if to_client.write_all(answer.as_bytes()).and_then(|()| to_client.write_all(&body)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
