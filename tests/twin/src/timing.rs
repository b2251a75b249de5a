//! Reading times off console lines: the kernel's printk stamp and the
//! runtime's (tracing's) wall-clock stamp.

/// `[    1.234567] text` → 1.234567
pub fn printk_seconds(line: &str) -> Option<f64> {
    line.split_once('[')?.1.split_once(']')?.0.trim().parse().ok()
}

/// `2026-11-22T11:45:00.123456Z ...` (tracing's timestamp) → seconds since the
/// epoch. The stamp may follow other text on the console line: the shell's
/// prompt and its cursor query (`trellis# \x1b[6n`) when the runtime logs while
/// the shell waits for input.
pub fn rfc3339_seconds(line: &str) -> Option<f64> {
    line.char_indices()
        .filter(|&(i, c)| c.is_ascii_digit() && !line[..i].ends_with(|p: char| p.is_ascii_digit()))
        .find_map(|(i, _)| stamp_seconds(line[i..].split_whitespace().next()?))
}

fn stamp_seconds(token: &str) -> Option<f64> {
    let stamp = token.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min, s) = (t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    #[allow(clippy::cast_precision_loss)]
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn kernel_and_runtime_stamps() {
        assert_eq!(super::printk_seconds("[    1.500000] Run /sbin/init as init process"), Some(1.5));
        assert_eq!(super::printk_seconds("no stamp"), None);
        let t = super::rfc3339_seconds("1970-01-02T00:00:01.5Z  INFO x").unwrap();
        assert!((t - 86_401.5).abs() < 1e-6);
        let t = super::rfc3339_seconds("2026-11-22T11:45:00.250000Z  INFO x").unwrap();
        assert!((t - 1_795_347_900.25).abs() < 1e-3, "{t}");
        let prompted = super::rfc3339_seconds("trellis# \x1b[6n2026-11-22T11:45:00.250000Z  INFO app running").unwrap();
        assert!((prompted - t).abs() < 1e-6, "{prompted}");
        assert_eq!(super::rfc3339_seconds("app running ms=22.2"), None);
    }
}
