//! The calendar arithmetic of the planner: mainland China's working days (weekends, the
//! official holidays and the adjusted working weekend days of the years in [`HOLIDAYS`];
//! Monday–Friday only for other years), "n working days before", and whole-month shifts.

use time::{Date, Month, Weekday};

/// Month and day.
pub type MonthDay = (u8, u8);

/// Whole-day and adjusted-working-day lists of the PRC public-holiday schedules (State Council
/// General Office notices): (year, days off, weekend days that are working days).
pub const HOLIDAYS: &[(i32, &[MonthDay], &[MonthDay])] = &[
    (
        2025,
        &[
            (1, 1),
            (1, 28),
            (1, 29),
            (1, 30),
            (1, 31),
            (2, 1),
            (2, 2),
            (2, 3),
            (2, 4),
            (4, 4),
            (4, 5),
            (4, 6),
            (5, 1),
            (5, 2),
            (5, 3),
            (5, 4),
            (5, 5),
            (5, 31),
            (6, 1),
            (6, 2),
            (10, 1),
            (10, 2),
            (10, 3),
            (10, 4),
            (10, 5),
            (10, 6),
            (10, 7),
            (10, 8),
        ],
        &[(1, 26), (2, 8), (4, 27), (9, 28), (10, 11)],
    ),
    (
        2026,
        &[
            (1, 1),
            (1, 2),
            (1, 3),
            (2, 15),
            (2, 16),
            (2, 17),
            (2, 18),
            (2, 19),
            (2, 20),
            (2, 21),
            (2, 22),
            (2, 23),
            (4, 4),
            (4, 5),
            (4, 6),
            (5, 1),
            (5, 2),
            (5, 3),
            (5, 4),
            (5, 5),
            (6, 19),
            (6, 20),
            (6, 21),
            (9, 25),
            (9, 26),
            (9, 27),
            (10, 1),
            (10, 2),
            (10, 3),
            (10, 4),
            (10, 5),
            (10, 6),
            (10, 7),
        ],
        &[(1, 4), (2, 14), (2, 28), (5, 9), (9, 20), (10, 10)],
    ),
];

/// How many working days before expiry a security assessment's renewal or extension counts.
pub const RENEWAL_WORKING_DAYS: u32 = 60;

/// Whether `d` is a working day in mainland China.
pub fn is_working_day(d: Date) -> bool {
    let md = (u8::from(d.month()), d.day());
    if let Some((_, off, on)) = HOLIDAYS.iter().find(|(y, _, _)| *y == d.year()) {
        if off.contains(&md) {
            return false;
        }
        if on.contains(&md) {
            return true;
        }
    }
    !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday)
}

/// The first day of the `n` working days that end the day before `end`: counting backwards
/// from `end − 1`, the `n`-th working day. "Within the 60 working days before expiry" is the
/// range from this date to `end`.
pub fn working_days_before(end: Date, n: u32) -> Date {
    let mut d = end;
    let mut left = n;
    while left > 0 {
        match d.previous_day() {
            Some(p) => d = p,
            None => return d,
        }
        if is_working_day(d) {
            left -= 1;
        }
    }
    d
}

/// `d` shifted by `months` calendar months, the day clamped to the month's length.
pub fn add_months(d: Date, months: i32) -> Date {
    let total = d.year() * 12 + i32::from(u8::from(d.month())) - 1 + months;
    let (y, m) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u8);
    let month = Month::try_from(m).unwrap_or(Month::January);
    let day = d.day().min(month.length(y));
    Date::from_calendar_date(y, month, day).unwrap_or(d)
}
