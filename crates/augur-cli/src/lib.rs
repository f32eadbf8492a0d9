//! The `augur` binary's library half: the cluster client that follows leader redirects,
//! shared by `augur ctl`, the benchmarks and the end-to-end tests.

pub mod client;

pub use client::Client;
