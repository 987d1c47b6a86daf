//! The wgpu device: adapter choice, required features and limits, and the error sink that
//! turns validation errors and device loss into `Error::Backend` instead of panics.

use crate::backend::Precision;
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

pub(super) struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    pub adapter_name: String,
    /// Whether the adapter is a software one running on the CPU.
    pub software: bool,
    /// The first error wgpu reported since the last `check`.
    errors: Arc<Mutex<Option<String>>>,
}

impl GpuContext {
    /// Opens the adapter `choose_adapter` picks, on the backends `WGPU_BACKEND` allows, with
    /// the features `precision` needs.
    pub fn new(precision: Precision) -> Result<Self> {
        // Vulkan, Metal and DX12: the GL backend lacks f16 and only adds noisy probing.
        let descriptor = wgpu::InstanceDescriptor {
            backends: wgpu::Backends::PRIMARY,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        };
        let instance = wgpu::Instance::new(descriptor.with_env());
        let adapter = pollster::block_on(choose_adapter(&instance))?;
        let info = adapter.get_info();
        let adapter_name = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
        let mut required_features = wgpu::Features::empty();
        if precision == Precision::F16 {
            if !adapter.features().contains(wgpu::Features::SHADER_F16) {
                return Err(Error::Backend(format!(
                    "--precision f16 needs the SHADER_F16 feature, which {adapter_name} lacks; use --precision f32"
                )));
            }
            required_features |= wgpu::Features::SHADER_F16;
        }
        // The adapter's own limits: large batches need more than WebGPU's defaults.
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("vitmsn"),
            required_features,
            required_limits: adapter.limits(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&descriptor))
            .map_err(|e| Error::Backend(format!("{adapter_name}: cannot open the device: {e}")))?;
        let errors = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&errors);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| record(&sink, e.to_string())));
        let sink = Arc::clone(&errors);
        device.set_device_lost_callback(move |reason, message| {
            record(&sink, format!("device lost ({reason:?}): {message}"))
        });
        let limits = device.limits();
        Ok(Self {
            device,
            queue,
            limits,
            adapter_name,
            software: info.device_type == wgpu::DeviceType::Cpu,
            errors,
        })
    }

    /// Returns the first error wgpu reported since the last check, if any.
    pub fn check(&self) -> Result<()> {
        match self.errors.lock().map(|mut e| e.take()) {
            Ok(None) => Ok(()),
            Ok(Some(message)) => Err(Error::Backend(format!("{}: {message}", self.adapter_name))),
            Err(_) => Err(Error::Backend(format!(
                "{}: the wgpu error handler panicked",
                self.adapter_name
            ))),
        }
    }

    /// A `(x, y)` grid of at least `groups` workgroups within the per-dimension limit;
    /// shaders linearise it as `y · x_count + x` and skip the surplus.
    pub fn grid(&self, groups: usize) -> Result<(u32, u32)> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        fold_grid(groups, max).ok_or_else(|| {
            Error::Backend(format!(
                "{groups} workgroups exceed {max}² on {}; use a smaller batch",
                self.adapter_name
            ))
        })
    }
}

/// `groups` workgroups as an `(x, y)` grid with both sides at most `max`, if possible.
fn fold_grid(groups: usize, max: u32) -> Option<(u32, u32)> {
    let x = groups.clamp(1, max as usize);
    let y = groups.div_ceil(x).max(1);
    (y <= max as usize).then_some((x as u32, y as u32))
}

/// The adapter named by `WGPU_ADAPTER_NAME` (a case-insensitive substring), else the one
/// wgpu prefers for `WGPU_POWER_PREF` (high performance by default).
async fn choose_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    if let Ok(wanted) = std::env::var("WGPU_ADAPTER_NAME") {
        let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| {
                a.get_info()
                    .name
                    .to_lowercase()
                    .contains(&wanted.to_lowercase())
            })
            .ok_or_else(|| {
                Error::Backend(format!(
                    "WGPU_ADAPTER_NAME={wanted} matches none of the adapters {names:?}"
                ))
            });
    }
    let options = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::from_env()
            .unwrap_or(wgpu::PowerPreference::HighPerformance),
        ..Default::default()
    };
    instance.request_adapter(&options).await.map_err(|e| {
        Error::Backend(format!(
            "no GPU adapter found ({e}); install a Vulkan, Metal or DX12 driver (Mesa's lavapipe works on CPU-only machines)"
        ))
    })
}

fn record(sink: &Mutex<Option<String>>, message: String) {
    if let Ok(mut first) = sink.lock() {
        first.get_or_insert(message);
    }
}

#[cfg(test)]
mod tests {
    use super::fold_grid;

    #[test]
    fn grids_fold_into_two_dimensions_within_the_limit() {
        assert_eq!(fold_grid(0, 65535), Some((1, 1)));
        assert_eq!(fold_grid(100, 65535), Some((100, 1)));
        assert_eq!(fold_grid(65536, 65535), Some((65535, 2)));
        // 64 images of 3137 tokens, 12 heads: one attention-probability row per workgroup.
        let rows = 64 * 12 * 3137;
        let (x, y) = fold_grid(rows, 65535).unwrap();
        assert!(x as usize * y as usize >= rows && y <= 65535);
        assert_eq!(fold_grid(65535 * 65535 + 1, 65535), None);
    }
}
