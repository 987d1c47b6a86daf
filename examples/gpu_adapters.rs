//! Lists the adapters wgpu sees, one JSON object a line: name, backend, driver, the
//! features the GPU backend cares about (SHADER_F16, SUBGROUP) and the limits it checks.
//! Then says which adapter `--backend gpu` opens, in f32 and in f16, or why it cannot.
//!
//! `cargo run --release --example gpu_adapters`; tools/gpu_check.sh runs it first.

use serde_json::json;
use vitmsn::Precision;
use vitmsn::{BackendKind, BackendOptions};

fn main() {
    // Every backend wgpu was built with, not only the ones vitmsn opens, so that a GL-only
    // or CPU-only machine shows as such.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::all(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    if adapters.is_empty() {
        println!("{}", json!({ "adapters": 0 }));
    }
    for adapter in &adapters {
        let info = adapter.get_info();
        let features = adapter.features();
        let limits = adapter.limits();
        let has = |f: wgpu::Features| features.contains(f);
        println!(
            "{}",
            json!({
                "name": info.name,
                "backend": format!("{:?}", info.backend),
                "device_type": format!("{:?}", info.device_type),
                "vendor": format!("{:#06x}", info.vendor),
                "device": format!("{:#06x}", info.device),
                "pci_bus_id": info.device_pci_bus_id,
                "driver": info.driver,
                "driver_info": info.driver_info,
                "subgroup_size": [info.subgroup_min_size, info.subgroup_max_size],
                "shader_f16": has(wgpu::Features::SHADER_F16),
                "subgroup": has(wgpu::Features::SUBGROUP),
                "subgroup_barrier": has(wgpu::Features::SUBGROUP_BARRIER),
                "timestamp_query": has(wgpu::Features::TIMESTAMP_QUERY),
                "limits": {
                    "max_buffer_size": limits.max_buffer_size,
                    "max_storage_buffer_binding_size": limits.max_storage_buffer_binding_size,
                    "max_storage_buffers_per_shader_stage": limits.max_storage_buffers_per_shader_stage,
                    "max_compute_workgroup_storage_size": limits.max_compute_workgroup_storage_size,
                    "max_compute_invocations_per_workgroup": limits.max_compute_invocations_per_workgroup,
                    "max_compute_workgroup_size": [
                        limits.max_compute_workgroup_size_x,
                        limits.max_compute_workgroup_size_y,
                        limits.max_compute_workgroup_size_z,
                    ],
                    "max_compute_workgroups_per_dimension": limits.max_compute_workgroups_per_dimension,
                },
                "features": format!("{features:?}"),
            })
        );
    }
    // What the GPU backend itself opens (the high-performance adapter among Vulkan, Metal
    // and DX12 unless WGPU_* variables say otherwise).
    let preferred = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference:
            wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance),
        ..Default::default()
    }));
    let preferred = preferred.map(|a| a.get_info().name);
    for precision in [Precision::F32, Precision::F16] {
        let options = BackendOptions {
            precision: Some(precision),
            ..Default::default()
        };
        let opened = vitmsn::internals::backend::create(BackendKind::Gpu, &options);
        println!(
            "{}",
            json!({
                "vitmsn_backend": format!("{precision:?}"),
                "preferred_adapter": preferred.as_ref().ok(),
                "opens": opened.is_ok(),
                "error": opened.err().map(|e| e.to_string()),
            })
        );
    }
}
