//! Admin tools: subuid/subgid provisioning (`warren admin subid`) and `warren doctor`.
//!
//! Pure cores (login.defs parsing, the range planner, the checker, doctor's judges) are
//! separate from the code that reads NSS, locks and writes `/etc`, so they are unit-tested
//! without root. Nothing here runs as part of a container start.

pub mod diff;
pub mod doctor;
pub mod ids;
pub mod logindefs;
pub mod passwd;
pub mod subid_apply;
pub mod subid_check;
pub mod subid_lock;
pub mod subid_plan;
pub mod subid_source;
