//! In-place edits of the configuration file that keep the operator's
//! comments and layout (`toml_edit`), written atomically.

use std::fs;
use std::path::Path;

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

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

/// Reads the configuration file as an editable document.
pub fn load(path: &Path) -> Result<DocumentMut, EditError> {
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

/// Writes `doc` over the file atomically: a temporary file next to it,
/// fsync, rename, fsync of the directory. A crash leaves the old file or
/// the new one, never half of one.
pub fn store(path: &Path, doc: &DocumentMut) -> Result<(), EditError> {
    use std::io::Write as _;
    let io = |source| EditError::Io {
        file: path.display().to_string(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tlsinspect-edit");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = fs::File::create(&tmp).map_err(io)?;
    f.write_all(doc.to_string().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io)?;
    drop(f);
    if let Ok(meta) = fs::metadata(path) {
        fs::set_permissions(&tmp, meta.permissions()).map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// Index of the `[[policy]]` table with `id`.
pub fn find(doc: &DocumentMut, id: &str) -> Option<usize> {
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
    let before = set_enabled_in(&mut doc, path, id, enabled)?;
    store(path, &doc)?;
    Ok(before)
}

/// Sets `enabled` of policy `id` in `doc` (read from `path`); returns the previous value.
pub fn set_enabled_in(
    doc: &mut DocumentMut,
    path: &Path,
    id: &str,
    enabled: bool,
) -> Result<bool, EditError> {
    let idx = find(doc, id).ok_or_else(|| no_such(path, id))?;
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
    Ok(before)
}

/// Removes the disabled policy `id` from the file.
pub fn delete_policy(path: &Path, id: &str) -> Result<(), EditError> {
    let mut doc = load(path)?;
    delete_policy_in(&mut doc, path, id)?;
    store(path, &doc)
}

/// Removes the disabled policy `id` from `doc` (read from `path`).
pub fn delete_policy_in(doc: &mut DocumentMut, path: &Path, id: &str) -> Result<(), EditError> {
    let idx = find(doc, id).ok_or_else(|| no_such(path, id))?;
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
    Ok(())
}

/// Puts `new` (a complete `[[policy]]` table, scopes as its `scope` array
/// of tables) into `doc`: in place of the policy `replace` if given, else
/// appended. Keys and scopes that stay keep their comments and layout.
pub fn put_policy_in(
    doc: &mut DocumentMut,
    path: &Path,
    replace: Option<&str>,
    new: Table,
) -> Result<(), EditError> {
    let idx = match replace {
        Some(id) => Some(find(doc, id).ok_or_else(|| no_such(path, id))?),
        None => None,
    };
    if !doc.contains_key("policy") {
        doc.insert("policy", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    let policies = doc["policy"]
        .as_array_of_tables_mut()
        .ok_or_else(|| EditError::Parse {
            file: path.display().to_string(),
            reason: "\"policy\" is not an array of tables ([[policy]])".into(),
        })?;
    match idx.and_then(|i| policies.get_mut(i)) {
        Some(old) => merge_table(old, new),
        None => {
            let mut t = Table::new();
            merge_table(&mut t, new);
            policies.push(t);
        }
    }
    Ok(())
}

/// Makes `dst` hold exactly the keys of `src`, keeping the decor (comments)
/// of values that stay and of scopes with the same id.
fn merge_table(dst: &mut Table, mut src: Table) {
    let new_scopes = src.remove("scope");
    let stale: Vec<String> = dst
        .iter()
        .map(|(k, _)| k.to_string())
        .filter(|k| k != "scope" && !src.contains_key(k))
        .collect();
    for k in stale {
        dst.remove(&k);
    }
    for (k, item) in src.into_iter() {
        match (dst.get_mut(&k).and_then(Item::as_value_mut), item) {
            (Some(old), Item::Value(mut v)) => {
                *v.decor_mut() = old.decor().clone();
                *old = v;
            }
            (_, item) => {
                dst.insert(&k, item);
            }
        }
    }
    let Some(Item::ArrayOfTables(new_scopes)) = new_scopes else {
        dst.remove("scope");
        return;
    };
    let old_scopes = match dst.remove("scope") {
        Some(Item::ArrayOfTables(a)) => a,
        _ => ArrayOfTables::new(),
    };
    let mut merged = ArrayOfTables::new();
    for s in new_scopes.into_iter() {
        let id = s.get("id").and_then(Item::as_str).map(str::to_owned);
        let old = old_scopes
            .iter()
            .find(|o| id.is_some() && o.get("id").and_then(Item::as_str) == id.as_deref());
        let mut t = old.cloned().unwrap_or_default();
        merge_table(&mut t, s);
        merged.push(t);
    }
    if !merged.is_empty() {
        dst.insert("scope", Item::ArrayOfTables(merged));
    }
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

    #[test]
    fn put_policy_keeps_scopes_with_their_policy_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        fs::write(&path, CONF).unwrap();
        let mut doc = load(&path).unwrap();
        let new: DocumentMut = r#"
id = "pol-a"
enabled = false
[[scope]]
id = "s1"
source_ips = ["192.0.2.1"]
[[scope]]
id = "s2"
"#
        .parse()
        .unwrap();
        put_policy_in(&mut doc, &path, Some("pol-a"), new.as_table().clone()).unwrap();
        let mut created: DocumentMut = "id = \"pol-c\"\n[[scope]]\nid = \"c1\"\n".parse().unwrap();
        put_policy_in(&mut doc, &path, None, created.as_table_mut().clone()).unwrap();
        store(&path, &doc).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("enabled = false   # keep me"), "{text}");
        let v: toml::Value = toml::from_str(&text).unwrap();
        let shape: Vec<(String, Vec<String>)> = v["policy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let scopes = p
                    .get("scope")
                    .and_then(|s| s.as_array())
                    .cloned()
                    .unwrap_or_default();
                (
                    p["id"].as_str().unwrap().to_owned(),
                    scopes
                        .iter()
                        .map(|s| s["id"].as_str().unwrap().to_owned())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("pol-a".to_owned(), vec!["s1".to_owned(), "s2".to_owned()]),
                ("pol-b".to_owned(), vec!["s1".to_owned()]),
                ("pol-c".to_owned(), vec!["c1".to_owned()]),
            ],
            "{text}"
        );
    }
}
