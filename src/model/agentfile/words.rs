//! Words of list values, split as systemd splits them, and the env file the agent's launcher
//! reads back. Pure.

use crate::model::request;

/// Splits a value into words as systemd does for lists (systemd.syntax(7)): whitespace
/// separates; double or single quotes keep it; C escapes (`\n`, `\t`, `\\`, `\"`, `\'`, `\s`,
/// `\xHH`, `\uHHHH`) inside and outside quotes. Nothing else is special: `$` and `%` are kept.
pub fn split_words(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let e = chars.next().ok_or("a trailing backslash escapes nothing")?;
                cur.push(unescape(e, &mut chars)?);
                in_word = true;
            }
            '"' | '\'' if quote == Some(c) => quote = None,
            '"' | '\'' if quote.is_none() => {
                quote = Some(c);
                in_word = true;
            }
            ' ' | '\t' if quote.is_none() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("a {q} quote is never closed"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn unescape(e: char, rest: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    let hex = |rest: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize| -> Result<char, String> {
        let digits: String = (0..n).filter_map(|_| rest.next()).collect();
        u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|_| digits.len() == n)
            .and_then(char::from_u32)
            .filter(|c| *c != '\0')
            .ok_or_else(|| format!("\\{e}{digits} is not a valid escape"))
    };
    Ok(match e {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        'a' => '\x07',
        'b' => '\x08',
        'f' => '\x0c',
        'v' => '\x0b',
        's' => ' ',
        '\\' | '"' | '\'' => e,
        'x' => hex(rest, 2)?,
        'u' => hex(rest, 4)?,
        'U' => hex(rest, 8)?,
        other => return Err(format!("\\{other} is not an escape systemd knows")),
    })
}

/// The inverse of [`crate::model::plan::render_env_file`]: `KEY="value"` entries, where inside
/// the quotes `\` escapes the next character and a value may span lines. What the agent's
/// launcher reads back from the file the start wrote; anything else in it is refused.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").ok_or("an entry is not KEY=\"value\"")?;
        if !request::env_key_is_valid(key) {
            return Err(format!("{key:?} is not a variable name"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => value.push(chars.next().ok_or("a value ends in a backslash")?.1),
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("the value of {key} is never closed")),
            }
        };
        rest = after[end + 1..]
            .strip_prefix('\n')
            .ok_or_else(|| format!("the value of {key} is not followed by a newline"))?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}
