//! Canonical JSON (RFC 8785, JCS) and the content checksum built on it.
//!
//! Two contents that mean the same JSON get the same bytes, whatever their key order or
//! spacing: object members sorted by the UTF-16 code units of their names, no whitespace,
//! strings escaped as ECMAScript's `JSON.stringify` does, numbers in ECMAScript's shortest
//! form (`4.50` → `4.5`, `1E30` → `1e+30`, `-0` → `0`).
//!
//! Limit: integers beyond 2^53 that serde_json holds as `i64`/`u64` are written exactly,
//! where RFC 8785 would first round them to a double. Content never needs such numbers
//! (every limit in SPEC §3 is far below), and exactness keeps distinct values distinct.
//!
//! Serialization walks the value with an explicit stack, so nesting depth is not bounded by
//! the thread's stack.

use std::fmt::Write;

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// The RFC 8785 canonical text of `value`.
pub fn canonical_json(value: &Value) -> String {
    enum Frame<'a> {
        Array {
            items: std::slice::Iter<'a, Value>,
            first: bool,
        },
        Object {
            members: Vec<(&'a String, &'a Value)>,
            next: usize,
        },
    }

    let mut out = String::new();
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut pending = Some(value);
    loop {
        if let Some(value) = pending.take() {
            match value {
                Value::Array(items) => {
                    out.push('[');
                    stack.push(Frame::Array {
                        items: items.iter(),
                        first: true,
                    });
                }
                Value::Object(map) => {
                    out.push('{');
                    stack.push(Frame::Object {
                        members: sorted_members(map),
                        next: 0,
                    });
                }
                scalar => write_scalar(&mut out, scalar),
            }
        }
        let Some(frame) = stack.last_mut() else {
            break;
        };
        match frame {
            Frame::Array { items, first } => match items.next() {
                Some(item) => {
                    if !*first {
                        out.push(',');
                    }
                    *first = false;
                    pending = Some(item);
                }
                None => {
                    out.push(']');
                    stack.pop();
                }
            },
            Frame::Object { members, next } => match members.get(*next) {
                Some((name, item)) => {
                    if *next > 0 {
                        out.push(',');
                    }
                    *next += 1;
                    write_string(&mut out, name);
                    out.push(':');
                    pending = Some(item);
                }
                None => {
                    out.push('}');
                    stack.pop();
                }
            },
        }
    }
    out
}

/// Hex SHA-256 of the canonical text: equal for contents that are the same JSON.
pub fn checksum(content: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(content).as_bytes()))
}

fn sorted_members(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    members
}

fn write_scalar(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_string(out, text),
        // Containers are handled by the caller's stack.
        Value::Array(_) | Value::Object(_) => {}
    }
}

fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, number: &Number) {
    if let Some(integer) = number.as_i64() {
        let _ = write!(out, "{integer}");
    } else if let Some(integer) = number.as_u64() {
        let _ = write!(out, "{integer}");
    } else if let Some(float) = number.as_f64() {
        write_ecmascript_double(out, float);
    }
}

/// ECMAScript `Number::toString` for a finite double (ECMA-262 §6.1.6.1.20): the shortest
/// digits that round-trip, placed as plain decimal when the exponent is in [-7, 21).
fn write_ecmascript_double(out: &mut String, value: f64) {
    if value == 0.0 || !value.is_finite() {
        // JSON has no NaN or infinity; -0 is written as 0.
        out.push('0');
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `-1.2345e-7`.
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = exponent + 1;
    if value < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if n - 1 < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{}", (n - 1).abs());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn check(input: &str, expected: &str) {
        let value: Value = serde_json::from_str(input).unwrap();
        assert_eq!(canonical_json(&value), expected, "{input}");
    }

    #[test]
    fn rfc8785_vectors() {
        // RFC 8785 §3.2.2, with the string example and literals.
        check(
            r#"{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
                "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
                "literals": [null, true, false]}"#,
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#,
        );
        // RFC 8785 §3.2.3: member order by UTF-16 code units (the emoji's surrogates sort
        // before U+FB33, unlike in code point order).
        check(
            r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
                "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control",
                "\u00f6": "Latin Small Letter O With Diaeresis"}"#,
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}",
        );
    }

    #[test]
    fn numbers_in_ecmascript_form() {
        let cases = [
            ("0", "0"),
            ("-0.0", "0"),
            ("1.0", "1"),
            ("-1.5", "-1.5"),
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("123456789012345680000", "123456789012345680000"),
            ("0.000001", "0.000001"),
            ("0.0000001", "1e-7"),
            ("1.2345e-10", "1.2345e-10"),
            ("9007199254740993", "9007199254740993"),
            ("-42", "-42"),
            ("5e-324", "5e-324"),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn nesting_and_spacing_do_not_matter() {
        let a: Value =
            serde_json::from_str(r#"{ "b": [1, {"y": 2, "x": 1}], "a": "t\tab" }"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":"t\u0009ab","b":[1,{"x":1,"y":2}]}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":"t\tab","b":[1,{"x":1,"y":2}]}"#);
        assert_eq!(checksum(&a), checksum(&b));
        assert_ne!(checksum(&a), checksum(&json!({"a": "tab"})));
        assert_eq!(
            checksum(&json!({})),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn deep_values_do_not_overflow() {
        let mut deep = json!(null);
        for _ in 0..100_000 {
            // Not `json!([deep])`: that serializes `deep`, recursively.
            deep = Value::Array(vec![deep]);
        }
        let text = canonical_json(&deep);
        assert_eq!(text.len(), 200_000 + 4);
        // Take the value apart without recursion.
        let mut stack = vec![deep];
        while let Some(value) = stack.pop() {
            if let Value::Array(items) = value {
                stack.extend(items);
            }
        }
    }
}
