//! The streaming inspection engine (issue 4): finds records, data subjects and PI categories in
//! a request's query, headers and body while it streams.
