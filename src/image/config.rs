//! Checking an image config blob at pull time: it must be a JSON object with the OCI
//! image-config shape the runtime relies on (`src/runtime/image_config.rs`), so a bad
//! one fails the pull, not every later run.

use serde_json::Value;

/// What is wrong with a config blob (the caller names the digest).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("not JSON ({0})")]
    NotJson(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("field {0:?}: {1}")]
    Field(String, &'static str),
}

/// Check `bytes` as an OCI image config.
pub fn check(bytes: &[u8]) -> Result<(), ConfigError> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| ConfigError::NotJson(e.to_string()))?;
    let top = v.as_object().ok_or(ConfigError::NotObject)?;
    for k in ["os", "architecture", "variant"] {
        want(top.get(k), k, is_string, "expected a string")?;
    }
    want(
        top.get("rootfs"),
        "rootfs",
        Value::is_object,
        "expected an object",
    )?;
    let Some(cfg) = top.get("config").filter(|c| !c.is_null()) else {
        return Ok(());
    };
    let cfg = cfg
        .as_object()
        .ok_or(ConfigError::Field("config".into(), "expected an object"))?;
    for k in ["Env", "Entrypoint", "Cmd"] {
        want(
            cfg.get(k),
            &format!("config.{k}"),
            is_string_array,
            "expected an array of strings",
        )?;
    }
    for k in ["WorkingDir", "User"] {
        want(
            cfg.get(k),
            &format!("config.{k}"),
            is_string,
            "expected a string",
        )?;
    }
    Ok(())
}

fn is_string(v: &Value) -> bool {
    v.is_string()
}

fn is_string_array(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
}

/// A present, non-null field must satisfy `ok`.
fn want(
    v: Option<&Value>,
    name: &str,
    ok: impl Fn(&Value) -> bool,
    what: &'static str,
) -> Result<(), ConfigError> {
    match v {
        Some(v) if !v.is_null() && !ok(v) => Err(ConfigError::Field(name.into(), what)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shapes() {
        assert_eq!(check(b"{}"), Ok(()));
        assert_eq!(
            check(br#"{"os":"linux","config":{"Env":["A=1"],"Cmd":null,"User":"1"}}"#),
            Ok(())
        );
        assert!(matches!(check(b"not json"), Err(ConfigError::NotJson(_))));
        assert_eq!(check(b"[1]"), Err(ConfigError::NotObject));
        assert_eq!(
            check(br#"{"config":{"Env":"A=1"}}"#),
            Err(ConfigError::Field(
                "config.Env".into(),
                "expected an array of strings"
            ))
        );
        assert!(check(br#"{"config":[]}"#).is_err());
        assert!(check(br#"{"config":{"Cmd":[1]}}"#).is_err());
    }

    proptest! {
        // Arbitrary bytes never panic.
        #[test]
        fn any_bytes(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = check(&b);
        }

        // Whatever check accepts, the runtime's parser accepts too.
        #[test]
        fn accepted_configs_parse_at_run(
            env in proptest::option::of(proptest::collection::vec(".{0,8}", 0..3)),
            user in proptest::option::of(".{0,8}"),
            cmd_is_string in any::<bool>(),
        ) {
            let mut c = serde_json::json!({"config": {"Env": env, "User": user}});
            if cmd_is_string {
                c["config"]["Cmd"] = Value::from("sh");
            }
            let b = serde_json::to_vec(&c).unwrap();
            let ok = check(&b).is_ok();
            prop_assert_eq!(ok, !cmd_is_string);
            if ok {
                prop_assert!(crate::runtime::image_config::ImageConfig::parse(&b).is_ok());
            }
        }
    }
}
