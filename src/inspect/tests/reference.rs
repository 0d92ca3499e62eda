//! A simple reference implementation of SPEC §3 for JSON, built on `serde_json::Value`.

use std::collections::BTreeMap;

use super::*;
use crate::model::CategorySet;

/// Unique subjects (namespace, id) → (categories, sensitive), as the reference sees them.
pub(super) type Summary = BTreeMap<(Namespace, Vec<u8>), (u16, bool)>;

struct Ctx<'a> {
    cfg: &'a InspectConfig,
    det: detect::DetectCtx,
    out: Summary,
}

/// What an object contributes upwards when it is not a record.
struct Pending {
    cats: CategorySet,
    hits: Vec<(Namespace, Vec<u8>, CategorySet)>,
    /// Subject values from a subject container, for the object that holds it.
    values: Vec<Vec<u8>>,
}

impl Pending {
    fn new() -> Self {
        Pending {
            cats: CategorySet::EMPTY,
            hits: Vec::new(),
            values: Vec::new(),
        }
    }
}

fn add(out: &mut Summary, ns: Namespace, id: &[u8], cats: CategorySet) {
    let id = record::trim(id);
    if id.is_empty() {
        return;
    }
    let cats = if cats.is_empty() {
        CategorySet::of(Category::Basic)
    } else {
        cats
    };
    let e = out.entry((ns, id.to_vec())).or_insert((0, false));
    e.0 |= cats.bits();
    e.1 |= cats.is_sensitive();
}

fn scan(ctx: &Ctx<'_>, s: &[u8], p: &mut Pending) {
    detect::scan(s, &ctx.det, &mut |ns, id, c| {
        p.hits.push((ns, id.to_vec(), c))
    });
}

fn value(p: &mut Pending, v: &[u8]) {
    let t = record::trim(v);
    if !t.is_empty() {
        p.values.push(t.to_vec());
    }
}

/// Walks `v`; `subject` says whether it sits in a subject container (every scalar counts).
fn walk(ctx: &mut Ctx<'_>, v: &serde_json::Value, p: &mut Pending, subject: bool) {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            // A document inside a value is read where it sits (SPEC §3).
            let t = s.trim_ascii();
            if matches!(t.as_bytes().first(), Some(b'{' | b'[')) {
                if let Ok(doc @ (Value::Object(_) | Value::Array(_))) =
                    serde_json::from_str::<Value>(s)
                {
                    return walk(ctx, &doc, p, subject);
                }
            }
            if subject {
                value(p, s.as_bytes());
            }
            scan(ctx, s.as_bytes(), p);
        }
        Value::Number(n) => {
            let t = n.to_string();
            if subject {
                value(p, t.as_bytes());
            }
            if t.len() >= 11 && t.bytes().all(|b| b.is_ascii_digit()) {
                scan(ctx, t.as_bytes(), p);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| walk(ctx, x, p, subject)),
        Value::Object(m) => {
            let mut mine = Pending::new();
            let mut direct = false;
            for (k, x) in m {
                let info = match ctx.cfg.lookup(k.as_bytes()) {
                    Some(i) => i,
                    None => {
                        scan(ctx, k.as_bytes(), &mut mine);
                        Default::default()
                    }
                };
                let nonempty = match x {
                    Value::Null => false,
                    Value::String(s) => !record::trim(s.as_bytes()).is_empty(),
                    _ => true,
                };
                if nonempty {
                    mine.cats = mine.cats.union(info.categories);
                }
                let is_subject = info.subject_rank.is_some() && !subject;
                if is_subject && !matches!(x, Value::Null | Value::Bool(_)) {
                    direct = true;
                }
                walk(ctx, x, &mut mine, subject || is_subject);
            }
            if direct && !mine.values.is_empty() {
                let cats = mine.hits.iter().fold(mine.cats, |a, h| a.union(h.2));
                for id in &mine.values {
                    add(&mut ctx.out, Namespace::Field, id, cats);
                }
            } else {
                p.cats = p.cats.union(mine.cats);
                p.values.extend(mine.values);
                for (ns, id, c) in mine.hits {
                    p.hits.push((ns, id, c.union(mine.cats)));
                }
            }
        }
        _ => {}
    }
}

/// The reference result for a JSON document (no envelope-size effects: use a large limit),
/// with the categories found outside every record applied to every subject.
pub(super) fn reference(cfg: &InspectConfig, doc: &[u8]) -> Summary {
    let v: serde_json::Value = serde_json::from_slice(doc).unwrap();
    let mut ctx = Ctx {
        cfg,
        det: detect::DetectCtx {
            detectors: cfg.detectors(),
            transfer_date: DATE,
            resident_id_sensitive: cfg.resident_id_sensitive(),
        },
        out: Summary::new(),
    };
    let mut top = Pending::new();
    walk(&mut ctx, &v, &mut top, false);
    // Loose hits at the top: each its own subject, with the categories of the objects that
    // held them (already folded in on the way up).
    for (ns, id, c) in top.hits {
        add(&mut ctx.out, ns, &id, c);
    }
    with_outside(ctx.out, top.cats)
}

/// Applies categories found outside every record to every subject.
pub(super) fn with_outside(mut s: Summary, outside: CategorySet) -> Summary {
    for v in s.values_mut() {
        v.0 |= outside.bits();
        v.1 |= outside.is_sensitive();
    }
    s
}

/// The engine's result in the same shape.
pub(super) fn engine(records: &[Record]) -> Summary {
    let mut out = Summary::new();
    for r in records {
        for s in &r.subjects {
            let e = out.entry((s.namespace, s.id.clone())).or_insert((0, false));
            e.0 |= s.categories.bits();
            e.1 |= s.sensitive;
        }
    }
    out
}
