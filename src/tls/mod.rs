//! TLS: the client side towards upstreams ([`client`]); interception (CA, leaf minting) comes
//! with the interception issue.

pub mod client;
