//! The lower bound on distributing one file to N peers (Kumar and Ross,
//! 2006): no schedule beats the origin sending the file once, the slowest
//! peer receiving it once, or all uploaders together sending it N times.

/// What one node can send and receive, in bytes per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// Upload rate.
    pub up: f64,
    /// Download rate.
    pub down: f64,
}

/// `T ≥ max(F/u_s, F/d_min, N·F/(u_s + Σu_i))`, in seconds, for a file of
/// `file_bytes` sent from an origin uploading `origin_up` bytes/s to `peers`.
#[must_use]
pub fn kumar_ross(file_bytes: u64, origin_up: f64, peers: &[Capacity]) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let (f, n) = (file_bytes as f64, peers.len() as f64);
    let d_min = peers.iter().map(|p| p.down).fold(f64::INFINITY, f64::min);
    let total_up = origin_up + peers.iter().map(|p| p.up).sum::<f64>();
    (f / origin_up).max(f / d_min).max(n * f / total_up)
}

/// Jain's fairness index of what each node sent: 1 when they share evenly,
/// 1/N when one sends everything (1 when none sends).
#[must_use]
pub fn jain_index(sent: &[u64]) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let (sum, squares) = sent.iter().fold((0.0, 0.0), |(s, q), &u| (s + u as f64, q + (u as f64).powi(2)));
    if squares == 0.0 {
        return 1.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let n = sent.len() as f64;
    sum * sum / (n * squares)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_term_can_be_the_bound() {
        let fast = Capacity { up: 10.0, down: 100.0 };
        // The origin's uplink.
        assert!((kumar_ross(100, 1.0, &[fast; 4]) - 100.0).abs() < 1e-9);
        // The slowest download.
        let slow = Capacity { up: 10.0, down: 0.5 };
        assert!((kumar_ross(100, 1.0, &[fast, slow]) - 200.0).abs() < 1e-9);
        // Everybody's upload together: 10 peers that upload nothing.
        let leech = Capacity { up: 0.0, down: 100.0 };
        assert!((kumar_ross(100, 2.0, &[leech; 10]) - 500.0).abs() < 1e-9);
    }

    #[test]
    fn jains_index_is_one_when_even_and_one_over_n_when_one_sends_everything() {
        assert!((jain_index(&[5, 5, 5, 5]) - 1.0).abs() < 1e-12);
        assert!((jain_index(&[8, 0, 0, 0]) - 0.25).abs() < 1e-12);
        assert!((jain_index(&[0, 0]) - 1.0).abs() < 1e-12);
    }
}
