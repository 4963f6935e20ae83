//! Admin tools: subuid/subgid provisioning and `warren doctor`.
