//! The part of `cargo metadata --format-version 1 --no-deps` that xtask reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The workspace as cargo sees it (members only, no resolved dependency graph).
#[derive(Debug, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) packages: Vec<Package>,
    pub(crate) workspace_root: PathBuf,
    pub(crate) target_directory: PathBuf,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Package {
    pub(crate) name: String,
    pub(crate) manifest_path: PathBuf,
    pub(crate) dependencies: Vec<Dependency>,
    pub(crate) targets: Vec<Target>,
    pub(crate) features: BTreeMap<String, Vec<String>>,
}

impl Package {
    /// The directory holding the package's `Cargo.toml`.
    pub(crate) fn dir(&self) -> &Path {
        self.manifest_path.parent().unwrap_or(&self.manifest_path)
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Dependency {
    /// The package name (not the `package = ...` rename).
    pub(crate) name: String,
    /// `None` for normal dependencies, `"dev"` or `"build"` otherwise.
    pub(crate) kind: Option<String>,
    pub(crate) rename: Option<String>,
    pub(crate) optional: bool,
    /// Set for path dependencies.
    pub(crate) path: Option<PathBuf>,
}

impl Dependency {
    /// The name the dependency has inside the depending crate's manifest (its rename, if any).
    pub(crate) fn local_name(&self) -> &str {
        self.rename.as_deref().unwrap_or(&self.name)
    }

    pub(crate) fn kind_label(&self) -> &str {
        match self.kind.as_deref() {
            Some("dev") => "dev-dependency",
            Some("build") => "build-dependency",
            _ => "dependency",
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) kind: Vec<String>,
    pub(crate) src_path: PathBuf,
    /// The features the target needs (`required-features`).
    #[serde(default, rename = "required-features")]
    pub(crate) required_features: Vec<String>,
}

/// Runs `cargo metadata --format-version 1 --no-deps` in `root` and parses it.
pub(crate) fn load(root: &Path) -> Result<Metadata> {
    let mut command = crate::cargo(root);
    command.args(["metadata", "--format-version", "1", "--no-deps"]);
    let shown = crate::describe(&command);
    let output = command.output().with_context(|| format!("could not start `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| format!("could not parse the output of `{shown}`"))
}
