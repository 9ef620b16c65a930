//! Configuration errors: each one says file, policy, scope, field, value and limit.

use std::fmt;
use std::path::PathBuf;

/// Identifies a policy or a scope in an error: its 1-based position in the file and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRef {
    /// 1-based position in the file (policies) or in the policy (scopes).
    pub index: usize,
    /// The id as written, when it is a string.
    pub id: Option<String>,
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file, as it was named to `load`.
    pub file: PathBuf,
    /// The policy the problem is in, if any.
    pub policy: Option<ItemRef>,
    /// The scope the problem is in, if any.
    pub scope: Option<ItemRef>,
    /// The key path of the offending field relative to the policy or scope
    /// (`source_ips[3]`), or from the top of the file (`appliance.cpus`);
    /// empty for errors about the file as a whole.
    pub field: String,
    /// What is wrong, naming the field, the offending value and the limit.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        let mut located = false;
        if let Some(p) = &self.policy {
            match &p.id {
                Some(id) if !id.is_empty() => write!(f, "policy \"{}\"", id.escape_debug())?,
                _ => write!(f, "policy #{}", p.index)?,
            }
            located = true;
        }
        if let Some(s) = &self.scope {
            if located {
                f.write_str(" ")?;
            }
            write!(f, "scope #{}", s.index)?;
            if let Some(id) = s.id.as_deref().filter(|id| !id.is_empty()) {
                write!(f, " \"{}\"", id.escape_debug())?;
            }
            located = true;
        }
        if located {
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration file; `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The individual errors, in file order.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no errors (never true for an error returned by `load`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Formats a count with thousands separators, as the limits are written (`20,000`).
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(20_001), "20,001");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn display_names_policy_and_scope() {
        let e = ConfigError {
            file: "configs/x.toml".into(),
            policy: Some(ItemRef {
                index: 1,
                id: Some("pol-office".into()),
            }),
            scope: Some(ItemRef {
                index: 2,
                id: Some("sc-web".into()),
            }),
            field: "source_ips".into(),
            message: "source_ips has 1,001 entries; the limit is 1,000".into(),
        };
        assert_eq!(
            e.to_string(),
            "configs/x.toml: policy \"pol-office\" scope #2 \"sc-web\": source_ips has 1,001 entries; the limit is 1,000"
        );
    }
}
