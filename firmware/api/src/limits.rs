//! What keeps hostile clients from holding the API beside the budgets of
//! connections and the count per peer address (`trellis-limits`): a socket
//! whose reads and writes share one total deadline, and the lingering close
//! of a connection turned away with a `503`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

/// A socket whose reads and writes share one total deadline: before each,
/// the socket's timeout is set to the time left, and once the deadline has
/// passed they fail with [`ErrorKind::TimedOut`]. A client that sends one byte
/// at a time gains nothing by it. [`DeadlineStream::end_deadline`] turns it
/// into a socket with a timeout per read and per write.
#[derive(Debug)]
pub(crate) struct DeadlineStream {
    sock: TcpStream,
    deadline: Option<Instant>,
    /// What has to be done by the deadline, for the error.
    what: &'static str,
}

impl DeadlineStream {
    pub(crate) const fn new(sock: TcpStream, deadline: Instant, what: &'static str) -> Self {
        Self { sock, deadline: Some(deadline), what }
    }

    /// From now on, `timeout` for each read and each write instead of the deadline.
    pub(crate) fn end_deadline(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.deadline = None;
        self.sock.set_read_timeout(Some(timeout))?;
        self.sock.set_write_timeout(Some(timeout))
    }

    /// Whether the deadline has passed.
    pub(crate) fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn expired_error(&self) -> std::io::Error {
        std::io::Error::new(ErrorKind::TimedOut, format!("deadline passed: {}", self.what))
    }

    /// Set the socket's read or write timeout to the time left.
    fn arm(&self, read: bool) -> std::io::Result<()> {
        let Some(deadline) = self.deadline else { return Ok(()) };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.expired_error());
        }
        if read { self.sock.set_read_timeout(Some(left)) } else { self.sock.set_write_timeout(Some(left)) }
    }

    /// A timeout that the deadline caused is named as such.
    fn timed_out<T>(&self, r: std::io::Result<T>) -> std::io::Result<T> {
        match r {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) && self.expired() => {
                Err(self.expired_error())
            }
            r => r,
        }
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm(true)?;
        let r = self.sock.read(buf);
        self.timed_out(r)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm(false)?;
        let r = self.sock.write(buf);
        self.timed_out(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

/// Connections turned away at most held at once while their answer drains.
const LINGERING: usize = 32;
/// How long a turned-away connection is held at most.
const LINGER: Duration = Duration::from_secs(1);

/// Turns connections away: a plain-text `503` naming the reason, written
/// without blocking (a fresh socket's buffer takes it whole), then the
/// sending side shut. Closing a socket with unread input makes the kernel
/// reset the connection, which can throw away the answer before the client
/// read it; so the socket is handed to one thread that reads and discards
/// what the client still sends until it closes its side, for at most
/// [`LINGER`] and at most [`LINGERING`] sockets at once (beyond that a
/// refused connection is simply closed).
#[derive(Debug, Clone)]
pub(crate) struct Refuser {
    lingering: SyncSender<TcpStream>,
}

impl Refuser {
    /// The lingering thread.
    ///
    /// # Errors
    /// No thread.
    pub(crate) fn start() -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(LINGERING);
        std::thread::Builder::new().name("api-refused".into()).spawn(move || linger(&rx))?;
        Ok(Self { lingering: tx })
    }

    /// Answer `503 Service Unavailable` with `reason`, and close.
    pub(crate) fn refuse(&self, stream: TcpStream, reason: &str) {
        let answer = busy_answer(reason);
        if stream.set_nonblocking(true).is_ok() {
            let _ = (&stream).write(&answer);
        }
        let _ = stream.shutdown(Shutdown::Write);
        if let Err(TrySendError::Full(stream) | TrySendError::Disconnected(stream)) = self.lingering.try_send(stream) {
            drop(stream);
        }
    }
}

/// The plain HTTP answer to a connection turned away for load.
pub(crate) fn busy_answer(reason: &str) -> Vec<u8> {
    let body = format!("{reason}\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Hold refused sockets, reading what comes, until the client closes or
/// [`LINGER`] is over.
fn linger(rx: &Receiver<TcpStream>) {
    let mut held: Vec<(TcpStream, Instant)> = Vec::new();
    loop {
        if held.is_empty() {
            match rx.recv() {
                Ok(s) => held.push((s, Instant::now() + LINGER)),
                Err(_) => return,
            }
        }
        if held.len() < LINGERING {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(s) => held.push((s, Instant::now() + LINGER)),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
            while held.len() < LINGERING {
                match rx.try_recv() {
                    Ok(s) => held.push((s, Instant::now() + LINGER)),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
        let now = Instant::now();
        held.retain(|(s, until)| now < *until && !drained(s));
    }
}

/// Read and discard what `s` has received (non-blocking): whether the client
/// has closed its side (or the connection is broken).
fn drained(mut s: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap().0)
    }

    #[test]
    fn a_trickle_does_not_move_the_deadline() {
        let (mut client, server) = pair();
        let started = Instant::now();
        let mut s = DeadlineStream::new(server, started + Duration::from_millis(300), "the test");
        let writer = std::thread::spawn(move || {
            for _ in 0..20 {
                if client.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        let mut buf = [0u8; 1];
        let e = loop {
            match s.read(&mut buf) {
                Ok(0) => panic!("the writer closed first"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        let took = started.elapsed();
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("the test"), "{e}");
        assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(600), "{took:?}");
        assert!(s.write(b"late").is_err(), "writes share the deadline");
        s.end_deadline(Duration::from_secs(5)).unwrap();
        assert!(s.write(b"now fine").is_ok());
        drop(s);
        writer.join().unwrap();
    }

    #[test]
    fn a_refused_client_reads_the_answer() {
        let (mut client, server) = pair();
        client.write_all(b"\x16\x03\x01 a ClientHello nobody reads").unwrap();
        let refuser = Refuser::start().unwrap();
        refuser.refuse(server, "busy: 8 connections already");
        let mut answer = String::new();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        client.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nbusy: 8 connections already\n"), "{answer}");
    }
}
