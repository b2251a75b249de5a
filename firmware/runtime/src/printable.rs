//! Text from apps made safe to print: an app's log line or a message's
//! payload can neither forge a line of the device log nor send control
//! sequences to the terminal of someone running `trellis run`.

/// `message` with control characters escaped (`\n`, `\u{1b}`), cut (at a
/// character boundary) once it reaches `max` bytes, saying how many bytes were cut.
#[must_use]
pub fn escape_line(message: &str, max: usize) -> String {
    let mut out = String::with_capacity(message.len().min(max) + 16);
    for (i, c) in message.char_indices() {
        if out.len() >= max {
            out.push_str(&format!("… ({} bytes cut)", message.len() - i));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A message payload for printing: UTF-8 text with its control characters
/// escaped, anything else as escaped bytes (`\xff`), cut at `max` bytes.
#[must_use]
pub fn payload(bytes: &[u8], max: usize) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => escape_line(text, max),
        Err(_) => escape_line(&bytes.escape_ascii().to_string(), max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_escaped_and_cut() {
        assert_eq!(escape_line("ok", 16), "ok");
        assert_eq!(escape_line("a\nfake line", 64), "a\\nfake line");
        assert_eq!(escape_line("\u{1b}[2Jcleared", 64), "\\u{1b}[2Jcleared");
        assert_eq!(escape_line("température", 64), "température");
        let long = "x".repeat(100);
        assert_eq!(escape_line(&long, 16), format!("{}… (84 bytes cut)", "x".repeat(16)));
        // never cuts inside a character
        let wide = "é".repeat(20);
        assert!(escape_line(&wide, 15).starts_with(&"é".repeat(8)));
    }

    #[test]
    fn payloads_are_text_or_escaped_bytes() {
        assert_eq!(payload(b"21.5", 64), "21.5");
        assert_eq!(payload(b"\x1b]0;owned\x07", 64), "\\u{1b}]0;owned\\u{7}");
        assert_eq!(payload(&[0xff, b'a', 0x00], 64), "\\xffa\\x00");
    }
}
