//! The times of a measurement file: `xs:dateTime` and `xs:duration` values in the XML, and
//! the compact times of TS 32.432 file names, all to the millisecond and in UTC.
//!
//! The civil-date arithmetic is Howard Hinnant's `days_from_civil` / `civil_from_days`, so
//! that the protocol crate needs no date library for a handful of conversions.

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The broken-down UTC time of `ms` since the epoch: (year, month, day, h, m, s, ms).
fn parts(ms: u64) -> (i64, u32, u32, u64, u64, u64, u64) {
    let (days, in_day) = (ms / 86_400_000, ms % 86_400_000);
    let (y, mo, d) = civil_from_days(days as i64);
    let s = in_day / 1000;
    (y, mo, d, s / 3600, s / 60 % 60, s % 60, in_day % 1000)
}

/// `ms` as an `xs:dateTime` in UTC: `2026-12-02T22:15:00+00:00`, with `.mmm` when the time is
/// not on a whole second.
pub fn format_date_time(ms: u64) -> String {
    let (y, mo, d, h, mi, s, frac) = parts(ms);
    let frac = if frac == 0 {
        String::new()
    } else {
        format!(".{frac:03}")
    };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}+00:00")
}

/// `ms` as an `xs:duration`: `PT900S`, or `PT0.5S` below the second.
pub fn format_duration(ms: u64) -> String {
    let (s, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        format!("PT{s}S")
    } else {
        let frac = format!("{frac:03}");
        format!("PT{s}.{}S", frac.trim_end_matches('0'))
    }
}

/// The date of a TS 32.432 file name: `20261202`.
pub fn name_date(ms: u64) -> String {
    let (y, mo, d, ..) = parts(ms);
    format!("{y:04}{mo:02}{d:02}")
}

/// The time of a TS 32.432 file name, in UTC: `HHMM+0000`, or with `extended` (periods that
/// are not whole minutes) `HHMMSS.mmm+0000`, so that names stay unique and sort by time.
pub fn name_time(ms: u64, extended: bool) -> String {
    let (_, _, _, h, mi, s, frac) = parts(ms);
    if extended {
        format!("{h:02}{mi:02}{s:02}.{frac:03}+0000")
    } else {
        format!("{h:02}{mi:02}+0000")
    }
}

fn digits(s: &str, what: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 9 {
        return Err(format!("{what} `{s}` is not a number"));
    }
    s.parse()
        .map_err(|_| format!("{what} `{s}` is not a number"))
}

/// Milliseconds of a fraction's digits (`5` is 500 ms); digits past the millisecond are cut.
fn fraction_ms(f: &str) -> Result<u64, String> {
    if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("fraction `{f}` is not a number"));
    }
    let mut ms = 0;
    for (i, b) in f.bytes().take(3).enumerate() {
        ms += u64::from(b - b'0') * [100, 10, 1][i];
    }
    Ok(ms)
}

/// Parses an `xs:dateTime` with a time zone (`Z` or `±hh:mm`) into ms since the epoch.
pub fn parse_date_time(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a date and time like 2026-12-02T22:15:00+00:00");
    let (date, rest) = s.split_once('T').ok_or_else(bad)?;
    let mut d = date.splitn(3, '-');
    let (y, mo, day) = (
        d.next().ok_or_else(bad)?,
        d.next().ok_or_else(bad)?,
        d.next().ok_or_else(bad)?,
    );
    if y.len() != 4 || mo.len() != 2 || day.len() != 2 {
        return Err(bad());
    }
    let (y, mo, day) = (
        digits(y, "year")?,
        digits(mo, "month")?,
        digits(day, "day")?,
    );
    let (time, offset_min) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0i64)
    } else {
        let at = rest.rfind(['+', '-']).ok_or_else(|| {
            format!("`{s}` has no time zone (Z or +hh:mm): the time would be ambiguous")
        })?;
        let (t, zone) = rest.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = zone[1..].split_once(':').ok_or_else(bad)?;
        if zh.len() != 2 || zm.len() != 2 {
            return Err(bad());
        }
        let (zh, zm) = (digits(zh, "zone hours")?, digits(zm, "zone minutes")?);
        if zh > 14 || zm > 59 {
            return Err(bad());
        }
        (t, sign * i64::from(zh * 60 + zm))
    };
    let (hms, frac) = match time.split_once('.') {
        Some((hms, f)) => (hms, fraction_ms(f)?),
        None => (time, 0),
    };
    let mut t = hms.splitn(3, ':');
    let (h, mi, sec) = (
        t.next().ok_or_else(bad)?,
        t.next().ok_or_else(bad)?,
        t.next().ok_or_else(bad)?,
    );
    if h.len() != 2 || mi.len() != 2 || sec.len() != 2 {
        return Err(bad());
    }
    let (h, mi, sec) = (
        digits(h, "hour")?,
        digits(mi, "minute")?,
        digits(sec, "second")?,
    );
    let month_days = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || day == 0
        || day > month_days[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || sec > 59
    {
        return Err(bad());
    }
    let days = days_from_civil(i64::from(y), mo, day);
    let local = days * 86_400_000 + i64::from(h * 3600 + mi * 60 + sec) * 1000 + frac as i64
        - offset_min * 60_000;
    u64::try_from(local).map_err(|_| format!("`{s}` is before 1970"))
}

/// Parses an `xs:duration` of days, hours, minutes and seconds (`PT900S`, `PT15M`, `PT0.5S`,
/// `P1D`) into milliseconds. Years and months have no fixed length and are refused.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a duration like PT900S");
    let rest = s.strip_prefix('P').ok_or_else(bad)?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut ms: u64 = 0;
    if !days.is_empty() {
        let n = days.strip_suffix('D').ok_or_else(bad)?;
        ms = u64::from(digits(n, "days")?) * 86_400_000;
    }
    let mut rest = time;
    let mut seen_any = !days.is_empty();
    for (unit, scale) in [('H', 3_600_000u64), ('M', 60_000), ('S', 1000)] {
        if let Some(at) = rest.find(unit) {
            let n = &rest[..at];
            let part = if unit == 'S' {
                match n.split_once('.') {
                    Some((whole, f)) => {
                        u64::from(digits(whole, "seconds")?) * 1000 + fraction_ms(f)?
                    }
                    None => u64::from(digits(n, "seconds")?) * 1000,
                }
            } else {
                u64::from(digits(n, "duration")?) * scale
            };
            ms = ms.checked_add(part).ok_or_else(bad)?;
            rest = &rest[at + 1..];
            seen_any = true;
        }
    }
    if !rest.is_empty() || !seen_any || (time.is_empty() && s.contains('T')) {
        return Err(bad());
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_round_trip_to_the_millisecond() {
        for ms in [
            0,
            1_764_713_700_000,
            1_764_713_700_123,
            951_782_400_000,
            4_102_444_799_999,
        ] {
            assert_eq!(parse_date_time(&format_date_time(ms)), Ok(ms), "{ms}");
        }
        assert_eq!(
            format_date_time(1_764_713_700_000),
            "2025-12-02T22:15:00+00:00"
        );
    }

    #[test]
    fn zones_and_fractions_are_read() {
        assert_eq!(
            parse_date_time("2000-03-01T14:00:00+02:00"),
            parse_date_time("2000-03-01T12:00:00Z")
        );
        assert_eq!(
            parse_date_time("2000-03-01T12:00:00.5Z").map(|t| t % 1000),
            Ok(500)
        );
        for bad in [
            "2000-03-01",
            "2000-03-01T12:00:00",
            "2000-13-01T12:00:00Z",
            "2000-02-30T12:00:00Z",
            "2000-03-01T25:00:00Z",
            "2000-03-01T12:00:00+2:00",
            "x000-03-01T12:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_date_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_round_trip_and_read_the_usual_forms() {
        for ms in [200, 500, 1000, 1500, 900_000, 86_400_000] {
            assert_eq!(parse_duration(&format_duration(ms)), Ok(ms), "{ms}");
        }
        assert_eq!(parse_duration("PT15M"), Ok(900_000));
        assert_eq!(parse_duration("PT1H30M"), Ok(5_400_000));
        assert_eq!(parse_duration("P1D"), Ok(86_400_000));
        for bad in ["900", "PT", "P", "PT15X", "P1M", "PT-5S", "PTS", "P1DT"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_name_times_are_utc_and_sort_by_time() {
        let t = 1_764_713_700_000; // 2025-12-02T22:15:00Z
        assert_eq!(name_date(t), "20251202");
        assert_eq!(name_time(t, false), "2215+0000");
        assert_eq!(name_time(t + 1_500, true), "221501.500+0000");
    }
}
