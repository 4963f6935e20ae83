//! CDI devices of a Slurm task (`--container-devices`), and per-task GPU selection: a
//! kind alone (`nvidia.com/gpu`) stands for the GPUs Slurm allocated to *this* task, so
//! that tasks of a node, which share one user namespace and image mount, each see only
//! their own devices (every task has its own mount namespace: only its devices are
//! bound). Pure: the task's environment is passed in.
//!
//! The task's GPUs are read, in order, from `CUDA_VISIBLE_DEVICES` (per task with
//! `--gpus-per-task` or `--gpu-bind`), `SLURM_STEP_GPUS`, `SLURM_JOB_GPUS`:
//! comma-separated indices (or UUIDs), each becoming the CDI device of that name
//! (nvidia-ctk names a GPU by its index and by its UUID). Inside, the task sees only
//! those GPUs, numbered from 0 by the driver: `CUDA_VISIBLE_DEVICES` (and
//! `ROCR_VISIBLE_DEVICES`, `GPU_DEVICE_ORDINAL` when Slurm set them) are renumbered to
//! `0..n-1` accordingly.

use warren::runtime::cdi;

/// Check one `--container-devices` entry: a CDI name, or a kind alone.
pub fn check_entry(e: &str) -> Result<(), String> {
    if e.contains('=') {
        cdi::parse_request(e).map(|_| ())
    } else {
        cdi::check_kind(e).map_err(|w| format!("{e:?}: {w}"))
    }
}

/// The GPUs Slurm gave the task (see the module doc); empty when none.
pub fn allocated(env: &[(String, String)]) -> Vec<String> {
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    for var in ["CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"] {
        if let Some(v) = get(var) {
            let ids: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "NoDevFiles")
                .map(String::from)
                .collect();
            if !ids.is_empty() {
                return ids;
            }
        }
    }
    Vec::new()
}

/// What a task gets: CDI requests and variables to set inside.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub requests: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The task's CDI requests from its `--container-devices` entries and the site's
/// automatic kind (`cdi_gpus=` in plugstack.conf), given its environment. A kind alone
/// with no GPU allocated is an error (the user asked for GPUs the task does not have);
/// the site's kind then gives nothing.
pub fn select(
    entries: &[String],
    site_kind: Option<&str>,
    env: &[(String, String)],
) -> Result<Selection, String> {
    let gpus = allocated(env);
    let mut sel = Selection::default();
    let mut per_task = false;
    let add = |r: String, sel: &mut Selection| {
        if !sel.requests.contains(&r) {
            sel.requests.push(r);
        }
    };
    for e in entries {
        if e.contains('=') {
            add(e.clone(), &mut sel);
        } else if gpus.is_empty() {
            return Err(format!(
                "--container-devices={e}: this task has no GPUs allocated (ask for them with --gpus-per-task, --gpus or --gres)"
            ));
        } else {
            per_task = true;
            for g in &gpus {
                add(format!("{e}={g}"), &mut sel);
            }
        }
    }
    if let Some(kind) = site_kind {
        if !gpus.is_empty() && !entries.iter().any(|e| e == kind) {
            per_task = true;
            for g in &gpus {
                add(format!("{kind}={g}"), &mut sel);
            }
        }
    }
    if per_task {
        // Slurm sets all three for gres/gpu (NVIDIA, AMD ROCm, OpenCL ordinals).
        let renumbered: Vec<String> = (0..gpus.len()).map(|i| i.to_string()).collect();
        for var in [
            "CUDA_VISIBLE_DEVICES",
            "ROCR_VISIBLE_DEVICES",
            "GPU_DEVICE_ORDINAL",
        ] {
            if env.iter().any(|(k, _)| k == var) {
                sel.env.push((var.into(), renumbered.join(",")));
            }
        }
    }
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn entries() {
        assert!(check_entry("nvidia.com/gpu").is_ok());
        assert!(check_entry("nvidia.com/gpu=all").is_ok());
        assert!(check_entry("gpu").is_err());
        assert!(check_entry("nvidia.com/gpu=").is_err());
        assert!(check_entry("").is_err());
    }

    #[test]
    fn per_task_gpus_from_cuda_visible_devices_first() {
        let e = env(&[
            ("SLURM_STEP_GPUS", "0,1"),
            ("CUDA_VISIBLE_DEVICES", "1"),
            ("GPU_DEVICE_ORDINAL", "1"),
        ]);
        let s = select(&["nvidia.com/gpu".into()], None, &e).unwrap();
        assert_eq!(s.requests, ["nvidia.com/gpu=1"]);
        assert_eq!(
            s.env,
            [
                ("CUDA_VISIBLE_DEVICES".to_string(), "0".to_string()),
                ("GPU_DEVICE_ORDINAL".to_string(), "0".to_string())
            ]
        );
        let e = env(&[("SLURM_STEP_GPUS", "2,3")]);
        let s = select(&[], Some("nvidia.com/gpu"), &e).unwrap();
        assert_eq!(s.requests, ["nvidia.com/gpu=2", "nvidia.com/gpu=3"]);
        assert!(s.env.is_empty());
        // Explicit names pass through; the site kind gives nothing without GPUs.
        let s = select(&["x.com/y=all".into()], Some("nvidia.com/gpu"), &[]).unwrap();
        assert_eq!(s.requests, ["x.com/y=all"]);
        let e = select(
            &["nvidia.com/gpu".into()],
            None,
            &env(&[("CUDA_VISIBLE_DEVICES", "NoDevFiles")]),
        )
        .unwrap_err();
        assert!(e.contains("no GPUs allocated"), "{e}");
        let e = env(&[(
            "CUDA_VISIBLE_DEVICES",
            "GPU-520e01f2-cf30-6396-abef-e8e9a5233b0e",
        )]);
        let s = select(&["nvidia.com/gpu".into()], Some("nvidia.com/gpu"), &e).unwrap();
        assert_eq!(
            s.requests,
            ["nvidia.com/gpu=GPU-520e01f2-cf30-6396-abef-e8e9a5233b0e"]
        );
    }

    proptest! {
        #[test]
        fn any_environment(cvd in "[0-9a-zA-Z,:-]{0,30}", step in "[0-9,]{0,10}") {
            let e = env(&[("CUDA_VISIBLE_DEVICES", &cvd), ("SLURM_STEP_GPUS", &step)]);
            if let Ok(s) = select(&["a.com/gpu".into()], None, &e) {
                prop_assert!(!s.requests.is_empty());
                for r in &s.requests {
                    prop_assert!(r.starts_with("a.com/gpu="));
                }
            }
        }
    }
}
