//! TLS: the client side towards upstreams ([`client`]), and interception: the CA that
//! `ca init` creates ([`ca`]) and the gate loads (`load`: permissions, PEM, self-test), and the leaf certificates minted per server
//! name with a bounded cache, plus the rustls server config of intercepted connections
//! ([`mint`]). The connection handling itself is `proxy::intercept`.

pub mod ca;
pub mod client;
mod load;
pub mod mint;
