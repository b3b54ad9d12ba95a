//! `xs:duration` as WS-Management uses it: `wsman:OperationTimeout`, `rsp:IdleTimeOut` and the
//! shell's run and inactivity times (`PT20S`, `PT7200.000S`, `P0DT0H0M0S`).

use std::time::Duration;

/// Formats a duration as `PT<seconds>S`, with milliseconds when there are any (`PT0.500S`).
pub fn format(d: Duration) -> String {
    let millis = d.subsec_millis();
    if millis == 0 {
        format!("PT{}S", d.as_secs())
    } else {
        format!("PT{}.{millis:03}S", d.as_secs())
    }
}

/// Parses a non-negative `xs:duration` of days, hours, minutes and seconds (fractions of a
/// second to the nanosecond). Years and months have no fixed length and are refused, as are
/// negative durations and values that overflow; `None` for anything that is not such a duration.
pub fn parse(text: &str) -> Option<Duration> {
    let rest = text.trim().strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) => {
            if time.is_empty() {
                return None;
            }
            (date, Some(time))
        }
        None => (rest, None),
    };
    if date.is_empty() && time.is_none() {
        return None;
    }
    let mut secs: u64 = 0;
    let mut nanos: u32 = 0;
    let mut number = String::new();
    for c in date.chars() {
        match c {
            '0'..='9' => number.push(c),
            'D' => {
                let days: u64 = number.parse().ok()?;
                secs = secs.checked_add(days.checked_mul(86_400)?)?;
                number.clear();
            }
            _ => return None,
        }
    }
    if !number.is_empty() {
        return None;
    }
    let mut seen_seconds = false;
    for c in time.unwrap_or("").chars() {
        if seen_seconds {
            return None;
        }
        match c {
            '0'..='9' | '.' => number.push(c),
            'H' | 'M' => {
                let n: u64 = number.parse().ok()?;
                let unit = if c == 'H' { 3600 } else { 60 };
                secs = secs.checked_add(n.checked_mul(unit)?)?;
                number.clear();
            }
            'S' => {
                let (whole, frac) = match number.split_once('.') {
                    Some((w, f)) => (w, f),
                    None => (number.as_str(), ""),
                };
                if whole.is_empty() || frac.len() > 9 || !frac.chars().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                secs = secs.checked_add(whole.parse().ok()?)?;
                if !frac.is_empty() {
                    let padded = format!("{frac:0<9}");
                    nanos = padded.parse().ok()?;
                }
                number.clear();
                seen_seconds = true;
            }
            _ => return None,
        }
    }
    if !number.is_empty() {
        return None;
    }
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_values() {
        assert_eq!(parse("PT7200.000S"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse("PT2147483.647S"),
            Some(Duration::from_millis(2_147_483_647))
        );
        assert_eq!(parse("P0DT0H0M0S"), Some(Duration::ZERO));
        assert_eq!(parse("P1DT2H3M4.5S"), Some(Duration::new(93_784, 500_000_000)));
        assert_eq!(parse("PT20S"), Some(Duration::from_secs(20)));
        assert_eq!(parse("P2D"), Some(Duration::from_secs(172_800)));
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            "P",
            "PT",
            "PT-1S",
            "-PT1S",
            "P1Y",
            "P1M",
            "PT1S2M",
            "PT1",
            "PT.5S",
            "PT1.1234567890S",
            "PT99999999999999999999S",
            "P999999999999999999DT0S",
            "x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(60),
            Duration::from_millis(1500),
            Duration::from_secs(7200),
        ] {
            assert_eq!(parse(&format(d)), Some(d));
        }
        assert_eq!(format(Duration::from_secs(20)), "PT20S");
        assert_eq!(format(Duration::from_millis(60_250)), "PT60.250S");
    }
}
