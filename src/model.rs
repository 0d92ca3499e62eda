//! Domain vocabulary shared by every stage of the request path: PI categories (and which of
//! them the law calls sensitive), category sets, the legal regime, and the Asia/Shanghai
//! calendar that counting windows and approval dates are expressed in.
//!
//! This module has no I/O and no dependencies on the rest of the crate; inspection, the ledger
//! and the policy all speak in these types.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// A category of personal information (SPEC §3 "Categories").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Category {
    /// PI that is neither contact data nor sensitive. Covered by every approval.
    Basic = 0,
    /// Contact data (phone, e-mail, address). Not sensitive.
    Contact = 1,
    /// Biometric data. Sensitive.
    Biometric = 2,
    /// Religious belief. Sensitive.
    Religion = 3,
    /// Specific identity (e.g. resident ID). Sensitive.
    Identity = 4,
    /// Medical health. Sensitive.
    Health = 5,
    /// Financial accounts. Sensitive.
    Financial = 6,
    /// Whereabouts / location. Sensitive.
    Location = 7,
    /// Any PI of a minor under 14. Sensitive.
    Minors = 8,
}

impl Category {
    /// Every category, in a fixed order (the order of the bit positions in [`CategorySet`]).
    pub const ALL: [Category; 9] = [
        Category::Basic,
        Category::Contact,
        Category::Biometric,
        Category::Religion,
        Category::Identity,
        Category::Health,
        Category::Financial,
        Category::Location,
        Category::Minors,
    ];

    /// The exact string used in config files, metric labels and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Basic => "basic",
            Category::Contact => "contact",
            Category::Biometric => "biometric",
            Category::Religion => "religion",
            Category::Identity => "identity",
            Category::Health => "health",
            Category::Financial => "financial",
            Category::Location => "location",
            Category::Minors => "minors",
        }
    }

    /// Whether the law (PIPL Art. 28) makes this category sensitive.
    pub const fn is_sensitive(self) -> bool {
        !matches!(self, Category::Basic | Category::Contact)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

/// A string that names no known value of an enumeration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value `{0}`")]
pub struct UnknownValue(pub String);

/// A small set of [`Category`] values, stored as a bitmask (copyable, no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CategorySet(u16);

impl CategorySet {
    /// The empty set.
    pub const EMPTY: CategorySet = CategorySet(0);

    /// A set holding one category.
    pub const fn of(c: Category) -> Self {
        CategorySet(1 << c as u8)
    }

    /// Adds a category.
    pub fn insert(&mut self, c: Category) {
        self.0 |= 1 << c as u8;
    }

    /// Whether the set holds `c`.
    pub const fn contains(self, c: Category) -> bool {
        self.0 & (1 << c as u8) != 0
    }

    /// The union of two sets.
    #[must_use]
    pub const fn union(self, other: CategorySet) -> Self {
        CategorySet(self.0 | other.0)
    }

    /// Whether every category of `self` is in `other`.
    pub const fn is_subset(self, other: CategorySet) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether any category in the set is sensitive.
    pub fn is_sensitive(self) -> bool {
        self.iter().any(Category::is_sensitive)
    }

    /// The categories in the set, in [`Category::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Category> {
        Category::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// The raw bitmask (for compact storage).
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Rebuilds a set from [`CategorySet::bits`]; unknown bits are dropped.
    pub const fn from_bits(bits: u16) -> Self {
        CategorySet(bits & 0x01ff)
    }
}

impl FromIterator<Category> for CategorySet {
    fn from_iter<I: IntoIterator<Item = Category>>(iter: I) -> Self {
        let mut s = CategorySet::EMPTY;
        for c in iter {
            s.insert(c);
        }
        s
    }
}

/// The legal regime whose thresholds and counting window apply (`entity.regime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Regime {
    /// Security Assessment Measures (2022): window from January 1 of the previous year.
    Cac2022,
    /// Provisions on Promoting and Regulating Cross-Border Data Flows (2024): current year.
    Cac2024,
}

impl Regime {
    /// Every regime.
    pub const ALL: [Regime; 2] = [Regime::Cac2022, Regime::Cac2024];

    /// The exact config / metric string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Regime::Cac2022 => "cac-2022",
            Regime::Cac2024 => "cac-2024",
        }
    }

    /// The first calendar year (Asia/Shanghai) of the counting window that contains `year`.
    pub const fn window_start_year(self, year: i32) -> i32 {
        match self {
            Regime::Cac2022 => year - 1,
            Regime::Cac2024 => year,
        }
    }
}

impl FromStr for Regime {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cac-2022" => Ok(Regime::Cac2022),
            "cac-2024" => Ok(Regime::Cac2024),
            _ => Err(UnknownValue(s.to_owned())),
        }
    }
}

/// Serde for a vocabulary enum through its exact strings: `as_str()` when written, one of
/// `ALL` when read (documents of the admin API are read back by the CLI), so the strings have
/// one source.
macro_rules! serde_as_str {
    ($($t:ty),+ $(,)?) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| serde::de::Error::custom(format_args!("unknown value {s:?}")))
            }
        }
    )+};
}
pub(crate) use serde_as_str;

serde_as_str!(Regime);

/// Asia/Shanghai is UTC+8 all year (no daylight saving since 1991).
pub const SHANGHAI_OFFSET_SECONDS: i64 = 8 * 3600;

/// The Asia/Shanghai calendar date of a moment.
pub fn shanghai_date(at: SystemTime) -> time::Date {
    let secs = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let local_days = (secs + SHANGHAI_OFFSET_SECONDS).div_euclid(86_400);
    // Julian day of 1970-01-01 is 2_440_588.
    time::Date::from_julian_day((local_days + 2_440_588) as i32).unwrap_or(time::Date::MIN)
}

/// A source of the current time, injectable so that tests can move across year boundaries and
/// approval expiry dates without waiting.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current moment.
    fn now(&self) -> SystemTime;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn category_strings_round_trip() {
        for c in Category::ALL {
            assert_eq!(c.as_str().parse::<Category>().unwrap(), c);
        }
        assert!("secret".parse::<Category>().is_err());
    }

    #[test]
    fn sensitivity_is_fixed_by_law() {
        let sensitive: Vec<_> = Category::ALL
            .into_iter()
            .filter(|c| c.is_sensitive())
            .map(Category::as_str)
            .collect();
        assert_eq!(
            sensitive,
            [
                "biometric",
                "religion",
                "identity",
                "health",
                "financial",
                "location",
                "minors"
            ]
        );
    }

    #[test]
    fn category_set_operations() {
        let mut s = CategorySet::EMPTY;
        assert!(s.is_empty());
        s.insert(Category::Contact);
        assert!(!s.is_sensitive());
        s.insert(Category::Health);
        assert!(s.is_sensitive());
        assert!(CategorySet::of(Category::Health).is_subset(s));
        assert!(!s.is_subset(CategorySet::of(Category::Health)));
        assert_eq!(CategorySet::from_bits(s.bits()), s);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [Category::Contact, Category::Health]
        );
    }

    #[test]
    fn shanghai_date_turns_at_utc_16() {
        // 2025-12-31T15:59:59Z is 23:59:59 in Shanghai; one second later it is 2026-01-01.
        let t = UNIX_EPOCH + Duration::from_secs(1_767_196_799);
        assert_eq!(shanghai_date(t), time::macros::date!(2025 - 12 - 31));
        assert_eq!(
            shanghai_date(t + Duration::from_secs(1)),
            time::macros::date!(2026 - 01 - 01)
        );
    }

    #[test]
    fn windows_per_regime() {
        assert_eq!(Regime::Cac2022.window_start_year(2026), 2025);
        assert_eq!(Regime::Cac2024.window_start_year(2026), 2026);
    }
}
