//! The deploy pipeline's messages on a Redis Stream, consumed by real engine processes: auto-created
//! jobs (once, whatever the deliveries), app removal, backups on request with their completion
//! published back, dead letters, and a consumer killed before acknowledging. Each test has its
//! own stream keys (`vardo:events:<bed id>`), so parallel tests never see each other's messages.

mod auto_jobs;
mod delivery;
mod foreign_names;
mod outbox;
mod requests;
mod support;
