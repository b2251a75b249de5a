//! A relay on loopback that holds every byte for a while before passing it
//! on, in each direction: a link's latency for the benchmarks, on a host
//! whose kernel has no `netem` (the rate is `tc tbf`'s job, on the link).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Copy `from` to `to`, each chunk `delay` after it was read.
fn delayed(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        drop(to.shutdown(std::net::Shutdown::Write));
    });
}

/// A relay on loopback to `origin` adding `delay` each way; its address.
/// It runs until the process ends; a client whose connection to `origin`
/// fails is dropped.
///
/// # Errors
/// Loopback cannot be bound.
pub fn relay(origin: &str, delay: Duration) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let origin = origin.to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let pair = || -> std::io::Result<_> {
                let server = TcpStream::connect(&origin)?;
                client.set_nodelay(true)?;
                server.set_nodelay(true)?;
                Ok((client.try_clone()?, server.try_clone()?, server))
            };
            if let Ok((client_in, server_out, server)) = pair() {
                delayed(client_in, server_out, delay);
                delayed(server, client, delay);
            }
        }
    });
    Ok(addr)
}
