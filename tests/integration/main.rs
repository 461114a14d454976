//! dropsync's integration tests: the real binary, run against temporary
//! folders of CSV drops and a real DuckDB store, checked the way a user
//! would check it: exit codes, what it prints, what the store holds and what
//! the history says.

mod common;

mod alerts;
mod bad_input;
mod changelog;
mod chunks;
mod cli;
mod cli_habits;
mod computed;
mod conformance;
mod correctness;
mod daemon;
mod demo;
mod durability;
mod enterprise_exports;
mod error_policy;
mod feed;
mod formats;
mod freshness;
mod local_security;
mod packaging;
mod partner_formats;
mod pg_commands;
mod pipeline;
mod postgres;
mod progress;
mod references;
mod regression;
mod remote;
mod remote_hardening;
mod replay;
mod results;
mod servers;
mod service;
mod store_cost;
mod store_parity;
mod subscribers;
mod unattended;
mod unchanged_records;
mod web_actions;
mod web_api;
mod web_auth;
mod web_browser;
mod workers;
