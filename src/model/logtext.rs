//! Agent log text: the seed's `sanitizeLogText` (terminal escapes out, `ESC[nC` as spaces, CR
//! as LF, control characters out) and log lines. Pure; reading the file is `io::log_file`'s job.

/// Tails read at most this much from the end of a log (seed #1571).
pub const MAX_TAIL_BYTES: u64 = 1024 * 1024;

/// Removes OSC/DCS/CSI/other escapes, expands cursor-forward, normalises line ends, drops
/// control characters (C0 and C1) other than tab and newline.
pub fn sanitize(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\x1b' => i = skip_escape(&chars, i, &mut out),
            '\u{9b}' => i = skip_csi(&chars, i + 1, &mut out),
            '\r' => {
                out.push('\n');
                i += if chars.get(i + 1) == Some(&'\n') { 2 } else { 1 };
            }
            '\t' | '\n' => {
                out.push(c);
                i += 1;
            }
            // C0 and C1 controls (U+0080–U+009F act as escapes in some terminals; the seed kept them).
            c if c.is_control() => i += 1,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Text from elsewhere as one line of ours (an error message): escapes and control characters
/// gone, bidi overrides too, whitespace runs made one space, at most `max_chars` characters.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let clean = sanitize(text);
    let words = clean.split(char::is_whitespace).filter(|w| !w.is_empty());
    let mut out = words
        .map(|w| w.chars().filter(|c| !is_bidi_control(*c)).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if out.chars().count() > max_chars {
        out = out.chars().take(max_chars.saturating_sub(1)).collect::<String>() + "…";
    }
    out
}

/// Characters that reorder how a terminal shows what follows (bidi embeddings, overrides,
/// isolates and marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Skips the escape sequence at `chars[i] == ESC`; returns the index after it.
fn skip_escape(chars: &[char], i: usize, out: &mut String) -> usize {
    match chars.get(i + 1) {
        // OSC: up to BEL or ST (ESC \).
        Some(']') => {
            let mut j = i + 2;
            while j < chars.len() {
                if chars[j] == '\x07' {
                    return j + 1;
                }
                if chars[j] == '\x1b' {
                    return if chars.get(j + 1) == Some(&'\\') { j + 2 } else { j };
                }
                j += 1;
            }
            j
        }
        // DCS, SOS, PM, APC: up to ST.
        Some('P' | 'X' | '^' | '_') => {
            let mut j = i + 2;
            while j + 1 < chars.len() {
                if chars[j] == '\x1b' && chars[j + 1] == '\\' {
                    return j + 2;
                }
                j += 1;
            }
            chars.len()
        }
        Some('[') => skip_csi(chars, i + 2, out),
        // Charset and other two-byte-intermediate sequences: ESC ( B, ESC # 8, …
        Some('(' | ')' | '#' | '%' | '*' | '+' | '-' | '.' | '/' | ' ') => (i + 3).min(chars.len()),
        Some(_) => i + 2,
        None => i + 1,
    }
}

/// Skips a CSI body starting at `j` (after `ESC [`); `ESC[nC` becomes n spaces (at most 120).
fn skip_csi(chars: &[char], mut j: usize, out: &mut String) -> usize {
    let start = j;
    while j < chars.len() && ('0'..='?').contains(&chars[j]) {
        j += 1;
    }
    while j < chars.len() && (' '..='/').contains(&chars[j]) {
        j += 1;
    }
    match chars.get(j) {
        Some(&f) if ('@'..='~').contains(&f) => {
            if f == 'C' {
                let params: String = chars[start..j].iter().collect();
                if params.chars().all(|c| c.is_ascii_digit()) {
                    let n = params.parse::<usize>().unwrap_or(1).clamp(1, 120);
                    out.extend(std::iter::repeat_n(' ', n));
                }
            }
            j + 1
        }
        _ => j,
    }
}

/// Non-blank lines with trailing space trimmed, sanitised unless `raw` (which still turns CR
/// into LF, as the seed does).
pub fn log_lines(text: &str, raw: bool) -> Vec<String> {
    let text = if raw { text.replace("\r\n", "\n").replace('\r', "\n") } else { sanitize(text) };
    text.lines().map(|l| l.trim_end().to_string()).filter(|l| !l.trim().is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_escapes_like_the_seed() {
        assert_eq!(sanitize("\x1b[31mred\x1b[0m"), "red");
        assert_eq!(sanitize("a\x1b[3Cb"), "a   b");
        assert_eq!(sanitize("a\x1b[999Cb").len(), 122);
        assert_eq!(sanitize("\x1b]0;title\x07text"), "text");
        assert_eq!(sanitize("\x1b]8;;http://x\x1b\\link"), "link");
        assert_eq!(sanitize("\x1bPqdata\x1b\\after"), "after");
        assert_eq!(sanitize("x\x1b(By"), "xy");
        assert_eq!(sanitize("one\r\ntwo\rthree"), "one\ntwo\nthree");
        assert_eq!(sanitize("bell\x07 nul\x00 del\x7f"), "bell nul del");
        assert_eq!(sanitize("\u{9b}1mcsi8"), "csi8");
    }

    #[test]
    fn lines_drop_blanks() {
        assert_eq!(log_lines("a  \n\n \x1b[2K\nb\r", false), vec!["a", "b"]);
        assert_eq!(log_lines("\x1b[1mx", true), vec!["\x1b[1mx"]);
    }

    #[test]
    fn never_panics_on_cut_sequences() {
        for s in ["\x1b", "\x1b[", "\x1b]", "\x1bP", "\x1b[12", "\u{9b}", "\x1b("] {
            let _ = sanitize(s);
        }
    }
}
