//! The subject ledger (issue 5): keyed hashing and exact, atomic, durable counting of distinct
//! data subjects in the legal window.
