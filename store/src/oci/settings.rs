//! An image's settings: what `--image-*` flags give and a snapshot keeps as its defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// User, working directory, environment, entrypoint, command, labels and platform of an image.
/// Unset fields are left out of the image config. Stored in the snapshot record, so it is
/// versioned with it: new fields must be optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `KEY=VALUE`, in order; a later entry for a key replaces an earlier one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `OS/ARCH` or `OS/ARCH/VARIANT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

impl ImageSettings {
    pub fn is_empty(&self) -> bool {
        *self == ImageSettings::default()
    }

    /// These settings with `over`'s on top: set fields replace, env and labels merge by key.
    pub fn overlay(&self, over: &ImageSettings) -> ImageSettings {
        let mut env = self.env.clone();
        for e in &over.env {
            let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
            env.retain(|old| old.split_once('=').map_or(old.as_str(), |(k, _)| k) != key);
            env.push(e.clone());
        }
        let mut labels = self.labels.clone();
        labels.extend(over.labels.clone());
        ImageSettings {
            user: over.user.clone().or_else(|| self.user.clone()),
            workdir: over.workdir.clone().or_else(|| self.workdir.clone()),
            env,
            entrypoint: over.entrypoint.clone().or_else(|| self.entrypoint.clone()),
            cmd: over.cmd.clone().or_else(|| self.cmd.clone()),
            labels,
            platform: over.platform.clone().or_else(|| self.platform.clone()),
        }
    }

    /// Check what a user typed: env entries are `KEY=VALUE`, the platform `OS/ARCH[/VARIANT]`.
    pub fn validate(&self) -> Result<()> {
        for e in &self.env {
            if e.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
                return Err(Error::InvalidArgument(format!(
                    "--image-env {e:?}: expected KEY=VALUE"
                )));
            }
        }
        if let Some(p) = &self.platform {
            Platform::parse(p)?;
        }
        Ok(())
    }
}

/// An image platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        match parts[..] {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.into(),
                arch: arch.into(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.into(),
                arch: arch.into(),
                variant: Some(variant.into()),
            }),
            _ => Err(Error::InvalidArgument(format!(
                "platform {s:?}: expected OS/ARCH or OS/ARCH/VARIANT (e.g. linux/amd64)"
            ))),
        }
    }

    /// The machine cellar runs on, in OCI's (Go's) names.
    pub fn host() -> String {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "riscv64" => "riscv64",
            "s390x" => "s390x",
            other => other,
        };
        format!("linux/{arch}")
    }
}
