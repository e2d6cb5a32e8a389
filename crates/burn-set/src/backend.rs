//! Choosing a Burn backend by name: Burn 0.22 picks the backend through the `Device`.

use burn::tensor::Device;

/// A backend this build of burn-set can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Burn's ndarray backend (CPU; the fastest CPU matmul here).
    Ndarray,
    /// Burn's pure-Rust flex backend (CPU; cargo feature `flex`, on by default).
    Flex,
    /// Burn's wgpu backend (GPU, or Mesa's lavapipe on a CPU; cargo feature `wgpu`).
    Wgpu,
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ndarray" => Ok(Self::Ndarray),
            "flex" => Ok(Self::Flex),
            "wgpu" => Ok(Self::Wgpu),
            other => Err(format!(
                "unknown backend '{other}' (expected ndarray, flex or wgpu)"
            )),
        }
    }
}

impl BackendKind {
    /// The (non-autodiff) device of this backend, or why this build cannot use it.
    #[allow(deprecated)]
    pub fn device(self) -> Result<Device, String> {
        match self {
            Self::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "flex")]
            Self::Flex => Ok(Device::flex()),
            #[cfg(not(feature = "flex"))]
            Self::Flex => {
                Err("this build has no flex backend: rebuild with --features flex".into())
            }
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Ok(Device::wgpu(Default::default())),
            #[cfg(not(feature = "wgpu"))]
            Self::Wgpu => {
                Err("this build has no wgpu backend: rebuild with --features wgpu".into())
            }
        }
    }
}
