//! Per-app rate limits in the twin, after Paradrop's bandwidth experiment (Liu
//! et al., SEC 2016): an app's outgoing traffic held to the limit its
//! manifest sets, for seven limits. The app is the `fetch` fixture
//! (`wasm-apps/fixtures/fetch`) POSTing without pause through `wasi:http` to
//! a sink on the host (QEMU's user network reaches the host's loopback as
//! 10.0.2.2); the runtime marks its sockets and the kernel's HTB class for
//! that mark holds it to `limits.net-kbit` (docs/runtime.md). The sink counts
//! the request bodies' bytes as they arrive.
//!
//! Each limit runs alone, as its own app, so the twin's virtual link (about
//! 100 Mbit/s under TCG) is never what limits it. [`experiment`] is what
//! `tests/bandwidth.rs` asserts on and what `make bench-twin` prints ([`table`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{Error, Guest, Twin};

/// The seven limits, in kbit/s: 0.25 to 16 Mbit/s, doubling. What the twin's
/// emulated link gives an app without a limit (the `0` run of [`experiment`])
/// depends on the host's load, since QEMU's user network and the emulated CPU
/// do the work: 14 to 430 Mbit/s in runs here. Above about 30 Mbit/s a loaded
/// host no longer keeps up with a limit.
pub const LIMITS_KBIT: [u32; 7] = [250, 500, 1000, 2000, 4000, 8000, 16_000];

/// How long each limit is measured, after [`WARM_UP`].
pub const WINDOW: Duration = Duration::from_secs(6);

/// From the first byte to the start of the window (TCP's slow start, HTB's burst).
const WARM_UP: Duration = Duration::from_secs(2);

type Arrivals = Arc<Mutex<HashMap<String, Vec<(Instant, usize)>>>>;

/// An HTTP sink on the host's loopback: records when each request body's
/// bytes arrive, by request path, and answers `204`.
#[derive(Debug)]
pub struct Sink {
    /// Its port (the twin reaches it as `10.0.2.2:PORT`).
    pub port: u16,
    arrivals: Arrivals,
}

impl Sink {
    /// Listen on an unused port of 127.0.0.1.
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let arrivals = Arrivals::default();
        let a = arrivals.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let a = a.clone();
                std::thread::spawn(move || {
                    let _ = receive(stream, &a);
                });
            }
        });
        Ok(Self { port, arrivals })
    }

    /// When the first byte for `path` arrived.
    #[must_use]
    pub fn first(&self, path: &str) -> Option<Instant> {
        let arrivals = self.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        arrivals.get(path).and_then(|v| v.first().map(|(t, _)| *t))
    }

    /// The rate at which bodies for `path` arrived between `from` and `to`, in kbit/s.
    #[must_use]
    pub fn kbit(&self, path: &str, from: Instant, to: Instant) -> f64 {
        let arrivals = self.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes: usize =
            arrivals.get(path).map_or(0, |v| v.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, n)| n).sum());
        #[allow(clippy::cast_precision_loss)]
        let bits = (bytes * 8) as f64;
        bits / 1000.0 / (to - from).as_secs_f64()
    }
}

/// One request: its head, then its body (chunked or with a length), each
/// piece recorded as it arrives.
fn receive(stream: TcpStream, arrivals: &Arrivals) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    let record = |n: usize| {
        let mut a = arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        a.entry(path.clone()).or_default().push((Instant::now(), n));
    };
    // Read `left` bytes of body, recording each read; false when the client went away.
    let mut buf = vec![0; 64 * 1024];
    let mut take = |reader: &mut BufReader<TcpStream>, mut left: usize| -> std::io::Result<bool> {
        while left > 0 {
            let n = reader.read(&mut buf[..left.min(64 * 1024)])?;
            if n == 0 {
                return Ok(false);
            }
            record(n);
            left -= n;
        }
        Ok(true)
    };
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let left = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if left == 0 {
                reader.read_line(&mut size)?; // the last, empty line
                break;
            }
            if !take(&mut reader, left)? {
                return Ok(());
            }
            reader.read_line(&mut size)?; // CRLF after the chunk
        }
    } else if !take(&mut reader, length)? {
        return Ok(());
    }
    let mut stream = stream;
    stream.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
}

/// One limit's measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The manifest's `limits.net-kbit` (0: none).
    pub limit_kbit: u32,
    /// Request bodies received per second at the sink, in kbit/s.
    pub measured_kbit: f64,
    /// What `tc -s class show` said of the app's class on the device.
    pub class: String,
}

impl Row {
    /// Measured ÷ limit.
    #[must_use]
    pub fn ratio(&self) -> f64 {
        self.measured_kbit / f64::from(self.limit_kbit)
    }
}

/// The `fetch` fixture as app `name`, POSTing to the sink without pause,
/// limited to `kbit`.
#[must_use]
pub fn sender(name: &str, port: u16, kbit: u32) -> Vec<u8> {
    crate::fixture("fetch", |m| {
        name.clone_into(&mut m.name);
        m.permissions.http = vec![format!("10.0.2.2:{port}")];
        m.limits.net_kbit = kbit;
        m.limits.request_ms = 60_000;
        // About two seconds of sending per request (unlimited: 4 MiB).
        let kib = if kbit == 0 { 4096 } else { (kbit / 4).max(64) };
        m.config.insert("url".into(), format!("http://10.0.2.2:{port}/{name}"));
        m.config.insert("every-ms".into(), "1".into());
        m.config.insert("post-kib".into(), kib.to_string());
    })
}

/// Run each of `limits` alone on the booted twin and measure it (`0`: no
/// limit, what the twin's link gives an app).
///
/// # Errors
/// An app does not start, sends nothing, or the device's commands fail.
pub fn experiment(twin: &Twin, device: &mut Guest, limits: &[u32]) -> Result<Vec<Row>, Error> {
    let sink = Sink::start().map_err(|e| Error::io(std::path::Path::new("127.0.0.1 (the sink)"), e))?;
    let mut rows = Vec::new();
    for &kbit in limits {
        let name = format!("bw-{kbit}");
        crate::shares::install(twin, device, &name, "1.0.0", &sender(&name, sink.port, kbit))?;
        let path = format!("/{name}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let first = loop {
            if let Some(t) = sink.first(&path) {
                break t;
            }
            if Instant::now() > deadline {
                return Err(Error::Command {
                    command: format!("{name} sending to the sink"),
                    code: -1,
                    output: "nothing arrived in 30 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let from = first + WARM_UP;
        std::thread::sleep((from + WINDOW).saturating_duration_since(Instant::now()));
        let class = if kbit == 0 {
            String::new()
        } else {
            device.sh("/sbin/tc -s class show dev eth0 | grep -A2 'class htb 1:1[0-9a-f][0-9a-f] '")?
        };
        rows.push(Row { limit_kbit: kbit, measured_kbit: sink.kbit(&path, from, from + WINDOW), class });
        device.sh(&format!("rm /data/apps/{name}.wasm"))?;
        device.wait_for(&format!("app file removed: stopped app=\"{name}\""), crate::BOOT_TIMEOUT)?;
    }
    Ok(rows)
}

/// The rows as a Markdown table.
#[must_use]
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from("| limit (`net-kbit`) | measured | measured ÷ limit |\n|---|---|---|\n");
    for r in rows {
        if r.limit_kbit == 0 {
            out.push_str(&format!("| none (the twin's link) | {:.2} Mbit/s | — |\n", r.measured_kbit / 1000.0));
        } else {
            out.push_str(&format!(
                "| {:.2} Mbit/s | {:.2} Mbit/s | {:.3} |\n",
                f64::from(r.limit_kbit) / 1000.0,
                r.measured_kbit / 1000.0,
                r.ratio()
            ));
        }
    }
    out
}
