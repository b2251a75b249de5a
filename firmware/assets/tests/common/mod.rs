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
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                // Skip the headers.
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
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
