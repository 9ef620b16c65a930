//! In-place edits of the configuration file that keep the operator's
//! comments and layout (`toml_edit`), written atomically.

use std::fs;
use std::path::Path;

use toml_edit::{DocumentMut, Item, Value};

/// Why an edit was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The file could not be read or written.
    #[error("{file}: {source}")]
    Io {
        /// The configuration file.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{file}: not valid TOML: {reason}")]
    Parse {
        /// The configuration file.
        file: String,
        /// Parser message.
        reason: String,
    },
    /// No `[[policy]]` has that id.
    #[error("{file}: no policy with id {id:?}")]
    NoSuchPolicy {
        /// The configuration file.
        file: String,
        /// The id asked for.
        id: String,
    },
    /// Only a disabled policy may be deleted.
    #[error("{file}: policy {id:?} is enabled; disable it first (tlsinspect policy disable {id})")]
    StillEnabled {
        /// The configuration file.
        file: String,
        /// The policy id.
        id: String,
    },
}

fn load(path: &Path) -> Result<DocumentMut, EditError> {
    let file = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|source| EditError::Io {
        file: file.clone(),
        source,
    })?;
    text.parse::<DocumentMut>().map_err(|e| EditError::Parse {
        file,
        reason: e.to_string(),
    })
}

fn store(path: &Path, doc: &DocumentMut) -> Result<(), EditError> {
    let io = |source| EditError::Io {
        file: path.display().to_string(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tlsinspect-edit");
    let tmp = std::path::PathBuf::from(tmp);
    fs::write(&tmp, doc.to_string()).map_err(io)?;
    if let Ok(meta) = fs::metadata(path) {
        fs::set_permissions(&tmp, meta.permissions()).map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)
}

/// Index of the `[[policy]]` table with `id`.
fn find(doc: &DocumentMut, id: &str) -> Option<usize> {
    let policies = doc.get("policy")?.as_array_of_tables()?;
    policies
        .iter()
        .position(|t| t.get("id").and_then(Item::as_str) == Some(id))
}

fn no_such(path: &Path, id: &str) -> EditError {
    EditError::NoSuchPolicy {
        file: path.display().to_string(),
        id: id.to_string(),
    }
}

/// Sets `enabled` of policy `id`; returns the previous value.
pub fn set_enabled(path: &Path, id: &str, enabled: bool) -> Result<bool, EditError> {
    let mut doc = load(path)?;
    let idx = find(&doc, id).ok_or_else(|| no_such(path, id))?;
    let table = doc["policy"]
        .as_array_of_tables_mut()
        .and_then(|a| a.get_mut(idx))
        .ok_or_else(|| no_such(path, id))?;
    let before = table.get("enabled").and_then(Item::as_bool).unwrap_or(true);
    match table.get_mut("enabled").and_then(Item::as_value_mut) {
        Some(v) => {
            // Keep the comment that may trail the value.
            let decor = v.decor().clone();
            *v = Value::from(enabled);
            *v.decor_mut() = decor;
        }
        None => {
            table.insert("enabled", toml_edit::value(enabled));
        }
    }
    store(path, &doc)?;
    Ok(before)
}

/// Removes the disabled policy `id` from the file.
pub fn delete_policy(path: &Path, id: &str) -> Result<(), EditError> {
    let mut doc = load(path)?;
    let idx = find(&doc, id).ok_or_else(|| no_such(path, id))?;
    let policies = doc["policy"]
        .as_array_of_tables_mut()
        .ok_or_else(|| no_such(path, id))?;
    let enabled = policies
        .get(idx)
        .and_then(|t| t.get("enabled"))
        .and_then(Item::as_bool)
        .unwrap_or(true);
    if enabled {
        return Err(EditError::StillEnabled {
            file: path.display().to_string(),
            id: id.to_string(),
        });
    }
    policies.remove(idx);
    store(path, &doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"# operator's header comment
[appliance]
mode = "tun"

[[policy]]
id = "pol-a"
enabled = true   # keep me
  [[policy.scope]]
  id = "s1"

[[policy]]
id = "pol-b"
  [[policy.scope]]
  id = "s1"
"#;

    #[test]
    fn toggles_keep_comments_and_delete_needs_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        fs::write(&path, CONF).unwrap();

        assert!(set_enabled(&path, "pol-a", false).unwrap());
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("# operator's header comment"));
        assert!(text.contains("enabled = false   # keep me"), "{text}");

        // pol-b has no `enabled` key: it is enabled by default.
        assert!(set_enabled(&path, "pol-b", true).unwrap());
        let err = delete_policy(&path, "pol-b").unwrap_err();
        assert!(matches!(err, EditError::StillEnabled { .. }), "{err}");

        delete_policy(&path, "pol-a").unwrap();
        let doc: toml::Value = toml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let ids: Vec<&str> = doc["policy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["pol-b"]);

        let err = set_enabled(&path, "nope", true).unwrap_err();
        assert!(err.to_string().contains("no policy with id \"nope\""));
    }
}
