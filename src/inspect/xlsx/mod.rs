//! Spreadsheet bodies (SPEC §3 "spreadsheets"): an xlsx workbook is judged whole. The scanner
//! holds the workbook (its [`XlsxScanner::frontier`] stays 0, so nothing is released before the
//! end) up to `inspection.max_workbook_bytes` — beyond it [`Unreadable::WorkbookTooLarge`],
//! which the proxy answers with 413 — and reads it when the body ends.
//!
//! The zip is read from memory with the `zip` crate and bounded like a content coding: at most
//! [`MAX_ENTRIES`] entries (counted in the bytes before the archive is parsed), every entry's
//! declared and actual decoded size and ratio within the [`DecodeLimits`], and the decoded
//! bytes of all entries read together within `max_decoded_bytes`. Entry names that are
//! absolute, hold a `..` segment or a backslash, repeat another entry's name (part names
//! compare case-insensitively), encrypted entries, a `vbaProject.bin` or a macro-enabled
//! content type, an OLE2 compound file (`.xls`, and an encrypted OOXML), a truncated zip and a
//! zip without `xl/workbook.xml` are unreadable.
//!
//! What is read, with `quick-xml` (no DTD: a `DOCTYPE` or an unknown entity is unreadable):
//! every sheet the workbook lists (through `xl/_rels/workbook.xml.rels`) and every other
//! `xl/worksheets/*.xml` part; shared strings (rich text runs concatenated), inline strings,
//! `t="str"` formula results, numbers (an integral number in any notation, `1.38001380000E10`,
//! becomes its integer digits, so a phone stored as a number is a phone), error values and
//! formula text; booleans are not values. Each sheet's first non-empty row gives the field
//! names (its cells are values too: their detector hits are subjects of their own) and each
//! later row is a record, exactly as a CSV row is: a cell under a subject-field header is the
//! record's subject, every cell goes to the detectors. Sheet names and defined names go to the
//! detectors as one record of loose values, and so does the text of every other XML part of
//! the package (comments, drawings, pivot caches), so nothing the package carries as text is
//! left unread.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{BufReader, Cursor, Read};

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use zip::ZipArchive;

use super::config::DecodeLimits;
use super::detect;
use super::error::Unreadable;
use super::Sink;

mod sheet;

#[cfg(test)]
pub(crate) use sheet::integral;
use sheet::Rows;

/// Most entries a workbook's zip may hold.
pub(crate) const MAX_ENTRIES: usize = 10_000;
/// A zip's local file header: the first bytes of every xlsx.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
/// A zip's central directory header (one per entry).
const CD_MAGIC: &[u8] = b"PK\x01\x02";
/// The OLE2 compound file: `.xls`, and the container of an encrypted OOXML file.
const OLE2_MAGIC: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
/// Buffer of the XML reader on an entry.
const READ_BUF: usize = 32 * 1024;

/// The workbook scanner: holds the body, reads it at the end.
#[derive(Debug)]
pub(crate) struct XlsxScanner {
    buf: Vec<u8>,
    /// The body was only sniffed (`application/octet-stream`): content that is no xlsx is an
    /// unknown content type, as it was before the gate read workbooks.
    sniffed: bool,
}

impl XlsxScanner {
    /// `sniffed`: the body's type did not say xlsx (an `application/octet-stream` body or part).
    pub(crate) fn new(sniffed: bool) -> Self {
        XlsxScanner {
            buf: Vec::new(),
            sniffed,
        }
    }

    /// A workbook is judged whole: nothing may be released before the end.
    pub(crate) fn frontier(&self) -> u64 {
        0
    }

    /// Bytes the scanner holds (the workbook so far).
    pub(crate) fn held_bytes(&self) -> u64 {
        self.buf.len() as u64
    }

    fn not_workbook(&self, why: &'static str) -> Unreadable {
        if self.sniffed {
            Unreadable::UnknownContentType
        } else {
            Unreadable::BadWorkbook(why)
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let total = self.buf.len() as u64 + data.len() as u64;
        if total > sink.cfg.max_workbook_bytes() {
            self.buf = Vec::new();
            // A body only sniffed may be any binary: too large to tell, it stays unreadable
            // (as an unknown type always was); a declared workbook is too large (413).
            return Err(if self.sniffed {
                Unreadable::UnknownContentType
            } else {
                Unreadable::WorkbookTooLarge
            });
        }
        let before = self.buf.len();
        self.buf.extend_from_slice(data);
        // Settle the magic as soon as its bytes are here: other binaries fail at once instead
        // of being held.
        if before < ZIP_MAGIC.len() {
            let n = self.buf.len().min(ZIP_MAGIC.len());
            if self.buf[..n] != ZIP_MAGIC[..n] {
                let why = if OLE2_MAGIC.starts_with(&self.buf[..n]) {
                    "an OLE2 file (xls or an encrypted workbook)"
                } else {
                    "not a zip"
                };
                self.buf = Vec::new();
                return Err(self.not_workbook(why));
            }
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let buf = std::mem::take(&mut self.buf);
        if buf.is_empty() {
            return Ok(());
        }
        if buf.len() < ZIP_MAGIC.len() {
            return Err(self.not_workbook("not a zip"));
        }
        let end = buf.len() as u64;
        let mut wb = Workbook::open(&buf, sink.cfg.decode_limits(), self.sniffed)?;
        wb.read(sink, end)
    }
}

/// What a checked entry is: its index in the archive.
type Entries = HashMap<Vec<u8>, usize>;

/// An open workbook: the archive and its checked entry names.
struct Workbook<'a> {
    zip: ZipArchive<Cursor<&'a [u8]>>,
    /// Lower-cased entry name → index.
    entries: Entries,
    limits: DecodeLimits,
    /// Decoded bytes of every entry read so far.
    decoded: Cell<u64>,
    /// Entries already read (the remaining XML parts get the detector pass).
    done: Vec<bool>,
}

impl<'a> Workbook<'a> {
    /// Opens and checks the archive: entry count, names, encryption, declared sizes, macros.
    fn open(buf: &'a [u8], limits: DecodeLimits, sniffed: bool) -> Result<Self, Unreadable> {
        let bad = Unreadable::BadWorkbook;
        // Bound the work of parsing the central directory before it is parsed: an entry has a
        // header with this signature, so there are no more entries than signatures.
        if memchr::memmem::find_iter(buf, CD_MAGIC)
            .nth(MAX_ENTRIES)
            .is_some()
        {
            return Err(bad("more than 10,000 entries"));
        }
        let mut zip = ZipArchive::new(Cursor::new(buf))
            .map_err(|_| bad("not a readable zip (truncated?)"))?;
        if zip.len() > MAX_ENTRIES {
            return Err(bad("more than 10,000 entries"));
        }
        let mut entries = Entries::with_capacity(zip.len());
        for i in 0..zip.len() {
            let f = zip.by_index_raw(i).map_err(|_| bad("unreadable entry"))?;
            let raw = f.name_raw();
            if !safe_name(raw) {
                return Err(bad("entry with an absolute or parent path"));
            }
            if f.encrypted() {
                return Err(bad("encrypted entry"));
            }
            let (size, packed) = (f.size(), f.compressed_size());
            if size > limits.max_decoded_bytes
                || (size > limits.ratio_grace_bytes
                    && size > packed.max(1).saturating_mul(u64::from(limits.max_ratio)))
            {
                return Err(Unreadable::Bomb);
            }
            let name = raw.to_ascii_lowercase();
            if name == b"vbaproject.bin" || name.ends_with(b"/vbaproject.bin") {
                return Err(bad("macro-enabled workbook"));
            }
            if entries.insert(name, i).is_some() {
                return Err(bad("two entries with one name"));
            }
        }
        if !entries.contains_key(b"xl/workbook.xml".as_slice()) {
            return Err(if sniffed {
                Unreadable::UnknownContentType
            } else {
                bad("no xl/workbook.xml")
            });
        }
        let done = vec![false; zip.len()];
        Ok(Workbook {
            zip,
            entries,
            limits,
            decoded: Cell::new(0),
            done,
        })
    }

    /// Reads every part and emits the records.
    fn read(&mut self, sink: &mut Sink<'_>, end: u64) -> Result<(), Unreadable> {
        if let Some(types) = self.slurp("[content_types].xml", 1 << 20)? {
            let lower = types.to_ascii_lowercase();
            if memchr::memmem::find(&lower, b"macroenabled").is_some() {
                return Err(Unreadable::BadWorkbook("macro-enabled workbook"));
            }
        }
        let book = self.workbook()?;
        let rels = self.relationships()?;
        // Sheet names and defined names: values for the detectors.
        let mut loose = Loose::default();
        for s in &book.sheets {
            loose.scan(s.name.as_bytes(), sink);
        }
        for d in &book.defined {
            loose.scan(d.as_bytes(), sink);
        }
        loose.emit(sink, end);
        let strings = match rels
            .iter()
            .find(|r| r.kind.ends_with("/sharedStrings"))
            .map(|r| r.target.clone())
        {
            Some(t) => self.shared_strings(&t, sink)?,
            None => self.shared_strings("xl/sharedstrings.xml", sink)?,
        };
        for s in &book.sheets {
            let Some(rel) = rels.iter().find(|r| r.id == s.rel) else {
                return Err(Unreadable::BadWorkbook("a sheet without its part"));
            };
            if !rel.kind.ends_with("/worksheet") {
                // A chart sheet or dialog sheet holds no cells; its text gets the loose pass.
                continue;
            }
            let Some(&i) = self.entries.get(rel.target.as_bytes()) else {
                return Err(Unreadable::BadWorkbook("a sheet without its part"));
            };
            if !self.done[i] {
                self.sheet(i, &strings, sink, end)?;
            }
        }
        // Worksheet parts the workbook does not list: their cells leave with the file too.
        let mut rest: Vec<(Vec<u8>, usize)> = self
            .entries
            .iter()
            .filter(|(n, i)| {
                !self.done[**i] && n.starts_with(b"xl/worksheets/") && n.ends_with(b".xml")
            })
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        rest.sort();
        for (_, i) in rest {
            self.sheet(i, &strings, sink, end)?;
        }
        // Every other XML part: its text and attribute values for the detectors.
        let mut other: Vec<(Vec<u8>, usize)> = self
            .entries
            .iter()
            .filter(|(n, i)| !self.done[**i] && (n.ends_with(b".xml") || n.ends_with(b".rels")))
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        other.sort();
        for (_, i) in other {
            let mut loose = Loose::default();
            self.loose_part(i, &mut loose, sink)?;
            loose.emit(sink, end);
        }
        Ok(())
    }

    /// An entry's decoded bytes through the limits, as a buffered reader.
    fn open_entry(&mut self, i: usize) -> Result<Entry<'_, 'a>, Unreadable> {
        self.done[i] = true;
        let limits = self.limits;
        let decoded = &self.decoded;
        let f = self
            .zip
            .by_index(i)
            .map_err(|_| Unreadable::BadWorkbook("unsupported or corrupt entry"))?;
        let packed = f.compressed_size();
        Ok(Entry {
            inner: BufReader::with_capacity(
                READ_BUF,
                Bounded {
                    inner: f,
                    limits,
                    packed,
                    read: 0,
                    decoded,
                    bomb: false,
                },
            ),
        })
    }

    /// A small part read whole (at most `max` decoded bytes); `None` when absent.
    fn slurp(&mut self, name: &str, max: u64) -> Result<Option<Vec<u8>>, Unreadable> {
        let Some(&i) = self.entries.get(name.as_bytes()) else {
            return Ok(None);
        };
        let mut e = self.open_entry(i)?;
        let mut out = Vec::new();
        let r = (&mut e.inner).take(max + 1).read_to_end(&mut out);
        e.check(r)?;
        if out.len() as u64 > max {
            return Err(Unreadable::BadWorkbook(
                "a package part over its size limit",
            ));
        }
        Ok(Some(out))
    }

    /// `xl/workbook.xml`: the sheets and the defined names.
    fn workbook(&mut self) -> Result<Book, Unreadable> {
        let Some(&i) = self.entries.get(b"xl/workbook.xml".as_slice()) else {
            return Err(Unreadable::BadWorkbook("no xl/workbook.xml"));
        };
        let mut book = Book::default();
        let mut in_defined = false;
        let mut text = String::new();
        let mut e = self.open_entry(i)?;
        e.events(&mut |ev| {
            match ev {
                Ev::Open(s) | Ev::Empty(s) if local(s.name().0) == "sheet" => {
                    let name = attr(s, "name")?.unwrap_or_default();
                    let rel = attr(s, "id")?.unwrap_or_default();
                    book.sheets.push(Sheet { name, rel });
                }
                Ev::Open(s) if local(s.name().0) == "definedName" => {
                    if let Some(n) = attr(s, "name")? {
                        book.defined.push(n);
                    }
                    in_defined = true;
                    text.clear();
                }
                Ev::Close(n) if local(n.as_bytes()) == "definedName" => {
                    in_defined = false;
                    book.defined.push(std::mem::take(&mut text));
                }
                Ev::Text(t) if in_defined => {
                    if text.len() + t.len() > 1 << 20 {
                        return Err(Unreadable::BadWorkbook(
                            "a defined name over its size limit",
                        ));
                    }
                    text.push_str(t);
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(book)
    }

    /// `xl/_rels/workbook.xml.rels`: relationship id → type and target part name.
    fn relationships(&mut self) -> Result<Vec<Rel>, Unreadable> {
        let Some(&i) = self.entries.get(b"xl/_rels/workbook.xml.rels".as_slice()) else {
            return Ok(Vec::new());
        };
        let mut rels = Vec::new();
        let mut e = self.open_entry(i)?;
        e.events(&mut |ev| {
            if let Ev::Open(s) | Ev::Empty(s) = ev {
                if local(s.name().0) == "Relationship" {
                    let id = attr(s, "Id")?.unwrap_or_default();
                    let kind = attr(s, "Type")?.unwrap_or_default();
                    let target = attr(s, "Target")?.unwrap_or_default();
                    let external = attr(s, "TargetMode")?.is_some_and(|m| m == "External");
                    if !external {
                        rels.push(Rel {
                            id,
                            kind,
                            target: part_name("xl/", &target),
                        });
                    }
                }
            }
            Ok(())
        })?;
        Ok(rels)
    }

    /// The shared strings table (each `<si>`'s text runs concatenated, phonetic runs left
    /// out), bounded by `max_workbook_bytes` in all.
    fn shared_strings(&mut self, name: &str, sink: &Sink<'_>) -> Result<Vec<String>, Unreadable> {
        let Some(&i) = self.entries.get(name.as_bytes()) else {
            return Ok(Vec::new());
        };
        let max = sink.cfg.max_workbook_bytes();
        let mut out: Vec<String> = Vec::new();
        let mut total = 0u64;
        let mut cur = String::new();
        let (mut in_t, mut in_rph) = (false, false);
        let mut e = self.open_entry(i)?;
        e.events(&mut |ev| {
            match ev {
                Ev::Open(s) => match local(s.name().0) {
                    "si" => cur.clear(),
                    "t" if !in_rph => in_t = true,
                    "rPh" => in_rph = true,
                    _ => {}
                },
                Ev::Empty(s) if local(s.name().0) == "si" => out.push(String::new()),
                Ev::Close(n) => match local(n.as_bytes()) {
                    "si" => out.push(std::mem::take(&mut cur)),
                    "t" => in_t = false,
                    "rPh" => in_rph = false,
                    _ => {}
                },
                Ev::Text(t) if in_t => {
                    total += t.len() as u64;
                    if total > max {
                        return Err(Unreadable::WorkbookTooLarge);
                    }
                    cur.push_str(t);
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// One worksheet: its rows as records.
    fn sheet(
        &mut self,
        i: usize,
        strings: &[String],
        sink: &mut Sink<'_>,
        end: u64,
    ) -> Result<(), Unreadable> {
        let mut rows = Rows::new(strings, end);
        let mut e = self.open_entry(i)?;
        e.events(&mut |ev| rows.event(ev, sink))
    }

    /// Text and attribute values of any other part, for the detectors.
    fn loose_part(
        &mut self,
        i: usize,
        loose: &mut Loose,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        let max = sink.cfg.max_record_bytes();
        let mut text = String::new();
        let mut e = self.open_entry(i)?;
        e.events(&mut |ev| {
            match ev {
                Ev::Open(s) | Ev::Empty(s) => {
                    loose.flush(&mut text, sink);
                    for a in s.attributes().with_checks(false) {
                        let a = a.map_err(|_| malformed())?;
                        let v = a
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .map_err(|_| malformed())?;
                        loose.scan(v.as_bytes(), sink);
                    }
                }
                Ev::Close(_) => loose.flush(&mut text, sink),
                Ev::Text(t) => {
                    if text.len() + t.len() > max {
                        loose.flush(&mut text, sink);
                    }
                    text.push_str(t);
                }
            }
            Ok(())
        })?;
        loose.flush(&mut text, sink);
        Ok(())
    }
}

/// What the XML walk hands its visitor: elements, and text with references resolved.
enum Ev<'x> {
    Open(&'x BytesStart<'x>),
    Empty(&'x BytesStart<'x>),
    Close(&'x str),
    Text(&'x str),
}

/// One entry being read.
struct Entry<'z, 'a> {
    inner: BufReader<Bounded<'z, zip::read::ZipFile<'z, Cursor<&'a [u8]>>>>,
}

impl Entry<'_, '_> {
    /// Maps a read error: the limits' own (a bomb), or a corrupt entry.
    fn check<T>(&self, r: std::io::Result<T>) -> Result<T, Unreadable> {
        match r {
            Ok(v) => Ok(v),
            Err(_) if self.inner.get_ref().bomb => Err(Unreadable::Bomb),
            Err(_) => Err(Unreadable::BadWorkbook("corrupt entry")),
        }
    }

    /// Walks the entry's XML, handing each element and text run to `visit`. A `DOCTYPE`, an
    /// entity other than the five predefined ones, and XML that is not well-formed are
    /// unreadable; so is text that is not UTF-8.
    fn events(
        &mut self,
        visit: &mut dyn FnMut(Ev<'_>) -> Result<(), Unreadable>,
    ) -> Result<(), Unreadable> {
        let mut reader = Reader::from_reader(&mut self.inner);
        reader.config_mut().check_end_names = true;
        let mut buf = Vec::with_capacity(READ_BUF);
        let mut chr = [0u8; 4];
        loop {
            buf.clear();
            let ev = match reader.read_event_into(&mut buf) {
                Ok(ev) => ev,
                Err(_) => {
                    drop(reader);
                    return Err(if self.inner.get_ref().bomb {
                        Unreadable::Bomb
                    } else {
                        malformed()
                    });
                }
            };
            match ev {
                Event::Start(s) => visit(Ev::Open(&s))?,
                Event::Empty(s) => {
                    visit(Ev::Empty(&s))?;
                    visit(Ev::Close(utf8(s.name().0)?))?;
                }
                Event::End(e) => visit(Ev::Close(utf8(e.name().0)?))?,
                Event::Text(t) => visit(Ev::Text(utf8(&t)?))?,
                Event::CData(t) => visit(Ev::Text(utf8(&t)?))?,
                Event::GeneralRef(r) => {
                    let c = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.encode_utf8(&mut chr),
                        Ok(None) => match quick_xml::escape::resolve_predefined_entity(utf8(&r)?) {
                            Some(s) => {
                                visit(Ev::Text(s))?;
                                continue;
                            }
                            None => return Err(malformed()),
                        },
                        Err(_) => return Err(malformed()),
                    };
                    visit(Ev::Text(c))?;
                }
                Event::DocType(_) => {
                    return Err(Unreadable::BadWorkbook("a DOCTYPE in a package part"))
                }
                Event::Eof => return Ok(()),
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            }
        }
    }
}

fn malformed() -> Unreadable {
    Unreadable::BadWorkbook("malformed XML in a package part")
}

/// Text of a package part as `str`: a part that is not UTF-8 is unreadable.
fn utf8(b: &[u8]) -> Result<&str, Unreadable> {
    std::str::from_utf8(b).map_err(|_| Unreadable::BadWorkbook("a package part that is not UTF-8"))
}

/// An entry's decoded bytes, counted against the limits as they are read.
struct Bounded<'c, R> {
    inner: R,
    limits: DecodeLimits,
    packed: u64,
    read: u64,
    decoded: &'c Cell<u64>,
    /// The limits stopped the read.
    bomb: bool,
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.read += n as u64;
        let total = self.decoded.get() + n as u64;
        self.decoded.set(total);
        let l = &self.limits;
        if self.read > l.max_decoded_bytes
            || total > l.max_decoded_bytes
            || (self.read > l.ratio_grace_bytes
                && self.read > self.packed.max(1).saturating_mul(u64::from(l.max_ratio)))
        {
            self.bomb = true;
            return Err(std::io::Error::other(
                "decoded size or ratio over the limit",
            ));
        }
        Ok(n)
    }
}

/// The workbook's sheets and defined names.
#[derive(Default)]
struct Book {
    sheets: Vec<Sheet>,
    defined: Vec<String>,
}

struct Sheet {
    name: String,
    rel: String,
}

struct Rel {
    id: String,
    kind: String,
    /// Lower-cased part name inside the package.
    target: String,
}

/// The local part of an XML name (`r:id` → `id`); a name that is not UTF-8 is `""` (it
/// matches none of the package's names).
fn local(name: &[u8]) -> &str {
    let name = std::str::from_utf8(name).unwrap_or("");
    match name.rfind(':') {
        Some(k) => &name[k + 1..],
        None => name,
    }
}

/// An attribute's unescaped value, by local name.
fn attr(s: &BytesStart<'_>, name: &str) -> Result<Option<String>, Unreadable> {
    for a in s.attributes() {
        let a = a.map_err(|_| malformed())?;
        if local(a.key.0) == name {
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|_| malformed())?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

/// A relationship target as a lower-cased part name: relative to `base`, or absolute from
/// the package root; dot segments resolved.
fn part_name(base: &str, target: &str) -> String {
    let full = match target.strip_prefix('/') {
        Some(abs) => abs.to_owned(),
        None => format!("{base}{target}"),
    };
    let mut out: Vec<&str> = Vec::new();
    for seg in full.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    out.join("/").to_ascii_lowercase()
}

/// Whether an entry name stays inside the package: not absolute, no drive, no `..` segment,
/// no backslash (which some extractors take for a separator).
fn safe_name(raw: &[u8]) -> bool {
    let drive = raw.get(1) == Some(&b':');
    let outside = raw.first().is_none_or(|c| *c == b'/')
        || raw.contains(&b'\\')
        || raw.contains(&0)
        || drive
        || raw.split(|c| *c == b'/').any(|seg| seg == b"..");
    !outside
}

/// Detector hits of loose values (names, other parts): a record of subjects of their own.
#[derive(Default)]
struct Loose {
    any: bool,
}

impl Loose {
    fn scan(&mut self, text: &[u8], sink: &mut Sink<'_>) {
        let out = &mut *sink.out;
        detect::scan(text, &sink.det, &mut |ns, id, c| out.subject(ns, id, c));
        self.any = true;
    }

    fn flush(&mut self, text: &mut String, sink: &mut Sink<'_>) {
        if !text.is_empty() {
            self.scan(text.as_bytes(), sink);
            text.clear();
        }
    }

    fn emit(&mut self, sink: &mut Sink<'_>, end: u64) {
        if self.any {
            sink.out.end_record(0..end, end);
        }
        self.any = false;
    }
}
