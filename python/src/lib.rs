//! `vitmsn._vitmsn`: the compiled half of the Python package. `vitmsn/__init__.py` wraps
//! it with the user-facing `ViTMSN` class, which normalises arguments (dtypes, images,
//! the default thread count) before they reach this module.

mod engine;

use engine::{Array, Batch, Engine, EngineError, ErrorKind, ForwardRequest, Image, Labels};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{PyArrayDyn, PyReadonlyArray3, PyReadonlyArrayDyn};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn to_py_err(e: EngineError) -> PyErr {
    match e.kind {
        ErrorKind::Value => PyValueError::new_err(e.message),
        ErrorKind::Os => PyOSError::new_err(e.message),
        ErrorKind::Runtime => PyRuntimeError::new_err(e.message),
    }
}

/// Runs `work` with the GIL released, so that other Python threads run meanwhile; a panic
/// inside the engine becomes a `RuntimeError` instead of unwinding into the interpreter.
fn detached<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> engine::Result<T> + Send,
) -> PyResult<T> {
    py.detach(|| {
        catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(EngineError {
                kind: ErrorKind::Runtime,
                message: format!("internal error in vitmsn: {reason}"),
            })
        })
    })
    .map_err(to_py_err)
}

/// A numpy array of `T` as an owned row-major [`Array`] (one copy, in C order whatever
/// the array's strides).
fn to_vec<T: numpy::Element + Copy>(array: &PyReadonlyArrayDyn<'_, T>) -> (Vec<usize>, Vec<T>) {
    let view = array.as_array();
    let data = match view.as_slice() {
        Some(contiguous) => contiguous.to_vec(),
        None => view.iter().copied().collect(),
    };
    (view.shape().to_vec(), data)
}

/// A float32 or float16 array as f32.
fn float_array(object: &Bound<'_, PyAny>, name: &str) -> PyResult<Array> {
    if let Ok(array) = object.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        let (shape, data) = to_vec(&array);
        return Ok(Array { shape, data });
    }
    if let Ok(array) = object.extract::<PyReadonlyArrayDyn<'_, half::f16>>() {
        let (shape, data) = to_vec(&array);
        return Ok(Array {
            shape,
            data: data.into_iter().map(f32::from).collect(),
        });
    }
    Err(PyValueError::new_err(format!(
        "{name} must be a float32 or float16 numpy array"
    )))
}

/// An f32 array handed to numpy without a copy: numpy takes ownership of the buffer.
fn to_numpy<'py>(py: Python<'py>, array: Array) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let array = ArrayD::from_shape_vec(IxDyn(&array.shape), array.data)
        .map_err(|e| PyRuntimeError::new_err(format!("internal error in vitmsn: {e}")))?;
    Ok(PyArrayDyn::from_owned_array(py, array))
}

/// A list of file paths (`str`) and `[H, W, 3]` uint8 arrays.
fn images(items: &[Bound<'_, PyAny>]) -> PyResult<Vec<Image>> {
    items
        .iter()
        .map(|item| {
            if item.is_instance_of::<PyString>() {
                return Ok(Image::File(item.extract::<PathBuf>()?));
            }
            let array = item.extract::<PyReadonlyArray3<'_, u8>>().map_err(|_| {
                PyValueError::new_err("an image must be a path or an [H, W, 3] uint8 array")
            })?;
            let view = array.as_array();
            let &[height, width, channels] = view.shape() else {
                unreachable!("a three-dimensional array has three sizes")
            };
            if channels != 3 {
                return Err(PyValueError::new_err(format!(
                    "an image array must be [H, W, 3] RGB, got [{height}, {width}, {channels}]"
                )));
            }
            Ok(Image::Rgb {
                width,
                height,
                data: view.iter().copied().collect(),
            })
        })
        .collect()
}

/// A loaded checkpoint. Use `vitmsn.ViTMSN`, which wraps this class.
#[pyclass(frozen, module = "vitmsn._vitmsn")]
struct Model {
    engine: Engine,
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path, backend, threads, precision))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        backend: &str,
        threads: Option<usize>,
        precision: Option<&str>,
    ) -> PyResult<Self> {
        let engine = detached(py, || Engine::load(&path, backend, threads, precision))?;
        Ok(Self { engine })
    }

    #[getter]
    fn is_classifier(&self) -> bool {
        self.engine.is_classifier()
    }

    #[getter]
    fn hidden_size(&self) -> usize {
        self.engine.hidden_size()
    }

    #[getter]
    fn image_size(&self) -> (usize, usize) {
        self.engine.image_size()
    }

    #[getter]
    fn backend(&self) -> &'static str {
        self.engine.backend()
    }

    #[getter]
    fn threads(&self) -> usize {
        self.engine.threads()
    }

    #[getter]
    fn precision(&self) -> &'static str {
        self.engine.precision()
    }

    #[allow(clippy::too_many_arguments)] // transformers' forward arguments, one by one
    #[pyo3(signature = (pixel_values, bool_masked_pos, head_mask, labels, output_attentions, output_hidden_states, interpolate_pos_encoding))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        pixel_values: &Bound<'py, PyAny>,
        bool_masked_pos: Option<PyReadonlyArrayDyn<'py, bool>>,
        head_mask: Option<&Bound<'py, PyAny>>,
        labels: Option<&Bound<'py, PyAny>>,
        output_attentions: bool,
        output_hidden_states: bool,
        interpolate_pos_encoding: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let labels = match labels {
            None => None,
            Some(labels) => Some(match labels.extract::<PyReadonlyArrayDyn<'py, i64>>() {
                Ok(classes) => Labels::Classes(to_vec(&classes).1),
                Err(_) => Labels::Values(float_array(labels, "labels")?.data),
            }),
        };
        let request = ForwardRequest {
            pixel_values: float_array(pixel_values, "pixel_values")?,
            bool_masked_pos: bool_masked_pos.map(|mask| to_vec(&mask).1),
            head_mask: head_mask
                .map(|mask| float_array(mask, "head_mask"))
                .transpose()?,
            labels,
            output_attentions,
            output_hidden_states,
            interpolate_pos_encoding,
        };
        let out = detached(py, || self.engine.forward(request))?;
        let dict = PyDict::new(py);
        if let Some(state) = out.last_hidden_state {
            dict.set_item("last_hidden_state", to_numpy(py, state)?)?;
        }
        if let Some(logits) = out.logits {
            dict.set_item("logits", to_numpy(py, logits)?)?;
        }
        if let Some(loss) = out.loss {
            let scalar = Array {
                shape: Vec::new(),
                data: vec![loss],
            };
            dict.set_item("loss", to_numpy(py, scalar)?)?;
        }
        for (name, arrays) in [
            ("hidden_states", out.hidden_states),
            ("attentions", out.attentions),
        ] {
            if !arrays.is_empty() {
                let arrays = arrays
                    .into_iter()
                    .map(|a| to_numpy(py, a))
                    .collect::<PyResult<Vec<_>>>()?;
                dict.set_item(name, PyTuple::new(py, arrays)?)?;
            }
        }
        Ok(dict)
    }

    fn preprocess<'py>(
        &self,
        py: Python<'py>,
        images: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let images = self::images(&images)?;
        let pixels = detached(py, || self.engine.preprocess(&images))?;
        to_numpy(py, pixels)
    }

    fn embed_images<'py>(
        &self,
        py: Python<'py>,
        images: Vec<Bound<'py, PyAny>>,
        features: Vec<String>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let batch = Batch::Images(self::images(&images)?);
        self.embed(py, batch, &features)
    }

    fn embed_pixels<'py>(
        &self,
        py: Python<'py>,
        pixel_values: &Bound<'py, PyAny>,
        features: Vec<String>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let batch = Batch::Pixels(float_array(pixel_values, "pixel_values")?);
        self.embed(py, batch, &features)
    }

    fn classify_images(
        &self,
        py: Python<'_>,
        images: Vec<Bound<'_, PyAny>>,
        top_k: usize,
    ) -> PyResult<Vec<Vec<(String, f32)>>> {
        let batch = Batch::Images(self::images(&images)?);
        detached(py, || self.engine.classify(batch, top_k))
    }

    fn classify_pixels(
        &self,
        py: Python<'_>,
        pixel_values: &Bound<'_, PyAny>,
        top_k: usize,
    ) -> PyResult<Vec<Vec<(String, f32)>>> {
        let batch = Batch::Pixels(float_array(pixel_values, "pixel_values")?);
        detached(py, || self.engine.classify(batch, top_k))
    }
}

impl Model {
    fn embed<'py>(
        &self,
        py: Python<'py>,
        batch: Batch,
        features: &[String],
    ) -> PyResult<Bound<'py, PyDict>> {
        let embeddings = detached(py, || self.engine.embed(batch, features))?;
        let dict = PyDict::new(py);
        for (name, array) in embeddings {
            dict.set_item(name, to_numpy(py, array)?)?;
        }
        Ok(dict)
    }
}

/// The image files under `paths`, as `vitmsn embed` walks them.
#[pyfunction]
fn collect_images(py: Python<'_>, paths: Vec<PathBuf>) -> PyResult<Vec<PathBuf>> {
    detached(py, || engine::collect_images(&paths))
}

#[pymodule]
fn _vitmsn(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_class::<Model>()?;
    module.add_function(wrap_pyfunction!(collect_images, module)?)?;
    Ok(())
}
