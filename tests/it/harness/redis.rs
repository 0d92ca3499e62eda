//! Real Redis for the tests: [`RedisServer`] and [`RedisCluster`] from the library's test
//! support (`src/testing/redis_server.rs`), the one implementation the unit tests and the
//! benchmarks use too.

pub use transfer_gate::testing::redis_server::*;
