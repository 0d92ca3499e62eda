//! Where a key path sits in a TOML file: maps `destination[2].hosts[1]` to the 1-based line and
//! column of that key (or array element) in the text the operator wrote, so that `check` can
//! print `gate.toml:42: inspection.max_body_bytes: …`.
//!
//! The file is parsed a second time with `toml_edit`, which keeps spans, but only when the
//! first diagnostic asks where a key is: a valid file (the common case, and a large one with
//! 100,000 destinations) is parsed once. A path whose last keys are absent (a missing key that
//! a rule requires) resolves to the nearest key or table that is present; a path of which
//! nothing is present has no position.

use std::ops::Range;
use std::sync::OnceLock;
use toml_edit::{ImDocument, Item, Table, TableLike, Value};

/// One configuration file's text, ready to answer "where is this key?".
#[derive(Debug)]
pub struct Source {
    /// The file's name as diagnostics show it (e.g. `gate.toml`).
    pub file: String,
    /// The text, kept until a position is asked for.
    text: String,
    /// Parsed on the first [`Source::position`]; `None` inside when the text is not valid
    /// TOML (its parse error carries its own position).
    doc: OnceLock<Option<ImDocument<String>>>,
    /// Byte offset where each line starts (also on first use).
    line_starts: OnceLock<Vec<usize>>,
}

/// A 1-based line and column (in characters) in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The line, from 1.
    pub line: usize,
    /// The column in characters, from 1.
    pub column: usize,
}

impl Source {
    /// Keeps `text`, the contents of `file`, to be indexed when a position is first asked for.
    pub fn new(file: &str, text: String) -> Self {
        Source {
            file: file.to_owned(),
            text,
            doc: OnceLock::new(),
            line_starts: OnceLock::new(),
        }
    }

    /// The position of the key path `path` (`gate.mode`, `destination[2].hosts[1]`,
    /// `inspection.categories.health[0]`), or of its nearest present ancestor; `None` for an
    /// empty path or one of which nothing is in the file.
    pub fn position(&self, path: &str) -> Option<Position> {
        let doc = self
            .doc
            .get_or_init(|| ImDocument::parse(self.text.clone()).ok())
            .as_ref()?;
        let span = locate(doc.as_table(), path)?;
        Some(self.position_of(doc.raw(), span.start))
    }

    fn position_of(&self, text: &str, offset: usize) -> Position {
        let line_starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let line = line_starts.partition_point(|&s| s <= offset).max(1);
        let start = line_starts[line - 1];
        let column = text.get(start..offset).map_or(1, |s| s.chars().count() + 1);
        Position { line, column }
    }
}

/// A place in the document while walking a path.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Table(t) => Some(t),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
        }
    }

    /// The `i`th table of an array of tables or the `i`th element of an array, with its span.
    fn index(self, i: usize) -> Option<(Node<'a>, Option<Range<usize>>)> {
        match self {
            Node::Item(Item::ArrayOfTables(a)) => a.get(i).map(|t| (Node::Table(t), t.span())),
            Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
                a.get(i).map(|v| (Node::Value(v), v.span()))
            }
            _ => None,
        }
    }
}

/// The span of the deepest present part of `path` in `root`.
fn locate(root: &Table, path: &str) -> Option<Range<usize>> {
    let mut node = Node::Table(root);
    let mut best = None;
    for segment in path.split('.') {
        let (name, mut indexes) = match segment.find('[') {
            Some(at) => segment.split_at(at),
            None => (segment, ""),
        };
        let Some((key, item)) = node.table_like().and_then(|t| t.get_key_value(name)) else {
            return best;
        };
        best = key.span().or_else(|| item.span()).or(best);
        node = match item {
            Item::Value(v) => Node::Value(v),
            other => Node::Item(other),
        };
        while let Some(rest) = indexes.strip_prefix('[') {
            let Some((i, after)) = rest.split_once(']') else {
                return best;
            };
            indexes = after;
            let Some((next, span)) = i.parse().ok().and_then(|i| node.index(i)) else {
                return best;
            };
            best = span.or(best);
            node = next;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# a comment
[gate]
mode = "chaos"

[inspection.subjects]
fields = ["a",
  "b"]

[[destination]]
name = "eu"

[[destination]]
name = "us"
hosts = ["x", "y"]
conn = { a = 1 }
"#;

    fn at(path: &str) -> Option<(usize, usize)> {
        Source::new("gate.toml", TEXT.to_owned())
            .position(path)
            .map(|p| (p.line, p.column))
    }

    #[test]
    fn keys_tables_and_elements() {
        assert_eq!(at("gate"), Some((2, 2)));
        assert_eq!(at("gate.mode"), Some((3, 1)));
        assert_eq!(at("inspection.subjects.fields"), Some((6, 1)));
        assert_eq!(at("inspection.subjects.fields[1]"), Some((7, 3)));
        assert_eq!(at("destination[0]"), Some((9, 1)));
        assert_eq!(at("destination[1].name"), Some((13, 1)));
        assert_eq!(at("destination[1].hosts[1]"), Some((14, 15)));
        assert_eq!(at("destination[1].conn.a"), Some((15, 10)));
    }

    #[test]
    fn absent_keys_fall_back_to_what_is_present() {
        assert_eq!(at("gate.admin_listen"), Some((2, 2)));
        assert_eq!(at("destination[1].country"), Some((12, 1)));
        assert_eq!(at("destination[5].name"), at("destination"));
        assert_eq!(at("ledger.redis_url"), None);
        assert_eq!(at(""), None);
        assert_eq!(Source::new("x", "[gate".to_owned()).position("gate"), None);
    }
}
