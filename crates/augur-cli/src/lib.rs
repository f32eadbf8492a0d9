//! The `augur` binary's library half: the cluster client that follows leader redirects,
//! shared by `augur ctl`, the benchmarks and the end-to-end tests.

pub use augur_proto::client;

pub use client::Client;
