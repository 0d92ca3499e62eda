//! The typed *unreadable* outcome of inspection (SPEC §3, §9): the proxy turns every variant
//! into 451 `unreadable_body`, except [`Unreadable::WorkbookTooLarge`] (413, like a body over
//! `max_body_bytes`). Variants carry kinds and offsets, never body bytes, so they are
//! safe to log.

/// Why a body cannot be inspected. Offsets are in the decoded body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// The `Content-Type` is missing or not one the engine reads.
    #[error("content type not inspectable")]
    UnknownContentType,
    /// The `Content-Type` breaks RFC 9110, repeats a parameter, is sent twice, or names a
    /// multipart type without a valid boundary.
    #[error("content type malformed or ambiguous")]
    BadContentType,
    /// The `charset` is not one the engine decodes, or a byte order mark contradicts it.
    #[error("charset not supported or contradicted by a byte order mark")]
    UnsupportedCharset,
    /// A byte sequence that is not valid in the declared charset.
    #[error("invalid sequence for the charset at offset {offset}")]
    InvalidCharset {
        /// Offset of the sequence in the body before charset decoding.
        offset: u64,
    },
    /// A NUL byte in a text body (binary data, or UTF-16 sent without saying so).
    #[error("NUL byte in a text body at offset {offset}")]
    NotText {
        /// Offset in the decoded text.
        offset: u64,
    },
    /// The `Content-Encoding` is not one the engine decodes.
    #[error("content encoding not supported")]
    UnknownEncoding,
    /// Bytes that break the format's grammar.
    #[error("malformed body at offset {offset}")]
    Malformed {
        /// Offset of the offending byte.
        offset: u64,
    },
    /// The body ended in the middle of a value or record.
    #[error("body truncated at offset {offset}")]
    Truncated {
        /// Offset of the end of the body.
        offset: u64,
    },
    /// Invalid UTF-8 in a text format.
    #[error("invalid UTF-8 in the token starting at offset {offset}")]
    InvalidUtf8 {
        /// Offset of the token holding the invalid sequence.
        offset: u64,
    },
    /// Nesting deeper than `max_depth`.
    #[error("nesting deeper than the limit at offset {offset}")]
    TooDeep {
        /// Offset of the opening bracket over the limit.
        offset: u64,
    },
    /// A record (or a single value) larger than `max_record_bytes`.
    #[error("record starting at offset {offset} is larger than the limit")]
    RecordTooLarge {
        /// Offset where the record starts.
        offset: u64,
    },
    /// The compressed body decodes to more than the size or ratio limit.
    #[error("decoded body over the size or ratio limit")]
    Bomb,
    /// A compressed stream that declares a window larger than the gate decodes (a brotli
    /// window over [`crate::inspect::MAX_BROTLI_WINDOW_BITS`] bits): its decoder state
    /// alone would be bigger than the gate budgets for one body.
    #[error("compressed stream window larger than the gate decodes")]
    WindowTooLarge,
    /// The compressed stream is corrupt.
    #[error("corrupt compressed stream at encoded offset {offset}")]
    Corrupt {
        /// Offset in the original body.
        offset: u64,
    },
    /// A `multipart/form-data` body without boundary, with bad part headers or no end.
    #[error("bad multipart body at offset {offset}")]
    BadMultipart {
        /// Offset of the problem.
        offset: u64,
    },
    /// An XML `DOCTYPE` with an internal subset or an external identifier: the gate processes
    /// no DTD (no entity expanded, nothing fetched), so it cannot read what a DTD-processing
    /// receiver would.
    #[error("XML document type declaration with an internal subset or external identifier at offset {offset}")]
    Doctype {
        /// Offset of the `<!DOCTYPE`.
        offset: u64,
    },
    /// The XML declaration's `encoding` and the `Content-Type` charset name different
    /// encodings (or the declaration names another family than the bytes are in).
    #[error("XML declaration encoding and Content-Type charset disagree")]
    EncodingConflict,
    /// An xlsx workbook larger than `inspection.max_workbook_bytes` (or whose shared strings
    /// are): the proxy answers 413, whatever `unreadable` says.
    #[error("workbook larger than inspection.max_workbook_bytes")]
    WorkbookTooLarge,
    /// An xlsx body that cannot be read: not a zip, truncated, an OLE2 file (`.xls`, an
    /// encrypted workbook), an entry path outside the package, an encrypted entry, macros,
    /// more than 10,000 entries, no `xl/workbook.xml`, malformed XML. The reason is fixed text.
    #[error("workbook unreadable: {0}")]
    BadWorkbook(&'static str),
    /// `feed` or `finish` called after the scanner already failed or finished.
    #[error("scanner already failed or finished")]
    Closed,
}

impl Unreadable {
    /// A short stable name for logs and metrics.
    pub const fn kind(&self) -> &'static str {
        match self {
            Unreadable::UnknownContentType => "unknown_content_type",
            Unreadable::BadContentType => "bad_content_type",
            Unreadable::UnsupportedCharset => "unsupported_charset",
            Unreadable::InvalidCharset { .. } => "invalid_charset",
            Unreadable::NotText { .. } => "not_text",
            Unreadable::UnknownEncoding => "unknown_encoding",
            Unreadable::Malformed { .. } => "malformed",
            Unreadable::Truncated { .. } => "truncated",
            Unreadable::InvalidUtf8 { .. } => "invalid_utf8",
            Unreadable::TooDeep { .. } => "too_deep",
            Unreadable::RecordTooLarge { .. } => "record_too_large",
            Unreadable::Bomb => "bomb",
            Unreadable::WindowTooLarge => "window_too_large",
            Unreadable::Corrupt { .. } => "corrupt_encoding",
            Unreadable::BadMultipart { .. } => "bad_multipart",
            Unreadable::Doctype { .. } => "xml_doctype",
            Unreadable::EncodingConflict => "encoding_conflict",
            Unreadable::WorkbookTooLarge => "workbook_too_large",
            Unreadable::BadWorkbook(_) => "bad_workbook",
            Unreadable::Closed => "closed",
        }
    }
}
