//! The log sanitiser against the seed's, line for line, on generated input.
//!
//! The oracle here is our own transcription of the seed's `sanitizeLogText` and `logLines`
//! (log-utils), written for this test only: it works on UTF-16 code units, as JavaScript
//! strings do, and runs each of the seed's eleven regular expressions the way
//! `String.prototype.replace` with a global regex does, with the regex's backtracking spelled
//! out. (It was checked once against the seed's own functions run by Node on generated input.)
//! The one difference on purpose, C1 controls dropped, is the oracle's last step.

use agent_relay_systemd::model::logtext::{log_lines, sanitize};
use proptest::prelude::*;

const ESC: u16 = 0x1b;

/// A matcher: at `i`, the end of the match and its replacement.
type Match = Option<(usize, Vec<u16>)>;

/// `s.replace(/…/g, …)`: try at each index; after a match go on at its end.
fn replace_global(s: &[u16], m: impl Fn(&[u16], usize) -> Match) -> Vec<u16> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match m(s, i) {
            Some((end, rep)) if end > i => {
                out.extend(rep);
                i = end;
            }
            Some((_, rep)) => {
                out.extend(rep);
                out.push(s[i]);
                i += 1;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    out
}

fn at(s: &[u16], i: usize) -> Option<u16> {
    s.get(i).copied()
}

fn range(lo: char, hi: char) -> impl Fn(u16) -> bool {
    move |c| (lo as u16..=hi as u16).contains(&c)
}

/// `A* B* C` from `j`, greedy with backtracking: the end of the first way that matches.
fn star_star_one(
    s: &[u16],
    j: usize,
    a: &dyn Fn(u16) -> bool,
    b: &dyn Fn(u16) -> bool,
    c: &dyn Fn(u16) -> bool,
) -> Option<usize> {
    let max_a = s[j.min(s.len())..].iter().take_while(|&&x| a(x)).count();
    for na in (0..=max_a).rev() {
        let k = j + na;
        let max_b = s[k.min(s.len())..].iter().take_while(|&&x| b(x)).count();
        for nb in (0..=max_b).rev() {
            if at(s, k + nb).is_some_and(c) {
                return Some(k + nb + 1);
            }
        }
    }
    None
}

fn nothing(end: usize) -> Match {
    Some((end, Vec::new()))
}

/// The seed's `sanitizeLogText`, pass for pass, then C1 controls dropped (our one difference).
fn oracle_sanitize(input: &str) -> String {
    let s: Vec<u16> = input.encode_utf16().collect();
    // .replace(/\x1B\][^\x07\x1B]*(?:\x07|\x1B\\)/g, "")
    let s = replace_global(&s, |s, i| {
        if at(s, i) != Some(ESC) || at(s, i + 1) != Some(b']' as u16) {
            return None;
        }
        let not_bel_esc = |c: u16| c != 0x07 && c != ESC;
        let max = s[i + 2..].iter().take_while(|&&c| not_bel_esc(c)).count();
        for n in (0..=max).rev() {
            let j = i + 2 + n;
            if at(s, j) == Some(0x07) {
                return nothing(j + 1);
            }
            if at(s, j) == Some(ESC) && at(s, j + 1) == Some(b'\\' as u16) {
                return nothing(j + 2);
            }
        }
        None
    });
    // .replace(/\x1B[PX^_][\s\S]*?\x1B\\/g, "")
    let s = replace_global(&s, |s, i| {
        if at(s, i) != Some(ESC) || !at(s, i + 1).is_some_and(|c| "PX^_".encode_utf16().any(|x| x == c)) {
            return None;
        }
        (i + 2..s.len())
            .find(|&k| at(s, k) == Some(ESC) && at(s, k + 1) == Some(b'\\' as u16))
            .and_then(|k| nothing(k + 2))
    });
    // .replace(/\x1B\[(\d*)C/g, (_m, count) => " ".repeat(Math.min(Number(count || "1"), 120)))
    let s = replace_global(&s, |s, i| {
        if at(s, i) != Some(ESC) || at(s, i + 1) != Some(b'[' as u16) {
            return None;
        }
        let digit = range('0', '9');
        let max = s[i + 2..].iter().take_while(|&&c| digit(c)).count();
        for n in (0..=max).rev() {
            if at(s, i + 2 + n) == Some(b'C' as u16) {
                let count = String::from_utf16(&s[i + 2..i + 2 + n]).unwrap();
                let count = if count.is_empty() { "1".to_string() } else { count };
                let number: f64 = count.parse().unwrap();
                let spaces = number.min(120.0) as usize;
                return Some((i + 2 + n + 1, vec![b' ' as u16; spaces]));
            }
        }
        None
    });
    // .replace(/\x1B\[[0-?]*[ -\/]*[@-~]/g, "")
    let s = replace_global(&s, |s, i| {
        if at(s, i) != Some(ESC) || at(s, i + 1) != Some(b'[' as u16) {
            return None;
        }
        star_star_one(s, i + 2, &range('0', '?'), &range(' ', '/'), &range('@', '~')).and_then(nothing)
    });
    // .replace(/\x1B[()#%*+\-.\/ ][ -~]/g, "")
    let s = replace_global(&s, |s, i| {
        let set = |c: u16| "()#%*+-./ ".encode_utf16().any(|x| x == c);
        let ok = at(s, i) == Some(ESC) && at(s, i + 1).is_some_and(set) && at(s, i + 2).is_some_and(range(' ', '~'));
        if ok {
            nothing(i + 3)
        } else {
            None
        }
    });
    // .replace(/\x1B[ -\/]*[@-~]/g, "")
    let s = replace_global(&s, |s, i| {
        if at(s, i) != Some(ESC) {
            return None;
        }
        star_star_one(s, i + 1, &|_| false, &range(' ', '/'), &range('@', '~')).and_then(nothing)
    });
    // .replace(/\x9B[0-?]*[ -\/]*[@-~]/g, "")
    let s = replace_global(&s, |s, i| {
        if at(s, i) != Some(0x9b) {
            return None;
        }
        star_star_one(s, i + 1, &range('0', '?'), &range(' ', '/'), &range('@', '~')).and_then(nothing)
    });
    // .replace(/\x1B.?/g, "") — `.` is any code unit but \n, \r, U+2028, U+2029.
    let s = replace_global(&s, |s, i| {
        if at(s, i) != Some(ESC) {
            return None;
        }
        let dot = |c: u16| ![0x0a, 0x0d, 0x2028, 0x2029].contains(&c);
        nothing(if at(s, i + 1).is_some_and(dot) { i + 2 } else { i + 1 })
    });
    // .replace(/\r\n/g, "\n").replace(/\r/g, "\n")
    let s =
        replace_global(&s, |s, i| (at(s, i) == Some(0x0d) && at(s, i + 1) == Some(0x0a)).then(|| (i + 2, vec![0x0a])));
    let s = replace_global(&s, |s, i| (at(s, i) == Some(0x0d)).then(|| (i + 1, vec![0x0a])));
    // .replace(/[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]/g, "")
    let c0 = |c: u16| c <= 0x08 || c == 0x0b || c == 0x0c || (0x0e..=0x1f).contains(&c) || c == 0x7f;
    let s: Vec<u16> = s.into_iter().filter(|&c| !c0(c)).collect();
    // Ours, not the seed's: C1 controls out too.
    let s: Vec<u16> = s.into_iter().filter(|c| !(0x80..=0x9f).contains(c)).collect();
    // What a lone surrogate prints as once the text is UTF-8 again.
    String::from_utf16_lossy(&s)
}

/// JavaScript's white space and line terminators (what `trim` and `trimEnd` remove).
fn js_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}'
    )
}

/// The seed's `logLines(content, sanitize)`.
fn oracle_log_lines(content: &str, sanitize: bool) -> Vec<String> {
    let text = if sanitize { oracle_sanitize(content) } else { content.replace("\r\n", "\n").replace('\r', "\n") };
    text.split('\n')
        .map(|l| l.trim_end_matches(js_space).to_string())
        .filter(|l| !l.trim_matches(js_space).is_empty())
        .collect()
}

/// Pieces logs are made of, escapes cut and whole, so that generated text hits every pass.
const PIECES: &[&str] = &[
    "\x1b",
    "\x1b[",
    "\x1b]",
    "\x1bP",
    "\x1bX",
    "\x1b^",
    "\x1b_",
    "\x1b\\",
    "\x07",
    "\u{9b}",
    "[",
    "]",
    "\\",
    "0",
    "1",
    "5",
    "12",
    "999999999999999999999",
    "000",
    ";",
    "?",
    "C",
    "m",
    "K",
    "H",
    "(",
    ")",
    "#",
    "%",
    "$",
    "*",
    "+",
    "-",
    ".",
    "/",
    " ",
    "B",
    "@",
    "~",
    "\r",
    "\n",
    "\r\n",
    "\t",
    "\x00",
    "\x0b",
    "\x7f",
    "\u{85}",
    "\u{80}",
    "\u{a0}",
    "\u{feff}",
    "\u{2028}",
    "\u{3000}",
    "a",
    "Z",
    "é",
    "😀",
    "\x1b[31m",
    "\x1b[0C",
    "\x1b[3C",
    "\x1b]0;title\x07",
    "\x1b]8;;u\x1b\\",
    "\x1bPq#0\x1b\\",
    "\x1b(B",
    "\x1b$(B",
    "\x1b#8",
    "\u{9b}5C",
    "\x1b[?25l",
    "text",
    "  ",
];

fn log_text() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(PIECES);
    let any = any::<char>().prop_map(String::from);
    let part = prop_oneof![8 => piece.prop_map(str::to_string), 1 => any];
    prop::collection::vec(part, 0..40).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn log_lines_are_the_seeds_line_for_line(text in log_text()) {
        prop_assert_eq!(sanitize(&text), oracle_sanitize(&text), "sanitize of {:?}", text);
        prop_assert_eq!(log_lines(&text, false), oracle_log_lines(&text, true), "lines of {:?}", text);
        prop_assert_eq!(log_lines(&text, true), oracle_log_lines(&text, false), "raw lines of {:?}", text);
    }
}

#[test]
fn the_oracle_reads_like_the_seed() {
    // Hand-checked answers of the seed's functions, to keep the oracle itself honest.
    assert_eq!(oracle_sanitize("a\x1b]0;t\nb"), "a0;t\nb");
    assert_eq!(oracle_sanitize("a\x1b[0Cb"), "ab");
    assert_eq!(oracle_sanitize("a\x1b[999Cb").len(), 122);
    assert_eq!(oracle_sanitize("x\x1b$(By"), "xy");
    assert_eq!(oracle_log_lines("one\x1b\ntwo", true), ["one", "two"]);
}
