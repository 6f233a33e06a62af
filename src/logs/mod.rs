//! Production log exports: read one (Vercel's runtime-log CSV, or a log drain's JSON lines),
//! turn it into a scenario that replays its arrivals (`scenario from-logs`), rank its errors
//! into the fix list (`triage`), and compare a replay with what production saw (`replay`), fit a world to it (`calibrate`), and write a run's access log as one (`logs export`).

pub mod calibrate;
pub mod classify;
pub mod doc_blocks;
pub mod export;
pub mod fidelity;
pub mod read;
pub mod summary;
pub mod to_scenario;
pub mod triage;

pub use classify::PathMap;
pub use summary::{summarize, Summary, WindowSpec};
