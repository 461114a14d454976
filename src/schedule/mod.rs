//! Time and events: schedules in named time zones, and the daemon that runs
//! them, watches folder sources, and serves the command line while it holds
//! the store.

pub mod api;
pub mod daemon;
pub mod spec;

pub use spec::{Schedule, ScheduleError};
