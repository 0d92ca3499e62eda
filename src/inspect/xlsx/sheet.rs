//! One worksheet's XML as records (see the parent module): cells by their column reference,
//! shared-string lookup, numbers as their integer digits when integral, the first non-empty row
//! as field names and every later row as a record, as a CSV row is.

use super::{attr, local, malformed, Ev};
use crate::inspect::config::FieldInfo;
use crate::inspect::detect;
use crate::inspect::error::Unreadable;
use crate::inspect::record::{trim, Hits, Namespace};
use crate::inspect::Sink;
use crate::model::CategorySet;

/// Columns of a sheet (Excel's `XFD`).
const MAX_COLUMNS: u32 = 16_384;

/// The cell being read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum CellType {
    /// A number (no `t`, or `t="n"`).
    #[default]
    Number,
    /// `t="s"`: an index into the shared strings.
    Shared,
    /// `t="inlineStr"`.
    Inline,
    /// `t="b"`: not a value.
    Bool,
    /// `t="str"`, `t="e"`, `t="d"`: the text as it is.
    Text,
}

/// Where text inside a cell goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    Nowhere,
    Value,
    Formula,
}

/// A sheet's rows, as records: the first non-empty row gives the field names.
pub(super) struct Rows<'s> {
    strings: &'s [String],
    end: u64,
    header: Option<Vec<(u32, FieldInfo)>>,
    /// The current row's cells: column and value (after shared-string lookup).
    cells: Vec<(u32, String)>,
    /// Formula texts of the row (values for the detectors only).
    formulas: String,
    row_bytes: usize,
    col: u32,
    next_col: u32,
    kind: CellType,
    into: Dest,
    in_is: bool,
    in_rph: bool,
    value: String,
    hits: Hits,
}

impl<'s> Rows<'s> {
    pub(super) fn new(strings: &'s [String], end: u64) -> Self {
        Rows {
            strings,
            end,
            header: None,
            cells: Vec::new(),
            formulas: String::new(),
            row_bytes: 0,
            col: 0,
            next_col: 0,
            kind: CellType::Number,
            into: Dest::Nowhere,
            in_is: false,
            in_rph: false,
            value: String::new(),
            hits: Hits::default(),
        }
    }

    pub(super) fn event(&mut self, ev: Ev<'_>, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        match ev {
            Ev::Open(s) | Ev::Empty(s) => match local(s.name().0) {
                "row" => {
                    self.cells.clear();
                    self.formulas.clear();
                    self.row_bytes = 0;
                    self.next_col = 0;
                }
                "c" => {
                    self.col = match attr(s, "r")? {
                        Some(r) => column(&r).ok_or_else(malformed)?,
                        None => self.next_col,
                    };
                    if self.col >= MAX_COLUMNS {
                        return Err(malformed());
                    }
                    self.next_col = self.col + 1;
                    self.kind = match attr(s, "t")?.as_deref() {
                        None | Some("n") => CellType::Number,
                        Some("s") => CellType::Shared,
                        Some("inlineStr") => CellType::Inline,
                        Some("b") => CellType::Bool,
                        Some(_) => CellType::Text,
                    };
                    self.value.clear();
                    self.in_is = false;
                }
                "v" => self.into = Dest::Value,
                "f" => self.into = Dest::Formula,
                "is" => self.in_is = true,
                "rPh" => self.in_rph = true,
                "t" if self.in_is && !self.in_rph => self.into = Dest::Value,
                _ => {}
            },
            Ev::Close(n) => match local(n.as_bytes()) {
                "v" | "f" | "t" => self.into = Dest::Nowhere,
                "is" => self.in_is = false,
                "rPh" => self.in_rph = false,
                "c" => self.end_cell()?,
                "row" => self.end_row(sink),
                _ => {}
            },
            Ev::Text(t) => {
                if self.into == Dest::Nowhere {
                    return Ok(());
                }
                self.row_bytes += t.len();
                if self.row_bytes > sink.cfg.max_record_bytes() {
                    return Err(Unreadable::RecordTooLarge { offset: 0 });
                }
                match self.into {
                    Dest::Value => self.value.push_str(t),
                    Dest::Formula => {
                        self.formulas.push_str(t);
                        self.formulas.push('\n');
                    }
                    Dest::Nowhere => {}
                }
            }
        }
        Ok(())
    }

    fn end_cell(&mut self) -> Result<(), Unreadable> {
        let v = std::mem::take(&mut self.value);
        let value = match self.kind {
            CellType::Bool => return Ok(()),
            CellType::Shared => {
                let k: usize = v.trim().parse().map_err(|_| malformed())?;
                let s = self.strings.get(k).ok_or(Unreadable::BadWorkbook(
                    "a shared string index out of range",
                ))?;
                self.row_bytes += s.len();
                s.clone()
            }
            CellType::Number => integral(v.trim()).unwrap_or(v),
            CellType::Inline | CellType::Text => v,
        };
        if !value.is_empty() {
            self.cells.push((self.col, value));
        }
        Ok(())
    }

    fn end_row(&mut self, sink: &mut Sink<'_>) {
        let (end, cells) = (self.end, &self.cells);
        if cells.iter().all(|(_, v)| trim(v.as_bytes()).is_empty()) && self.formulas.is_empty() {
            return;
        }
        let Some(cols) = &self.header else {
            // The first non-empty row: field names, and values for the detectors.
            let mut cols = Vec::with_capacity(cells.len());
            for (c, v) in cells {
                let info = sink.cfg.lookup(trim(v.as_bytes())).unwrap_or_default();
                if let Some(w) = info.watched {
                    sink.saw_watched(w);
                }
                cols.push((*c, info));
                let out = &mut *sink.out;
                detect::scan(v.as_bytes(), &sink.det, &mut |ns, id, c| {
                    out.subject(ns, id, c)
                });
            }
            if !self.formulas.is_empty() {
                let out = &mut *sink.out;
                detect::scan(self.formulas.as_bytes(), &sink.det, &mut |ns, id, c| {
                    out.subject(ns, id, c)
                });
            }
            cols.sort_by_key(|(c, _)| *c);
            sink.out.end_record(0..end, end);
            self.header = Some(cols);
            return;
        };
        let mut best: Option<(u16, usize)> = None;
        let mut cats = CategorySet::EMPTY;
        self.hits.clear();
        for (k, (c, v)) in cells.iter().enumerate() {
            if let Ok(j) = cols.binary_search_by_key(c, |(c, _)| *c) {
                let info = cols[j].1;
                if !trim(v.as_bytes()).is_empty() {
                    cats = cats.union(info.categories);
                    if let Some(r) = info.subject_rank {
                        if best.is_none_or(|(b, _)| r < b) {
                            best = Some((r, k));
                        }
                    }
                }
            }
            self.hits.scan(v.as_bytes(), &sink.det);
        }
        if !self.formulas.is_empty() {
            self.hits.scan(self.formulas.as_bytes(), &sink.det);
        }
        if let Some((_, k)) = best {
            cats = cats.union(self.hits.categories());
            sink.out
                .subject(Namespace::Field, trim(cells[k].1.as_bytes()), cats);
        } else {
            self.hits.emit_loose(sink.out, cats);
        }
        sink.out.end_record(0..end, end);
    }
}

/// The column of a cell reference (`B7` → 1).
fn column(r: &str) -> Option<u32> {
    let letters = r.bytes().take_while(u8::is_ascii_alphabetic);
    let mut col = 0u32;
    let mut n = 0;
    for c in letters {
        n += 1;
        if n > 3 {
            return None;
        }
        col = col * 26 + u32::from(c.to_ascii_uppercase() - b'A' + 1);
    }
    if n == 0 {
        return None;
    }
    Some(col - 1)
}

/// An integral number in any notation as its integer digits (`1.38001380000E10` →
/// `13800138000`, `42.0` → `42`); `None` when the value is not an integral decimal number
/// (it is then inspected as written).
pub(crate) fn integral(v: &str) -> Option<String> {
    let (neg, body) = match v.as_bytes().first()? {
        b'-' => (true, &v[1..]),
        b'+' => (false, &v[1..]),
        _ => (false, v),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(k) => (&body[..k], body[k + 1..].parse::<i32>().ok()?),
        None => (body, 0),
    };
    let (int, frac) = match mantissa.find('.') {
        Some(k) => (&mantissa[..k], &mantissa[k + 1..]),
        None => (mantissa, ""),
    };
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
        || !(-40..=40).contains(&exp)
    {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    // The decimal point sits after `point` digits.
    let point = int.len() as i64 + i64::from(exp);
    if point < 0 {
        return digits.bytes().all(|c| c == b'0').then(|| "0".to_owned());
    }
    let point = point as usize;
    let (whole, rest) = if point <= digits.len() {
        (digits[..point].to_owned(), &digits[point..])
    } else {
        (format!("{digits}{}", "0".repeat(point - digits.len())), "")
    };
    if !rest.bytes().all(|c| c == b'0') {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    Some(if neg && whole != "0" {
        format!("-{whole}")
    } else {
        whole.to_owned()
    })
}
