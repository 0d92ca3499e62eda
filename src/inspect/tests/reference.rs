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

fn walk(ctx: &mut Ctx<'_>, v: &serde_json::Value, p: &mut Pending) {
    use serde_json::Value;
    match v {
        Value::String(s) => scan(ctx, s.as_bytes(), p),
        Value::Number(n) => {
            let t = n.to_string();
            if t.len() >= 11 && t.bytes().all(|b| b.is_ascii_digit()) {
                scan(ctx, t.as_bytes(), p);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| walk(ctx, x, p)),
        Value::Object(m) => {
            let mut mine = Pending {
                cats: CategorySet::EMPTY,
                hits: Vec::new(),
            };
            let mut best: Option<(u16, Vec<u8>)> = None;
            for (k, x) in m {
                let info = ctx.cfg.lookup(k.as_bytes()).unwrap_or_default();
                let scalar = match x {
                    Value::String(s) => Some(s.as_bytes().to_vec()),
                    Value::Number(n) => Some(n.to_string().into_bytes()),
                    _ => None,
                };
                let nonempty = match x {
                    Value::Null => false,
                    Value::String(s) => !record::trim(s.as_bytes()).is_empty(),
                    _ => true,
                };
                if nonempty {
                    mine.cats = mine.cats.union(info.categories);
                }
                if let (Some(r), Some(s)) = (info.subject_rank, scalar) {
                    let t = record::trim(&s).to_vec();
                    if !t.is_empty() && best.as_ref().is_none_or(|(b, _)| r < *b) {
                        best = Some((r, t));
                    }
                }
                walk(ctx, x, &mut mine);
            }
            if let Some((_, id)) = best {
                let cats = mine.hits.iter().fold(mine.cats, |a, h| a.union(h.2));
                add(&mut ctx.out, Namespace::Field, &id, cats);
            } else {
                p.cats = p.cats.union(mine.cats);
                for (ns, id, c) in mine.hits {
                    p.hits.push((ns, id, c.union(mine.cats)));
                }
            }
        }
        _ => {}
    }
}

/// The reference result for a JSON document (no envelope-size effects: use a large limit).
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
    let mut top = Pending {
        cats: CategorySet::EMPTY,
        hits: Vec::new(),
    };
    walk(&mut ctx, &v, &mut top);
    // Loose hits at the top: each its own subject, with the categories of the objects that
    // held them (already folded in on the way up).
    for (ns, id, c) in top.hits {
        add(&mut ctx.out, ns, &id, c);
    }
    ctx.out
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
