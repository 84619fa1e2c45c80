//! End-to-end tests of the `flowrun` binary: one test binary, a small harness, and one module
//! per area. Projects are written into fresh temp dirs; output is snapshot-tested with temp
//! paths, run ids and durations filtered.

mod harness;

mod agent;
mod check;
mod ci_example;
mod cost;
mod crash;
mod dev;
mod embed;
mod eval_cmd;
mod init;
mod otel;
mod pg;
mod providers;
mod remote;
mod run;
mod schema;
mod serve;
mod sync;
mod test_cmd;
