//! Decoding Redis replies: the Lua step's reply, the per-year counters and the monthly
//! tallies; and building outcomes in the caller's scope order.

use std::collections::HashMap;

use redis::{FromRedisValue, Value};

use crate::ledger::api::{LedgerError, MonthlyTally, Scope, ScopeId, ScopeOutcome};

/// What the script answered.
pub(super) enum Reply {
    /// Per subject and scope the state after (b'0' absent, b'1' counted, b'2' sensitive),
    /// per scope (new all, new sensitive, all before, sensitive before), and the chosen
    /// alternative (0-based; `None` when there was none to choose).
    Done(Vec<u8>, Vec<[u64; 4]>, Option<usize>),
    /// Refused at this ceiling (0-based index in the sent list): count before, new.
    Refused(usize, u64, u64),
}

pub(super) fn parse_reply(v: Value, ns: usize) -> Result<Reply, LedgerError> {
    let bad = || LedgerError::Unavailable("redis: unexpected script reply".into());
    let Value::Array(items) = v else {
        return Err(bad());
    };
    let int = |v: &Value| -> Result<u64, LedgerError> {
        i64::from_redis_value(v)
            .ok()
            .and_then(|x| u64::try_from(x).ok())
            .ok_or_else(bad)
    };
    match items.first().map(int).transpose()? {
        Some(1) => {
            let states = match items.get(1) {
                Some(Value::BulkString(b)) => b.clone(),
                Some(Value::SimpleString(s)) => s.clone().into_bytes(),
                _ => return Err(bad()),
            };
            let mut per = Vec::with_capacity(ns);
            for i in 0..ns {
                let mut a = [0u64; 4];
                for (k, x) in a.iter_mut().enumerate() {
                    *x = int(items.get(2 + 4 * i + k).ok_or_else(bad)?)?;
                }
                per.push(a);
            }
            let chosen = int(items.get(2 + 4 * ns).ok_or_else(bad)?)?;
            let chosen = usize::try_from(chosen).ok().and_then(|c| c.checked_sub(1));
            Ok(Reply::Done(states, per, chosen))
        }
        Some(0) if items.len() == 4 => Ok(Reply::Refused(
            usize::try_from(int(&items[1])?)
                .unwrap_or(usize::MAX)
                .saturating_sub(1),
            int(&items[2])?,
            int(&items[3])?,
        )),
        _ => Err(bad()),
    }
}

/// Parses the monthly tally hash (`<scope>|<year>|<month>|a|s`).
pub(super) fn parse_tallies(fields: &HashMap<String, i64>) -> Vec<MonthlyTally> {
    let mut by: std::collections::BTreeMap<(String, i32, u8), (u64, u64)> = Default::default();
    for (f, v) in fields {
        let mut it = f.rsplitn(4, '|');
        let (Some(class), Some(month), Some(year), Some(scope)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let (Ok(month), Ok(year), Ok(v)) =
            (month.parse::<u8>(), year.parse::<i32>(), u64::try_from(*v))
        else {
            continue;
        };
        let e = by.entry((scope.to_owned(), year, month)).or_default();
        match class {
            "a" => e.0 += v,
            "s" => e.1 += v,
            _ => {}
        }
    }
    by.into_iter()
        .filter_map(|((scope, year, month), (new_all, new_sensitive))| {
            Some(MonthlyTally {
                scope: Scope::from_stored_name(&scope)?,
                year,
                month,
                new_all,
                new_sensitive,
            })
        })
        .collect()
}

/// Outcomes in the caller's scope order from the per-scope numbers of the sorted scopes.
pub(super) fn outcomes(
    req_scopes: &[ScopeId],
    sorted: &[ScopeId],
    per: &[[u64; 4]],
) -> Vec<ScopeOutcome> {
    req_scopes
        .iter()
        .map(|sc| {
            let p = sorted
                .binary_search(sc)
                .ok()
                .and_then(|k| per.get(k))
                .copied()
                .unwrap_or_default();
            ScopeOutcome {
                scope: *sc,
                new_all: p[0],
                new_sensitive: p[1],
                all_after: p[2] + p[0],
                sensitive_after: p[3] + p[1],
            }
        })
        .collect()
}
