//! Agent log text: the seed's `sanitizeLogText` and `logLines(content, sanitize)`, line for line.
//! Pure; reading the file is `io::log_file`'s job.
//!
//! The seed sanitises with eleven regular-expression replacements, one after another, each over
//! the previous one's output. Each pass here is one of them, with the regex's own semantics
//! (leftmost match, then on after it; a failed match leaves its first character), so that what
//! one removal joins the next pass sees, as in the seed:
//!
//! 1. `\x1B\][^\x07\x1B]*(?:\x07|\x1B\\)` → ``: OSC, ended by BEL or ST; unended it stays;
//! 2. `\x1B[PX^_][\s\S]*?\x1B\\` → ``: DCS, SOS, PM, APC up to the first ST; unended it stays;
//! 3. `\x1B\[(\d*)C` → `min(Number(digits || "1"), 120)` spaces (`ESC[0C`: none);
//! 4. `\x1B\[[0-?]*[ -/]*[@-~]` → ``: other CSI sequences;
//! 5. `\x1B[()#%*+\-.\/ ][ -~]` → ``: charset and other two-character sequences;
//! 6. `\x1B[ -/]*[@-~]` → ``: other escape sequences (`ESC $ ( B` too);
//! 7. `\x9B[0-?]*[ -/]*[@-~]` → ``: 8-bit CSI;
//! 8. `\x1B.?` → ``: a lone ESC and the character after it, unless that ends a line;
//! 9. and 10. `\r\n` and `\r` → `\n`;
//! 11. `[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]` → ``: C0 controls but tab and newline, and DEL.
//!
//! One difference, on purpose: the C1 controls (U+0080–U+009F) left after pass 7 are dropped too
//! (some terminals act on them; the seed kept them).

/// Tails read at most this much from the end of a log (seed #1571).
pub const MAX_TAIL_BYTES: u64 = 1024 * 1024;

/// The widest `ESC[nC` expands to (the seed's cap).
const MAX_CURSOR_FORWARD: u32 = 120;

const ESC: char = '\x1b';
const BEL: char = '\x07';

/// The seed's `sanitizeLogText`, and C1 controls dropped.
pub fn sanitize(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let chars = osc(&chars);
    let chars = string_sequences(&chars);
    let chars = replace_each(&chars, cursor_forward);
    let chars = replace_each(&chars, |c, i| csi(c, i, ESC, 2).map(|end| (end, 0)));
    let chars = replace_each(&chars, two_character);
    let chars = replace_each(&chars, other_escape);
    let chars = replace_each(&chars, |c, i| csi(c, i, '\u{9b}', 1).map(|end| (end, 0)));
    let chars = lone_escapes(&chars);
    let mut out = String::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            // Passes 9 and 10 (a pass of their own: what pass 8 removes can join `\r` and `\n`).
            '\r' => {
                out.push('\n');
                if chars.get(i) == Some(&'\n') {
                    i += 1;
                }
            }
            // Pass 11, and the C1 controls.
            '\x00'..='\x08' | '\x0b' | '\x0c' | '\x0e'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Pass 8: ESC and the character after it unless that ends a line (a regex `.`). The seed's
/// regexes see UTF-16: `.` takes the first half of a character outside the BMP and leaves the
/// other half, which prints as U+FFFD.
fn lone_escapes(chars: &[char]) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c != ESC {
            out.push(c);
            continue;
        }
        match chars.get(i) {
            Some('\n' | '\r' | '\u{2028}' | '\u{2029}') | None => {}
            Some(&next) => {
                i += 1;
                if next as u32 > 0xFFFF {
                    out.push('\u{fffd}');
                }
            }
        }
    }
    out
}

/// One global replacement: at each position `m` either matches (its end, and how many spaces
/// replace it) or the character stays.
fn replace_each(chars: &[char], m: impl Fn(&[char], usize) -> Option<(usize, u32)>) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        match m(chars, i) {
            Some((end, spaces)) => {
                out.extend(std::iter::repeat_n(' ', spaces as usize));
                i = end;
            }
            None => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

/// Pass 1: OSC. The body cannot hold BEL or ESC, so a failed match ends where the next one could
/// begin, and the pass stays linear.
fn osc(chars: &[char]) -> Vec<char> {
    replace_each(chars, |c, i| {
        if c[i] != ESC || c.get(i + 1) != Some(&']') {
            return None;
        }
        let j = i + 2 + c[i + 2..].iter().position(|&x| x == BEL || x == ESC)?;
        match (c[j], c.get(j + 1)) {
            (BEL, _) => Some((j + 1, 0)),
            (_, Some('\\')) => Some((j + 2, 0)),
            _ => None,
        }
    })
}

/// Pass 2: DCS, SOS, PM and APC, each up to the first ST after it. When no ST follows one, none
/// follows any later one either: the pass stops looking.
fn string_sequences(chars: &[char]) -> Vec<char> {
    let no_st_from = std::cell::Cell::new(usize::MAX);
    replace_each(chars, |c, i| {
        if c[i] != ESC || !matches!(c.get(i + 1), Some('P' | 'X' | '^' | '_')) || i + 2 >= no_st_from.get() {
            return None;
        }
        match c[i + 2..].windows(2).position(|w| w == [ESC, '\\']) {
            Some(k) => Some((i + 2 + k + 2, 0)),
            None => {
                no_st_from.set(i + 2);
                None
            }
        }
    })
}

/// Pass 3: `ESC [ digits C`, as spaces: `Number(digits || "1")`, at most 120.
fn cursor_forward(c: &[char], i: usize) -> Option<(usize, u32)> {
    if c[i] != ESC || c.get(i + 1) != Some(&'[') {
        return None;
    }
    let digits = c[i + 2..].iter().take_while(|x| x.is_ascii_digit()).count();
    let end = i + 2 + digits;
    if c.get(end) != Some(&'C') {
        return None;
    }
    let n = if digits == 0 {
        1
    } else {
        // Leading zeros count for nothing; any number past 120 is 120.
        let value = c[i + 2..end].iter().skip_while(|&&x| x == '0');
        value.fold(0u32, |n, d| n.saturating_mul(10).saturating_add(d.to_digit(10).unwrap_or(0)))
    };
    Some((end + 1, n.min(MAX_CURSOR_FORWARD)))
}

/// Passes 4 and 7: `lead [0-?]* [ -/]* [@-~]` after `intro` characters (`ESC [`, or 0x9B). The
/// three classes are disjoint, so taking each run whole is the regex's only way to match.
fn csi(c: &[char], i: usize, lead: char, intro: usize) -> Option<usize> {
    if c[i] != lead || (intro == 2 && c.get(i + 1) != Some(&'[')) {
        return None;
    }
    let params = c[i + intro..].iter().take_while(|x| ('0'..='?').contains(*x)).count();
    let j = i + intro + params;
    let inter = c[j..].iter().take_while(|x| (' '..='/').contains(*x)).count();
    let f = j + inter;
    c.get(f).filter(|x| ('@'..='~').contains(*x)).map(|_| f + 1)
}

/// Pass 5: `ESC [()#%*+-./ ] [ -~]`.
fn two_character(c: &[char], i: usize) -> Option<(usize, u32)> {
    let designator = matches!(c.get(i + 1), Some('(' | ')' | '#' | '%' | '*' | '+' | '-' | '.' | '/' | ' '));
    let printable = c.get(i + 2).is_some_and(|x| (' '..='~').contains(x));
    (c[i] == ESC && designator && printable).then_some((i + 3, 0))
}

/// Pass 6: `ESC [ -/]* [@-~]`.
fn other_escape(c: &[char], i: usize) -> Option<(usize, u32)> {
    if c[i] != ESC {
        return None;
    }
    let inter = c[i + 1..].iter().take_while(|x| (' '..='/').contains(*x)).count();
    let f = i + 1 + inter;
    c.get(f).filter(|x| ('@'..='~').contains(*x)).map(|_| (f + 1, 0))
}

/// JavaScript's white space and line terminators: what its `trim` and `trimEnd` take away.
pub fn is_js_space(c: char) -> bool {
    (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}'
}

/// The seed's `logLines`: lines split at `\n`, trailing white space trimmed, blank lines
/// dropped; sanitised unless `raw` (which still turns CR into LF, as the seed does).
pub fn log_lines(text: &str, raw: bool) -> Vec<String> {
    let text = if raw { text.replace("\r\n", "\n").replace('\r', "\n") } else { sanitize(text) };
    text.split('\n')
        .map(|l| l.trim_end_matches(is_js_space))
        .filter(|l| !l.trim_matches(is_js_space).is_empty())
        .map(str::to_string)
        .collect()
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
    fn the_cases_the_seed_answers_differently_from_a_terminal() {
        // Unended OSC and DCS swallow nothing: pass 6 takes `ESC ]` and `ESC P` alone.
        assert_eq!(sanitize("a\x1b]0;title\nnext line"), "a0;title\nnext line");
        assert_eq!(sanitize("a\x1bPq\nb\nc"), "aq\nb\nc");
        // ESC before a line end leaves the line end.
        assert_eq!(log_lines("one\x1b\ntwo", false), ["one", "two"]);
        assert_eq!(sanitize("a\x1b[0Cb"), "ab");
        assert_eq!(sanitize("a\x1b[000Cb"), "ab");
        assert_eq!(sanitize(&format!("a\x1b[{}Cb", "9".repeat(40))), format!("a{}b", " ".repeat(120)));
        assert_eq!(sanitize("x\x1b$(By"), "xy");
        assert_eq!(sanitize("a\u{9b}5Cb"), "ab");
        // What one pass removes joins the pieces the next pass sees.
        assert_eq!(sanitize("\x1b\x1b]0;t\x07[31mred"), "red");
        assert_eq!(sanitize("x\x1b😀y"), "x\u{fffd}y");
        // A lone ESC goes before CR and LF are joined: one line end, not two.
        assert_eq!(sanitize("\r\x1b\n"), "\n");
    }

    #[test]
    fn lines_drop_blanks() {
        assert_eq!(log_lines("a  \n\n \x1b[2K\nb\r", false), vec!["a", "b"]);
        assert_eq!(log_lines("\x1b[1mx", true), vec!["\x1b[1mx"]);
        assert_eq!(log_lines("a\u{feff}\nb\u{85}\n\u{a0}", true), vec!["a", "b\u{85}"]);
    }

    #[test]
    fn never_panics_on_cut_sequences() {
        for s in ["\x1b", "\x1b[", "\x1b]", "\x1bP", "\x1b[12", "\u{9b}", "\x1b(", "\x1b]\x1b", "\x1bP\x1b"] {
            let _ = sanitize(s);
        }
    }

    #[test]
    fn unended_sequences_stay_linear() {
        // 200 000 unended sequences: a quadratic pass would not finish in any test's lifetime.
        let many = "\x1bP".repeat(100_000) + &"\x1b]".repeat(100_000);
        assert_eq!(sanitize(&many), "");
    }
}
