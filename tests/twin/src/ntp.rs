//! An NTP server for the twin: QEMU's user network has no internet, so the
//! harness answers the twin's chronyd itself (board/qemu-aarch64/chrony.conf:
//! server 10.0.2.2 port 10123, the host's loopback as the guest sees it). It
//! serves the host's clock moved by a chosen offset, so a test can tell the
//! twin's clock came from NTP and not from the machine's RTC.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Error;

/// The host port the twin's chronyd asks.
pub const PORT: u16 = 10123;
/// Seconds from 1900 (NTP's era) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A running server; it stops when dropped.
#[derive(Debug)]
pub struct NtpServer {
    stop: Arc<AtomicBool>,
}

/// The NTP timestamp (seconds since 1900, 32-bit fraction) of `t`.
#[must_use]
pub fn timestamp(t: SystemTime) -> [u8; 8] {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = u32::try_from((d.as_secs() + NTP_UNIX_OFFSET) & 0xffff_ffff).unwrap_or(0);
    let frac = u32::try_from((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000).unwrap_or(0);
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&secs.to_be_bytes());
    out[4..].copy_from_slice(&frac.to_be_bytes());
    out
}

/// The answer to one client request (mode 3): a stratum-1 server whose clock
/// reads `now`.
#[must_use]
pub fn answer(request: &[u8], now: SystemTime) -> Option<[u8; 48]> {
    if request.len() < 48 || request[0] & 0x07 != 3 {
        return None;
    }
    let mut r = [0u8; 48];
    r[0] = 4 << 3 | 4; // no leap warning, version 4, server
    r[1] = 1; // stratum 1
    r[2] = request[2]; // the client's poll interval
    r[3] = 0xec; // precision 2^-20 s
    r[8..12].copy_from_slice(&16u32.to_be_bytes()); // root dispersion: 16/65536 s
    r[12..16].copy_from_slice(b"TWIN");
    r[16..24].copy_from_slice(&timestamp(now.checked_sub(Duration::from_secs(1)).unwrap_or(now)));
    r[24..32].copy_from_slice(&request[40..48]); // originate = the client's transmit
    r[32..40].copy_from_slice(&timestamp(now));
    r[40..48].copy_from_slice(&timestamp(now));
    Some(r)
}

impl NtpServer {
    /// Serve the host's time plus `offset` (seconds, may be negative) on
    /// 127.0.0.1:[`PORT`].
    ///
    /// # Errors
    /// The port is taken.
    pub fn start(offset: i64) -> Result<Self, Error> {
        let socket = UdpSocket::bind(("127.0.0.1", PORT))
            .map_err(|e| Error::Qemu(format!("the twin's NTP server on 127.0.0.1:{PORT}: {e}")))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| Error::Qemu(format!("the twin's NTP server: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                let shift = Duration::from_secs(offset.unsigned_abs());
                let now = if offset >= 0 { SystemTime::now() + shift } else { SystemTime::now() - shift };
                if let Some(reply) = answer(&buf[..n], now) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Ok(Self { stop })
    }
}

impl Drop for NtpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timestamps_count_from_1900() {
        let t = UNIX_EPOCH + Duration::from_millis(1_500);
        let ts = timestamp(t);
        assert_eq!(u32::from_be_bytes(ts[..4].try_into().unwrap()), 2_208_988_801);
        assert_eq!(u32::from_be_bytes(ts[4..].try_into().unwrap()), 1 << 31, "half a second");
    }

    #[test]
    fn a_client_request_gets_a_server_answer_echoing_its_transmit_time() {
        let mut req = [0u8; 48];
        req[0] = 4 << 3 | 3;
        req[2] = 6;
        req[40..48].copy_from_slice(b"CLIENTTS");
        let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let r = answer(&req, now).unwrap();
        assert_eq!((r[0] & 7, r[1], r[2]), (4, 1, 6));
        assert_eq!(&r[24..32], b"CLIENTTS");
        assert_eq!(r[40..48], timestamp(now));
        req[0] = 4 << 3 | 4;
        assert!(answer(&req, now).is_none(), "only client requests are answered");
        assert!(answer(&req[..20], now).is_none());
    }
}
